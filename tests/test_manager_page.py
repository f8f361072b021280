"""The manager's page (/pages/manager) and who may see what is behind it (docs/pages.md,
docs/security.md), against a real running agent: the page itself is served to anyone and
holds no figure; its data and its exports (``GET /api/v1/reports`` as JSON, CSV and XLSX)
refuse no credential (401), a bad one (401), and a staff, kiosk, guide, screen, caller or
rater credential (403), each with a message that says what is needed; a manager's login
and the ops token open them. And the demo's simulated month: made through the engine,
quickly, and not made again over an existing state."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openpyxl
import pytest
from support import bearer, hall_config, ops_token

from agent.config import HallAgentConfig
from agent.core.model import business_day
from agent.daemon import Running, running_agent
from agent.demo.history import fill_history
from agent.demo.simulated_hall import _DEMO_STAFF, demo_config
from agent.features.access import Role
from agent.runtime.store import Store

pytestmark = pytest.mark.timeout(120)

API = "/api/v1"
PASSWORD = "correct horse 1"
FORMATS = ("json", "csv", "xlsx")


class Rig:
    def __init__(self, running: Running, client: httpx.AsyncClient, storage: Path) -> None:
        self.running = running
        self.client = client
        self.tokens = {"ops": ops_token(storage)}

    async def setup(self) -> Rig:
        access = self.running.access
        assert access is not None
        self.tokens["kiosk"] = await access.enroll("kiosk-1", Role.KIOSK)
        self.tokens["screen"] = await access.enroll("screen-1", Role.SCREEN)
        self.tokens["caller"] = await access.enroll("caller-w1", Role.CALLER, "w1")
        self.tokens["rater"] = await access.enroll("rater-w1", Role.RATER, "w1")
        for role, name in (
            (Role.STAFF, "1001"),
            (Role.GUIDE, "guide-1"),
            (Role.MANAGER, "manager-1"),
        ):
            await access.add_user(name, role, ["w1"] if role is Role.STAFF else [], PASSWORD)
            r = await self.client.post(
                f"{API}/auth/login", json={"name": name, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            assert r.json()["role"] == role.value
            self.tokens[role.value] = r.json()["token"]
        return self

    async def report(self, fmt: str, headers: dict[str, str]) -> httpx.Response:
        return await self.client.get(
            f"{API}/reports", params={"from": "today", "format": fmt}, headers=headers
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        yield await Rig(running, client, config.storage.path).setup()


async def test_the_page_is_served_and_holds_no_figure_before_a_login(rig: Rig) -> None:
    r = await rig.client.get("/pages/manager")
    assert r.status_code == 200
    page = r.text
    # The manager's login form (built into its panel by desk-login.js).
    assert 'id="login-panel" data-title="管理员登录"' in page
    assert "/pages/static/desk-login.js" in page
    assert "/pages/static/manager.js" in page
    # Links to the other managers' pages; no outside asset.
    assert 'href="/pages/manager/content"' in page
    assert 'href="/pages/manager/cases"' in page
    assert "http://" not in page
    assert "https://" not in page
    script = await rig.client.get("/pages/static/manager.js")
    assert script.status_code == 200
    assert "/api/v1/reports" in script.text
    assert "https://" not in script.text.replace("http://www.w3.org/2000/svg", "")


async def test_the_data_and_exports_refuse_no_credential_and_a_bad_one(rig: Rig) -> None:
    for fmt in FORMATS:
        r = await rig.report(fmt, {})
        assert r.status_code == 401, fmt
        assert r.headers["www-authenticate"] == "Bearer"
        body = r.json()
        assert body["error"] == "unauthorized"
        assert "Authorization: Bearer" in body["message"]
        r = await rig.report(fmt, bearer("not-a-token-" + "x" * 40))
        assert r.status_code == 401, fmt
        assert "log in again" in r.json()["message"]


async def test_staff_kiosk_and_other_roles_are_refused_with_a_clear_message(rig: Rig) -> None:
    for role in ("staff", "kiosk", "guide", "screen", "caller", "rater"):
        for fmt in FORMATS:
            r = await rig.report(fmt, bearer(rig.tokens[role]))
            assert r.status_code == 403, (role, fmt, r.text)
            body = r.json()
            assert body["error"] == "forbidden"
            # Who they are, what they may not do, and who may.
            assert "may not read the hall's reports" in body["message"]
            assert "manager, ops" in body["message"]
            assert "content-disposition" not in r.headers


async def test_a_manager_login_and_the_ops_token_see_the_data_and_exports(rig: Rig) -> None:
    for role in ("manager", "ops"):
        headers = bearer(rig.tokens[role])
        r = await rig.report("json", headers)
        assert r.status_code == 200, r.text
        assert r.json()["from"] == r.json()["to"]
        assert set(r.json()["views"]) == {"service", "window", "staff", "hour"}
        r = await rig.report("csv", headers)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        assert r.content.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: a spreadsheet reads it
        assert "取号数" in r.content.decode("utf-8-sig")
        r = await rig.report("xlsx", headers)
        assert r.status_code == 200
        book = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True)
        assert "总览" in book.sheetnames


async def test_a_manager_who_logged_out_is_refused_again(rig: Rig) -> None:
    headers = bearer(rig.tokens["manager"])
    r = await rig.client.post(f"{API}/auth/logout", headers=headers)
    assert r.status_code == 200
    r = await rig.report("json", headers)
    assert r.status_code == 401


# -- the demo's month ------------------------------------------------------------------------


def test_the_demo_month_is_played_through_the_engine_and_kept(tmp_path: Path) -> None:
    config = demo_config(tmp_path / "demo", 0)
    zone = config.hall.zone
    now = dt.datetime(2026, 3, 31, 15, 0, tzinfo=zone)  # a Tuesday afternoon
    filled = fill_history(config, _DEMO_STAFF, days=30, now=now)
    assert filled is not None
    today = business_day(now, config)
    assert filled.first == today - dt.timedelta(days=30)
    assert filled.last == today
    # A busy hall: around a hundred citizens a weekday, fewer at weekends.
    assert 30 * 60 < filled.tickets < 31 * 150
    store = Store.open(config.storage.path)
    try:
        tickets, spans = store.report_records(filled.first, today, 0.0, now.timestamp() + 1)
        bad = store.bad_ratings(filled.first, today)
        roster = store.setting("staff")
        # Today up to now: its events are in the outbox, as the hall's writer leaves them.
        events = store.events(1, 100_000)
    finally:
        store.close()
    assert len(tickets) == filled.tickets
    days = {t.day for t in tickets}
    assert len(days) == 31
    hours = {t.hour for t in tickets}
    assert min(hours) >= 8
    assert max(hours) <= 17
    outcomes = {t.outcome for t in tickets}
    assert {"served", "no_show", "cancelled"} <= outcomes
    assert any(t.transfers for t in tickets)
    rated = [t for t in tickets if t.rating is not None]
    assert len(rated) > len(tickets) // 2
    assert bad  # some 差评, each with its reason, window and staff
    assert all(b.level <= 2 and b.reasons and b.window and b.staff for b in bad)
    assert {s.kind for s in spans} == {"duty", "paused"}
    assert {m["staff"] for m in roster} >= {t.staff for t in tickets if t.staff}
    # Nothing from today is later than now; the past days' events stay out of the outbox.
    assert all(t.issued_at <= now.timestamp() for t in tickets)
    assert events
    issued_on = {
        dt.datetime.fromisoformat(e.at).astimezone(zone).date()
        for e in events
        if e.type == "ticket.issued"
    }
    assert issued_on == {today}
    # A second start finds the history there and leaves it alone.
    assert fill_history(config, _DEMO_STAFF, days=30, now=now) is None


def test_the_demo_started_before_opening_time_plays_nothing_of_today(tmp_path: Path) -> None:
    config = demo_config(tmp_path / "demo", 0)
    zone = config.hall.zone
    now = dt.datetime(2026, 3, 31, 6, 30, tzinfo=zone)  # before the hall opens
    filled = fill_history(config, _DEMO_STAFF, days=2, now=now)
    assert filled is not None
    store = Store.open(config.storage.path)
    try:
        tickets, _ = store.report_records(filled.first, filled.last, 0.0, now.timestamp() + 1)
        events = store.events(1, 100_000)
    finally:
        store.close()
    assert {t.day for t in tickets} == {"2026-03-29", "2026-03-30"}
    # Nothing is later than the moment the demo started.
    assert all(dt.datetime.fromisoformat(e.at) <= now for e in events)
    assert all((t.issued_at <= now.timestamp()) for t in tickets)
