"""Screens an elderly person can read, in headless Chromium (Debian's, driven by Playwright).

Against a real ``hall-agent run`` with six windows, a roster with a photo, a service guide
and notices:

- every page at 1920x1080, 1366x768, 1280x800 and 1080x1920 is screenshot into
  ``tests/artifacts/screens/`` and no text or control lies outside the viewport or is cut
  off by a box that hides its overflow (the caller page at 1366x768 and 1280x800 included);
- the big screen, normal and large text, shows every current call inside the viewport and
  uncovered with 1 to 6 windows calling, at every one of those sizes;
- axe-core (``node_modules/axe-core``, installed by ``scripts/setup``) finds no serious or
  critical violation on the big screen (normal and large), the window screen, the caller,
  the rater and the kiosk, in both colours of a flashing call;
- no page asks for anything from a host other than the agent (every request is seen and
  any other host is refused and fails the test).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support import ALWAYS, AgentProcess, hall_config, ops_headers, write_config

from agent.core.events import EventClass
from agent.runtime.store import RawEvent, Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "screens"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = [(1920, 1080), (1366, 768), (1280, 800), (1080, 1920)]
# The citizen's kiosk, 办事指南查询, the guide desk and a ticket's status page (a phone):
# screenshots, offline and audit here; their layout is tested with them.
KIOSK_PAGES = {"kiosk", "guide", "guide-desk", "status"}
SERVICES = ["social", "civil", "housing", "general", "tax", "health"]
GUIDE = {
    "summary": "城乡居民基本养老保险参保登记、缴费档次变更",
    "materials": [
        "居民身份证原件",
        "户口簿原件",
        "近期一寸免冠照片1张",
        "银行卡（本人名下）",
        "委托他人办理的，需提供委托书及受托人身份证",
    ],
    "notes": ["材料不全的，窗口一次性告知需补齐的材料"],
    "time_limit_days": 0,
    "fee": "不收费",
}
ROSTER = [
    {"staff": f"s-{n}", "name": name, "key_code": f"10{n}", "photo_url": None}
    for n, name in enumerate(["王芳", "李强", "张伟", "刘洋", "陈静", "杨帆"], 1)
]
# The central's URL in the roster is never fetched (offline means offline).
ROSTER[1]["photo_url"] = "https://central.example.gov.cn/photos/s-2.jpg"

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Chromium is not installed (Debian package chromium)"
    ),
    pytest.mark.timeout(300),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def screens_config(storage: Path, photos: Path, port: int) -> dict[str, Any]:
    config = hall_config(storage, port=port)
    names = ["社保医保", "民政救助", "户籍证明", "综合咨询", "税务登记", "医保报销"]
    config["services"] = [
        {"id": sid, "name": name, "prefix": chr(ord("A") + i), "hours": ALWAYS}
        for i, (sid, name) in enumerate(zip(SERVICES, names, strict=True))
    ]
    config["services"][0]["guide"] = GUIDE
    config["services"][5]["hours"] = [{"start": "00:00", "end": "00:01", "days": ["sun"]}]
    # Window n calls its own service first, so each window calls a ticket of its own.
    config["windows"] = [
        {
            "id": f"w{n}",
            "name": f"{n}号窗口",
            "number": n,
            "services": list(dict.fromkeys([SERVICES[n - 1], "general"])),
        }
        for n in range(1, 7)
    ]
    config["devices"] = [
        {"id": "caller-w1", "kind": "caller", "transport": {"type": "web"}},
        {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
        {"id": "screen-hall", "kind": "screen", "role": "hall"},
    ]
    config["windows"][0]["devices"] = ["caller-w1", "rater-w1"]
    config["pages"] = {"staff_photos": str(photos)}
    config["web"]["public_url"] = f"http://127.0.0.1:{port}"  # the tickets' status pages
    return config


def seed(storage: Path, photos: Path) -> None:
    """As central would have pushed: the roster and a notice; and one staff photo."""
    from PIL import Image

    photos.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (90, 120), (120, 160, 200)).save(photos / "s-1.png")
    notices = [{"id": "n1", "text": "今日下午社保系统升级，请提前取号", "until": None}]
    store = Store.open(storage)
    try:
        now = dt.datetime.now(dt.UTC)
        events = [
            RawEvent("staff.roster_set", now, {"count": len(ROSTER)}, EventClass.OPERATIONAL),
            RawEvent("notice.shown", now, notices[0], EventClass.OPERATIONAL),
        ]
        store.append(events, settings={"staff": ROSTER, "notices": notices})
    finally:
        store.close()


def cli(url: str, storage: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--api", url],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("HALL_")},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class Hall:
    """A running agent and the links of its pages."""

    def __init__(self, agent: AgentProcess, storage: Path) -> None:
        self.agent = agent
        self.storage = storage
        self.url = agent.url
        self.client = httpx.Client(base_url=self.url, headers=ops_headers(storage), timeout=10)
        self.pages: dict[str, str] = {}

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.client.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        answer: dict[str, Any] = r.json()
        return answer

    def call_next(self, window: str) -> str:
        number: str = self.post(f"/api/v1/windows/{window}/next")["result"]["ticket"]["number"]
        return number


@pytest.fixture
def running_hall(tmp_path: Path) -> Iterator[Hall]:
    storage = tmp_path / "state"
    photos = tmp_path / "photos"
    seed(storage, photos)
    config = screens_config(storage, photos, free_port())
    agent = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    agent.start()
    hall = Hall(agent, storage)
    try:
        enrolled = hall.post("/api/v1/auth/devices", {"device": "kiosk-1", "role": "kiosk"})
        tokens = json.loads((storage / "web-tokens.json").read_text(encoding="utf-8"))
        hall.pages = {
            "hall": "/pages/hall",
            "hall-large": "/pages/hall?large=1",
            "window": "/pages/window/w1",
            "caller": f"/pages/caller/caller-w1?token={tokens['caller-w1']}",
            "rater": f"/pages/rater/rater-w1?token={tokens['rater-w1']}",
            "kiosk": f"/pages/kiosk?token={enrolled['token']}",
            "guide": "/pages/guide",
            "guide-desk": "/pages/guide-desk",
        }
        for n in range(1, 7):
            hall.post(f"/api/v1/windows/w{n}/sign-in", {"staff": f"s-{n}"})
        # A citizen's phone: the status page of a ticket (the last one taken, never called).
        status_url = hall.post("/api/v1/tickets", {"service": "tax"})["result"]["status_url"]
        hall.pages["status"] = urlsplit(status_url).path
        yield hall
    finally:
        hall.client.close()
        agent.kill()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1920, "height": 1080},
        )
        try:
            yield context
        finally:
            await context.close()


async def guard_offline(context: Any, agent_url: str) -> list[str]:
    """Refuse and record every request to a host other than the agent (Fetch domain)."""
    own = urlsplit(agent_url).netloc
    outside: list[str] = []

    async def route(request_route: Any) -> None:
        url = request_route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.netloc == own:
            await request_route.continue_()
        else:
            outside.append(url)
            await request_route.abort()

    await context.route("**/*", route)

    def seen(request: Any) -> None:  # also what a route would not see (e.g. a worker's)
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob") and parts.netloc != own:
            outside.append(request.url)

    context.on("request", seen)
    return outside


async def settled(page: Any, width: int, height: int) -> None:
    """Until the page has its new size and has laid itself out for it (two frames)."""
    await page.wait_for_function(
        "([w, h]) => innerWidth === w && innerHeight === h", arg=[width, height]
    )
    await page.evaluate(
        "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))"
    )


async def open_page(page: Any, url: str) -> None:
    await page.goto(url)
    live = "body[data-connection=live]" if "/t/" in url else "body[data-connection=live][data-rev]"
    await page.wait_for_selector(live)
    await page.evaluate("document.fonts.ready.then(() => true)")


# Every text or control that lies outside the viewport, or is cut off by an ancestor that
# hides its overflow (a scrolling ticker and hidden or closed parts aside).
CLIPPED = """() => {
  const problems = [];
  const skip = ".notices, .connection, [hidden], .overlay:not(.open), option, script, style";
  for (const node of document.querySelectorAll("body *")) {
    if (node.closest(skip)) continue;
    const own = [...node.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own && !node.matches("button, input, select, textarea, img")) continue;
    const r = node.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const name = `${node.tagName.toLowerCase()}${node.id ? "#" + node.id : ""}`
      + ` "${(node.textContent || "").trim().slice(0, 20)}"`;
    if (r.left < -1 || r.top < -1 || r.right > innerWidth + 1 || r.bottom > innerHeight + 1) {
      problems.push(`${name} outside the viewport: ${JSON.stringify(r)}`);
      continue;
    }
    const inline = getComputedStyle(node).display === "inline";
    if (own && !inline && node.scrollWidth > node.clientWidth + 1) {
      problems.push(`${name} runs out of its box`);
      continue;
    }
    for (let a = node.parentElement; a && a !== document.body; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (!["hidden", "clip"].includes(style.overflowX)
          && !["hidden", "clip"].includes(style.overflowY)) continue;
      const b = a.getBoundingClientRect();
      if (r.bottom > b.bottom + 1 || r.right > b.right + 1 || r.top < b.top - 1
          || r.left < b.left - 1) {
        problems.push(`${name} cut off by ${a.tagName.toLowerCase()}.${a.className}`);
        break;
      }
    }
  }
  if (document.documentElement.scrollWidth > innerWidth + 1) problems.push("scrolls sideways");
  return problems;
}"""

# Each current call on the big screen: inside the viewport, inside its panel, and the
# topmost thing at its centre and corners (nothing covers it).
CALLS = """() => {
  const box = document.getElementById("current").getBoundingClientRect();
  return [...document.querySelectorAll("#current .call")].map((card) => {
    const r = card.getBoundingClientRect();
    // The centre and two opposite corners (inside the rounded ones).
    const points = [[0.5, 0.5], [0.1, 0.1], [0.9, 0.9]].map(
      ([x, y]) => [r.left + x * r.width, r.top + y * r.height]);
    const uncovered = points.every(([x, y]) => {
      const hit = document.elementFromPoint(x, y);
      return hit !== null && card.contains(hit);
    });
    const number = card.querySelector(".ticket-number");
    return {
      ticket: card.dataset.ticket,
      inside: r.left >= -1 && r.top >= -1 && r.right <= innerWidth + 1
        && r.bottom <= innerHeight + 1 && r.bottom <= box.bottom + 1 && r.right <= box.right + 1,
      uncovered,
      number_px: parseFloat(getComputedStyle(number).fontSize),
    };
  });
}"""


async def test_every_page_fits_every_screen_and_loads_nothing_from_outside(
    running_hall: Hall, browser: Any
) -> None:
    hall = running_hall
    for _ in range(3):
        for service in ("social", "civil", "housing", "general"):
            hall.post("/api/v1/tickets", {"service": service})
    for window in ("w1", "w2", "w3"):
        hall.call_next(window)
    hall.post("/api/v1/windows/w1/request-rating")
    outside = await guard_offline(browser, hall.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page()
    problems: dict[str, list[str]] = {}
    for width, height in VIEWPORTS:
        await page.set_viewport_size({"width": width, "height": height})
        for name, path in hall.pages.items():
            await open_page(page, hall.url + path)
            await page.screenshot(path=str(ARTIFACTS / f"{name}-{width}x{height}.png"))
            if name in KIOSK_PAGES:
                continue  # laid out by the kiosk's own work (tests/test_kiosk_browser.py)
            found = await page.evaluate(CLIPPED)
            if found:
                problems[f"{name} {width}x{height}"] = found
            if name == "rater":
                # A bad rating: the reasons and the comment box must fit as well.
                await page.click("[data-level='2']")
                await page.wait_for_selector("#send")
                await page.screenshot(path=str(ARTIFACTS / f"rater-reasons-{width}x{height}.png"))
                found = await page.evaluate(CLIPPED)
                if found:
                    problems[f"rater reasons {width}x{height}"] = found
    # The window page and the caller show the guide of the ticket served (A001: social).
    await page.set_viewport_size({"width": 1366, "height": 768})
    await open_page(page, hall.url + hall.pages["caller"])
    assert await page.locator("#materials li").count() == len(GUIDE["materials"])
    sub = await page.locator("#sub").inner_text()
    assert "已叫号" in sub
    assert "called" not in sub
    await open_page(page, hall.url + hall.pages["window"])
    assert await page.locator("#materials li").count() == len(GUIDE["materials"])
    # The staff board: photo (local) or initial, name, number and window of all six.
    await open_page(page, hall.url + hall.pages["hall"])
    members = page.locator("#staff .member")
    assert await members.count() == 6
    first = await members.nth(0).inner_text()
    assert "王芳" in first
    assert "工号 s-1" in first
    assert "1号窗口" in first
    assert await page.locator("#staff .member img").count() == 1
    assert await page.locator("#staff .member .initial").count() == 5
    assert problems == {}, json.dumps(problems, ensure_ascii=False, indent=1)
    assert outside == []


async def test_the_big_screen_never_hides_a_call(running_hall: Hall, browser: Any) -> None:
    hall = running_hall
    for service in SERVICES[:5]:
        hall.post("/api/v1/tickets", {"service": service})
    hall.post("/api/v1/tickets", {"service": "general"})
    outside = await guard_offline(browser, hall.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    normal, large = await browser.new_page(), await browser.new_page()
    await open_page(normal, hall.url + hall.pages["hall"])
    await open_page(large, hall.url + hall.pages["hall-large"])
    smallest: dict[str, float] = {}
    hidden: list[str] = []
    for n in range(1, 7):
        hall.call_next(f"w{n}")
        for mode, page in (("normal", normal), ("large", large)):
            for width, height in VIEWPORTS:
                await page.set_viewport_size({"width": width, "height": height})
                await page.wait_for_function(
                    "n => document.querySelectorAll('#current .call').length === n", arg=n
                )
                await settled(page, width, height)
                cards = await page.evaluate(CALLS)
                assert len(cards) == n
                for card in cards:
                    if not (card["inside"] and card["uncovered"]):
                        hidden.append(f"{mode} {width}x{height} {n} calling: {card}")
                key = f"{mode} {width}x{height}"
                smallest[key] = min([smallest.get(key, 1e9)] + [c["number_px"] for c in cards])
                if n in (3, 6):
                    shot = ARTIFACTS / f"hall-{mode}-{n}-calling-{width}x{height}.png"
                    await page.screenshot(path=str(shot))
    (ARTIFACTS / "call-number-sizes.json").write_text(
        json.dumps(smallest, indent=1, sort_keys=True), encoding="utf-8"
    )
    assert hidden == [], "\n".join(hidden)
    # Shrinking is bounded: a called number stays readable from the seats (at least 40 px
    # normal, 48 px large, at 6 windows calling on the smallest screen).
    assert all(px >= (48 if key.startswith("large") else 40) for key, px in smallest.items()), (
        smallest
    )
    assert outside == []


AUDITED = [
    "hall",
    "hall-large",
    "window",
    "caller",
    "rater",
    "kiosk",
    "guide",
    "guide-desk",
    "status",
]


async def axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run ./scripts/setup (it installs axe-core with npm)")
    await page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        """async () => {
          const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"];
          const r = await axe.run(document, { runOnly: { type: "tag", values: tags } });
          return r.violations
            .filter((v) => ["serious", "critical"].includes(v.impact))
            .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")
                             + " " + (n.failureSummary || "").slice(0, 160)) }));
        }"""
    )
    violations: list[dict[str, Any]] = result
    return violations


@pytest.mark.parametrize("name", AUDITED)
async def test_no_serious_accessibility_violation(
    running_hall: Hall, browser: Any, name: str
) -> None:
    hall = running_hall
    hall.post("/api/v1/tickets", {"service": "social"})
    hall.post("/api/v1/tickets", {"service": "civil"})
    hall.call_next("w1")
    hall.post("/api/v1/windows/w1/request-rating")
    hall.call_next("w2")
    outside = await guard_offline(browser, hall.url)
    page = await browser.new_page()
    found: dict[str, list[dict[str, Any]]] = {}
    for width, height in [(1920, 1080), (1366, 768)]:
        await page.set_viewport_size({"width": width, "height": height})
        await open_page(page, hall.url + hall.pages[name])
        # A flashing call is audited in both of its colours (red, then blue).
        for phase in ("from", "to"):
            await page.evaluate(
                """(phase) => { for (const a of document.getAnimations()) {
                     if (a.animationName !== "flash") continue;
                     a.pause(); a.currentTime = phase === "from" ? 0 : 999; } }""",
                phase,
            )
            violations = await axe(page)
            if violations:
                found[f"{width}x{height} {phase}"] = violations
        if name == "rater":  # and the form of a bad rating: reasons, comment, send
            await page.click("[data-level='2']")
            await page.wait_for_selector("#send")
            violations = await axe(page)
            if violations:
                found[f"{width}x{height} reasons"] = violations
    assert found == {}, json.dumps(found, ensure_ascii=False, indent=1)
    assert outside == []


async def test_the_audit_finds_a_contrast_failure(running_hall: Hall, browser: Any) -> None:
    """The audit is not blind: grey text on the page's blue is reported."""
    page = await browser.new_page()
    await open_page(page, running_hall.url + running_hall.pages["hall"])
    await page.evaluate("document.getElementById('hall-name').style.color = '#34507a'")
    ids = {v["id"] for v in await axe(page)}
    assert "color-contrast" in ids


async def test_pages_run_without_the_network(running_hall: Hall, browser: Any) -> None:
    """A page that tried to load something from outside would be refused and recorded."""
    outside = await guard_offline(browser, running_hall.url)
    page = await browser.new_page()
    await open_page(page, running_hall.url + running_hall.pages["hall"])
    async with page.expect_event("requestfailed") as failed:
        await page.evaluate("fetch('http://central.example.gov.cn/photo.jpg').catch(() => null)")
    assert (await failed.value).url == "http://central.example.gov.cn/photo.jpg"
    assert set(outside) == {"http://central.example.gov.cn/photo.jpg"}
