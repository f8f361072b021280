"""The scale-out ingest (``hallctl ingest --db postgresql://…``) against a real PostgreSQL
(a throw-away cluster, tests/postgres.py) and a real mosquitto: several workers on one
MQTT 5 shared subscription, simulated halls that drop, lose and resend events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from broker import Broker
from cityhalls import SimHall, ranges
from postgres import MISSING, Postgres, server_bin

from hallctl import pgingest
from hallctl.broker import BrokerOptions
from hallctl.pgstore import MIGRATIONS, Batch, PgStore, Row

pytestmark = pytest.mark.skipif(server_bin() is None, reason=MISSING)

WAIT_S = 60.0
ROOT = Path(__file__).resolve().parent.parent


async def eventually(condition: Callable[[], bool], what: str, within: float = WAIT_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def halls_running(halls: list[SimHall], port: int) -> AsyncIterator[None]:
    """The simulated halls publishing (and answering replays) until the block ends."""
    running = [asyncio.create_task(h.run(port)) for h in halls]
    try:
        yield
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def all_acked(halls: list[SimHall]) -> None:
    await eventually(
        lambda: all(h.acked == h.last for h in halls), "every hall acked to its last seq"
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


@pytest.fixture
def database(cluster: Postgres) -> str:
    return cluster.create_database()


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


@asynccontextmanager
async def workers(
    broker: Broker, url: str, count: int, **options: Any
) -> AsyncIterator[list[pgingest.PgIngest]]:
    address = BrokerOptions("127.0.0.1", broker.port, None, None, None)
    started = [await pgingest.open_worker(url, **options) for _ in range(count)]
    tasks = [
        asyncio.create_task(pgingest.serve_worker(address, w, f"ingest-{i}-{uuid.uuid4().hex[:6]}"))
        for i, w in enumerate(started)
    ]
    try:
        for worker in started:
            await eventually(worker.ready.is_set, "the workers to subscribe")
        yield started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in started:
            await pgingest.close_worker(worker)


def city(count: int, last: int) -> list[SimHall]:
    """Halls with every kind of trouble: a hole, a lost tail, seqs the hall no longer has."""
    halls = []
    for i in range(count):
        hall = SimHall(f"hd-{i:03d}", last)
        if i % 3 == 0:
            hall.dropped = set(range(11, 16))  # a hole
        if i % 3 == 1:
            hall.dropped = set(range(last - 3, last + 1))  # the tail: only metrics reveal it
        if i % 4 == 0:
            hall.dropped |= {30, 31}
            hall.lost = {31}  # asked for, the hall says it no longer has it
        halls.append(hall)
    return halls


async def test_migrations_apply_once_and_a_newer_database_is_refused(database: str) -> None:
    store = await PgStore.connect(database)
    try:
        assert await store.migrate() == len(MIGRATIONS)
        assert await store.migrate() == len(MIGRATIONS), "a second run changes nothing"
        await store.conn.execute("INSERT INTO hallctl_migrations (version) VALUES (99)")
        await store.conn.commit()
        with pytest.raises(RuntimeError, match="upgrade hallctl"):
            await store.migrate()
    finally:
        await store.close()


async def test_events_are_typed_partitioned_by_the_halls_day_and_deduplicated(
    database: str,
) -> None:
    import datetime as dt

    store = await PgStore.connect(database)
    try:
        await store.migrate()
        shanghai = dt.timezone(dt.timedelta(hours=8))
        late = dt.datetime(2026, 11, 23, 23, 30, tzinfo=shanghai)  # 15:30 UTC, same day
        early = dt.datetime(2026, 11, 24, 0, 30, tzinfo=shanghai)  # 16:30 UTC on the 23rd
        batch = Batch(
            rows=[
                Row("hd-1", 1, 1, late.date(), "a", "rating.submitted", late, True, {"level": 5}),
                Row("hd-1", 1, 2, early.date(), "b", "ticket.issued", early, True, {}),
            ]
        )
        first = await store.apply(batch)
        again = await store.apply(batch)
        assert (first.stored, first.duplicates) == (2, 0)
        assert (again.stored, again.duplicates) == (0, 2)
        assert await store.advance()
    finally:
        await store.close()
    found = rows(
        database,
        "SELECT tableoid::regclass::text, seq, day::text, data->>'level' FROM events ORDER BY seq",
    )
    assert found == [
        ("events_20261123", 1, "2026-11-23", "5"),
        ("events_20261124", 2, "2026-11-24", None),
    ], "the hall's local day decides the partition"
    assert rows(database, "SELECT hall, epoch, high_water, top FROM streams") == [("hd-1", 1, 2, 2)]
    assert rows(database, "SELECT count(*) FROM pending") == [(0,)]


class GapRig:
    """A store with hall hd-1's seqs 1, 2 and 5 stored (3 and 4 missing), asked by hand."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.at = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
        self._ids = (f"cmd-{n}" for n in itertools.count(1))

    async def due(self, unanswered_s: float = 60.0) -> list[tuple[str, int, int]]:
        """One sweep's requests, as (command id, first seq, last seq)."""
        asks = await self.store.due_gaps(
            timeout_s=0.0,
            max_wait_s=0.0,
            chunk=100,
            make_id=lambda: next(self._ids),
            unanswered_s=unanswered_s,
        )
        assert asks is not None
        return [(cmd, gap.start, gap.end) for cmd, gap in asks]

    async def sql(self, statement: str) -> None:
        async with self.store.conn.transaction():
            await self.store.conn.execute(statement)


@asynccontextmanager
async def gap_rig(database: str) -> AsyncIterator[GapRig]:
    store = await PgStore.connect(database)
    try:
        await store.migrate()
        rig = GapRig(store)
        at = rig.at
        rows_ = [Row("hd-1", 1, seq, at.date(), f"e{seq}", "ticket.issued", at, True, {})
                 for seq in (1, 2, 5)]  # fmt: skip
        await store.apply(Batch(rows=rows_))
        await store.advance()
        yield rig
    finally:
        await store.close()


async def test_a_gap_is_not_asked_again_while_the_hall_has_not_answered(database: str) -> None:
    """During a catch-up the hall's answer may wait behind thousands of events: a gap is
    asked again only once the hall answered (and the events did not follow) or the request
    is as old as its expiry in the hall's session."""
    async with gap_rig(database) as rig:
        store, due = rig.store, rig.due
        assert await due() == [], "noticed: quiet for the timeout first"
        assert await due() == [("cmd-1", 3, 4)]
        assert await due() == [], "not answered yet: not asked again"
        await store.conn.execute("UPDATE replays SET asked_at = now() - interval '30 seconds'")
        assert await store.take_replay("cmd-1") == ("hd-1", 1, 3, 4)  # nothing re-sent
        assert await due() == [("cmd-2", 3, 4)], "answered without the events: asked again"
        assert await due(unanswered_s=0.0) == [("cmd-3", 3, 4)], "the request expired"


async def test_a_replay_on_its_way_waits_for_every_worker_to_drain_past_the_answer(
    database: str,
) -> None:
    """The hall answered that it is re-sending: the gap is asked again only once every
    worker seen lately has committed what it had received by the answer (its drained
    mark), however long that takes, or after the long fallback."""
    async with gap_rig(database) as rig:
        store, sql, at = rig.store, rig.sql, rig.at

        async def due() -> list[tuple[str, int, int]]:
            return await rig.due(unanswered_s=0.0)  # an unanswered request expires at once

        assert await due() == []
        await store.note_backlog("ingest-1", 0.0, 0.0)  # both drained past the noticing
        await store.note_backlog("ingest-2", 0.0, 0.0)
        assert await due() == [("cmd-1", 3, 4)]
        # The answer came in 2 s ago (its batch was taken then).
        assert await store.take_replay("cmd-1", resending=True, received_age_s=2.0)
        await store.note_backlog("ingest-1", 0.0, 0.0)  # idle: drained now
        # ingest-2 drained 5 s ago: before the answer.
        await sql("UPDATE workers SET drained_at = now() - interval '5 seconds'"
                  " WHERE client_id = 'ingest-2'")  # fmt: skip
        await sql("UPDATE gaps SET asked_at = asked_at - interval '1 hour',"
                  " noticed_at = noticed_at - interval '1 hour'")  # fmt: skip
        assert await due() == [], "ingest-2 may hold the re-sent events"
        await store.note_backlog("ingest-2", 0.0, 3.0)
        assert await due() == [], "ingest-2 drained to 3 s ago: still before the answer"
        # Part of it arrived: the gap changed, and waits from that change on.
        four = Row("hd-1", 1, 4, at.date(), "e4", "ticket.issued", at, True, {})
        await store.apply(Batch(rows=[four]))
        await store.advance()
        assert await due() == [], "changed: noticed again"
        await store.note_backlog("ingest-2", 0.0, 1.0)
        assert await due() == [], "drained past the answer, not past the change"
        await store.note_backlog("ingest-1", 0.0, 0.0)
        await store.note_backlog("ingest-2", 0.0, 0.0)
        assert await due() == [("cmd-2", 3, 3)], "every worker drained past both: lost"
        assert rows(database, "SELECT count(*) FROM answered") == [(0,)], "replaced"
        # Re-sending again, and ingest-2's queue never empties: the fallback.
        assert await store.take_replay("cmd-2", resending=True)
        await sql("UPDATE workers SET drained_at = now() - interval '1000 seconds'"
                  " WHERE client_id = 'ingest-2'")  # its queue never empties  # fmt: skip
        await sql("UPDATE gaps SET asked_at = asked_at - interval '1 hour',"
                  " noticed_at = noticed_at - interval '1 hour'")  # fmt: skip
        assert await due() == []
        await sql("UPDATE answered SET answered_at = answered_at - interval '590 seconds'")
        assert await due() == []
        await sql("UPDATE answered SET answered_at = answered_at - interval '11 seconds'")
        assert await due() == [("cmd-3", 3, 3)], "600 s after the answer: asked again"
        # A worker gone quiet (not seen for 10 s) holds nothing back.
        assert await store.take_replay("cmd-3", resending=True, received_age_s=1.0)
        await store.note_backlog("ingest-1", 0.0, 0.0)
        await sql("UPDATE gaps SET asked_at = asked_at - interval '1 hour'")
        assert await due() == []
        await sql("UPDATE workers SET seen_at = now() - interval '11 seconds'"
                  " WHERE client_id = 'ingest-2'")  # fmt: skip
        assert await due() == [("cmd-4", 3, 3)]
        three = Row("hd-1", 1, 3, at.date(), "e3", "ticket.issued", at, True, {})
        await store.apply(Batch(rows=[three]))
        await store.advance()
        assert await due() == []
        assert rows(database, "SELECT count(*) FROM gaps") == [(0,)]


async def test_a_hall_is_acked_after_n_events_or_t_seconds_never_more_often_than_the_interval(
    database: str,
) -> None:
    """The ack sweep's rule, with the clock moved in the table instead of waited for."""
    store = await PgStore.connect(database)
    sent: list[tuple[str, int, int]] = []

    async def send(due: list[tuple[str, int, int]]) -> None:
        sent.extend(due)

    async def sweep(interval_s: float = 0.0, events: int = 50) -> list[tuple[str, int, int]]:
        due = await store.ack_sweep(send, interval_s=interval_s, events=events, age_s=30.0)
        assert due is not None, "no other worker holds the sweep"
        return due

    async def sql(statement: str) -> None:
        await store.conn.execute(statement)
        await store.conn.commit()

    try:
        await store.migrate()
        await sql(
            "INSERT INTO streams (hall, epoch, high_water, top)"
            " VALUES ('hd-a', 1, 60, 60), ('hd-b', 1, 5, 5), ('hd-c', 1, 0, 3)"
        )
        assert await sweep() == [("hd-a", 1, 60)], "60 events waiting: at once; 5: not yet"
        await sql("UPDATE streams SET high_water = 70, top = 70 WHERE hall = 'hd-a'")
        assert await sweep() == [], "10 more events, and just now: not yet"
        await sql("UPDATE acks SET unacked_since = unacked_since - interval '31 seconds'")
        assert await sweep() == [("hd-a", 1, 70), ("hd-b", 1, 5)], "waited 30 s"
        assert await sweep() == [], "nothing moved since"
        await sql("UPDATE streams SET high_water = 200, top = 200 WHERE hall = 'hd-a'")
        assert await sweep(interval_s=60.0) == [], "130 events, but acked less than 60 s ago"
        await sql("UPDATE acks SET acked_at = acked_at - interval '61 seconds'")
        assert await sweep(interval_s=60.0) == [("hd-a", 1, 200)]
        await sql("INSERT INTO streams (hall, epoch, high_water, top) VALUES ('hd-b', 2, 1, 1)")
        assert await sweep() == [("hd-b", 2, 1)], "a new epoch: at once"
        await sql("UPDATE streams SET high_water = 201, top = 201 WHERE hall = 'hd-a'")
        assert await sweep(events=1) == [("hd-a", 1, 201)], "1: every mark that moved"
        assert sent == [("hd-a", 1, 60), ("hd-a", 1, 70), ("hd-b", 1, 5), ("hd-a", 1, 200),
                        ("hd-b", 2, 1), ("hd-a", 1, 201)]  # fmt: skip
        assert rows(database, "SELECT hall, epoch, seq FROM acks ORDER BY hall") == [
            ("hd-a", 1, 201),
            ("hd-b", 2, 1),
        ], "hd-c has nothing contiguous yet: no ack, no row"
    finally:
        await store.close()


async def test_a_gap_waits_until_every_worker_drained_past_it(database: str) -> None:
    """During a catch-up a missing seq is most likely in some worker's queue: a gap is
    first asked for only once every worker seen lately has committed what it had received
    when the gap was noticed; an unanswered request is asked again only once every worker
    drained past its expiry (the answer may be in a queue too)."""
    async with gap_rig(database) as rig:
        store, due, sql = rig.store, rig.due, rig.sql
        await store.note_backlog("ingest-1", 0.0, 0.0)
        await store.note_backlog("ingest-2", 30.0, None)  # busy since it started
        assert await due() == [], "noticed"
        assert await due() == [], "ingest-2 may hold seqs 3 and 4"
        await sql("UPDATE gaps SET noticed_at = noticed_at - interval '20 s'")
        await store.note_backlog("ingest-2", 30.0, 30.0)  # drained 30 s ago
        assert await due() == [], "drained, but not past the gap"
        await store.note_backlog("ingest-2", 30.0, 0.0)
        assert await due() == [("cmd-1", 3, 4)], "every worker drained past it"
        # The request's expiry passed; ingest-2 has not drained past it.
        await sql("UPDATE replays SET asked_at = now() - interval '70 seconds'")
        await sql("UPDATE workers SET drained_at = now() - interval '30 seconds'"
                  " WHERE client_id = 'ingest-2'")  # fmt: skip
        assert await due() == [], "the answer may be in ingest-2's queue"
        await store.note_backlog("ingest-2", 0.0, 0.0)
        assert await due() == [("cmd-2", 3, 4)], "expired, and no answer in any queue"
        # A worker gone quiet holds nothing back; none seen at all: nothing is queued.
        await sql("UPDATE replays SET asked_at = now() - interval '70 seconds'")
        await sql("UPDATE workers SET drained_at = NULL WHERE client_id = 'ingest-2'")
        assert await due() == []
        await sql("UPDATE workers SET seen_at = now() - interval '11 seconds'"
                  " WHERE client_id = 'ingest-2'")  # fmt: skip
        assert await due() == [("cmd-3", 3, 4)], "ingest-2 went quiet"
        await sql("UPDATE replays SET asked_at = now() - interval '70 seconds'")
        await sql("UPDATE workers SET seen_at = now() - interval '11 seconds'")
        assert await due() == [("cmd-4", 3, 4)]


@pytest.mark.timeout(90)
async def test_three_workers_store_everything_once_ask_each_gap_once_and_ack_every_hall(
    broker: Broker, database: str
) -> None:
    halls = city(9, 40)
    interval = 0.5
    options = {"gap_timeout": 0.5, "ack_interval": interval, "ack_events": 10, "ack_age": 1.0}
    async with (
        workers(broker, database, 3, **options) as three,
        halls_running(halls, broker.port),
    ):
        await all_acked(halls)

    stored = rows(database, "SELECT hall, seq, id FROM events ORDER BY hall, seq")
    expected = [
        (h.hall, s, f"{h.hall}-1-{s}")
        for h in halls
        for s in range(1, h.last + 1)
        if s not in h.lost
    ]
    assert stored == expected, "every event the halls still had, stored once"
    assert rows(database, "SELECT count(*) FROM pending") == [(0,)]
    for hall in halls:
        assert sorted(hall.replays) == ranges(hall.dropped), f"{hall.hall}: each gap asked once"
        seqs = [a.seq for _, a in hall.acks]
        assert seqs == sorted(seqs), "acks never go back"
        assert len(seqs) == len(set(seqs)), "no ack repeats a mark"
        times = [t for t, _ in hall.acks]
        # Coalesced: at most one per interval (receipt times jitter, hence the margin).
        assert all(b - a >= interval * 0.5 for a, b in itertools.pairwise(times))
        assert len(seqs) < hall.last / 4
    assert rows(database, "SELECT hall, start_seq, end_seq FROM gone ORDER BY hall") == [
        (h.hall, 31, 31) for h in halls if h.lost
    ]
    assert all(w.stats.stored > 0 for w in three), "the broker shared the events out"
    total = sum(w.stats.replays_requested for w in three)
    assert total == sum(len(ranges(h.dropped)) for h in halls)


class SlowReplayHall(SimHall):
    """A hall whose answer to ``replay_events`` comes at once and whose re-sent events do
    not: the first ``swallow`` re-sends are lost on their way (the hall says it re-sends
    them, and they never arrive)."""

    swallow = 0

    async def send(self, mqtt: Any, seqs: Any) -> None:
        seqs = list(seqs)
        if self.replays and self.swallow > 0 and set(seqs) <= self.dropped:
            self.swallow -= 1
            return
        await super().send(mqtt, seqs)


def hold_replayed(
    workers_: list[pgingest.PgIngest], halls: list[SimHall]
) -> tuple[asyncio.Event, list[str]]:
    """Every batch holding a re-sent event waits in its worker until released: the
    re-sent events are stuck in the workers' queues (a catch-up's backlog, a stalled
    database), for as long as the test says."""
    release = asyncio.Event()
    held: list[str] = []
    dropped = {h.hall: h.dropped for h in halls}
    for worker in workers_:
        original = worker.apply

        async def apply(batch: Batch, original: Any = original) -> None:
            mine = [r for r in batch.rows if r.seq in dropped.get(r.hall, ())]
            if mine and not release.is_set():
                held.extend(f"{r.hall}:{r.seq}" for r in mine)
                await release.wait()
            await original(batch)

        worker.apply = apply  # type: ignore[method-assign]
    return release, held


@pytest.mark.timeout(90)
async def test_a_replay_held_up_in_the_workers_is_asked_once(broker: Broker, database: str) -> None:
    """The hall answers at once; its re-sent events then sit in the workers for ten times
    the gap timeout (far longer than the answer took, and than the backlog any worker
    reports: the old rule asked again after about two timeouts): each gap is still asked
    for exactly once, because no worker's drained mark passes the answer until the
    batch holding the re-sent events is committed."""
    halls = [SimHall(f"hd-{i:03d}", 40) for i in range(6)]
    for i, hall in enumerate(halls):
        hall.dropped = {11 + i, 12 + i} | ({30} if i % 2 else set())
    options = {"gap_timeout": 0.5, "ack_interval": 0.5, "ack_events": 10, "ack_age": 1.0}
    async with workers(broker, database, 3, **options) as three:
        release, held = hold_replayed(three, halls)
        async with halls_running(halls, broker.port):
            await eventually(lambda: len(held) > 0, "a re-sent event to arrive")
            await asyncio.sleep(5.0)  # the hold: 10 × the gap timeout
            asked_while_held = [list(h.replays) for h in halls]
            release.set()
            await all_acked(halls)
    assert any(asked_while_held), "a replay was answered and its events held"
    for hall in halls:
        assert sorted(hall.replays) == ranges(hall.dropped), f"{hall.hall}: each gap once"
    assert sum(w.stats.replays_requested for w in three) == sum(
        len(ranges(h.dropped)) for h in halls
    )
    stored = rows(database, "SELECT count(*), count(DISTINCT (hall, seq)) FROM events")
    assert stored == [(6 * 40, 6 * 40)]


@pytest.mark.timeout(90)
async def test_a_replay_lost_on_its_way_is_asked_again_once_the_workers_drained(
    broker: Broker, database: str
) -> None:
    """The hall says it re-sends, and the events are lost: once every worker has
    committed what it had received by the answer, the gap is asked again (long before
    the 600 s fallback), and only once per loss."""
    halls = [SlowReplayHall(f"hd-{i:03d}", 30) for i in range(3)]
    for hall in halls:
        hall.dropped = {7, 8}
        hall.swallow = 1
    options = {"gap_timeout": 0.5, "ack_interval": 0.5, "ack_events": 10, "ack_age": 1.0}
    async with workers(broker, database, 3, **options), halls_running(halls, broker.port):
        await all_acked(halls)
    for hall in halls:
        assert hall.replays == [(7, 8), (7, 8)], f"{hall.hall}: asked again once, after the loss"
    assert rows(database, "SELECT count(*) FROM events") == [(90,)]


def _worker_command(
    broker: Broker, database: str, client_id: str, gap_timeout: float = 0.5
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hallctl.cli",
        "--broker",
        broker.url,
        "ingest",
        "--db",
        database,
        "--client-id",
        client_id,
        "--gap-timeout",
        str(gap_timeout),
        "--ack-interval",
        "0.5",
        "--ack-age",
        "1",
        "--batch",
        "20",
    ]


@pytest.mark.timeout(120)
async def test_a_worker_killed_between_receiving_and_committing_loses_nothing_without_a_replay(
    broker: Broker, database: str, tmp_path: Path
) -> None:
    """Two ``hallctl ingest`` processes. The test holds a lock on ``pending`` so that each
    worker's first batch waits, received and not committed; one worker is SIGKILLed then,
    the lock released, and the worker started again with its client id (as systemd would).
    It PUBACKs only after a commit, so the broker still has that batch in its session and
    delivers it again: every event is stored once, every hall acked, and no hall is asked
    to replay anything (the gap timeout, 20 s, leaves the redelivery time to come)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def start(client_id: str) -> asyncio.subprocess.Process:
        with (tmp_path / f"{client_id}.log").open("a") as log:
            return await asyncio.create_subprocess_exec(
                *_worker_command(broker, database, client_id, gap_timeout=20.0),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )

    async def subscribed(count: int) -> None:
        await eventually(
            lambda: broker.log_text().count("$share/ingest/hall/v1/+/event/#") >= count,
            "the workers to subscribe",
        )

    def batches_waiting() -> int:
        return rows(
            database,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO pending%'",
        )[0][0]

    one = await start("ingest-a")
    two = await start("ingest-b")
    halls = [SimHall(f"hd-{i:03d}", 300) for i in range(6)]
    running: list[asyncio.Task[None]] = []
    blocker = await psycopg.AsyncConnection.connect(database)
    try:
        await subscribed(2)  # (each migrated the schema first)
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE pending IN SHARE MODE")
            running = [asyncio.create_task(h.run(broker.port)) for h in halls]
            await eventually(lambda: batches_waiting() == 2, "a batch in each worker")
            two.send_signal(signal.SIGKILL)  # its batch: received, not committed
            await two.wait()
        # (its connection's insert now fails: no commit ever comes for it)
        two = await start("ingest-b")
        await subscribed(3)

        def acked() -> bool:
            for task in running:
                if task.done():
                    task.result()  # a simulated hall failed: say why
            return all(h.acked == h.last for h in halls)

        await eventually(acked, "every hall acked")
    finally:
        await blocker.close()
        for task in running:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 10)
        for proc in (one, two):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (one, two):
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()  # never leave a worker behind
                await proc.wait()
    assert one.returncode == 0
    assert two.returncode == 0
    counts = rows(
        database,
        "SELECT hall, count(*), count(DISTINCT seq), max(seq) FROM events"
        " GROUP BY hall ORDER BY hall",
    )
    assert counts == [(h.hall, 300, 300, 300) for h in halls]
    assert [h.replays for h in halls] == [[]] * len(halls), "nothing had to be replayed"
    assert rows(database, "SELECT count(*) FROM replays") == [(0,)]
    stopped = [
        line
        for name in ("ingest-a", "ingest-b")
        for line in (tmp_path / f"{name}.log").read_text().splitlines()
        if "ingest worker stopped" in line
    ]
    assert len(stopped) == 2
    assert all(", 0 replays asked," in line for line in stopped)


async def test_the_sample_queries_in_the_docs_run_on_the_schema(database: str) -> None:
    store = await PgStore.connect(database)
    try:
        await store.migrate()
    finally:
        await store.close()
    text = (ROOT / "docs" / "central-queries.sql").read_text(encoding="utf-8")
    statements = [s for s in text.split(";\n") if s.strip() and not _only_comments(s)]
    assert len(statements) >= 5
    with psycopg.connect(database) as conn:
        for statement in statements:
            conn.execute(statement)  # raises on any mistake


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


async def test_a_worker_warns_once_about_a_hall_refusing_its_acks(
    broker: Broker, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import aiomqtt

    from agent.central.contract import EventEnvelope

    caplog.set_level(logging.WARNING, logger="hallctl")
    data = {"reason": "beyond_last_seq", "epoch": 1, "seq": 900, "last_seq": 12,
            "hall_epoch": 1, "acked_seq": 10}  # fmt: skip
    refused = [
        EventEnvelope(hall="hd-r", epoch=1, seq=seq, id=f"hd-r-1-{seq}", type="outbox.ack_refused",
                      at="2026-11-23T09:00:00.000+08:00", clock_ok=True, data=data)
        .model_dump_json().encode()
        for seq in (1, 2, 3, 4)
    ]  # fmt: skip

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused central's ack" in r.getMessage()]

    async with (
        workers(broker, database, 1, gap_timeout=0.5) as (worker,),
        aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="hd-r", protocol=aiomqtt.ProtocolVersion.V5
        ) as hall,
    ):
        for body in [*refused, refused[0], refused[3]]:  # two redelivered: 4 refusals
            await hall.publish("hall/v1/hd-r/event/outbox.ack_refused", body, qos=1)
        await eventually(lambda: worker.stats.stored + worker.stats.duplicates == 6, "all six")
        assert worker.stats.stored == 4
        (line,) = lines()  # one line, not one per event
        assert line.startswith("hd-r refused central's ack: beyond_last_seq (epoch 1, seq 900,")
        assert "last_seq 12" in line
        assert "Check central's mark for this hall and epoch" in line
        worker.refusals.flush()  # what the worker does when it stops
    assert lines()[1].startswith(
        "hd-r refused central's ack again: 3 more since the last line, 4 in all"
    )
