"""Words for citizens, words for staff; only the roster's staff sign in; photos stay local.

A refusal a citizen can meet carries plain Chinese (``citizen_message``) besides the staff's
``message``; the kiosk's view says only citizen words; a staff number the roster does not
know cannot sign in; the rater tablet never points at central's photo URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import as_ops, hall_config

from agent.config import HallAgentConfig, Period
from agent.core import wording
from agent.core.events import EventClass
from agent.daemon import running_agent
from agent.runtime.store import RawEvent, Written

pytestmark = pytest.mark.timeout(60)

ROSTER = [
    {
        "staff": "s-1024",
        "name": "王芳",
        "key_code": "1024",
        "photo_url": "https://central.example.gov.cn/photos/s-1024.jpg",
    },
    {"staff": "s-2048", "name": "李强", "photo_url": "http://10.0.0.9/p/s-2048.png"},
]
# A citizen text: Chinese, digits and times; no Latin letters (English, device names,
# addresses) and nothing like an IP address or port.
LATIN = re.compile(r"[A-Za-z]")
ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+|:\d{3,5}\b")


def plain_chinese(text: str) -> bool:
    return bool(text) and not LATIN.search(text) and not ADDRESS.search(text)


def test_hours_are_written_the_way_a_citizen_reads_them() -> None:
    def period(start: str, end: str, days: list[str]) -> Period:
        return Period.model_validate({"start": start, "end": end, "days": days})

    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    hours = [
        period("09:00", "12:00", weekdays),
        period("13:30", "17:00", weekdays),
        period("09:00", "12:00", ["sat"]),
    ]
    assert wording.hours_text(hours) == "周一至周五 09:00-12:00、13:30-17:00；周六 09:00-12:00"
    assert wording.days_text(["wed", "mon"]) == "周一、周三"
    assert wording.days_text(["sat", "sun", "fri", "thu"]) == "周四至周日"
    assert wording.days_text(["mon", "tue", "thu"]) == "周一、周二、周四"
    assert wording.days_text(["sun", "sat", "fri", "thu", "wed", "tue", "mon"]) == "每天"
    assert wording.hours_text([]) == "全天"
    assert wording.status_text("called") == "已叫号，等候到窗口"


def config_with(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    data = hall_config(tmp_path / "state", **sections)
    closed = [{"start": "00:00", "end": "00:01", "days": ["sun"]}]
    data["services"][0]["daily_cap"] = 1
    data["services"][1]["hours"] = closed
    data["devices"] = [{"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}}]
    data["windows"][0]["devices"] = ["rater-w1"]
    return HallAgentConfig.model_validate(data)


async def set_roster(running: Any, roster: list[dict[str, Any]]) -> None:
    def write(store: Any, now: Any, ok: bool) -> Any:
        event = RawEvent("staff.roster_set", now, {"count": len(roster)}, EventClass.OPERATIONAL)
        return Written.of_events(store.append([event], clock_ok=ok, settings={"staff": roster}))

    await running.hall.write(write)


async def test_refused_tickets_carry_citizen_words_and_staff_words(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        assert (await client.post("/api/v1/tickets", json={"service": "social"})).status_code == 201
        over = (await client.post("/api/v1/tickets", json={"service": "social"})).json()
        closed = (await client.post("/api/v1/tickets", json={"service": "civil"})).json()
        unknown = (await client.post("/api/v1/tickets", json={"service": "nothing"})).json()
        kiosk = (await client.get("/pages/state/kiosk")).json()
        # A refusal staff only meet has no citizen words.
        paused = await client.post("/api/v1/windows/w1/resume")
    # The cap and the hours: Chinese, with the service's hours; the cause stays for staff.
    assert over["error"] == "refused"
    assert "today's limit of 1 tickets" in over["message"]
    assert over["citizen_message"] == (
        "社保医保今日号已取完，请下个办理日再来。办理时间：每天 00:00-23:59"
    )
    assert "hours: 00:00-00:01 sun" in closed["message"]
    # Why it is closed today (the weekend, or a day it does not run) and when it next
    # opens: the calendar's words (agent/core/opening.py; tests/test_business_calendar.py).
    assert closed["citizen_message"].startswith(
        ("今天是周末，民政救助不办理。", "民政救助今天不办理。", "民政救助今天的办理时间已结束。")
    )
    assert "下次办理时间：" in closed["citizen_message"]
    assert closed["citizen_message"].endswith(" 00:00")
    assert unknown["citizen_message"] == wording.GENERIC
    for text in (over["citizen_message"], closed["citizen_message"], unknown["citizen_message"]):
        assert plain_chinese(text.replace("00:00-23:59", "").replace("00:00-00:01", "")), text
    assert paused.status_code == 409
    assert "citizen_message" not in paused.json()
    # The kiosk's own view says the same words on its buttons.
    buttons = {s["id"]: s for s in kiosk["services"]}
    assert buttons["social"]["reason"] == over["citizen_message"]
    assert buttons["civil"]["reason"] == closed["citizen_message"]


def test_every_citizen_text_is_plain_chinese() -> None:
    texts = [
        wording.PRINTER_UNAVAILABLE,
        wording.STORE_UNAVAILABLE,
        wording.GENERIC,
        wording.service_closed("社保医保", "周一至周五 "),
        wording.daily_cap_reached("社保医保", "周一至周五 "),
        wording.already_holding("社保医保", "一号"),
        *wording.STATUS_WORDS.values(),
    ]
    assert all(plain_chinese(t) for t in texts), [t for t in texts if not plain_chinese(t)]


async def test_only_the_rosters_staff_sign_in(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        # No roster yet (a hall that has not heard from central): the number as typed.
        first = await client.post("/api/v1/windows/w2/sign-in", json={"staff": "s-7"})
        assert first.status_code == 200, first.text
        await set_roster(running, ROSTER)
        refused = await client.post("/api/v1/windows/w1/sign-in", json={"staff": "nobody-xyz"})
        assert refused.status_code == 409
        assert refused.json()["error"] == "not_on_roster"
        assert "nobody-xyz" in refused.json()["message"]
        assert "roster" in refused.json()["message"]
        # The command line fails the same way, with the reason.
        token = str(config.storage.path / "ops-token")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALL_")}
        cli = [sys.executable, "-m", "agent.cli", "window", "w1", "sign-in", "nobody-xyz"]
        done = await asyncio.to_thread(
            subprocess.run,
            [*cli, "--api", running.url, "--token-file", token],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert done.returncode != 0
        assert "not on the hall's roster" in done.stdout + done.stderr
        # A member signs in, with the roster's name whatever name was sent.
        signed = await client.post(
            "/api/v1/windows/w1/sign-in", json={"staff": "s-1024", "name": "假名"}
        )
        assert signed.status_code == 200, signed.text
        hall = (await client.get("/pages/state/hall")).json()
    staff = {w["id"]: w["staff"] for w in hall["windows"]}
    assert staff["w1"] is not None
    assert staff["w1"]["name"] == "王芳"
    assert staff["w1"]["staff"] == "s-1024"


async def test_the_rater_shows_only_local_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "s-2048.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    config = config_with(tmp_path, pages={"staff_photos": str(photos)})
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        await set_roster(running, ROSTER)
        assert running.windows is not None
        token = running.windows.tokens["rater-w1"]
        view = f"/pages/state/rater?device=rater-w1&token={token}"
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "s-1024"})
        without = (await client.get(view)).json()
        await client.post("/api/v1/windows/w1/sign-out", json={"staff": "s-1024"})
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "s-2048"})
        with_photo = (await client.get(view)).json()
        served = await client.get(with_photo["staff"]["photo"])
    # Central's URL is never handed to the tablet: the page shows the initial instead.
    assert without["staff"]["name"] == "王芳"
    assert without["staff"]["photo"] is None
    assert "central" not in json.dumps(without)
    assert with_photo["staff"]["photo"] == "/pages/staff/s-2048/photo"
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
