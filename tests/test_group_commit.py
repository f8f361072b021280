"""Group commit and reads from the committed state (docs/architecture.md, "The writer").

The writer commits every job waiting in its queue in one transaction; a failed commit
fails the whole group; reads answer from the last committed state at once, also while a
commit is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import NotFound, QueueError
from agent.core.model import HallCounters, business_day
from agent.core.operations import CallNext, Finish, Operation, Pause, Resume, SignIn, Take
from agent.runtime import hall as hall_module
from agent.runtime.hall import MAX_GROUP, Hall
from agent.runtime.store import DB_NAME, Store, StoreError, Written, schema
from agent.runtime.store.core import StoreCore


def rows(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def projection(engine: QueueEngine, _now: dt.datetime | None = None) -> tuple[Any, ...]:
    """What a reader sees of the queue: every ticket's number, status and window, every
    window's state and current ticket, the hall's counters."""
    return (
        tuple(sorted((t.number, t.status.value, t.window or "") for t in engine.tickets.values())),
        tuple(sorted((w.id, w.state.value, w.current or "") for w in engine.windows.values())),
        tuple(sorted(engine.hall.counters.items())),
    )


@contextlib.contextmanager
def held_commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every group's transaction waits, before it starts, until the test lets it go."""
    release = threading.Event()
    group = StoreCore.group

    @contextlib.contextmanager
    def slow_group(self: StoreCore) -> Iterator[None]:
        release.wait(30)
        with group(self):
            yield

    monkeypatch.setattr(StoreCore, "group", slow_group)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def hall(config: HallAgentConfig, state_dir: Path, clock: Callable[[], dt.datetime]):
    store = Store.open(state_dir)
    async with Hall(config, store, clock=clock) as hall:
        yield hall
    store.close()


async def test_takes_waiting_together_share_one_commit_in_order(
    hall: Hall, state_dir: Path
) -> None:
    outcomes = await asyncio.gather(*(hall.execute(Take(service="social")) for _ in range(20)))

    numbers = [o.result["ticket"]["number"] for o in outcomes]
    assert numbers == [f"B{i:03d}" for i in range(1, 21)]  # the order they were asked in
    assert hall.writes.jobs_total == 20
    assert hall.writes.commits_total < 20
    assert hall.writes.largest_group >= 10
    events = rows(state_dir, "SELECT seq, json_extract(data, '$.ticket') FROM events ORDER BY seq")
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert [n for _, n in events if n is not None] == numbers
    # Every answer carries its own events, in seq order.
    seqs = [e.seq for o in outcomes for e in o.stored]
    assert seqs == sorted(seqs)
    assert len(seqs) == len(set(seqs))


async def test_a_refusal_in_a_group_answers_alone(hall: Hall, state_dir: Path) -> None:
    asked = [Take(service="social"), Take(service="nope"), Take(service="fund")]
    answers = await asyncio.gather(*(hall.execute(o) for o in asked), return_exceptions=True)

    assert isinstance(answers[1], NotFound)
    assert isinstance(answers[0], Outcome)
    assert isinstance(answers[2], Outcome)
    assert [n for (n,) in rows(state_dir, "SELECT number FROM tickets ORDER BY number")] == [
        "B001",
        "C01",
    ]


async def test_a_failed_commit_fails_every_job_of_the_group(
    hall: Hall, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hall.execute(Take(service="social"))
    before = await hall.read(projection)
    calls = 0
    commit = Store.commit

    def failing(self: Store, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise StoreError("could not save: disk I/O error")
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit", failing)
    answers = await asyncio.gather(
        *(hall.execute(Take(service="social")) for _ in range(12)), return_exceptions=True
    )

    assert all(isinstance(a, StoreError) for a in answers), answers
    # Nothing of the group is on disk, in memory or in what readers see.
    assert rows(state_dir, "SELECT number FROM tickets") == [("B001",)]
    assert rows(state_dir, "SELECT MAX(seq) FROM events") == [(1,)]
    assert await hall.read(projection) == before
    assert projection(hall.engine) == before
    assert hall.writes.failed_total == 1

    monkeypatch.setattr(Store, "commit", commit)
    again = await hall.execute(Take(service="social"))
    assert again.result["ticket"]["number"] == "B002"
    assert [e.seq for e in again.stored] == [2]


async def test_a_bug_in_one_operation_fails_it_alone(
    hall: Hall, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply = QueueEngine.apply

    def buggy(self: QueueEngine, operation: Operation, now: dt.datetime) -> Outcome:
        if isinstance(operation, Take) and operation.service == "fund":
            self.hall.counters["fund"] = 99  # a change half-way, then the bug
            raise RuntimeError("a bug")
        return apply(self, operation, now)

    monkeypatch.setattr(QueueEngine, "apply", buggy)
    asked = [Take(service="social"), Take(service="fund"), Take(service="social")]
    answers = await asyncio.gather(*(hall.execute(o) for o in asked), return_exceptions=True)

    assert isinstance(answers[1], RuntimeError)
    assert [a.result["ticket"]["number"] for a in (answers[0], answers[2])] == ["B001", "B002"]
    assert hall.engine.hall.counters.get("fund", 0) == 0
    assert rows(state_dir, "SELECT number FROM tickets ORDER BY number") == [("B001",), ("B002",)]


async def test_a_store_write_that_fails_undoes_only_itself(
    hall: Hall, state_dir: Path, clock: Callable[[], dt.datetime]
) -> None:
    from agent.core import events as ev
    from agent.core.events import Event

    def broken(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        store.append([Event(ev.NoticeShown(id="n1", text="x", until=None), now)], clock_ok=clock_ok)
        raise ValueError("the write found something wrong after appending")

    jobs: list[Any] = [hall.execute(Take(service="social")), hall.write(broken)]
    jobs.append(hall.execute(Take(service="social")))
    answers = await asyncio.gather(*jobs, return_exceptions=True)

    assert isinstance(answers[1], ValueError)
    types = rows(state_dir, "SELECT seq, type FROM events ORDER BY seq")
    assert [t for _, t in types] == ["ticket.issued", "ticket.issued"]
    assert [s for s, _ in types] == [1, 2]


async def test_reads_answer_while_a_commit_is_held(
    hall: Hall, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hall.execute(Take(service="social"))
    with held_commits(monkeypatch) as release:
        pending = asyncio.ensure_future(hall.execute(Take(service="social")))
        await asyncio.sleep(0)  # the writer has the take: applied in memory, commit held
        for _ in range(50):
            if hall.engine.hall.counters.get("social") == 2:
                break
            await asyncio.sleep(0.01)
        assert hall.engine.hall.counters.get("social") == 2, "the take never reached the writer"

        # The committed state, at once: the held take is not in it.
        seen = await asyncio.wait_for(hall.read(projection), 1)
        assert [n for n, _, _ in seen[0]] == ["B001"]
        depth = await asyncio.wait_for(hall.store_read(lambda s: s.outbox_depth()), 5)
        assert depth == 1
        assert hall.last_seq == 1
        assert not pending.done()

        release.set()
        outcome = await asyncio.wait_for(pending, 30)
    # Whoever wrote reads their write.
    seen = await hall.read(projection)
    assert [n for n, _, _ in seen[0]] == ["B001", outcome.result["ticket"]["number"]]
    assert hall.last_seq == 2


async def test_a_config_swap_is_committed_alone(hall: Hall, make_config: Any) -> None:
    changed = make_config(services={"social": {"name": "社保业务"}})
    jobs = [
        hall.execute(Take(service="social")),
        hall.reconfigure(changed),
        hall.execute(Take(service="social")),
    ]
    await asyncio.gather(*jobs)
    assert hall.config.service("social").name == "社保业务"
    name = await hall.read(lambda e, _: e.config.service("social").name)
    assert name == "社保业务"
    assert hall.writes.largest_group <= 2


# -- a read at any moment shows a prefix of the committed operations --------------------

WINDOWS = ("w1", "w2", "w3")
operations = st.one_of(
    st.builds(Take, service=st.sampled_from(["general", "social", "fund", "nope"])),
    st.builds(CallNext, window=st.sampled_from(WINDOWS)),
    st.builds(Finish, window=st.sampled_from(WINDOWS)),
    st.builds(Pause, window=st.sampled_from(WINDOWS)),
    st.builds(Resume, window=st.sampled_from(WINDOWS)),
    st.builds(SignIn, window=st.sampled_from(WINDOWS), staff=st.sampled_from(["s-1", "s-2"])),
)


def prefix_states(
    config: HallAgentConfig, ops: list[Operation], now: dt.datetime
) -> list[tuple[Any, ...]]:
    """The state after each prefix of ``ops`` applied one by one (the one true order)."""
    engine = QueueEngine(config, HallCounters(day=business_day(now, config)))
    states = [projection(engine)]
    for operation in ops:
        with contextlib.suppress(QueueError):
            engine.apply(operation, now)
        states.append(projection(engine))
    return states


async def _run_and_sample(
    config: HallAgentConfig,
    directory: Path,
    batches: list[list[Operation]],
    now: dt.datetime,
) -> tuple[list[tuple[Any, ...]], tuple[Any, ...], QueueEngine, QueueEngine]:
    store = Store.open(directory)
    seen: list[tuple[Any, ...]] = []
    try:
        async with Hall(config, store, clock=lambda: now) as hall:
            done = asyncio.Event()

            disk = sqlite3.connect(directory / DB_NAME)

            async def sample() -> None:
                while not done.is_set():
                    state = await hall.read(projection)
                    # Nothing a read shows may be missing from the disk read just after it.
                    on_disk = {n for (n,) in disk.execute("SELECT number FROM tickets")}
                    shown = {number for number, _, _ in state[0]}
                    assert shown <= on_disk, f"a read showed {shown - on_disk}, not yet saved"
                    seen.append(state)
                    await asyncio.sleep(0)

            sampler = asyncio.ensure_future(sample())
            for batch in batches:
                await asyncio.gather(*(hall.execute(o) for o in batch), return_exceptions=True)
            done.set()
            await sampler
            disk.close()
            final = await hall.read(projection)
            return seen, final, hall._committed, hall.engine
    finally:
        store.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(operations, min_size=1, max_size=12), min_size=1, max_size=5))
def test_every_read_shows_a_prefix_of_the_committed_operations(
    config: HallAgentConfig, batches: list[list[Operation]]
) -> None:
    now = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    with tempfile.TemporaryDirectory() as tmp:
        seen, final, committed, live = asyncio.run(
            _run_and_sample(config, Path(tmp) / "state", batches, now)
        )
    ops = [o for batch in batches for o in batch]
    states = prefix_states(config, ops, now)
    assert final == states[-1]
    # Each batch is asked at once and commits as one group: a read sees whole groups only.
    boundaries = [0]
    for batch in batches:
        boundaries.append(boundaries[-1] + len(batch))
    committed_states = {states[b] for b in boundaries}
    for state in seen:
        assert state in committed_states, f"a read saw part of a group: {state}"
    # Reads move forward only: some non-decreasing choice of group ends explains them all.
    last = 0
    for state in seen:
        later = [b for b in boundaries if b >= last and states[b] == state]
        assert later, f"a read went back to an earlier state: {state}"
        last = later[0]
    # What readers see is the live engine once nothing is in flight, record by record.
    assert {k: t.to_json() for k, t in committed.tickets.items()} == {
        k: t.to_json() for k, t in live.tickets.items()
    }
    assert {k: w.to_json() for k, w in committed.windows.items()} == {
        k: w.to_json() for k, w in live.windows.items()
    }
    assert committed.hall.to_json() == live.hall.to_json()


def test_the_group_bound_is_sane() -> None:
    assert 10 <= MAX_GROUP <= 1000


async def test_the_api_answers_reads_while_a_commit_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from support import as_ops, hall_config

    from agent.daemon import running_agent

    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        r = await client.post("/api/v1/tickets", json={"service": "social"})
        assert r.status_code == 201, r.text
        with held_commits(monkeypatch) as release:
            pending = asyncio.ensure_future(
                client.post("/api/v1/tickets", json={"service": "social"})
            )
            hall = running.hall
            for _ in range(500):
                if hall.engine.hall.counters.get("social") == 2:
                    break
                await asyncio.sleep(0.01)
            assert hall.engine.hall.counters.get("social") == 2, "the take never reached the hall"

            queue = await client.get("/api/v1/queue", timeout=5)
            assert queue.status_code == 200
            assert [t["number"] for t in queue.json()["waiting"]] == ["A001"]
            health = await client.get("/healthz", timeout=5)
            assert health.status_code in (200, 503), health.text
            status = await client.get("/api/v1/status", timeout=5)
            assert status.json()["last_seq"] == 1
            assert not pending.done()
            release.set()
            taken = await asyncio.wait_for(pending, 30)
        assert taken.status_code == 201, taken.text
        queue = await client.get("/api/v1/queue")
        assert [t["number"] for t in queue.json()["waiting"]] == ["A001", "A002"]


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_checkpoints_run_beside_the_writer_and_the_wal_starts_over(
    config: HallAgentConfig,
    state_dir: Path,
    clock: Callable[[], dt.datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer's commits do not checkpoint (SQLite's automatic checkpoint would run in
    the COMMIT that crosses its threshold: two fsyncs more for whoever waits for it); a
    connection of its own does, after about CHECKPOINT_PAGES, and once the writer is quiet
    it copies what came in meanwhile, so the WAL starts over instead of growing."""
    monkeypatch.setattr(hall_module, "FIRST_CHECKPOINT_AFTER", 10)
    monkeypatch.setattr(hall_module, "CHECKPOINT_PAGES", 60)  # a few takes' worth
    monkeypatch.setattr(hall_module, "CHECKPOINT_QUIET_S", 0.05)
    store = Store.open(state_dir)
    wal = state_dir / f"{DB_NAME}-wal"

    def autocheckpoint(s: Store) -> int:
        return int(s._read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))

    try:
        async with Hall(config, store, clock=clock) as hall:
            # The writer's own checkpoints are only a net.
            assert await hall.store_call(autocheckpoint) == schema.WAL_CHECKPOINT_NET_PAGES
            sizes = []
            for _ in range(4):
                done = hall.writes.checkpoints_total
                for _ in range(10):
                    await hall.execute(Take(service="social"))
                await _until(
                    lambda done=done: (
                        hall.writes.checkpoints_total > done and hall.writes.wal_all_copied
                    ),
                    "a checkpoint that copied everything",
                )
                sizes.append(wal.stat().st_size)
            # Each batch's commits started the WAL over: it does not grow batch by batch.
            assert max(sizes) == sizes[0], sizes
            assert hall.writes.jobs_total == 40
        assert autocheckpoint(store) == schema.WAL_CHECKPOINT_PAGES  # as it opened
        assert rows(state_dir, "SELECT count(*) FROM tickets") == [(40,)]
    finally:
        store.close()
