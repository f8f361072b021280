"""The durable store: queue state and the event outbox in one SQLite file.

Every operation's state change and its events are written in one transaction (a
transactional outbox), in WAL mode with ``synchronous=FULL`` so a commit that returned
survives a power cut. Events get a gapless ``seq`` per ``epoch``; the epoch changes only
when the store had to be recreated because the file was damaged. A damaged file is moved
aside, never deleted.

The store is synchronous and not thread-safe: the agent calls it from one writer thread.

The package: :mod:`~agent.runtime.store.core` (errors, typed results, the connection and
the event log's write side), :mod:`~agent.runtime.store.schema` (the file, migrations,
epoch, damage), :mod:`~agent.runtime.store.outbox` (reading the log, confirmations,
retention), :mod:`~agent.runtime.store.documents` (the document spool's rows),
:mod:`~agent.runtime.store.personal` (erasure of sealed personal data),
:mod:`~agent.runtime.store.access` (devices, logins, sessions),
:mod:`~agent.runtime.store.stats` (the per-ticket and duty records reports read),
:mod:`~agent.runtime.store.content` (the hall's own screen content),
:mod:`~agent.runtime.store.cases` (proxy cases),
:mod:`~agent.runtime.store.rows` and :mod:`~agent.runtime.store.quarantine` (rows read as
bytes and decoded defensively; a damaged row is set aside, never raised). Every SQL
statement of the agent is in this package; the rest of the agent calls :class:`Store`'s
methods.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.core.engine import Outcome
from agent.core.model import HallCounters, Ticket
from agent.runtime.store import rows, schema
from agent.runtime.store.access import (
    AccessRecords,
    AccessRows,
    DeviceCredential,
    Removed,
    SessionRecord,
    UserCredential,
)
from agent.runtime.store.cases import CaseRows
from agent.runtime.store.content import ContentImage, ContentItem, ContentRows
from agent.runtime.store.core import (
    Appendable,
    CommandRecord,
    Damage,
    DatabaseSpace,
    Eviction,
    LoadedState,
    OutboxStats,
    QuarantinedRow,
    RawEvent,
    StoredEvent,
    StoreError,
    StoreFull,
    Written,
    _dumps,
    _failure,
    _is_damage,
)
from agent.runtime.store.documents import DocumentRows, SpoolFile
from agent.runtime.store.outbox import Outbox
from agent.runtime.store.personal import Erasure, PersonalRows
from agent.runtime.store.schema import (
    DB_NAME,
    EPOCH_FILE,
    MIGRATIONS,
    CannotOpen,
    CannotRead,
    FileCheck,
    check_file,
)
from agent.runtime.store.stats import StatsRows

__all__ = [
    "DB_NAME",
    "EPOCH_FILE",
    "MIGRATIONS",
    "AccessRecords",
    "CannotOpen",
    "CannotRead",
    "Checkpointer",
    "CommandRecord",
    "ContentImage",
    "ContentItem",
    "Damage",
    "DatabaseSpace",
    "DeviceCredential",
    "Erasure",
    "Eviction",
    "FileCheck",
    "LoadedState",
    "OutboxStats",
    "QuarantinedRow",
    "RawEvent",
    "Removed",
    "SessionRecord",
    "SpoolFile",
    "Store",
    "StoreError",
    "StoreFull",
    "StoredEvent",
    "UserCredential",
    "Written",
    "check_file",
]

log = logging.getLogger(__name__)

_OPEN = "('waiting','called','serving','held')"


class Checkpointer:
    """Checkpoints of the store's WAL on their own connection (``Store.hand_over_checkpoints``);
    use from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = schema.connect_checkpointer(path)

    def checkpoint(self) -> tuple[int, int]:
        """A PASSIVE checkpoint: copies into the database what the WAL holds and no reader
        still needs; returns the frames (pages) the WAL held and how many of them are now
        copied. The writer starts the WAL over at a commit that finds all of them copied."""
        try:
            # fetchall: the statement runs to its end and holds nothing afterwards.
            ((_busy, frames, copied),) = self._conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchall()
        except sqlite3.Error as err:
            raise _failure(f"could not checkpoint {self.path}", err) from err
        return max(0, int(frames)), max(0, int(copied))

    def checkpoint_and_round(self) -> tuple[int, int, int]:
        """:meth:`checkpoint`, and how many times the WAL was started over by then (the
        checkpoint sequence number in its header; -1 if it cannot be read): the pages it
        holds count from 0 again after each."""
        pages, copied = self.checkpoint()
        try:
            with open(self.path.with_name(self.path.name + "-wal"), "rb") as wal:
                header = wal.read(16)
        except OSError:
            return pages, copied, -1
        rounds = int.from_bytes(header[12:16], "big") if len(header) == 16 else -1
        return pages, copied, rounds

    def close(self) -> None:
        self._conn.close()


class Store(Outbox, DocumentRows, PersonalRows, AccessRows, StatsRows, ContentRows, CaseRows):
    """The hall's SQLite file. Open with :meth:`open`; use from one thread only."""

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
            conn = schema.connect(path)
            epoch = schema.prepare(conn, directory)
        except sqlite3.DatabaseError as err:
            if not _is_damage(err):
                # A full disk, a permission or a lock says nothing about the file: it must
                # never be moved aside (that would start a new epoch for nothing).
                raise _failure(f"cannot open the state database {path}", err) from err
            aside = schema.move_aside(path)
            log.error(
                "state database %s was damaged (%s); moved it to %s and started a new "
                "store; central will see a new epoch",
                path,
                err,
                aside,
            )
            conn = schema.connect(path)
            epoch = schema.prepare(conn, directory)
        return cls(conn, path, epoch)

    def hand_over_checkpoints(self) -> Checkpointer:
        """Checkpoints on a connection of their own, off this one's commits: SQLite's
        automatic checkpoint runs inside the COMMIT that crosses its threshold, so that one
        commit (and whoever waits for it) pays two more fsyncs and the copy into the
        database. From now on this connection checkpoints only past
        ``WAL_CHECKPOINT_NET_PAGES`` (a net); :meth:`take_back_checkpoints` undoes it."""
        checkpointer = Checkpointer(self.path)
        self._conn.execute(f"PRAGMA wal_autocheckpoint={schema.WAL_CHECKPOINT_NET_PAGES}")
        return checkpointer

    def take_back_checkpoints(self) -> None:
        """This connection checkpoints again as it opened (``hand_over_checkpoints``)."""
        self._conn.execute(f"PRAGMA wal_autocheckpoint={schema.WAL_CHECKPOINT_PAGES}")

    def reader(self) -> Store:
        """A second, read-only connection to the same file, for reads on their own thread:
        it sees what was committed and never waits behind the writer's fsync. Its
        ``last_seq`` is the one of the moment it opened (ask the hall for the current one);
        damaged rows its reads find are handed to the writer with ``take_damage``."""
        return type(self)(schema.connect_reader(self.path), self.path, self.epoch)

    # -- state ---------------------------------------------------------------------------

    def load(self) -> LoadedState:
        """The state the queue engine needs: hall counters, today's and open tickets.

        A row that does not decode is left out and noted; the hall's writer sets it aside
        (``set_aside``). Damaged hall counters, or counters behind the tickets, are rebuilt
        from the tickets.
        """
        hall, hall_row = self._hall_row()
        if hall is not None and hall_row is not None and self._behind(hall):
            hall = self._rebuilt(hall_row, "its business day is before the saved tickets'")
            hall_row = None
        tickets: list[Ticket] = []
        if hall is not None:
            found = self._raw(
                rows.TICKETS.select(f"day = ? OR status IN {_OPEN}"), (hall.day.isoformat(),)
            )
            tickets = self._decoded(rows.TICKETS, found, rows.ticket)
            if hall_row is not None:
                hall = self._covering(hall, hall_row, tickets)
        windows = self._decoded(rows.WINDOWS, self._raw(rows.WINDOWS.select()), rows.window)
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
        """Write an operation's changed records and its events in one transaction
        (``events``, when given, instead of the outcome's).

        ``command`` records the reply to a central command in the same transaction, so a
        command is never executed twice, also across a crash; ``settings`` are values
        central pushed (config, notices, staff) that change with the events.
        """

        def rows(conn: sqlite3.Connection) -> None:
            self._record_stats(conn, outcome.events if events is None else events)
            if outcome.hall_changed and hall is not None:
                conn.execute(
                    "INSERT INTO hall (id, data) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    (_dumps(hall.to_json()),),
                )
            if outcome.tickets:
                # ``day`` is set apart, only where it changed (an undated ticket carried into a
                # new day): a column in the upsert's SET rewrites its index entry (here the
                # (day, number) index, one more page per commit) even when it is unchanged.
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
                conn.executemany(
                    "UPDATE tickets SET day = ?1 WHERE id = ?2 AND day != ?1",
                    [(t.day.isoformat(), t.id) for t in outcome.tickets.values()],
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

        _, stored = self._transaction(
            rows, outcome.events if events is None else events, clock_ok=clock_ok
        )
        return stored

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

    def ticket_history(self, day: dt.date) -> list[Ticket]:
        found = self._raw(rows.TICKETS.select("day = ? ORDER BY number"), (day.isoformat(),))
        return self._decoded(rows.TICKETS, found, rows.ticket)

    # -- commands and settings from central ---------------------------------------------------

    def command_reply(self, cmd_id: str) -> dict[str, Any] | None:
        """The reply saved for ``cmd_id``; a damaged one comes back as a ``failed`` reply
        saying so (the command is never executed twice) and is set aside."""
        found = self._raw(rows.COMMANDS.select("cmd_id = ?"), (cmd_id,))
        if not found:
            return None
        try:
            return rows.command_reply(cmd_id, rows.COMMANDS.values(found[0]))
        except rows.Damaged as err:
            self._note(rows.COMMANDS.damage(found[0], err.reason, err.replacement))
            return None if err.replacement is None else dict(json.loads(err.replacement))

    def setting(self, key: str) -> Any:
        """A value central pushed (None when absent, or damaged: then it is set aside)."""
        found = self._raw(rows.SETTINGS.select("key = ?"), (key,))
        values = self._decoded(rows.SETTINGS, found, lambda r: rows.setting(key, r))
        return values[0] if values else None
