"""The kiosk's server side: the service guide in the kiosk view (and pushed by central with
the services), the green channel by touch and who granted a priority, the guide desk's
appointment check-in, and the kiosk's spoken guidance from the clip pack."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import as_ops, bearer, enroll, hall_config

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.engine import QueueEngine
from agent.core.errors import Refused
from agent.core.events import Event
from agent.core.model import Priority, Ticket
from agent.core.operations import Take
from agent.daemon import Running, running_agent
from agent.features.access import Role
from agent.features.voice import GAP_S, ClipPack, kiosk_tokens
from agent.features.voice_clips import AudioFormat, read_wav, write_wav
from agent.runtime.store import Store, Written

pytestmark = pytest.mark.timeout(60)

API = "/api/v1"
PASSWORD = "guide desk pass 1"
GUIDE = {
    "summary": "参保人员申领社会保障卡",
    "materials": ["本人居民身份证原件", "近期一寸免冠白底彩色照片1张"],
    "notes": ["代办须提供代办人身份证"],
    "time_limit_days": 0,
    "fee": "不收费",
}


def config_for(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    data = hall_config(tmp_path / "state", **sections)
    data["services"][0]["guide"] = GUIDE
    return HallAgentConfig.model_validate(data)


async def guide_headers(running: Running, name: str = "g-2001") -> dict[str, str]:
    assert running.access is not None
    await running.access.add_user(name, Role.GUIDE, [], PASSWORD)
    async with httpx.AsyncClient(base_url=running.url) as client:
        r = await client.post(f"{API}/auth/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return bearer(r.json()["token"])


async def issued_events(running: Running) -> list[ev.TicketIssued]:
    rows = await running.hall.store_call(lambda s: s.events(1, 1000))
    return [r.payload for r in rows if isinstance(r.payload, ev.TicketIssued)]


async def test_the_kiosk_view_carries_each_services_guide_and_the_green_channel(
    tmp_path: Path,
) -> None:
    hall = {"id": "test-hall", "name": "测试大厅", "phone": "0571-12345"}
    config = config_for(tmp_path, hall=hall)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        state = (await client.get("/pages/state/kiosk")).json()
        social = next(s for s in state["services"] if s["id"] == "social")
        assert social["guide"] == {
            "summary": GUIDE["summary"],
            "materials": GUIDE["materials"],
            "notes": GUIDE["notes"],
            "time_limit": "即办（当场办结）",
            "fee": "不收费",
        }
        assert next(s for s in state["services"] if s["id"] == "civil")["guide"] is None
        assert state["phone"] == "0571-12345"
        channel = state["green_channel"]
        assert channel["by_touch"] is True
        assert [c["id"] for c in channel["classes"]] == [
            "elderly",
            "disabled",
            "veteran",
            "pregnant",
        ]
        assert "绿色通道" in channel["policy"]
        for page in ("/pages/guide", "/pages/guide-desk", "/pages/static/kiosk.css"):
            assert (await client.get(page)).status_code == 200, page


async def test_guides_ride_along_with_centrals_config_push(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        services = [s.model_dump(mode="json") for s in config.services]
        services[1]["guide"] = {
            "materials": ["户口簿原件", "低保申请书"],
            "time_limit_days": 20,
            "fee": "不收费",
        }
        services[0].pop("guide")
        services[1]["name_en"] = "Civil affairs (pushed)"
        push = {"version": "v-guides", "config": {"services": services}}
        assert await running.link.configs.on_push(json.dumps(push).encode())
        state = (await client.get("/pages/state/kiosk")).json()
        guides = {s["id"]: s["guide"] for s in state["services"]}
        assert guides["civil"] is not None
        assert guides["civil"]["materials"] == ["户口簿原件", "低保申请书"]
        assert guides["civil"]["time_limit"] == "20个工作日"
        assert guides["social"] is None
        civil = next(s for s in state["services"] if s["id"] == "civil")
        assert civil["name_en"] == "Civil affairs (pushed)"


def test_the_engine_records_a_grant_only_on_a_priority_ticket_and_one_check_in_a_day(
    make_config: Any,
) -> None:
    now = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    engine = QueueEngine.fresh(make_config(), now)
    normal = engine.apply(Take(service="general", granted_by="self"), now)
    assert normal.ticket is not None
    assert normal.ticket.granted_by is None
    assert "granted_by" not in normal.events[-1].payload.to_data()
    green = engine.apply(
        Take(service="general", priority=Priority.PREGNANT, granted_by="self"), now
    )
    assert green.ticket is not None
    assert (green.ticket.priority, green.ticket.granted_by) == (Priority.PREGNANT, "self")
    booked = Take(
        service="general", priority=Priority.APPOINTMENT, granted_by="2001", appointment="YY1"
    )
    first = engine.apply(booked, now)
    assert first.events[-1].payload.to_data()["appointment"] == "YY1"
    with pytest.raises(Refused, match="already checked in"):
        engine.apply(booked, now)
    # Stored and read back with both fields.
    assert first.ticket is not None
    assert Ticket.from_json(first.ticket.to_json()) == first.ticket


async def test_green_channel_by_touch_records_self_and_the_guide_desk_its_staff_number(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        kiosk = bearer(await enroll(running, "kiosk-1", "kiosk"))
        r = await client.post(
            f"{API}/tickets",
            json={"service": "social", "source": "touch", "priority": "pregnant"},
            headers=kiosk,
        )
        assert r.status_code == 201, r.text
        assert r.json()["result"]["ticket"]["priority"] == "pregnant"
        guide = await guide_headers(running)
        r = await client.post(
            f"{API}/tickets", json={"service": "civil", "priority": "veteran"}, headers=guide
        )
        assert r.status_code == 201, r.text
        r = await client.post(f"{API}/tickets", json={"service": "civil"}, headers=kiosk)
        assert r.status_code == 201, r.text
        issued = await issued_events(running)
        assert [(e.ticket, e.priority.value, e.granted_by) for e in issued] == [
            ("A001", "pregnant", "self"),
            ("B001", "veteran", "g-2001"),
            ("B002", "normal", None),
        ]
        # A priority ticket goes before the normal one of the same service.
        queue = (await client.get(f"{API}/queue", headers=guide)).json()
        assert [t["number"] for t in queue["waiting"]][:2] == ["A001", "B001"]


async def test_the_kiosk_offers_only_the_configured_classes_and_none_when_off(
    tmp_path: Path,
) -> None:
    only = {"classes": [{"id": "elderly", "label": "老年人"}], "by_touch": True}
    config = config_for(tmp_path, queue={"green_channel": only})
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        kiosk = bearer(await enroll(running, "kiosk-1", "kiosk"))
        body = {"service": "social", "priority": "veteran"}
        r = await client.post(f"{API}/tickets", json=body, headers=kiosk)
        assert r.status_code == 403
        assert "serves elderly" in r.json()["message"]
        body["priority"] = "elderly"
        assert (await client.post(f"{API}/tickets", json=body, headers=kiosk)).status_code == 201

    off = {"green_channel": {"by_touch": False}}
    async with (
        running_agent(config_for(tmp_path / "off", queue=off)) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        kiosk = bearer(await enroll(running, "kiosk-1", "kiosk"))
        r = await client.post(
            f"{API}/tickets", json={"service": "social", "priority": "elderly"}, headers=kiosk
        )
        assert r.status_code == 403
        assert "guide" in r.json()["message"]
        assert (await client.get("/pages/state/kiosk")).json()["green_channel"]["by_touch"] is False


async def set_appointments(running: Running, items: list[dict[str, Any]]) -> None:
    def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        days = sorted({a["day"] for a in items})
        event = Event(ev.AppointmentsSet(count=len(items), days=days), now)
        return Written(
            store.append([event], clock_ok=clock_ok, settings={"appointments": items}), None
        )

    await running.hall.write(write)


async def test_the_guide_desk_checks_an_appointment_in_once(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        today = running.hall.business_day()
        sha = "0" * 64
        await set_appointments(
            running,
            [
                {
                    "appointment_id": "YY0001",
                    "id_sha256": sha,
                    "service": "housing",
                    "day": str(today),
                },
                {
                    "appointment_id": "YY0002",
                    "id_sha256": sha,
                    "service": "civil",
                    "day": str(today + dt.timedelta(days=1)),
                },
            ],
        )
        guide = await guide_headers(running)
        kiosk = bearer(await enroll(running, "kiosk-1", "kiosk"))
        url = f"{API}/appointments/YY0001/check-in"
        assert (await client.post(url)).status_code == 401
        assert (await client.post(url, headers=kiosk)).status_code == 403
        r = await client.post(url, headers=guide)
        assert r.status_code == 201, r.text
        ticket = r.json()["result"]["ticket"]
        assert (ticket["number"], ticket["priority"], ticket["appointment"]) == (
            "C001",
            "appointment",
            "YY0001",
        )
        assert ticket["granted_by"] == "g-2001"
        again = await client.post(url, headers=guide)
        assert again.status_code == 409
        assert "already checked in: ticket C001" in again.json()["message"]
        other_day = await client.post(f"{API}/appointments/YY0002/check-in", headers=guide)
        assert other_day.status_code == 409
        assert "not today" in other_day.json()["message"]
        unknown = await client.post(f"{API}/appointments/NOPE/check-in", headers=as_ops(running))
        assert unknown.status_code == 404
        assert "check the number" in unknown.json()["message"]
        issued = await issued_events(running)
        assert [(e.ticket, e.appointment, e.granted_by) for e in issued] == [
            ("C001", "YY0001", "g-2001")
        ]


def tiny_pack(folder: Path, names: list[str]) -> dict[str, float]:
    """A recorded pack: one short tone per clip, each of its own length."""
    fmt = AudioFormat(rate=8000, channels=1, sample_width=2)
    folder.mkdir(parents=True)
    clips = {}
    seconds = {}
    for i, name in enumerate(names):
        frames = int(fmt.rate * (0.05 + 0.01 * i))
        data = b"\x10\x20" * frames
        (folder / f"c{i}.wav").write_bytes(write_wav(data, fmt))
        clips[name] = f"c{i}.wav"
        seconds[name] = frames / fmt.rate
    (folder / "pack.json").write_text(json.dumps({"clips": clips}), encoding="utf-8")
    return seconds


async def test_the_kiosk_speaks_service_number_and_people_ahead_from_the_clip_pack(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    words = [*"0123456789", "A", "B", "C", "D", "号", "十", "百", "您的号码是", "前面还有", "人"]
    seconds = tiny_pack(config.storage.path / "voice" / "zh", [*words, "社保医保"])
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        r = await client.get(
            "/pages/kiosk/voice", params={"service": "social", "ticket": "A012", "ahead": 12}
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "audio/wav"
        pack = ClipPack.load(config.storage.path / "voice" / "zh")
        tokens = kiosk_tokens(pack, "社保医保", "A012", 12)
        assert tokens == [
            "社保医保",
            "您的号码是",
            "A",
            "0",
            "1",
            "2",
            "号",
            "前面还有",
            "十",
            "2",
            "人",
        ]
        clip = read_wav(r.content)
        expected = sum(seconds[t] for t in tokens) + GAP_S * (len(tokens) - 1)
        assert clip.seconds == pytest.approx(expected, abs=0.002)
        # A service without a recorded clip is left out; 0 people ahead is read 零.
        assert kiosk_tokens(pack, "民政救助", "B001", 0)[:2] == ["您的号码是", "B"]
        assert kiosk_tokens(pack, "民政救助", "B001", 0)[-2:] == ["0", "人"]
        bad = await client.get("/pages/kiosk/voice", params={"service": "nope", "ticket": "A012"})
        assert bad.status_code == 404
        bad = await client.get("/pages/kiosk/voice", params={"service": "social", "ticket": "x"})
        assert bad.status_code == 422
