"""The staff board edited on the manager's staff page (/pages/manager/staff), in headless
Chromium against a real ``hall-agent run`` (the harness of tests/test_shifts_browser.py):

- a manager logs in, sees where the rota came from (配置文件), renames a member, gives
  them a photo (uploaded through the content checks) and makes them B of window 2 for
  the whole week; on save the page says 本大厅编辑 and the big screen's staff board shows
  them standing in at window 2 with their new name and photo, the calls still whole;
- the server's own check-config lines are shown when the rota is not valid;
- a staff login opens nothing on the page;
- axe-core finds no serious or critical violation on the page; nothing is loaded from
  outside the hall.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import needs_chromium
from test_content_browser import png
from test_screens_browser import (
    ARTIFACTS,
    CALLS,
    Hall,
    axe,
    browser,  # noqa: F401  (the fixture)
    guard_offline,
    open_page,
)
from test_shifts_browser import STAFF, rota_agent

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

PASSWORD = "correct horse 1"


@pytest.fixture
def staff_hall(tmp_path: Path) -> Iterator[Hall]:
    with rota_agent(tmp_path) as hall:
        hall.post(
            "/api/v1/auth/users", {"name": "manager-1", "role": "manager", "password": PASSWORD}
        )
        hall.post(
            "/api/v1/auth/users",
            {"name": "s-1", "role": "staff", "windows": ["w1"], "password": PASSWORD},
        )
        hall.post("/api/v1/windows/w1/sign-in", {"staff": "s-1"})
        yield hall


async def log_in(page: Any, url: str, name: str) -> None:
    await page.goto(url + "/pages/manager/staff")
    await page.wait_for_selector("body[data-connection=live]")
    await page.fill("#login-name", name)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")


async def test_the_board_edited_on_the_page_shows_on_the_big_screen(
    staff_hall: Hall,
    browser: Any,  # noqa: F811
) -> None:
    hall = staff_hall
    hall.post("/api/v1/tickets", {"service": "social"})
    hall.call_next("w1")
    outside = await guard_offline(browser, hall.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # A staff login opens nothing here.
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1366, "height": 900})
    await log_in(page, hall.url, "s-1")
    await page.wait_for_function(
        "() => document.getElementById('login-message').textContent.includes('不是管理员')"
    )
    assert await page.locator("#editor").is_hidden()

    await log_in(page, hall.url, "manager-1")
    await page.wait_for_selector("#source-name[data-source=file]")
    assert await page.locator("#source-name").inner_text() == "配置文件"
    assert await page.locator("#roster tr").count() == len(STAFF)

    screen = await browser.new_page()
    await screen.set_viewport_size({"width": 1920, "height": 1080})
    await open_page(screen, hall.url + "/pages/hall")
    # w2's A (s-2) is absent: its B (s-8, 周杰) stands in.
    await screen.wait_for_selector("#staff .member[data-staff='s-8'][data-window='w2']")

    # A rota the config's checks refuse: B without A is stopped on the page itself.
    first_a = page.locator("table[data-window=w2] select[aria-label$='A岗']").first
    await first_a.select_option("")
    await page.click("#save")
    await page.wait_for_function(
        "() => document.getElementById('problems').textContent.includes('没有 A 岗')"
    )
    await first_a.select_option("s-2")

    # 赵敏 (s-7) renamed 赵敏敏, given a photo, and made w2's B for the whole week.
    row = page.locator("#roster tr[data-staff='s-7']")
    await row.locator("input.name").fill("赵敏敏")
    await row.locator("input[type=file]").set_input_files(
        files=[{"name": "赵敏.png", "mimeType": "image/png", "buffer": png(600, 800)}]
    )
    await page.wait_for_selector("#roster tr[data-staff='s-7'] img")
    b_posts = page.locator("table[data-window=w2] select[aria-label$='B岗']")
    for i in range(await b_posts.count()):
        await b_posts.nth(i).select_option("s-7")
    await page.screenshot(path=str(ARTIFACTS / "staff-page-1366x900.png"), full_page=True)
    await page.click("#save")
    await page.wait_for_selector("#source-name[data-source=hall]")
    assert await page.locator("#source-name").inner_text() == "本大厅编辑"
    assert "已保存" in await page.locator("#message").inner_text()

    # The big screen follows at once: 赵敏敏 stands in at w2, with her photo.
    member = screen.locator("#staff .member[data-staff='s-7'][data-window='w2']")
    await member.wait_for()
    assert "stands-in" in (await member.get_attribute("class") or "")
    assert "赵敏敏" in await member.inner_text()
    src = await member.locator("img").get_attribute("src")
    assert src is not None
    assert src.startswith("/pages/content/images/")
    await screen.wait_for_function(
        "() => { const i = document.querySelector(\"#staff .member[data-staff='s-7'] img\");"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert await screen.locator("#staff .member[data-staff='s-8']").count() == 0
    cards = await screen.evaluate(CALLS)
    assert len(cards) == 1
    assert all(c["inside"] and c["uncovered"] for c in cards), cards
    await screen.screenshot(path=str(ARTIFACTS / "hall-staff-edited-1920x1080.png"))

    # A member the rota names given another number: the rota names one the roster has
    # not, and the server answers with check-config's own line.
    await page.locator("#roster tr[data-staff='s-7'] input.number").fill("s-77")
    assert (
        await page.locator(
            "table[data-window=w2] select[aria-label$='B岗'] option[value='s-7']"
        ).first.inner_text()
        == "s-7（不在名单中）"
    )
    await page.click("#save")
    await page.wait_for_function(
        "() => document.getElementById('problems').textContent.includes(\"unknown staff 's-7'\")"
    )
    assert "未保存" in await page.locator("#message").inner_text()

    violations = await axe(page)
    assert violations == [], json.dumps(violations, ensure_ascii=False, indent=1)
    assert outside == []


async def test_the_shifts_times_are_edited_on_the_page(
    staff_hall: Hall,
    browser: Any,  # noqa: F811
) -> None:
    """A manager adds an evening shift and moves the afternoon's end: a shift ending before it
    starts is stopped on the page, an overlap is refused with check-config's own line, and
    what is saved is what the page showed (23:59:59 keeps its seconds until edited)."""
    hall = staff_hall
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1366, "height": 900})
    await log_in(page, hall.url, "manager-1")
    await page.wait_for_selector("#source-name[data-source=file]")
    assert await page.locator("#shifts tr").count() == 2
    assert await page.locator("#shifts tr[data-shift=pm] input[type=time]").nth(
        1
    ).input_value() == ("23:59:59")

    # An evening shift from 22:00 to 23:59: the afternoon still runs to 23:59:59.
    await page.click("#add-shift")
    added = page.locator("#shifts tr").nth(2)
    assert await added.locator("input[type=time]").nth(0).input_value() == "22:00"
    await added.locator("input.shift-name").fill("晚班")
    await page.click("#save")
    await page.wait_for_function(
        "() => document.getElementById('problems').textContent.includes('rota.shifts[2]')"
    )
    assert "未保存" in await page.locator("#message").inner_text()

    # The end typed before the start: the page says so itself.
    await added.locator("input[type=time]").nth(1).fill("21:00")
    await page.click("#save")
    await page.wait_for_function(
        "() => document.getElementById('problems').textContent.includes('要晚于开始时间')"
    )

    await added.locator("input[type=time]").nth(1).fill("23:30")
    await page.locator("#shifts tr[data-shift=pm] input[type=time]").nth(1).fill("22:00")
    # The rota's grid has a row for the new shift at every window.
    await page.wait_for_selector("table[data-window=w1] th:has-text('晚班 22:00-23:30')")
    await page.click("#save")
    await page.wait_for_selector("#source-name[data-source=hall]")
    answer = hall.client.get("/api/v1/staffing")
    assert answer.status_code == 200, answer.text
    saved = answer.json()["rota"]["shifts"]
    assert [(s["name"], s["start"][:5], s["end"][:5]) for s in saved] == [
        ("上午", "00:00", "12:00"),
        ("下午", "12:00", "22:00"),
        ("晚班", "22:00", "23:30"),
    ]
    # A reload shows what was saved.
    await page.reload()
    await page.wait_for_selector("#shifts tr:nth-child(3)")
    assert await page.locator("#shifts tr").nth(2).locator("input.shift-name").input_value() == (
        "晚班"
    )
