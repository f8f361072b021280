"""The durable store: queue state and the event outbox in one SQLite file.

Every operation's state change and its events are written in one transaction (a
transactional outbox), in WAL mode with ``synchronous=FULL`` so a commit that returned
survives a power cut. Events get a gapless ``seq`` per ``epoch``; the epoch changes only
when the store had to be recreated because the file was damaged. A damaged file is moved
aside, never deleted.

The store is synchronous and not thread-safe: the agent calls it from one writer thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.core import events as ev
from agent.core.engine import Outcome
from agent.core.events import Event, EventClass, EventData, read_event
from agent.core.model import HallCounters, Ticket, WindowStatus
from agent.errors import HallAgentError

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "hall.db"
EPOCH_FILE = "epoch"

MIGRATIONS: tuple[str, ...] = (
    # 1: the queue state and the outbox.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE hall (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
    CREATE TABLE tickets (
        id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        number TEXT NOT NULL,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        data TEXT NOT NULL,
        UNIQUE (day, number)
    );
    CREATE INDEX tickets_open ON tickets (status)
        WHERE status IN ('waiting','called','serving','held');
    CREATE TABLE windows (id TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        at TEXT NOT NULL,
        clock_ok INTEGER NOT NULL,
        class INTEGER NOT NULL,
        data TEXT NOT NULL,
        size INTEGER NOT NULL,
        published INTEGER NOT NULL DEFAULT 0,
        acked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_pending ON events (seq) WHERE published = 0;
    """,
    # 2: the central link: answered commands (dedupe across restarts), settings pushed by
    # central (config, notices, staff), counters that must survive pruning.
    """
    CREATE TABLE commands (
        cmd_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        received_at TEXT NOT NULL,
        reply TEXT NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE INDEX events_unacked ON events (class, seq) WHERE acked = 0;
    """,
    # 3: captured documents: one row per page file waiting in the spool
    # (agent/features/documents.py)
    # and how far its upload to central got.
    """
    CREATE TABLE document_files (
        id TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        page INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        chunk_bytes INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        spool_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        sent_chunks INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'spooled',
        delivered_at TEXT
    );
    CREATE INDEX document_files_pending ON document_files (created_at)
        WHERE state != 'delivered';
    """,
)


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

    @property
    def payload(self) -> EventData:
        """The event's typed data (``agent.core.events``): consumers ``match`` on its class.
        A row that does not fit its type comes back as ``Unreadable``."""
        return read_event(self.type, self.data)

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
class LoadedState:
    hall: HallCounters | None
    tickets: list[Ticket]
    windows: list[WindowStatus]


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _format_at(at: dt.datetime) -> str:
    return at.isoformat(timespec="milliseconds")


class Store:
    """The hall's SQLite file. Open with :meth:`open`; use from one thread only."""

    def __init__(self, conn: sqlite3.Connection, path: Path, epoch: int) -> None:
        self._conn = conn
        self.path = path
        self.epoch = epoch
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        # Pruning may have removed the newest events: never hand out their seq again.
        self.last_seq: int = max(int(row[0]), self.counter("pruned_max_seq"))

    # -- opening, damage and migrations -------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> Store:
        """Open (or create) the store in ``directory``.

        A file SQLite reports as damaged is renamed ``hall.db.damaged-<time>`` with its
        WAL, a new file is created and a new epoch begins.
        """
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DB_NAME
        try:
            conn = cls._connect(path)
            epoch = cls._prepare(conn, directory)
        except sqlite3.DatabaseError as err:
            if not _is_damage(err):
                # A full disk, a permission or a lock says nothing about the file: it must
                # never be moved aside (that would start a new epoch for nothing).
                raise _failure(f"cannot open the state database {path}", err) from err
            aside = cls._move_aside(path)
            log.error(
                "state database %s was damaged (%s); moved it to %s and started a new "
                "store; central will see a new epoch",
                path,
                err,
                aside,
            )
            conn = cls._connect(path)
            epoch = cls._prepare(conn, directory)
        return cls(conn, path, epoch)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError:
            # A file that is not a database fails here: close it before it is moved aside.
            conn.close()
            raise
        return conn

    @staticmethod
    def _prepare(conn: sqlite3.Connection, directory: Path) -> int:
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the state database is schema version {version}, newer than this "
                    f"agent knows ({len(MIGRATIONS)}); install the newer agent again"
                )
            for number in range(version, len(MIGRATIONS)):
                conn.execute("BEGIN IMMEDIATE")
                for statement in _statements(MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        except (sqlite3.DatabaseError, StoreError):
            conn.close()
            raise
        if row is not None:
            return int(row[0])
        # The file is written first: a crash between the two skips an epoch, never reuses one.
        damaged = len(list(directory.glob(f"{DB_NAME}.damaged-*[!lm]")))
        epoch = max(_read_epoch_file(directory), damaged) + 1
        _write_epoch_file(directory, epoch)
        conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (str(epoch),))
        return epoch

    @staticmethod
    def _move_aside(path: Path) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():  # damaged twice in one second: never overwrite the first
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))
        return aside

    def close(self) -> None:
        self._conn.close()

    # -- state ---------------------------------------------------------------------------

    def load(self) -> LoadedState:
        """The state the queue engine needs: hall counters, today's and open tickets."""
        row = self._conn.execute("SELECT data FROM hall WHERE id = 1").fetchone()
        hall = None if row is None else HallCounters.from_json(json.loads(row[0]))
        if hall is None:
            tickets: list[Ticket] = []
        else:
            tickets = [
                Ticket.from_json(json.loads(r[0]))
                for r in self._conn.execute(
                    "SELECT data FROM tickets WHERE day = ? OR status IN "
                    "('waiting','called','serving','held')",
                    (hall.day.isoformat(),),
                )
            ]
        windows = [
            WindowStatus.from_json(json.loads(r[0]))
            for r in self._conn.execute("SELECT data FROM windows")
        ]
        return LoadedState(hall, tickets, windows)

    def commit(
        self,
        outcome: Outcome,
        hall: HallCounters | None,
        *,
        clock_ok: bool = True,
        command: CommandRecord | None = None,
        settings: Mapping[str, Any] | None = None,
        events: Sequence[Appendable] | None = None,
    ) -> list[StoredEvent]:
        """Write an operation's changed records and its events in one transaction.

        ``command`` records the reply to a central command in the same transaction, so a
        command is never executed twice, also across a crash; ``settings`` are values
        central pushed (config, notices, staff) that change with the events.
        """
        stored: list[StoredEvent] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if outcome.hall_changed and hall is not None:
                conn.execute(
                    "INSERT INTO hall (id, data) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    (_dumps(hall.to_json()),),
                )
            if outcome.tickets:
                conn.executemany(
                    "INSERT INTO tickets (id, day, number, service, status, data) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET day = excluded.day, "
                    "service = excluded.service, status = excluded.status, data = excluded.data",
                    [
                        (
                            t.id,
                            t.day.isoformat(),
                            t.number,
                            t.service,
                            t.status.value,
                            _dumps(t.to_json()),
                        )
                        for t in outcome.tickets.values()
                    ],
                )
            if outcome.windows:
                conn.executemany(
                    "INSERT INTO windows (id, data) VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    [(w.id, _dumps(w.to_json())) for w in outcome.windows.values()],
                )
            if settings:
                conn.executemany(
                    "INSERT INTO settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [(k, _dumps(v)) for k, v in settings.items()],
                )
            if command is not None:
                conn.execute(
                    "INSERT INTO commands (cmd_id, name, received_at, reply) VALUES (?, ?, ?, ?)",
                    (command.cmd_id, command.name, command.received_at, _dumps(command.reply)),
                )
            stored = self._append(outcome.events if events is None else events, clock_ok)
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(f"could not save to {self.path}", err) from err
        except BaseException:
            # Not the disk (e.g. a value that is not JSON): still undo the rows written so
            # far, or the open transaction would make every later commit fail too.
            self._rollback()
            raise
        self.last_seq += len(stored)
        return stored

    def transaction(
        self,
        fn: Callable[[sqlite3.Connection], T],
        events: Sequence[Appendable] = (),
        *,
        clock_ok: bool = True,
    ) -> tuple[T, list[StoredEvent]]:
        """Run ``fn`` on the connection and append ``events``, in one transaction: for a
        feature that keeps rows of its own with its events (documents, personal data)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            value = fn(self._conn)
            stored = self._append(events, clock_ok)
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(f"could not save to {self.path}", err) from err
        except BaseException:
            self._rollback()
            raise
        self.last_seq += len(stored)
        return value, stored

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the connection (from the store's thread)."""
        try:
            return fn(self._conn)
        except sqlite3.Error as err:
            raise _failure(f"could not read {self.path}", err) from err

    def append(
        self,
        events: Sequence[Appendable],
        *,
        clock_ok: bool = True,
        command: CommandRecord | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> list[StoredEvent]:
        """Append events that change no queue state (device, config, outbox reports)."""
        return self.commit(
            Outcome(), None, clock_ok=clock_ok, command=command, settings=settings, events=events
        )

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

    # -- reading the log -------------------------------------------------------------------

    def events(self, from_seq: int = 1, limit: int = 1000) -> list[StoredEvent]:
        rows = self._conn.execute(
            "SELECT seq, id, type, at, clock_ok, data FROM events WHERE seq >= ? "
            "ORDER BY seq LIMIT ?",
            (from_seq, limit),
        )
        return [self._row_event(r) for r in rows]

    def iter_events(self, batch: int = 1000) -> Iterator[StoredEvent]:
        seq = 1
        while True:
            chunk = self.events(seq, batch)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq + 1

    def _row_event(self, row: tuple[Any, ...]) -> StoredEvent:
        seq, ev_id, kind, at, clock_ok, data = row
        return StoredEvent(self.epoch, int(seq), ev_id, kind, at, bool(clock_ok), json.loads(data))

    def outbox_depth(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM events WHERE published = 0").fetchone()
        return int(row[0])

    def ticket_history(self, day: dt.date) -> list[Ticket]:
        return [
            Ticket.from_json(json.loads(r[0]))
            for r in self._conn.execute(
                "SELECT data FROM tickets WHERE day = ? ORDER BY number", (day.isoformat(),)
            )
        ]

    # -- the outbox ------------------------------------------------------------------------

    def unpublished(self, after_seq: int, limit: int) -> list[StoredEvent]:
        """Events not yet confirmed by the broker, in seq order, after ``after_seq``."""
        rows = self._conn.execute(
            "SELECT seq, id, type, at, clock_ok, data FROM events "
            "WHERE published = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [self._row_event(r) for r in rows]

    def events_between(self, from_seq: int, to_seq: int, limit: int) -> list[StoredEvent]:
        rows = self._conn.execute(
            "SELECT seq, id, type, at, clock_ok, data FROM events "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (from_seq, to_seq, limit),
        )
        return [self._row_event(r) for r in rows]

    def seqs_between(self, from_seq: int, to_seq: int) -> list[int]:
        """Which seqs of the range the outbox still holds (the rest were pruned)."""
        rows = self._conn.execute(
            "SELECT seq FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", (from_seq, to_seq)
        )
        return [int(r[0]) for r in rows]

    def mark_published(self, seqs: Sequence[int]) -> None:
        """The broker confirmed these events (PUBACK); one transaction for the batch."""
        if not seqs:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "UPDATE events SET published = 1 WHERE seq BETWEEN ? AND ?",
                _ranges(sorted(seqs)),
            )
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(f"could not mark events published in {self.path}", err) from err

    def mark_acked(self, epoch: int, seq: int) -> int:
        """Central stored every event up to ``seq``; returns how many were newly acked."""
        if epoch != self.epoch:
            return 0
        try:
            cur = self._conn.execute(
                "UPDATE events SET acked = 1, published = 1 WHERE seq <= ? AND acked = 0", (seq,)
            )
        except sqlite3.Error as err:
            raise _failure(f"could not record central's ack in {self.path}", err) from err
        return cur.rowcount

    def stats(self) -> OutboxStats:
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), "
            "COALESCE(SUM(published = 0), 0), COALESCE(SUM(acked = 0), 0) FROM events"
        ).fetchone()
        oldest = self._conn.execute(
            "SELECT at FROM events WHERE published = 0 ORDER BY seq LIMIT 1"
        ).fetchone()
        return OutboxStats(
            unpublished=int(row[2]),
            unacked=int(row[3]),
            total=int(row[0]),
            bytes=int(row[1]),
            oldest_unpublished_at=None if oldest is None else str(oldest[0]),
            evicted_total=self.counter("evicted_total"),
        )

    def space(self) -> DatabaseSpace:
        """How big the database file is and how much of it is free pages (reused first)."""
        page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        return DatabaseSpace(file_bytes=page * pages, free_bytes=page * free)

    def counter(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def _bump(self, name: str, by: int) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def enforce_retention(
        self, max_bytes: int, max_days: int, now: dt.datetime, *, clock_ok: bool = True
    ) -> Eviction | None:
        """Keep the outbox within its byte and age limits.

        Acknowledged events go first (central has them). Then, if still over a limit,
        unacknowledged events are evicted — lowest class first (chatter, then operational,
        business last), oldest first within a class — down to 90 % of the byte limit. Each
        eviction is counted and reported by an ``outbox.evicted`` event written in the
        same transaction. Returns what was evicted, or None.
        """
        cutoff = _format_at(now - dt.timedelta(days=max_days))
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            eviction = self._prune(cutoff, max_bytes)
            stored = self._report(eviction, now, clock_ok)
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(f"could not prune the outbox in {self.path}", err) from err
        self.last_seq += len(stored)
        return eviction

    def make_room(
        self, needed: int, now: dt.datetime, *, clock_ok: bool = True, business: bool = False
    ) -> Eviction | None:
        """Free about ``needed`` bytes inside the database (a disk that is short of space):
        acknowledged events first, then unacknowledged chatter and operational events,
        oldest first; business events only with ``business`` (writes already fail).
        Evictions are counted and reported as ``outbox.evicted`` like the retention's."""
        top = int(EventClass.BUSINESS) + (1 if business else 0)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            rows = self._conn.execute(
                "SELECT seq, class, size, acked FROM events WHERE acked = 1 OR class < ? "
                "ORDER BY acked DESC, class, seq",
                (top,),
            )
            doomed: list[tuple[int, int, bool]] = []
            freed = 0
            for seq, cls, size, acked in rows:
                if freed >= needed:
                    break
                doomed.append((int(seq), int(cls), bool(acked)))
                freed += int(size)
            self._delete([(s, c) for s, c, _ in doomed])
            if doomed:
                self._conn.execute(
                    "INSERT INTO counters (name, value) VALUES ('pruned_max_seq', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                    (max(s for s, _, _ in doomed),),
                )
            evicted = sorted((s, c) for s, c, acked in doomed if not acked)
            eviction = None
            if evicted:
                by_class: dict[str, int] = {}
                for _, cls in evicted:
                    name = EventClass(cls).name.lower()
                    by_class[name] = by_class.get(name, 0) + 1
                eviction = Eviction(
                    len(evicted), by_class, _ranges([s for s, _ in evicted]), "disk"
                )
            stored = self._report(eviction, now, clock_ok)
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise _failure(f"could not make room in {self.path}", err) from err
        self.last_seq += len(stored)
        return eviction

    def _report(
        self, eviction: Eviction | None, now: dt.datetime, clock_ok: bool
    ) -> list[StoredEvent]:
        """Count an eviction and report it with an ``outbox.evicted`` event."""
        if eviction is None:
            return []
        self._bump("evicted_total", eviction.count)
        report = Event(
            ev.OutboxEvicted(
                count=eviction.count,
                by_class=eviction.by_class,
                ranges=[list(r) for r in eviction.ranges],
                reason=eviction.reason,
                evicted_total=self.counter("evicted_total"),
            ),
            now,
        )
        return self._append([report], clock_ok)

    def _prune(self, cutoff: str, max_bytes: int) -> Eviction | None:
        conn = self._conn
        acked_old = [
            (int(r[0]), 0)
            for r in conn.execute("SELECT seq FROM events WHERE acked = 1 AND at < ?", (cutoff,))
        ]
        self._delete(acked_old)
        evicted = [
            (int(r[0]), int(r[1]))
            for r in conn.execute(
                "SELECT seq, class FROM events WHERE acked = 0 AND at < ? ORDER BY seq", (cutoff,)
            )
        ]
        self._delete(evicted)
        reason = "age"
        total = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0])
        target = int(max_bytes * 0.9)
        if total > max_bytes:
            # Acknowledged first, then unacknowledged by class and age.
            rows = conn.execute(
                "SELECT seq, class, size, acked FROM events ORDER BY acked DESC, class, seq"
            ).fetchall()
            doomed: list[tuple[int, int, bool]] = []
            for seq, cls, size, acked in rows:
                if total <= target:
                    break
                doomed.append((int(seq), int(cls), bool(acked)))
                total -= int(size)
            self._delete([(s, c) for s, c, _ in doomed])
            acked_old.extend((s, c) for s, c, acked in doomed if acked)
            space = [(s, c) for s, c, acked in doomed if not acked]
            if space:
                reason = "age and space" if evicted else "space"
                evicted.extend(space)
        removed = [s for s, _ in acked_old] + [s for s, _ in evicted]
        if removed:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES ('pruned_max_seq', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                (max(removed),),
            )
        if not evicted:
            return None
        by_class: dict[str, int] = {}
        for _, cls in evicted:
            name = EventClass(cls).name.lower()
            by_class[name] = by_class.get(name, 0) + 1
        return Eviction(len(evicted), by_class, _ranges(sorted(s for s, _ in evicted)), reason)

    def _delete(self, rows: list[tuple[int, int]]) -> None:
        self._conn.executemany(
            "DELETE FROM events WHERE seq BETWEEN ? AND ?", _ranges(sorted(s for s, _ in rows))
        )

    # -- commands and settings from central ---------------------------------------------------

    def command_reply(self, cmd_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT reply FROM commands WHERE cmd_id = ?", (cmd_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def setting(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])


def _statements(script: str) -> Iterator[str]:
    for part in script.split(";"):
        if part.strip():
            yield part.strip()


def _read_epoch_file(directory: Path) -> int:
    try:
        return int((directory / EPOCH_FILE).read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return 0


def _write_epoch_file(directory: Path, epoch: int) -> None:
    """Remember the epoch beside the database, so a recreated store never reuses one."""
    target = directory / EPOCH_FILE
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", encoding="ascii") as fh:
        fh.write(f"{epoch}\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] → [(1, 3), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out
