"""The web caller page and the tablet rater page: tokens, presses, ratings, their views,
and central's request_rating — through a running agent, and in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import as_ops, hall_config

from agent.central import contract as c
from agent.config import HallAgentConfig
from agent.core.events import EventClass
from agent.daemon import running_agent
from agent.runtime.store import RawEvent, Written
from agent.web.window_pages import TOKENS_FILE, load_tokens

pytestmark = pytest.mark.timeout(60)

ROSTER = [{"staff": "s-1024", "name": "王芳", "key_code": "1024", "photo_url": None}]


def config_with(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    data = hall_config(tmp_path / "state", **sections)
    data["devices"] = [
        {"id": "caller-w1", "kind": "caller", "transport": {"type": "web"}},
        {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
        {
            "id": "rater-w2",
            "kind": "rater",
            "transport": {"type": "web", "token_env": "HALL_TEST_RATER_W2_TOKEN"},
        },
    ]
    data["windows"][0]["devices"] = ["caller-w1", "rater-w1"]
    data["windows"][1]["devices"] = ["rater-w2"]
    data.setdefault("rating", {"start_on": "finish"})
    return HallAgentConfig.model_validate(data)


async def set_roster(running: Any) -> None:
    """As central's set_staff does: the roster and its event in one transaction."""

    def write(store: Any, now: Any, ok: bool) -> Any:
        event = RawEvent("staff.roster_set", now, {"count": 1}, EventClass.OPERATIONAL)
        return Written.of_events(store.append([event], clock_ok=ok, settings={"staff": ROSTER}))

    await running.hall.write(write)


def test_tokens_are_made_once_kept_private_or_taken_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with(tmp_path)
    monkeypatch.setenv("HALL_TEST_RATER_W2_TOKEN", "short")
    first = load_tokens(config)
    assert set(first) == {"caller-w1", "rater-w1"}  # a too-short token closes the page
    assert len(first["caller-w1"]) >= 16
    path = config.storage.path / TOKENS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_tokens(config) == first  # kept across restarts
    monkeypatch.setenv("HALL_TEST_RATER_W2_TOKEN", "a-long-enough-secret-token")
    assert load_tokens(config)["rater-w2"] == "a-long-enough-secret-token"


async def test_the_caller_page_needs_its_token_and_presses_like_a_keypad(
    tmp_path: Path,
) -> None:
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        windows = running.windows
        assert windows is not None
        token = windows.tokens["caller-w1"]
        assert running.devices.get("caller-w1").status == "ok"
        assert running.devices.get("rater-w2").status == "error"  # its token is not set
        for url in (
            "/pages/caller/caller-w1",
            "/pages/caller/caller-w1?token=wrong",
            f"/pages/caller/rater-w1?token={token}",
            "/pages/state/caller?device=caller-w1",
        ):
            assert (await client.get(url)).status_code == 404, url
        page = await client.get(f"/pages/caller/caller-w1?token={token}")
        assert page.status_code == 200
        assert "呼叫器" in page.text
        press = "/api/v1/callers/caller-w1/press"
        assert (await client.post(press, json={"action": "next"})).status_code == 404
        auth = {"Authorization": f"Bearer {token}"}

        await set_roster(running)
        answer = await client.post(
            press, json={"action": "sign_in", "argument": "1024"}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        refused = await client.post(press, json={"action": "next"}, headers=auth)
        assert refused.status_code == 200  # nobody waits: done, with the message
        assert "no one is waiting" in refused.json()["message"]
        for _ in range(2):
            await client.post("/api/v1/tickets", json={"service": "social"})
        called = await client.post(
            press, json={"action": "call_number", "argument": "A002"}, headers=auth
        )
        assert called.json()["current"] == "A002"
        again = await client.post(
            press, json={"action": "call_number", "argument": "A002"}, headers=auth
        )
        assert again.json()["repeat"] is True  # a double click
        no = await client.post(press, json={"action": "transfer", "argument": "9"}, headers=auth)
        assert no.status_code == 409
        assert "no service 9 to transfer to" in no.json()["message"]

        state = (await client.get(f"/pages/state/caller?device=caller-w1&token={token}")).json()
        assert state["current"]["ticket"] == "A002"
        assert state["staff"]["name"] == "王芳"
        assert state["waiting"] == 1
        assert [s["position"] for s in state["services"]] == [1, 2, 3, 4]


async def test_the_tablet_rater_shows_who_served_and_records_each_rating(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        windows = running.windows
        assert windows is not None
        token = windows.tokens["rater-w1"]
        auth = {"Authorization": f"Bearer {token}"}
        await set_roster(running)
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "s-1024", "name": "王芳"})
        view = f"/pages/state/rater?device=rater-w1&token={token}"
        idle = (await client.get(view)).json()
        assert idle["rating"] is None
        assert (idle["staff"]["staff"], idle["staff"]["name"]) == ("s-1024", "王芳")
        assert [lv["label"] for lv in idle["levels"]] == [
            "非常满意",
            "满意",
            "基本满意",
            "不满意",
            "非常不满意",
        ]

        await client.post("/api/v1/tickets", json={"service": "social"})
        await client.post("/api/v1/windows/w1/next")
        await client.post("/api/v1/windows/w1/finish")  # starts the rating
        open_ = (await client.get(view)).json()
        assert open_["rating"]["ticket"] == "A001"
        rate = "/api/v1/raters/rater-w1/rating"
        body = {"level": 2, "ticket_id": open_["rating"]["ticket_id"]}
        refused = await client.post(rate, json=body, headers=auth)
        assert refused.status_code == 409
        assert "a 不满意 rating needs a reason" in refused.json()["message"]
        assert (await client.post(rate, json=body)).status_code == 404  # no token
        done = await client.post(rate, json={**body, "comment": "排队太久"}, headers=auth)
        assert done.status_code == 200, done.text
        assert [e["type"] for e in done.json()["events"]] == ["rating.submitted"]
        twice = await client.post(rate, json={**body, "level": 5}, headers=auth)
        assert twice.status_code == 409

        # Central asks for a rating of a ticket that was rated: refused; of a new one: ok.
        command = c.RequestRating(cmd_id="r-1", window="w1")
        with pytest.raises(Exception, match="rated already"):
            await windows.ratings.request_command(command)
        await client.post("/api/v1/tickets", json={"service": "social"})
        await client.post("/api/v1/windows/w1/next")
        result = await windows.ratings.request_command(command)
        assert result["rating"]["ticket"] == "A002"
        # Through the local API: only with the window's rater's own credential.
        local = await client.post("/api/v1/windows/w1/rating", json={"level": 5}, headers=auth)
        assert local.status_code == 200
        event = local.json()["events"][0]
        assert event["type"] == "rating.submitted"
        log = (await client.get(f"/api/v1/events?from_seq={event['seq']}")).json()
        assert (log[0]["data"]["level"], log[0]["data"]["channel"]) == (5, "api")


# -- in Chromium -----------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
async def test_pages_in_chromium_call_and_rate(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
        async_playwright() as p,
    ):
        windows = running.windows
        assert windows is not None
        await set_roster(running)
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "s-1024", "name": "王芳"})
        await client.post("/api/v1/tickets", json={"service": "social"})
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            caller = await browser.new_page(viewport={"width": 1280, "height": 900})
            await caller.goto(windows.page_url(running.url, "caller-w1"))
            await caller.click("[data-action=next]")
            await caller.wait_for_selector("#now[data-ticket=A001]", timeout=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await caller.screenshot(path=str(ARTIFACTS / "caller-page.png"))
            await caller.click("[data-action=finish]")

            rater = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            rater.on("pageerror", lambda e: errors.append(str(e)))
            await rater.goto(windows.page_url(running.url, "rater-w1"))
            await rater.wait_for_selector("#staff-name:text('王芳')", timeout=10_000)
            assert await rater.inner_text("#staff-number") == "工号 s-1024"
            await rater.click("[data-level='1']", timeout=10_000)  # 非常不满意
            await rater.click("#send")  # no reason yet: the page asks for one
            assert "原因" in await rater.inner_text("#message")
            await rater.click("text=办事效率低")
            await rater.screenshot(path=str(ARTIFACTS / "rater-page.png"))
            await rater.click("#send")
            await rater.wait_for_selector("#thanks", timeout=10_000)
            assert errors == []
        finally:
            await browser.close()
        events = (await client.get("/api/v1/events?limit=1000")).json()
        (rating,) = [e["data"] for e in events if e["type"] == "rating.submitted"]
        assert (rating["level"], rating["reasons"], rating["channel"]) == (
            1,
            ["办事效率低"],
            "tablet",
        )
        assert (rating["staff"], rating["staff_name"]) == ("s-1024", "王芳")
