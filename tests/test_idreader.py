"""The ID reader driver against the virtual reader, over a real pty and over TCP:
placed, held (read once), removed, a new card, debounce, faults, unplug and replug."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.demo.emulators.idreader import FIXTURE_CARDS, VirtualIdReader
from drivers.idreader import (
    CardPresented,
    CardProblem,
    CardRemoved,
    Gat467Watcher,
    PollSettings,
    ReaderHealth,
)
from drivers.transport import SerialTarget, TcpTarget

pytestmark = pytest.mark.timeout(30)

FAST = PollSettings(poll_interval_s=0.01, removal_polls=2, debounce_s=0.3, reconnect_max_s=0.1)


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a condition the driver reaches by itself (bounded; fails the test)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the driver's state has no event to wait on
            await asyncio.sleep(0.005)


async def event(watcher: Gat467Watcher, within: float = 5.0) -> object:
    return await asyncio.wait_for(watcher.next_event(), within)


@pytest.fixture
async def emulator() -> AsyncIterator[VirtualIdReader]:
    async with VirtualIdReader() as reader:
        yield reader


@pytest.fixture
async def on_pty(
    emulator: VirtualIdReader, tmp_path: Path
) -> AsyncIterator[tuple[VirtualIdReader, Gat467Watcher, list[ReaderHealth]]]:
    link = tmp_path / "ttyIDR0"
    emulator.plug(link)
    health: list[ReaderHealth] = []
    async with Gat467Watcher(
        SerialTarget(str(link), 115200), FAST, on_health=health.append
    ) as watcher:
        await until(lambda: watcher.health.ok)
        yield emulator, watcher, health


async def test_card_placed_held_removed_and_a_new_card(on_pty) -> None:
    emulator, watcher, health = on_pty
    assert health[-1].sam_id == "05.01-20101030-0000123456-1234567890"
    emulator.place("resident")
    presented = await event(watcher)
    assert isinstance(presented, CardPresented)
    assert presented.card == FIXTURE_CARDS["resident"].card
    assert presented.photo == FIXTURE_CARDS["resident"].photo
    assert presented.fingerprint is None  # 30 01 unless asked
    # Held for many polls: read once, nothing more reported.
    polls = watcher.polls
    await until(lambda: watcher.polls >= polls + 20)
    assert emulator.reads == 1
    assert watcher._events.empty()
    emulator.remove()
    assert isinstance(await event(watcher), CardRemoved)
    emulator.place("resident-elderly")
    second = await event(watcher)
    assert isinstance(second, CardPresented)
    assert second.card.name == "李秀英"
    assert second.additional_address == "北京市海淀区海淀路80号3单元502"
    assert emulator.reads == 2


async def test_the_same_card_replaced_at_once_is_not_reported_twice(on_pty) -> None:
    emulator, watcher, _ = on_pty
    emulator.place("resident")
    assert isinstance(await event(watcher), CardPresented)
    emulator.remove()
    assert isinstance(await event(watcher), CardRemoved)
    emulator.place("resident")  # lifted and dropped within the debounce time
    # The emulator counts its read before the driver has handled the answer: wait for the
    # driver's verdict, then check it came from that second read.
    await until(lambda: watcher.suppressed == 1)
    assert emulator.reads == 2
    emulator.remove()
    assert isinstance(await event(watcher), CardRemoved)
    await asyncio.sleep(FAST.debounce_s)  # the debounce window itself is what is tested
    emulator.place("resident")
    assert isinstance(await event(watcher), CardPresented)


async def test_a_reader_that_stops_finding_a_read_card_does_not_reread_it(on_pty) -> None:
    emulator, watcher, _ = on_pty
    emulator.faults.halt_after_read = True
    emulator.place("foreigner")
    presented = await event(watcher)
    assert isinstance(presented, CardPresented)
    assert presented.card.name_en == "SMITH, JOHN ALEXANDER"
    assert isinstance(await event(watcher), CardRemoved)
    polls = watcher.polls
    await until(lambda: watcher.polls >= polls + 20)
    assert emulator.reads == 1


async def test_read_failures_are_retried_then_reported(on_pty) -> None:
    emulator, watcher, _ = on_pty
    emulator.faults.fail_reads = 3
    emulator.place("hk-resident")
    problem = await event(watcher)
    assert isinstance(problem, CardProblem)
    assert problem.status == 0x41
    assert "hold the card still" in problem.message
    presented = await event(watcher)
    assert isinstance(presented, CardPresented)
    assert presented.card.pass_number == "H12345678"


async def test_a_refused_card_is_reported_once(on_pty) -> None:
    emulator, watcher, _ = on_pty
    emulator.faults.reject_card = True
    emulator.place("resident")
    problem = await event(watcher)
    assert isinstance(problem, CardProblem)
    assert "not genuine" in problem.message
    polls = watcher.polls
    await until(lambda: watcher.polls >= polls + 10)
    assert watcher._events.empty()


async def test_garbled_answers_and_line_noise_are_survived(on_pty) -> None:
    emulator, watcher, _ = on_pty
    emulator.faults.garbage = b"\x00\xff\xaa\x13"
    emulator.faults.corrupt = 1
    emulator.place("foreigner-2023")
    presented = await event(watcher)
    assert isinstance(presented, CardPresented)
    assert presented.card.name_en == "GARCIA LOPEZ, MARIA DE LOS ANGELES CARMEN"
    assert emulator.faults.corrupt == 0


async def test_a_hung_reader_goes_offline_and_comes_back(on_pty) -> None:
    emulator, watcher, health = on_pty
    emulator.faults.mute = True
    await until(lambda: not watcher.health.connected)
    assert "did not answer" in watcher.health.detail
    emulator.faults.mute = False
    await until(lambda: watcher.health.ok)
    emulator.place("resident")
    assert isinstance(await event(watcher), CardPresented)
    assert [h.ok for h in health][-3:] == [True, False, True]


async def test_unplug_and_replug(on_pty, tmp_path: Path) -> None:
    emulator, watcher, _ = on_pty
    emulator.unplug()
    await until(lambda: "cannot open" in watcher.health.detail)
    assert not watcher.health.connected
    assert "ttyIDR0" in watcher.health.detail
    emulator.plug(tmp_path / "ttyIDR0")
    await until(lambda: watcher.health.ok)
    assert watcher.connects >= 2
    emulator.place("resident-minority")
    presented = await event(watcher)
    assert isinstance(presented, CardPresented)
    assert presented.card.nation == "维吾尔"


async def test_a_failed_security_module_is_an_error_state(emulator, tmp_path: Path) -> None:
    emulator.faults.sam_fault = True
    path = emulator.plug(tmp_path / "ttyIDR1")
    async with Gat467Watcher(SerialTarget(path, 115200), FAST) as watcher:
        await until(lambda: watcher.health.connected)
        assert not watcher.health.ok
        assert "self-test" in watcher.health.detail
        emulator.faults.sam_fault = False
        await until(lambda: watcher.health.ok)


async def test_over_tcp_with_fingerprint(emulator) -> None:
    port = await emulator.start_tcp()
    settings = PollSettings(poll_interval_s=0.01, fingerprint=True, additional_address=False)
    async with Gat467Watcher(TcpTarget("127.0.0.1", port), settings) as watcher:
        emulator.place("resident")
        presented = await event(watcher)
        assert isinstance(presented, CardPresented)
        assert presented.fingerprint == FIXTURE_CARDS["resident"].fingerprint


async def test_nothing_listening_is_offline_with_the_reason(tmp_path: Path) -> None:
    async with Gat467Watcher(SerialTarget(str(tmp_path / "ttyUSB9"), 115200), FAST) as watcher:
        await until(lambda: watcher.health.detail != "not connected yet")
        assert not watcher.health.connected
        assert "cannot open the ID card reader" in watcher.health.detail
