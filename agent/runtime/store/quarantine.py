"""Damaged rows: read as bytes, skipped, then moved to the ``quarantine`` table.

A read that meets a row :mod:`~agent.runtime.store.rows` cannot decode leaves it out of
what it returns and notes it (:meth:`QuarantineRows._decoded`). The hall's writer then
calls :meth:`QuarantineRows.set_aside` in its turn: in one transaction each noted row is
moved to ``quarantine`` (its table, key, raw bytes, other columns, reason, time) — kept,
never deleted — and reported: a damaged event by an ``outbox.evicted`` event (reason
``damaged``, its seq ranges), any other row by a ``store.quarantined`` event. One ERROR line
per row names its table and key, never its content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from agent.core import events as ev
from agent.core.events import Event
from agent.core.model import HallCounters, Ticket
from agent.runtime.store import rows
from agent.runtime.store.core import (
    Damage,
    Eviction,
    QuarantinedRow,
    StoreCore,
    StoredEvent,
    _class_name,
    _dumps,
    _format_at,
    _ranges,
)
from agent.runtime.store.rows import Damaged, Table

log = logging.getLogger("agent.runtime.store")

T = TypeVar("T")
_DIGITS = "0123456789"


class QuarantineRows(StoreCore):
    """Defensive reads and the quarantine table (a part of ``Store``)."""

    # -- reading rows as bytes --------------------------------------------------------------

    def _raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a SELECT with TEXT read as bytes: bytes that are not UTF-8 never raise here
        (sqlite3's own error would quote them), the row decoders judge them."""
        conn = self._conn
        conn.text_factory = bytes
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.text_factory = str

    def _decoded(
        self,
        table: Table,
        found: list[tuple[Any, ...]],
        decode: Callable[[dict[str, Any]], T],
    ) -> list[T]:
        """The rows that decode; the others are noted for :meth:`set_aside` and left out."""
        out: list[T] = []
        for row in found:
            try:
                out.append(decode(table.values(row)))
            except Damaged as err:
                self._note(table.damage(row, err.reason, err.replacement))
        return out

    def _note(self, damage: Damage) -> None:
        self._damage.setdefault((damage.table, damage.rowid), damage)

    def take_damage(self) -> list[Damage]:
        """The damaged rows this connection's reads found (a reader hands them over to the
        writer, which sets them aside); they are forgotten here."""
        found = list(self._damage.values())
        self._damage.clear()
        return found

    def note_damage(self, found: list[Damage]) -> None:
        """Rows another connection's reads found damaged, to set aside in the next write."""
        for damage in found:
            self._note(damage)

    @property
    def damage_pending(self) -> bool:
        """Whether reads found damaged rows that are not set aside yet."""
        return bool(self._damage)

    def _events_where(
        self, where: str, params: tuple[Any, ...], after: int, limit: int
    ) -> list[StoredEvent]:
        """Up to ``limit`` readable events with seq > ``after`` matching ``where``, in seq
        order; damaged rows are noted and skipped (the next ones fill the batch)."""
        out: list[StoredEvent] = []
        cursor = after
        while len(out) < limit:
            want = limit - len(out)
            found = self._raw(
                rows.EVENTS.select(f"({where}) AND seq > ? ORDER BY seq LIMIT ?"),
                (*params, cursor, want),
            )
            out.extend(self._decoded(rows.EVENTS, found, lambda r: rows.event(self.epoch, r)))
            if len(found) < want:
                break
            cursor = int(found[-1][0])
        return out

    # -- the queue state's rows ---------------------------------------------------------------

    def _hall_row(self) -> tuple[HallCounters | None, tuple[Any, ...] | None]:
        """The hall's counters and their row; damaged ones are rebuilt from the tickets."""
        found = self._raw(rows.HALL.select("id = 1"))
        if not found:
            return None, None
        try:
            return rows.hall(rows.HALL.values(found[0])), found[0]
        except Damaged as err:
            return self._rebuilt(found[0], err.reason), None

    def _rebuilt(self, row: tuple[Any, ...], reason: str) -> HallCounters | None:
        """Counters rebuilt from the tickets in place of a damaged hall row."""
        rebuilt = self._rebuild_hall()
        log.warning(
            "the hall's counters were damaged; rebuilt them from the tickets (business "
            "day %s, next ranks and numbers after the highest saved)",
            "unknown" if rebuilt is None else rebuilt.day,
        )
        replacement = None if rebuilt is None else _dumps(rebuilt.to_json())
        self._note(rows.HALL.damage(row, reason, replacement))
        return rebuilt

    def _behind(self, hall: HallCounters) -> bool:
        """Whether a readable ticket is of a later business day than the hall's counters.

        Bytes changed on disk can leave a hall row that reads well but is behind: such
        counters would close a day again and hand out its numbers again, and its ticket ids
        with them (a new ticket would overwrite a saved one); the row is then rebuilt.
        """
        later = self._raw(rows.TICKETS.select("day > ?"), (hall.day.isoformat(),))
        return bool(self._decoded(rows.TICKETS, later, rows.ticket))

    def _covering(
        self, hall: HallCounters, row: tuple[Any, ...], tickets: list[Ticket]
    ) -> HallCounters:
        """The counters, raised to cover the saved tickets of their day (numbers, checked
        against each ticket's own columns) and every saved rank. Counters behind a readable
        ticket's number are damage: the row is set aside and replaced by the raised
        counters (a rank is only raised: it orders the queue, it names no ticket).

        A ticket whose ``issued_service`` was changed on disk (no column to check it
        against) makes intact counters look behind too: they are then set aside all the
        same, kept whole, and the raised counters only add a name that is never used.
        The number column of a damaged ticket raises the counters too (so its number is
        not handed out again), but proves nothing against them: that raise is kept in
        memory and saved with the next change.
        """
        readable = _highest(dict(hall.counters), hall.day, tickets)
        covered = dataclasses.replace(
            hall,
            counters=self._past_damaged(dict(readable), hall.day, tickets),
            next_rank=max([hall.next_rank, *(t.rank + 1 for t in tickets)]),
        )
        if readable != hall.counters:
            reason = "its counters are behind the saved tickets' numbers"
            self._note(rows.HALL.damage(row, reason, _dumps(covered.to_json())))
        return covered

    def _rebuild_hall(self) -> HallCounters | None:
        """The counters the tickets imply: the newest business day of a readable ticket,
        the next rank, and per service the highest number of that day — of the damaged
        tickets' rows too (by their number column), so that no number is handed out twice.
        """
        tickets = self._decoded(rows.TICKETS, self._raw(rows.TICKETS.select()), rows.ticket)
        if not tickets:
            return None
        today = max(t.day for t in tickets)
        counters = self._past_damaged(_highest({}, today, tickets), today, tickets)
        next_rank = max(t.rank for t in tickets) + 1
        return HallCounters(day=today, next_rank=next_rank, counters=counters)

    def _past_damaged(
        self, counters: dict[str, int], day: dt.date, tickets: list[Ticket]
    ) -> dict[str, int]:
        """``counters`` raised past the numbers of ``day`` that damaged tickets' rows hold
        (noted or already set aside), each counted for the service whose readable tickets
        share its prefix."""
        by_prefix = {_prefix(t.number): t.issued_service for t in tickets}
        damaged = [json.loads(d.fields) for d in self._damage.values() if d.table == "tickets"]
        for (fields,) in self._raw("SELECT fields FROM quarantine WHERE source = 'tickets'"):
            with contextlib.suppress(ValueError):
                damaged.append(json.loads(fields))
        for kept in damaged:
            number = str(kept.get("number"))
            owner = by_prefix.get(_prefix(number))
            if kept.get("day") == day.isoformat() and owner is not None:
                counters[owner] = max(counters.get(owner, 0), _count(number))
        return counters

    # -- setting rows aside -----------------------------------------------------------------

    def set_aside(self, now: dt.datetime, *, clock_ok: bool = True) -> list[StoredEvent]:
        """Move every row reads found damaged to ``quarantine``, with its report, in one
        transaction; returns the events committed (the hall's writer calls this in its turn).

        A row rewritten since it was read (the hall saved it again) is left where it is.
        """
        pending = list(self._damage.values())
        if not pending:
            return []
        at = _format_at(now)
        with self._atomic(f"could not set damaged rows aside in {self.path}"):
            moved = [d for d in pending if self._move(d, at)]
            reports: list[Event] = [
                Event(ev.RowQuarantined(table=d.table, key=d.key, reason=d.reason), now)
                for d in moved
                if d.table != rows.EVENTS.name
            ]
            gone = sorted(
                (d.rowid, _class_name(json.loads(d.fields).get("class")))
                for d in moved
                if d.table == rows.EVENTS.name
            )
            if gone:
                self._conn.execute(
                    "INSERT INTO counters (name, value) VALUES ('pruned_max_seq', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                    (gone[-1][0],),
                )
                by_class: dict[str, int] = {}
                for _, name in gone:
                    by_class[name] = by_class.get(name, 0) + 1
                eviction = Eviction(len(gone), by_class, _ranges([s for s, _ in gone]), "damaged")
                reports.append(self._evicted_event(eviction, now))
            stored = self._append(reports, clock_ok)
        self.last_seq += len(stored)
        self._damage.clear()
        for d in moved:
            log.error(
                "damaged row set aside: table %s, key %s (%s); kept in the quarantine table, "
                "the hall goes on without it",
                d.table,
                d.key,
                d.reason,
            )
        return stored

    def _move(self, damage: Damage, at: str) -> bool:
        table, column = damage.table, damage.column
        if column is None:
            cur = self._conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (damage.rowid,))
        elif damage.replacement is None:
            cur = self._conn.execute(
                f"DELETE FROM {table} WHERE rowid = ? AND CAST({column} AS BLOB) IS ?",
                (damage.rowid, damage.raw),
            )
        else:
            cur = self._conn.execute(
                f"UPDATE {table} SET {column} = ? WHERE rowid = ? AND CAST({column} AS BLOB) IS ?",
                (damage.replacement, damage.rowid, damage.raw),
            )
        if cur.rowcount == 0:
            return False
        self._conn.execute(
            "INSERT INTO quarantine (source, key, raw, fields, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (table, damage.key, damage.raw, damage.fields, damage.reason, at),
        )
        return True

    # -- looking at the quarantine ---------------------------------------------------------------

    def quarantined(self) -> list[QuarantinedRow]:
        """The rows set aside so far, oldest first (without their bytes)."""
        return self._read(
            lambda conn: [
                QuarantinedRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]))
                for r in conn.execute(
                    "SELECT id, source, key, reason, at, length(raw) FROM quarantine ORDER BY id"
                )
            ]
        )

    def quarantined_raw(self, row_id: int) -> bytes | None:
        """The bytes of one row set aside, as they were on disk."""
        found = self._read(
            lambda conn: conn.execute(
                "SELECT raw FROM quarantine WHERE id = ?", (row_id,)
            ).fetchone()
        )
        return None if found is None else bytes(found[0])


def _highest(counters: dict[str, int], day: dt.date, tickets: list[Ticket]) -> dict[str, int]:
    """``counters`` raised to the highest number each service's tickets of ``day`` hold."""
    for t in tickets:
        if t.day == day:
            counters[t.issued_service] = max(counters.get(t.issued_service, 0), _count(t.number))
    return counters


def _prefix(number: str) -> str:
    return "".join(ch for ch in number if ch not in _DIGITS)


def _count(number: str) -> int:
    """A ticket number's count (``A012`` → 12); 0 for what is no ticket number."""
    digits = "".join(ch for ch in number if ch in _DIGITS)
    return int(digits) if 0 < len(digits) <= 12 else 0
