"""What every part of the store shares: the errors, the typed results, the connection.

:class:`StoreCore` holds the connection and the event log's write side (``_append``);
the table modules of this package (``outbox``, ``documents``, ``personal``) add their
statements to it, and :class:`agent.runtime.store.Store` puts them together. Nothing
outside this package sees the connection or a row: every method returns a typed value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.core import events as ev
from agent.core.events import Event, EventClass, EventData, read_event
from agent.core.model import HallCounters, Ticket, WindowStatus
from agent.errors import HallAgentError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(HallAgentError):
    """The store could not do what was asked; the hall's state is unchanged."""


class StoreFull(StoreError):
    """SQLite found no room on the disk ("database or disk is full")."""


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
# Sizing the -shm file failed: what opening a WAL database on a full disk reports.
_SQLITE_IOERR_SHMSIZE = 4874


def _primary_code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_damage(err: sqlite3.Error) -> bool:
    """The file itself is broken (not a full disk, a permission or a lock)."""
    code = _primary_code(err)
    # No code: raised by our own integrity check.
    return code is None or code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _failure(what: str, err: sqlite3.Error) -> StoreError:
    """A StoreError that says what failed; a full disk is a StoreFull that says so."""
    full = getattr(err, "sqlite_errorcode", None) == _SQLITE_IOERR_SHMSIZE
    if full or _primary_code(err) == _SQLITE_FULL:
        return StoreFull(f"{what}: the state disk is full ({err})")
    return StoreError(f"{what}: {err}")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as it was committed, with its place in the hall's log."""

    epoch: int
    seq: int
    id: str
    type: str
    at: str
    clock_ok: bool
    data: dict[str, Any]
    # The typed data, read once: the same committed event reaches every listener (printing,
    # pages, LED, voice, rating, keypads, health), which would otherwise each validate it.
    _payload: EventData | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def payload(self) -> EventData:
        """The event's typed data (``agent.core.events``): consumers ``match`` on its class.
        A row that does not fit its type comes back as ``Unreadable``."""
        if self._payload is None:
            object.__setattr__(self, "_payload", read_event(self.type, self.data))
        assert self._payload is not None
        return self._payload

    def envelope(self, hall_id: str) -> dict[str, Any]:
        """The event as central receives it (DESIGN §5)."""
        return {
            "v": 1,
            "hall": hall_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "at": self.at,
            "clock_ok": self.clock_ok,
            "data": self.data,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class RawEvent:
    """An event as the store keeps it, with no schema: for copying events between stores,
    tests of the store itself and its retention. The agent emits typed events
    (``agent.core.events.Event``); both have ``type``, ``at``, ``data`` and ``cls``."""

    type: str
    at: dt.datetime
    data: dict[str, Any]
    cls: EventClass = EventClass.BUSINESS


Appendable = Event | RawEvent


@dataclasses.dataclass(frozen=True, slots=True)
class Written(Generic[T]):
    """What a write given to ``Hall.write`` did: the events it committed (they reach the
    hall's listeners once the write is over) and the value ``Hall.write`` returns."""

    events: list[StoredEvent]
    value: T

    @staticmethod
    def of_events(events: list[StoredEvent]) -> Written[list[StoredEvent]]:
        """A write whose value is the events it committed (``store.append``'s)."""
        return Written(events, events)


@dataclasses.dataclass(frozen=True, slots=True)
class CommandRecord:
    """The reply to a central command, kept so a repeated ``cmd_id`` is answered again."""

    cmd_id: str
    name: str
    received_at: str
    reply: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStats:
    unpublished: int
    unacked: int
    total: int
    bytes: int
    oldest_unpublished_at: str | None
    evicted_total: int


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseSpace:
    file_bytes: int
    free_bytes: int  # free pages inside the file: room for rows without growing it


@dataclasses.dataclass(frozen=True, slots=True)
class Eviction:
    """What one retention pass removed before central acknowledged it."""

    count: int
    by_class: dict[str, int]
    ranges: list[tuple[int, int]]
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Damage:
    """A row a read could not decode, waiting to be set aside (``Store.set_aside``).

    ``raw`` is the damaged value as it is on disk (the column ``column``; the whole row as
    ``fields``-style JSON when ``column`` is None); ``fields`` the row's other columns as JSON
    (a byte that is not UTF-8 written as a ``\\udcXX`` escape, Python's surrogateescape, so
    nothing is lost). ``replacement``, when set, is written in the row's place instead of
    deleting it (a command's reply, the hall's rebuilt counters).
    """

    table: str
    rowid: int
    key: str
    reason: str
    raw: bytes
    column: str | None
    fields: str
    replacement: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A row of the ``quarantine`` table (without its bytes)."""

    id: int
    source: str
    key: str
    reason: str
    at: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedState:
    hall: HallCounters | None
    tickets: list[Ticket]
    windows: list[WindowStatus]


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _format_at(at: dt.datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def _class_name(value: Any) -> str:
    """An event row's retention class by name ("unknown" for a value that is none)."""
    try:
        return EventClass(value).name.lower()
    except (ValueError, TypeError):
        return "unknown"


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] → [(1, 3), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class StoreCore:
    """The connection, the event log's write side and the counters. Not used alone: see
    :class:`agent.runtime.store.Store`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, epoch: int) -> None:
        self._conn = conn
        self.path = path
        self.epoch = epoch
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        # Pruning may have removed the newest events: never hand out their seq again.
        self.last_seq: int = max(int(row[0]), self.counter("pruned_max_seq"))
        # Rows reads found damaged, by (table, rowid), until ``set_aside`` moves them.
        self._damage: dict[tuple[str, int], Damage] = {}
        # Inside ``group()``: every write is a savepoint of the group's one transaction.
        self._grouping = False
        self._savepoints = 0

    def close(self) -> None:
        self._conn.close()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (inside a group: whether the group still stands)."""
        return self._conn.in_transaction

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """One transaction around several writes (the hall's group commit): each write
        inside is a savepoint, and the group ends with one COMMIT, one fsync.

        A write that fails alone (not the disk) is undone to its savepoint and the others
        stay; a failure of the disk, or of the COMMIT, undoes the whole group and raises
        a StoreError, with ``last_seq`` back where it was.
        """
        if self._grouping:
            raise RuntimeError("store groups do not nest")
        start = self.last_seq
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise _failure(f"could not save to {self.path}", err) from err
        self._grouping = True
        try:
            yield
            if not self._conn.in_transaction:
                # SQLite rolled the whole transaction back under a write (a full disk).
                raise StoreError(f"could not save to {self.path}: the write was rolled back")
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            self.last_seq = start
            raise _failure(f"could not save to {self.path}", err) from err
        except BaseException:
            self._rollback()
            self.last_seq = start
            raise
        finally:
            self._grouping = False

    @contextlib.contextmanager
    def _atomic(self, what: str) -> Iterator[None]:
        """One write: its own transaction, or a savepoint inside the hall's group.

        A failure undoes the write and raises (a StoreError saying ``what`` for the disk);
        within a group, a failure that took the group's transaction with it is re-raised
        so the group fails whole.
        """
        if self._grouping:
            self._savepoints += 1
            name = f"w{self._savepoints}"
            start = self.last_seq
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException as err:
                self.last_seq = start  # the seqs of undone events are handed out again
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute(f"ROLLBACK TO {name}")
                        self._conn.execute(f"RELEASE {name}")
                if isinstance(err, sqlite3.Error):
                    raise _failure(what, err) from err
                raise
            else:
                self._conn.execute(f"RELEASE {name}")
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(what, err) from err
        except BaseException:
            # Not the disk (e.g. a value that is not JSON): still undo the rows written so
            # far, or the open transaction would make every later commit fail too.
            self._rollback()
            raise

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Several writes that stand or fall together (inside a group: one savepoint)."""
        return self._atomic(f"could not save to {self.path}")

    def _transaction(
        self,
        fn: Callable[[sqlite3.Connection], T],
        events: Sequence[Appendable] = (),
        *,
        clock_ok: bool = True,
    ) -> tuple[T, list[StoredEvent]]:
        """Run ``fn`` on the connection and append ``events``, in one transaction (or one
        savepoint of the hall's group): for the rows a feature keeps with its events."""
        with self._atomic(f"could not save to {self.path}"):
            value = fn(self._conn)
            stored = self._append(events, clock_ok)
        self.last_seq += len(stored)
        return value, stored

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the connection; a failure is a StoreError."""
        try:
            return fn(self._conn)
        except sqlite3.Error as err:
            raise _failure(f"could not read {self.path}", err) from err

    def _append(self, events: Sequence[Appendable], clock_ok: bool) -> list[StoredEvent]:
        stored = []
        seq = self.last_seq
        rows = []
        for event in events:
            seq += 1
            at = _format_at(event.at)
            data = _dumps(event.data)
            ev = StoredEvent(
                self.epoch, seq, str(uuid.uuid4()), event.type, at, clock_ok, event.data
            )
            rows.append(
                (seq, ev.id, event.type, at, int(clock_ok), int(event.cls), data, len(data) + 160)
            )
            stored.append(ev)
        if rows:
            self._conn.executemany(
                "INSERT INTO events (seq, id, type, at, clock_ok, class, data, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return stored

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as err:
            # No transaction was open (BEGIN itself failed): nothing to undo.
            log.debug("rollback after a failed write: %s", err)

    def _evicted_event(self, eviction: Eviction, now: dt.datetime) -> Event:
        """Count an eviction; the ``outbox.evicted`` event that reports it to central."""
        self._bump("evicted_total", eviction.count)
        return Event(
            ev.OutboxEvicted(
                count=eviction.count,
                by_class=eviction.by_class,
                ranges=[list(r) for r in eviction.ranges],
                reason=eviction.reason,
                evicted_total=self.counter("evicted_total"),
            ),
            now,
        )

    def counter(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def _bump(self, name: str, by: int) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
