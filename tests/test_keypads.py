"""Window callers and raters on an emulated keypad bus (pty and TCP), through the real
drivers, desks and hall: whole window sessions, ratings, double presses, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import HallAgentConfig
from agent.core.model import TicketStatus
from agent.core.operations import CallNext, Finish, Take
from agent.demo.emulators.keypad import VirtualKeypads
from agent.features.callers import CallerDesk
from agent.features.keypads import WindowKeypads
from agent.features.rating import RatingDesk
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import Store, Written
from protocols.keypad import CallerAction, CallerCommand, CallerKey

pytestmark = pytest.mark.timeout(60)

ROSTER = [
    {"staff": "s-1024", "name": "王芳", "key_code": "1024", "windows": ["w1"]},
    {"staff": "s-2048", "name": "李明", "key_code": "2048"},
]


def config_for(
    state: Path, transport: dict[str, Any], *, rating: dict[str, Any] | None = None
) -> HallAgentConfig:
    def keypad(device_id: str, kind: str, address: int) -> dict[str, Any]:
        return {"id": device_id, "kind": kind, "transport": transport, "address": address}

    return HallAgentConfig.model_validate(
        {
            "hall": {"id": "kp-hall", "name": "测试大厅", "region_code": "110108"},
            "services": [
                {"id": "social", "name": "社保医保", "prefix": "A"},
                {"id": "civil", "name": "民政救助", "prefix": "B"},
            ],
            "windows": [
                {
                    "id": "w1",
                    "name": "1号窗口",
                    "number": 1,
                    "services": ["social", "civil"],
                    "devices": ["caller-w1", "rater-w1"],
                },
                {
                    "id": "w2",
                    "name": "2号窗口",
                    "number": 2,
                    "services": ["social", "civil"],
                    "devices": ["caller-w2", "rater-w2"],
                },
                {
                    "id": "w3",
                    "name": "3号窗口",
                    "number": 3,
                    "services": ["social", "civil"],
                    "devices": ["caller-w3"],
                },
            ],
            "devices": [
                keypad("caller-w1", "caller", 1),
                keypad("caller-w2", "caller", 2),
                keypad("caller-w3", "caller", 3),
                keypad("rater-w1", "rater", 11),
                {**keypad("rater-w2", "rater", 12), "keys": [5, 4, 3, 1]},
            ],
            "storage": {"path": str(state)},
            "rating": rating or {"start_on": "any_finish", "timeout_s": 30},
            "callers": {"debounce_s": 0.5},
        }
    )


class Monotonic:
    """The callers' debounce clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def running(
    config: HallAgentConfig, clock: Monotonic | None = None
) -> AsyncIterator[tuple[Hall, WindowKeypads]]:
    store = Store.open(config.storage.path)
    board = DeviceBoard(config)
    desk_clock = clock or Monotonic()
    try:
        async with (
            Hall(config, store) as hall,
            RatingDesk(hall) as ratings,
            WindowKeypads(hall, board, CallerDesk(hall, clock=desk_clock), ratings) as keypads,
        ):
            yield hall, keypads
    finally:
        store.close()


@contextlib.asynccontextmanager
async def pty_hall(
    tmp_path: Path, clock: Monotonic | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Hall, VirtualKeypads]]:
    async with VirtualKeypads() as bus:
        port = bus.open_pty()
        config = config_for(tmp_path / "state", {"type": "serial", "port": port}, **kwargs)
        async with running(config, clock) as (hall, keypads):
            (driver,) = [b.driver for b in keypads.buses.values()]
            async with asyncio.timeout(5):
                await driver.wait_connected()
            yield hall, bus


async def set_roster(hall: Hall) -> None:
    await hall.write(
        lambda store, now, ok: Written.of_events(store.append([], settings={"staff": ROSTER}))
    )


async def take(hall: Hall, service: str = "social", count: int = 1) -> list[str]:
    numbers = []
    for _ in range(count):
        out = await hall.execute(Take(service=service))
        numbers.append(out.result["ticket"]["number"])
    return numbers


async def events(hall: Hall, after: int = 0) -> list[Any]:
    return await hall.store_call(lambda s: s.events(after + 1, 1000))


async def ticket(hall: Hall, number: str) -> Any:
    def find(engine: Any, _: Any) -> Any:
        return next(t for t in engine.tickets.values() if t.number == number)

    return await hall.read(find)


async def wait_until(hall: Hall, check: Any, within: float = 5.0) -> None:
    """Until ``check(engine)`` holds, looking again after every committed event."""
    async with hall.events() as committed, asyncio.timeout(within):
        while not await hall.read(lambda e, n: check(e)):
            await committed.get()


async def test_a_press_is_acknowledged_only_once_it_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keypad hears "received" only when a kill -9 can no longer lose the press."""
    async with pty_hall(tmp_path) as (hall, bus):
        await take(hall)
        bus.ack_timeout_s, bus.retries = 30.0, 0  # one frame, waiting as long as it takes
        entered, release = threading.Event(), threading.Event()
        commit = hall.store.commit

        def held(outcome: Any, *args: Any, **kwargs: Any) -> Any:
            if any(e.type == "ticket.called" for e in outcome.events):
                entered.set()
                release.wait(30)
            return commit(outcome, *args, **kwargs)

        monkeypatch.setattr(hall.store, "commit", held)
        press = asyncio.create_task(bus.press(1, CallerKey.NEXT))
        try:
            assert await asyncio.to_thread(entered.wait, 10), "the press never reached the store"
            # While the call is being written, the keypad's frame stays unacknowledged (an
            # acknowledgement sent on receipt would be in by now).
            done, _ = await asyncio.wait({press}, timeout=0.3)
            assert not done
            assert bus.keypad(1).acknowledged == 0
        finally:
            release.set()
        assert await press
        assert bus.keypad(1).acknowledged == 1
        assert [e.type for e in await events(hall)][-1] == "ticket.called"


async def test_frames_resent_while_the_press_is_saved_are_that_press_not_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no debounce at all, a keypad resending its "next" during a slow commit still
    calls one ticket: the bus knows the copies for what they are."""
    async with VirtualKeypads(ack_timeout_s=0.05, retries=40) as bus:
        config = config_for(tmp_path / "state", {"type": "serial", "port": bus.open_pty()})
        config = config.model_copy(
            update={"callers": config.callers.model_copy(update={"debounce_s": 0.0})}
        )
        async with running(config) as (hall, keypads):
            (driver,) = [b.driver for b in keypads.buses.values()]
            await asyncio.wait_for(driver.wait_connected(), 5)
            await take(hall, count=2)
            entered, release = threading.Event(), threading.Event()
            commit = hall.store.commit

            def held(outcome: Any, *args: Any, **kwargs: Any) -> Any:
                if any(e.type == "ticket.called" for e in outcome.events):
                    entered.set()
                    release.wait(30)
                return commit(outcome, *args, **kwargs)

            monkeypatch.setattr(hall.store, "commit", held)
            press = asyncio.create_task(bus.press(1, CallerKey.NEXT))
            try:
                assert await asyncio.to_thread(entered.wait, 10)
                for _ in range(400):  # the keypad resends every 50 ms while it waits
                    if bus.keypad(1).frames_sent >= 3:
                        break
                    await asyncio.sleep(0.05)
                assert bus.keypad(1).frames_sent >= 3
            finally:
                release.set()
            assert await press
            assert driver.counters.resends >= 2
            called = [e.data["ticket"] for e in await events(hall) if e.type == "ticket.called"]
            assert called == ["A001"]


async def test_a_whole_window_session_on_keypads_over_a_pty(tmp_path: Path) -> None:
    clock = Monotonic()
    async with pty_hall(tmp_path, clock) as (hall, bus):
        await set_roster(hall)
        a1, a2, a3, a4 = await take(hall, count=4)
        caller, rater = bus.keypad(1), bus.keypad(11)

        # Sign in with the key code, then call.
        assert await bus.press(1, CallerKey.CONFIRM, "1024")
        await wait_until(hall, lambda e: e.windows["w1"].staff == "s-1024")
        assert await hall.read(lambda e, n: e.windows["w1"].staff_name) == "王芳"
        assert await bus.press(1, CallerKey.NEXT)
        await bus.wait_for(lambda: caller.display == "001")

        # Recall is not a new call; then the citizen gave up (6 + confirm).
        assert await bus.press(1, CallerKey.RECALL)
        await wait_until(hall, lambda e: e.tickets[f"{e.hall.day:%Y%m%d}-{a1}"].recalls == 1)
        first = await ticket(hall, a1)
        assert (first.called_count, first.recalls) == (1, 1)
        assert await bus.press(1, CallerKey.CONFIRM, "6")
        await wait_until(hall, lambda e: e.windows["w1"].current is None)
        assert (await ticket(hall, a1)).status is TicketStatus.NO_SHOW

        # Next, hold (0 + confirm), next, and call the held ticket back (3 + confirm).
        assert await bus.press(1, CallerKey.NEXT)
        await bus.wait_for(lambda: caller.display == "002")
        assert await bus.press(1, CallerKey.CONFIRM, "0")
        await wait_until(hall, lambda e: e.windows["w1"].current is None)
        assert await bus.press(1, CallerKey.NEXT)
        await bus.wait_for(lambda: caller.display == "003")
        assert await bus.press(1, CallerKey.CONFIRM, "3")
        await bus.wait_for(lambda: caller.display == "002")
        assert (await ticket(hall, a2)).status is TicketStatus.CALLED
        # A003 was finished by the call back: its rating opened and the rater was invited.
        await bus.wait_for(lambda: rater.rating_active)
        assert await bus.rate(11, 0)  # 非常满意
        await wait_until(hall, lambda e: e.windows["w1"].rating is None)
        assert (await ticket(hall, a3)).rating["level"] == 5

        # Transfer A002 to the second service (2 + transfer).
        assert await bus.press(1, CallerKey.TRANSFER, "2")
        await wait_until(hall, lambda e: e.windows["w1"].current is None)
        moved = await ticket(hall, a2)
        assert (moved.service, moved.status) == ("civil", TicketStatus.WAITING)

        # Serve A004 (confirm alone), ask for a rating; a bad key then its reason key.
        assert await bus.press(1, CallerKey.NEXT, "4")  # digits + next: call number 4
        await bus.wait_for(lambda: caller.display == "004")
        assert await bus.press(1, CallerKey.CONFIRM)
        await wait_until(
            hall, lambda e: e.tickets[f"{e.hall.day:%Y%m%d}-{a4}"].status is TicketStatus.SERVING
        )
        invites = rater.rating_invites
        assert await bus.press(1, CallerKey.RATE)
        await bus.wait_for(lambda: rater.rating_invites == invites + 1)
        beeps = rater.beeps
        assert await bus.rate(11, 3)  # 不满意: the rater beeps for a reason
        await bus.wait_for(lambda: rater.beeps == beeps + 1)
        assert await bus.rate(11, 1)  # reason 2 of the list: 办事效率低
        await wait_until(hall, lambda e: e.windows["w1"].rating is None)
        rating = (await ticket(hall, a4)).rating
        assert (rating["level"], rating["label"], rating["reasons"]) == (
            2,
            "不满意",
            ["办事效率低"],
        )
        assert (rating["staff"], rating["channel"], rating["device"]) == (
            "s-1024",
            "keypad",
            "rater-w1",
        )

        # Pause and resume with the same key.
        assert await bus.press(1, CallerKey.PAUSE)
        await wait_until(hall, lambda e: e.windows["w1"].state.value == "paused")
        clock.now += 0.6  # past callers.debounce_s: not a double press
        assert await bus.press(1, CallerKey.PAUSE)
        await wait_until(hall, lambda e: e.windows["w1"].state.value == "open")

        # Sign out on a keypad without a sign-out key (8 + confirm).
        assert await bus.press(1, CallerKey.CONFIRM, "8")
        await wait_until(hall, lambda e: e.windows["w1"].staff is None)

        kinds = [e.type for e in await events(hall)]
        for kind in (
            "staff.signed_in",
            "ticket.called",
            "ticket.recalled",
            "ticket.no_show",
            "ticket.held",
            "ticket.returned",
            "ticket.transferred",
            "ticket.serving",
            "rating.requested",
            "rating.submitted",
            "window.paused",
            "window.resumed",
        ):
            assert kind in kinds, kind
        submitted = [e.data for e in await events(hall) if e.type == "rating.submitted"]
        assert [(s["ticket"], s["level"]) for s in submitted] == [(a3, 5), (a4, 2)]
        assert submitted[1]["region_code"] == "110108"


async def test_refusals_beep_and_the_display_follows_other_callers(tmp_path: Path) -> None:
    async with pty_hall(tmp_path) as (hall, bus):
        await set_roster(hall)
        caller = bus.keypad(1)
        assert await bus.press(1, CallerKey.NEXT)  # nobody waits: a beep
        await bus.wait_for(lambda: caller.beeps == 1)
        assert await bus.press(1, CallerKey.CONFIRM, "2048")  # not this window's? any window
        assert await bus.press(1, CallerKey.CONFIRM, "9999")  # unknown code: a beep
        await bus.wait_for(lambda: caller.beeps == 2)
        assert await bus.press(1, CallerKey.CONFIRM, "7")  # means nothing: a beep
        await bus.wait_for(lambda: caller.beeps == 3)
        assert await bus.press(2, CallerKey.CONFIRM, "1024")  # s-1024 works at w1 only
        await bus.wait_for(lambda: bus.keypad(2).beeps == 1)
        (number,) = await take(hall)
        await hall.execute(CallNext(window="w1"))  # the web page or central
        await bus.wait_for(lambda: caller.display == number[1:])


async def test_a_double_press_is_one_call_and_a_repeated_frame_one_press(tmp_path: Path) -> None:
    clock = Monotonic()
    async with pty_hall(tmp_path, clock) as (hall, bus):
        await take(hall, count=3)
        assert await bus.press(1, CallerKey.NEXT)
        assert await bus.press(1, CallerKey.NEXT)  # within debounce_s: the same press
        # The keypad misses the acknowledgement and sends its frame again.
        bus.deaf_to_acks = 1
        assert await bus.press(2, CallerKey.NEXT)
        assert bus.keypad(2).frames_sent >= 2  # more if the agent was slow to save the call
        await wait_until(hall, lambda e: e.windows["w2"].current is not None)
        # A third press, once the debounce time has passed, is a call again; every press
        # before it has been handled by then (one window's presses run in order).
        clock.now += 0.6
        assert await bus.press(1, CallerKey.NEXT)
        await wait_until(
            hall,
            lambda e: (
                e.windows["w1"].current is not None
                and e.tickets[e.windows["w1"].current].number == "A003"
            ),
        )
        called = [e.data["ticket"] for e in await events(hall) if e.type == "ticket.called"]
        assert called == ["A001", "A002", "A003"]


async def test_noise_on_the_line_does_not_stop_the_keypads(tmp_path: Path) -> None:
    async with pty_hall(tmp_path) as (hall, bus):
        await take(hall, count=1)
        bus.send_raw(b"\x00\x68\x07\x07\x68\x01junk\x16" + bytes(range(40)))
        assert await bus.press(1, CallerKey.NEXT)
        await bus.wait_for(lambda: bus.keypad(1).display == "001")


async def test_a_four_key_rater_maps_its_keys_to_levels(tmp_path: Path) -> None:
    rating = {"start_on": "finish", "timeout_s": 5, "on_timeout": "default"}
    async with pty_hall(tmp_path, rating=rating) as (hall, bus):
        a1, a2 = await take(hall, count=2)
        for number in (a1, a2):
            await hall.execute(CallNext(window="w2"))
            await hall.execute(Finish(window="w2"))
            await bus.wait_for(lambda: bus.keypad(12).rating_active)
            if number == a1:
                assert await bus.rate(12, 3)  # the 4th key of a [5, 4, 3, 1] unit
                assert await bus.rate(12, 0)  # reason 1
                await wait_until(hall, lambda e: e.windows["w2"].rating is None)
        first = (await ticket(hall, a1)).rating
        assert (first["level"], first["reasons"]) == (1, ["服务态度不好"])


async def test_the_tcp_bus_reconnects_after_the_adapter_restarts(tmp_path: Path) -> None:
    async with VirtualKeypads() as bus:
        port = await bus.start_tcp("127.0.0.1", 0)
        transport = {"type": "network", "host": "127.0.0.1", "port": port}
        config = config_for(tmp_path / "state", transport)
        async with running(config) as (hall, keypads):
            board_bus = next(iter(keypads.buses.values())).driver
            await bus.wait_connected()
            await take(hall, count=2)
            assert await bus.press(1, CallerKey.NEXT)
            await bus.wait_for(lambda: bus.keypad(1).display == "001")
            changes = keypads.board.watch()
            await bus.stop_tcp()
            async with asyncio.timeout(5):
                while keypads.board.get("caller-w1").status != "offline":
                    await changes.get()
            assert not board_bus.connected
            await bus.start_tcp("127.0.0.1", port)
            await bus.wait_connected(within=10)
            async with asyncio.timeout(10):
                await board_bus.wait_connected()
            assert keypads.board.get("caller-w1").status == "ok"
            await bus.wait_for(lambda: bus.keypad(1).display == "001")  # shown again
            assert await bus.press(2, CallerKey.NEXT)
            await bus.wait_for(lambda: bus.keypad(2).display == "002")


# -- the desk, without devices -------------------------------------------------------------


async def test_concurrent_next_from_several_windows_never_hands_out_a_ticket_twice(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path / "state", {"type": "web"} | {})
    config = config.model_copy(
        update={
            "devices": [],
            "windows": [w.model_copy(update={"devices": []}) for w in config.windows],
        }
    )
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall:
            desk = CallerDesk(hall, debounce_s=0)
            await take(hall, count=30)
            presses = [
                desk.act(w, CallerCommand(CallerAction.NEXT), source="test")
                for _ in range(10)
                for w in ("w1", "w2", "w3")
            ]
            answers = await asyncio.gather(*presses)
            numbers = [a.result["ticket"]["number"] for a in answers]
            assert len(numbers) == 30
            assert len(set(numbers)) == 30
            called = [e.data["ticket"] for e in await events(hall) if e.type == "ticket.called"]
            assert sorted(called) == sorted(numbers)

            # A double press at one window, and presses at two windows at once.
            debounced = CallerDesk(hall, debounce_s=5)
            await take(hall, count=3)
            both = await asyncio.gather(
                debounced.act("w1", CallerCommand(CallerAction.NEXT), source="a"),
                debounced.act("w1", CallerCommand(CallerAction.NEXT), source="a"),
                debounced.act("w2", CallerCommand(CallerAction.NEXT), source="b"),
            )
            assert [a.repeat for a in both] == [False, True, False]
            assert both[0].current != both[2].current
            recall = await debounced.act("w1", CallerCommand(CallerAction.RECALL), source="a")
            assert recall.done
    finally:
        store.close()


async def test_an_open_rating_times_out_and_is_armed_again_after_a_restart(
    tmp_path: Path,
) -> None:
    rating = {"start_on": "finish", "timeout_s": 30, "on_timeout": "default", "default_level": 4}
    config = config_for(tmp_path / "state", {"type": "web"}, rating=rating)
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall:
            a1, a2 = await take(hall, count=2)
            async with RatingDesk(hall, timeout_s=30):
                await hall.execute(CallNext(window="w1"))
                await hall.execute(Finish(window="w1"))
            # The agent stopped with A001's rating open; the next one times it out.
            async with hall.events() as committed, RatingDesk(hall, timeout_s=0.05) as desk:
                async with asyncio.timeout(5):
                    while (event := await committed.get()).type != "rating.timed_out":
                        pass
                assert (event.data["ticket"], event.data["recorded"]) == (a1, 4)
                assert (await committed.get()).type == "rating.submitted"
            first = (await ticket(hall, a1)).rating
            assert (first["level"], first["defaulted"], first["channel"]) == (4, True, "timeout")

            # A rating given in time is not timed out.
            async with RatingDesk(hall, timeout_s=0.2) as desk:
                await hall.execute(CallNext(window="w1"))
                await hall.execute(Finish(window="w1"))
                out = await desk.submit("w1", 5, channel="tablet")
                assert out.result["rating"]["level"] == 5
                seq = hall.store.last_seq
                await asyncio.sleep(0.3)  # past the timeout: nothing may happen
                assert hall.store.last_seq == seq
                assert desk.timed_out == 0
            assert (await ticket(hall, a2)).rating["defaulted"] is False
    finally:
        store.close()


async def test_the_capture_key_asks_the_window_s_document_camera(tmp_path: Path) -> None:
    config = config_for(tmp_path / "state", {"type": "web"} | {})
    config = config.model_copy(
        update={
            "devices": [],
            "windows": [w.model_copy(update={"devices": []}) for w in config.windows],
        }
    )
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall:
            desk = CallerDesk(hall, debounce_s=0)
            press = CallerCommand(CallerAction.CAPTURE)
            answer = await desk.act("w1", press, source="test")
            assert not answer.done
            assert answer.message == "this hall has no document camera"

            asked: list[tuple[str, int]] = []

            async def capture(window: str, pages: int) -> dict[str, object]:
                asked.append((window, pages))
                return {"document": "d-1", "pages": pages}

            desk.capture = capture
            answer = await desk.act("w2", press, source="test")
            assert answer.done
            assert answer.result == {"document": "d-1", "pages": 1}
            assert asked == [("w2", 1)]
    finally:
        store.close()
