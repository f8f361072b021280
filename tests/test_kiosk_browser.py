"""The kiosk, the guide page and the guide desk in headless Chromium against a real agent:
the kiosk does not lock after a ticket, shows a service's guide before the ticket and the
materials after it, gives a priority ticket by the green channel, keeps 长者版 on until
the ticket is taken and fills a portrait screen; the guide desk refuses without a
credential and issues a priority ticket with one. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import AgentProcess, chromium, hall_config, needs_chromium, write_config
from test_pages_browser import ARTIFACTS, cli, free_port

pytestmark = [
    needs_chromium,
    pytest.mark.timeout(180),
]

GUIDE = {
    "summary": "参保人员申领、补换社会保障卡",
    "materials": [
        "本人有效居民身份证原件",
        "近期一寸免冠白底彩色证件照1张",
        "代办的，另需代办人身份证原件",
    ],
    "notes": ["照片也可现场免费拍摄"],
    "time_limit_days": 0,
    "fee": "不收费",
}
PASSWORD = "guide desk pass 1"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    storage = tmp_path / "state"
    config = hall_config(storage, port=free_port())
    config["services"][0]["guide"] = GUIDE
    process = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    process.start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(
        tmp_path / "profile", "--autoplay-policy=no-user-gesture-required"
    ) as context:
        yield context


async def open_kiosk(agent: AgentProcess, browser: Any, **viewport: int) -> Any:
    enrolled = json.loads(
        cli(agent.url, agent.storage, "enroll", "kiosk-1", "--role", "kiosk", "--json")
    )
    page = await browser.new_page()
    if viewport:
        await page.set_viewport_size(viewport)
    await page.goto(f"{agent.url}/pages/kiosk?token={enrolled['token']}")
    await page.wait_for_selector("body[data-connection=live]")
    return page


async def take_done(kiosk: Any) -> None:
    await kiosk.click("#done")
    await kiosk.wait_for_selector("#result.open", state="hidden")


async def issued(agent: AgentProcess) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=agent.url, headers=agent.ops) as client:
        events = (await client.get("/api/v1/events", params={"limit": 1000})).json()
    return [e["data"] for e in events if e["type"] == "ticket.issued"]


async def test_the_kiosk_takes_a_second_ticket_at_once_and_shows_the_guide(
    agent: AgentProcess, browser: Any
) -> None:
    kiosk = await open_kiosk(agent, browser)

    # The lock: a ticket, 完成, and at once another ticket, with nothing else happening.
    # The answer to the take is held until the page has drawn the state with the new
    # ticket (as when the ticket prints for a while): that state arrives while it is busy.
    async def printing_slowly(route: Any) -> None:
        answer = await route.fetch()
        await kiosk.wait_for_selector("button[data-service=general] >> text=1 人等候")
        await route.fulfill(response=answer)

    await kiosk.route("**/api/v1/tickets", printing_slowly)
    await kiosk.click("button[data-service=general]")
    await kiosk.wait_for_selector("#taken")
    assert await kiosk.locator("#taken").text_content() == "D001"
    await kiosk.unroute("**/api/v1/tickets")
    await take_done(kiosk)
    general = kiosk.locator("button[data-service=general]")
    assert await general.is_enabled(), "the kiosk is locked after a ticket"
    await general.click(timeout=2000)
    await kiosk.wait_for_selector("#taken >> text=D002")
    await take_done(kiosk)

    # A service with a guide: the guide first (一次性告知, every material), then the ticket
    # with the materials to have ready.
    await kiosk.click("button[data-service=social]")
    guide = kiosk.locator("#guide")
    await guide.wait_for()
    assert await kiosk.locator("#guide .materials li").all_text_contents() == GUIDE["materials"]
    card = await kiosk.locator("#result-card").inner_text()
    assert "一次性告知" in card
    assert "即办（当场办结）" in card
    assert "不收费" in card
    await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-guide.png"))
    await kiosk.click("#guide-take")
    await kiosk.wait_for_selector("#taken >> text=A001")
    assert await kiosk.locator("#ready .materials li").all_text_contents() == GUIDE["materials"]
    # The kiosk asked for its spoken guidance (the service, the number, the people ahead).
    await kiosk.wait_for_selector("body[data-spoken=A001]")
    await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-ticket-materials.png"))
    await take_done(kiosk)

    # The guide page (办事指南查询): every service, no ticket.
    page = await browser.new_page()
    await page.goto(f"{agent.url}/pages/guide")
    await page.wait_for_selector("#detail .materials li")
    assert await page.locator("#detail .materials li").all_text_contents() == GUIDE["materials"]
    await page.click("#list button[data-service=civil]")
    await page.wait_for_selector("#detail >> text=暂无办事指南")
    await page.screenshot(path=str(ARTIFACTS / "pages-guide.png"))


async def test_green_channel_by_touch_and_large_text_until_the_ticket_is_taken(
    agent: AgentProcess, browser: Any
) -> None:
    kiosk = await open_kiosk(agent, browser)
    root = kiosk.locator("html")

    # 长者版: on by a tap, kept across new states, off once the ticket is taken.
    small = await kiosk.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    await kiosk.click("#elder")
    assert await root.get_attribute("class") == "kiosk large elder"
    rev = await kiosk.locator("body").get_attribute("data-rev")
    async with httpx.AsyncClient(base_url=agent.url, headers=agent.ops) as client:
        assert (await client.post("/api/v1/tickets", json={"service": "civil"})).status_code == 201
    await kiosk.wait_for_function(f"document.body.dataset.rev !== '{rev}'")
    await kiosk.wait_for_selector("button[data-service=civil] >> text=1 人等候")
    assert "elder" in (await root.get_attribute("class") or "")
    big = await kiosk.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert big >= small * 1.4

    # 绿色通道: the hall's policy, a class, the citizen confirms, then the service.
    await kiosk.click("#green")
    card = await kiosk.locator("#result-card").inner_text()
    assert "绿色通道" in card
    assert "如实选择" in card
    assert await kiosk.locator("#green-confirm").is_disabled()
    await kiosk.click(".green-class[data-class=elderly]")
    await kiosk.click("#green-confirm")
    await kiosk.wait_for_selector("#green-banner >> text=绿色通道：老年人")
    await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-green-elder.png"))
    await kiosk.click("button[data-service=social]")
    assert "绿色通道取号" in await kiosk.locator("#guide-take").inner_text()
    await kiosk.click("#guide-take")
    await kiosk.wait_for_selector("#taken[data-priority=elderly]")
    assert await kiosk.locator("#taken").text_content() == "A001"
    assert "elder" in (await root.get_attribute("class") or ""), "长者版 went off too early"
    await take_done(kiosk)
    assert "elder" not in (await root.get_attribute("class") or "")
    assert await kiosk.locator("#green-banner").is_hidden()
    assert await kiosk.locator("#elder").get_attribute("aria-pressed") == "false"
    data = [(e["ticket"], e["priority"], e.get("granted_by")) for e in await issued(agent)]
    assert data == [("B001", "normal", None), ("A001", "elderly", "self")]

    # The next citizen's ticket is a normal one again.
    await kiosk.click("button[data-service=general]")
    await kiosk.wait_for_selector("#taken[data-priority=normal]")


async def test_the_guide_desk_needs_a_guide_and_issues_priority_tickets(
    agent: AgentProcess, browser: Any
) -> None:
    async with httpx.AsyncClient(base_url=agent.url, headers=agent.ops) as client:
        for name, role in (("2001", "guide"), ("1001", "staff")):
            body = {"name": name, "role": role, "password": PASSWORD}
            if role == "staff":
                body["windows"] = ["w1"]
            assert (await client.post("/api/v1/auth/users", json=body)).status_code == 201
    desk = await browser.new_page()
    await desk.set_viewport_size({"width": 1366, "height": 768})
    await desk.goto(f"{agent.url}/pages/guide-desk")
    await desk.wait_for_selector("body[data-connection=live]")
    assert await desk.locator("#desk").is_hidden()
    # Without a credential nothing can be issued: the API refuses the page's request.
    refused = await desk.evaluate(
        """fetch('/api/v1/tickets', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({service: 'civil', priority: 'veteran'})}).then(r => r.status)"""
    )
    assert refused == 401
    # A staff login is not a guide's.
    await desk.fill("#login-name", "1001")
    await desk.fill("#login-password", PASSWORD)
    await desk.click("#login-submit")
    await desk.wait_for_selector("#login-message >> text=不是引导员")
    assert await desk.locator("#desk").is_hidden()
    await desk.fill("#login-name", "2001")
    await desk.fill("#login-password", "wrong password")
    await desk.click("#login-submit")
    await desk.wait_for_selector("#login-message >> text=工号或密码不正确")

    await desk.fill("#login-name", "2001")
    await desk.fill("#login-password", PASSWORD)
    await desk.click("#login-submit")
    await desk.wait_for_selector("#desk:not([hidden])")
    await desk.select_option("#priority", "veteran")
    await desk.click("#services button[data-service=civil]")
    await desk.wait_for_selector("#issued-number[data-priority=veteran]")
    assert await desk.locator("#issued-number").text_content() == "B001"
    await desk.wait_for_selector("#waiting tr[data-ticket=B001][data-priority=veteran]")
    await desk.screenshot(path=str(ARTIFACTS / "pages-guide-desk.png"))
    data = [(e["ticket"], e["priority"], e.get("granted_by")) for e in await issued(agent)]
    assert data == [("B001", "veteran", "2001")]
    # An unknown appointment number is refused with the reason.
    await desk.fill("#appointment", "YY404")
    await desk.click("#checkin-submit")
    await desk.wait_for_selector("#message.error >> text=未能签到")


async def test_the_portrait_kiosk_is_readable_and_filled(agent: AgentProcess, browser: Any) -> None:
    kiosk = await open_kiosk(agent, browser, width=1080, height=1920)
    size = await kiosk.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert size >= 20, f"the base text is {size}px on a portrait kiosk"
    bottom = await kiosk.evaluate(
        """Math.max(...[...document.querySelectorAll('#services button')]
            .map(b => b.getBoundingClientRect().bottom))"""
    )
    assert bottom >= 1920 * 0.7, f"the service buttons end at {bottom}px of 1920"
    await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-portrait.png"))
    await kiosk.click("button[data-service=social]")
    await kiosk.wait_for_selector("#guide")
    box = await kiosk.locator("#result-card").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 1080
    await kiosk.screenshot(path=str(ARTIFACTS / "pages-kiosk-portrait-guide.png"))


# Every service button whole on screen: inside the viewport, not under another element at
# its corners, its text not cut by its own box.
WHOLE_BUTTONS = """() => [...document.querySelectorAll('#services button')].map((b) => {
  const r = b.getBoundingClientRect();
  const points = [[0.5, 0.5], [0.05, 0.1], [0.95, 0.9]].map(
    ([x, y]) => [r.left + x * r.width, r.top + y * r.height]);
  return {
    service: b.dataset.service,
    inside: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth,
    uncovered: points.every(([x, y]) => b.contains(document.elementFromPoint(x, y))),
    text_fits: b.scrollHeight <= b.clientHeight + 1,
  };
})"""

# The phrases an older citizen must read on one line, each where it is drawn: a number with
# its unit on the services' wait lines, the green banner's phrases and its button's words.
# Returns those drawn over two lines (a Range over the phrase has boxes of different tops).
SPLIT_PHRASES = """() => {
  const phrases = [
    ...[...document.querySelectorAll('#services .wait')].map(
      (el) => [el, /\\d+\\s人等候/, /约\\s\\d+\\s分钟/]),
    [document.querySelector('#green-banner span'), /绿色通道/, /老年人/, /请选择业务/],
    [document.querySelector('#green-cancel'), /取消绿色通道/],
  ];
  const split = [];
  for (const [el, ...patterns] of phrases) {
    const node = el.firstChild;
    for (const pattern of patterns) {
      const found = pattern.exec(node.textContent);
      if (found === null) { split.push(`${pattern} not in ${node.textContent}`); continue; }
      const range = document.createRange();
      range.setStart(node, found.index);
      range.setEnd(node, found.index + found[0].length);
      const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      if (tops.size > 1) split.push(found[0]);
    }
  }
  return split;
}"""

MORE_SERVICES = [
    ("tax", "税务登记", "E"),
    ("housing-fund", "公积金", "F"),
    ("disability", "残疾人服务", "G"),
    ("elderly", "老龄服务", "H"),
]


@contextlib.asynccontextmanager
async def hall_with_services(tmp_path: Path, count: int) -> AsyncIterator[AgentProcess]:
    """A hall of ``count`` services (4 to 8), the first with a guide on its button."""
    storage = tmp_path / "state"
    config = hall_config(storage, port=free_port())
    config["services"][0]["guide"] = GUIDE  # a guide adds a line to its button
    for service, name, prefix in MORE_SERVICES[: count - 4]:
        config["services"].append({"id": service, "name": name, "prefix": prefix})
        config["windows"][2]["services"].append(service)
    process = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


def not_whole(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in buttons if not (b["inside"] and b["uncovered"] and b["text_fits"])]


@pytest.mark.parametrize("count", [6, 8])
async def test_a_portrait_kiosk_shows_every_service_whole(
    tmp_path: Path, browser: Any, count: int
) -> None:
    async with hall_with_services(tmp_path, count) as process:
        kiosk = await open_kiosk(process, browser, width=1080, height=1920)
        buttons = await kiosk.evaluate(WHOLE_BUTTONS)
        await kiosk.screenshot(path=str(ARTIFACTS / f"pages-kiosk-portrait-{count}.png"))
        assert len(buttons) == count
        assert not_whole(buttons) == []


@pytest.mark.parametrize(
    ("count", "width", "height"),
    [
        (4, 1920, 1080),
        (4, 1366, 768),
        (6, 1366, 768),
        (8, 1920, 1080),
        (6, 1080, 1920),
        (8, 1080, 1920),
    ],
)
async def test_a_kiosk_in_elder_mode_with_the_green_channel_shows_every_service_whole(
    tmp_path: Path, browser: Any, count: int, width: int, height: int
) -> None:
    """长者版 enlarges everything and the green channel adds its banner: an older citizen
    must still see every service button whole, without scrolling a small box."""
    async with hall_with_services(tmp_path, count) as process:
        kiosk = await open_kiosk(process, browser, width=width, height=height)
        await kiosk.click("#elder")
        await kiosk.click("#green")
        await kiosk.click(".green-class[data-class=elderly]")
        await kiosk.click("#green-confirm")
        await kiosk.wait_for_selector("#green-banner >> text=绿色通道：老年人")
        buttons = await kiosk.evaluate(WHOLE_BUTTONS)
        shot = ARTIFACTS / f"pages-kiosk-elder-green-{count}-{width}x{height}.png"
        await kiosk.screenshot(path=str(shot))
        assert len(buttons) == count
        assert not_whole(buttons) == []
        assert await kiosk.evaluate(SPLIT_PHRASES) == []
