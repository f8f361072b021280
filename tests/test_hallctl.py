"""hallctl: the gap tracker's rules, and fleet / cmd / ingest against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from broker import Broker
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pki import Pki

from agent.central.contract import Ack, Birth, EventEnvelope, Metrics, ReplayEvents, Reply, Will
from hallctl import cli as hallctl
from hallctl import ingest
from hallctl.broker import EXIT_USAGE, BrokerOptions
from hallctl.gaps import MAX_REPLAY_INTERVAL_S, Stream, Tracker

HALL = "hd-test-001"
WAIT_S = 15.0  # every wait on a condition below gives up (and fails) after this


async def eventually(condition: Callable[[], bool], what: str, within: float = WAIT_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


# -- the gap tracker, without a broker -----------------------------------------------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, set[int], list[int]]:
    """``n`` events, some dropped, the rest delivered in any order with duplicates."""
    n = draw(st.integers(1, 150))
    dropped = draw(st.sets(st.integers(1, n), max_size=n))
    kept = [s for s in range(1, n + 1) if s not in dropped]
    duplicates = draw(st.lists(st.sampled_from(kept), max_size=40)) if kept else []
    order = draw(st.permutations(kept + duplicates))
    return n, dropped, order


@settings(max_examples=300, deadline=None)
@given(deliveries(), st.randoms(use_true_random=False))
def test_tracker_reports_exactly_the_missing_ranges(
    case: tuple[int, set[int], list[int]], rng: Any
) -> None:
    _, dropped, order = case
    stream = Stream()
    new = [seq for seq in order if stream.add(seq, now=0.0)]
    assert sorted(new) == sorted(set(order)), "each seq is new exactly once"
    top = max(order, default=0)
    lost = {s for s in dropped if s <= top}
    assert stream.top == top
    assert stream.missing() == ranges(lost)
    assert stream.high_water == (min(lost) - 1 if lost else top)

    # The replay arrives, in any order: nothing is missing any more.
    late = sorted(lost)
    rng.shuffle(late)
    for seq in late:
        assert stream.add(seq, now=1.0)
    assert stream.missing() == []
    assert stream.high_water == top


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.integers(1, 120)),
    st.lists(st.tuples(st.integers(1, 120), st.integers(0, 15)), max_size=6),
)
def test_evicted_ranges_are_no_longer_missing(
    received: set[int], evictions: list[tuple[int, int]]
) -> None:
    stream = Stream()
    for seq in sorted(received, key=lambda s: (s * 7919) % 127):
        stream.add(seq, now=0.0)
    gone: set[int] = set()
    for start, length in evictions:
        newly = stream.mark_gone(start, start + length, now=0.0)
        fresh = set(range(start, start + length + 1)) - gone - received
        assert newly == len(fresh)
        gone |= fresh
    top = max(received | gone, default=0)
    assert stream.top == top
    assert stream.missing() == ranges(set(range(1, top + 1)) - received - gone)


def test_a_gap_is_requested_after_the_timeout_then_with_backoff() -> None:
    stream = Stream()
    stream.add(1, now=0.0)
    stream.add(5, now=0.0)  # 2..4 missing since t=0
    assert stream.due(now=1.9, timeout=2.0) == []
    assert stream.due(now=2.0, timeout=2.0) == [(2, 4)]
    assert stream.due(now=2.1, timeout=2.0) == [], "not again right away"
    assert stream.due(now=5.9, timeout=2.0) == [], "the second request waits twice as long"
    assert stream.due(now=6.0, timeout=2.0) == [(2, 4)]
    # However many requests went unanswered, the interval stays bounded.
    now = 6.0
    for _ in range(20):
        now += MAX_REPLAY_INTERVAL_S
        assert stream.due(now=now, timeout=2.0) == [(2, 4)]


def test_progress_inside_a_gap_delays_the_next_request() -> None:
    stream = Stream()
    stream.add(10, now=0.0)  # 1..9 missing
    assert stream.due(now=2.0, timeout=2.0) == [(1, 9)]
    for seq, t in zip(range(1, 6), (2.5, 3.0, 3.5, 4.0, 4.5), strict=True):
        stream.add(seq, now=t)  # the replay is arriving
        assert stream.due(now=t, timeout=2.0) == []
    assert stream.missing() == [(6, 9)]
    assert stream.due(now=4.5 + 3.9, timeout=2.0) == []
    assert stream.due(now=4.5 + 4.0, timeout=2.0) == [(6, 9)]


def test_a_long_gap_is_requested_in_chunks() -> None:
    stream = Stream()
    stream.add(25_001, now=0.0)
    assert stream.due(now=2.0, timeout=2.0, limit=10_000) == [(1, 10_000)]
    for seq in range(1, 10_001):
        stream.add(seq, now=3.0)
    assert stream.due(now=3.0 + 4.0, timeout=2.0, limit=10_000) == [(10_001, 20_000)]


def test_the_tail_announced_by_the_hall_is_a_gap() -> None:
    stream = Stream()
    for seq in (1, 2, 3):
        stream.add(seq, now=0.0)
    stream.announce(6, now=0.0)  # the hall published up to 6; 4..6 never came
    assert stream.missing() == [(4, 6)]
    assert stream.high_water == 3
    assert stream.add(6, now=0.1)
    assert stream.missing() == [(4, 5)]


def test_only_the_current_epoch_is_replayed() -> None:
    tracker = Tracker()
    for seq in (1, 2, 4):
        tracker.add(HALL, 1, seq, now=0.0)
    added = tracker.add(HALL, 2, 2, now=0.0)  # the store was recreated; 1 of epoch 2 missing
    assert added.new_epoch
    assert tracker.high_water(HALL) == (2, 0)
    assert list(tracker.due(now=10.0, timeout=2.0)) == [(HALL, 2, (1, 1))]
    late = tracker.add(HALL, 1, 3, now=10.0)
    assert late.stale_epoch
    assert late.new
    assert tracker.streams[(HALL, 1)].high_water == 4
    assert tracker.high_water(HALL) == (2, 0)


# -- cmd: the command line, before any broker ----------------------------------------------


def test_parameters_are_json_when_they_parse_else_strings() -> None:
    assert hallctl.parse_params(["window=w1", "pages=3", "ok=true", 'staff=[{"a":1}]']) == {
        "window": "w1",
        "pages": 3,
        "ok": True,
        "staff": [{"a": 1}],
    }
    assert hallctl.parse_params(["number=012"]) == {"number": "012"}


async def test_unknown_command_and_bad_parameters_are_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--broker", "mqtt://127.0.0.1:9", "cmd", HALL]
    assert await hallctl.run([*base, "call_nxt", "window=w1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown command 'call_nxt'" in err
    assert "call_next" in err

    assert await hallctl.run([*base, "capture_document", "window=w1", "pages=99"]) == 2
    err = capsys.readouterr().err
    assert "pages: Input should be less than or equal to 50" in err

    assert await hallctl.run([*base, "call_next"]) == 2
    assert "window: Field required" in capsys.readouterr().err

    assert await hallctl.run([*base, "call_next", "window=w1", "colour=red"]) == 2
    assert "colour: Extra inputs are not permitted" in capsys.readouterr().err

    assert await hallctl.run([*base, "call_next", "window"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_build_command_sends_only_what_was_given() -> None:
    payload = hallctl.build_command("transfer", ["window=w1", "service=social"], cmd_id="c1")
    assert payload == {"cmd_id": "c1", "window": "w1", "service": "social"}


# -- against a real mosquitto --------------------------------------------------------------


def envelope(seq: int, *, epoch: int = 1, kind: str = "ticket.issued", **data: Any) -> bytes:
    event = EventEnvelope(
        hall=HALL,
        epoch=epoch,
        seq=seq,
        id=f"{epoch}-{seq}-{uuid.uuid5(uuid.NAMESPACE_OID, str(seq))}",
        type=kind,
        at="2026-11-23T09:00:00.000+08:00",
        clock_ok=True,
        data=data or {"ticket": f"A{seq:03d}"},
    )
    return event.model_dump_json().encode()


def client(broker: Broker, identifier: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
    )


@dataclass
class FakeHall:
    """What the real link does, as little as the ingest test needs: publish events, answer
    replay_events (resend what it still has, say what it lost), record acks."""

    events: dict[int, bytes]
    lost: set[int] = field(default_factory=set)  # not in its store any more
    log: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def replays(self) -> list[tuple[int, int]]:
        return [value for kind, value in self.log if kind == "replay"]

    @property
    def acks(self) -> list[Ack]:
        return [value for kind, value in self.log if kind == "ack"]

    async def publish(self, mqtt: aiomqtt.Client, seqs: Iterable[int]) -> None:
        for seq in seqs:
            kind = json.loads(self.events[seq])["type"]
            await mqtt.publish(f"hall/v1/{HALL}/event/{kind}", self.events[seq], qos=1)

    async def serve(self, mqtt: aiomqtt.Client) -> None:
        async for message in mqtt.messages:
            topic = message.topic.value
            assert isinstance(message.payload, bytes)
            if topic.endswith("/ack"):
                self.log.append(("ack", Ack.model_validate_json(message.payload)))
            elif topic.endswith("/cmd/replay_events"):
                command = ReplayEvents.model_validate_json(message.payload)
                span = range(command.from_seq, command.to_seq + 1)
                self.log.append(("replay", (command.from_seq, command.to_seq)))
                have = [s for s in span if s in self.events and s not in self.lost]
                reply = Reply(
                    cmd_id=command.cmd_id,
                    name="replay_events",
                    status="ok",
                    result={
                        "resending": len(have),
                        "missing": [list(r) for r in ranges(set(span) - set(have))],
                        "epoch": 1,
                    },
                )
                await mqtt.publish(f"hall/v1/{HALL}/reply", reply.model_dump_json(), qos=1)
                await self.publish(mqtt, have)


@asynccontextmanager
async def running_ingest(
    broker: Broker, db: Path, **options: Any
) -> AsyncIterator[tuple[ingest.Ingest, asyncio.Task[None]]]:
    store = ingest.EventStore(db)
    consumer = ingest.Ingest(store, hall=HALL, **options)
    address = BrokerOptions("127.0.0.1", broker.port, None, None, None)
    task = asyncio.create_task(ingest.serve(address, consumer, f"ingest-{uuid.uuid4().hex}"))
    try:
        await eventually(consumer.ready.is_set, "ingest to subscribe")
        yield consumer, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()


def stored(db: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT epoch, seq, envelope FROM events ORDER BY epoch, seq")
        return [(e, s, json.loads(env)["id"]) for e, s, env in rows]


@pytest.mark.timeout(60)
async def test_ingest_asks_for_exactly_the_dropped_ranges_and_ends_complete(
    broker: Broker, tmp_path: Path
) -> None:
    n = 60
    hall = FakeHall({seq: envelope(seq) for seq in range(1, n + 1)})
    dropped = set(range(21, 31)) | set(range(56, 61))  # a hole, and the tail
    db = tmp_path / "central.db"
    async with (
        client(broker, HALL) as mqtt,
        running_ingest(broker, db, gap_timeout=0.5, ack_every=7, until_complete=n) as (
            consumer,
            task,
        ),
    ):
        await mqtt.subscribe(f"hall/v1/{HALL}/cmd/#", qos=1)
        await mqtt.subscribe(f"hall/v1/{HALL}/ack", qos=1)
        responder = asyncio.create_task(hall.serve(mqtt))
        await hall.publish(mqtt, [s for s in range(1, n + 1) if s not in dropped])
        await hall.publish(mqtt, range(5, 9))  # a redelivery: must be stored once
        # Nothing after 55 ever arrives: only the hall's metrics reveal the lost tail.
        await eventually(lambda: consumer.tracker.streams[(HALL, 1)].top >= 55, "events")
        metrics = Metrics(
            at="2026-11-23T09:00:01+08:00",
            outbox_depth=0,
            outbox_bytes=0,
            oldest_pending_age_s=None,
            evicted_total=0,
            reconnects=0,
            published_total=n,
            last_seq=n,
            epoch=1,
            devices={},
        )
        await mqtt.publish(f"hall/v1/{HALL}/metrics", metrics.model_dump_json(), qos=0)

        await asyncio.wait_for(task, WAIT_S)  # until_complete: ingest ends by itself
        await eventually(lambda: any(a.seq == n for a in hall.acks), "the final ack")
        responder.cancel()

    assert sorted(hall.replays) == [(21, 30), (56, 60)]
    rows = stored(db)
    assert [(e, s) for e, s, _ in rows] == [(1, s) for s in range(1, n + 1)]
    assert [i for _, _, i in rows] == [json.loads(hall.events[s])["id"] for s in range(1, n + 1)]
    assert consumer.stats.duplicates >= 4
    # An ack never claims more than was stored without a hole, and never goes back.
    first_replay = next(i for i, (kind, _) in enumerate(hall.log) if kind == "replay")
    early = [a.seq for kind, a in hall.log[:first_replay] if kind == "ack"]
    assert early
    assert max(early) <= 20
    seqs = [a.seq for a in hall.acks]
    assert seqs == sorted(seqs)
    assert hall.acks[-1] == Ack(epoch=1, seq=n)


@pytest.mark.timeout(60)
async def test_ingest_stops_waiting_for_what_the_hall_evicted_or_lost(
    broker: Broker, tmp_path: Path
) -> None:
    events = {seq: envelope(seq) for seq in range(1, 41)}
    events[41] = envelope(41, kind="outbox.evicted", count=5, ranges=[[11, 15]], reason="bytes")
    hall = FakeHall(events, lost={33, 34})  # 31..35 dropped; the hall still has 31, 32, 35
    db = tmp_path / "central.db"
    sent = [s for s in events if not 11 <= s <= 15 and not 31 <= s <= 35]
    # The gap timer runs on a clock the test moves: no gap is due until everything sent
    # has arrived (the evicted 11..15 is then known), however slow the machine is.
    clock = [0.0]
    async with (
        client(broker, HALL) as mqtt,
        running_ingest(broker, db, gap_timeout=0.3, until_complete=41, clock=lambda: clock[0]) as (
            consumer,
            task,
        ),
    ):
        await mqtt.subscribe(f"hall/v1/{HALL}/cmd/#", qos=1)
        await mqtt.subscribe(f"hall/v1/{HALL}/ack", qos=1)
        responder = asyncio.create_task(hall.serve(mqtt))
        await hall.publish(mqtt, sent)
        await eventually(lambda: len(stored(db)) == len(sent), "everything sent is stored")
        clock[0] += 10.0  # the open gap 31..35 is now overdue
        await asyncio.wait_for(task, WAIT_S)
        await eventually(lambda: any(a.seq == 41 for a in hall.acks), "the final ack")
        responder.cancel()

    assert hall.replays == [(31, 35)], "evicted 11..15 is never asked for"
    assert [s for _, s, _ in stored(db)] == sorted([*sent, 31, 32, 35])
    with sqlite3.connect(db) as conn:
        gone = conn.execute("SELECT start_seq, end_seq FROM gone ORDER BY start_seq").fetchall()
    assert gone == [(11, 15), (33, 34)]
    assert consumer.tracker.high_water(HALL) == (1, 41)


@pytest.mark.timeout(60)
async def test_ingest_command_survives_sigterm_and_keeps_its_session(
    broker: Broker, tmp_path: Path
) -> None:
    """The console script end to end: SIGTERM stops it cleanly; events published while it
    is down wait in its persistent session and are stored when it comes back."""
    db = tmp_path / "central.db"
    argv = [
        sys.executable,
        "-m",
        "hallctl.cli",
        "--broker",
        broker.url,
        "ingest",
        "--db",
        str(db),
        "--hall",
        HALL,
        "--client-id",
        "ingest-sigterm-test",
    ]

    async def start(*extra: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *extra,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stderr is not None
        async with asyncio.timeout(WAIT_S):
            while b"ingest subscribed" not in await proc.stderr.readline():
                pass
        return proc

    proc = await start()
    async with client(broker, HALL) as mqtt:
        for seq in (1, 2, 3):
            await mqtt.publish(f"hall/v1/{HALL}/event/ticket.issued", envelope(seq), qos=1)
        await eventually(lambda: len(stored(db)) == 3, "3 stored events")
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 0, err.decode()
        assert b"ingest stopped: 3 stored" in err

        for seq in (4, 5, 6):  # while ingest is down
            await mqtt.publish(f"hall/v1/{HALL}/event/ticket.issued", envelope(seq), qos=1)

    proc = await start("--until-complete", "6")
    _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()
    assert [s for _, s, _ in stored(db)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.timeout(30)
async def test_cmd_round_trip_with_response_topic_and_correlation(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[tuple[str, dict[str, Any], Properties | None]] = []

    async def responder(mqtt: aiomqtt.Client) -> None:
        async for message in mqtt.messages:
            assert isinstance(message.payload, bytes)
            payload = json.loads(message.payload)
            received.append((message.topic.value, payload, message.properties))
            ok = payload["window"] == "w1"
            reply = Reply(
                cmd_id=payload["cmd_id"],
                name="call_next",
                status="ok" if ok else "failed",
                result={"ticket": "A013"} if ok else None,
                error=None if ok else "window w9 is closed; open it first",
            )
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = getattr(message.properties, "CorrelationData", None)
            await mqtt.publish(
                getattr(message.properties, "ResponseTopic", ""),
                reply.model_dump_json(),
                qos=1,
                properties=props,
            )

    async with client(broker, HALL) as mqtt:
        await mqtt.subscribe(f"hall/v1/{HALL}/cmd/#", qos=1)
        task = asyncio.create_task(responder(mqtt))
        base = ["--broker", broker.url, "cmd", HALL, "call_next"]
        code = await hallctl.run([*base, "window=w1", "--timeout", "5"])
        out = capsys.readouterr().out
        assert code == 0
        failed = await hallctl.run([*base, "window=w9", "--timeout", "5"])
        failed_out = capsys.readouterr().out
        task.cancel()

    reply = Reply.model_validate_json(out)
    assert (reply.status, reply.result) == ("ok", {"ticket": "A013"})
    assert failed == 1
    assert Reply.model_validate_json(failed_out).error == "window w9 is closed; open it first"
    topic, payload, props = received[0]
    assert topic == f"hall/v1/{HALL}/cmd/call_next"
    assert payload == {"cmd_id": reply.cmd_id, "window": "w1"}
    assert props is not None
    assert getattr(props, "CorrelationData", None) == reply.cmd_id.encode()
    # The broker counts the expiry down while it holds the message (never up, never gone).
    assert 1 <= getattr(props, "MessageExpiryInterval", 0) <= 5
    assert getattr(props, "ResponseTopic", "").startswith(f"hall/v1/{HALL}/reply/")


@pytest.mark.timeout(30)
async def test_cmd_without_an_answer_fails_after_its_timeout(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = await hallctl.run(
        ["--broker", broker.url, "cmd", HALL, "get_status", "--timeout", "0.5"]
    )
    assert code == 1
    assert time.monotonic() - started < 15  # gave up, did not wait for the test's timeout
    assert "no reply from hd-test-001 within 0.5s" in capsys.readouterr().err


@pytest.mark.timeout(30)
async def test_tail_prints_one_line_per_event_of_the_chosen_type(broker: Broker) -> None:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hallctl.cli", "--broker", broker.url, "-v"],
        *["tail", "--hall", HALL, "--type", "ticket.", "--count", "2"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(WAIT_S):
        while b"subscribed to" not in await proc.stderr.readline():
            pass
    async with client(broker, HALL) as mqtt:
        for seq, kind in enumerate(("ticket.issued", "window.paused", "ticket.called"), 1):
            payload = envelope(seq, kind=kind, ticket="A001")
            await mqtt.publish(f"hall/v1/{HALL}/event/{kind}", payload, qos=1)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        f'2026-11-23T09:00:00.000+08:00 {HALL} 1:1 ticket.issued {{"ticket":"A001"}}',
        f'2026-11-23T09:00:00.000+08:00 {HALL} 1:3 ticket.called {{"ticket":"A001"}}',
    ]


async def _retain_two_halls(broker: Broker) -> None:
    birth = Birth(
        boot_id="boot-a",
        session=3,
        agent_version="0.1.0",
        config_version="2026-11-20.1",
        started_at="2026-11-23T08:00:00+08:00",
        clock_ok=True,
    )
    will = Will(boot_id="boot-b", session=1)
    async with client(broker) as mqtt:
        await mqtt.publish("hall/v1/hd-a/state", birth.model_dump_json(), qos=1, retain=True)
        await mqtt.publish("hall/v1/hd-b/state", will.model_dump_json(), qos=1, retain=True)


async def _hallctl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hallctl.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(30)
async def test_fleet_lists_the_retained_halls(broker: Broker) -> None:
    await _retain_two_halls(broker)
    code, out, err = await _hallctl("--broker", broker.url, "fleet", "--wait", "0.5")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "hall",
        "state",
        "boot_id",
        "session",
        "agent",
        "config",
        "started_at",
    ]
    assert lines[1].split() == [
        "hd-a",
        "online",
        "boot-a",
        "3",
        "0.1.0",
        "2026-11-20.1",
        "2026-11-23T08:00:00+08:00",
    ]
    assert lines[2].split()[:4] == ["hd-b", "offline", "boot-b", "1"]
    assert lines[-1] == "2 halls: 1 online, 1 offline or unknown"

    code, out, _ = await _hallctl("--broker", broker.url, "fleet", "--wait", "0.5", "--json")
    rows = json.loads(out)
    assert [(r["hall"], r["state"], r["boot_id"]) for r in rows] == [
        ("hd-a", "online", "boot-a"),
        ("hd-b", "offline", "boot-b"),
    ]


@pytest.mark.timeout(30)
async def test_fleet_over_mutual_tls_and_a_wrong_ca_is_refused(
    broker_factory: Callable[..., Broker], pki: Pki
) -> None:
    broker = broker_factory(tls=pki)
    tls = aiomqtt.TLSParameters(
        ca_certs=str(pki.ca_cert), certfile=str(pki.client_cert), keyfile=str(pki.client_key)
    )
    async with aiomqtt.Client(
        "localhost", broker.port, protocol=aiomqtt.ProtocolVersion.V5, tls_params=tls
    ) as mqtt:
        will = Will(boot_id="boot-t", session=1)
        await mqtt.publish("hall/v1/hd-t/state", will.model_dump_json(), qos=1, retain=True)
    files = ["--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    code, out, err = await _hallctl(
        "--broker", broker.url, "--ca", str(pki.ca_cert), *files, "fleet", "--wait", "0.5"
    )
    assert code == 0, err
    assert "hd-t" in out
    assert "offline" in out

    code, out, err = await _hallctl(
        "--broker", broker.url, "--ca", str(pki.wrong_ca_cert), *files, "fleet", "--wait", "0.5"
    )
    assert code == 1
    assert "certificate verify failed" in err
    assert out == ""


# -- a hall that refused central's ack -----------------------------------------------------

WRONG_EPOCH = {"reason": "wrong_epoch", "epoch": 1, "seq": 40, "last_seq": 7, "hall_epoch": 2,
               "acked_seq": 0}  # fmt: skip


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "refused central's ack" in r.getMessage()
    ]


def test_refusals_are_logged_once_per_hall_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    from hallctl.refusals import AckRefusals

    caplog.set_level(logging.WARNING, logger="hallctl")
    now = [0.0]
    refusals = AckRefusals(every_s=600, clock=lambda: now[0])
    refusals.note("hd-a", WRONG_EPOCH)
    for _ in range(5):  # the hall repeats its refusal once a minute
        now[0] += 60
        refusals.note("hd-a", WRONG_EPOCH)
    refusals.note("hd-b", {"reason": "malformed", "last_seq": 3, "hall_epoch": 1,
                           "acked_seq": 0, "detail": "seq: not an integer"})  # fmt: skip
    first, other = refusal_lines(caplog)  # one line per hall, not one per event
    assert first.startswith("hd-a refused central's ack: wrong_epoch (epoch 1, seq 40,")
    assert "hall_epoch 2" in first
    assert "ack the hall's current epoch" in first
    assert other.startswith("hd-b refused central's ack: malformed (")
    assert "detail: seq: not an integer" in other
    assert "{epoch, seq}" in other

    now[0] += 300  # 10 minutes after hd-a's line: the count since
    refusals.due()
    assert refusal_lines(caplog)[2] == (
        "hd-a refused central's ack again: 5 more since the last line, 6 in all; the last:"
        " wrong_epoch (epoch 1, seq 40, hall_epoch 2, last_seq 7, acked_seq 0). Check central's"
        " mark for this hall: ack the hall's current epoch (hall_epoch), not an older one"
    )
    refusals.due()
    refusals.flush()
    assert len(refusal_lines(caplog)) == 3, "nothing new to say"

    refusals.note("hd-b", {"reason": "beyond_last_seq", "epoch": 1, "seq": 90,
                           "last_seq": 3, "hall_epoch": 1, "acked_seq": 0})  # fmt: skip
    refusals.flush()  # at stop: what was counted is said
    last = refusal_lines(caplog)[3]
    assert last.startswith("hd-b refused central's ack again: 1 more since the last line, 2 in all")
    assert "beyond_last_seq (epoch 1, seq 90" in last
    assert "restored from a backup" in last
    assert refusals.total == 8


@pytest.mark.timeout(60)
async def test_the_ingest_warns_once_about_a_hall_refusing_its_acks(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hallctl")
    refused = [
        EventEnvelope(hall=HALL, epoch=2, seq=seq, id=f"2-{seq}", type="outbox.ack_refused",
                      at="2026-11-23T09:00:00.000+08:00", clock_ok=True, data=WRONG_EPOCH)
        .model_dump_json().encode()
        for seq in (1, 2, 3)
    ]  # fmt: skip
    async with (
        client(broker, HALL) as mqtt,
        running_ingest(broker, tmp_path / "central.db") as (consumer, _),
    ):
        for body in [*refused, refused[1]]:  # the second one redelivered: still 3 refusals
            await mqtt.publish(f"hall/v1/{HALL}/event/outbox.ack_refused", body, qos=1)
        await eventually(lambda: consumer.stats.duplicates == 1, "all four stored or deduped")
        assert consumer.stats.stored == 3
        (line,) = refusal_lines(caplog)
        assert line.startswith(f"{HALL} refused central's ack: wrong_epoch (epoch 1, seq 40,")
        consumer.refusals.flush()  # what `hallctl ingest` does when it stops
    assert refusal_lines(caplog)[1].startswith(
        f"{HALL} refused central's ack again: 2 more since the last line, 3 in all; the last:"
        " wrong_epoch"
    )


_SWALLOWS_ONE_CANCEL = """
import asyncio, os, signal, sys
import hallctl.cli as cli

cli.CANCEL_AGAIN_S = 0.2

async def swallowing(argv):
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        pass  # as Python 3.11's wait_for may, when its inner wait finishes at that moment
    await asyncio.sleep(60)
    return 3

cli.run = swallowing
sys.exit(asyncio.run(cli._until_signal([])))
"""


def test_sigterm_ends_hallctl_even_when_a_wait_swallowed_the_first_cancel() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SWALLOWS_ONE_CANCEL],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
