"""The local HTTP API against a real agent (store on disk, uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support import as_ops, hall_config

from agent.config import HallAgentConfig
from agent.daemon import Running, running_agent

API = "/api/v1"


@pytest.fixture
async def agent_(tmp_path: Path) -> AsyncIterator[Running]:
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    async with running_agent(config) as running:
        yield running


@pytest.fixture
async def client(agent_: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agent_.url, headers=as_ops(agent_), timeout=10) as c:
        yield c


async def take(client: httpx.AsyncClient, service: str = "social") -> dict:
    r = await client.post(f"{API}/tickets", json={"service": service})
    assert r.status_code == 201, r.text
    return r.json()


async def test_take_and_serve_a_ticket(client: httpx.AsyncClient) -> None:
    first = await take(client)
    assert first["result"]["ticket"]["number"] == "A001"
    assert first["events"] == [{"seq": 1, "type": "ticket.issued"}]
    second = await take(client)
    assert second["result"]["ahead"] == 1

    called = (await client.post(f"{API}/windows/w1/next")).json()
    assert called["result"]["ticket"]["number"] == "A001"
    assert [e["type"] for e in called["events"]] == ["window.opened", "ticket.called"]
    r = await client.post(f"{API}/windows/w1/recall")
    assert r.json()["result"]["ticket"]["recalls"] == 1
    assert (await client.post(f"{API}/windows/w1/serving")).status_code == 200
    done = (await client.post(f"{API}/windows/w1/finish")).json()
    assert done["result"]["ticket"]["status"] == "finished"

    queue = (await client.get(f"{API}/queue")).json()
    assert [t["number"] for t in queue["waiting"]] == ["A002"]
    status = (await client.get(f"{API}/status")).json()
    assert status["last_seq"] == 7
    assert status["outbox_depth"] == 7
    events = (await client.get(f"{API}/events", params={"from_seq": 1})).json()
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert {"v", "hall", "epoch", "seq", "id", "type", "at", "clock_ok", "data"} <= set(events[0])


async def test_every_window_operation(client: httpx.AsyncClient) -> None:
    for service in ("social", "social", "civil"):
        await take(client, service)
    r = await client.post(f"{API}/windows/w1/sign-in", json={"staff": "1001", "name": "李四"})
    assert r.json()["result"]["window"]["staff"] == "1001"
    await client.post(f"{API}/windows/w1/next")
    r = await client.post(f"{API}/windows/w1/hold")
    assert r.json()["result"]["ticket"]["status"] == "held"
    r = await client.post(f"{API}/windows/w1/call", json={"number": "A001"})
    assert r.json()["events"][-1]["type"] == "ticket.returned"
    r = await client.post(f"{API}/windows/w1/transfer", json={"service": "civil"})
    assert r.json()["result"]["ticket"]["service"] == "civil"
    r = await client.post(f"{API}/windows/w2/next")
    assert r.json()["result"]["ticket"]["number"] == "A001"  # transferred to the front
    r = await client.post(f"{API}/windows/w2/no-show")
    assert r.json()["result"]["ticket"]["status"] == "no_show"
    r = await client.post(f"{API}/windows/w2/pause", json={"reason": "午休"})
    assert r.json()["result"]["window"]["state"] == "paused"
    r = await client.post(f"{API}/windows/w2/next")
    assert r.status_code == 409
    assert "paused" in r.json()["message"]
    assert (await client.post(f"{API}/windows/w2/resume")).status_code == 200
    r = await client.post(f"{API}/tickets/A002/cancel", json={"reason": "left"})
    assert r.json()["result"]["ticket"]["status"] == "cancelled"
    r = await client.post(f"{API}/windows/w1/sign-out")
    assert r.json()["result"]["window"]["state"] == "closed"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/tickets", {"service": "nope"}, 404, "no service 'nope'"),
        ("POST", "/tickets", {}, 422, "service"),
        ("POST", "/tickets", {"service": "social", "colour": "red"}, 422, "colour"),
        ("POST", "/tickets", {"service": "social", "priority": "vip"}, 422, "priority"),
        ("POST", "/windows/w9/next", None, 404, "no window 'w9'"),
        ("POST", "/windows/w1/recall", None, 409, "no called ticket"),
        ("POST", "/windows/w1/call", {"number": "A-1"}, 422, "number"),
        ("POST", "/windows/w1/call", {"number": "A999"}, 404, "no ticket A999"),
        ("POST", "/windows/w1/transfer", {"service": "x"}, 409, "no called ticket"),
        ("POST", "/windows/w1/sign-in", {}, 422, "staff"),
        ("GET", "/nothing-here", None, 404, "Not Found"),
        ("GET", "/events?from_seq=0", None, 422, "from_seq"),
    ],
)
async def test_client_mistakes_get_a_4xx_naming_the_problem(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int, words: str
) -> None:
    r = await client.request(method, f"{API}{path}", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        f"{API}/tickets", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"


async def test_random_bodies_never_get_a_500(client: httpx.AsyncClient) -> None:
    rng = random.Random(7)
    paths = [
        "/tickets",
        "/windows/w1/call",
        "/windows/w1/transfer",
        "/windows/w2/sign-in",
        "/windows/w3/pause",
        "/tickets/A001/cancel",
        "/windows/w1/next",
    ]
    junk: list[object] = [
        None,
        1,
        "x",
        [],
        {},
        {"service": 5},
        {"number": None},
        {"service": "social", "position": "middle"},
        {"staff": "x" * 500},
        {"reason": ["a"]},
        {"service": "社保"},
        {"number": "Ａ００１"},
    ]
    for _ in range(150):
        r = await client.post(
            f"{API}{rng.choice(paths)}",
            content=json.dumps(rng.choice(junk)),
            headers={"content-type": "application/json"},
        )
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert r.json()["message"]


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert f"{API}/tickets" in spec["paths"]
    assert f"{API}/windows/{{window}}/transfer" in spec["paths"]


async def test_concurrent_next_never_hands_out_a_ticket_twice(
    client: httpx.AsyncClient,
) -> None:
    for i in range(40):
        await take(client, ["social", "civil", "housing", "general"][i % 4])

    async def press(window: str) -> str | None:
        r = await client.post(f"{API}/windows/{window}/next")
        assert r.status_code == 200, r.text
        ticket = r.json()["result"]["ticket"]
        return None if ticket is None else ticket["number"]

    # 20 concurrent presses on each of 3 windows, all at once.
    numbers = await asyncio.gather(*(press(w) for w in ("w1", "w2", "w3") for _ in range(20)))
    called = [n for n in numbers if n is not None]
    assert len(called) == len(set(called))
    assert len(called) == 40  # 60 presses, 40 tickets: each ticket called exactly once


async def test_the_queue_answer_shows_every_write_at_once(
    agent_: Running, client: httpx.AsyncClient
) -> None:
    """GET /queue is encoded once per committed state and each waiting ticket's JSON is
    kept while its record is unchanged: after each write by this client, the next read
    shows it, and equals the committed snapshot encoded afresh."""

    async def queue() -> dict:
        r = await client.get(f"{API}/queue")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        again = await client.get(f"{API}/queue")
        assert again.content == r.content  # nothing written in between: the same answer
        fresh = await agent_.hall.read(lambda e, n: e.snapshot(n))
        assert r.json() == json.loads(json.dumps(fresh))
        return r.json()

    def waiting(answer: dict) -> dict[str, dict]:
        return {t["number"]: t for t in answer["waiting"]}

    assert (await queue())["waiting"] == []
    for service in ("social", "social", "civil"):
        await take(client, service)
    assert list(waiting(await queue())) == ["A001", "A002", "B001"]
    social = next(s for s in (await queue())["services"] if s["id"] == "social")
    assert social["waiting"] == 2

    await client.post(f"{API}/windows/w1/next")  # A001 to w1
    answer = await queue()
    assert list(waiting(answer)) == ["A002", "B001"]
    w1 = next(w for w in answer["windows"] if w["id"] == "w1")
    assert w1["ticket"]["number"] == "A001"

    # A001 goes back to the queue as 综合咨询: the same ticket, a changed record.
    r = await client.post(
        f"{API}/windows/w1/transfer", json={"service": "general", "position": "back"}
    )
    assert r.status_code == 200, r.text
    moved = waiting(await queue())["A001"]
    assert (moved["service"], moved["status"]) == ("general", "waiting")

    r = await client.post(f"{API}/tickets/B001/cancel", json={"reason": "left"})
    assert r.status_code == 200, r.text
    assert "B001" not in waiting(await queue())
    await take(client, "social")
    assert list(waiting(await queue())) == ["A002", "A001", "A003"]

    # Called and sent back with no read in between: its kept JSON is of the old record.
    called = (await client.post(f"{API}/windows/w1/next")).json()["result"]["ticket"]
    assert called["number"] == "A002"
    r = await client.post(
        f"{API}/windows/w1/transfer", json={"service": "housing", "position": "front"}
    )
    assert r.status_code == 200, r.text
    back = waiting(await queue())["A002"]
    assert (back["service"], back["called_count"]) == ("housing", 1)
