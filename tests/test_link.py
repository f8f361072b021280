"""The central link against a real mosquitto (DESIGN §5, issue 3).

Each test starts its own broker on a free port and an in-process agent
(``running_agent``); ``tests/oracle.py`` plays central. Subprocess cases (SIGKILL while
draining, the MQTT will) are in ``test_link_process.py``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import gc
import json
import random
import sqlite3
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker import Broker
from oracle import Central, first_arrivals, publish_properties, tally, until, wait_event
from pki import Pki
from pydantic import ValidationError
from support import ALWAYS, as_ops, hall_config

from agent.central import contract as c
from agent.central.commands import MAX_PAYLOAD
from agent.config import HallAgentConfig, validate_config
from agent.core.errors import QueueError
from agent.core.events import EventClass
from agent.core.operations import CallNext, Finish, Operation, Take
from agent.daemon import Running, running_agent
from agent.runtime.hall import Hall
from agent.runtime.store import RawEvent, Store, Written

HALL = "test-hall"
SERVICES = ["social", "civil", "housing", "general"]
WINDOWS = ["w1", "w2", "w3"]


def fast_mqtt(url: str, **overrides: Any) -> dict[str, Any]:
    """A link that reconnects within about a second and drains quickly (tests only)."""
    return {
        "url": url,
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
        "stable_after_s": 0,
        "drain_rate": 5000,
        "metrics_interval_s": 1,
        **overrides,
    }


def link_config(
    storage: Path,
    url: str,
    *,
    mqtt: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    **sections: Any,
) -> HallAgentConfig:
    """The test hall linked to ``url``; ``limits`` go into the storage section."""
    data = hall_config(storage, mqtt=fast_mqtt(url, **(mqtt or {})), **sections)
    data["storage"].update(limits or {})
    return validate_config(data)


def take(service: str) -> Operation:
    return Take(service=service)


def call_next(window: str) -> Operation:
    return CallNext(window=window)


def finish(window: str) -> Operation:
    return Finish(window=window)


@dataclasses.dataclass
class Operations:
    answered: int = 0
    refused: int = 0


async def serve_the_hall(hall: Hall, count: int, rng: random.Random) -> Operations:
    """``count`` local operations as the hall's kiosk and windows would do them."""
    ops = Operations()
    while ops.answered + ops.refused < count:
        window = rng.choice(WINDOWS)
        for operation in (
            take(rng.choice(SERVICES)),
            take(rng.choice(SERVICES)),
            call_next(window),
            finish(window),
        ):
            try:
                await hall.execute(operation)
            except QueueError:
                ops.refused += 1  # e.g. finishing when nobody was waiting to be called
            else:
                ops.answered += 1
    return ops


async def stored_events(agent: Running) -> list[dict[str, Any]]:
    rows = await agent.hall.store_call(lambda s: list(s.iter_events()))
    return [r.envelope(HALL) for r in rows]


async def last_seq(agent: Running) -> int:
    return await agent.hall.store_call(lambda s: s.last_seq)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Callable[..., Any]:
    """``async with agent_factory(broker) as agent`` — started on ``tmp_path/state``."""

    def make(broker: Broker, **kwargs: Any) -> Any:
        return running_agent(link_config(tmp_path / "state", broker.url, **kwargs))

    return make


async def connected(agent: Running, seconds: float = 10) -> None:
    await wait_event(agent.link.connected, seconds, "the hall's link to connect")


async def retained(url: str, topics: list[str], **central: Any) -> dict[str, Any]:
    """What a new subscriber (no session) is given retained on ``topics``."""
    async with Central(url, HALL, topics, persistent=False, **central) as fresh:
        await until(
            lambda: all(fresh.on(t) for t in topics),
            10,
            lambda: f"retained {topics}; got {[m.topic for m in fresh.messages]}",
        )
        assert all(fresh.on(t)[0].retain for t in topics)
        return {t: fresh.on(t)[-1].json() for t in topics}


DEVICES = [
    {
        "id": "kiosk-printer",
        "kind": "printer",
        "transport": {"type": "network", "host": "127.0.0.1", "port": 9100},
    },
    {
        "id": "back-printer",
        "kind": "printer",
        "transport": {"type": "network", "host": "127.0.0.1", "port": 9101},
    },
]


# -- 1. outage ----------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_outage_loses_nothing_and_the_stream_equals_the_log(
    broker: Broker, agent_factory: Callable[..., Any]
) -> None:
    rng = random.Random(3)
    async with (
        Central(broker.url, HALL, ["event/#"], client_id="oracle") as oracle,
        agent_factory(broker) as agent,
    ):
        await connected(agent)
        await serve_the_hall(agent.hall, 20, rng)
        online_last = await last_seq(agent)
        await until(lambda: len(set(oracle.event_seqs())) == online_last, 10, "the online events")
        # Every PUBACK written back, so the backlog below is exactly the offline events.
        await until(
            lambda: agent.hall.store_call(lambda s: s.outbox_depth() == 0),
            10,
            "the online events marked published",
        )

        broker.stop()
        await until(lambda: not agent.link.connected.is_set(), 10, "the link to notice")
        published = agent.link.counters.published
        offline = await serve_the_hall(agent.hall, 520, rng)
        assert offline.answered >= 500, offline
        assert not agent.link.connected.is_set()
        assert agent.link.counters.published == published, "published during the outage"
        depth = await agent.hall.store_call(lambda s: s.outbox_depth())
        final = await last_seq(agent)
        assert depth == final - online_last >= 500

        broker.start()
        expected = range(1, final + 1)
        await until(
            lambda: not tally(oracle.event_seqs(), expected).missing,
            60,
            lambda: f"the backlog at central: {tally(oracle.event_seqs(), expected)}",
        )
        log = await stored_events(agent)
        report = tally(oracle.event_seqs(), expected)
        assert report.missing == [], report
        assert report.unexpected == [], report
        assert report.misordered == 0, report
        assert first_arrivals(oracle.events()) == log
        assert [e["seq"] for e in log] == list(expected)
        assert agent.link.counters.reconnects >= 1
        assert "login" not in (agent.link.counters.last_error or ""), "a drop is not a login"
        # PUBACKs are written back in batches: soon nothing is left unpublished.
        await until(
            lambda: agent.hall.store_call(lambda s: s.outbox_depth() == 0),
            5,
            "every event marked published",
        )


@pytest.mark.timeout(60)
async def test_a_store_that_cannot_write_pauses_the_link_and_it_comes_back(
    broker: Broker, agent_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with (
        Central(broker.url, HALL, ["reply"]) as central,
        agent_factory(broker) as agent,
    ):
        await connected(agent)
        await agent.hall.write(lambda store, now, ok: Written([], None))  # start-up writes done
        # Another writer holds the database: the reply cannot be recorded (a real
        # "database is locked" after the store's busy timeout), as on a failing disk.
        holder = sqlite3.connect(tmp_path / "state" / "hall.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            await central.command("get_status", {"cmd_id": "while-locked"})
            await until(
                lambda: "store failed" in (agent.link.counters.last_error or ""),
                20,
                "the link to report the store",
            )
        finally:
            holder.close()
        assert central.replies("while-locked") == []  # nothing answered that is not saved
        await until(lambda: agent.link.counters.connects == 2, 10, "the link to come back")
        await connected(agent)
        await central.command("get_status", {"cmd_id": "while-locked"})
        assert (await central.reply_to("while-locked"))["status"] == "ok"


# -- 3. retained state after a broker that forgot everything --------------------------


@pytest.mark.timeout(60)
async def test_birth_and_device_states_are_retained_again_after_a_broker_without_persistence(
    broker_factory: Callable[..., Broker], agent_factory: Callable[..., Any]
) -> None:
    broker = broker_factory(persistence=False)
    topics = ["state", "device/kiosk-printer", "device/back-printer"]
    async with agent_factory(broker, devices=DEVICES) as agent:
        await connected(agent)
        agent.devices.report("kiosk-printer", "ok")

        async def printer_ok() -> bool:
            printer = await retained(broker.url, ["device/kiosk-printer"])
            return bool(printer["device/kiosk-printer"]["status"] == "ok")

        await until(printer_ok, 10, "the printer's new state retained")
        first = await retained(broker.url, topics)
        assert first["state"]["online"] is True
        assert first["device/kiosk-printer"]["status"] == "ok"
        assert first["device/back-printer"]["status"] == "offline"
        session = first["state"]["session"]

        broker.stop()
        await until(lambda: not agent.link.connected.is_set(), 10, "the link to notice")
        # A change while nobody listens must be what central sees after the reconnect.
        agent.devices.report("back-printer", "error", "paper out")
        broker.start()  # no persistence: the broker holds nothing retained now
        await connected(agent)

        again = await retained(broker.url, topics)
        state = again["state"]
        assert state["online"] is True
        assert state["boot_id"] == agent.link.boot_id
        # Counted in connections, not attempts: the ones that met the stopped broker
        # do not count.
        assert state["session"] == agent.link.session == session + 1
        assert state["config_version"] is None
        assert again["device/kiosk-printer"] == {**first["device/kiosk-printer"]}
        back = again["device/back-printer"]
        assert (back["kind"], back["status"], back["detail"]) == ("printer", "error", "paper out")
        boot_id, last_session = agent.link.boot_id, agent.link.session

    # A clean stop says so itself; the broker will not publish the will over it.
    gone = (await retained(broker.url, ["state"]))["state"]
    assert gone == {
        "online": False,
        "boot_id": boot_id,
        "session": last_session,
        "clean": True,
    }


# -- 4. hostile commands ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "payload", "wrong"),
    [
        (c.CaptureDocument, {"window": "w1", "pages": "3"}, "pages"),
        (c.CaptureDocument, {"window": "w1", "pages": 2.0}, "pages"),
        (c.ReplayEvents, {"from_seq": True, "to_seq": 3}, "from_seq"),
        (c.CallNext, {"window": 1}, "window"),
        (c.IssueTicket, {"service": "social", "priority": None}, "priority"),
        (c.SetStaff, {"staff": [{"staff": 1001, "name": "王芳"}]}, "staff.0.staff"),
    ],
)
def test_a_command_value_of_another_json_type_is_refused(
    model: type[c.Command], payload: dict[str, Any], wrong: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        c.validate_incoming(model, {"cmd_id": "x", **payload})
    assert [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()] == [wrong]


def test_dates_and_times_in_commands_are_iso_strings_as_json_has_them() -> None:
    reprint = c.validate_incoming(c.Reprint, {"cmd_id": "x", "number": "A012", "day": "2026-11-23"})
    assert reprint.day == dt.date(2026, 11, 23)
    notice = c.validate_incoming(
        c.ShowNotice, {"cmd_id": "x", "text": "暂停办理", "until": "2026-11-23T18:00:00+08:00"}
    )
    assert notice.until == dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One generated command message and the reply it must get."""

    name: str
    payload: bytes
    cmd_id: str  # "" when the payload carries no usable cmd_id
    status: str
    why: str


# No control characters: mosquitto disconnects a client that sends them in a topic.
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz_-0123456789 ÄéŁ中文窗口😀\u200f"
_TEXT_CHARS = "ab Z9_-.,'\"\\\n\u00e9\u4e2d\u6587\U0001f600\u202e\u0000"
# Valid parameters for every command: a generator mutates exactly one thing about them.
_VALID: dict[str, dict[str, Any]] = {
    "issue_ticket": {"service": "social"},
    "call_next": {"window": "w1"},
    "recall": {"window": "w1"},
    "call_number": {"window": "w1", "number": "A001"},
    "no_show": {"window": "w1"},
    "hold": {"window": "w1"},
    "transfer": {"window": "w1", "service": "civil"},
    "finish": {"window": "w1"},
    "pause_window": {"window": "w1"},
    "resume_window": {"window": "w1"},
    "request_rating": {"window": "w1"},
    "reprint": {"number": "A001"},
    "show_notice": {"text": "暂停办理"},
    "set_staff": {"staff": [{"staff": "001", "name": "张三"}]},
    "capture_document": {"window": "w1"},
    "replay_events": {"from_seq": 1, "to_seq": 2},
    "get_status": {},
}
_WRONG_VALUES: list[Any] = [None, 7, -1, 3.5, True, [], {}, ["w1"], {"window": "w1"}, "\u0000"]


def _text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def hostile_commands(rng: random.Random, count: int) -> list[Hostile]:
    """Malformed, random and unknown command messages, each with the reply it deserves."""
    cases: list[Hostile] = []
    serial = 0

    def cmd_id() -> str:
        nonlocal serial
        serial += 1
        return rng.choice(["h", "指令-", "😀", " ", "x" * 100]) + f"{serial}"

    def known() -> str:
        return rng.choice(sorted(_VALID))

    def unusable(name: str, payload: bytes, why: str) -> Hostile:
        return Hostile(name, payload, "", "rejected", why)

    def usable(name: str, body: dict[str, Any], status: str, why: str) -> Hostile:
        payload = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()
        return Hostile(name, payload, body["cmd_id"], status, why)

    makers: list[Callable[[], Hostile]] = [
        lambda: unusable(known(), rng.randbytes(rng.randint(0, 300)), "random bytes"),
        lambda: unusable(known(), b'{"cmd_id": "\xff\xfe", "window": "w1"}', "not UTF-8"),
        lambda: unusable(
            known(),
            json.dumps({"cmd_id": cmd_id(), "window": "w1"}).encode()[: rng.randint(0, 20)],
            "truncated JSON",
        ),
        lambda: unusable(
            known(),
            json.dumps(
                rng.choice([[], [{"cmd_id": "x"}], 42, "get_status", None, True, 1e300, ""])
            ).encode(),
            "JSON that is not an object",
        ),
        lambda: unusable(
            known(), b"[" * rng.randint(2000, 50000) + b"]", "nested far beyond any limit"
        ),
        lambda: unusable(
            known(),
            json.dumps(
                {
                    "cmd_id": rng.choice(
                        [7, 1.5, None, True, [], {}, ["a"], "", "x" * 129, "y" * 100_000]
                    ),
                    **_VALID["call_next"],
                }
            ).encode(),
            "cmd_id not a 1-128 character string",
        ),
        lambda: unusable(
            known(), json.dumps({"window": "w1", "service": "social"}).encode(), "no cmd_id"
        ),
        lambda: unusable(
            known(), b'{"cmd_id": "\\ud800x", "window": "w1"}', "cmd_id with a lone surrogate"
        ),
        lambda: _unknown_name(rng, cmd_id()),
        lambda: _wrong_type(rng, cmd_id()),
        lambda: _extra_param(rng, cmd_id()),
        lambda: _missing_param(rng, cmd_id()),
        lambda: usable(
            "show_notice",
            {"cmd_id": cmd_id(), "text": "长" * rng.randint(501, 200_000)},
            "rejected",
            "huge text",
        ),
        lambda: usable(
            "pause_window",
            {"cmd_id": cmd_id(), "window": "w1", "reason": _text(rng, _TEXT_CHARS, 201, 5000)},
            "rejected",
            "huge reason",
        ),
        lambda: usable(
            rng.choice(["call_next", "hold", "finish", "recall"]),
            {"cmd_id": cmd_id(), "window": _text(rng, _TEXT_CHARS, 0, 40) + "?"},
            "failed",
            "a window this hall does not have",
        ),
        lambda: usable(
            "issue_ticket",
            {"cmd_id": cmd_id(), "service": "no-such-" + _text(rng, _TEXT_CHARS, 0, 20)},
            "failed",
            "a service this hall does not have",
        ),
        lambda: usable(
            "get_status",
            {"cmd_id": cmd_id(), "expires_at": "2026-01-01T00:00:00+08:00"},
            "expired",
            "expires_at in the past",
        ),
        lambda: usable(
            "get_status",
            {"cmd_id": cmd_id(), "expires_at": rng.choice(["tomorrow", [2026], "2099-13-01"])},
            "rejected",
            "expires_at not a time",
        ),
        lambda: usable(
            "show_notice",
            {"cmd_id": cmd_id(), "text": "x", "notice_id": "n" * 65},
            "rejected",
            "notice_id too long",
        ),
        lambda: Hostile(
            "call_next",
            json.dumps({"cmd_id": (cid := cmd_id()), "window": "w1\ud800"}).encode(),
            cid,
            "rejected",
            "a parameter with a lone surrogate",
        ),
    ]
    while len(cases) < count:
        case = rng.choice(makers)()
        if len(case.payload) > MAX_PAYLOAD:
            # Not even parsed: there is no cmd_id to answer to.
            case = dataclasses.replace(case, cmd_id="", status="rejected", why="oversized")
        cases.append(case)
    return cases


def _unknown_name(rng: random.Random, cmd_id: str) -> Hostile:
    name = rng.choice(
        [
            _text(rng, _NAME_CHARS, 0, 30),
            "ISSUE_TICKET",
            "issue_ticket ",
            "get-status",
            "replay",
            "reset_everything",
            "cmd",
        ]
    )
    body = {"cmd_id": cmd_id, "window": "w1"}
    return Hostile(name, json.dumps(body).encode(), cmd_id, "rejected", "unknown command")


def _wrong_type(rng: random.Random, cmd_id: str) -> Hostile:
    name = rng.choice([n for n, params in _VALID.items() if params])
    params = dict(_VALID[name])
    key = rng.choice(sorted(params))
    # Values of another JSON type: commands are strict, so "2" or true is no number.
    valid = params[key]
    choices = [v for v in _WRONG_VALUES if type(v) is not type(valid)]
    if isinstance(valid, int):
        choices += [str(valid), float(valid)]
    if key == "number":
        choices += ["A1", "1234", "ABC123", "A001 "]  # strings, but not ticket numbers
    if key == "staff":
        choices += [[7], [{"staff": "", "name": "x"}], [{"staff": "1", "name": "x", "age": 3}]]
    params[key] = rng.choice(choices)
    body = {"cmd_id": cmd_id, **params}
    return Hostile(name, json.dumps(body).encode(), cmd_id, "rejected", f"{key} wrong")


def _extra_param(rng: random.Random, cmd_id: str) -> Hostile:
    name = rng.choice(sorted(_VALID))
    extra = rng.choice(["force", "sudo", "Window", "cmd", "窗口", "", "params"])
    body = {"cmd_id": cmd_id, **_VALID[name], extra: rng.choice(_WRONG_VALUES)}
    return Hostile(name, json.dumps(body).encode(), cmd_id, "rejected", f"extra {extra!r}")


def _missing_param(rng: random.Random, cmd_id: str) -> Hostile:
    name = rng.choice([n for n, params in _VALID.items() if params])
    params = dict(_VALID[name])  # every parameter listed there is required
    del params[rng.choice(sorted(params))]
    body = {"cmd_id": cmd_id, **params}
    return Hostile(name, json.dumps(body).encode(), cmd_id, "rejected", "missing parameter")


@pytest.mark.timeout(300)
async def test_hostile_commands_are_each_answered_and_the_hall_keeps_serving(
    broker: Broker, agent_factory: Callable[..., Any]
) -> None:
    cases = hostile_commands(random.Random(20261123), 1000)
    assert len({c.cmd_id for c in cases if c.cmd_id}) == sum(1 for c in cases if c.cmd_id)
    kinds = collections.Counter(c.why for c in cases)
    assert len(kinds) >= 20, kinds
    async with (
        Central(broker.url, HALL, ["reply"]) as central,
        agent_factory(broker) as agent,
    ):
        await connected(agent)
        seq_before = await last_seq(agent)
        for case in cases:
            await central.command(case.name, case.payload)
        await central.command("get_status", {"cmd_id": "sentinel"})
        # Answered in order: once the sentinel's reply is here, every other one is too.
        await until(
            lambda: central.replies("sentinel"),
            240,
            lambda: f"the sentinel's reply; {len(central.replies())} replies so far",
        )

        replies = central.replies()[:-1]
        assert len(replies) == len(cases), f"{len(replies)} replies to {len(cases)} commands"
        by_id: dict[str, list[dict[str, Any]]] = {}
        for reply in replies:
            by_id.setdefault(reply["cmd_id"], []).append(reply)
        wrong = []
        for case in cases:
            if not case.cmd_id:
                continue
            got = by_id.get(case.cmd_id, [])
            if len(got) != 1 or got[0]["status"] != case.status or got[0]["name"] != case.name:
                wrong.append((case.why, case.name, case.payload[:80], got))
        assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:3]}"
        anonymous = [c for c in cases if not c.cmd_id]
        assert len(by_id.get("", [])) == len(anonymous)
        assert {r["status"] for r in by_id.get("", [])} == {"rejected"}
        assert [r["name"] for r in by_id[""]] == [c.name for c in anonymous]
        assert all(r.get("error") for r in replies if r["status"] != "ok"), "a reply without why"
        # Nothing was executed: the event log did not move.
        assert await last_seq(agent) == seq_before

        # The hall still serves, through central and locally, on the same connection.
        await central.command("issue_ticket", {"cmd_id": "after-1", "service": "social"})
        after = await central.reply_to("after-1")
        assert after["status"] == "ok", after
        assert after["result"]["ticket"]["number"] == "A001"
        async with httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent), timeout=10) as http:
            r = await http.post("/api/v1/tickets", json={"service": "social"})
            assert r.status_code == 201, r.text
            assert r.json()["result"]["ticket"]["number"] == "A002"
        assert agent.link.counters.connects == 1


# -- 5. expiry, dedupe, response topics ------------------------------------------------


@pytest.mark.timeout(60)
async def test_expired_commands_never_run_and_a_repeated_cmd_id_runs_once(
    broker: Broker, agent_factory: Callable[..., Any]
) -> None:
    def called(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in log if e["type"] == "ticket.called"]

    async with Central(
        broker.url, HALL, ["reply", "central/replies/#"], client_id="central-ops"
    ) as central:
        async with agent_factory(broker) as agent:
            await connected(agent)
            for service in ("social", "social", "general"):
                await agent.hall.execute(Take(service=service))
            seq = await last_seq(agent)

            await central.command(
                "issue_ticket",
                {"cmd_id": "late-1", "service": "social", "expires_at": "2026-01-01T08:00:00Z"},
            )
            late = await central.reply_to("late-1")
            assert late["status"] == "expired", late
            assert "not executed" in late["error"]
            assert await last_seq(agent) == seq, "an expired command left an event"

            for _ in range(2):
                await central.command("call_next", {"cmd_id": "dup-1", "window": "w1"})
            await until(lambda: len(central.replies("dup-1")) == 2, 10, "both answers")
            first, second = central.replies("dup-1")
            assert first == second
            assert first["status"] == "ok"
            assert first["result"]["ticket"]["number"] == "A001"
            assert len(called(await stored_events(agent))) == 1

            asked = publish_properties(
                ResponseTopic="central/replies/ops-7", CorrelationData=b"\x00ops-7\xff"
            )
            await central.command("get_status", {"cmd_id": "status-1"}, properties=asked)
            await until(lambda: central.on("central/replies/ops-7"), 10, "the response topic")
            response = central.on("central/replies/ops-7")[0]
            assert response.json()["cmd_id"] == "status-1"
            assert response.json()["status"] == "ok"
            assert response.properties is not None
            assert getattr(response.properties, "CorrelationData", None) == b"\x00ops-7\xff"
            assert response.json() == (await central.reply_to("status-1"))
            seq = await last_seq(agent)

        # The hall is away; the broker keeps its session and queues what central sends.
        await central.command(
            "issue_ticket",
            {"cmd_id": "stale-1", "service": "civil"},
            properties=publish_properties(MessageExpiryInterval=1),
        )
        await central.command("call_next", {"cmd_id": "dup-1", "window": "w1"})
        await central.command("get_status", {"cmd_id": "control-1"})
        # The expiry must pass while the hall is away (the broker counts whole seconds).
        await asyncio.sleep(2.5)

        async with agent_factory(broker) as agent:
            await connected(agent)
            control = await central.reply_to("control-1")
            assert control["status"] == "ok"
            # Queued in order before control-1: had the broker delivered it, it is answered.
            assert central.replies("stale-1") == []
            assert len(central.replies("dup-1")) == 3
            assert central.replies("dup-1")[2] == first
            log = await stored_events(agent)
            assert len(called(log)) == 1, "a repeated cmd_id ran again after a restart"
            assert not [e for e in log if e["data"].get("service") == "civil"]
            assert await last_seq(agent) == seq


# -- 6. TLS ---------------------------------------------------------------------------


def tls_section(pki: Pki, *, ca: Path | None = None) -> dict[str, str]:
    return {
        "ca_file": str(ca or pki.ca_cert),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }


def central_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


@pytest.mark.timeout(60)
async def test_tls_with_the_right_certificates_connects(
    broker_factory: Callable[..., Broker], pki: Pki, agent_factory: Callable[..., Any]
) -> None:
    broker = broker_factory(tls=pki)
    assert broker.url.startswith("mqtts://")
    async with agent_factory(broker, mqtt={"tls": tls_section(pki)}) as agent:
        await connected(agent)
        birth = (await retained(broker.url, ["state"], tls_context=central_tls(pki)))["state"]
        assert birth["online"] is True
        assert birth["boot_id"] == agent.link.boot_id
        assert agent.link.counters.last_error is None


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake to the garbage collector.
PAHO_TLS_SOCKET = "ignore:unclosed <ssl.SSLSocket:ResourceWarning"


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings(PAHO_TLS_SOCKET)
async def test_tls_with_a_wrong_ca_fails_clearly(
    broker_factory: Callable[..., Broker], pki: Pki, agent_factory: Callable[..., Any]
) -> None:
    broker = broker_factory(tls=pki)
    tls = tls_section(pki, ca=pki.wrong_ca_cert)
    async with agent_factory(broker, mqtt={"tls": tls}) as agent:
        await until(lambda: agent.link.counters.last_error, 10, "a connection error")
        error = agent.link.counters.last_error
        assert error is not None
        assert error.startswith("TLS: ")
        assert "not trusted by mqtt.tls.ca_file" in error
        assert "No plaintext attempt is made" in error
        assert not agent.link.connected.is_set()
        assert agent.link.counters.connects == 0
    assert "as test-hall" not in broker.log_text(), "the broker saw an MQTT CONNECT"
    gc.collect()  # paho's abandoned sockets go now, under this test's warning filter


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings(PAHO_TLS_SOCKET)
async def test_a_refused_client_certificate_is_named(
    broker_factory: Callable[..., Broker], pki: Pki, agent_factory: Callable[..., Any]
) -> None:
    broker = broker_factory(tls=pki)
    tls = {
        "ca_file": str(pki.ca_cert),
        "cert_file": str(pki.wrong_client_cert),
        "key_file": str(pki.wrong_client_key),
    }
    async with agent_factory(broker, mqtt={"tls": tls}) as agent:
        await until(lambda: agent.link.counters.last_error, 30, "a connection error")
        error = agent.link.counters.last_error
        assert error is not None
        assert error.startswith("TLS: the broker refused this hall's client certificate"), error
        assert agent.link.counters.connects == 0
    gc.collect()


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings(PAHO_TLS_SOCKET)
async def test_tls_is_never_replaced_by_plaintext(pki: Pki, tmp_path: Path) -> None:
    """A listener posing as the broker: every connection opens with a TLS handshake."""
    first_bytes: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []
    handlers: list[asyncio.Task[Any]] = []

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        writers.append(writer)
        first = await reader.read(1)
        if first:  # (b"" when the test closed a connection still waiting)
            first_bytes.append(first)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = link_config(
        tmp_path / "state", f"mqtts://localhost:{port}", mqtt={"tls": tls_section(pki)}
    )
    async with server, running_agent(config) as agent:
        await until(lambda: len(first_bytes) >= 4, 20, "several connection attempts")
        assert agent.link.counters.last_error is not None
        assert agent.link.counters.connects == 0
    # A connection the agent opened as it stopped ends here, not in a later test's loop.
    for writer in writers:
        writer.close()
    await asyncio.gather(*handlers, return_exceptions=True)
    gc.collect()  # paho's abandoned sockets go now, under this test's warning filter
    assert first_bytes, "no connection was attempted"
    # 0x16: a TLS handshake record; an MQTT CONNECT would start with 0x10.
    assert set(first_bytes) == {b"\x16"}, first_bytes


@pytest.mark.timeout(60)
async def test_a_refused_login_is_named_and_the_right_one_connects(
    broker_factory: Callable[..., Broker], agent_factory: Callable[..., Any], tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    passwords.touch()
    made = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-b", str(passwords), HALL, "right-secret"
    )
    assert await made.wait() == 0
    broker = broker_factory(extra_config=["allow_anonymous false", f"password_file {passwords}"])
    wrong = {"username": HALL, "password": "wrong-secret"}
    async with agent_factory(broker, mqtt=wrong) as agent:
        await until(lambda: agent.link.counters.last_error, 10, "a connection error")
        error = agent.link.counters.last_error or ""
        assert error.startswith("the broker refused the login ([code:13"), error
        assert "mqtt.username/password" in error
    right = {"username": HALL, "password": "right-secret"}
    async with agent_factory(broker, mqtt=right) as agent:
        await connected(agent)
        assert agent.link.counters.last_error is None


# -- 7. config push --------------------------------------------------------------------


def pushed_sections(**changes: Any) -> dict[str, Any]:
    """The central-managed sections of the test hall, with a fifth service at w3."""
    base = hall_config(Path("unused"))
    services = [*base["services"], {"id": "tax", "name": "税务", "prefix": "E", "hours": ALWAYS}]
    windows = [dict(w) for w in base["windows"]]
    windows[2]["services"] = [*windows[2]["services"], "tax"]
    return {"services": services, "windows": windows, **changes}


@pytest.mark.timeout(60)
async def test_config_push_applied_reported_and_kept_and_a_bad_one_rejected(
    broker: Broker, agent_factory: Callable[..., Any]
) -> None:
    def events_of(kind: str) -> list[dict[str, Any]]:
        return [e for e in central.events() if e["type"] == kind]

    def state() -> dict[str, Any]:
        return central.latest("state") or {}

    async with Central(broker.url, HALL, ["event/#", "state"]) as central:
        async with agent_factory(broker) as agent:
            await connected(agent)
            push = {"version": "v2", "config": pushed_sections()}
            await central.publish("config", json.dumps(push, ensure_ascii=False), retain=True)
            await until(lambda: events_of("config.applied"), 10, "config.applied")
            applied = events_of("config.applied")[0]["data"]
            assert applied == {"version": "v2", "sections": ["services", "windows"]}
            await until(
                lambda: state().get("config_version") == "v2",
                10,
                "the applied version in the retained state",
            )
            assert agent.link.configs.applied_version == "v2"
            assert [s.id for s in agent.hall.config.services][-1] == "tax"
            taken = await agent.hall.execute(Take(service="tax"))
            assert taken.result["ticket"]["number"] == "E001"

            running = agent.hall.config
            bad_windows = [dict(w) for w in pushed_sections()["windows"]]
            bad_windows[0]["services"] = ["social", "passport"]
            half = [dict(s) for s in pushed_sections()["services"]]
            half[4]["name"] = "税务\ud800"  # sent as a \u escape: half of a character
            rejected: dict[str, dict[str, Any]] = {}
            for label, payload in [
                (
                    "unknown service",
                    {"version": "v3", "config": pushed_sections(windows=bad_windows)},
                ),
                ("foreign section", {"version": "v4", "config": {"mqtt": {"url": None}}}),
                ("half a character", {"version": "v5", "config": pushed_sections(services=half)}),
                ("not JSON", "not json at all"),
            ]:
                seen = len(events_of("config.rejected"))
                body = payload if isinstance(payload, str) else json.dumps(payload)
                await central.publish("config", body, retain=True)
                await until(
                    lambda n=seen: len(events_of("config.rejected")) > n,
                    10,
                    f"config.rejected for the push with {label}",
                )
                rejected[label] = events_of("config.rejected")[seen]["data"]
            assert rejected["unknown service"]["version"] == "v3"
            assert any(
                "windows[0](w1).services" in p and "passport" in p
                for p in rejected["unknown service"]["problems"]
            ), rejected
            assert rejected["foreign section"]["version"] == "v4"
            assert rejected["foreign section"]["problems"][0].startswith("config.mqtt: ")
            # Unreadable pushes have no version to report, only why.
            assert rejected["half a character"]["version"] is None
            assert rejected["half a character"]["problems"][0].startswith("payload: ")
            assert rejected["not JSON"]["version"] is None
            assert rejected["not JSON"]["problems"][0].startswith("payload: Invalid JSON")
            assert agent.hall.config == running
            assert agent.link.configs.applied_version == "v2"
            assert state()["config_version"] == "v2"
            applied_seq = events_of("config.applied")[0]["seq"]

        # Central withdraws the retained push: the hall runs on what it saved.
        await central.publish("config", b"", retain=True)
        async with agent_factory(broker) as agent:
            await connected(agent)
            assert agent.link.configs.applied_version == "v2"
            assert "tax" in {s.id for s in agent.hall.config.services}
            assert agent.hall.config.windows[2].services[-1] == "tax"
            await until(
                lambda: state().get("boot_id") == agent.link.boot_id and state()["online"],
                10,
                "the new birth",
            )
            assert state()["config_version"] == "v2"
            log = await stored_events(agent)
            assert [e["seq"] for e in log if e["type"] == "config.applied"] == [applied_seq]


# -- 8. acknowledgements, retention and replays ------------------------------------------


def chatter(count: int) -> Callable[[Store, dt.datetime, bool], list[Any]]:
    """A burst of device chatter (the lowest retention class), ~900 bytes each."""

    def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[list[Any]]:
        detail = "纸将尽 paper low " * 40
        events = [
            RawEvent(
                "device.changed",
                now,
                {"device": "kiosk-printer", "detail": detail, "n": i},
                EventClass.CHATTER,
            )
            for i in range(count)
        ]
        return Written.of_events(store.append(events, clock_ok=clock_ok))

    return write


@pytest.mark.timeout(90)
async def test_acks_retention_by_class_and_replays_of_what_is_left(
    broker: Broker, agent_factory: Callable[..., Any]
) -> None:
    limits = {"max_bytes": 1024 * 1024, "prune_interval_s": 1}
    async with (
        Central(broker.url, HALL, ["event/#", "reply", "metrics"]) as central,
        agent_factory(broker, limits=limits) as agent,
    ):
        await connected(agent)
        store = agent.hall.store
        for i in range(30):
            await agent.hall.execute(Take(service=SERVICES[i % 4]))
        await until(lambda: len(set(central.event_seqs())) >= 30, 10, "the tickets at central")

        await central.publish("ack", json.dumps({"epoch": store.epoch + 1, "seq": 30}))
        await central.publish("ack", json.dumps({"epoch": store.epoch, "seq": 10}))
        # The other epoch's ack is not applied: the hall answers it with seq 31.
        await until(
            lambda: agent.hall.store_call(lambda s: s.stats().unacked == 21),
            10,
            "events 1-10 acknowledged (and the other epoch's ack refused)",
        )
        await until(lambda: 31 in central.event_seqs(), 10, "the refusal at central")
        (refusal,) = [e for e in central.events() if e["seq"] == 31]
        assert refusal["type"] == "outbox.ack_refused"
        assert refusal["data"]["reason"] == "wrong_epoch"
        await until(
            lambda: agent.hall.store_call(lambda s: s.stats().unpublished == 0),
            5,
            "every PUBACK written back",
        )
        stats = await agent.hall.store_call(Store.stats)
        assert (stats.total, stats.unacked, stats.evicted_total) == (31, 21, 0)

        for _ in range(7):
            written = await agent.hall.write(chatter(200))
        # The last seq the flood wrote (read from the write itself: the retention loop may
        # append its report at any moment after it).
        flooded = written[-1].seq
        await until(
            lambda: [e for e in central.events() if e["type"] == "outbox.evicted"],
            15,
            "an outbox.evicted report",
        )
        (report,) = [e for e in central.events() if e["type"] == "outbox.evicted"]
        evicted = report["data"]
        count = evicted["count"]
        # Acknowledged events went first, unreported; then the oldest chatter, and only it.
        assert evicted["by_class"] == {"chatter": count}
        assert evicted["ranges"] == [[32, 31 + count]]
        assert evicted["reason"] == "space"
        assert evicted["evicted_total"] == count
        assert report["seq"] == flooded + 1
        left = await agent.hall.store_call(lambda s: s.seqs_between(1, report["seq"]))
        assert left == [*range(11, 32), *range(32 + count, report["seq"] + 1)]
        stats = await agent.hall.store_call(Store.stats)
        assert stats.bytes <= limits["max_bytes"]
        assert stats.evicted_total == count
        await until(
            lambda: any(m.json()["evicted_total"] == count for m in central.on("metrics")),
            10,
            "metrics counting the eviction",
        )

        before = central.event_seqs()
        await central.command(
            "replay_events", {"cmd_id": "replay-1", "from_seq": 1, "to_seq": flooded}
        )
        reply = await central.reply_to("replay-1")
        assert reply["status"] == "ok", reply
        assert reply["result"]["missing"] == [[1, 10], [32, 31 + count]]
        assert reply["result"]["resending"] == len(left) - 1
        resent = [s for s in left if s <= flooded]
        await until(
            lambda: sorted(central.event_seqs()[len(before) :]) == resent,
            60,  # paced at drain_rate (200/s): about 6 s for 1,244 events, more on a busy host
            "the replayed range at central",
        )


def test_a_closed_handshake_with_a_client_certificate_names_both_causes() -> None:
    """Under TLS 1.3 a broker refuses a client certificate after the handshake; a busy hall
    may read only the closed socket. With a certificate configured, the message names it."""
    import ssl as ssl_module

    from agent.central.link import describe_connect_error

    eof = ssl_module.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)")
    named = describe_connect_error(eof, True, client_cert=True)
    assert named.startswith("TLS: the broker refused this hall's client certificate, or closed")
    assert "mqtt.tls.cert_file" in named
    # Without a client certificate there is none to blame.
    assert "certificate" not in describe_connect_error(eof, True, client_cert=False)
