"""The business calendar: holidays and make-up working days (调休) per year, hours per
weekday with a lunch break, special dates; the kiosk refusing on a holiday and issuing on
a make-up Saturday through the real API with the hall's clock moved by the test; central
pushing a calendar; ``check-config``'s errors and warnings; the big screen's today's-hours
line in headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import ManualClock
from support import as_ops, bearer, chromium, enroll, hall_config, needs_chromium

from agent.config import HallAgentConfig, check_config_file, load_config, validate_config
from agent.config.calendar import calendar_warnings
from agent.core import events as ev
from agent.core.opening import citizen_text, day_hours, hall_day, opening, today_line
from agent.daemon import Running, running_agent

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
ARTIFACTS = ROOT / "tests" / "artifacts" / "screens"
SHANGHAI = ZoneInfo("Asia/Shanghai")
API = "/api/v1"

# The State Council's notice for 2026, as an ops person pastes it (YAML dates).
NOTICE_2026 = """\
calendar:
  years:
    2026:
      holidays:
        - {name: 元旦, dates: 2026-01-01..2026-01-03}
        - {name: 春节, dates: 2026-02-15..2026-02-23}
        - {name: 清明节, dates: 2026-04-04..2026-04-06}
        - {name: 劳动节, dates: 2026-05-01..2026-05-05}
        - {name: 端午节, dates: 2026-06-19..2026-06-21}
        - {name: 中秋节, dates: 2026-09-25..2026-09-27}
        - {name: 国庆节, dates: 2026-10-01..2026-10-07}
      make_up_days: [2026-01-04, 2026-02-14, 2026-02-28, 2026-05-09, 2026-09-20, 2026-10-10]
  hours:
    - {start: "09:00", end: "12:00"}
    - {start: "13:30", end: "17:00"}
    - {start: "09:00", end: "12:00", days: [sat]}
"""
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def calendar_data() -> dict[str, Any]:
    from agent.config.yaml_loader import _load_yaml

    data: dict[str, Any] = _load_yaml(NOTICE_2026)["calendar"]
    return data


def hall_with_calendar(storage: Path, **calendar: Any) -> dict[str, Any]:
    """The test hall: 社保医保 keeps the hall's hours (calendar.hours), 综合咨询 its own."""
    data = hall_config(storage)
    data["calendar"] = {**calendar_data(), **calendar}
    for service in data["services"]:
        service.pop("hours")
    data["services"][3]["hours"] = [
        {"start": "08:30", "end": "12:00", "days": WEEKDAYS},
        {"start": "14:00", "end": "17:30", "days": ["mon", "wed", "fri"]},
    ]
    return data


def calendar_config(tmp_path: Path, **calendar: Any) -> HallAgentConfig:
    return HallAgentConfig.model_validate(hall_with_calendar(tmp_path / "state", **calendar))


# -- the configuration -----------------------------------------------------------------------


def test_the_notice_reads_as_pasted_and_gives_the_working_days(tmp_path: Path) -> None:
    config = calendar_config(tmp_path)
    days = config.working_days()
    assert days.is_holiday(dt.date(2026, 10, 1))
    assert days.is_holiday(dt.date(2026, 10, 7))
    assert not days.is_holiday(dt.date(2026, 10, 8))
    assert days.is_working_day(dt.date(2026, 10, 10))  # a make-up Saturday
    assert days.is_working_day(dt.date(2026, 9, 20))  # a make-up Sunday
    assert not days.is_working_day(dt.date(2026, 2, 16))  # 除夕, a Monday
    # Promised dates count in these: one working day after 30 September is 8 October.
    assert days.add_working_days(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    assert config.calendar.holiday_name(dt.date(2026, 2, 17)) == "春节"
    assert config.calendar.holiday_name(dt.date(2026, 3, 2)) is None
    # As central pushes it back: the ranges stay ranges, and read the same.
    dumped = config.model_dump(mode="json")
    assert dumped["calendar"]["years"]["2026"]["holidays"][6] == {
        "name": "国庆节",
        "dates": "2026-10-01..2026-10-07",
    }
    assert validate_config(dumped) == config


def test_the_example_config_carries_the_2026_calendar() -> None:
    config = load_config(EXAMPLE, {})
    names = [h.name for h in config.calendar.years[2026].holidays]
    assert names == ["元旦", "春节", "清明节", "劳动节", "端午节", "中秋节", "国庆节"]
    assert len(config.calendar.years[2026].make_up_days) == 6
    assert sum(len(h.days) for h in config.calendar.years[2026].holidays) == 33


def test_bare_dates_and_ranges_are_holidays_without_names(tmp_path: Path) -> None:
    years = {2026: {"holidays": ["2026-05-01 至 2026-05-05", "2026-06-19"], "make_up_days": []}}
    config = calendar_config(tmp_path, years=years)
    holidays = config.calendar.years[2026].holidays
    assert [h.dates for h in holidays] == [
        (dt.date(2026, 5, 1), dt.date(2026, 5, 5)),
        (dt.date(2026, 6, 19), dt.date(2026, 6, 19)),
    ]
    assert holidays[0].name is None
    closed = opening(config, "social", at("2026-05-02T10:00"))
    assert (
        citizen_text("社保医保", closed) == "今天是法定节假日，大厅休息。下次办理时间：5月6日 09:00"
    )


BAD_CALENDARS = [
    (
        "2026:\n  holidays: [{name: 国庆节, dates: 2026-10-01..2026-10-07}]\n"
        "  make_up_days: [2026-10-03]\n",
        "calendar.years.2026.make_up_days[0]: 2026-10-03 is both a holiday (holidays[0]) and "
        "a make-up working day (fix: a date is either off or worked: remove it from one of "
        "the two lists)",
    ),
    (
        "2026:\n  holidays:\n    - {name: 国庆节, dates: 2026-10-01..2026-10-07}\n"
        "    - {name: 中秋节, dates: 2026-09-25..2026-09-27}\n",
        "calendar.years.2026.holidays[1]: 2026-09-25..2026-09-27 comes before the holiday "
        "listed before it (2026-10-01..2026-10-07) (fix: list the holidays in calendar order",
    ),
    (
        "2026:\n  holidays:\n    - {name: 春节, dates: 2026-02-15..2026-02-23}\n"
        "    - {name: 春节, dates: 2026-02-20..2026-02-25}\n",
        "calendar.years.2026.holidays[1]: 2026-02-20..2026-02-25 overlaps the holiday listed",
    ),
    (
        "2026:\n  holidays: [{name: 国庆节, dates: 2026-10-07..2026-10-01}]\n",
        "calendar.years.2026.holidays[0].dates: the range ends (2026-10-01) before it starts "
        "(2026-10-07)",
    ),
    (
        "2026:\n  holidays: [{name: 元旦, dates: 2027-01-01}]\n",
        "calendar.years.2026.holidays[0]: 2027-01-01 is listed under 2026 (fix: list it under 2027",
    ),
    (
        "2026:\n  make_up_days: [2026-10-10, 2026-09-20]\n",
        "calendar.years.2026.make_up_days[1]: 2026-09-20 comes after 2026-10-10 in the list",
    ),
    (
        "2026:\n  make_up_days: [2026-10-09]\n",
        "calendar.years.2026.make_up_days[0]: 2026-10-09 is a fri, already a working day",
    ),
    (
        "2026:\n  holidays: [{name: 国庆节, dates: 2026-10-01..2026-12-07}]\n",
        "calendar.years.2026.holidays[0].dates: 68 days off in one holiday",
    ),
    (
        "2026:\n  holidays: [2026-13-01]\n",
        "'2026-13-01' is not a date (fix: write dates as YYYY-MM-DD",
    ),
]


@pytest.mark.parametrize(("years", "expected"), BAD_CALENDARS)
def test_check_config_rejects_a_calendar_out_of_order(
    tmp_path: Path, years: str, expected: str
) -> None:
    indented = "".join(f"    {line}\n" for line in years.splitlines())
    code, text = check_config_file(write_yaml(tmp_path, f"calendar:\n  years:\n{indented}"), {})
    assert code == 2
    assert expected in text, text


BAD_SPECIAL_DATES = [
    (
        "calendar:\n  special_dates:\n    2026-12-31: {hours: [12:00-09:00]}\n",
        "calendar.special_dates.2026-12-31.hours[0].end: the period ends (09:00) before it "
        "starts (12:00)",
    ),
    (
        "calendar:\n  special_dates:\n    2026-12-31: {closed: true, hours: [09:00-12:00]}\n",
        "calendar.special_dates.2026-12-31: the date is closed and has hours (fix: write "
        "either closed or hours, not both)",
    ),
    (
        "calendar:\n  special_dates:\n    2026-12-31: {hours: [09:00-12:00, 11:00-15:00]}\n",
        "calendar.special_dates.2026-12-31.hours[1]: 11:00-15:00 starts before 09:00-12:00 ends",
    ),
    (
        "calendar:\n  special_dates:\n    2026-12-31: {reason: 跨年}\n",
        "calendar.special_dates.2026-12-31: the date has neither hours nor closed",
    ),
    (
        "calendar:\n  special_dates:\n    2026-12-31: {hours: [9-12]}\n",
        "calendar.special_dates.2026-12-31.hours[0].start",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SPECIAL_DATES)
def test_check_config_rejects_special_dates_with_bad_hours(
    tmp_path: Path, text: str, expected: str
) -> None:
    code, output = check_config_file(write_yaml(tmp_path, text), {})
    assert code == 2
    assert expected in output, output


def test_a_services_special_date_is_checked_too(tmp_path: Path) -> None:
    data = hall_config(tmp_path / "state")
    data["services"][0]["special_dates"] = {"2026-12-31": {"hours": ["13:00-12:00"]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    code, output = check_config_file(path, {})
    assert code == 2
    assert "services[0](social).special_dates.2026-12-31.hours[0].end" in output, output


def write_yaml(tmp_path: Path, calendar_yaml: str) -> Path:
    """The test hall's YAML with a ``calendar:`` section written as an ops person would."""
    base = hall_config(tmp_path / "state")
    path = tmp_path / "config.yaml"
    # JSON is YAML: the calendar follows as a block (its dates read as YAML dates).
    text = "\n".join(
        f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in base.items()
    )
    path.write_text(text + "\n" + calendar_yaml, encoding="utf-8")
    return path


def test_check_config_warns_when_next_years_calendar_is_missing_in_december(
    tmp_path: Path,
) -> None:
    calendar = calendar_config(tmp_path).calendar
    december = calendar_warnings(calendar, dt.date(2026, 12, 5))
    assert [str(w) for w in december] == [
        "calendar.years: there is no calendar for 2027 yet: from 1 January its holidays are "
        "not known and the hall would keep its usual hours on them (fix: add "
        "calendar.years.2027 from the State Council's notice (published in November), or "
        "have central push it)"
    ]
    assert calendar_warnings(calendar, dt.date(2026, 11, 30)) == []
    assert [w.message for w in calendar_warnings(calendar, dt.date(2027, 3, 1))] == [
        "there is no calendar for 2027: its holidays and make-up days (调休) are not known, "
        "so the hall keeps its usual weekly hours"
    ]
    with_next = calendar.model_copy(
        update={"years": {**calendar.years, 2027: calendar.years[2026]}}
    )
    assert calendar_warnings(with_next, dt.date(2026, 12, 5)) == []
    # A hall that keeps no calendar is not nagged.
    assert (
        calendar_warnings(
            HallAgentConfig.model_validate(hall_config(tmp_path)).calendar, dt.date(2026, 12, 5)
        )
        == []
    )


def test_check_config_prints_the_warnings_on_standard_error(tmp_path: Path) -> None:
    """The file is valid (``ok``, exit 0); what the date it runs on adds goes to stderr."""
    path = write_yaml(tmp_path, "calendar:\n  years:\n    2020:\n      holidays: [2020-10-01]\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("HALL_")},
        check=False,
    )
    this_year = dt.datetime.now(SHANGHAI).year
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert f"warning: calendar.years: there is no calendar for {this_year}:" in done.stderr


# -- opening: hours per weekday, the lunch break, special dates -------------------------------


def test_hours_per_weekday_with_a_lunch_break(tmp_path: Path) -> None:
    config = calendar_config(tmp_path)
    general = config.service("general")  # 08:30-12:00 weekdays, 14:00-17:30 mon/wed/fri

    def check(when: str) -> tuple[bool, str | None, str | None]:
        found = opening(config, general, at(when))
        then = None if found.next_open is None else found.next_open.strftime("%m-%d %H:%M")
        return found.open, found.reason, then

    # Friday 9 October 2026.
    assert check("2026-10-09T08:29") == (False, "before_hours", "10-09 08:30")
    assert check("2026-10-09T08:30") == (True, None, None)
    assert check("2026-10-09T12:00") == (False, "lunch_break", "10-09 14:00")
    assert check("2026-10-09T13:59") == (False, "lunch_break", "10-09 14:00")
    assert check("2026-10-09T14:00") == (True, None, None)
    assert check("2026-10-09T17:30") == (False, "after_hours", "10-10 08:30")  # make-up Sat
    # Tuesday: no afternoon for this service; the next opening is Wednesday morning.
    assert check("2026-10-13T14:30") == (False, "after_hours", "10-14 08:30")
    # Saturday: the hall opens in the morning (calendar.hours), this service does not.
    assert check("2026-10-17T10:00") == (False, "weekend", "10-19 08:30")
    social = opening(config, "social", at("2026-10-17T10:00"))
    assert social.open  # the hall's Saturday morning
    lunch = opening(config, "social", at("2026-10-16T12:30"))
    assert citizen_text("社保医保", lunch) == "现在是午间休息时间，社保医保13:30恢复办理。"
    early = opening(config, "social", at("2026-10-16T08:00"))
    assert citizen_text("社保医保", early) == "社保医保今天09:00开始办理，请稍候。"
    late = opening(config, "social", at("2026-10-16T17:00"))
    assert (
        citizen_text("社保医保", late) == "社保医保今天的办理时间已结束。下次办理时间：明天 09:00"
    )
    sunday = opening(config, "social", at("2026-10-18T10:00"))
    assert (
        citizen_text("社保医保", sunday) == "今天是周末，社保医保不办理。下次办理时间：明天 09:00"
    )
    tuesday = opening(config, general, at("2026-10-13T14:30"))
    assert tuesday.today.spans == ((dt.time(8, 30), dt.time(12, 0)),)


def test_holidays_close_and_make_up_days_keep_mondays_hours(tmp_path: Path) -> None:
    config = calendar_config(tmp_path)
    holiday = opening(config, "general", at("2026-10-01T10:00"))
    assert (holiday.open, holiday.reason, holiday.today.holiday) == (False, "holiday", "国庆节")
    assert holiday.next_open == at("2026-10-08T08:30")
    # 10 October, a make-up Saturday, keeps Monday's hours (its afternoon included).
    saturday = day_hours(config, config.service("general"), dt.date(2026, 10, 10))
    assert saturday.make_up
    assert saturday.spans == ((dt.time(8, 30), dt.time(12)), (dt.time(14), dt.time(17, 30)))
    assert opening(config, "social", at("2026-10-10T15:00")).open
    # A make-up day may keep another weekday's hours: Tuesday's has no afternoon.
    tuesday = calendar_config(tmp_path, make_up_day_hours="tue")
    assert not opening(tuesday, "general", at("2026-10-10T15:00")).open
    # Services open all day (no hours anywhere) still close on holidays.
    data = hall_with_calendar(tmp_path / "state", hours=[])
    always = HallAgentConfig.model_validate(data)
    assert opening(always, "social", at("2026-10-11T03:00")).open  # a Sunday: all day
    assert not opening(always, "social", at("2026-10-02T03:00")).open
    assert opening(always, "social", at("2026-10-02T03:00")).next_open == at("2026-10-08T00:00")


def test_a_special_date_overrides_the_hours_and_the_holiday(tmp_path: Path) -> None:
    special = {
        "2026-12-31": {"hours": ["09:00-12:00"], "reason": "跨年，下午休息"},
        "2026-12-30": "closed",
        # 全年不打烊: the hall opens on a holiday morning.
        "2026-10-03": {"hours": ["09:00-11:00"], "reason": "国庆值班"},
    }
    data = hall_with_calendar(tmp_path / "state", special_dates=special)
    data["services"][1]["special_dates"] = {
        "2026-12-31": {"closed": True, "reason": "系统升级"},
        "2026-12-30": ["14:00-16:00"],
    }
    config = HallAgentConfig.model_validate(data)
    # The hall's special date: every service keeps it.
    assert opening(config, "social", at("2026-12-31T10:00")).open
    afternoon = opening(config, "social", at("2026-12-31T14:00"))
    assert (afternoon.open, afternoon.reason) == (False, "after_hours")
    assert afternoon.next_open == at("2027-01-01T09:00")  # no 2027 calendar: a Friday
    general = opening(config, "general", at("2026-12-31T10:00"))
    assert general.open
    assert general.today.special
    closed = opening(config, "social", at("2026-12-30T10:00"))
    assert closed.reason == "special_date"
    assert citizen_text("社保医保", closed) == "社保医保今天暂停办理。下次办理时间：明天 09:00"
    # A service's own special date comes before the hall's.
    civil = opening(config, "civil", at("2026-12-31T10:00"))
    assert (
        citizen_text("民政救助", civil)
        == "民政救助今天暂停办理（系统升级）。下次办理时间：明天 09:00"
    )
    assert opening(config, "civil", at("2026-12-30T15:00")).open
    # The holiday morning on duty, and the big screen's line for it.
    assert opening(config, "social", at("2026-10-03T10:00")).open
    assert not opening(config, "social", at("2026-10-02T10:00")).open
    assert today_line(hall_day(config, dt.date(2026, 10, 3))) == (
        "今日办理时间 09:00–11:00（国庆值班）"
    )
    assert today_line(hall_day(config, dt.date(2026, 10, 2))) == "今日休息（法定节假日：国庆节）"
    assert today_line(hall_day(config, dt.date(2026, 10, 9))) == (
        "今日办理时间 08:30–12:00 13:30–17:30"
    )
    assert today_line(hall_day(config, dt.date(2026, 10, 18))) == "今日休息（周末）"


# -- the kiosk through the real API, with the hall's clock controlled --------------------------


async def kiosk_headers(running: Running) -> dict[str, str]:
    return bearer(await enroll(running, "kiosk-1", "kiosk"))


async def test_the_kiosk_refuses_on_a_holiday_and_issues_on_a_make_up_saturday(
    tmp_path: Path,
) -> None:
    config = calendar_config(tmp_path)
    clock = ManualClock(at("2026-10-03T10:00"))  # a Saturday in 国庆节
    async with (
        running_agent(config, wall=clock) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        kiosk = await kiosk_headers(running)
        refused = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        holiday = "今天是法定节假日（国庆节），大厅休息。下次办理时间：10月8日 09:00"
        assert body["citizen_message"] == holiday
        assert "not issuing tickets now (holiday; it opens 2026-10-08 09:00)" in body["message"]
        state = (await client.get("/pages/state/kiosk", headers=kiosk)).json()
        # The kiosk says it once, in its banner (the hall opens when its first service
        # does: 综合咨询 at 08:30); each button only 今日休息.
        assert state["closed_day"] == holiday.replace("09:00", "08:30")
        social = next(s for s in state["services"] if s["id"] == "social")
        assert (social["enabled"], social["reason"]) == (False, "今日休息")
        assert {s["reason"] for s in state["services"]} == {"今日休息"}
        # Its usual hours are the hall's (calendar.hours), which it keeps.
        assert social["hours"] == "周一至周五 09:00-12:00、13:30-17:00；周六 09:00-12:00"

        clock.now = at("2026-10-10T10:00")  # the make-up Saturday (调休上班)
        issued = await client.post(f"{API}/tickets", json={"service": "general"}, headers=kiosk)
        assert issued.status_code == 201, issued.text
        assert issued.json()["result"]["ticket"]["number"] == "D001"

        clock.now = at("2026-10-10T12:30")  # its lunch break
        lunch = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert lunch.status_code == 409
        assert lunch.json()["citizen_message"] == "现在是午间休息时间，社保医保13:30恢复办理。"

        clock.now = at("2026-10-10T13:30")
        again = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert again.status_code == 201, again.text
        rows = await running.hall.store_call(lambda s: s.events(1, 1000))
        issued_events = [r.payload for r in rows if isinstance(r.payload, ev.TicketIssued)]
        assert [e.ticket for e in issued_events] == ["D001", "A001"]


async def test_central_pushes_a_calendar_that_the_kiosk_follows_at_once(tmp_path: Path) -> None:
    config = calendar_config(tmp_path)
    clock = ManualClock(at("2026-10-12T10:00"))  # a Monday
    async with (
        running_agent(config, wall=clock) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        kiosk = await kiosk_headers(running)
        first = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert first.status_code == 201, first.text
        assert running.link is not None
        calendar = config.calendar.model_dump(mode="json")
        calendar["special_dates"] = {"2026-10-12": {"closed": True, "reason": "停电检修"}}
        push = {"version": "cal-1", "config": {"calendar": calendar}}
        assert await running.link.configs.on_push(json.dumps(push).encode())
        closed = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert closed.status_code == 409
        assert closed.json()["citizen_message"] == (
            "社保医保今天暂停办理（停电检修）。下次办理时间：明天 09:00"
        )
        assert running.hall.config.calendar.special_dates[dt.date(2026, 10, 12)].closed
        # A pushed calendar with a date both off and worked changes nothing, and says why.
        bad = config.calendar.model_dump(mode="json")
        bad["years"]["2026"]["make_up_days"].append("2026-10-31")
        bad["years"]["2026"]["holidays"].append({"name": "重阳", "dates": "2026-10-31"})
        rejected = {"version": "cal-2", "config": {"calendar": bad}}
        assert not await running.link.configs.on_push(json.dumps(rejected).encode())
        rows = await running.hall.store_call(lambda s: s.events(1, 1000))
        applied = [r.payload for r in rows if isinstance(r.payload, ev.ConfigApplied)]
        problems = [r.payload for r in rows if isinstance(r.payload, ev.ConfigRejected)]
        assert [a.sections for a in applied] == [["calendar"]]
        assert len(problems) == 1
        assert any(
            "2026-10-31 is both a holiday (holidays[7]) and a make-up working day" in p
            for p in problems[0].problems
        ), problems[0].problems
        assert running.hall.config.calendar.special_dates  # the applied one still runs


# -- the big screen's today's-hours line, in headless Chromium ---------------------------------

# The line and every current call: the line inside the viewport, each call uncovered.
SCREEN = """() => {
  const line = document.getElementById("today-hours");
  const r = line.getBoundingClientRect();
  const calls = [...document.querySelectorAll("#current .call")].map((card) => {
    const c = card.getBoundingClientRect();
    const hit = document.elementFromPoint(c.left + c.width / 2, c.top + c.height / 2);
    return hit !== null && card.contains(hit);
  });
  return { text: line.textContent, inside: r.left >= 0 && r.right <= innerWidth
             && r.top >= 0 && r.bottom <= innerHeight && r.width > 0,
           dayOff: line.classList.contains("day-off"), calls };
}"""


@needs_chromium
async def test_the_big_screen_shows_todays_hours(tmp_path: Path) -> None:
    config = calendar_config(tmp_path)
    clock = ManualClock(at("2026-10-02T10:00"))  # 国庆节
    async with (
        running_agent(config, wall=clock) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
        chromium(tmp_path / "profile") as browser,
    ):
        page = await browser.new_page()
        await page.goto(running.url + "/pages/hall")
        await page.wait_for_selector("body[data-connection=live][data-rev]")
        await page.wait_for_function(
            "() => document.getElementById('today-hours').textContent !== ''"
        )
        holiday = await page.evaluate(SCREEN)
        assert holiday == {
            "text": "今日休息（法定节假日：国庆节）",
            "inside": True,
            "dayOff": True,
            "calls": [],
        }
        # The next working day: a ticket taken and called; the line changes with the day.
        clock.now = at("2026-10-09T10:00")
        kiosk = await kiosk_headers(running)
        taken = await client.post(f"{API}/tickets", json={"service": "social"}, headers=kiosk)
        assert taken.status_code == 201, taken.text
        called = await client.post(f"{API}/windows/w1/next", headers=as_ops(running))
        assert called.status_code == 200, called.text
        await page.wait_for_function("() => document.querySelectorAll('#current .call').length")
        for width, height in ((1920, 1080), (1366, 768), (1080, 1920)):
            await page.set_viewport_size({"width": width, "height": height})
            await page.evaluate(
                "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
            )
            working = await page.evaluate(SCREEN)
            assert working == {
                "text": "今日办理时间 08:30–12:00 13:30–17:30",
                "inside": True,
                "dayOff": False,
                "calls": [True],
            }, (width, height)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "hall-today-hours-1080x1920.png"))


# The kiosk's banner and buttons, as laid out: the banner's text and box, each button's.
KIOSK = """() => {
  const banner = document.getElementById("banner");
  const r = banner.getBoundingClientRect();
  const buttons = [...document.querySelectorAll("#services button")];
  return {
    banner: banner.textContent, dayOff: banner.classList.contains("day-off"),
    inside: r.width > 0 && r.left >= 0 && r.right <= innerWidth && r.top >= 0
      && r.bottom <= innerHeight,
    reasons: buttons.map((b) => {
      const x = b.querySelector(".reason");
      return x ? x.textContent : null;
    }),
    disabled: buttons.map((b) => b.disabled),
  };
}"""


@needs_chromium
async def test_the_kiosk_says_once_that_the_hall_is_closed_today(tmp_path: Path) -> None:
    from test_screens_browser import axe

    config = calendar_config(tmp_path)
    clock = ManualClock(at("2026-10-03T10:00"))  # a Saturday in 国庆节
    async with (
        running_agent(config, wall=clock) as running,
        chromium(tmp_path / "profile") as browser,
    ):
        token = await enroll(running, "kiosk-1", "kiosk")
        page = await browser.new_page()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # The hall opens again when its first service does (综合咨询, 08:30).
        holiday = "今天是法定节假日（国庆节），大厅休息。下次办理时间：10月8日 08:30"
        for width, height in ((1920, 1080), (1080, 1920)):
            await page.set_viewport_size({"width": width, "height": height})
            await page.goto(f"{running.url}/pages/kiosk?token={token}")
            await page.wait_for_selector("body[data-connection=live][data-rev]")
            await page.wait_for_selector("#banner.day-off")
            shown = await page.evaluate(KIOSK)
            count = len(config.services)
            assert shown == {
                "banner": holiday,
                "dayOff": True,
                "inside": True,
                "reasons": ["今日休息"] * count,
                "disabled": [True] * count,
            }, (width, height)
            await page.screenshot(path=str(ARTIFACTS / f"kiosk-holiday-{width}x{height}.png"))
        assert await axe(page) == []

        # The make-up Saturday (a ticket taken rebuilds the view at once, as the day's
        # start would within pages' rebuild interval): no banner, the buttons open.
        clock.now = at("2026-10-10T10:00")
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
            taken = await client.post(
                f"{API}/tickets", json={"service": "general"}, headers=bearer(token)
            )
            assert taken.status_code == 201, taken.text
        await page.wait_for_function("() => document.getElementById('banner').textContent === ''")
        shown = await page.evaluate(KIOSK)
        assert shown["dayOff"] is False
        assert shown["reasons"][[s.id for s in config.services].index("general")] is None
