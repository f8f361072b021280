"""Working days: weekends, holidays and make-up days (调休), counted forwards and back."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.workdays import NoWorkingDay, WorkingDays

D = dt.date
# 2026: National Day 10-01..10-07 off, 09-27 (Sun) and 10-10 (Sat) worked (调休).
NATIONAL_DAY = WorkingDays.of(
    holidays=[D(2026, 10, d) for d in range(1, 8)],
    make_up_days=[D(2026, 9, 27), D(2026, 10, 10)],
)


def test_weekend_holiday_and_make_up_day() -> None:
    assert NATIONAL_DAY.is_working_day(D(2026, 9, 30))  # Wednesday
    assert not NATIONAL_DAY.is_working_day(D(2026, 10, 1))  # holiday, a Thursday
    assert NATIONAL_DAY.is_working_day(D(2026, 9, 27))  # Sunday, worked
    assert NATIONAL_DAY.is_working_day(D(2026, 10, 10))  # Saturday, worked
    assert not NATIONAL_DAY.is_working_day(D(2026, 10, 11))  # plain Sunday
    assert NATIONAL_DAY.is_holiday(D(2026, 10, 3))
    assert not NATIONAL_DAY.is_holiday(D(2026, 10, 11))


def test_promised_date_skips_the_holiday() -> None:
    # Taken on 09-30 with 3 working days: 10-08, 10-09, 10-10 (the make-up Saturday).
    assert NATIONAL_DAY.add_working_days(D(2026, 9, 30), 3) == D(2026, 10, 10)
    # 即办 on a holiday is due on the next working day.
    assert NATIONAL_DAY.add_working_days(D(2026, 10, 2), 0) == D(2026, 10, 8)
    # One working day before a deadline of 10-08 is 09-30.
    assert NATIONAL_DAY.subtract_working_days(D(2026, 10, 8), 1) == D(2026, 9, 30)
    assert NATIONAL_DAY.working_days_between(D(2026, 9, 30), D(2026, 10, 10)) == 3


def test_a_calendar_without_working_days_says_so() -> None:
    never = WorkingDays.of(weekend=range(7))
    with pytest.raises(NoWorkingDay, match="no working day"):
        never.next_working_day(D(2026, 1, 1))
    with pytest.raises(ValueError, match="0 or more"):
        NATIONAL_DAY.add_working_days(D(2026, 1, 1), -1)


days = st.dates(min_value=D(2025, 1, 1), max_value=D(2027, 12, 31))


@given(
    holidays=st.frozensets(days, max_size=40),
    make_up=st.frozensets(days, max_size=10),
    start=days,
    count=st.integers(min_value=0, max_value=30),
)
def test_counting_forwards_then_back_agrees(
    holidays: frozenset[dt.date], make_up: frozenset[dt.date], start: dt.date, count: int
) -> None:
    calendar = WorkingDays(holidays - make_up, make_up)
    due = calendar.add_working_days(start, count)
    assert calendar.is_working_day(due)
    assert due >= start
    assert calendar.working_days_between(start, due) == count or (
        count == 0 and due == calendar.next_working_day(start)
    )
    if count > 0:
        # Back again lands on the last working day on or before the start.
        assert calendar.subtract_working_days(due, count) == calendar.previous_working_day(
            start, include=True
        )
