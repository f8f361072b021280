"""Statistics records: one row per ticket's life, one per duty or pause span.

``Store.commit`` calls :meth:`StatsRows._record_stats` inside its transaction with the
events it writes, so the records change with the events and never depend on the outbox
keeping them (retention deletes acknowledged events). The report reads
(:meth:`StatsRows.report_records`) are indexed range scans; a closed day's tallies are kept
in ``stat_days`` (:meth:`StatsRows.keep_day_tallies`), so a long range adds days up. The
figures are computed by :mod:`agent.core.reports`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from agent.core import events as ev
from agent.core.events import Event
from agent.core.reports import BadRating, DutySpan, TicketLife
from agent.runtime.store.core import RawEvent, StoreCore

STATS_MIGRATION = """
CREATE TABLE stat_tickets (
    ticket_id TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    number TEXT NOT NULL,
    issued_service TEXT NOT NULL,
    service TEXT NOT NULL,
    source TEXT NOT NULL,
    priority TEXT NOT NULL,
    issued_at REAL NOT NULL,
    hour INTEGER NOT NULL,
    called_at REAL,
    ended_at REAL,
    outcome TEXT,
    window TEXT,
    staff TEXT,
    service_s REAL,
    transfers INTEGER NOT NULL DEFAULT 0,
    transfer_window TEXT,
    transfer_staff TEXT,
    rating INTEGER,
    rating_window TEXT,
    rating_staff TEXT,
    rating_defaulted INTEGER,
    rating_reasons TEXT,
    rating_comment TEXT,
    rated_at TEXT
);
CREATE INDEX stat_tickets_day ON stat_tickets (day);
CREATE INDEX stat_tickets_bad ON stat_tickets (day) WHERE rating <= 2;
CREATE TABLE stat_duty (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    window TEXT NOT NULL,
    staff TEXT,
    start_at REAL NOT NULL,
    end_at REAL
);
CREATE INDEX stat_duty_start ON stat_duty (start_at);
CREATE INDEX stat_duty_open ON stat_duty (window, kind) WHERE end_at IS NULL;
CREATE TABLE stat_days (
    day TEXT NOT NULL,
    part TEXT NOT NULL,
    tally TEXT NOT NULL,
    PRIMARY KEY (day, part)
);
INSERT INTO stat_tickets (
    ticket_id, day, number, issued_service, service, source, priority, issued_at, hour,
    called_at, ended_at, outcome, window, staff, service_s, transfers, rating,
    rating_window, rating_staff, rating_defaulted, rating_reasons, rating_comment, rated_at
)
SELECT id, day, number,
    COALESCE(json_extract(data, '$.issued_service'), service), service,
    json_extract(data, '$.source'), json_extract(data, '$.priority'),
    (julianday(json_extract(data, '$.issued_at')) - 2440587.5) * 86400.0,
    CAST(substr(json_extract(data, '$.issued_at'), 12, 2) AS INTEGER),
    (julianday(json_extract(data, '$.called_at')) - 2440587.5) * 86400.0,
    (julianday(json_extract(data, '$.ended_at')) - 2440587.5) * 86400.0,
    CASE status WHEN 'finished' THEN 'served' WHEN 'no_show' THEN 'no_show'
        WHEN 'cancelled' THEN 'cancelled' WHEN 'expired' THEN 'expired' END,
    json_extract(data, '$.window'), json_extract(data, '$.staff'),
    CASE WHEN status = 'finished' THEN (julianday(json_extract(data, '$.ended_at'))
        - julianday(COALESCE(json_extract(data, '$.serving_at'),
                             json_extract(data, '$.called_at')))) * 86400.0 END,
    CASE WHEN service != COALESCE(json_extract(data, '$.issued_service'), service)
        THEN 1 ELSE 0 END,
    json_extract(data, '$.rating.level'), json_extract(data, '$.rating.window'),
    json_extract(data, '$.rating.staff'), json_extract(data, '$.rating.defaulted'),
    json_extract(data, '$.rating.reasons'), json_extract(data, '$.rating.comment'),
    json_extract(data, '$.rating.rated_at')
FROM tickets WHERE json_valid(data)
"""

_SERVED = {ev.TicketFinished: "served", ev.TicketNoShow: "no_show"}
_ENDED = {ev.TicketCancelled: "cancelled", ev.TicketExpired: "expired"}


def _ts(at: dt.datetime) -> float:
    return at.timestamp()


class StatsRows(StoreCore):
    """The statistics records (a part of ``Store``)."""

    def _record_stats(self, conn: sqlite3.Connection, events: Sequence[Event | RawEvent]) -> None:
        """Apply the events being committed to the statistics records (same transaction)."""
        for event in events:
            if isinstance(event, Event):
                _apply(conn, event)

    def record_stats(self, events: Sequence[Event]) -> None:
        """Apply events to the statistics records alone, without appending them to the
        outbox (one transaction): a simulated past — the demo's month, the reports'
        benchmark — that central never receives."""
        self._transaction(lambda conn: self._record_stats(conn, events))

    def report_records(
        self, first: dt.date, last: dt.date, start: float, end: float
    ) -> tuple[list[TicketLife], list[DutySpan]]:
        """Every ticket of business days ``first``..``last`` and the duty and pause spans
        that overlap ``start``..``end`` (POSIX seconds)."""

        def read(conn: sqlite3.Connection) -> tuple[list[TicketLife], list[DutySpan]]:
            tickets = list(
                map(
                    TicketLife._make,
                    conn.execute(
                        "SELECT day, hour, issued_service, service, source, priority, "
                        "issued_at, called_at, outcome, window, staff, service_s, transfers, "
                        "transfer_window, transfer_staff, rating, rating_window, rating_staff, "
                        "rating_defaulted FROM stat_tickets WHERE day BETWEEN ? AND ?",
                        (first.isoformat(), last.isoformat()),
                    ),
                )
            )
            spans = list(
                map(
                    DutySpan._make,
                    conn.execute(
                        "SELECT kind, window, staff, start_at, end_at FROM stat_duty "
                        "WHERE start_at < ? AND (end_at IS NULL OR end_at > ?) ORDER BY id",
                        (end, start),
                    ),
                )
            )
            return tickets, spans

        return self._read(read)

    def bad_ratings(self, first: dt.date, last: dt.date) -> list[BadRating]:
        """Every 差评 of business days ``first``..``last``, in the order they were given."""

        def read(conn: sqlite3.Connection) -> list[BadRating]:
            return [
                BadRating(
                    day=r[0],
                    ticket=r[1],
                    ticket_id=r[2],
                    service=r[3],
                    window=r[4],
                    staff=r[5],
                    level=int(r[6]),
                    reasons=_reasons(r[7]),
                    comment=r[8] or "",
                    rated_at=r[9],
                )
                for r in conn.execute(
                    "SELECT day, number, ticket_id, issued_service, rating_window, "
                    "rating_staff, rating, rating_reasons, rating_comment, rated_at "
                    "FROM stat_tickets WHERE rating <= 2 AND day BETWEEN ? AND ? "
                    "ORDER BY day, rated_at, number",
                    (first.isoformat(), last.isoformat()),
                )
            ]

        return self._read(read)

    def day_tallies(
        self, first: dt.date, last: dt.date, parts: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The kept tallies of closed business days in ``first``..``last``: by day, the
        ``parts`` asked for (``hall`` and views). A day missing a part, or with a damaged
        one, is left out: the report tallies that day again."""

        def read(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            marks = ",".join("?" * len(parts))
            for day, part, text in conn.execute(
                f"SELECT day, part, tally FROM stat_days WHERE day BETWEEN ? AND ? "
                f"AND part IN ({marks})",
                (first.isoformat(), last.isoformat(), *parts),
            ):
                try:
                    tally = json.loads(text)
                except (ValueError, TypeError):
                    continue
                if isinstance(tally, dict):
                    found.setdefault(str(day), {})[str(part)] = tally
            return {day: kept for day, kept in found.items() if len(kept) == len(parts)}

        return self._read(read)

    def keep_day_tallies(self, tallies: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep closed days' tallies (``agent.core.reports.day_tally``: by day, each part),
        replacing any."""

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO stat_days (day, part, tally) VALUES (?, ?, ?) "
                "ON CONFLICT (day, part) DO UPDATE SET tally = excluded.tally",
                [
                    (day, part, json.dumps(tally, separators=(",", ":")))
                    for day, parts in tallies.items()
                    for part, tally in parts.items()
                ],
            )

        self._transaction(write)


def _reasons(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        found = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(r) for r in found] if isinstance(found, list) else [str(found)]


def _apply(conn: sqlite3.Connection, event: Event) -> None:
    at = _ts(event.at)
    payload = event.payload
    match payload:
        case ev.TicketIssued():
            conn.execute(
                "INSERT INTO stat_tickets (ticket_id, day, number, issued_service, service, "
                "source, priority, issued_at, hour) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (ticket_id) DO NOTHING",
                (
                    payload.ticket_id,
                    payload.day,
                    payload.ticket,
                    payload.service,
                    payload.service,
                    payload.source.value,
                    payload.priority.value,
                    at,
                    event.at.hour,
                ),
            )
        case ev.TicketCalled() | ev.TicketReturned():
            conn.execute(
                "UPDATE stat_tickets SET called_at = COALESCE(called_at, ?), window = ?, "
                "staff = ?, service = ?, day = ?, outcome = NULL WHERE ticket_id = ?",
                (
                    at,
                    payload.window,
                    payload.staff,
                    payload.service,
                    payload.day,
                    payload.ticket_id,
                ),
            )
        case ev.TicketFinished():
            conn.execute(
                "UPDATE stat_tickets SET outcome = 'served', ended_at = ?, window = ?, "
                "staff = ?, service = ?, service_s = ? WHERE ticket_id = ?",
                (
                    at,
                    payload.window,
                    payload.staff,
                    payload.service,
                    payload.minutes * 60,
                    payload.ticket_id,
                ),
            )
        case ev.TicketNoShow():
            conn.execute(
                "UPDATE stat_tickets SET outcome = 'no_show', ended_at = ?, window = ?, "
                "staff = ? WHERE ticket_id = ?",
                (at, payload.window, payload.staff, payload.ticket_id),
            )
        case ev.TicketCancelled() | ev.TicketExpired():
            conn.execute(
                "UPDATE stat_tickets SET outcome = ?, ended_at = ? WHERE ticket_id = ?",
                (_ENDED[type(payload)], at, payload.ticket_id),
            )
        case ev.TicketTransferred():
            # The right-hand sides read the row as it was: who had it before the transfer.
            # ``from_staff``: who pressed transfer (an older event: who had it).
            conn.execute(
                "UPDATE stat_tickets SET transfers = transfers + 1, transfer_window = ?, "
                "transfer_staff = COALESCE(?, staff), window = NULL, staff = NULL, "
                "service = ? WHERE ticket_id = ?",
                (payload.from_window, payload.from_staff, payload.service, payload.ticket_id),
            )
        case ev.RatingSubmitted():
            conn.execute(
                "UPDATE stat_tickets SET rating = ?, rating_window = ?, rating_staff = ?, "
                "rating_defaulted = ?, rating_reasons = ?, rating_comment = ?, rated_at = ? "
                "WHERE ticket_id = ?",
                (
                    payload.level,
                    payload.window,
                    payload.staff,
                    int(payload.defaulted),
                    json.dumps(payload.reasons, ensure_ascii=False),
                    payload.comment,
                    event.at.isoformat(),
                    payload.ticket_id,
                ),
            )
        case ev.StaffSignedIn():
            # Up to two staff at one window: each has their own span.
            _close(conn, at, payload.window, ("duty",), payload.staff)
            conn.execute(
                "INSERT INTO stat_duty (kind, window, staff, start_at) VALUES ('duty', ?, ?, ?)",
                (payload.window, payload.staff, at),
            )
        case ev.StaffSignedOut():
            if payload.remaining:
                _close(conn, at, payload.window, ("duty",), payload.staff)
            else:
                _close(conn, at, payload.window, ("duty", "paused"))
        case ev.WindowPaused():
            _close(conn, at, payload.window, ("paused",))
            conn.execute(
                "INSERT INTO stat_duty (kind, window, staff, start_at) VALUES ('paused', ?, "
                "COALESCE(?, (SELECT staff FROM stat_duty WHERE window = ? AND kind = 'duty' "
                "AND end_at IS NULL ORDER BY id LIMIT 1)), ?)",
                (payload.window, payload.staff, payload.window, at),
            )
        case ev.WindowResumed() | ev.WindowClosed():
            _close(conn, at, payload.window, ("paused",))
        case _:
            pass


def _close(
    conn: sqlite3.Connection,
    at: float,
    window: str,
    kinds: tuple[str, ...],
    staff: str | None = None,
) -> None:
    """End the open spans of these kinds at the window (only ``staff``'s, when named)."""
    marks = ",".join("?" * len(kinds))
    who = "" if staff is None else " AND staff = ?"
    conn.execute(
        f"UPDATE stat_duty SET end_at = MAX(start_at, ?) WHERE window = ? "
        f"AND end_at IS NULL AND kind IN ({marks}){who}",
        (at, window, *kinds, *(() if staff is None else (staff,))),
    )
