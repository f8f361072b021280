"""The outbox: reading the event log, the broker's and central's confirmations, retention.

Events are written by :meth:`StoreCore._append` inside the transaction of whatever
produced them; this part reads them back for the link and the API, marks them published
(PUBACK) and acknowledged (central's ack), and keeps the table within its limits —
acknowledged events first, then by class and age, each eviction reported by an
``outbox.evicted`` event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from agent.core.events import EventClass
from agent.runtime.store.core import (
    DatabaseSpace,
    Eviction,
    OutboxStats,
    StoredEvent,
    _class_name,
    _format_at,
    _ranges,
)
from agent.runtime.store.quarantine import QuarantineRows


class Outbox(QuarantineRows):
    """The event log's read side and its retention (a part of ``Store``)."""

    # -- reading the log -------------------------------------------------------------------

    def events(self, from_seq: int = 1, limit: int = 1000) -> list[StoredEvent]:
        """Up to ``limit`` events from ``from_seq`` on; a damaged row is left out (and set
        aside by the hall's writer)."""
        return self._events_where("1", (), from_seq - 1, limit)

    def iter_events(self, batch: int = 1000) -> Iterator[StoredEvent]:
        seq = 1
        while True:
            chunk = self.events(seq, batch)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq + 1

    def outbox_depth(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM events WHERE published = 0").fetchone()
        return int(row[0])

    # -- the outbox ------------------------------------------------------------------------

    def unpublished(self, after_seq: int, limit: int) -> list[StoredEvent]:
        """Events not yet confirmed by the broker, in seq order, after ``after_seq``."""
        return self._events_where("published = 0", (), after_seq, limit)

    def events_between(self, from_seq: int, to_seq: int, limit: int) -> list[StoredEvent]:
        return self._events_where("seq <= ?", (to_seq,), from_seq - 1, limit)

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
        with self._atomic(f"could not mark events published in {self.path}"):
            self._conn.executemany(
                "UPDATE events SET published = 1 WHERE seq BETWEEN ? AND ?",
                _ranges(sorted(seqs)),
            )

    def mark_acked(self, epoch: int, seq: int) -> int:
        """Central stored every event up to ``seq``; returns how many were newly acked.

        An ack beyond the last seq this store ever gave out is capped there (the link refuses
        such an ack before it gets here; this is the store's own guard): central cannot
        have stored what does not exist yet, and seqs given out later are not acked by it.
        """
        if epoch != self.epoch:
            return 0
        seq = min(seq, self.last_seq)
        with self._atomic(f"could not record central's ack in {self.path}"):
            cur = self._conn.execute(
                "UPDATE events SET acked = 1, published = 1 WHERE seq <= ? AND acked = 0", (seq,)
            )
        return cur.rowcount

    def stats(self) -> OutboxStats:
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), "
            "COALESCE(SUM(published = 0), 0), COALESCE(SUM(acked = 0), 0) FROM events"
        ).fetchone()
        oldest = self._events_where("published = 0", (), 0, 1)
        return OutboxStats(
            unpublished=int(row[2]),
            unacked=int(row[3]),
            total=int(row[0]),
            bytes=int(row[1]),
            oldest_unpublished_at=oldest[0].at if oldest else None,
            evicted_total=self.counter("evicted_total"),
        )

    def space(self) -> DatabaseSpace:
        """How big the database file is and how much of it is free pages (reused first)."""
        page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        return DatabaseSpace(file_bytes=page * pages, free_bytes=page * free)

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
        with self._atomic(f"could not prune the outbox in {self.path}"):
            eviction = self._prune(cutoff, max_bytes)
            stored = self._report(eviction, now, clock_ok)
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
        with self._atomic(f"could not make room in {self.path}"):
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
                    name = _class_name(cls)
                    by_class[name] = by_class.get(name, 0) + 1
                eviction = Eviction(
                    len(evicted), by_class, _ranges([s for s, _ in evicted]), "disk"
                )
            stored = self._report(eviction, now, clock_ok)
        self.last_seq += len(stored)
        return eviction

    def _report(
        self, eviction: Eviction | None, now: dt.datetime, clock_ok: bool
    ) -> list[StoredEvent]:
        """Count an eviction and report it with an ``outbox.evicted`` event."""
        if eviction is None:
            return []
        return self._append([self._evicted_event(eviction, now)], clock_ok)

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
            name = _class_name(cls)
            by_class[name] = by_class.get(name, 0) + 1
        return Eviction(len(evicted), by_class, _ranges(sorted(s for s, _ in evicted)), reason)

    def _delete(self, rows: list[tuple[int, int]]) -> None:
        self._conn.executemany(
            "DELETE FROM events WHERE seq BETWEEN ? AND ?", _ranges(sorted(s for s, _ in rows))
        )
