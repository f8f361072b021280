"""The pages in headless Chromium (Debian's, driven by Playwright; no browser is
downloaded): a citizen takes a ticket on the kiosk page, a window calls it through the
CLI, the big screen and the window page show it; the agent is killed and started again
and the pages recover by themselves. Screenshots are kept in tests/artifacts/."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import AgentProcess, chromium, hall_config, needs_chromium, write_config

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = needs_chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(tmp_path / "profile") as context:
        yield context


def cli(url: str, storage: Path, *args: str) -> str:
    token = str(storage / "ops-token")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--api", url, "--token-file", token],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("HALL_")},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_kiosk_call_screens_and_recovery_after_kill(tmp_path: Path, browser: Any) -> None:
    port = free_port()
    storage = tmp_path / "state"
    config = hall_config(storage, port=port)
    config["devices"] = [{"id": "screen-w1", "kind": "screen", "role": "window"}]
    config["windows"][0]["devices"] = ["screen-w1"]
    agent = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    url = await asyncio.to_thread(agent.start)
    ARTIFACTS.mkdir(exist_ok=True)
    # The kiosk is enrolled (its token shown once) and opened with its link.
    enrolled = json.loads(cli(url, storage, "enroll", "kiosk-1", "--role", "kiosk", "--json"))
    try:
        kiosk, hall, window = [await browser.new_page() for _ in range(3)]
        await kiosk.goto(f"{url}/pages/kiosk?token={enrolled['token']}")
        await hall.goto(f"{url}/pages/hall")
        await window.goto(f"{url}/pages/window/w1")
        for page in (kiosk, hall, window):
            await page.wait_for_selector("body[data-connection=live]")

        # A citizen takes a social-insurance ticket on the touch screen.
        await kiosk.click("button[data-service=social]")
        taken = kiosk.locator("#taken")
        await taken.wait_for()
        assert await taken.text_content() == "A001"
        await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-ticket.png"))
        # 完成 at once: the ticket box also closes itself after a while, which a slow
        # machine could reach before a later click.
        await kiosk.click("#result button")
        await kiosk.wait_for_selector("#result.open", state="hidden")

        # Window 1 calls it from the command line.
        cli(url, storage, "window", "w1", "sign-in", "1001")
        assert "A001" in cli(url, storage, "window", "w1", "next")
        await hall.wait_for_selector("#current .call[data-ticket=A001]")
        await window.wait_for_selector("#now[data-ticket=A001]")
        assert "1号窗口" in await hall.locator("#current .call[data-ticket=A001]").inner_text()
        await hall.screenshot(path=str(ARTIFACTS / "pages-hall.png"))
        await window.screenshot(path=str(ARTIFACTS / "pages-window.png"))
        await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk.png"))

        # The agent dies; the pages notice, keep what they show and wait for it.
        agent.kill()
        await hall.wait_for_selector("body[data-connection=lost]", timeout=20000)
        assert await hall.locator("#current .call[data-ticket=A001]").count() == 1
        await asyncio.to_thread(agent.start)
        for page in (kiosk, hall, window):
            await page.wait_for_selector("body[data-connection=live]", timeout=20000)

        # Nobody touched the pages: the next ticket and call show up on all of them.
        async with httpx.AsyncClient(base_url=url, headers=agent.ops) as client:
            r = await client.post("/api/v1/tickets", json={"service": "general"})
            assert r.status_code == 201
        assert "D001" in cli(url, storage, "window", "w1", "next")
        await hall.wait_for_selector("#current .call[data-ticket=D001]")
        await hall.wait_for_selector("#recent tr[data-ticket=A001]")
        await window.wait_for_selector("#now[data-ticket=D001]")
        await kiosk.wait_for_selector("button[data-service=general]:not([disabled])")
        await hall.screenshot(path=str(ARTIFACTS / "pages-hall-after-restart.png"))

        # Paused: the window page says so (暂停服务).
        cli(url, storage, "window", "w1", "pause")
        await window.wait_for_selector("#paused")
        assert await window.locator("#paused").text_content() == "暂停服务"
        await window.screenshot(path=str(ARTIFACTS / "pages-window-paused.png"))
        fonts = await hall.evaluate("document.fonts.check('20px HallCJK')")
        assert fonts is True
    finally:
        agent.kill()


async def test_the_big_screen_turns_through_the_guides_without_hiding_calls(
    tmp_path: Path, browser: Any
) -> None:
    storage = tmp_path / "state"
    config = hall_config(storage, port=free_port(), pages={"guide_rotation_s": 5})
    for service in config["services"]:
        if service["id"] in ("social", "civil"):
            service["guide"] = {"materials": [f"{service['name']}申请表", "居民身份证"]}
    agent = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    url = await asyncio.to_thread(agent.start)
    try:
        async with httpx.AsyncClient(base_url=url, headers=agent.ops) as client:
            for service in ("social", "civil", "social"):
                r = await client.post("/api/v1/tickets", json={"service": service})
                assert r.status_code == 201, r.text
        cli(url, storage, "window", "w1", "sign-in", "1001")
        assert "A001" in cli(url, storage, "window", "w1", "next")
        hall = await browser.new_page()
        await hall.goto(f"{url}/pages/hall")
        await hall.wait_for_selector("#current .call[data-ticket=A001]")
        # Both guides come in turn (every 5 s), whole, the call still on screen above them.
        shown = set()
        for _ in range(2):
            await hall.wait_for_function(
                "(seen) => { const g = document.getElementById('guide');"
                " return g.dataset.service && !seen.includes(g.dataset.service); }",
                arg=sorted(shown),
                timeout=20000,
            )
            shown.add(await hall.get_attribute("#guide", "data-service"))
            text = await hall.locator("#guide").inner_text()
            assert "请带齐" in text
            assert "居民身份证" in text
            box = await hall.locator("#guide").bounding_box()
            call = await hall.locator("#current .call[data-ticket=A001]").bounding_box()
            assert box is not None
            assert call is not None
            assert call["y"] + call["height"] <= box["y"]  # the call is above it, whole
        assert shown == {"social", "civil"}
        await hall.screenshot(path=str(ARTIFACTS / "pages-hall-guides.png"))
    finally:
        agent.kill()
