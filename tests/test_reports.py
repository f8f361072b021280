"""Reports: a scripted day through the hall's writer and a real store gives exactly the
expected figures in every view, the JSON, the CSV and the XLSX; per-window sums equal the
hall's (hypothesis); the records survive the outbox's retention; ``report.daily`` at the
rollover; who may read reports."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import SHANGHAI, ManualClock
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.config import HallAgentConfig
from agent.core import operations as op
from agent.core.errors import QueueError
from agent.core.model import Priority, Source
from agent.core.reports import parse_range, percentile, rating_figures, spread, summarise
from agent.features.report_tables import VIEW_TITLES, csv_bytes, headers, to_csv, to_xlsx
from agent.features.reports import DailyReports, Reports
from agent.runtime.hall import Hall
from agent.runtime.store import Store, StoredEvent, Written

MONDAY = dt.date(2026, 3, 2)
RATERS = [
    {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
    {"id": "rater-w2", "kind": "rater", "transport": {"type": "web"}},
]
ROSTER = [
    {"staff": "s-001", "name": "王芳"},
    {"staff": "s-002", "name": "李明"},
    {"staff": "s-003", "name": "张伟"},
]


def at(hour: int, minute: int = 0, day: dt.date = MONDAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), SHANGHAI)


def with_raters(make_config: Callable[..., HallAgentConfig], start_on: str) -> HallAgentConfig:
    config = make_config(devices=RATERS, rating={"start_on": start_on})
    windows = [w.model_dump() for w in config.windows]
    windows[0]["devices"] = ["rater-w1"]
    windows[1]["devices"] = ["rater-w2"]
    return make_config(devices=RATERS, windows=windows, rating={"start_on": start_on})


@pytest.fixture
def rated_config(make_config: Callable[..., HallAgentConfig]) -> HallAgentConfig:
    return with_raters(make_config, "request")


@pytest.fixture
def rated_on_finish(make_config: Callable[..., HallAgentConfig]) -> HallAgentConfig:
    return with_raters(make_config, "finish")


async def set_roster(hall: Hall) -> None:
    def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        return Written(store.append([], clock_ok=clock_ok, settings={"staff": ROSTER}), None)

    await hall.write(write)


async def scripted_day(hall: Hall, clock: ManualClock) -> None:
    """A fixed day: seven tickets, a transfer, a no-show, a cancel, a pause, three ratings
    (one 差评), one ticket left to expire at the rollover."""
    reason = hall.config.rating.reasons[0]
    script: list[tuple[dt.datetime, op.Operation]] = [
        (at(8, 50), op.SignIn(window="w1", staff="s-001")),
        (at(8, 50), op.SignIn(window="w2", staff="s-002")),
        (at(8, 50), op.SignIn(window="w3", staff="s-003")),
        (at(9, 0), op.Take(service="general", source=Source.TOUCH)),  # A001
        (at(9, 5), op.Take(service="general", source=Source.BUTTON)),  # A002
        (at(9, 10), op.Take(service="social", source=Source.QR, priority=Priority.ELDERLY)),
        (at(9, 10), op.CallNumber(window="w1", number="A001")),  # waited 10
        (at(9, 20), op.Take(service="fund", source=Source.API)),  # C01
        (at(9, 20), op.Finish(window="w1")),  # served 10
        (at(9, 21), op.RequestRating(window="w1")),
        (at(9, 21), op.Rate(window="w1", level=5)),
        (at(9, 25), op.CallNumber(window="w2", number="B001")),  # waited 15
        (at(9, 30), op.StartServing(window="w2")),
        (at(9, 30), op.CallNumber(window="w3", number="C01")),  # waited 10
        (at(9, 32), op.NoShow(window="w3")),
        (at(9, 40), op.CallNumber(window="w1", number="A002")),  # waited 35
        (at(9, 45), op.Finish(window="w2")),  # served 15 (from serving)
        (at(9, 46), op.RequestRating(window="w2")),
        (at(9, 46), op.Rate(window="w2", level=2, reasons=(reason,), comment="等太久")),
        (at(9, 50), op.Transfer(window="w1", service="fund")),
        (at(10, 0), op.Take(service="social", source=Source.BUTTON)),  # B002
        (at(10, 0), op.CallNumber(window="w3", number="A002")),
        (at(10, 5), op.Pause(window="w1", reason="午休")),
        (at(10, 20), op.Finish(window="w3")),  # served 20
        (at(10, 30), op.Take(service="general", source=Source.TOUCH)),  # A003
        (at(10, 35), op.Resume(window="w1")),  # paused 30
        (at(10, 40), op.CallNumber(window="w2", number="B002")),  # waited 40
        (at(10, 50), op.Finish(window="w2")),  # served 10
        (at(10, 51), op.RequestRating(window="w2")),
        (at(10, 51), op.Rate(window="w2", level=3)),
        (at(11, 0), op.Take(service="fund", source=Source.ID_CARD)),  # C02, expires
        (at(11, 5), op.Cancel(number="A003", reason="citizen left")),
        (at(12, 0), op.SignOut(window="w2")),  # on duty 190
        (at(17, 0), op.SignOut(window="w1")),  # on duty 490
        (at(17, 0), op.SignOut(window="w3")),  # on duty 490
        (at(5, 0, MONDAY + dt.timedelta(days=1)), op.Tick()),  # the day closes
    ]
    for when, operation in script:
        clock.now = when
        await hall.execute(operation)


def spread_of(count: int, mean: float, median: float, p90: float, top: float) -> dict[str, Any]:
    return {"count": count, "mean": mean, "median": median, "p90": p90, "max": top}


NO_SPREAD = {"count": 0, "mean": None, "median": None, "p90": None, "max": None}


def ratings_of(levels: dict[int, int], served: int) -> dict[str, Any]:
    return rating_figures(levels, 0, served)


def figures(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "issued": None,
        "issued_by_source": None,
        "issued_by_priority": None,
        "served": 0,
        "no_show": 0,
        "transferred": 0,
        "cancelled": 0,
        "expired": 0,
        "open": 0,
        "wait_minutes": NO_SPREAD,
        "service_minutes": NO_SPREAD,
        "ratings": ratings_of({}, 0),
        "on_duty_minutes": None,
        "paused_minutes": None,
    }
    return {**base, **given}


HALL = figures(
    issued=7,
    issued_by_source={"api": 1, "button": 2, "id_card": 1, "qr": 1, "touch": 2},
    issued_by_priority={"elderly": 1, "normal": 6},
    served=4,
    no_show=1,
    transferred=1,
    cancelled=1,
    expired=1,
    wait_minutes=spread_of(5, 22.0, 15.0, 38.0, 40.0),
    service_minutes=spread_of(4, 13.75, 12.5, 18.5, 20.0),
    ratings=ratings_of({5: 1, 3: 1, 2: 1}, 4),
    on_duty_minutes=1170.0,
    paused_minutes=30.0,
)
SERVICES = [
    {
        "key": "fund",
        "name": "公积金",
        **figures(
            issued=2,
            issued_by_source={"api": 1, "id_card": 1},
            issued_by_priority={"normal": 2},
            no_show=1,
            expired=1,
            wait_minutes=spread_of(1, 10.0, 10.0, 10.0, 10.0),
        ),
    },
    {
        "key": "general",
        "name": "综合业务",
        **figures(
            issued=3,
            issued_by_source={"button": 1, "touch": 2},
            issued_by_priority={"normal": 3},
            served=2,
            transferred=1,
            cancelled=1,
            wait_minutes=spread_of(2, 22.5, 22.5, 32.5, 35.0),
            service_minutes=spread_of(2, 15.0, 15.0, 19.0, 20.0),
            ratings=ratings_of({5: 1}, 2),
        ),
    },
    {
        "key": "social",
        "name": "社保医保",
        **figures(
            issued=2,
            issued_by_source={"button": 1, "qr": 1},
            issued_by_priority={"elderly": 1, "normal": 1},
            served=2,
            wait_minutes=spread_of(2, 27.5, 27.5, 37.5, 40.0),
            service_minutes=spread_of(2, 12.5, 12.5, 14.5, 15.0),
            ratings=ratings_of({3: 1, 2: 1}, 2),
        ),
    },
]
W1 = figures(
    served=1,
    transferred=1,
    wait_minutes=spread_of(1, 10.0, 10.0, 10.0, 10.0),
    service_minutes=spread_of(1, 10.0, 10.0, 10.0, 10.0),
    ratings=ratings_of({5: 1}, 1),
    on_duty_minutes=490.0,
    paused_minutes=30.0,
)
W2 = figures(
    served=2,
    wait_minutes=spread_of(2, 27.5, 27.5, 37.5, 40.0),
    service_minutes=spread_of(2, 12.5, 12.5, 14.5, 15.0),
    ratings=ratings_of({3: 1, 2: 1}, 2),
    on_duty_minutes=190.0,
    paused_minutes=0.0,
)
W3 = figures(
    served=1,
    no_show=1,
    wait_minutes=spread_of(2, 22.5, 22.5, 32.5, 35.0),
    service_minutes=spread_of(1, 20.0, 20.0, 20.0, 20.0),
    ratings=ratings_of({}, 1),
    on_duty_minutes=490.0,
    paused_minutes=0.0,
)
WINDOWS = [
    {"key": "w1", "name": "1号窗口", **W1},
    {"key": "w2", "name": "2号窗口", **W2},
    {"key": "w3", "name": "3号窗口", **W3},
]
STAFF = [
    {"key": "s-001", "name": "王芳", **W1},
    {"key": "s-002", "name": "李明", **W2},
    {"key": "s-003", "name": "张伟", **W3},
]
HOURS = [
    {
        "key": "09",
        "name": "09",
        **figures(
            issued=4,
            issued_by_source={"api": 1, "button": 1, "qr": 1, "touch": 1},
            issued_by_priority={"elderly": 1, "normal": 3},
            served=3,
            no_show=1,
            transferred=1,
            wait_minutes=spread_of(4, 17.5, 12.5, 29.0, 35.0),
            service_minutes=spread_of(3, 15.0, 15.0, 19.0, 20.0),
            ratings=ratings_of({5: 1, 2: 1}, 3),
        ),
    },
    {
        "key": "10",
        "name": "10",
        **figures(
            issued=2,
            issued_by_source={"button": 1, "touch": 1},
            issued_by_priority={"normal": 2},
            served=1,
            cancelled=1,
            wait_minutes=spread_of(1, 40.0, 40.0, 40.0, 40.0),
            service_minutes=spread_of(1, 10.0, 10.0, 10.0, 10.0),
            ratings=ratings_of({3: 1}, 1),
        ),
    },
    {
        "key": "11",
        "name": "11",
        **figures(
            issued=1,
            issued_by_source={"id_card": 1},
            issued_by_priority={"normal": 1},
            expired=1,
        ),
    },
]


@pytest.fixture
async def day_hall(rated_config: HallAgentConfig, tmp_path: Path):
    clock = ManualClock(at(8, 0))
    store = Store.open(tmp_path / "state")
    async with Hall(rated_config, store, clock=clock) as hall:
        await set_roster(hall)
        async with DailyReports(Reports(hall)), hall.events() as committed:
            await scripted_day(hall, clock)
            yield hall, clock, committed
    store.close()


async def test_a_scripted_day_gives_exactly_the_expected_figures(day_hall) -> None:
    hall, _, _ = day_hall
    report = await Reports(hall).report(MONDAY, MONDAY)
    assert report["from"] == report["to"] == "2026-03-02"
    assert report["hall"] == HALL
    assert report["views"]["service"] == SERVICES
    assert report["views"]["window"] == WINDOWS
    assert report["views"]["staff"] == STAFF
    assert report["views"]["hour"] == HOURS
    (bad,) = report["bad_ratings"]
    assert bad == {
        "day": "2026-03-02",
        "ticket": "B001",
        "ticket_id": "20260302-B001",
        "service": "social",
        "service_name": "社保医保",
        "window": "w2",
        "window_name": "2号窗口",
        "staff": "s-002",
        "staff_name": "李明",
        "level": 2,
        "reasons": [hall.config.rating.reasons[0]],
        "comment": "等太久",
        "rated_at": at(9, 46).isoformat(),
    }
    # The closed day's tally is kept (the rollover's report.daily kept it), and a range
    # adds kept days up; the open day comes from its records.
    kept = await hall.store_call(lambda s: s.day_tallies(MONDAY, MONDAY, ["hall", "staff"]))
    assert list(kept) == ["2026-03-02"]
    # A range around it holds the same tickets; a day without tickets holds none.
    week = await Reports(hall).report(*parse_range("2026-W10", None, MONDAY))
    assert week["hall"] == HALL
    empty = await Reports(hall).report(MONDAY + dt.timedelta(days=1), MONDAY + dt.timedelta(days=1))
    assert empty["hall"]["issued"] == 0
    assert empty["hall"]["wait_minutes"] == NO_SPREAD


async def test_the_daily_event_carries_the_closed_day(day_hall) -> None:
    hall, _, committed = day_hall

    async def daily() -> StoredEvent:
        while True:
            event = await committed.get()
            if event.type == "report.daily":
                return event

    # Written by the listener once day.closed reached it, after the script's last write.
    event = await asyncio.wait_for(daily(), timeout=30)
    found = [
        e for e in await hall.store_call(lambda s: s.events(1, 1000)) if e.type == "report.daily"
    ]
    assert [e.seq for e in found] == [event.seq]  # once
    assert event.data["day"] == "2026-03-02"
    assert event.data["hall"] == HALL
    assert event.data["services"] == SERVICES
    assert event.data["windows"] == WINDOWS
    assert event.data["staff"] == STAFF
    assert [b["ticket"] for b in event.data["bad_ratings"]] == ["B001"]


async def test_the_records_survive_the_outbox_retention(day_hall) -> None:
    hall, _clock, _ = day_hall
    before = await Reports(hall).report(MONDAY, MONDAY)

    def prune(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        store.mark_acked(store.epoch, store.last_seq)
        store.enforce_retention(1, 0, now + dt.timedelta(days=400), clock_ok=clock_ok)
        return Written([], None)

    await hall.write(prune)
    left = await hall.store_call(lambda s: [e.type for e in s.events(1, 1000)])
    assert "ticket.issued" not in left
    after = await Reports(hall).report(MONDAY, MONDAY)
    assert after["hall"] == before["hall"] == HALL
    assert after["views"] == before["views"]


async def test_csv_and_xlsx_read_back_with_chinese_headers(day_hall) -> None:
    hall, _, _ = day_hall
    report = await Reports(hall).report(MONDAY, MONDAY)

    rows = list(csv.reader(io.StringIO(to_csv(report, "window"))))
    assert rows[0] == headers("window")
    assert rows[0][:3] == ["窗口", "名称", "取号数"]
    column = {name: i for i, name in enumerate(rows[0])}
    by_key = {r[0]: r for r in rows[1:]}
    assert set(by_key) == {"w1", "w2", "w3", "合计"}
    assert by_key["w2"][column["接待量(办结)"]] == "2"
    assert by_key["w2"][column["差评数"]] == "1"
    assert by_key["w2"][column["好评率"]] == "50.0%"
    assert by_key["w1"][column["暂停时长(分钟)"]] == "30.0"
    assert by_key["w1"][column["取号数"]] == ""  # no ticket is issued at a window
    assert by_key["合计"][column["取号数"]] == "7"
    assert by_key["合计"][column["等候P90(分钟)"]] == "38.0"
    assert csv_bytes(report, "window").startswith("\ufeff".encode())
    every = to_csv(report)
    for title in VIEW_TITLES.values():
        assert title in every

    book = openpyxl.load_workbook(io.BytesIO(to_xlsx(report)))
    assert book.sheetnames == [*VIEW_TITLES.values(), "说明"]
    staff = book["按人员"]
    values = [[c.value for c in r] for r in staff.iter_rows()]
    assert values[0] == headers("staff")
    col = {name: i for i, name in enumerate(values[0])}
    li = next(r for r in values if r[0] == "s-002")
    assert li[1] == "李明"
    assert li[col["接待量(办结)"]] == 2
    assert li[col["平均等候(分钟)"]] == 27.5
    assert li[col["在岗时长(分钟)"]] == 190.0
    services = [[c.value for c in r] for r in book["按事项"].iter_rows()]
    general = next(r for r in services if r[0] == "general")
    assert general[col["取号·触屏"]] == 2
    assert general[col["转办"]] == 1
    hours = [[c.value for c in r] for r in book["按时段"].iter_rows()]
    assert [r[0] for r in hours[1:]] == ["09", "10", "11", "合计"]
    bad = [[c.value for c in r] for r in book["差评明细"].iter_rows()]
    assert bad[1][:7] == [
        "2026-03-02",
        "B001",
        "社保医保",
        "2号窗口",
        "李明",
        "不满意",
        hall.config.rating.reasons[0],
    ]


# -- pure figures -------------------------------------------------------------------------


def test_percentiles_and_rates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.9) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert spread([10, 10, 15, 35, 40]) == spread_of(5, 22.0, 15.0, 38.0, 40.0)
    figures_ = rating_figures({5: 3, 4: 1, 3: 0, 2: 1, 1: 1}, 1, 10)
    assert (figures_["good"], figures_["bad"], figures_["count"]) == (4, 2, 6)
    assert figures_["good_rate"] == 0.6667
    assert figures_["bad_rate"] == 0.3333
    assert figures_["rated_share"] == 0.5  # 5 citizens rated themselves of 10 served
    assert rating_figures({}, 0, 0)["good_rate"] is None


def test_ranges_say_what_to_write() -> None:
    assert parse_range("2026-03", None, MONDAY) == (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
    assert parse_range("2026-W10", None, MONDAY) == (MONDAY, MONDAY + dt.timedelta(days=6))
    assert parse_range(None, None, MONDAY) == (MONDAY, MONDAY)
    assert parse_range("yesterday", "today", MONDAY) == (MONDAY - dt.timedelta(days=1), MONDAY)
    with pytest.raises(ValueError, match="write YYYY-MM-DD"):
        parse_range("March", None, MONDAY)
    with pytest.raises(ValueError, match="swap them"):
        parse_range("2026-03-05", "2026-03-01", MONDAY)


# -- a property: per-window sums equal the hall's ----------------------------------------

WINDOWS_ = ["w1", "w2", "w3"]
SERVICES_ = ["general", "social", "fund"]


@st.composite
def operations(draw: st.DrawFn) -> op.Operation:
    """Takes, calls, finishes and ratings most often, so most examples serve and rate."""
    kind = draw(st.sampled_from("NTFRTNFRTXPUSOKH"))
    window = draw(st.sampled_from(WINDOWS_))
    rater = window if window != "w3" else "w1"  # w3 has no rater
    match kind:
        case "T":
            return op.Take(service=draw(st.sampled_from(SERVICES_)))
        case "N":
            return op.CallNext(window=window)
        case "F":
            return op.Finish(window=window)
        case "R":
            return op.Rate(window=rater, level=draw(st.integers(3, 5)))
        case "X":
            return op.Transfer(window=window, service=draw(st.sampled_from(SERVICES_)))
        case "P":
            return op.Pause(window=rater)
        case "U":
            return op.Resume(window=rater)
        case "S":
            return op.SignIn(window=window, staff=draw(st.sampled_from(["s-001", "s-002"])))
        case "O":
            return op.SignOut(window=window)
        case "K":
            return op.NoShow(window=window)
    return op.Tick()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(st.tuples(operations(), st.integers(0, 30)), min_size=10, max_size=80),
)
async def test_per_window_and_per_staff_sums_equal_the_hall(
    rated_on_finish: HallAgentConfig, tmp_path_factory: pytest.TempPathFactory, steps
) -> None:
    clock = ManualClock(at(9, 0))
    store = Store.open(tmp_path_factory.mktemp("state"))
    try:
        async with Hall(rated_on_finish, store, clock=clock) as hall:
            for operation, minutes in steps:
                clock.advance(minutes=minutes)
                with contextlib.suppress(QueueError):
                    await hall.execute(operation)
            last = hall.business_day()
            report = await Reports(hall).report(MONDAY, last)
    finally:
        store.close()
    total = report["hall"]
    event(f"served {min(total['served'], 3)}, rated {min(total['ratings']['count'], 2)} (or more)")
    for view in ("window", "staff"):
        groups = report["views"][view]
        # Every served, no-show, transferred or rated ticket has a window; a staff member
        # only when one was signed in there (a window can call without one).
        same = (lambda a, b: a == b) if view == "window" else (lambda a, b: a <= b)
        for key in ("served", "no_show", "transferred"):
            assert same(sum(g[key] for g in groups), total[key]), (view, key)
        for lv in ("5", "4", "3", "2", "1"):
            found = sum(g["ratings"]["levels"][lv] for g in groups)
            assert same(found, total["ratings"]["levels"][lv]), (view, lv)
        timed = sum(g["service_minutes"]["count"] for g in groups)
        assert same(timed, total["service_minutes"]["count"]), view
    paused = sum(g["paused_minutes"] for g in report["views"]["window"])
    assert paused == pytest.approx(total["paused_minutes"], abs=0.05)
    windows = report["views"]["window"]
    assert sum(g["on_duty_minutes"] for g in windows) == pytest.approx(
        total["on_duty_minutes"], abs=0.05
    )
    for view in ("service", "hour"):
        groups = report["views"][view]
        for key in ("issued", "served", "no_show", "transferred", "cancelled", "expired", "open"):
            assert sum(g[key] for g in groups) == total[key], (view, key)


# -- the local API and the CLI -------------------------------------------------------------


async def test_the_report_route_the_cli_and_who_may_read(tmp_path: Path, capsys) -> None:
    import httpx
    from support import bearer, hall_config, ops_headers

    from agent.cli import main
    from agent.daemon import running_agent
    from agent.features.access import Role

    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    storage = config.storage.path
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        ops = ops_headers(storage)
        for service in ("social", "social", "civil"):
            r = await client.post("/api/v1/tickets", json={"service": service}, headers=ops)
            assert r.status_code == 201, r.text
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "1001"}, headers=ops)
        await client.post("/api/v1/windows/w1/next", headers=ops)
        await client.post("/api/v1/windows/w1/finish", headers=ops)

        access = running.access
        assert access is not None
        kiosk = bearer(await access.enroll("kiosk-1", Role.KIOSK))
        await access.add_user("1001", Role.STAFF, ["w1"], "correct horse 1")
        await access.add_user("boss", Role.MANAGER, [], "correct horse 1")
        sessions = {}
        for name in ("1001", "boss"):
            r = await client.post(
                "/api/v1/auth/login", json={"name": name, "password": "correct horse 1"}
            )
            sessions[name] = bearer(r.json()["token"])

        for refused in (kiosk, sessions["1001"], {}):
            r = await client.get("/api/v1/reports", headers=refused)
            assert r.status_code in (401, 403), r.text
            assert r.json()["error"] in ("forbidden", "unauthorized")
            assert "hall" not in r.json()
        r = await client.get("/api/v1/reports", params={"by": "service"}, headers=sessions["boss"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["hall"]["issued"] == 3
        assert body["hall"]["served"] == 1
        assert [(g["key"], g["issued"]) for g in body["views"]["service"]] == [
            ("civil", 1),
            ("social", 2),
        ]
        r = await client.get("/api/v1/reports", params={"from": "March"}, headers=ops)
        assert r.status_code == 409
        assert "YYYY-MM-DD" in r.json()["message"]
        r = await client.get("/api/v1/reports", params={"format": "xlsx"}, headers=ops)
        assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
        sheet = openpyxl.load_workbook(io.BytesIO(r.content))["总览"]
        assert sheet.cell(2, 3).value == 3  # 取号数 of the hall
        r = await client.get(
            "/api/v1/reports", params={"format": "csv", "by": "window"}, headers=ops
        )
        assert r.content.decode("utf-8-sig").splitlines()[0].startswith("窗口,名称,取号数")

        # The CLI asks the running agent with the ops token, then prints or writes.
        base = ["report", "--api", running.url, "--token-file", str(storage / "ops-token")]
        assert await asyncio.to_thread(main, [*base, "--by", "window"]) == 0
        printed = capsys.readouterr().out
        assert "按窗口" in printed
        assert "1号窗口" in printed
        xlsx = tmp_path / "month.xlsx"
        assert await asyncio.to_thread(main, [*base, "--xlsx", str(xlsx)]) == 0
        assert openpyxl.load_workbook(xlsx)["按事项"].cell(2, 1).value == "civil"
        out = tmp_path / "staff.csv"
        assert await asyncio.to_thread(main, [*base, "--by", "staff", "--csv", str(out)]) == 0
        rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
        assert rows[0][0] == "工作人员"
        assert rows[1][0] == "1001"
        assert await asyncio.to_thread(main, [*base, "--json"]) == 0
        assert '"served": 1' in capsys.readouterr().out


async def test_an_upgraded_store_fills_the_records_from_its_saved_tickets(
    day_hall, tmp_path: Path
) -> None:
    import sqlite3

    from agent.runtime.store import DB_NAME

    hall, _, _ = day_hall
    path = hall.store.path
    copy = tmp_path / "old" / DB_NAME
    copy.parent.mkdir()
    source = sqlite3.connect(path)
    target = sqlite3.connect(copy)
    with target:
        source.backup(target)
    source.close()
    # The file as the version before statistics left it: schema version 5, without the
    # tables of migration 6 (statistics) and every later one.
    import re

    from agent.runtime.store.schema import MIGRATIONS

    later = re.findall(r"CREATE TABLE (\w+)", "\n".join(MIGRATIONS[5:]))
    assert {"stat_tickets", "stat_duty", "stat_days"} <= set(later)
    target.executescript(
        "".join(f"DROP TABLE {name}; " for name in later) + "PRAGMA user_version = 5;"
    )
    target.close()
    store = Store.open(copy.parent)
    try:
        first, last = MONDAY, MONDAY
        tickets, spans = store.report_records(first, last, 0.0, 2e9)
        bad = store.bad_ratings(first, last)
    finally:
        store.close()
    assert spans == []  # duty time is not in the saved tickets
    assert [b.ticket for b in bad] == ["B001"]
    report = summarise(tickets, spans, first=first, last=last, start=0.0, end=2e9, bad=bad)
    figures = report["hall"]
    for key in ("issued", "issued_by_source", "issued_by_priority", "served", "no_show"):
        assert figures[key] == HALL[key], key
    for key in ("transferred", "cancelled", "expired", "ratings", "service_minutes"):
        assert figures[key] == HALL[key], key


async def test_centrals_get_report_command(day_hall) -> None:
    from pydantic import ValidationError

    from agent.central import contract as c
    from agent.central.commands import CommandHandlers
    from hallctl.cli import build_command

    hall, _, _ = day_hall
    handlers = CommandHandlers(get_report=Reports(hall).command)
    command = c.validate_incoming(
        c.GetReport, {"cmd_id": "r-1", "from": "2026-03-02", "by": "window"}
    )
    result = await handlers.run(command)
    assert result is not None
    assert result["hall"] == HALL
    assert result["views"] == {"window": WINDOWS}
    whole = await handlers.run(
        c.validate_incoming(c.GetReport, {"cmd_id": "r-2", "from": "2026-03-02"})
    )
    assert whole is not None
    assert whole["views"]["staff"] == STAFF
    with pytest.raises(ValidationError):
        c.validate_incoming(c.GetReport, {"cmd_id": "r-3", "from": "2026-03-02", "by": "desk"})
    # What central's console sends: "from", as the contract names it.
    sent = build_command("get_report", ["from=2026-03-02", "by=staff"], cmd_id="r-5")
    assert sent == {"cmd_id": "r-5", "from": "2026-03-02", "by": "staff"}
    with pytest.raises(QueueError, match="swap them"):
        await handlers.run(
            c.validate_incoming(
                c.GetReport, {"cmd_id": "r-4", "from": "2026-03-02", "to": "2026-03-01"}
            )
        )
