"""The hall: one writer in front of the engine and a real SQLite store, driven by a test clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from agent.config import HallAgentConfig
from agent.core.engine import QueueEngine
from agent.core.errors import NotFound, Refused
from agent.core.model import WindowState
from agent.core.operations import CallNext, Pause, Recall, SignIn, Take
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import DB_NAME, Store, StoreError, Written


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path):
    store = Store.open(state_dir)
    yield store
    store.close()


@pytest.fixture
async def hall(config: HallAgentConfig, store: Store, clock):
    async with Hall(config, store, clock=clock) as hall:
        yield hall


def peek(state_dir: Path, sql: str, *args: object) -> list[tuple]:
    """Read the file through a second connection: it sees only what was committed."""
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def take(service: str):
    return Take(service=service)


def call_next(window: str):
    return CallNext(window=window)


async def test_concurrent_calls_never_hand_out_a_ticket_twice(hall: Hall, state_dir: Path) -> None:
    for service in ("general", "social", "fund"):
        for _ in range(20):
            await hall.execute(take(service))

    outcomes = await asyncio.gather(
        *(hall.execute(call_next(w)) for _ in range(20) for w in ("w1", "w2", "w3"))
    )

    numbers = [out.result["ticket"]["number"] for out in outcomes]
    assert len(numbers) == 60
    assert len(set(numbers)) == 60
    assert sorted(n for n in numbers if n.startswith("C")) == [f"C{i:02d}" for i in range(1, 21)]
    called = peek(
        state_dir,
        "SELECT json_extract(data, '$.ticket'), COUNT(*) FROM events "
        "WHERE type = 'ticket.called' GROUP BY 1",
    )
    assert len(called) == 60
    assert {count for _, count in called} == {1}
    current = await hall.read(lambda engine, now: [w.current for w in engine.windows.values()])
    assert len(set(current)) == 3


async def test_execute_answers_only_once_the_change_is_on_disk(hall: Hall, state_dir: Path) -> None:
    pending = [asyncio.ensure_future(hall.execute(take("social"))) for _ in range(5)]

    for answer in asyncio.as_completed(pending):
        outcome = await answer
        (event,) = outcome.stored
        number = outcome.result["ticket"]["number"]
        assert peek(state_dir, "SELECT type FROM events WHERE seq = ?", event.seq) == [
            ("ticket.issued",)
        ]
        assert peek(state_dir, "SELECT status FROM tickets WHERE number = ?", number) == [
            ("waiting",)
        ]


async def test_a_refusal_after_a_rollover_still_saves_the_rollover(
    config: HallAgentConfig, store: Store, state_dir: Path, clock
) -> None:
    async with Hall(config, store, clock=clock) as hall:
        await hall.execute(take("social"))
        clock.advance(days=1)

        with pytest.raises(Refused, match="window w1 has no called ticket"):
            await hall.execute(Recall(window="w1"))

        assert peek(state_dir, "SELECT status FROM tickets") == [("expired",)]
        assert peek(state_dir, "SELECT type FROM events ORDER BY seq") == [
            ("ticket.issued",),
            ("ticket.expired",),
            ("day.closed",),
        ]
        (row,) = peek(state_dir, "SELECT data FROM hall")
        assert json.loads(row[0])["day"] == "2026-03-03"

    async with Hall(config, store, clock=clock) as again:
        out = await again.tick()
        assert out.events == []  # the day was closed once, and that is on disk
        assert again.engine.hall.day == dt.date(2026, 3, 3)


async def test_a_refusal_with_nothing_changed_writes_nothing(hall: Hall, store: Store) -> None:
    with pytest.raises(NotFound, match="there is no window 'w9'"):
        await hall.execute(CallNext(window="w9"))

    assert await hall.store_call(lambda s: s.last_seq) == 0


async def test_close_finishes_queued_work_then_refuses_new_work(
    config: HallAgentConfig, store: Store, state_dir: Path, clock
) -> None:
    hall = Hall(config, store, clock=clock)
    await hall.__aenter__()
    busy, release = threading.Event(), threading.Event()

    def slow_write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        busy.set()
        release.wait(timeout=30)
        return Written([], None)

    blocking = asyncio.ensure_future(hall.write(slow_write))
    queued = [asyncio.ensure_future(hall.execute(take("social"))) for _ in range(5)]
    closing = asyncio.ensure_future(hall.close())
    assert await asyncio.to_thread(busy.wait, 30)  # the writer is stuck in the store thread

    assert not closing.done()
    assert not any(task.done() for task in queued)
    with pytest.raises(ShuttingDown, match="shutting down"):
        await hall.execute(take("social"))
    release.set()
    await closing

    assert blocking.done()
    numbers = [(await task).result["ticket"]["number"] for task in queued]
    assert numbers == ["B001", "B002", "B003", "B004", "B005"]
    assert peek(state_dir, "SELECT COUNT(*) FROM tickets") == [(5,)]
    with pytest.raises(ShuttingDown, match="try again in a moment"):
        await hall.execute(take("social"))
    with pytest.raises(ShuttingDown):
        await hall.read(lambda engine, now: engine.snapshot(now))


async def test_staff_and_windows_survive_a_restart_before_the_first_ticket(
    config: HallAgentConfig, store: Store, clock
) -> None:
    async with Hall(config, store, clock=clock) as hall:
        await hall.execute(SignIn(window="w1", staff="s-007", name="王芳"))
        await hall.execute(Pause(window="w2"))

    async with Hall(config, store, clock=clock) as again:
        windows = again.engine.windows
        assert (windows["w1"].state, windows["w1"].staff) == (WindowState.OPEN, "s-007")
        assert windows["w2"].state is WindowState.PAUSED
        with pytest.raises(Refused, match="window w2 is paused"):
            await again.execute(call_next("w2"))


async def test_a_store_failure_puts_memory_back_to_what_was_saved(
    hall: Hall, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    same = uuid.UUID(int=42)
    monkeypatch.setattr("agent.runtime.store.core.uuid.uuid4", lambda: same)
    await hall.execute(take("social"))

    with pytest.raises(StoreError, match="UNIQUE constraint"):
        await hall.execute(take("social"))  # its event id clashes with the first one

    assert await hall.read(lambda engine, now: [t.number for t in engine.waiting()]) == ["B001"]
    assert any(
        r.getMessage().startswith("a queue change could not be saved") for r in caplog.records
    )
    monkeypatch.undo()
    out = await hall.execute(take("social"))
    assert out.result["ticket"]["number"] == "B002"


async def test_a_bug_half_way_through_an_operation_leaves_memory_as_saved(
    hall: Hall, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(engine: QueueEngine, operation: object, now: dt.datetime):
        engine.take("social", now)
        raise RuntimeError("a bug after the change")

    with (
        caplog.at_level(logging.ERROR, logger="agent.runtime.hall"),
        monkeypatch.context() as patched,
    ):
        patched.setattr(QueueEngine, "apply", broken)
        with pytest.raises(RuntimeError, match="a bug after the change"):
            await hall.execute(Take(service="social"))

    assert await hall.read(lambda engine, now: engine.waiting()) == []
    assert [r.getMessage() for r in caplog.records] == ["queue operation failed unexpectedly"]
    out = await hall.execute(take("social"))
    assert out.result["ticket"]["number"] == "B001"


async def test_listeners_get_each_event_once_it_is_committed(hall: Hall) -> None:
    async with hall.events() as events:
        out = await hall.execute(call_next("w1"))
        await hall.execute(take("social"))

    got = [events.get_nowait() for _ in range(events.qsize())]
    assert [e.type for e in got] == ["window.opened", "ticket.issued"]
    assert [e.seq for e in got] == [1, 2]
    assert out.stored == got[:1]


async def test_events_from_an_unset_clock_are_flagged(
    config: HallAgentConfig, store: Store, clock
) -> None:
    clock.now = dt.datetime(2020, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Pi booted without RTC
    async with Hall(config, store, clock=clock) as hall:
        first = await hall.execute(take("social"))
        clock.now = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)
        second = await hall.execute(take("social"))

    assert [(e.type, e.clock_ok) for e in first.stored] == [("ticket.issued", False)]
    # Setting the clock moved the hall six years on: the bogus day was closed, and the
    # ticket taken before the clock was set (its citizen is in the hall) moved into the
    # new day instead of expiring; the new day's numbers continue after it.
    assert [(e.type, e.clock_ok) for e in second.stored] == [
        ("day.closed", True),
        ("ticket.issued", True),
    ]
    assert second.stored[0].data["carried"] == ["B001"]
    assert second.result["ticket"]["number"] == "B002"


async def test_after_a_call_reads_show_the_estimates_of_the_committed_queue(
    hall: Hall, clock
) -> None:
    """A call leaves no kept play (its turn_near waits come from a play stopped early); the
    hall plays after answering and gives the result to the committed copy. A read right
    after the call, before or after that play, shows estimates of the committed queue as it
    is after the call, never the ones from before it."""
    from agent.core.estimate import estimate_queue

    for window in ("w1", "w2", "w3"):
        await hall.execute(SignIn(window=window, staff=f"s-{window}"))
    for k in range(20):
        await hall.execute(take(("general", "social", "fund")[k % 3]))

    def figures(engine: QueueEngine, now: dt.datetime) -> tuple[object, object]:
        services = [s.id for s in engine.config.services]
        return engine.estimates(now), estimate_queue(engine, now, services)

    before, _ = await hall.read(figures)
    for window in ("w1", "w2", "w3", "w1"):
        await hall.execute(call_next(window))
        shown, fresh = await hall.read(figures)  # the first read after the call's answer
        assert shown == fresh
        assert shown != before
        before = shown
    assert hall._committed.has_estimates(clock().astimezone(hall.config.hall.zone))
    # The next take joins the play made after the call and agrees with a new one.
    out = await hall.execute(take("general"))
    shown, fresh = await hall.read(figures)
    assert shown == fresh
    assert out.ticket is not None
    assert out.ticket.id in shown.tickets  # type: ignore[attr-defined]
