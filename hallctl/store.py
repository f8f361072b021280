"""``hallctl ingest``'s SQLite file: central's copy of the halls' events.

Deduplicated on ``(hall, epoch, seq)``; the ranges a hall reported evicted (``gone``) and
each stream's high-water mark are kept so a restarted ingest knows which gaps are still
open. Every SQL statement of hallctl is here.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from agent.central.contract import EventEnvelope
from hallctl.gaps import Tracker

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    hall TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    clock_ok INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (hall, epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gone (
    hall TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    start_seq INTEGER NOT NULL,
    end_seq INTEGER NOT NULL,
    noted_at TEXT NOT NULL,
    PRIMARY KEY (hall, epoch, start_seq, end_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    hall TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    high_water INTEGER NOT NULL,
    PRIMARY KEY (hall, epoch)
) WITHOUT ROWID;
"""


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class EventStore:
    """Central's copy of the halls' events; ``commit`` is durable (WAL, synchronous=FULL)
    because an ack promises the hall it may forget what was acked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def store(self, event: EventEnvelope) -> bool:
        """False when ``(hall, epoch, seq)`` is already stored."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO events"
            " (hall, epoch, seq, id, type, at, clock_ok, envelope, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.hall,
                event.epoch,
                event.seq,
                event.id,
                event.type,
                event.at,
                int(event.clock_ok),
                event.model_dump_json(),
                _utc_now(),
            ),
        )
        return cursor.rowcount == 1

    def stored_id(self, hall: str, epoch: int, seq: int) -> str | None:
        row = self.db.execute(
            "SELECT id FROM events WHERE hall = ? AND epoch = ? AND seq = ?", (hall, epoch, seq)
        ).fetchone()
        return None if row is None else str(row[0])

    def mark_gone(self, hall: str, epoch: int, start: int, end: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO gone (hall, epoch, start_seq, end_seq, noted_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (hall, epoch, start, end, _utc_now()),
        )

    def set_high_water(self, hall: str, epoch: int, high_water: int) -> None:
        self.db.execute(
            "INSERT INTO streams (hall, epoch, high_water) VALUES (?, ?, ?)"
            " ON CONFLICT (hall, epoch) DO UPDATE SET high_water = excluded.high_water",
            (hall, epoch, high_water),
        )

    def commit(self) -> None:
        self.db.commit()

    def restore(self, tracker: Tracker, now: float) -> None:
        """Rebuild the tracker from the database (after a restart of ingest)."""
        streams = self.db.execute(
            "SELECT hall, epoch, high_water FROM streams"
            " UNION SELECT DISTINCT hall, epoch, 0 FROM events"
            " WHERE (hall, epoch) NOT IN (SELECT hall, epoch FROM streams)"
        ).fetchall()
        for hall, epoch, high_water in streams:
            above = self.db.execute(
                "SELECT seq FROM events WHERE hall = ? AND epoch = ? AND seq > ? ORDER BY seq",
                (hall, epoch, high_water),
            )
            gone = self.db.execute(
                "SELECT start_seq, end_seq FROM gone WHERE hall = ? AND epoch = ?",
                (hall, epoch),
            )
            tracker.restore(
                hall, epoch, high_water, (s for (s,) in above), list(gone.fetchall()), now
            )

    def close(self) -> None:
        self.db.close()
