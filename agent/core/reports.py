"""The hall's statistics from the per-ticket and duty records: pure computation, no I/O.

The store keeps one :class:`TicketLife` per ticket and one :class:`DutySpan` per staff
member's time at a window or a window's pause (``agent/runtime/store/stats.py``, written
with the events). :func:`summarise` turns the records of a range of business days into
figures for the hall and for each group of a view:

- ``service``: every ticket under the service it was *taken for* (a transferred ticket
  stays there; 转办 counts it);
- ``window`` / ``staff``: the tickets that *ended* at that window / with that staff member
  (called, served, no-show; their waiting and service time), the tickets they transferred
  away, the ratings given for them, and their on-duty and paused time. No ticket is
  issued at a window, so ``issued`` is None there;
- ``hour``: every ticket under the hour of the day it was taken (hall time).

Every figure of a view sums to the hall's over its groups, except for tickets that have
no group in it (a ticket that expired while waiting belongs to no window).
docs/reports.md says what each figure means in the hall manager's words.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

JSON = dict[str, Any]

View = Literal["service", "window", "staff", "hour"]
VIEWS: tuple[View, ...] = ("service", "window", "staff", "hour")

# 好评: 非常满意, 满意, 基本满意; 差评: 不满意, 非常不满意 (GB/T 39734-2020).
GOOD_LEVELS = (5, 4, 3)
BAD_LEVELS = (2, 1)
LEVELS = (5, 4, 3, 2, 1)

# How a ticket's life ended (None: still open).
SERVED, NO_SHOW, CANCELLED, EXPIRED = "served", "no_show", "cancelled", "expired"


class TicketLife(NamedTuple):
    """One ticket's life as the store keeps it. Times are POSIX seconds."""

    day: str
    hour: int
    issued_service: str
    service: str
    source: str
    priority: str
    issued_at: float
    called_at: float | None
    outcome: str | None
    window: str | None
    staff: str | None
    service_s: float | None
    transfers: int
    transfer_window: str | None
    transfer_staff: str | None
    rating: int | None
    rating_window: str | None
    rating_staff: str | None
    rating_defaulted: int | None


class DutySpan(NamedTuple):
    """A staff member signed in at a window (``duty``) or a window paused (``paused``),
    from ``start_at`` to ``end_at`` (None: still going). POSIX seconds."""

    kind: str
    window: str
    staff: str | None
    start_at: float
    end_at: float | None


class BadRating(NamedTuple):
    """A 差评 with everything the manager follows it up with."""

    day: str
    ticket: str
    ticket_id: str
    service: str
    window: str | None
    staff: str | None
    level: int
    reasons: list[str]
    comment: str
    rated_at: str | None


# -- small pure figures -------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, linearly interpolated between the two
    nearest ranks (what spreadsheets' PERCENTILE.INC gives); None without values."""
    if not ordered:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: Iterable[float]) -> JSON:
    """count, mean, median, p90 and max of durations in minutes (2 decimals)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "median": None, "p90": None, "max": None}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "count": len(ordered),
        "mean": r(math.fsum(ordered) / len(ordered)),
        "median": r(percentile(ordered, 0.5)),
        "p90": r(percentile(ordered, 0.9)),
        "max": r(ordered[-1]),
    }


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` as a fraction with 4 decimals; None when ``whole`` is 0."""
    return None if whole == 0 else round(part / whole, 4)


def rating_figures(levels: Mapping[int, int], defaulted: int, served: int) -> JSON:
    """好差评: count per level, 好评 (5, 4, 3) and 差评 (2, 1) with their rates over all
    ratings, and the share of served citizens who rated themselves (not a timeout's
    default)."""
    count = sum(levels.get(lv, 0) for lv in LEVELS)
    good = sum(levels.get(lv, 0) for lv in GOOD_LEVELS)
    bad = sum(levels.get(lv, 0) for lv in BAD_LEVELS)
    rated = count - defaulted
    return {
        "count": count,
        "levels": {str(lv): levels.get(lv, 0) for lv in LEVELS},
        "good": good,
        "bad": bad,
        "good_rate": rate(good, count),
        "bad_rate": rate(bad, count),
        "rated": rated,
        "defaulted": defaulted,
        "rated_share": rate(rated, served),
    }


# -- accumulating ---------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Tally:
    issued: int = 0
    by_source: Counter[str] = dataclasses.field(default_factory=Counter)
    by_priority: Counter[str] = dataclasses.field(default_factory=Counter)
    outcomes: Counter[str | None] = dataclasses.field(default_factory=Counter)
    transferred: int = 0
    waits: list[float] = dataclasses.field(default_factory=list)  # seconds
    services: list[float] = dataclasses.field(default_factory=list)  # seconds
    levels: Counter[int] = dataclasses.field(default_factory=Counter)
    defaulted: int = 0
    duty_s: float = 0.0
    paused_s: float = 0.0

    def to_json(self) -> JSON:
        """What a closed day's tally keeps (``stat_days``): counts and the raw durations."""
        return {
            "issued": self.issued,
            "by_source": dict(self.by_source),
            "by_priority": dict(self.by_priority),
            "outcomes": {_OPEN if k is None else k: v for k, v in self.outcomes.items()},
            "transferred": self.transferred,
            "waits": self.waits,
            "services": self.services,
            "levels": {str(k): v for k, v in self.levels.items()},
            "defaulted": self.defaulted,
            "duty_s": self.duty_s,
            "paused_s": self.paused_s,
        }

    def add(self, saved: JSON) -> None:
        """Add a tally kept by :meth:`to_json` (another day's, of the same group)."""
        self.issued += saved["issued"]
        self.by_source.update(saved["by_source"])
        self.by_priority.update(saved["by_priority"])
        for key, count in saved["outcomes"].items():
            self.outcomes[None if key == _OPEN else key] += count
        self.transferred += saved["transferred"]
        self.waits.extend(saved["waits"])
        self.services.extend(saved["services"])
        for level, count in saved["levels"].items():
            self.levels[int(level)] += count
        self.defaulted += saved["defaulted"]
        self.duty_s += saved["duty_s"]
        self.paused_s += saved["paused_s"]

    def figures(self, *, issued: bool, duty: bool) -> JSON:
        served = self.outcomes[SERVED]
        return {
            "issued": self.issued if issued else None,
            "issued_by_source": dict(sorted(self.by_source.items())) if issued else None,
            "issued_by_priority": dict(sorted(self.by_priority.items())) if issued else None,
            "served": served,
            "no_show": self.outcomes[NO_SHOW],
            "transferred": self.transferred,
            "cancelled": self.outcomes[CANCELLED],
            "expired": self.outcomes[EXPIRED],
            "open": self.outcomes[None],
            "wait_minutes": spread(s / 60 for s in self.waits),
            "service_minutes": spread(s / 60 for s in self.services),
            "ratings": rating_figures(self.levels, self.defaulted, served),
            "on_duty_minutes": round(self.duty_s / 60, 2) if duty else None,
            "paused_minutes": round(self.paused_s / 60, 2) if duty else None,
        }


def _clipped(span: DutySpan, start: float, end: float) -> float:
    """Seconds of ``span`` inside [start, end) (an open span runs to ``end``)."""
    finish = end if span.end_at is None else min(span.end_at, end)
    return max(0.0, finish - max(span.start_at, start))


_F = TicketLife._fields
_HOUR = _F.index("hour")
# Per view: the TicketLife fields that give a ticket's group, the group of its transfer and
# the group of its rating (None: the hall, one group).
_COLUMNS: dict[str, tuple[int, int, int]] = {
    "service": (_F.index("issued_service"),) * 3,
    "window": (_F.index("window"), _F.index("transfer_window"), _F.index("rating_window")),
    "staff": (_F.index("staff"), _F.index("transfer_staff"), _F.index("rating_staff")),
    "hour": (_HOUR,) * 3,
}
_HALL_KEY = "hall"
_OPEN = "open"


def _tally(
    tickets: Sequence[TicketLife], columns: tuple[int, int, int] | None, issued: bool
) -> dict[Any, _Tally]:
    """One pass over the tickets: each one's figures under its group(s). Written for speed
    (a year of a busy hall is 110 000 tickets): plain indexing, no calls per ticket."""
    tallies: dict[Any, _Tally] = {}
    hall = tallies[_HALL_KEY] = _Tally()
    own: _Tally | None
    moved: _Tally | None
    rated: _Tally | None
    for t in tickets:
        if columns is None:
            own = rated = moved = hall
        else:
            k = t[columns[0]]
            own = None if k is None else tallies.get(k)
            if own is None and k is not None:
                own = tallies[k] = _Tally()
            moved = rated = own
            if columns[1] != columns[0] and t.transfers:
                k = t[columns[1]]
                moved = None if k is None else tallies.get(k)
                if moved is None and k is not None:
                    moved = tallies[k] = _Tally()
            if columns[2] != columns[0] and t.rating is not None:
                k = t[columns[2]]
                rated = None if k is None else tallies.get(k)
                if rated is None and k is not None:
                    rated = tallies[k] = _Tally()
        if own is not None:
            if issued:
                own.issued += 1
                own.by_source[t.source] += 1
                own.by_priority[t.priority] += 1
            outcome = t.outcome
            own.outcomes[outcome] += 1
            # Tenths of a second: a kept day's JSON stays short, fresh and kept agree.
            called = t.called_at
            if called is not None:
                own.waits.append(round(max(0.0, called - t.issued_at), 1))
            if outcome == SERVED and t.service_s is not None:
                own.services.append(round(t.service_s, 1))
        if moved is not None and t.transfers:
            moved.transferred += 1
        level = t.rating
        if rated is not None and level is not None:
            rated.levels[level] += 1
            if t.rating_defaulted:
                rated.defaulted += 1
    if columns is not None:
        del tallies[_HALL_KEY]
    return tallies


def _duty(
    tallies: dict[Any, _Tally],
    spans: Sequence[DutySpan],
    view: str | None,
    start: float,
    end: float,
) -> None:
    for span in spans:
        key = _HALL_KEY if view is None else span.window if view == "window" else span.staff
        if key is None:
            continue
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        seconds = _clipped(span, start, end)
        if span.kind == "duty":
            tally.duty_s += seconds
        else:
            tally.paused_s += seconds


def day_tally(
    tickets: Sequence[TicketLife], spans: Sequence[DutySpan], start: float, end: float
) -> JSON:
    """One business day's tallies for the hall and every view, as JSON: what the store
    keeps for a closed day (``stat_days``) so a long range adds days up instead of going
    through every ticket again. ``start``..``end``: the day's span for duty time."""
    out: JSON = {}
    whole = _tally(tickets, None, True)
    _duty(whole, spans, None, start, end)
    out["hall"] = {_HALL_KEY: whole[_HALL_KEY].to_json()}
    for view in VIEWS:
        tallies = _tally(tickets, _COLUMNS[view], view in ("service", "hour"))
        if view in ("window", "staff"):
            _duty(tallies, spans, view, start, end)
        out[view] = {
            (f"{key:02d}" if view == "hour" else str(key)): tally.to_json()
            for key, tally in tallies.items()
        }
    return out


def combine(
    days: Iterable[JSON],
    *,
    first: dt.date,
    last: dt.date,
    views: Iterable[View] = VIEWS,
    names: Mapping[View, Mapping[str, str]] | None = None,
    bad: Sequence[BadRating] = (),
) -> JSON:
    """The report of business days ``first``..``last`` from their :func:`day_tally`
    tallies: the hall's figures, each asked view's groups (ordered by key; ``names`` gives
    each key its name) and every 差评."""
    if last < first:
        raise ValueError(f"the range ends ({last}) before it starts ({first}); swap them")
    wanted = list(views)
    for view in wanted:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; the views are {', '.join(VIEWS)}")
    names = names or {}
    merged: dict[str, dict[str, _Tally]] = {"hall": {}, **{v: {} for v in wanted}}
    for day in days:
        for part, groups in merged.items():
            for key, saved in day.get(part, {}).items():
                tally = groups.get(key)
                if tally is None:
                    tally = groups[key] = _Tally()
                tally.add(saved)
    hall = merged["hall"].get(_HALL_KEY) or _Tally()
    out: JSON = {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": (last - first).days + 1,
        "hall": hall.figures(issued=True, duty=True),
        "views": {},
        "bad_ratings": [_bad_json(b, names) for b in bad],
    }
    for view in wanted:
        issued = view in ("service", "hour")
        duty = view in ("window", "staff")
        named = names.get(view, {})
        groups = merged[view]
        out["views"][view] = [
            {
                "key": key,
                "name": named.get(key, key),
                **groups[key].figures(issued=issued, duty=duty),
            }
            for key in sorted(groups)
        ]
    return out


def summarise(
    tickets: Sequence[TicketLife],
    spans: Sequence[DutySpan],
    *,
    first: dt.date,
    last: dt.date,
    start: float,
    end: float,
    views: Iterable[View] = VIEWS,
    names: Mapping[View, Mapping[str, str]] | None = None,
    bad: Sequence[BadRating] = (),
) -> JSON:
    """The report of business days ``first``..``last`` straight from their records
    (``start``..``end``, POSIX seconds: the span duty and pause time is counted in)."""
    tally = day_tally(tickets, spans, start, end)
    return combine([tally], first=first, last=last, views=views, names=names, bad=bad)


def _bad_json(b: BadRating, names: Mapping[View, Mapping[str, str]]) -> JSON:
    def name(view: View, key: str | None) -> str | None:
        return None if key is None else names.get(view, {}).get(key, key)

    return {
        "day": b.day,
        "ticket": b.ticket,
        "ticket_id": b.ticket_id,
        "service": b.service,
        "service_name": name("service", b.service),
        "window": b.window,
        "window_name": None
        if b.window is None
        else names.get("window", {}).get(b.window, b.window),
        "staff": b.staff,
        "staff_name": name("staff", b.staff),
        "level": b.level,
        "reasons": list(b.reasons),
        "comment": b.comment,
        "rated_at": b.rated_at,
    }


def day_bounds(
    first: dt.date, last: dt.date, zone: dt.tzinfo, start_hour: int
) -> tuple[float, float]:
    """POSIX seconds of the start of business day ``first`` and of the day after ``last``."""
    begin = dt.datetime.combine(first, dt.time(start_hour), zone)
    finish = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(start_hour), zone)
    return begin.timestamp(), finish.timestamp()


def parse_range(
    first: str | dt.date | None, last: str | dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """A report's days: ``YYYY-MM-DD``, ``YYYY-Www`` (the ISO week), ``YYYY-MM`` (the
    month), ``today``, ``yesterday``; ``last`` defaults to the end of ``first``'s week or
    month, else to ``first``; ``first`` defaults to today. Raises ValueError saying what
    to write instead."""
    start, start_end = _day_or_month(first, today, "from")
    if last is None:
        end = start_end
    else:
        _, end = _day_or_month(last, today, "to")
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start}); swap them")
    return start, end


def _day_or_month(
    value: str | dt.date | None, today: dt.date, what: str
) -> tuple[dt.date, dt.date]:
    if value is None:
        return today, today
    if isinstance(value, dt.date):
        return value, value
    text = value.strip().lower()
    if text == "today":
        return today, today
    if text == "yesterday":
        day = today - dt.timedelta(days=1)
        return day, day
    try:
        if "-w" in text:
            year, week = text.split("-w")
            monday = dt.date.fromisocalendar(int(year), int(week), 1)
            return monday, monday + dt.timedelta(days=6)
        if len(text) == 7:
            month = dt.date.fromisoformat(text + "-01")
            following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            return month, following - dt.timedelta(days=1)
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{what} {value!r} is not a day: write YYYY-MM-DD (2026-03-01), a week "
            "YYYY-Www (2026-W10), a month YYYY-MM (2026-03), today or yesterday"
        ) from None
    return day, day
