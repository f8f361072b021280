"""The business calendar (``calendar:``): public holidays and make-up working days (调休)
per year, the hall's usual hours (which services without their own inherit) and special
dates. Central may push it (agent/central/pushed.py).

A year is written as the State Council's notice reads (国务院办公厅关于XXXX年部分节假日安排
的通知), one holiday a line, so that an ops person can copy it over::

    calendar:
      years:
        2026:
          holidays:
            - {name: 国庆节, dates: 2026-10-01..2026-10-07}
          make_up_days: [2026-09-20, 2026-10-10]

The checks: each date lies in the year it is listed under; ranges and lists run in
calendar order without overlaps; a make-up day is a Saturday or Sunday; no date is both a
holiday and a make-up day. :func:`calendar_warnings` adds what ``check-config`` says about
the date it runs on (next year's notice missing in December).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agent.config.base import Model
from agent.config.errors import ConfigProblem, _invalid
from agent.config.hall import WEEKDAYS, Period, SpecialDay, Weekday
from agent.workdays import SATURDAY, SUNDAY, WorkingDays

# The longest holiday a notice grants (春节 and 国庆 are 8-9 days): a longer range is a typo.
MAX_HOLIDAY_DAYS = 31
_RANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*(?:\.\.|~|至|/)\s*(\d{4}-\d{2}-\d{2})\s*$")
_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise _invalid(
            f"{text!r} is not a date", "write dates as YYYY-MM-DD, e.g. 2026-10-01"
        ) from err


def _span(value: object) -> object:
    """A date or ``FIRST..LAST`` as ``(first, last)``."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return (value, value)
    if isinstance(value, str):
        matched = _RANGE.match(value)
        if matched:
            return (_date(matched[1]), _date(matched[2]))
        day = _date(value.strip())
        return (day, day)
    if isinstance(value, list | tuple) and len(value) == 2:
        return tuple(value)
    raise _invalid(
        f"{value!r} is neither a date nor a range of dates",
        "write a date (2026-05-01) or a range (2026-05-01..2026-05-05)",
    )


def _span_text(span: tuple[dt.date, dt.date]) -> str:
    first, last = span
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"


DateSpan = Annotated[
    tuple[dt.date, dt.date],
    BeforeValidator(_span),
    PlainSerializer(_span_text, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^{_DATE_PATTERN}(\\s*(\\.\\.|~|至|/)\\s*{_DATE_PATTERN})?$",
            "description": "A date (2026-05-01) or a range, both ends included "
            "(2026-05-01..2026-05-05)",
        }
    ),
]


class Holiday(Model):
    """One public holiday (放假) of the notice: its name and its days off, e.g.
    ``{name: 劳动节, dates: 2026-05-01..2026-05-05}``. A bare date or range is a holiday
    without a name."""

    name: str | None = Field(
        default=None, min_length=1, max_length=20, description="e.g. 国庆节 (said to citizens)"
    )
    dates: DateSpan

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: object) -> object:
        if isinstance(value, dict):
            return value
        return {"dates": value}

    @model_validator(mode="after")
    def _ordered(self) -> Holiday:
        first, last = self.dates
        if last < first:
            raise _invalid(
                f"the range ends ({last}) before it starts ({first})",
                "write the first day off first: 2026-10-01..2026-10-07",
                at="dates",
            )
        if (last - first).days >= MAX_HOLIDAY_DAYS:
            raise _invalid(
                f"{(last - first).days + 1} days off in one holiday is more than any notice grants",
                "check the range's month: 2026-10-01..2026-10-07",
                at="dates",
            )
        return self

    @property
    def days(self) -> list[dt.date]:
        first, last = self.dates
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _make_up_date(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.date()
    return value


MakeUpDay = Annotated[dt.date, BeforeValidator(_make_up_date)]


class CalendarYear(Model):
    """One year's holidays and make-up working days (调休上班), from the State Council's
    notice, in the notice's (calendar) order."""

    holidays: list[Holiday] = Field(
        default_factory=list, max_length=40, description="The days off, holiday by holiday"
    )
    make_up_days: list[MakeUpDay] = Field(
        default_factory=list,
        max_length=20,
        description="Weekend days worked instead (调休上班), in calendar order",
    )


class CalendarConfig(Model):
    """The business calendar: holidays and make-up days per year, the hall's usual hours,
    special dates. Central may push it."""

    years: dict[int, CalendarYear] = Field(
        default_factory=dict, description="Holidays and make-up days (调休) by year"
    )
    hours: list[Period] = Field(
        default_factory=list,
        description=(
            "The hall's usual hours, which services without hours of their own keep; "
            "empty: such services issue all day"
        ),
    )
    make_up_day_hours: Weekday = Field(
        default="mon",
        description="A make-up working day (调休上班) keeps the hours of this weekday",
    )
    special_dates: dict[dt.date, SpecialDay] = Field(
        default_factory=dict,
        description=(
            "Dates with other hours for every service (closed, or hours), e.g. "
            "2026-12-31: [09:00-12:00]; a service's own special date comes first"
        ),
    )

    @field_validator("years")
    @classmethod
    def _years(cls, years: dict[int, CalendarYear]) -> dict[int, CalendarYear]:
        for year, listed in years.items():
            _check_year(year, listed)
        return years

    @field_validator("hours")
    @classmethod
    def _no_overlap(cls, hours: list[Period]) -> list[Period]:
        for b, later in enumerate(hours):
            for a, earlier in enumerate(hours[:b]):
                if later.overlaps(earlier):
                    raise _invalid(
                        f"hours[{b}] ({later}) overlaps hours[{a}] ({earlier})",
                        "make one period end at or before the other starts, or merge them",
                    )
        return hours

    def holiday_name(self, day: dt.date) -> str | None:
        """The name of the holiday ``day`` falls in (None: not a holiday, or unnamed)."""
        listed = self.years.get(day.year)
        if listed is None:
            return None
        for holiday in listed.holidays:
            if holiday.dates[0] <= day <= holiday.dates[1]:
                return holiday.name
        return None

    @functools.cached_property
    def _working_days(self) -> WorkingDays:
        return self._collect()

    def working_days(self) -> WorkingDays:
        """Every configured year's holidays and make-up days as one :class:`WorkingDays`."""
        return self._working_days

    def _collect(self) -> WorkingDays:
        holidays: set[dt.date] = set()
        make_up: set[dt.date] = set()
        for listed in self.years.values():
            for holiday in listed.holidays:
                holidays.update(holiday.days)
            make_up.update(listed.make_up_days)
        return WorkingDays.of(holidays, make_up)


def _check_year(year: int, listed: CalendarYear) -> None:
    """One year's lists: in the year, in order, no overlap, make-up days on weekends and
    never also a holiday. Raises the first problem, with where it is in the year."""
    previous: Holiday | None = None
    off: dict[dt.date, int] = {}
    for i, holiday in enumerate(listed.holidays):
        first, last = holiday.dates
        where = f"{year}.holidays[{i}]"
        if first.year != year or last.year != year:
            outside = first if first.year != year else last
            raise _invalid(
                f"{outside} is listed under {year}",
                f"list it under {outside.year}, or correct the year",
                at=where,
            )
        if previous is not None and first <= previous.dates[1]:
            what = "overlaps" if first >= previous.dates[0] else "comes before"
            raise _invalid(
                f"{_span_text(holiday.dates)} {what} the holiday listed before it "
                f"({_span_text(previous.dates)})",
                "list the holidays in calendar order, as the notice does, each once",
                at=where,
            )
        previous = holiday
        for day in holiday.days:
            off[day] = i
    for i, day in enumerate(listed.make_up_days):
        where = f"{year}.make_up_days[{i}]"
        if day.year != year:
            raise _invalid(f"{day} is listed under {year}", f"list it under {day.year}", at=where)
        if i and day <= listed.make_up_days[i - 1]:
            raise _invalid(
                f"{day} comes after {listed.make_up_days[i - 1]} in the list",
                "list the make-up days in calendar order, each once",
                at=where,
            )
        if day in off:
            raise _invalid(
                f"{day} is both a holiday (holidays[{off[day]}]) and a make-up working day",
                "a date is either off or worked: remove it from one of the two lists",
                at=where,
            )
        if day.weekday() not in (SATURDAY, SUNDAY):
            raise _invalid(
                f"{day} is a {WEEKDAYS[day.weekday()]}, already a working day",
                "a make-up working day (调休上班) is a Saturday or Sunday the notice "
                "says is worked; check the date",
                at=where,
            )


def calendar_warnings(calendar: CalendarConfig, today: dt.date) -> list[ConfigProblem]:
    """What ``check-config`` warns about on ``today``: this year's calendar missing (once a
    calendar is kept at all), next year's still missing in December."""
    if not calendar.years:
        return []
    warnings = []
    if today.year not in calendar.years:
        warnings.append(
            ConfigProblem(
                "calendar.years",
                f"there is no calendar for {today.year}: its holidays and make-up days "
                "(调休) are not known, so the hall keeps its usual weekly hours",
                f"add calendar.years.{today.year} from the State Council's notice",
            )
        )
    if today.month == 12 and today.year + 1 not in calendar.years:
        warnings.append(
            ConfigProblem(
                "calendar.years",
                f"there is no calendar for {today.year + 1} yet: from 1 January its "
                "holidays are not known and the hall would keep its usual hours on them",
                f"add calendar.years.{today.year + 1} from the State Council's notice "
                "(published in November), or have central push it",
            )
        )
    return warnings
