"""Working days (工作日): weekends, public holidays and make-up working days (调休).

Pure: no clock, no I/O. The hall's configuration builds one :class:`WorkingDays`
(holidays and make-up days per year, pushable from central); everything that counts in
working days uses it: opening on a given date, a proxy case's promised date (承诺时限
in working days), the warning before a deadline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.errors import HallAgentError

# Monday is 0, as in ``date.weekday()``.
SATURDAY, SUNDAY = 5, 6
# A bound on the days walked to find a working day: a calendar that has none in a year
# is a configuration error, not a reason to loop for ever.
_MAX_WALK = 366


class NoWorkingDay(HallAgentError, ValueError):
    """The calendar has no working day within a year of the date asked about."""


@dataclass(frozen=True)
class WorkingDays:
    """Which dates are working days.

    A date is a working day when it is a make-up working day (调休上班), or when it is
    neither on the weekend nor a holiday. A date listed as both is a configuration
    error caught where the configuration is read, not here.
    """

    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    make_up_days: frozenset[dt.date] = field(default_factory=frozenset)
    weekend: frozenset[int] = frozenset({SATURDAY, SUNDAY})

    @classmethod
    def of(
        cls,
        holidays: Iterable[dt.date] = (),
        make_up_days: Iterable[dt.date] = (),
        weekend: Iterable[int] = (SATURDAY, SUNDAY),
    ) -> WorkingDays:
        return cls(frozenset(holidays), frozenset(make_up_days), frozenset(weekend))

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.make_up_days:
            return True
        return day.weekday() not in self.weekend and day not in self.holidays

    def is_holiday(self, day: dt.date) -> bool:
        """A public holiday (not merely a weekend)."""
        return day in self.holidays

    def next_working_day(self, day: dt.date, *, include: bool = True) -> dt.date:
        """The first working day on or after ``day`` (after it, with ``include=False``)."""
        current = day if include else day + dt.timedelta(days=1)
        for _ in range(_MAX_WALK):
            if self.is_working_day(current):
                return current
            current += dt.timedelta(days=1)
        raise NoWorkingDay(f"no working day within a year after {day.isoformat()}")

    def previous_working_day(self, day: dt.date, *, include: bool = False) -> dt.date:
        """The last working day before ``day`` (on or before it, with ``include=True``)."""
        current = day if include else day - dt.timedelta(days=1)
        for _ in range(_MAX_WALK):
            if self.is_working_day(current):
                return current
            current -= dt.timedelta(days=1)
        raise NoWorkingDay(f"no working day within a year before {day.isoformat()}")

    def add_working_days(self, day: dt.date, count: int) -> dt.date:
        """The date ``count`` working days after ``day`` (承诺时限).

        ``count == 0`` is the same day when it is a working day, else the next working
        day. A case taken on a Saturday with a limit of 1 is due on the first working day
        after the next one: the day it was taken on does not count.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, not {count}")
        current = self.next_working_day(day) if count == 0 else day
        for _ in range(count):
            current = self.next_working_day(current, include=False)
        return current

    def subtract_working_days(self, day: dt.date, count: int) -> dt.date:
        """The working day ``count`` working days before ``day`` (a warning before a
        deadline: one working day before a Monday deadline is the Friday)."""
        if count < 0:
            raise ValueError(f"count must be 0 or more, not {count}")
        current = day
        for _ in range(count):
            current = self.previous_working_day(current)
        return current

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days after ``start`` up to and including ``end`` (0 when end <= start)."""
        count = 0
        current = start
        while current < end:
            current += dt.timedelta(days=1)
            if self.is_working_day(current):
                count += 1
        return count


WEEKENDS_ONLY = WorkingDays()
