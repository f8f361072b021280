"""The manager's page (/pages/manager) in headless Chromium (Debian's, driven by Playwright)
against a real ``hall-agent run``.

Yesterday is a scripted day (a fixed list of operations at fixed times, played through the
queue engine and committed to the store before the agent starts); a manager logs in on the
page and sees today live (a ticket taken meanwhile shows up by itself), then yesterday:
every figure the page shows — the overview, the bars of tickets per hour, the waiting time
per service, the 好差评 ring, the staff and window tables, the bad ratings — is the
script's and the API's (``GET /api/v1/reports``), a range picked with the dates gives the
same, both exports download, axe-core finds no serious or critical violation (the login
form, the report at 1920x1080 and at 1280x800), nothing is asked of another host, and
screenshots at 1920x1080 and 1280x800 are kept in ``tests/artifacts/manager/``. A staff
login is refused by the page; ops opens it with the ops token in its address.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from support import AgentProcess, chromium, hall_config, needs_chromium, ops_headers, write_config
from test_screens_browser import axe, guard_offline, settled

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import QueueEngine
from agent.core.events import Event
from agent.core.model import Priority, Source, business_day
from agent.runtime.store import Store

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "manager"
PASSWORD = "manager password 1"
ROSTER = [
    {"staff": "s-001", "name": "王芳"},
    {"staff": "s-002", "name": "李明"},
    {"staff": "s-003", "name": "张伟"},
]

pytestmark = [needs_chromium, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manager_config(storage: Path, port: int) -> dict[str, Any]:
    config = hall_config(storage, port=port, rating={"start_on": "request"})
    config["devices"] = [
        {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
        {"id": "rater-w2", "kind": "rater", "transport": {"type": "web"}},
    ]
    config["windows"][0]["devices"] = ["rater-w1"]
    config["windows"][1]["devices"] = ["rater-w2"]
    return config


def script(day: dt.date, reasons: list[str]) -> list[tuple[str, op.Operation]]:
    """The scripted day: six tickets (waits 10, 15, 30, 55 and 5 minutes; served in 10, 20,
    10 and 15), a no-show, one left to expire, a lunch pause of 30 minutes, three ratings
    (5, 2 and 1: two 差评 with their reasons)."""
    return [
        ("08:50", op.SignIn(window="w1", staff="s-001")),
        ("08:50", op.SignIn(window="w2", staff="s-002")),
        ("08:50", op.SignIn(window="w3", staff="s-003")),
        ("09:00", op.Take(service="social", source=Source.TOUCH)),  # A001
        ("09:05", op.Take(service="social", source=Source.BUTTON)),  # A002
        ("09:10", op.Take(service="civil", source=Source.QR, priority=Priority.ELDERLY)),  # B001
        ("09:10", op.CallNumber(window="w1", number="A001")),  # waited 10
        ("09:20", op.Take(service="housing", source=Source.API)),  # C001
        ("09:20", op.Finish(window="w1")),  # served in 10
        ("09:21", op.RequestRating(window="w1")),
        ("09:21", op.Rate(window="w1", level=5)),
        ("09:25", op.CallNumber(window="w2", number="B001")),  # waited 15
        ("09:45", op.Finish(window="w2")),  # served in 20
        ("09:46", op.RequestRating(window="w2")),
        ("09:46", op.Rate(window="w2", level=2, reasons=(reasons[0],), comment="等太久")),
        ("09:50", op.CallNumber(window="w3", number="C001")),  # waited 30
        ("09:52", op.NoShow(window="w3")),
        ("10:00", op.CallNumber(window="w1", number="A002")),  # waited 55
        ("10:05", op.Pause(window="w3", reason="午休")),
        ("10:10", op.Finish(window="w1")),  # served in 10
        ("10:11", op.RequestRating(window="w1")),
        ("10:11", op.Rate(window="w1", level=1, reasons=(reasons[1],))),
        ("10:30", op.Take(service="general", source=Source.TOUCH)),  # D001: expires
        ("10:35", op.Resume(window="w3")),  # paused 30
        ("14:00", op.Take(service="social", source=Source.TOUCH)),  # A003
        ("14:05", op.CallNumber(window="w3", number="A003")),  # waited 5
        ("14:20", op.Finish(window="w3")),  # served in 15
        ("17:00", op.SignOut(window="w1")),
        ("17:00", op.SignOut(window="w2")),
        ("17:00", op.SignOut(window="w3")),
    ]


def play_yesterday(config: HallAgentConfig) -> dt.date:
    """The scripted day, yesterday, through the engine into the store; the day closed."""
    zone = config.hall.zone
    today = business_day(dt.datetime.now(zone), config)
    day = today - dt.timedelta(days=1)

    def at(hhmm: str, on: dt.date = day) -> dt.datetime:
        return dt.datetime.combine(on, dt.time.fromisoformat(hhmm), zone)

    store = Store.open(config.storage.path)
    try:
        engine = QueueEngine.fresh(config, at("08:00"))
        store.append(
            [Event(ev.RosterSet(count=len(ROSTER)), at("08:00"))], settings={"staff": ROSTER}
        )
        steps = [
            *script(day, config.rating.reasons),
            (f"{config.hall.day_start_hour:02d}:05", op.Tick()),
        ]
        for n, (hhmm, operation) in enumerate(steps):
            when = at(hhmm, today if n == len(steps) - 1 else day)
            store.commit(engine.apply(operation, when), engine.hall)
    finally:
        store.close()
    return day


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(tmp_path / "profile") as context:
        yield context


async def shown(page: Any, selector: str) -> str:
    return str(await page.locator(selector).text_content()).strip()


def minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


async def check_figures(page: Any, report: dict[str, Any]) -> None:
    """Every figure on the page against the report's JSON."""
    hall = report["hall"]
    assert await shown(page, "#kpi-issued") == str(hall["issued"])
    assert await shown(page, "#kpi-served") == str(hall["served"])
    assert await shown(page, "#kpi-wait") == minutes(hall["wait_minutes"]["mean"])
    assert await shown(page, "#kpi-service") == minutes(hall["service_minutes"]["mean"])
    assert await shown(page, "#kpi-good-rate") == percent(hall["ratings"]["good_rate"])
    assert await shown(page, "#kpi-bad") == str(hall["ratings"]["bad"])
    assert await shown(page, "#kpi-no-show") == str(hall["no_show"])
    # Tickets per hour: one bar per hour, its height's figure the API's.
    bars = await page.eval_on_selector_all(
        "#chart-hours .bar", "bs => bs.map(b => [b.dataset.hour, Number(b.dataset.value)])"
    )
    by_hour = {g["key"]: g["issued"] for g in report["views"]["hour"]}
    assert {h: v for h, v in bars if v} == by_hour
    # Waiting time by service: mean and P90.
    waits = await page.eval_on_selector_all(
        "#chart-waits .wait",
        "ws => ws.map(w => [w.dataset.service, Number(w.dataset.mean), Number(w.dataset.p90)])",
    )
    expected = [
        [g["key"], g["wait_minutes"]["mean"], g["wait_minutes"]["p90"]]
        for g in report["views"]["service"]
        if g["wait_minutes"]["count"]
    ]
    assert waits == expected
    # 好差评: the ring's counts and 好评率.
    levels = await page.eval_on_selector_all(
        "#chart-ratings li",
        "ls => ls.map(l => [l.dataset.level, l.querySelector('.count').textContent])",
    )
    assert dict(levels) == {k: str(v) for k, v in hall["ratings"]["levels"].items()}
    assert await shown(page, "#good-rate") == percent(hall["ratings"]["good_rate"])
    # The staff and the windows.
    for table, view in (("#staff", "staff"), ("#windows", "window")):
        for group in report["views"][view]:
            row = f"{table} tr[data-key='{group['key']}']"
            assert group["name"] in await shown(page, f"{row} th")
            assert await shown(page, f"{row} [data-figure=served]") == str(group["served"])
            assert await shown(page, f"{row} [data-figure=no_show]") == str(group["no_show"])
            assert await shown(page, f"{row} [data-figure=service_mean]") == minutes(
                group["service_minutes"]["mean"]
            )
            assert await shown(page, f"{row} [data-figure=ratings]") == str(
                group["ratings"]["count"]
            )
            assert await shown(page, f"{row} [data-figure=good_rate]") == percent(
                group["ratings"]["good_rate"]
            )
            assert await shown(page, f"{row} [data-figure=bad]") == str(group["ratings"]["bad"])
    # Every 差评, with its reasons, window and staff member.
    rows = await page.eval_on_selector_all(
        "#bad tr[data-ticket]", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert len(rows) == len(report["bad_ratings"])
    for bad in report["bad_ratings"]:
        row = next(r for r in rows if r[2] == bad["ticket"])
        assert row[3] == bad["service_name"]
        assert row[4] == bad["window_name"]
        assert row[5] == bad["staff_name"]
        assert row[7] == "、".join(bad["reasons"])


async def test_the_manager_sees_today_live_and_a_scripted_day_as_the_api_says(
    tmp_path: Path, browser: Any
) -> None:
    storage = tmp_path / "state"
    data = manager_config(storage, free_port())
    config = HallAgentConfig.model_validate(data)
    day = play_yesterday(config)
    agent = AgentProcess(write_config(tmp_path / "config.yaml", data), storage, tmp_path / "a.log")
    url = agent.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside = await guard_offline(browser, url)
    try:
        async with httpx.AsyncClient(base_url=url, headers=ops_headers(storage)) as api:
            for name, role in (("mgr-1", "manager"), ("1001", "staff")):
                body = {"name": name, "role": role, "password": PASSWORD}
                if role == "staff":
                    body["windows"] = ["w1"]
                r = await api.post("/api/v1/auth/users", json=body)
                assert r.status_code == 201, r.text

            async def report(first: str, last: str) -> dict[str, Any]:
                r = await api.get("/api/v1/reports", params={"from": first, "to": last})
                assert r.status_code == 200, r.text
                answer: dict[str, Any] = r.json()
                return answer

            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            await page.goto(f"{url}/pages/manager")
            await page.wait_for_selector("body[data-connection=live]")
            assert await page.locator("#report").is_hidden()
            violations = await axe(page)  # the login form
            assert not violations, json.dumps(violations, ensure_ascii=False, indent=1)

            # A staff login is not a manager's: the page says so and shows nothing.
            await page.fill("#login-name", "1001")
            await page.fill("#login-password", PASSWORD)
            await page.click("#login-submit")
            await page.wait_for_selector("#login-message.error")
            assert "不是大厅管理员账号" in await shown(page, "#login-message")
            assert await page.locator("#report").is_hidden()

            await page.fill("#login-name", "mgr-1")
            await page.fill("#login-password", PASSWORD)
            await page.click("#login-submit")
            today = (await report("today", "today"))["from"]
            await page.wait_for_selector(f"#report[data-range='{today}_{today}']")
            assert await page.locator("#live").is_visible()
            assert await shown(page, "#kpi-issued") == "0"
            # Today is live: a ticket taken now shows up without touching the page.
            r = await api.post("/api/v1/tickets", json={"service": "social"})
            assert r.status_code == 201, r.text
            await page.wait_for_function(
                "document.getElementById('kpi-issued').textContent === '1'", timeout=20000
            )
            await check_figures(page, await report("today", "today"))

            # Yesterday: the scripted day, as the API has it and as the script says.
            await page.click("button[data-range=yesterday]")
            await page.wait_for_selector(f"#report[data-range='{day}_{day}']")
            assert await page.locator("#live").is_hidden()
            yesterday = await report(day.isoformat(), day.isoformat())
            await check_figures(page, yesterday)
            assert await shown(page, "#kpi-issued") == "6"
            assert await shown(page, "#kpi-served") == "4"
            assert await shown(page, "#kpi-wait") == "23.0"  # (10 + 15 + 30 + 55 + 5) / 5
            assert await shown(page, "#kpi-service") == "13.8"  # (10 + 20 + 10 + 15) / 4
            assert await shown(page, "#kpi-good-rate") == "33.3%"  # 1 of 3
            assert await shown(page, "#kpi-bad") == "2"
            assert await shown(page, "#kpi-open") == "1"  # 过期: D001
            hours = await page.eval_on_selector_all(
                "#chart-hours .bar[data-value]:not([data-value='0'])",
                "bs => bs.map(b => b.dataset.hour + '=' + b.dataset.value)",
            )
            assert hours == ["09=4", "10=1", "14=1"]
            assert await shown(page, "#staff tr[data-key='s-003'] [data-figure=paused]") == "30分"
            assert await page.locator("#bad tr[data-ticket]").count() == 2
            await page.screenshot(path=str(ARTIFACTS / "manager-1920x1080.png"))
            await page.screenshot(path=str(ARTIFACTS / "manager-full-1920.png"), full_page=True)
            violations = await axe(page)
            assert not violations, json.dumps(violations, ensure_ascii=False, indent=1)

            # A range from the date pickers: the day before has nothing, the figures stay.
            before = (day - dt.timedelta(days=1)).isoformat()
            await page.fill("#from", before)
            await page.fill("#to", day.isoformat())
            await page.click("#apply")
            await page.wait_for_selector(f"#report[data-range='{before}_{day}']")
            assert "共 2 天" in await shown(page, "#range-label")
            await check_figures(page, await report(before, day.isoformat()))
            assert await shown(page, "#kpi-issued") == "6"

            # The exports of the range shown, through the API, with Chinese headers.
            async with page.expect_download() as csv_download:
                await page.click("#export-csv")
            saved = tmp_path / "report.csv"
            await (await csv_download.value).save_as(saved)
            assert (await csv_download.value).suggested_filename == f"report-{before}_{day}.csv"
            assert "取号数" in saved.read_text(encoding="utf-8-sig")
            async with page.expect_download() as xlsx_download:
                await page.click("#export-xlsx")
            saved = tmp_path / "report.xlsx"
            await (await xlsx_download.value).save_as(saved)
            book = openpyxl.load_workbook(io.BytesIO(saved.read_bytes()), read_only=True)
            assert "总览" in book.sheetnames

            # The tablet: the same page at 1280x800, nothing runs out sideways.
            await page.set_viewport_size({"width": 1280, "height": 800})
            await settled(page, 1280, 800)
            await page.wait_for_selector("#report[data-width='1280']")  # drawn again for it
            await page.wait_for_function("document.documentElement.scrollWidth <= innerWidth")
            await page.screenshot(path=str(ARTIFACTS / "manager-1280x800.png"))
            violations = await axe(page)
            assert not violations, json.dumps(violations, ensure_ascii=False, indent=1)
            await page.set_viewport_size({"width": 1920, "height": 1080})
            await settled(page, 1920, 1080)
            await page.wait_for_selector("#report[data-width='1920']")
            assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")

            # Logged out: the figures go, the login comes back.
            await page.click("#logout")
            await page.wait_for_selector("#login-panel:not([hidden])")
            assert await page.locator("#report").is_hidden()

            # Ops opens it with the ops token once in the address: kept for the tab, taken
            # off the address bar.
            ops = await browser.new_page()
            token = (storage / "ops-token").read_text(encoding="utf-8").strip()
            await ops.goto(f"{url}/pages/manager?token={token}")
            await ops.wait_for_selector(f"#report[data-range='{today}_{today}']")
            assert token not in ops.url
            assert await shown(ops, "#who") == "运维人员"
        assert outside == []
        assert errors == []
    finally:
        agent.kill()
