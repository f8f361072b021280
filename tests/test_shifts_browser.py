"""The rota on the big screen's staff board, in headless Chromium against a real
``hall-agent run`` (the harness of tests/test_screens_browser.py): each window's A and B,
B standing in (B岗顶岗) for an absent A, two staff at one window, the calls still whole
and uncovered, no serious axe-core violation, nothing loaded from outside the hall."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import AgentProcess, needs_chromium, write_config
from test_screens_browser import (
    ARTIFACTS,
    CALLS,
    ROSTER,
    Hall,
    axe,
    browser,  # noqa: F401  (the fixture)
    free_port,
    guard_offline,
    open_page,
    screens_config,
    seed,
)

from agent.runtime.store import Store

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

# Shifts covering the whole day, so the board's shift is running whenever the test runs.
ROTA = {
    "shifts": [
        {"id": "am", "name": "上午", "start": "00:00", "end": "12:00"},
        {"id": "pm", "name": "下午", "start": "12:00", "end": "23:59:59"},
    ],
    "posts": [
        {"window": "w1", "a": "s-1", "b": "s-7"},
        {"window": "w2", "a": "s-2", "b": "s-8"},
    ],
}
STAFF = [
    *({k: v for k, v in m.items() if v is not None} for m in ROSTER),
    {"staff": "s-7", "name": "赵敏"},
    {"staff": "s-8", "name": "周杰"},
]


@contextlib.contextmanager
def rota_agent(tmp_path: Path) -> Iterator[Hall]:
    """The screens' hall with this file's roster (central's and the file's, both Bs) and
    rota: a running agent, stopped on leaving."""
    storage = tmp_path / "state"
    photos = tmp_path / "photos"
    seed(storage, photos)
    store = Store.open(storage)  # central's roster: the file's, with both Bs
    try:
        store.append([], settings={"staff": STAFF})
    finally:
        store.close()
    config = screens_config(storage, photos, free_port())
    config["staff"] = STAFF
    config["rota"] = ROTA
    agent = AgentProcess(
        write_config(tmp_path / "config.yaml", config), storage, tmp_path / "agent.log"
    )
    agent.start()
    hall = Hall(agent, storage)
    try:
        yield hall
    finally:
        hall.client.close()
        agent.kill()


@pytest.fixture
def rota_hall(tmp_path: Path) -> Iterator[Hall]:
    with rota_agent(tmp_path) as hall:
        # w1: its A (s-1) and its B (s-7) together; w2: its A absent, nobody signed in;
        # w3: someone not on any rota.
        for window, staff in (("w1", "s-1"), ("w1", "s-7"), ("w3", "s-3")):
            hall.post(f"/api/v1/windows/{window}/sign-in", {"staff": staff})
        yield hall


async def test_the_board_shows_the_rota_and_b_standing_in(
    rota_hall: Hall,
    browser: Any,  # noqa: F811
) -> None:
    hall = rota_hall
    for service in ("social", "housing", "general"):
        hall.post("/api/v1/tickets", {"service": service})
    hall.call_next("w1")
    hall.call_next("w3")
    outside = await guard_offline(browser, hall.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1920, "height": 1080})
    await open_page(page, hall.url + "/pages/hall")
    await page.screenshot(path=str(ARTIFACTS / "hall-rota-1920x1080.png"))

    members = await page.evaluate(
        """() => [...document.querySelectorAll("#staff .member")].map((m) => ({
             window: m.dataset.window, staff: m.dataset.staff, role: m.dataset.role,
             standsIn: m.classList.contains("stands-in"), text: m.innerText }))"""
    )
    by_staff = {m["staff"]: m for m in members}
    assert [(m["window"], m["staff"], m["role"]) for m in members] == [
        ("w1", "s-1", "A"),
        ("w1", "s-7", "B"),
        ("w2", "s-8", "B"),
        ("w3", "s-3", ""),
    ]
    assert "王芳" in by_staff["s-1"]["text"]
    assert "工号 s-1 · 主岗" in by_staff["s-1"]["text"]
    assert "1号窗口" in by_staff["s-1"]["text"]
    assert "工号 s-7 · 备岗" in by_staff["s-7"]["text"]
    # w2's A (s-2) is not signed in during the shift: its B is shown on duty.
    assert by_staff["s-8"]["standsIn"] is True
    assert "周杰" in by_staff["s-8"]["text"]
    assert "B岗顶岗" in by_staff["s-8"]["text"]
    assert "2号窗口" in by_staff["s-8"]["text"]
    assert "在岗" in by_staff["s-3"]["text"]
    assert not any(m["standsIn"] for m in members if m["staff"] != "s-8")

    # A signs in at w2: the board shows A, and B no longer stands in.
    hall.post("/api/v1/windows/w2/sign-in", {"staff": "s-2"})
    await page.wait_for_selector("#staff .member[data-staff='s-2'][data-role='A']")
    assert await page.locator("#staff .member.stands-in").count() == 0
    assert await page.locator("#staff .member[data-staff='s-8']").count() == 0

    # The calls stay whole, inside their panel and uncovered by the board.
    cards = await page.evaluate(CALLS)
    assert len(cards) == 2
    assert all(c["inside"] and c["uncovered"] for c in cards), cards
    violations = await axe(page)
    assert violations == [], json.dumps(violations, ensure_ascii=False, indent=1)

    # The window screen: who serves, and who else is signed in there.
    await open_page(page, hall.url + "/pages/window/w1")
    assert await page.locator("#staff-name").inner_text() == "王芳"
    assert "赵敏（工号 s-7）" in await page.locator("#with-staff").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "window-two-staff-1920x1080.png"))
    assert await axe(page) == []
    assert outside == []
