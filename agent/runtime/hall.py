"""The hall: the queue engine behind one serialized writer, persisted by the store.

Every mutation — from the local API, a device, or a central command — is queued to one
writer task. The writer applies the operation to the in-memory engine, commits the
changed records and their events in one SQLite transaction on a dedicated thread, and
only then answers. A caller that goes away mid-operation does not interrupt the writer,
so memory and disk never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError, Refused
from agent.core.events import Event
from agent.core.model import HallCounters, business_day
from agent.core.operations import Operation, Tick
from agent.errors import HallAgentError
from agent.runtime.clock import plausible
from agent.runtime.store import CommandRecord, Store, StoredEvent, StoreError, StoreFull, Written
from agent.runtime.tasks import BackgroundTasks

log = logging.getLogger(__name__)

T = TypeVar("T")


def wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def plausible_clock(now: dt.datetime) -> bool:
    """Only the date's plausibility; the daemon passes the real check (agent.runtime.clock)."""
    return plausible(now)


def _nothing(_engine: QueueEngine, _now: dt.datetime) -> None:
    """A read that does nothing: wakes the writer, which then sets damaged rows aside."""


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


@dataclasses.dataclass(slots=True)
class _Job:
    run: Callable[[QueueEngine, dt.datetime], Any] | None
    mutates: bool
    done: asyncio.Future[Any]
    record: Recorder | None = None
    write: Callable[[Store, dt.datetime, bool], Any] | None = None
    after: Callable[[], None] | None = None


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
        self._writer: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._accepting = False
        self._listeners: list[asyncio.Queue[StoredEvent]] = []
        self.engine: QueueEngine = QueueEngine.fresh(config, clock())
        self.writes = WriteRecord()
        # A read found damaged rows and the writer was asked to set them aside.
        self._aside_queued = False

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Hall:
        self.engine = await self._load()
        await self._set_aside_damaged()
        tasks = await self._stack.enter_async_context(BackgroundTasks())
        self._writer = tasks.create_task(self._write_loop(), name="hall-writer")
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
        await self._stack.aclose()
        self._thread.shutdown(wait=True)

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
        """Run a write of the store that is not a queue operation, in the writer's turn.

        ``fn(store, now, clock_ok)`` runs on the store thread and returns ``Written``: the
        events it committed reach the listeners like any other, and its ``value`` is what
        this returns.
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
        """Read the queue between writes (never sees a change that is not yet durable)."""
        result: T = await self._submit(run, mutates=False)
        return result

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

    async def _write_loop(self) -> None:
        while (job := await self._jobs.get()) is not None:
            try:
                value = await self._apply(job)
            except StoreError as err:
                self._write_failed(err)
                if not job.done.done():
                    job.done.set_exception(err)
            except (QueueError, ShuttingDown) as err:
                if not job.done.done():
                    job.done.set_exception(err)
            except Exception as err:  # a bug must not stop the writer; the caller sees it
                log.exception("queue operation failed unexpectedly")
                if not job.done.done():
                    job.done.set_exception(err)
            else:
                if not job.done.done():
                    job.done.set_result(value)
            if self.store.damage_pending:
                await self._set_aside_damaged()

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
        if stored:
            self._write_succeeded()
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

    def _write_succeeded(self) -> None:
        record = self.writes
        record.ok_total += 1
        record.last_was_disk_full = False
        if record.failing_since is not None:
            log.info("the state database takes writes again")
            record.failing_since = None

    async def _apply(self, job: _Job) -> Any:
        now = self._clock().astimezone(self.config.hall.zone)  # events read in hall time
        self.engine.clock_trusted = self._clock_ok(now)
        if job.write is not None:
            if job.run is not None:
                job.run(self.engine, now)  # a check that may refuse before anything is written
            written = await self._in_thread(job.write, self.store, now, self._clock_ok(now))
            if not isinstance(written, Written):
                raise TypeError(f"a write must return Written, not {type(written).__name__}")
            if job.after is not None:
                job.after()
            if written.events:
                self._write_succeeded()
            self._notify(written.events)
            return written.value
        assert job.run is not None
        if not job.mutates:
            return job.run(self.engine, now)
        try:
            outcome: Outcome = job.run(self.engine, now)
        except QueueError as err:
            # A refusal may follow a change made on the way (a day rollover, a window
            # opening): whatever memory holds, the disk must hold too.
            partial = self.engine.pending
            command = None if job.record is None else job.record(None, err)
            changed = partial.events or partial.tickets or partial.windows or partial.hall_changed
            if changed or command is not None:
                await self._commit(partial, now, command)
            raise
        except Exception:
            # A bug may have stopped the operation half-way through memory: go back to disk.
            self.engine = await self._load()
            raise
        command = None if job.record is None else job.record(outcome, None)
        await self._commit(outcome, now, command)
        return outcome

    async def _commit(
        self, outcome: Outcome, now: dt.datetime, command: CommandRecord | None = None
    ) -> None:
        clock_ok = self._clock_ok(now)
        try:
            stored = await self._in_thread(
                self.store.commit, outcome, self.engine.hall, clock_ok=clock_ok, command=command
            )
        except Exception as err:
            # Memory is ahead of the disk now, whatever failed: go back to what was saved.
            # Anything but a StoreError is logged by the writer loop; this once per run.
            if isinstance(err, StoreError) and self.writes.failing_since is None:
                log.error(
                    "a queue change could not be saved (%s); the last saved state is "
                    "reloaded and operations are refused until the store takes writes",
                    err,
                )
            self.engine = await self._load()
            raise
        if stored or outcome.tickets or outcome.windows or outcome.hall_changed:
            self._write_succeeded()
        outcome.stored = stored
        self._notify(stored)

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
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    async def store_call(self, fn: Callable[[Store], T]) -> T:
        """Run a read of the store on the writer thread (the connection's only thread).

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
