"""The ingests' warning about ``outbox.ack_refused``: a hall says central's ack was not
applied (malformed, for another epoch, or beyond the last seq it gave out), so it keeps
every event the ack meant to release until central acks correctly.

A central with a wrong mark repeats the same ack, and the hall answers at most once per
reason per minute, so such events come in a steady trickle: each hall is logged once when
its first refusal is stored, then at most once per ``every_s`` with how many more came
(and once more when the ingest stops), never once per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("hallctl")

TYPE = "outbox.ack_refused"
# A hall whose refusals go on is logged again at most this often (seconds).
REPEAT_EVERY_S = 600.0

_CHECK = {
    "malformed": "central's ack sender: an ack is JSON {epoch, seq} with both integers",
    "wrong_epoch": (
        "central's mark for this hall: ack the hall's current epoch (hall_epoch), not an older one"
    ),
    "beyond_last_seq": (
        "central's mark for this hall and epoch: it is past what the hall gave out (a mixed-up"
        " hall id, or the hall's store restored from a backup)"
    ),
}


def describe(data: Mapping[str, Any]) -> tuple[str, str]:
    """(the refusal in words, what to check) from the event's ``data``."""
    reason = str(data.get("reason", "unknown"))
    facts = [
        f"{key} {data[key]}"
        for key in ("epoch", "seq", "hall_epoch", "last_seq", "acked_seq")
        if data.get(key) is not None
    ]
    if data.get("detail"):
        facts.append(f"detail: {data['detail']}")
    words = reason + (f" ({', '.join(facts)})" if facts else "")
    check = _CHECK.get(reason, "central's acks for this hall (docs/central-integration.md)")
    return words, check


@dataclass
class _Hall:
    total: int = 0
    unlogged: int = 0
    logged_at: float = 0.0
    last: Mapping[str, Any] = field(default_factory=dict)


class AckRefusals:
    """Counts each hall's stored ``outbox.ack_refused`` events and warns about them."""

    def __init__(
        self, every_s: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self.halls: dict[str, _Hall] = {}

    @property
    def total(self) -> int:
        return sum(h.total for h in self.halls.values())

    def note(self, hall: str, data: Mapping[str, Any]) -> None:
        """One refusal stored for the first time (a duplicate or replay is not noted)."""
        now = self.clock()
        seen = self.halls.get(hall)
        if seen is None:
            seen = self.halls[hall] = _Hall(total=1, logged_at=now, last=data)
            words, check = describe(data)
            log.warning(
                "%s refused central's ack: %s; the hall keeps the events it meant to release"
                " until central acks correctly. Check %s",
                hall,
                words,
                check,
            )
            return
        seen.total += 1
        seen.unlogged += 1
        seen.last = data
        if now - seen.logged_at >= self.every_s:
            self._repeat(hall, seen, now)

    def due(self) -> None:
        """Log the halls whose refusals went on since their last line, once it is time."""
        now = self.clock()
        for hall, seen in self.halls.items():
            if seen.unlogged and now - seen.logged_at >= self.every_s:
                self._repeat(hall, seen, now)

    def flush(self) -> None:
        """At stop: what was counted but not logged yet."""
        now = self.clock()
        for hall, seen in self.halls.items():
            if seen.unlogged:
                self._repeat(hall, seen, now)

    def _repeat(self, hall: str, seen: _Hall, now: float) -> None:
        words, check = describe(seen.last)
        log.warning(
            "%s refused central's ack again: %d more since the last line, %d in all; the last:"
            " %s. Check %s",
            hall,
            seen.unlogged,
            seen.total,
            words,
            check,
        )
        seen.unlogged = 0
        seen.logged_at = now
