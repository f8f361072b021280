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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.domain import Event, HallCounters, Outcome, Ticket, WindowStatus

log = logging.getLogger(__name__)

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
)


class StoreError(Exception):
    """The store could not do what was asked; the hall's state is unchanged."""


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
        self.last_seq: int = int(row[0])

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
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
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
        except sqlite3.DatabaseError:
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
        self, outcome: Outcome, hall: HallCounters, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Write an operation's changed records and its events in one transaction."""
        stored: list[StoredEvent] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if outcome.hall_changed:
                conn.execute(
                    "INSERT INTO hall (id, data) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    (_dumps(hall.to_json()),),
                )
            if outcome.tickets:
                conn.executemany(
                    "INSERT INTO tickets (id, day, number, service, status, data) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
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
            stored = self._append(outcome.events, clock_ok)
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise StoreError(f"could not save to {self.path}: {err}") from err
        self.last_seq += len(stored)
        return stored

    def append(self, events: Sequence[Event], *, clock_ok: bool = True) -> list[StoredEvent]:
        """Append events that change no queue state (device, config, outbox reports)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            stored = self._append(events, clock_ok)
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise StoreError(f"could not save to {self.path}: {err}") from err
        self.last_seq += len(stored)
        return stored

    def _append(self, events: Sequence[Event], clock_ok: bool) -> list[StoredEvent]:
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
