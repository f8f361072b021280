"""A ticket from the kiosk to the citizen's phone: the agent prints it on the virtual printer
(both profiles), the QR code on the paper is read back as a phone would, its link opens the
ticket's status page, and the page follows the ticket as it moves up and is called
(HTTP, then once in headless Chromium at a phone's width). No sleeps: every wait is for a
condition, with a limit."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from qr_paper import read_qr
from support import as_ops, hall_config

from agent.config import HallAgentConfig
from agent.daemon import Running, running_agent
from agent.demo.emulators.printer import VirtualPrinter
from protocols.escpos_model import Align, TextLine
from protocols.escpos_raster import CJK_FONT, Typesetter

API = "/api/v1"
ARTIFACTS = Path(__file__).parent / "artifacts"
PUBLIC = "http://192.168.10.2:8737"
MATERIALS = ["本人有效身份证件", "社会保障卡", "近期一寸免冠照片 1 张"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

needs_font = pytest.mark.skipif(
    not Path(CJK_FONT).exists(), reason="fonts-wqy-microhei is not installed (scripts/setup)"
)


def status_config(storage: Path, printer_port: int | None, **printer: Any) -> HallAgentConfig:
    devices = []
    if printer_port is not None:
        devices.append(
            {
                "id": "kiosk-printer",
                "kind": "printer",
                "transport": {
                    "type": "network",
                    "host": "127.0.0.1",
                    "port": printer_port,
                    "timeout_s": 2,
                },
                "poll_interval_s": 0.5,
                **printer,
            }
        )
    data = hall_config(storage, devices=devices, queue={"turn_near": 2})
    data["hall"]["phone"] = "0571-8888 1234"
    data["web"]["public_url"] = PUBLIC
    data["services"][0]["guide"] = {
        "summary": "社会保障卡申领、补换",
        "materials": MATERIALS,
        "time_limit_days": 0,
        "fee": "不收费",
    }
    return HallAgentConfig.model_validate(data)


@contextlib.asynccontextmanager
async def agent(
    tmp_path: Path, printer: dict[str, Any] | None
) -> AsyncIterator[tuple[Running, VirtualPrinter | None, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        vp = None
        port = None
        if printer is not None:
            vp = await stack.enter_async_context(VirtualPrinter(tmp_path / "printed"))
            port = await vp.start_tcp(port=0)
        config = status_config(tmp_path / "state", port, **(printer or {}))
        running = await stack.enter_async_context(running_agent(config))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=20)
        )
        yield running, vp, client


async def page_state(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await client.get("/pages/state/ticket", params={"token": token}, headers={})
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()
    return state


async def next_at_w1(client: httpx.AsyncClient) -> str:
    r = await client.post(f"{API}/windows/w1/next")
    assert r.status_code == 200, r.text
    number: str = r.json()["result"]["ticket"]["number"]
    return number


def has_band(page: Image.Image, strip: Image.Image) -> bool:
    """Whether ``strip`` (a full-width line of the ticket) is on the paper, pixel for pixel."""
    assert page.width == strip.width
    rows = [page.crop((0, y, page.width, y + 1)).tobytes() for y in range(page.height)]
    want = [strip.crop((0, y, strip.width, y + 1)).tobytes() for y in range(strip.height)]
    return any(
        rows[y : y + len(want)] == want
        for y in range(page.height - len(want) + 1)
        if rows[y] == want[0]
    )


@needs_font
@pytest.mark.parametrize("profile", ["gb18030", "raster"])
async def test_the_printed_qr_opens_a_status_page_that_follows_the_ticket(tmp_path, profile):
    async with agent(tmp_path, {"profile": profile}) as (running, vp, client):
        assert vp is not None
        for _ in range(3):  # three citizens before ours
            assert (
                await client.post(f"{API}/tickets", json={"service": "social"})
            ).status_code == 201
        r = await client.post(f"{API}/tickets", json={"service": "social", "source": "touch"})
        assert r.status_code == 201, r.text
        assert r.json()["result"]["ticket"]["number"] == "A004"
        taken_link = r.json()["result"]["status_url"]  # what the kiosk may show on screen
        printed = (await vp.wait_for_tickets(4, within=15))[-1]
        await vp.rendered()
        assert printed.number == "A004" or profile == "raster"
        assert printed.png is not None

        # The paper: where to go and what to bring, in both profiles.
        lines = [
            "请到 1号窗口、3号窗口 办理",
            "请备齐以下材料（一次性告知）：",
            *(f"□ {m}" for m in MATERIALS),
        ]
        with Image.open(printed.png) as png:
            paper = png.convert("L")
        if profile == "gb18030":
            for line in lines:
                assert line in printed.lines
        else:  # one image: each line is on it exactly as the typesetter draws that line
            assert printed.lines == []
            font = await asyncio.to_thread(Path(CJK_FONT).read_bytes)
            typesetter = Typesetter(font, paper.width)
            assert has_band(paper, typesetter.text_image(TextLine(lines[0], bold=True)))
            header = TextLine(lines[1], bold=True, align=Align.LEFT)
            assert has_band(paper, typesetter.text_image(header))
            for item in lines[2:]:
                assert has_band(paper, typesetter.text_image(TextLine(item, align=Align.LEFT)))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(printed.png, ARTIFACTS / f"ticket-status-qr-{profile}.png")

        # The QR code, as a phone reads it: the status page on the hall's Wi-Fi.
        found = read_qr(paper)
        assert min(found.quiet) >= 4 * found.module, found.quiet
        assert found.text == taken_link
        link = urlsplit(found.text)
        assert f"{link.scheme}://{link.netloc}" == PUBLIC
        token = link.path.removeprefix("/t/")
        assert len(token) == 22  # 128 random bits
        async with httpx.AsyncClient(base_url=running.url) as phone:  # no credentials
            html = await phone.get(link.path)
            assert html.status_code == 200
            assert html.headers["content-type"].startswith("text/html")
            assert html.headers["referrer-policy"] == "no-referrer"
            state = await page_state(phone, token)
            assert state["ticket"] == "A004"
            assert state["service_name"] == "社保医保"
            assert state["status"] == "waiting"
            assert state["ahead"] == 3
            assert state["windows"] == ["1号窗口", "3号窗口"]
            assert state["guide"]["materials"] == MATERIALS
            assert state["guide"]["time_limit"] == "即办（当场办结）"
            assert state["hall"]["phone"] == "0571-8888 1234"
            assert "id_hash" not in state
            assert "token" not in state

            # It moves up as window 1 calls the others, and turn_near fires once, at 2 ahead.
            r = await client.post(f"{API}/windows/w1/sign-in", json={"staff": "1001"})
            assert r.status_code == 200
            for expected_ahead in (2, 1, 0):
                await next_at_w1(client)
                state = await page_state(phone, token)
                assert state["status"] == "waiting"
                assert state["ahead"] == expected_ahead
            assert state["wait_text"] == ["即将叫号，请留意叫号屏"]
            near = [e for e in await events(client) if e["type"] == "ticket.turn_near"]
            assert [(e["data"]["ticket"], e["data"]["ahead"]) for e in near] == [("A004", 2)]

            # Called: the page says where to go; finished: it says so.
            assert await next_at_w1(client) == "A004"
            state = await page_state(phone, token)
            assert (state["status"], state["window_name"], state["ahead"]) == (
                "called",
                "1号窗口",
                None,
            )
            assert (await client.post(f"{API}/windows/w1/finish")).status_code == 200
            state = await page_state(phone, token)
            assert state["status"] == "finished"
            assert state["status_text"].startswith("已办结")

            # A made-up token finds nothing, in the citizen's words.
            r = await phone.get("/pages/state/ticket", params={"token": "A" * 22})
            assert r.status_code == 404
            assert "没有找到这张号票" in r.json()["message"]
        # No ticket.status events: the page is the agent's own (ticket.qr_url is not set).
        assert not [e for e in await events(client) if e["type"] == "ticket.status"]


async def events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get(f"{API}/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
async def test_the_status_page_in_a_phone_browser_updates_live(tmp_path):
    from playwright.async_api import async_playwright

    async with agent(tmp_path, None) as (running, _vp, client):
        for _ in range(2):
            assert (
                await client.post(f"{API}/tickets", json={"service": "social"})
            ).status_code == 201
        token = next(t.token for t in running.hall.engine.tickets.values() if t.number == "A002")
        assert token is not None
        host = urlsplit(running.url).netloc
        outside: list[str] = []
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
            )
            try:
                phone = await browser.new_page(
                    viewport={"width": 360, "height": 740}, device_scale_factor=2
                )
                phone.on(
                    "request",
                    lambda req: (
                        outside.append(req.url) if urlsplit(req.url).netloc != host else None
                    ),
                )
                await phone.goto(f"{running.url}/t/{token}")
                await phone.wait_for_selector("body[data-connection=live]")
                assert await phone.locator("#number").text_content() == "A002"
                assert "您前面还有 1 人" in await phone.locator("#wait").inner_text()
                assert await phone.locator("#materials li").count() == len(MATERIALS)
                assert await phone.evaluate("document.documentElement.scrollWidth") <= 360
                ARTIFACTS.mkdir(exist_ok=True)
                await phone.screenshot(
                    path=str(ARTIFACTS / "ticket-status-waiting.png"), full_page=True
                )

                # Nobody touches the phone: it follows the queue.
                assert (
                    await client.post(f"{API}/windows/w1/sign-in", json={"staff": "1001"})
                ).status_code == 200
                await next_at_w1(client)
                await phone.wait_for_function(
                    "document.querySelector('#wait')?.innerText.includes('即将叫号')"
                )
                await next_at_w1(client)
                await phone.wait_for_selector("#status[data-status=called]")
                assert await phone.locator("#go").inner_text() == "请到 1号窗口"
                await phone.screenshot(
                    path=str(ARTIFACTS / "ticket-status-called.png"), full_page=True
                )
                assert await phone.evaluate("document.documentElement.scrollWidth") <= 360

                # A made-up link: the citizen is told so, in Chinese, and nothing breaks.
                await phone.goto(f"{running.url}/t/{'B' * 22}")
                await phone.wait_for_selector("body[data-status=not_found]")
                assert "没有找到这张号票" in await phone.locator("#status").inner_text()
            finally:
                await browser.close()
        assert outside == []
