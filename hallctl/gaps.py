"""Sequence tracking for a consumer of hall events: dedupe, high-water mark, gaps to replay.

Pure logic, no I/O and no clock of its own: the caller passes monotonic ``now`` values.
``hallctl ingest`` uses it; central's own consumer can copy the rules (see
docs/central-integration.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# After the first request for a gap, each repeated request waits twice as long, up to
# this: a hall offline for a day is asked about its gap once a minute, not every 2 s.
MAX_REPLAY_INTERVAL_S = 60.0

Range = tuple[int, int]  # inclusive


@dataclass
class Gap:
    """Missing seqs ``start..end``; ``quiet_since`` is when it was last created, shrunk or
    requested, so a replay that is making progress is not asked for again."""

    start: int
    end: int
    quiet_since: float
    requests: int = 0

    def wait(self, timeout: float) -> float:
        return float(
            min(timeout * 2 ** min(self.requests, 16), max(timeout, MAX_REPLAY_INTERVAL_S))
        )


@dataclass
class Stream:
    """One ``(hall, epoch)``: the seqs accounted for and the gaps between them.

    ``top`` is the highest seq accounted for (stored, known gone, or announced by the hall);
    every seq in ``1..top`` is either in a gap or accounted for. Seqs start at 1.
    """

    top: int = 0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def high_water(self) -> int:
        """Every seq up to this one is stored (or known gone): the value to ack."""
        return self.gaps[0].start - 1 if self.gaps else self.top

    def _find(self, seq: int) -> int | None:
        index = bisect.bisect_right(self.gaps, seq, key=lambda g: g.start) - 1
        if index >= 0 and self.gaps[index].start <= seq <= self.gaps[index].end:
            return index
        return None

    def is_missing(self, seq: int) -> bool:
        return seq > self.top or self._find(seq) is not None

    def _open_until(self, last_missing: int, now: float) -> None:
        """Everything after ``top`` up to ``last_missing`` is missing: a new gap at the end."""
        if last_missing > self.top:
            self.gaps.append(Gap(self.top + 1, last_missing, now))
            self.top = last_missing

    def _remove(self, start: int, end: int, now: float) -> int:
        """Take ``start..end`` out of the gaps; returns how many seqs were missing."""
        removed = 0
        kept: list[Gap] = []
        for gap in self.gaps:
            if gap.end < start or gap.start > end:
                kept.append(gap)
                continue
            removed += min(gap.end, end) - max(gap.start, start) + 1
            if gap.start < start:
                kept.append(Gap(gap.start, start - 1, now, gap.requests))
            if gap.end > end:
                kept.append(Gap(end + 1, gap.end, now, gap.requests))
        self.gaps = kept
        return removed

    def add(self, seq: int, now: float) -> bool:
        """Record a received seq; False when it is a duplicate."""
        if seq < 1:
            raise ValueError(f"seq starts at 1, got {seq}")
        if seq > self.top:
            self._open_until(seq - 1, now)
            self.top = seq
            return True
        return self._remove(seq, seq, now) == 1

    def mark_gone(self, start: int, end: int, now: float) -> int:
        """The hall evicted ``start..end`` for good: stop waiting for them.

        Returns how many of them were still missing.
        """
        if start < 1 or end < start:
            raise ValueError(f"bad range {start}..{end}")
        newly = max(0, end - max(start, self.top + 1) + 1)
        removed = self._remove(start, min(end, self.top), now)
        if end > self.top:
            self._open_until(start - 1, now)
            self.top = end
        return removed + newly

    def announce(self, last_seq: int, now: float) -> None:
        """The hall says it has published everything up to ``last_seq``: the tail we never
        received is a gap too (it would otherwise stay invisible until the next event)."""
        self._open_until(last_seq, now)

    def missing(self) -> list[Range]:
        return [(g.start, g.end) for g in self.gaps]

    def due(self, now: float, timeout: float, limit: int | None = None) -> list[Range]:
        """Gaps that stayed open ``timeout`` (then longer, backing off): request them now.

        With ``limit``, only the first ``limit`` seqs of a long gap: the rest stays quiet
        once that part has arrived, and is asked for then.
        """
        ripe = []
        for gap in self.gaps:
            if now - gap.quiet_since >= gap.wait(timeout):
                end = gap.end if limit is None else min(gap.end, gap.start + limit - 1)
                ripe.append((gap.start, end))
                gap.requests += 1
                gap.quiet_since = now
        return ripe


@dataclass(frozen=True)
class Added:
    """What one received envelope did."""

    new: bool  # False: a duplicate of a stored event
    new_epoch: bool  # the first event of an epoch newer than the hall's previous one
    stale_epoch: bool  # from an epoch older than the hall's current one


class Tracker:
    """Every hall's streams; only the current (highest) epoch of a hall is replayed, since a
    hall can only resend from the store it has now."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, int], Stream] = {}
        self.current: dict[str, int] = {}

    def stream(self, hall: str, epoch: int) -> Stream:
        key = (hall, epoch)
        if key not in self.streams:
            self.streams[key] = Stream()
        return self.streams[key]

    def add(self, hall: str, epoch: int, seq: int, now: float) -> Added:
        previous = self.current.get(hall)
        new_epoch = previous is not None and epoch > previous
        if previous is None or epoch > previous:
            self.current[hall] = epoch
        new = self.stream(hall, epoch).add(seq, now)
        stale = previous is not None and epoch < previous
        return Added(new=new, new_epoch=new_epoch, stale_epoch=stale)

    def announce(self, hall: str, epoch: int, last_seq: int, now: float) -> None:
        """The hall published everything up to ``last_seq`` of ``epoch`` (its metrics)."""
        if epoch < self.current.get(hall, 0):
            return
        self.current[hall] = epoch
        self.stream(hall, epoch).announce(last_seq, now)

    def high_water(self, hall: str) -> tuple[int, int] | None:
        """``(epoch, seq)`` to ack for the hall's current epoch, or None if nothing yet."""
        epoch = self.current.get(hall)
        if epoch is None:
            return None
        return epoch, self.streams[(hall, epoch)].high_water

    def due(
        self, now: float, timeout: float, limit: int | None = None
    ) -> Iterator[tuple[str, int, Range]]:
        for hall, epoch in list(self.current.items()):
            for found in self.streams[(hall, epoch)].due(now, timeout, limit):
                yield hall, epoch, found

    def restore(
        self,
        hall: str,
        epoch: int,
        high_water: int,
        stored_above: Iterable[int],
        gone: Iterable[Range],
        now: float,
    ) -> None:
        """Rebuild a stream from what a consumer's database holds."""
        stream = self.stream(hall, epoch)
        stream.top = max(stream.top, high_water)
        for seq in stored_above:
            stream.add(seq, now)
        for start, end in gone:
            stream.mark_gone(start, end, now)
        if epoch > self.current.get(hall, 0):
            self.current[hall] = epoch
