"""The proxy cases' rows (``cases``): one per case, written with its ``case.*`` events in
one transaction (:mod:`agent.features.cases` builds both).

``data`` is the case as :class:`agent.core.cases.Case` keeps it (the citizen masked);
``person`` is the citizen's personal data sealed with the hall's key
(:mod:`agent.runtime.personal`), set to NULL when the case closes.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from agent.runtime.store.core import Appendable, StoreCore, StoredEvent

CASES_MIGRATION = """
CREATE TABLE cases (
    number TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    window TEXT NOT NULL,
    status TEXT NOT NULL,
    promised TEXT NOT NULL,
    warned TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL,
    person TEXT
);
CREATE INDEX cases_day ON cases (day);
CREATE INDEX cases_open ON cases (promised) WHERE status IN ('received', 'processing');
CREATE INDEX cases_watch ON cases (promised)
    WHERE status IN ('received', 'processing') AND warned != 'overdue';
CREATE INDEX cases_window ON cases (window, status);
"""

_OPEN = "('received', 'processing')"
# A list of cases is bounded: a hall takes a few a day.
MAX_LISTED = 1000


class CaseRows(StoreCore):
    """The proxy cases' table (a part of ``Store``)."""

    def case_counter(self, prefix: str, day: dt.date) -> int:
        """How many cases numbered with ``prefix`` were taken on ``day`` (the next is +1)."""
        like = f"{prefix}{day:%Y%m%d}%"

        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM cases WHERE day = ? AND number LIKE ?",
                (day.isoformat(), like),
            ).fetchone()
            return int(row[0])

        return self._read(count)

    def save_case(
        self,
        data: dict[str, Any],
        events: Sequence[Appendable],
        *,
        person: str | None = None,
        erase_person: bool = False,
        clock_ok: bool = True,
    ) -> list[StoredEvent]:
        """Insert or update a case (its ``data`` as ``Case.to_json``) with its events, in one
        transaction. ``person``: the sealed personal data of a new case; ``erase_person``:
        drop it (the case closed)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cases (number, day, window, status, promised, warned, data, person) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (number) DO UPDATE SET "
                "window = excluded.window, status = excluded.status, "
                "promised = excluded.promised, warned = excluded.warned, data = excluded.data",
                (
                    data["number"],
                    data["day"],
                    data["window"],
                    data["status"],
                    data["promised"],
                    data.get("warned", ""),
                    json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                    person,
                ),
            )
            if erase_person:
                conn.execute("UPDATE cases SET person = NULL WHERE number = ?", (data["number"],))

        _, stored = self._transaction(write, events, clock_ok=clock_ok)
        return stored

    def case_record(self, number: str) -> tuple[dict[str, Any], str | None] | None:
        """A case's data and its sealed personal data (None once erased)."""

        def select(conn: sqlite3.Connection) -> tuple[dict[str, Any], str | None] | None:
            row = conn.execute(
                "SELECT data, person FROM cases WHERE number = ?", (number,)
            ).fetchone()
            return None if row is None else (dict(json.loads(row[0])), row[1])

        return self._read(select)

    def case_list(
        self,
        *,
        window: str | None = None,
        statuses: Sequence[str] | None = None,
        promised_until: dt.date | None = None,
        limit: int = MAX_LISTED,
    ) -> list[dict[str, Any]]:
        """Cases, soonest promised date first: of one window, in some statuses, promised
        on or before a date."""
        where: list[str] = []
        args: list[Any] = []
        if window is not None:
            where.append("window = ?")
            args.append(window)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        if promised_until is not None:
            where.append("promised <= ?")
            args.append(promised_until.isoformat())
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def select(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT data FROM cases {clause} ORDER BY promised, number LIMIT ?",
                (*args, min(limit, MAX_LISTED)),
            )
            return [dict(json.loads(r[0])) for r in rows]

        return self._read(select)

    def deadline_candidates(self, today: dt.date, near_until: dt.date) -> list[dict[str, Any]]:
        """The open cases the deadline watcher must look at on ``today``: not yet warned and
        promised on or before ``near_until``, or not yet reported overdue and promised
        before ``today`` (an index range, however many cases are open)."""

        def select(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT data FROM cases WHERE status IN {_OPEN} AND warned != 'overdue' "
                "AND promised <= ? AND (warned = '' OR promised < ?) ORDER BY promised",
                (max(near_until, today).isoformat(), today.isoformat()),
            )
            return [dict(json.loads(r[0])) for r in rows]

        return self._read(select)
