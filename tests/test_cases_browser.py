"""Proxy cases in headless Chromium against a running agent: the kiosk's 办件查询 finds a
case by the number on its receipt and shows its status and promised date in plain Chinese,
nothing personal; the cases page lists a case near its deadline for the manager; the window
page reminds its staff. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import chromium, enroll, hall_config, needs_chromium
from test_screens_browser import axe

from agent.config import HallAgentConfig
from agent.core.cases import chinese_date
from agent.daemon import Running, running_agent
from agent.features.access import Role
from agent.features.cases import Registration
from protocols.idcard import check_digit

pytestmark = [needs_chromium, pytest.mark.timeout(180)]

ARTIFACTS = Path(__file__).parent / "artifacts"
NAME = "欧阳娜娜"
ID_NUMBER = "11010819900307246" + check_digit("11010819900307246")
PASSWORD = "cases page pass 1"


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[tuple[Running, Any]]:
    data = hall_config(tmp_path / "state")
    data["services"][0]["guide"] = {"materials": ["本人有效身份证件"], "time_limit_days": 5}
    data["devices"] = [{"id": "caller-w1", "kind": "caller", "transport": {"type": "web"}}]
    data["windows"][0]["devices"] = ["caller-w1"]
    config = HallAgentConfig.model_validate(data)
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        running_agent(config) as running,
        chromium(tmp_path / "profile") as browser,
    ):
        yield running, browser


async def register(running: Running, **changes: Any) -> dict[str, Any]:
    assert running.cases is not None
    entry = Registration(
        service="social",
        window="w1",
        name=NAME,
        id_number=ID_NUMBER,
        materials=["本人有效身份证件"],
        staff="1001",
        **changes,
    )
    case: dict[str, Any] = (await running.cases.register(entry))["case"]
    return case


async def test_the_kiosk_looks_a_case_up_by_its_number(hall: tuple[Running, Any]) -> None:
    running, browser = hall
    case = await register(running)
    token = await enroll(running, "kiosk-1", "kiosk")
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1080, "height": 1920})
    await page.goto(f"{running.url}/pages/kiosk?token={token}")
    await page.wait_for_selector("body[data-connection=live]")

    await page.click("#case-link")
    await page.wait_for_selector("#keypad button[data-key='1']")
    assert await page.input_value("#case-number") == "DB"
    for digit in case["number"][2:]:  # typed on the touch keypad
        await page.click(f"#keypad button[data-key='{digit}']")
    await page.click("#search")
    await page.wait_for_selector("#case-found")

    assert await page.text_content("#case-shown") == case["number"]
    assert await page.text_content("#case-status") == "已受理，正在转交办理"
    promised = dt.date.fromisoformat(case["promised"])
    assert await page.text_content("#case-promised") == chinese_date(promised)
    shown = await page.text_content("body") or ""
    for value in (NAME, "欧***", ID_NUMBER, ID_NUMBER[-4:], "1号窗口", "1001"):
        assert value not in shown
    await page.screenshot(path=str(ARTIFACTS / "kiosk-case-lookup.png"))
    assert await axe(page) == []  # WCAG 2.1 AA: no serious or critical violation

    await page.click("#clear")
    for digit in "20990101001":
        await page.click(f"#keypad button[data-key='{digit}']")
    await page.click("#search")
    await page.wait_for_selector("#case-message")
    assert "没有查到这个办件号" in (await page.text_content("#case-message") or "")


async def test_the_cases_page_and_the_window_page_show_a_case_near_its_deadline(
    hall: tuple[Running, Any],
) -> None:
    running, browser = hall
    assert running.access is not None
    await running.access.add_user("manager-1", Role.MANAGER, [], PASSWORD)
    today = running.hall.business_day()
    near = await register(running, promised=today)  # due today: near its deadline
    later = await register(running, promised=today + dt.timedelta(days=60))

    page = await browser.new_page()
    await page.goto(f"{running.url}/pages/manager/cases")
    assert await page.is_visible("#login-panel")
    assert await page.locator("nav a[href='/pages/manager']").count() == 1
    await page.fill("#login-name", "manager-1")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector(f"tr[data-case='{later['number']}']")
    await page.select_option("#f-due", "near")
    await page.click("#f-apply")
    await page.wait_for_selector(f"tr[data-case='{later['number']}']", state="detached")
    row = page.locator(f"tr[data-case='{near['number']}']")
    assert await row.get_attribute("data-due") == "near"
    assert "即将到期" in (await row.text_content() or "")
    assert NAME not in (await page.text_content("body") or "")
    await page.screenshot(path=str(ARTIFACTS / "manager-cases.png"), full_page=True)
    assert await axe(page) == []

    # The window page, opened with its caller's page token, reminds staff of that case.
    assert running.windows is not None
    token = running.windows.tokens["caller-w1"]
    window = await browser.new_page()
    await window.goto(f"{running.url}/pages/window/w1?token={token}")
    reminder = window.locator(f"#cases-due li[data-case='{near['number']}']")
    await reminder.wait_for()
    assert await reminder.get_attribute("data-due") == "near"
    assert await window.locator(f"#cases-due li[data-case='{later['number']}']").count() == 0
    assert "token=" not in window.url  # taken out of the address bar
    assert await axe(window) == []
