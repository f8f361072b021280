"""One sign-in for the manager's pages, in headless Chromium against a real
``hall-agent run`` (the harness of tests/test_content_browser.py): a manager logs in once on
``/pages/manager`` and moves through the nav to the content, staff and cases pages without
logging in again; logging out on one page ends it on all; a new tab asks again; a staff
login on the cases page keeps working there and opens no manager page.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import needs_chromium
from test_content_browser import (
    PASSWORD,
    browser,  # noqa: F401  (the fixture)
    hall,  # noqa: F401  (the fixture)
)
from test_screens_browser import Hall, guard_offline

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

# Each manager page: its address, what shows once signed in, its "who" line.
PAGES = {
    "/pages/manager": ("#report", "#who"),
    "/pages/manager/content": ("#editor", "#who"),
    "/pages/manager/staff": ("#editor", "#who"),
    "/pages/manager/cases": ("#desk", "#who"),
}


async def signed_in(page: Any, path: str) -> bool:
    """Whether ``path`` (open now) shows its signed-in part, once its script has run."""
    shown, _ = PAGES[path]
    await page.wait_for_function(
        "([a, b]) => !document.querySelector(a).hidden || !document.querySelector(b).hidden",
        arg=[shown, "#login-panel"],
    )
    return bool(await page.locator(shown).is_visible())


async def log_in(page: Any, name: str) -> None:
    await page.fill("#login-name", name)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")


async def test_a_manager_signs_in_once_per_tab(
    hall: Hall,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    outside = await guard_offline(browser, hall.url)
    page = await browser.new_page()
    await page.goto(hall.url + "/pages/manager")
    assert not await signed_in(page, "/pages/manager")
    await log_in(page, "manager-1")
    await page.wait_for_selector("#report:not([hidden])")

    # Through the nav of each page to the next: signed in everywhere, never asked again.
    for path in ("/pages/manager/content", "/pages/manager/staff", "/pages/manager/cases"):
        await page.click(f"nav a[href='{path}']")
        await page.wait_for_url(f"**{path}")
        assert await signed_in(page, path), path
        assert "manager-1" in await page.locator(PAGES[path][1]).inner_text(), path
    await page.click("nav a[href='/pages/manager']")
    await page.wait_for_url("**/pages/manager")
    assert await signed_in(page, "/pages/manager")

    # A second tab has its own session: it asks.
    other = await browser.new_page()
    await other.goto(hall.url + "/pages/manager/content")
    assert not await signed_in(other, "/pages/manager/content")
    await other.close()

    # Logging out on one page ends the session on all of them (and on the server).
    token = await page.evaluate("() => HallManagerSession.get().token")
    await page.goto(hall.url + "/pages/manager/staff")
    assert await signed_in(page, "/pages/manager/staff")
    await page.click("#logout")
    await page.wait_for_selector("#login-panel:not([hidden])")
    for path in PAGES:
        await page.goto(hall.url + path)
        assert not await signed_in(page, path), path
    r = hall.client.get("/api/v1/reports", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert outside == []


async def test_a_staff_login_on_the_cases_page_stays_there(
    hall: Hall,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    page = await browser.new_page()
    await page.goto(hall.url + "/pages/manager/cases")
    await log_in(page, "s-1")
    await page.wait_for_selector("#desk:not([hidden])")
    assert "工作人员 s-1" in await page.locator("#who").inner_text()
    # The manager's pages do not take a staff session: they ask for a manager's login.
    for path in ("/pages/manager", "/pages/manager/content", "/pages/manager/staff"):
        await page.goto(hall.url + path)
        assert not await signed_in(page, path), path
    # Back on the cases page the staff member is still signed in.
    await page.goto(hall.url + "/pages/manager/cases")
    assert await signed_in(page, "/pages/manager/cases")
    assert "工作人员 s-1" in await page.locator("#who").inner_text()
