"""The hall: the queue engine behind one serialized writer, persisted by the store.

Every mutation — from the local API, a device, or a central command — is queued to one
writer task. The writer takes every job waiting (up to ``MAX_GROUP``), applies them in
order to the in-memory engine, commits their changed records and events in one SQLite
transaction on a dedicated thread — one fsync for the whole group (group commit) — and
only then answers each. A failed commit fails every job of the group and the engine goes
back to what the disk holds: nothing is half applied. A caller that goes away
mid-operation does not interrupt the writer, so memory and disk never disagree.

Reads never wait for the disk. After each commit the writer publishes the committed
state: a copy of the engine that changes only between commits (``read``), and a second,
read-only SQLite connection on its own thread serves reads of the store
(``store_read``). A writer is answered only after the state it wrote is published, so
whoever wrote reads their own write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError, Refused
from agent.core.events import Event
from agent.core.model import HallCounters, Ticket, WindowStatus, business_day
from agent.core.operations import Operation, Tick
from agent.errors import HallAgentError
from agent.runtime.clock import plausible
from agent.runtime.store import (
    Checkpointer,
    CommandRecord,
    Damage,
    Store,
    StoredEvent,
    StoreError,
    StoreFull,
    Written,
)
from agent.runtime.store.schema import WAL_CHECKPOINT_PAGES
from agent.runtime.tasks import BackgroundTasks

log = logging.getLogger(__name__)

T = TypeVar("T")

# Jobs the writer commits together at most (one transaction, one fsync).
MAX_GROUP = 64
# The WAL pages after which the hall checkpoints (on its own connection and thread), and
# the operations it waits for before the first checkpoint tells it how many pages they
# write; the count then follows each checkpoint's pages per operation.
CHECKPOINT_PAGES = WAL_CHECKPOINT_PAGES
FIRST_CHECKPOINT_AFTER = 100
# What was committed while a checkpoint ran is copied once the writer was this quiet.
CHECKPOINT_QUIET_S = 0.5


def wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def plausible_clock(now: dt.datetime) -> bool:
    """Only the date's plausibility; the daemon passes the real check (agent.runtime.clock)."""
    return plausible(now)


def _nothing(_engine: QueueEngine, _now: dt.datetime) -> None:
    """A read that does nothing: wakes the writer, which then sets damaged rows aside."""


def _json(value: Any) -> bytes:
    """JSON as the local API writes it (FastAPI's JSONResponse: compact, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _copy_ticket(ticket: Ticket) -> Ticket:
    copied = copy.copy(ticket)
    if ticket.rating is not None:
        copied.rating = dict(ticket.rating)
    return copied


def _copy_window(window: WindowStatus) -> WindowStatus:
    copied = copy.copy(window)
    if window.rating is not None:
        copied.rating = dict(window.rating)
    return copied


def _copy_counters(hall: HallCounters) -> HallCounters:
    return HallCounters(
        day=hall.day,
        next_rank=hall.next_rank,
        counters=dict(hall.counters),
        durations={k: list(v) for k, v in hall.durations.items()},
    )


def _copy_engine(engine: QueueEngine) -> QueueEngine:
    """A copy of the engine that shares none of its mutable records."""
    copied = QueueEngine(
        engine.config,
        _copy_counters(engine.hall),
        (_copy_ticket(t) for t in engine.tickets.values()),
        (_copy_window(w) for w in engine.windows.values()),
    )
    copied.clock_trusted = engine.clock_trusted
    return copied


class ShuttingDown(HallAgentError):
    """The hall is stopping and takes no new operations."""


Recorder = Callable[[Outcome | None, QueueError | None], CommandRecord]


@dataclasses.dataclass(slots=True)
class WriteRecord:
    """How the hall's writes go, for /healthz, metrics and the disk guard."""

    ok_total: int = 0
    failed_total: int = 0
    disk_full_total: int = 0
    last_error: str | None = None
    last_was_disk_full: bool = False
    # Monotonic time of the first failure of the current run of failures; None once a
    # write succeeds again.
    failing_since: float | None = None
    # Monotonic time of the latest failed write.
    last_failed_at: float | None = None
    # Set on every failed write, cleared by whoever reacts to it (the disk guard).
    failed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Group commit: transactions committed, jobs they carried, the largest group.
    commits_total: int = 0
    jobs_total: int = 0
    largest_group: int = 0
    # Checkpoints of the WAL beside the writer (Hall._checkpoint_loop), and whether the
    # last one copied everything with no write under way (the next commit starts the WAL
    # over; else another copies the rest when the writer is quiet).
    checkpoints_total: int = 0
    wal_all_copied: bool = False


@dataclasses.dataclass(slots=True)
class _Job:
    run: Callable[[QueueEngine, dt.datetime], Any] | None
    mutates: bool
    done: asyncio.Future[Any]
    record: Recorder | None = None
    write: Callable[[Store, dt.datetime, bool], Any] | None = None
    after: Callable[[], None] | None = None

    @property
    def solo(self) -> bool:
        """A job that swaps the hall's config is committed alone."""
        return self.after is not None


@dataclasses.dataclass(slots=True)
class _Step:
    """One job of a group once it ran in memory: what to write and how to answer."""

    job: _Job
    outcome: Outcome | None = None  # the queue change to save
    command: CommandRecord | None = None  # a central command's reply, saved with it
    error: BaseException | None = None  # the answer is this refusal or failure
    value: Any = None  # the answer of a job that saved no queue change
    stored: list[StoredEvent] = dataclasses.field(default_factory=list)


def _what_failed(steps: list[_Step]) -> str:
    """What a failed group held, for the log: "a queue change", "2 writes" (the outbox's
    upkeep, a device's change, a setting), "3 queue changes and 1 other write"."""
    changes = sum(1 for s in steps if s.outcome is not None)
    others = sum(1 for s in steps if s.outcome is None and s.job.write and s.error is None)
    change = "a queue change" if changes == 1 else f"{changes} queue changes"
    other = f"{others} other write" + ("s" if others > 1 else "")
    if not changes:
        return f"{others} writes" if others > 1 else "a write"
    if not others:
        return change
    return f"{change} and {other}"


def _answer(job: _Job, *, value: Any = None, error: BaseException | None = None) -> None:
    if job.done.done():
        return
    if error is not None:
        job.done.set_exception(error)
    else:
        job.done.set_result(value)


class Hall:
    """The hall's queue with its durable store. An async context manager."""

    def __init__(
        self,
        config: HallAgentConfig,
        store: Store,
        *,
        clock: Callable[[], dt.datetime] = wall_clock,
        clock_ok: Callable[[dt.datetime], bool] = plausible_clock,
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._clock_ok = clock_ok
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        self._reader: Store | None = None
        # Checkpoints of the WAL, off the writer's commits (Store.hand_over_checkpoints).
        self._checkpointer: Checkpointer | None = None
        self._checkpoint_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="store-checkpoint"
        )
        self._checkpoint_due = asyncio.Event()
        self._since_checkpoint = 0  # operations committed since the last checkpoint
        self._checkpoint_every = FIRST_CHECKPOINT_AFTER
        self._last_commit = time.monotonic()
        # Turns of the writer's thread begun, and under way (_in_thread).
        self._store_turns = 0
        self._in_store = 0
        self._writer: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._accepting = False
        self._listeners: list[asyncio.Queue[StoredEvent]] = []
        # The live engine: the writer changes it, ahead of the disk while a group commits.
        self.engine: QueueEngine = QueueEngine.fresh(config, clock())
        # What reads see: the engine as last committed, changed only between commits.
        self._committed: QueueEngine = _copy_engine(self.engine)
        self._last_seq = store.last_seq
        self.writes = WriteRecord()
        # A read found damaged rows and the writer was asked to set them aside.
        self._aside_queued = False
        # GET /api/v1/queue's last answer (for the snapshot it was made from) and each
        # waiting ticket's JSON (for the committed record it was made from): queue_json().
        self._queue_json: tuple[dict[str, Any], bytes] | None = None
        self._ticket_json: dict[str, tuple[Ticket, bytes]] = {}

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Hall:
        self.engine = await self._load()
        self._committed = _copy_engine(self.engine)
        self._last_seq = self.store.last_seq
        await self._set_aside_damaged()
        self._reader = await self._in_thread(self.store.reader)
        self._checkpointer = await self._in_thread(self.store.hand_over_checkpoints)
        tasks = await self._stack.enter_async_context(BackgroundTasks())
        self._writer = tasks.create_task(self._write_loop(), name="hall-writer")
        tasks.create_task(self._checkpoint_loop(), name="hall-checkpoints")
        self._accepting = True
        log.info(
            "hall %s ready: business day %s, %d open tickets, epoch %d, last seq %d",
            self.config.hall.id,
            self.engine.hall.day,
            sum(1 for _ in self.engine.open_tickets()),
            self.store.epoch,
            self.store.last_seq,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop intake, finish the write in progress and what was queued before it."""
        self._accepting = False
        if self._writer is not None:
            await self._jobs.put(None)
            await self._writer
            self._writer = None
        self._checkpoint_due.set()  # the checkpoint loop ends once intake stopped
        await self._stack.aclose()
        self._thread.shutdown(wait=True)
        self._reader_thread.shutdown(wait=True)
        self._checkpoint_thread.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
            with contextlib.suppress(Exception):  # a store closed under us: nothing to undo
                self.store.take_back_checkpoints()

    # -- operations ------------------------------------------------------------------------

    async def execute(self, operation: Operation, *, record: Recorder | None = None) -> Outcome:
        """Apply one queue operation and persist it; answers only once it is durable.

        ``record`` turns the outcome (or the refusal) into the reply to a central command,
        which is then saved in the same transaction as the change.
        """

        def run(engine: QueueEngine, now: dt.datetime) -> Outcome:
            return engine.apply(operation, now)

        result: Outcome = await self._submit(run, mutates=True, record=record)
        return result

    async def write(self, fn: Callable[[Store, dt.datetime, bool], Written[T]]) -> T:
        """Run a write of the store that is not a queue operation, in the writer's turn
        (committed with the group it falls in).

        ``fn(store, now, clock_ok)`` runs on the store thread and returns ``Written``: the
        events it committed reach the listeners like any other, and its ``value`` is what
        this returns. A failure of ``fn`` undoes its own writes only.
        """
        result: T = await self._submit(None, mutates=True, write=fn)
        return result

    async def reconfigure(
        self,
        config: HallAgentConfig,
        *,
        settings: dict[str, Any] | None = None,
        event: Event | None = None,
    ) -> None:
        """Switch the queue to a new config: checked against the live queue, saved with
        ``settings`` and ``event`` in one transaction, then applied in memory."""

        def check(engine: QueueEngine, _: dt.datetime) -> None:
            problems = engine.reconfiguration_problems(config)
            if problems:
                raise Refused("; ".join(problems))

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            events = [] if event is None else [dataclasses.replace(event, at=now)]
            if not events and not settings:
                return Written([], None)
            return Written(store.append(events, clock_ok=clock_ok, settings=settings), None)

        def swap() -> None:
            self.engine.reconfigure(config)
            self.config = config

        await self._submit(check, mutates=True, write=write, after=swap)

    def clock_ok(self) -> bool:
        """Whether the wall clock can be trusted now (a Pi may boot with a wrong date)."""
        return self._clock_ok(self._clock())

    async def read(self, run: Callable[[QueueEngine, dt.datetime], T]) -> T:
        """Read the queue as last committed: answered at once, never behind a write.

        ``run`` gets the committed engine (never a change that is not yet durable); it must
        not change it. Whoever was answered by ``execute`` reads their own change.
        """
        if not self._accepting:
            raise ShuttingDown("the hall agent is shutting down; try again in a moment")
        return run(self._committed, self._clock().astimezone(self.config.hall.zone))

    async def queue_json(self) -> bytes:
        """The committed queue's snapshot (``QueueEngine.snapshot``, with the waiting list)
        as JSON, as ``GET /api/v1/queue`` answers it: made once per committed state (and
        estimate) and shared by every read of it; each waiting ticket's JSON is kept while
        its committed record is the same object (the writer replaces a record it changes,
        never alters it)."""
        if not self._accepting:
            raise ShuttingDown("the hall agent is shutting down; try again in a moment")
        engine = self._committed
        head = engine.snapshot(self._clock().astimezone(self.config.hall.zone), waiting_list=False)
        kept = self._queue_json
        if kept is not None and kept[0] is head:
            return kept[1]
        fragments = self._ticket_json
        parts: list[bytes] = []
        fresh: dict[str, tuple[Ticket, bytes]] = {}
        for ticket in sorted(engine.waiting(), key=lambda t: (t.rank, t.id)):
            found = fragments.get(ticket.id)
            if found is None or found[0] is not ticket:
                found = (ticket, _json(ticket.public()))
            fresh[ticket.id] = found
            parts.append(found[1])
        self._ticket_json = fresh
        body = _json(head)[:-1] + b',"waiting":[' + b",".join(parts) + b"]}"
        self._queue_json = (head, body)
        return body

    @property
    def last_seq(self) -> int:
        """The seq of the last committed event (what the log holds for readers)."""
        return self._last_seq

    async def ping(self) -> None:
        """Answered in the writer's turn: a writer that does not answer is stuck."""
        await self._submit(_nothing, mutates=False)

    async def _submit(
        self,
        run: Callable[[QueueEngine, dt.datetime], Any] | None,
        *,
        mutates: bool,
        record: Recorder | None = None,
        write: Callable[[Store, dt.datetime, bool], Any] | None = None,
        after: Callable[[], None] | None = None,
    ) -> Any:
        if not self._accepting:
            raise ShuttingDown("the hall agent is shutting down; try again in a moment")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._jobs.put(_Job(run, mutates, done, record, write, after))
        return await done

    async def tick(self) -> Outcome:
        return await self.execute(Tick())

    # -- the writer ------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        backlog: collections.deque[_Job] = collections.deque()
        stopping = False
        while True:
            if not backlog:
                if stopping:
                    return
                first = await self._jobs.get()
                if first is None:
                    return
                backlog.append(first)
            # Everything already waiting joins the group: one transaction, one fsync.
            while len(backlog) < MAX_GROUP and not stopping:
                try:
                    waiting = self._jobs.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if waiting is None:
                    stopping = True
                else:
                    backlog.append(waiting)
            group = self._next_group(backlog)
            again = await self._run_group(group)
            backlog.extendleft(reversed(again))
            if self.store.damage_pending:
                await self._set_aside_damaged()

    @staticmethod
    def _next_group(backlog: collections.deque[_Job]) -> list[_Job]:
        """The jobs at the head of the line that commit together (a config swap alone)."""
        if backlog[0].solo:
            return [backlog.popleft()]
        group: list[_Job] = []
        while backlog and len(group) < MAX_GROUP and not backlog[0].solo:
            group.append(backlog.popleft())
        return group

    async def _run_group(self, group: list[_Job]) -> list[_Job]:
        """Apply the group in memory, commit it in one transaction, publish, answer.

        Returns the jobs to run again: after a bug stopped one operation half-way, the
        engine goes back to the disk and the others of the group are run again.
        """
        now = self._clock().astimezone(self.config.hall.zone)  # events read in hall time
        clock_ok = self._clock_ok(now)
        self.engine.clock_trusted = clock_ok
        steps: list[_Step] = []
        for index, job in enumerate(group):
            step = _Step(job)
            try:
                self._run_in_memory(step, now)
            except Exception as err:  # a bug must not stop the writer; the caller sees it
                log.exception("queue operation failed unexpectedly")
                self.engine = await self._load()
                self._committed = _copy_engine(self.engine)
                _answer(job, error=err)
                return [s.job for s in steps] + group[index + 1 :]
            steps.append(step)
        if any(s.outcome is not None or (s.job.write and s.error is None) for s in steps):
            try:
                await self._in_thread(self._commit_steps, steps, now, clock_ok)
            except Exception as err:  # noqa: BLE001 - every job of the group answers with it
                await self._group_failed(steps, err)
                return []
        self._published(steps)
        for step in steps:
            if step.error is not None:
                _answer(step.job, error=step.error)
            elif step.outcome is not None:
                _answer(step.job, value=step.outcome)
            else:
                _answer(step.job, value=step.value)
        # One turn of the event loop for the answered requests to send their answers: the
        # writer's next steps (a play, the next group in memory) hold the loop while they run.
        await asyncio.sleep(0)
        if any(s.outcome is not None and (s.outcome.tickets or s.outcome.windows) for s in steps):
            self._estimate_after()  # (not after a tick that changed nothing)
        return []

    def _estimate_after(self) -> None:
        """After a group is answered: play the queue again if its last change left no kept
        play (a call: ``QueueEngine._estimates_of``) and give the result to the committed
        copy. The next take joins that play, and reads do not play again; a read in between
        plays the committed copy itself, as always (its records are the committed ones)."""
        now = self._clock().astimezone(self.config.hall.zone)
        if not self._accepting or self.engine.has_estimates(now):
            return
        engine, committed = self.engine, self._committed
        try:
            engine.estimates(now)
        except Exception:  # the next read or take plays again and says why
            log.exception("the wait estimate after a change failed")
            return
        if not committed.has_estimates(now):
            committed.replaced(like=engine)

    def _run_in_memory(self, step: _Step, now: dt.datetime) -> None:
        """Run one job's part on the live engine; a refusal is kept as its answer."""
        job = step.job
        if job.write is not None:
            if job.run is not None:
                try:
                    job.run(self.engine, now)  # a check that may refuse before anything is written
                except QueueError as err:
                    step.error = err
            return
        assert job.run is not None
        if not job.mutates:
            step.value = job.run(self.engine, now)
            return
        try:
            outcome: Outcome = job.run(self.engine, now)
        except QueueError as err:
            # A refusal may follow a change made on the way (a day rollover, a window
            # opening): whatever memory holds, the disk must hold too.
            partial = self.engine.pending
            command = None if job.record is None else job.record(None, err)
            changed = partial.events or partial.tickets or partial.windows or partial.hall_changed
            if changed or command is not None:
                step.outcome, step.command = partial, command
            step.error = err
            return
        step.outcome = outcome
        step.command = None if job.record is None else job.record(outcome, None)

    def _commit_steps(self, steps: list[_Step], now: dt.datetime, clock_ok: bool) -> None:
        """On the store thread: every step's writes in one transaction (one fsync).

        A queue change that cannot be saved fails the group (memory already holds it); a
        store write that fails alone is undone to its savepoint and answers with its error.
        """
        store = self.store
        hall = self.engine.hall
        with store.group():
            for step in steps:
                job = step.job
                if step.outcome is not None:
                    step.stored = store.commit(
                        step.outcome, hall, clock_ok=clock_ok, command=step.command
                    )
                elif job.write is not None and step.error is None:
                    try:
                        with store.atomic():  # the write stands or falls whole
                            written = job.write(store, now, clock_ok)
                            if not isinstance(written, Written):
                                raise TypeError(
                                    f"a write must return Written, not {type(written).__name__}"
                                )
                    except Exception as err:
                        if not store.in_transaction:
                            raise  # the disk took the group's transaction with it
                        step.error = err
                        continue
                    step.stored, step.value = written.events, written.value

    async def _group_failed(self, steps: list[_Step], err: Exception) -> None:
        """The group's commit failed: every job of it fails, memory goes back to disk."""
        if isinstance(err, StoreError):
            if self.writes.failing_since is None:
                log.error(
                    "%s could not be saved (%s); the last saved state is reloaded and "
                    "operations are refused until the store takes writes",
                    _what_failed(steps),
                    err,
                )
            self._write_failed(err)
        else:
            log.error("a group of %d writes failed unexpectedly", len(steps), exc_info=err)
        self.engine = await self._load()
        self._committed = _copy_engine(self.engine)
        self._last_seq = self.store.last_seq
        for step in steps:
            _answer(step.job, error=err)

    def _published(self, steps: list[_Step]) -> None:
        """The group is on disk: reads see it, listeners get its events, in seq order."""
        live, snap = self.engine, self._committed
        tickets: set[str] = set()
        windows: set[str] = set()
        hall_changed = False
        swapped = False
        stored: list[StoredEvent] = []
        for step in steps:
            swapped |= step.job.solo and step.error is None
            stored.extend(step.stored)
            if step.outcome is not None:
                step.outcome.stored = step.stored
                tickets.update(step.outcome.tickets)
                windows.update(step.outcome.windows)
                hall_changed |= step.outcome.hall_changed
            if step.job.after is not None and step.error is None:
                step.job.after()
        if swapped:
            self._committed = _copy_engine(self.engine)
        else:
            for ticket_id in tickets:
                ticket = live.tickets.get(ticket_id)
                if ticket is None:
                    snap.tickets.pop(ticket_id, None)
                else:
                    snap.tickets[ticket_id] = _copy_ticket(ticket)
            if len(snap.tickets) != len(live.tickets):  # a new day left closed tickets out
                for gone in snap.tickets.keys() - live.tickets.keys():
                    del snap.tickets[gone]
            for window_id in windows:
                snap.windows[window_id] = _copy_window(live.windows[window_id])
            if hall_changed or snap.hall.day != live.hall.day:
                snap.hall = _copy_counters(live.hall)
            snap.clock_trusted = live.clock_trusted
            # Its records equal the live engine's now: the estimates and places the group's
            # operations kept up are the committed state's too (reads need not play again).
            snap.replaced(like=live)
        self._last_seq = self.store.last_seq
        if stored or tickets or windows or hall_changed:
            self._write_succeeded(len(steps))
        self._notify(stored)

    async def _set_aside_damaged(self) -> None:
        """Move the rows reads found damaged to the store's quarantine table, in the
        writer's turn; the reports it commits reach the listeners like any event."""
        self._aside_queued = False
        now = self._clock().astimezone(self.config.hall.zone)
        try:
            stored = await self._in_thread(self.store.set_aside, now, clock_ok=self._clock_ok(now))
        except StoreError as err:
            if self.writes.failing_since is None:
                log.warning(
                    "could not set damaged rows aside (%s); reads skip them and it is tried "
                    "again after the next write",
                    err,
                )
            self._write_failed(err)
            return
        self._last_seq = self.store.last_seq
        if stored:
            self._write_succeeded(1)
        self._notify(stored)

    def _write_failed(self, err: StoreError) -> None:
        record = self.writes
        record.failed_total += 1
        record.disk_full_total += isinstance(err, StoreFull)
        record.last_error = str(err)
        record.last_was_disk_full = isinstance(err, StoreFull)
        record.last_failed_at = time.monotonic()
        if record.failing_since is None:
            record.failing_since = record.last_failed_at
        record.failed.set()

    async def _checkpoint_loop(self) -> None:
        """Checkpoint the WAL on the checkpointer's connection and thread whenever the
        operations committed since the last checkpoint have written about
        ``CHECKPOINT_PAGES`` to it: the writer's commits never wait for a checkpoint (a
        PASSIVE one waits for nobody).

        The writer starts the WAL over only at a commit that begins after everything in
        it was copied; when the writer committed while a checkpoint ran, another one
        copies the rest once the writer has been quiet for ``CHECKPOINT_QUIET_S`` (under a
        steady stream of writes the WAL grows until such a moment, or until the writer's
        own net, ``WAL_CHECKPOINT_NET_PAGES``).
        """
        loop = asyncio.get_running_loop()
        failing = False
        left = False  # the last checkpoint left pages that were committed while it ran
        wal_pages = 0  # the pages the WAL held at the last checkpoint
        wal_rounds = -1  # and how often it had been started over by then
        while True:
            if left:
                quiet = self._last_commit + CHECKPOINT_QUIET_S - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(quiet, 0.0)):
                        await self._checkpoint_due.wait()
                if not self._checkpoint_due.is_set() and (
                    time.monotonic() - self._last_commit < CHECKPOINT_QUIET_S
                ):
                    continue  # not quiet yet
            else:
                await self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            checkpointer = self._checkpointer
            if not self._accepting or checkpointer is None:
                return
            operations, self._since_checkpoint = self._since_checkpoint, 0
            turns, busy = self._store_turns, self._in_store > 0
            try:
                pages, copied, rounds = await loop.run_in_executor(
                    self._checkpoint_thread, checkpointer.checkpoint_and_round
                )
            except StoreError as err:
                if not failing:
                    log.warning(
                        "could not checkpoint the state database (%s); the writer "
                        "checkpoints itself once the WAL grows past its limit",
                        err,
                    )
                failing, left = True, False
                continue
            # A commit under way or begun while it ran may have begun before everything
            # was copied: the writer starts the WAL over only in a commit begun after.
            wrote = busy or self._store_turns != turns
            failing, left = False, copied < pages or wrote
            self.writes.checkpoints_total += 1
            self.writes.wal_all_copied = not left
            # The pages these operations wrote: the WAL's growth since the last checkpoint
            # (all of it when the writer started it over in between: its header counts).
            written = pages - wal_pages if rounds == wal_rounds else pages
            wal_pages, wal_rounds = pages, rounds
            if written > 0 and operations > 0:
                every = round(CHECKPOINT_PAGES * operations / written)
                self._checkpoint_every = max(8, min(every, 100_000))

    def _write_succeeded(self, jobs: int) -> None:
        self._last_commit = time.monotonic()
        self._since_checkpoint += jobs
        if self._since_checkpoint >= self._checkpoint_every:
            self._checkpoint_due.set()
        record = self.writes
        record.ok_total += 1
        record.commits_total += 1
        record.jobs_total += jobs
        record.largest_group = max(record.largest_group, jobs)
        record.last_was_disk_full = False
        if record.failing_since is not None:
            log.info("the state database takes writes again")
            record.failing_since = None

    def _notify(self, stored: list[StoredEvent]) -> None:
        for listener in self._listeners:
            for event in stored:
                listener.put_nowait(event)

    async def _load(self) -> QueueEngine:
        loaded = await self._in_thread(self.store.load)
        # The hall row is first written when a ticket is taken or a day closes; windows
        # (staff signed in, paused) may have been saved before it and must not be lost.
        hall = loaded.hall or HallCounters(day=business_day(self._clock(), self.config))
        return QueueEngine(self.config, hall, loaded.tickets, loaded.windows)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        self._store_turns += 1  # (the checkpoint loop tells from these what it missed)
        self._in_store += 1
        try:
            return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))
        finally:
            self._in_store -= 1

    async def store_read(self, fn: Callable[[Store], T]) -> T:
        """Read the store as last committed, on the reader's own connection and thread:
        never behind a write. ``fn`` must only read (the connection refuses writes).

        A read that met damaged rows left them out; the writer is asked to set them aside.
        """
        reader = self._reader
        if reader is None:
            raise ShuttingDown("the hall agent is shutting down; try again in a moment")

        def call() -> tuple[T, list[Damage]]:
            return fn(reader), reader.take_damage()

        loop = asyncio.get_running_loop()
        result, found = await loop.run_in_executor(self._reader_thread, call)
        if found and self._accepting:
            done: asyncio.Future[Any] = loop.create_future()

            def hand_over(store: Store, _now: dt.datetime, _ok: bool) -> Written[None]:
                store.note_damage(found)
                return Written([], None)

            self._jobs.put_nowait(_Job(None, True, done, write=hand_over))
        return result

    async def store_call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn`` on the writer's thread and connection, between its transactions: for
        the few writes outside the writer's groups and for tools. Reads use
        :meth:`store_read`, which never waits behind a commit.

        A read that met damaged rows left them out; the writer is asked to set them aside.
        """
        result = await self._in_thread(fn, self.store)
        if self.store.damage_pending and self._accepting and not self._aside_queued:
            self._aside_queued = True
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._jobs.put_nowait(_Job(_nothing, False, done))
        return result

    # -- observers -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[asyncio.Queue[StoredEvent]]:
        """Committed events, as they are committed, for as long as the context is open."""
        queue: asyncio.Queue[StoredEvent] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            yield queue
        finally:
            self._listeners.remove(queue)

    def business_day(self) -> dt.date:
        return business_day(self._clock(), self.config)
