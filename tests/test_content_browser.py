"""The hall's own screen content in headless Chromium, against a real ``hall-agent run``
(the harness of tests/test_screens_browser.py: six windows, a roster, central's notice):

- a manager logs in on ``/pages/manager/content``, adds a notice and a news item with an
  uploaded picture (a preview shows it), edits and deletes; the big screen shows each
  change — notices by priority with central's marked, the news item with its image from
  the agent — while every current call stays inside the viewport and uncovered, at every
  screen size, and nothing is loaded from outside the hall;
- news and job items take turns on the big screen;
- a script renamed .png is refused on the page with the server's plain message;
- a staff login opens nothing on the page;
- axe-core finds no serious or critical violation on the content page or on the big screen
  showing content.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import AgentProcess, chromium, needs_chromium, write_config
from test_screens_browser import (
    ARTIFACTS,
    CALLS,
    CLIPPED,
    VIEWPORTS,
    Hall,
    axe,
    free_port,
    guard_offline,
    open_page,
    screens_config,
    seed,
    settled,
)

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

PASSWORD = "correct horse 1"
NOTICE = "今天下午三点停电检修，请提前办理"
CENTRAL = "今日下午社保系统升级，请提前取号"  # seeded as central pushed it


def png(width: int = 1600, height: int = 900) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (200, 120, 60))
    ImageDraw.Draw(image).ellipse((100, 100, width - 100, height - 100), fill=(250, 220, 80))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def hall(tmp_path: Path) -> Iterator[Hall]:
    storage = tmp_path / "state"
    photos = tmp_path / "photos"
    seed(storage, photos)
    config = screens_config(storage, photos, free_port())
    config["pages"]["content"] = {"rotation_s": 3}
    agent = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    agent.start()
    running = Hall(agent, storage)
    try:
        running.post(
            "/api/v1/auth/users", {"name": "manager-1", "role": "manager", "password": PASSWORD}
        )
        running.post(
            "/api/v1/auth/users",
            {"name": "s-1", "role": "staff", "windows": ["w1"], "password": PASSWORD},
        )
        yield running
    finally:
        running.client.close()
        agent.kill()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(tmp_path / "profile") as context:
        yield context


async def log_in(page: Any, url: str, name: str) -> None:
    await page.goto(url + "/pages/manager/content")
    await page.wait_for_selector("body[data-connection=live]")
    if await page.locator("#editor").is_visible():
        return  # still logged in (the session is kept for the tab)
    await page.fill("#login-name", name)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")


async def calls_shown(page: Any, count: int) -> list[str]:
    """What is wrong with the big screen's current calls (empty: all shown whole)."""
    cards = await page.evaluate(CALLS)
    problems = [] if len(cards) == count else [f"{len(cards)} calls shown, not {count}"]
    problems += [str(c) for c in cards if not (c["inside"] and c["uncovered"])]
    return problems


async def test_content_edited_on_the_page_appears_on_the_big_screen_while_calls_show(
    hall: Hall, browser: Any
) -> None:
    for service in ("social", "civil", "housing"):
        hall.post("/api/v1/tickets", {"service": service})
    called = [hall.call_next(w) for w in ("w1", "w2", "w3")]
    outside = await guard_offline(browser, hall.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    editor = await browser.new_page()
    await editor.set_viewport_size({"width": 1366, "height": 900})
    await log_in(editor, hall.url, "manager-1")
    await editor.wait_for_selector("#editor:not([hidden])")
    screen = await browser.new_page()
    await open_page(screen, hall.url + "/pages/hall")
    assert await calls_shown(screen, 3) == []

    # A notice, priority 5: before central's on every screen's ticker.
    await editor.select_option("#kind", "notice")
    await editor.fill("#text", NOTICE)
    await editor.fill("#priority", "5")
    await editor.click("#save")
    await editor.wait_for_selector("#notice-list tr")
    await screen.wait_for_function(
        "t => document.getElementById('notices').textContent.includes(t)", arg=NOTICE
    )
    ticker = [s.strip() for s in await screen.locator("#notices .track span").all_inner_texts()]
    assert ticker == [NOTICE, f"【上级通知】{CENTRAL}"]

    # A news item with a picture: uploaded, previewed, saved; shown beside the calls.
    await editor.select_option("#kind", "news")
    await editor.fill("#title", "社区义诊进小区")
    await editor.fill("#text", "本周六上午九点，社区卫生服务中心在中心广场免费量血压、测血糖。")
    await editor.set_input_files(
        "#image-file", files=[{"name": "义诊.png", "mimeType": "image/png", "buffer": png()}]
    )
    await editor.wait_for_selector("#image-shown")
    await editor.wait_for_function(
        "() => { const i = document.querySelector('#preview img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    await editor.screenshot(path=str(ARTIFACTS / "content-page-1366x900.png"), full_page=True)
    await editor.click("#save")
    await editor.wait_for_selector("#news-list tr")
    await screen.wait_for_selector("#bulletin[data-kind=news]")
    await screen.wait_for_function(
        "() => { const i = document.querySelector('#bulletin img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert "社区义诊进小区" in await screen.locator("#bulletin").inner_text()
    src = await screen.locator("#bulletin img").get_attribute("src")
    assert src is not None
    assert src.startswith("/pages/content/images/")

    # Every current call stays whole and on top, at every size, with the content shown.
    problems: dict[str, list[str]] = {}
    for width, height in VIEWPORTS:
        await screen.set_viewport_size({"width": width, "height": height})
        await settled(screen, width, height)
        found = await calls_shown(screen, 3) + await screen.evaluate(CLIPPED)
        box = await screen.locator("#bulletin").bounding_box()
        if box is None or box["y"] + box["height"] > height + 1:
            found.append(f"the news item is not inside the screen: {box}")
        if found:
            problems[f"{width}x{height}"] = found
        await screen.screenshot(path=str(ARTIFACTS / f"hall-content-{width}x{height}.png"))
    assert problems == {}
    assert sorted(
        await screen.locator("#current .call").evaluate_all(
            "cards => cards.map((c) => c.dataset.ticket)"
        )
    ) == sorted(called)

    # Edited on the page: the screen follows; deleted: it leaves.
    await editor.click("#news-list tr [data-action=edit]")
    await editor.fill("#title", "社区义诊改到周日")
    await editor.click("#save")
    await screen.wait_for_function(
        "() => document.getElementById('bulletin').textContent.includes('社区义诊改到周日')"
    )
    await editor.click("#notice-list tr [data-action=delete]")
    await screen.wait_for_function(
        "t => !document.getElementById('notices').textContent.includes(t)", arg=NOTICE
    )
    assert await calls_shown(screen, 3) == []
    assert outside == []


async def test_news_and_jobs_take_turns(hall: Hall, browser: Any) -> None:
    hall.post("/api/v1/content/news", {"title": "社区动态一则", "text": "周末有文艺演出"})
    hall.post("/api/v1/content/jobs", {"title": "招聘保洁员", "text": "两名，电话 12345"})
    screen = await browser.new_page()
    await open_page(screen, hall.url + "/pages/hall")
    first = await screen.locator("#bulletin").get_attribute("data-kind")
    other = "job" if first == "news" else "news"
    await screen.wait_for_selector(f"#bulletin[data-kind={other}]", timeout=10_000)
    await screen.wait_for_selector(f"#bulletin[data-kind={first}]", timeout=10_000)
    assert "1/2" in await screen.locator("#bulletin h2").inner_text() or "2/2" in (
        await screen.locator("#bulletin h2").inner_text()
    )


async def test_a_hostile_upload_on_the_page_is_refused_with_its_message(
    hall: Hall, browser: Any
) -> None:
    page = await browser.new_page()
    await log_in(page, hall.url, "manager-1")
    await page.wait_for_selector("#editor:not([hidden])")
    await page.select_option("#kind", "news")
    script = b"#!/bin/sh\nrm -rf / --no-preserve-root\n"
    await page.set_input_files(
        "#image-file", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": script}]
    )
    await page.wait_for_selector("#message.error")
    message = await page.locator("#message").inner_text()
    assert "图片未上传" in message
    assert "脚本" in message
    assert await page.locator("#image-shown").count() == 0
    assert hall.client.get("/api/v1/content/images").json()["images"] == []


async def test_a_staff_login_opens_nothing_on_the_content_page(hall: Hall, browser: Any) -> None:
    page = await browser.new_page()
    await log_in(page, hall.url, "s-1")
    await page.wait_for_selector("#login-message.error")
    assert "不是管理员账号" in await page.locator("#login-message").inner_text()
    assert await page.locator("#editor").is_hidden()


async def test_no_serious_accessibility_violation_on_the_content_page_and_screen(
    hall: Hall, browser: Any
) -> None:
    upload = hall.client.post(
        "/api/v1/content/images",
        content=png(),
        headers={"Content-Type": "application/octet-stream", "X-File-Name": "a.png"},
    )
    assert upload.status_code == 201, upload.text
    image = upload.json()["id"]
    hall.post("/api/v1/notices", {"text": NOTICE, "priority": 2})
    hall.post("/api/v1/content/news", {"title": "社区义诊", "text": "周六上午", "image": image})
    hall.post("/api/v1/tickets", {"service": "social"})
    hall.call_next("w1")
    page = await browser.new_page()
    found: dict[str, Any] = {}
    for width, height in [(1920, 1080), (1366, 768)]:
        await page.set_viewport_size({"width": width, "height": height})
        await log_in(page, hall.url, "manager-1")
        await page.wait_for_selector("#news-list tr")
        violations = await axe(page)
        if violations:
            found[f"content {width}x{height}"] = violations
        await open_page(page, hall.url + "/pages/hall")
        await page.wait_for_selector("#bulletin[data-kind=news] img")
        violations = await axe(page)
        if violations:
            found[f"hall {width}x{height}"] = violations
    assert found == {}
