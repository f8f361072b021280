"""Evdev callers and raters: synthetic key events through the real keymaps and desks (a
real input device needs /dev/uinput; that path is skipped where there is none)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

evdev = pytest.importorskip("evdev")
from evdev import InputEvent, ecodes  # noqa: E402

from agent.config import HallAgentConfig  # noqa: E402
from agent.core.operations import Finish, Take  # noqa: E402
from agent.features.callers import CallerDesk  # noqa: E402
from agent.features.keypads import WindowKeypads  # noqa: E402
from agent.features.rating import RatingDesk  # noqa: E402
from agent.runtime.devices import DeviceBoard  # noqa: E402
from agent.runtime.hall import Hall  # noqa: E402
from agent.runtime.store import Store  # noqa: E402

pytestmark = pytest.mark.timeout(30)


class FakeKeypad:
    """An input device whose events the test writes (with auto-repeat and key-ups)."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[InputEvent] = asyncio.Queue()
        self.grabbed = False

    def type(self, *names: str) -> None:
        for name in names:
            code = ecodes.ecodes[name]
            for value in (1, 2, 0):  # down, auto-repeat, up: one press
                self.events.put_nowait(InputEvent(0, 0, ecodes.EV_KEY, code, value))

    async def async_read_loop(self) -> AsyncIterator[Any]:
        while True:
            yield await self.events.get()

    def grab(self) -> None:
        self.grabbed = True

    def close(self) -> None:
        pass


def config(state: Path) -> HallAgentConfig:
    return HallAgentConfig.model_validate(
        {
            "hall": {"id": "ev-hall", "name": "测试"},
            "services": [{"id": "social", "name": "社保", "prefix": "A"}],
            "windows": [
                {
                    "id": "w1",
                    "name": "1号窗口",
                    "number": 1,
                    "services": ["social"],
                    "devices": ["caller-w1", "rater-w1"],
                }
            ],
            "devices": [
                {"id": "caller-w1", "kind": "caller", "transport": {"type": "evdev", "name": "k"}},
                {"id": "rater-w1", "kind": "rater", "transport": {"type": "evdev", "name": "r"}},
            ],
            "storage": {"path": str(state)},
            "rating": {"start_on": "finish"},
            "callers": {"debounce_s": 0},
        }
    )


async def test_evdev_keypads_call_and_rate(tmp_path: Path) -> None:
    cfg = config(tmp_path / "state")
    keypads = {"caller-w1": FakeKeypad(), "rater-w1": FakeKeypad()}
    by_name = {"k": keypads["caller-w1"], "r": keypads["rater-w1"]}
    store = Store.open(cfg.storage.path)
    try:
        async with (
            Hall(cfg, store) as hall,
            RatingDesk(hall) as ratings,
            hall.events() as committed,
            WindowKeypads(
                hall,
                DeviceBoard(cfg),
                CallerDesk(hall),
                ratings,
                evdev_opener_for=lambda t: lambda: by_name[t.name or ""],
            ) as window_keypads,
        ):

            async def until(kind: str) -> dict[str, Any]:
                async with asyncio.timeout(5):
                    while (event := await committed.get()).type != kind:
                        pass
                return event.data

            for _ in range(2):
                await hall.execute(Take(service="social"))
            caller, rater = keypads["caller-w1"], keypads["rater-w1"]
            caller.type("KEY_KPPLUS")  # next (auto-repeat and key-up are not presses)
            assert (await until("ticket.called"))["ticket"] == "A001"
            caller.type("KEY_KP2", "KEY_KP9", "KEY_BACKSPACE", "KEY_KP2", "KEY_KPPLUS")
            assert (await until("ticket.called"))["ticket"] == "A002"  # digits 2 + next
            caller.type("KEY_KPENTER")  # serving
            await until("ticket.serving")
            await hall.execute(Finish(window="w1"))
            await until("rating.requested")
            rater.type("KEY_4")  # 不满意: waits for the reason key
            rater.type("KEY_2")  # the second key: reason 2
            rated = await until("rating.submitted")
            assert (rated["level"], rated["reasons"], rated["device"]) == (
                2,
                ["办事效率低"],
                "rater-w1",
            )
            assert caller.grabbed
            assert rater.grabbed
            assert window_keypads.evdev["caller-w1"].presses == 7
            assert window_keypads.board.get("caller-w1").status == "ok"
    finally:
        store.close()


@pytest.mark.skipif(not os.access("/dev/uinput", os.W_OK), reason="no writable /dev/uinput")
async def test_a_real_uinput_keypad_is_read() -> None:
    from drivers.keypad import EvdevKeys, evdev_opener

    pressed: list[str] = []
    connected, heard = asyncio.Event(), asyncio.Event()

    def on_key(name: str) -> None:
        pressed.append(name)
        heard.set()

    with evdev.UInput({ecodes.EV_KEY: [ecodes.KEY_KPPLUS]}, name="hall-test-keypad") as ui:
        opener = evdev_opener(None, "hall-test-keypad")
        keys = EvdevKeys(
            "test", opener, on_key, on_health=lambda h: connected.set() if h.connected else None
        )
        async with keys, asyncio.timeout(10):
            await connected.wait()
            ui.write(ecodes.EV_KEY, ecodes.KEY_KPPLUS, 1)
            ui.write(ecodes.EV_KEY, ecodes.KEY_KPPLUS, 0)
            ui.syn()
            await heard.wait()
    assert pressed == ["KEY_KPPLUS"]
