"""The staff board the hall edits itself (docs/configuration.md, "The hall's own roster and
rota"), through the local API of a real running agent:

- a manager (or ops) replaces the roster and the rota; the edit is kept with its
  ``staff.board_edited`` event, shows on the big screen's staff board at once, and
  survives a restart; the page says where the rota came from (hall / central / file);
- an edit is checked as the config file is: unknown windows, staff and shifts give the
  same lines as ``check-config``, and nothing changes;
- staff, guide, kiosk and screen credentials are refused (403), no credential is 401;
- a push from central with ``rota`` (or ``staff``) replaces the hall's edit; one without
  keeps it;
- a staff photo is an image uploaded through the content checks, and cannot be deleted
  while the board shows it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import hall_config
from test_content import Roles, picture

from agent.config import HallAgentConfig, validate_config
from agent.config.errors import ConfigError
from agent.daemon import running_agent
from agent.runtime.store import Store

pytestmark = pytest.mark.timeout(120)

API = "/api/v1"
# Shifts that cover the whole day: the board's shift is running whenever the test runs.
SHIFTS = [
    {"id": "am", "name": "上午", "start": "00:00", "end": "12:00"},
    {"id": "pm", "name": "下午", "start": "12:00", "end": "23:59:59"},
]
FILE_STAFF = [
    {"staff": "1001", "name": "王芳"},
    {"staff": "1002", "name": "李明"},
]
FILE_ROTA = {"shifts": SHIFTS, "posts": [{"window": "w1", "a": "1001", "b": "1002"}]}
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def edited_board(photo: str | None = None) -> dict[str, Any]:
    """A roster of three and a week in which w2 has 张伟 (A) and 李明 (B) every day."""
    return {
        "staff": [
            {"staff": "1001", "name": "王芳", "windows": ["w1", "w2"]},
            {"staff": "1002", "name": "李明", "windows": []},
            {"staff": "1003", "name": "张伟", "windows": ["w2"], "photo": photo},
        ],
        "rota": {
            "shifts": SHIFTS,
            "posts": [],
            "week": [
                {"window": "w1", "days": EVERY_DAY, "shifts": ["am", "pm"], "a": "1001"},
                {
                    "window": "w2",
                    "days": EVERY_DAY,
                    "shifts": ["am", "pm"],
                    "a": "1003",
                    "b": "1002",
                },
            ],
        },
    }


class Rig(Roles):
    """The staffing API on top of the credentials (the manager is ``boss``)."""

    async def board(self) -> dict[str, Any]:
        r = await self.client.get(f"{API}/staffing", headers=self.as_("manager"))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def put(self, body: dict[str, Any], role: str = "manager") -> httpx.Response:
        return await self.client.put(f"{API}/staffing", json=body, headers=self.as_(role))

    async def staff_board(self) -> dict[str, dict[str, Any]]:
        r = await self.client.get("/pages/state/hall")
        assert r.status_code == 200, r.text
        return {row["window"]: row for row in r.json()["staff_board"]}


def config_for(tmp_path: Path) -> HallAgentConfig:
    return HallAgentConfig.model_validate(
        hall_config(tmp_path / "state", staff=FILE_STAFF, rota=FILE_ROTA)
    )


@contextlib.asynccontextmanager
async def started(config: HallAgentConfig) -> AsyncIterator[Rig]:
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60) as client,
    ):
        yield await Rig(running, client, config.storage.path, manager="boss").setup()


async def test_an_edit_replaces_the_file_rota_shows_at_once_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    async with started(config) as rig:
        before = await rig.board()
        assert (before["source"], before["source_name"]) == ("file", "配置文件")
        assert [m["staff"] for m in before["staff"]] == ["1001", "1002"]
        assert before["rota"]["posts"] == [{"window": "w1", "a": "1001", "b": "1002"}]
        assert set(await rig.staff_board()) == {"w1"}

        r = await rig.put(edited_board())
        assert r.status_code == 200, r.text
        after = r.json()
        assert (after["source"], after["source_name"]) == ("hall", "本大厅编辑")
        assert after["edited_by"] == "boss"
        assert [m["name"] for m in after["staff"]] == ["王芳", "李明", "张伟"]
        # The big screen: w2 now has 张伟 as A (absent: 李明 stands in); w1 has only 王芳,
        # absent, and no B any more: nobody to show.
        board = await rig.staff_board()
        assert (board["w2"]["a"], board["w2"]["b"]) == ("1003", "1002")
        assert [(p["staff"], p["stands_in"]) for p in board["w2"]["people"]] == [("1002", True)]
        assert "w1" not in board
        assert rig.running.hall.config.rota.post("w2", "mon", "am") is not None

    store = Store.open(config.storage.path)
    try:
        edits = [e for e in store.iter_events() if e.type == "staff.board_edited"]
        assert [e.data for e in edits] == [{"count": 3, "windows": ["w1", "w2"], "by": "boss"}]
    finally:
        store.close()

    async with started(config) as rig:  # the hall's edit is laid over the file at start
        again = await rig.board()
        assert again["source"] == "hall"
        assert [m["staff"] for m in again["staff"]] == ["1001", "1002", "1003"]
        assert (await rig.staff_board())["w2"]["a"] == "1003"


async def test_an_edit_is_checked_as_the_config_file_is(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    async with started(config) as rig:
        body = edited_board()
        body["rota"]["week"][0]["window"] = "w9"
        body["rota"]["week"][1]["a"] = "1009"
        body["rota"]["week"][1]["shifts"] = ["night"]
        r = await rig.put(body)
        assert r.status_code == 422, r.text
        problems = r.json()["problems"]
        # The very lines check-config prints for the same rota in the file.
        data = config.model_dump(mode="json")
        data["staff"] = [{k: v for k, v in m.items() if k != "photo"} for m in body["staff"]]
        data["rota"] = body["rota"]
        with pytest.raises(ConfigError) as file_error:
            validate_config(data)
        assert problems == [str(p) for p in file_error.value.problems]
        assert any(
            p.startswith("rota.week[0].window: unknown window 'w9' (fix: use one of the windows")
            for p in problems
        )
        assert any(p.startswith("rota.week[1].a: unknown staff '1009'") for p in problems)
        assert any(p.startswith("rota.week[1].shifts[0]: unknown shift 'night'") for p in problems)

        # Someone A at two windows at once; a member at a window they may not work at.
        body = edited_board()
        body["rota"]["week"][1]["a"] = "1001"
        body["staff"][0]["windows"] = ["w1"]
        r = await rig.put(body)
        assert r.status_code == 422
        problems = r.json()["problems"]
        assert "rota.week[1].a: staff 1001 (王芳) works at window w1, not w2" in problems[0]
        assert any("staff 1001 is A (主岗) at windows w1 and w2" in p for p in problems)

        # A member without a name is the config's own field error.
        body = edited_board()
        body["staff"][2]["name"] = ""
        r = await rig.put(body)
        assert r.status_code == 422
        assert r.json()["problems"][0].startswith("staff[2].name")

        # Nothing changed.
        assert (await rig.board())["source"] == "file"
        assert rig.running.hall.config.rota.posts[0].a == "1001"


@pytest.mark.parametrize("role", ["staff", "guide", "kiosk", "screen"])
async def test_only_the_manager_and_ops_read_and_edit_the_board(tmp_path: Path, role: str) -> None:
    async with started(config_for(tmp_path)) as rig:
        r = await rig.client.get(f"{API}/staffing", headers=rig.as_(role))
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
        r = await rig.put(edited_board(), role)
        assert r.status_code == 403, r.text
        r = await rig.client.put(f"{API}/staffing", json=edited_board())
        assert r.status_code == 401
        assert (await rig.board())["source"] == "file"
        r = await rig.put(edited_board(), "ops")
        assert r.status_code == 200, r.text
        assert r.json()["edited_by"] == "ops-token"


async def test_a_push_from_central_with_the_rota_replaces_the_halls_edit(tmp_path: Path) -> None:
    async with started(config_for(tmp_path)) as rig:
        assert (await rig.put(edited_board())).status_code == 200
        desk = rig.running.link.configs

        # A push without staff or rota keeps the hall's board.
        calendar_only = {"version": "v1", "config": {"queue": {}}}
        assert await desk.on_push(json.dumps(calendar_only).encode())
        assert (await rig.board())["source"] == "hall"
        assert rig.running.hall.config.rota.post("w2", "mon", "am") is not None

        # One with the rota replaces it: central's board from now on.
        central_rota = {"shifts": SHIFTS, "posts": [{"window": "w3", "a": "1002", "b": "1001"}]}
        push = {"version": "v2", "config": {"staff": FILE_STAFF, "rota": central_rota}}
        assert await desk.on_push(json.dumps(push).encode())
        board = await rig.board()
        assert (board["source"], board["source_name"]) == ("central", "上级下发")
        assert board["edited_by"] is None
        assert [m["staff"] for m in board["staff"]] == ["1001", "1002"]
        assert rig.running.hall.config.rota.post("w2", "mon", "am") is None
        assert set(await rig.staff_board()) == {"w3"}


async def test_a_staff_photo_is_a_checked_upload_kept_while_the_board_shows_it(
    tmp_path: Path,
) -> None:
    async with started(config_for(tmp_path)) as rig:
        headers = {**rig.as_("manager"), "Content-Type": "application/octet-stream"}
        r = await rig.client.post(
            f"{API}/content/images", content=b"<script>alert(1)</script>", headers=headers
        )
        assert r.status_code == 415
        r = await rig.client.post(
            f"{API}/content/images", content=picture(300, 400), headers=headers
        )
        assert r.status_code == 201, r.text
        photo = r.json()["id"]
        r = await rig.put(edited_board(photo))
        assert r.status_code == 200, r.text
        assert r.json()["staff"][2]["photo"] == photo
        board = await rig.staff_board()
        li = next(p for p in board["w2"]["people"] if p["staff"] == "1002")
        assert li["photo"] is None
        # 张伟 (A at w2) is absent, so not on the board; sign him in to see his photo.
        r = await rig.client.post(
            f"{API}/windows/w2/sign-in", json={"staff": "1003"}, headers=rig.ops
        )
        assert r.status_code == 200, r.text
        board = await rig.staff_board()
        zhang = next(p for p in board["w2"]["people"] if p["staff"] == "1003")
        assert zhang["photo"] == f"/pages/content/images/{photo}"

        r = await rig.client.get(f"{API}/content/images", headers=rig.as_("manager"))
        (listed,) = r.json()["images"]
        assert listed["used_by"] == [{"kind": "staff", "id": "1003", "title": "工号 1003 的照片"}]
        r = await rig.client.delete(f"{API}/content/images/{photo}", headers=rig.as_("manager"))
        assert r.status_code == 409, r.text
        assert "1003" in r.json()["message"]

        missing = edited_board("0" * 20)
        r = await rig.put(missing)
        assert r.status_code == 422
        assert "照片不存在" in r.json()["problems"][0]
