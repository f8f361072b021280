"""The page feed: views built from a real hall, the SSE stream over HTTP (full state on
connect and after every change), notices with expiry, kiosk refusals, screens on the
device board, an orderly stop with streams open, and the served font."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ALWAYS, as_ops, hall_config

from agent.config import HallAgentConfig
from agent.core.events import EventClass
from agent.core.operations import Take
from agent.daemon import running_agent
from agent.runtime.hall import Hall
from agent.runtime.store import RawEvent, Store, Written
from agent.web.pages import PageFeed, ViewNotFound


async def states(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``state`` messages of an SSE response, as parsed JSON."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "state":
            yield json.loads(line.removeprefix("data: "))


async def next_state(stream: AsyncIterator[dict[str, Any]], within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        return await anext(stream)


def config_with(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    data = hall_config(tmp_path / "state", **sections)
    data["devices"] = [
        {"id": "hall-screen", "kind": "screen", "role": "hall"},
        {"id": "screen-w1", "kind": "screen", "role": "window"},
    ]
    data["windows"][0]["devices"] = ["screen-w1"]
    return HallAgentConfig.model_validate(data)


async def test_a_state_request_after_an_action_shows_that_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read your writes: the view is rebuilt in the background, and a request waits for it."""
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        feed = running.pages
        assert feed is not None
        before = (await client.get("/pages/state/window?window=w1")).json()
        assert before["staff"] is None
        # Hold every rebuild until the test lets it go.
        gate = asyncio.Event()
        rebuild = feed._rebuild

        async def held() -> None:
            await gate.wait()
            await rebuild()

        monkeypatch.setattr(feed, "_rebuild", held)
        signed = await client.post("/api/v1/windows/w1/sign-in", json={"staff": "1001"})
        assert signed.status_code == 200, signed.text
        request = asyncio.create_task(client.get("/pages/state/window?window=w1"))
        done, _ = await asyncio.wait({request}, timeout=0.5)
        assert not done, "the state was answered from a view older than the sign-in"
        gate.set()
        after = (await request).json()
        assert after["staff"]["staff"] == "1001"


async def test_stream_sends_the_full_state_on_connect_and_after_each_call(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        assert running.devices.get("hall-screen").status == "offline"
        async with client.stream("GET", "/pages/feed/hall") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = states(response)
            first = await next_state(stream)
            assert first["view"]["current"] == []
            assert running.devices.get("hall-screen").status == "ok"
            for service in ("social", "social", "civil"):
                await client.post("/api/v1/tickets", json={"service": service})
            await client.post("/api/v1/windows/w1/sign-in", json={"staff": "1001", "name": "王芳"})
            await client.post("/api/v1/windows/w1/next")
            await client.post("/api/v1/windows/w2/next")
            state = first
            while len(state["view"]["current"]) < 2:
                state = await next_state(stream)
            view = state["view"]
            assert state["rev"] > first["rev"]
            assert {(c["ticket"], c["window"]) for c in view["current"]} == {
                ("A001", "w1"),
                ("B001", "w2"),
            }
            assert view["current"][0]["ticket"] == "B001"  # the newest call first
            social = next(s for s in view["services"] if s["id"] == "social")
            assert social["waiting"] == 1
            on_duty = [w["staff"] for w in view["windows"] if w["staff"]]
            assert on_duty == [{"staff": "1001", "name": "王芳", "photo": None}]
            # A recall is a new call of the same ticket: its key changes, so pages flash it.
            key = next(c["key"] for c in view["current"] if c["ticket"] == "A001")
            await client.post("/api/v1/windows/w1/recall")
            while True:
                state = await next_state(stream)
                a001 = next(c for c in state["view"]["current"] if c["ticket"] == "A001")
                if a001["key"] != key:
                    break
            assert state["view"]["current"][0]["ticket"] == "A001"
            # Finished calls move to the recent list.
            await client.post("/api/v1/windows/w1/finish")
            while any(c["ticket"] == "A001" for c in state["view"]["current"]):
                state = await next_state(stream)
            assert [c["ticket"] for c in state["view"]["recent"]] == ["A001"]
        # A page that connects now gets everything at once.
        async with client.stream("GET", "/pages/feed/window?window=w1") as response:
            window = (await next_state(states(response)))["view"]
        assert window["window"]["id"] == "w1"
        assert window["current"] is None
        assert window["staff"]["name"] == "王芳"
        r = await client.get("/pages/state/window", params={"window": "w9"})
        assert r.status_code == 404
        assert (await client.get("/pages/window/w9")).status_code == 404


async def test_notices_appear_and_expire(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    store = Store.open(config.storage.path)
    now = dt.datetime.now(dt.UTC)
    notices = [
        {
            "id": "n1",
            "text": "今日下午社保系统升级",
            "until": (now + dt.timedelta(hours=1)).isoformat(),
        },
        {"id": "n2", "text": "已过期的通知", "until": (now - dt.timedelta(minutes=1)).isoformat()},
        {"id": "n3", "text": "长期通知", "until": None},
    ]

    def show(store_: Store, at: dt.datetime, clock_ok: bool) -> Written[list[Any]]:
        event = RawEvent("notice.shown", at, notices[0], EventClass.OPERATIONAL)
        stored = store_.append([event], clock_ok=clock_ok, settings={"notices": notices})
        return Written.of_events(stored)

    try:
        async with Hall(config, store) as hall, PageFeed(hall) as feed:
            assert feed.render("hall", {})["notices"] == []
            rev = feed.current.rev if feed.current else 0
            await hall.write(show)
            await feed.wait_rebuilt(rev)
            texts = [n["text"] for n in feed.render("kiosk", {})["notices"]]
            assert texts == ["今日下午社保系统升级", "长期通知"]
            with pytest.raises(ViewNotFound):
                feed.render("nothing", {})
    finally:
        store.close()


class StubPrinting:
    """The kiosk's view of a printer that has run out of paper."""

    def state(self) -> dict[str, Any]:
        reason = "the ticket printer is out of paper (打印机缺纸): load a new roll"
        return {"issuing": {"enabled": False, "reason": reason}}


async def test_kiosk_buttons_say_why_they_cannot_issue(tmp_path: Path) -> None:
    closed = [{"start": "00:00", "end": "00:01", "days": ["sun"]}]
    data = hall_config(tmp_path / "state")
    data["services"][0]["daily_cap"] = 1
    data["services"][1]["hours"] = closed
    config = HallAgentConfig.model_validate(data)
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall:
            await hall.execute(Take(service="social"))
            async with PageFeed(hall) as feed:
                kiosk = {s["id"]: s for s in feed.render("kiosk", {"large": "1"})["services"]}
                assert feed.render("kiosk", {"large": "1"})["large_text"] is True
            async with PageFeed(hall, printing=StubPrinting()) as feed:  # type: ignore[arg-type]
                paper_out = feed.render("kiosk", {})
    finally:
        store.close()
    # Citizen words: plain Chinese with the service's hours, never the printer's problem.
    assert kiosk["social"]["enabled"] is False
    assert (
        kiosk["social"]["reason"]
        == "社保医保今日号已取完，请下个办理日再来。办理时间：每天 00:00-23:59"
    )
    assert kiosk["civil"]["enabled"] is False
    assert kiosk["civil"]["reason"].startswith(
        ("今天是周末，民政救助不办理。", "民政救助今天不办理。", "民政救助今天的办理时间已结束。")
    )
    assert "下次办理时间：" in kiosk["civil"]["reason"]
    assert kiosk["civil"]["hours"] == "周日 00:00-00:01"
    assert kiosk["housing"]["enabled"] is True
    assert paper_out["issuing"]["enabled"] is False
    assert paper_out["issuing"]["reason"] == "取号机暂时无法打印，请到引导台取号"
    assert not any(s["enabled"] for s in paper_out["services"])
    paper_reasons = {s["id"]: s["reason"] for s in paper_out["services"]}
    assert paper_reasons["housing"] == "取号机暂时无法打印，请到引导台取号"
    assert "paper" not in json.dumps(paper_out)


async def test_agent_stops_promptly_with_pages_open_and_serves_its_assets(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        services=[{"id": "social", "name": "社保", "prefix": "A", "hours": ALWAYS}],
        windows=[{"id": "w1", "name": "1号窗口", "number": 1, "services": ["social"]}],
    )
    running_cm = running_agent(config)
    running = await running_cm.__aenter__()
    stopped_at = 0.0
    try:
        async with httpx.AsyncClient(
            base_url=running.url, headers=as_ops(running), timeout=30
        ) as client:
            for page in ("/pages/hall", "/pages/kiosk", "/pages/window/w1"):
                r = await client.get(page)
                assert r.status_code == 200
                assert "/pages/static/pages.js" in r.text
                assert "http" not in r.text.replace(running.url, "")  # nothing from outside
            css = await client.get("/pages/static/pages.css")
            assert css.headers["content-type"].startswith("text/css")
            assert (await client.get("/pages/static/..%2Fpages.py")).status_code == 404
            font = await client.get("/pages/font/cjk")
            assert font.status_code == 200
            assert font.content[:4] == b"\x00\x01\x00\x00"  # one TrueType font, not a collection
            async with client.stream("GET", "/pages/feed/hall") as response:
                await next_state(states(response))
                stopped_at = time.monotonic()
                await running_cm.__aexit__(None, None, None)
    finally:
        if not stopped_at:
            await running_cm.__aexit__(None, None, None)
    # A stream left open holds the shutdown back for ever; 10 s is far from any hold.
    assert time.monotonic() - stopped_at < 10.0


async def test_a_page_untouched_by_changes_still_hears_pings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.web.pages

    monkeypatch.setattr(agent.web.pages, "PING_S", 0.3)
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
        client.stream("GET", "/pages/feed/window?window=w2") as response,
    ):
        lines = response.aiter_lines()
        kinds: list[str] = []
        async with asyncio.timeout(10):
            while "state" not in kinds:
                line = await anext(lines)
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
            # Window 1 keeps working; window 2's page has nothing new, but is kept alive.
            for _ in range(3):
                await client.post("/api/v1/tickets", json={"service": "social"})
                await client.post("/api/v1/windows/w1/next")
            while "ping" not in kinds:
                line = await anext(lines)
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
    assert kinds.count("state") == 1


async def test_the_big_screen_shows_the_guides_of_services_people_wait_for(
    tmp_path: Path,
) -> None:
    data = hall_config(tmp_path / "state")
    guide = {"materials": ["居民身份证", "户口簿"], "time_limit_days": 0}
    for service in data["services"]:
        if service["id"] in ("social", "civil"):
            service["guide"] = guide
    config = HallAgentConfig.model_validate(data)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        before = (await client.get("/pages/state/hall")).json()
        assert before["guides"] == []  # no one waits yet
        assert before["guide_rotation_s"] == 15.0
        for service in ("social", "housing"):
            taken = await client.post("/api/v1/tickets", json={"service": service})
            assert taken.status_code == 201, taken.text
        state = (await client.get("/pages/state/hall")).json()
        # social: a guide and people waiting; civil: a guide, no one waiting; housing: no guide.
        assert [g["service"] for g in state["guides"]] == ["social"]
        assert state["guides"][0]["materials"] == ["居民身份证", "户口簿"]
        assert state["guides"][0]["time_limit"] == "即办（当场办结）"

    data["pages"] = {"guide_rotation_s": None}
    data["storage"] = {"path": str(tmp_path / "state-2")}
    async with (
        running_agent(HallAgentConfig.model_validate(data)) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        await client.post("/api/v1/tickets", json={"service": "social"})
        state = (await client.get("/pages/state/hall")).json()
        assert state["guides"] == []
        assert state["guide_rotation_s"] is None


async def test_changes_close_together_are_rebuilt_once_and_show_their_final_state(
    tmp_path: Path,
) -> None:
    """Under a burst of commits the view is rebuilt at most once per gap (REBUILD_GAP_S),
    with everything committed by then; a state request waiting for its own action does not
    wait for the gap."""
    config = config_with(tmp_path)
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall, PageFeed(hall, rebuild_gap_s=600) as feed:
            assert feed.current is not None
            rev = feed.current.rev
            await hall.execute(Take(service="social"))
            # The first change after a quiet time is rebuilt at once.
            view = await feed.wait_rebuilt(rev)
            assert view.queue["services"][0]["waiting"] == 1
            # Ten more commits inside the gap: the view waits for the gap (600 s here)...
            for _ in range(10):
                await hall.execute(Take(service="social"))
            # ...unless a request waits for it: one rebuild shows all ten.
            await asyncio.wait_for(feed.caught_up(within=30), timeout=30)
            assert feed.current.seq == hall.last_seq
            assert feed.current.rev == view.rev + 1
            assert feed.current.queue["services"][0]["waiting"] == 11
            assert feed.render("hall", {}) is not None
    finally:
        store.close()
