"""Whether a service is open at a local time, why not, and when it next opens.

Pure: the configuration and the time are data. The order of the rules, for a service S on
date D:

1. a special date of S's own (``services[].special_dates``), else one of the hall's
   (``calendar.special_dates``): closed, or open at the hours given;
2. a public holiday (``calendar.years``) that is not a make-up day: closed;
3. S's weekly hours (``services[].hours``), else the hall's (``calendar.hours``); a
   make-up working day (调休上班) keeps the hours of ``calendar.make_up_day_hours``
   (Monday's by default); no periods that weekday: closed (the weekend, or a day the
   service does not run); no hours configured at all: open all day.

Within a day's hours, the time between two periods is the lunch break.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from agent.config import WEEKDAYS, HallAgentConfig, Service
from agent.core import wording

Reason = Literal[
    "holiday", "weekend", "special_date", "no_hours", "before_hours", "lunch_break", "after_hours"
]
# Days walked to find the next opening: a year and a bit (a calendar closed for longer has
# no next opening to tell).
_MAX_AHEAD = 400

Span = tuple[dt.time, dt.time]


@dataclasses.dataclass(frozen=True, slots=True)
class DayHours:
    """A service's (or the hall's) hours on one date."""

    day: dt.date
    spans: tuple[Span, ...] = ()  # in order; empty and not all_day: closed all day
    all_day: bool = False  # no hours configured: open all day
    closed: Reason | None = None  # why closed all day: holiday, weekend, special_date, no_hours
    holiday: str | None = None  # the holiday's name, when it has one
    note: str | None = None  # a special date's reason
    make_up: bool = False  # a make-up working day (调休上班)
    special: bool = False  # hours from a special date

    @property
    def is_open_day(self) -> bool:
        return self.all_day or bool(self.spans)

    def first_start(self) -> dt.time:
        return dt.time(0, 0) if self.all_day or not self.spans else self.spans[0][0]


@dataclasses.dataclass(frozen=True, slots=True)
class Opening:
    """Whether a service is open at a moment, and if not why and when next."""

    open: bool
    today: DayHours
    reason: Reason | None = None  # None when open
    next_open: dt.datetime | None = None  # None when open, or no opening within a year


def day_hours(config: HallAgentConfig, service: Service | None, day: dt.date) -> DayHours:
    """A service's hours on ``day`` (``service=None``: the hall's, see :func:`hall_day`)."""
    calendar = config.calendar
    special = service.special_dates.get(day) if service is not None else None
    if special is None:
        special = calendar.special_dates.get(day)
    if special is not None:
        if special.closed:
            return DayHours(day, closed="special_date", note=special.reason)
        spans = tuple((s.start, s.end) for s in special.hours)
        return DayHours(day, spans, note=special.reason, special=True)
    working = config.working_days()
    make_up = day in working.make_up_days
    if working.is_holiday(day) and not make_up:
        return DayHours(day, closed="holiday", holiday=calendar.holiday_name(day))
    weekly = calendar.hours if service is None else config.weekly_hours(service)
    if not weekly:
        return DayHours(day, all_day=True, make_up=make_up)
    weekday = calendar.make_up_day_hours if make_up else WEEKDAYS[day.weekday()]
    spans = tuple(sorted((p.start, p.end) for p in weekly if weekday in p.days))
    if not spans:
        reason: Reason = "weekend" if day.weekday() in working.weekend else "no_hours"
        return DayHours(day, closed=reason)
    return DayHours(day, spans, make_up=make_up)


def hall_day(config: HallAgentConfig, day: dt.date) -> DayHours:
    """The hall's hours on ``day`` (the big screen's 今日办理时间): the union of the
    services' hours that day (the hall is open while any service issues)."""
    days = [day_hours(config, s, day) for s in config.services]
    open_days = [d for d in days if d.is_open_day]
    if not open_days:
        return days[0]
    if any(d.all_day for d in open_days):
        return DayHours(day, all_day=True, make_up=open_days[0].make_up)
    merged: list[Span] = []
    for start, end in sorted(span for d in open_days for span in d.spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    first = open_days[0]
    return DayHours(
        day, tuple(merged), make_up=first.make_up, special=first.special, note=first.note
    )


def opening(config: HallAgentConfig, service: Service | str, local: dt.datetime) -> Opening:
    """Whether ``service`` issues tickets at ``local`` (the hall's local time, aware), and
    if not, why and when it next opens."""
    if isinstance(service, str):
        service = config.service(service)
    today = day_hours(config, service, local.date())
    now = local.time()
    if today.all_day or any(start <= now < end for start, end in today.spans):
        return Opening(True, today)
    reason: Reason
    if today.closed is not None:
        reason = today.closed
    elif now < today.spans[0][0]:
        reason = "before_hours"
    elif now >= today.spans[-1][1]:
        reason = "after_hours"
    else:
        reason = "lunch_break"
    later = next((start for start, _ in today.spans if start > now), None)
    if later is not None:
        return Opening(False, today, reason, _at(local, today.day, later))
    for ahead in range(1, _MAX_AHEAD):
        day = today.day + dt.timedelta(days=ahead)
        hours = day_hours(config, service, day)
        if hours.is_open_day:
            return Opening(False, today, reason, _at(local, day, hours.first_start()))
    return Opening(False, today, reason)


def _at(local: dt.datetime, day: dt.date, time: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=local.tzinfo)


def citizen_text(service_name: str, found: Opening) -> str | None:
    """What the kiosk says when the service is not open (None when it is)."""
    if found.open or found.reason is None:
        return None
    return wording.not_open_now(
        service_name,
        found.reason,
        today=found.today.day,
        next_open=found.next_open,
        holiday=found.today.holiday,
        note=found.today.note,
    )


def today_line(hours: DayHours) -> str:
    """The big screen's 今日办理时间 line for a day's hours."""
    return wording.today_hours_text(
        hours.spans,
        all_day=hours.all_day,
        closed=hours.closed,
        holiday=hours.holiday,
        note=hours.note,
    )


def closed_day_text(config: HallAgentConfig, local: dt.datetime) -> str | None:
    """The kiosk's banner when the whole hall is closed today (a holiday, the weekend, a
    closed special date), with the hall's next opening; None on a day it opens."""
    hours = hall_day(config, local.date())
    if hours.is_open_day:
        return None
    nexts = [opening(config, s, local).next_open for s in config.services]
    upcoming = [n for n in nexts if n is not None]
    return wording.hall_closed_today(
        hours.closed,
        today=local.date(),
        next_open=min(upcoming) if upcoming else None,
        holiday=hours.holiday,
        note=hours.note,
    )
