"""Ticket inputs: the keyboard-wedge decoder (property tests, split reads, shift and caps),
button debounce, scanner appointment codes, both issuing tickets in a real hall, and the
real evdev path through /dev/uinput where the machine has it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import hall_config

from agent.config import CodeScannerDevice, HallAgentConfig
from agent.core.model import Priority, Source
from agent.features.inputs import DEBOUNCE_S, ButtonMap, ScannerMap, TicketInputs
from agent.runtime.hall import Hall
from agent.runtime.store import Store
from drivers.evdev_input import KeySource, key_code
from protocols.keyboard_wedge import (
    KEY_CAPSLOCK,
    KEY_DOWN,
    KEY_ENTER,
    KEY_LEFTSHIFT,
    KEY_REPEAT,
    KEY_RIGHTSHIFT,
    KEY_TAB,
    KEY_UP,
    MAX_CODE,
    KeyEvent,
    Overflow,
    Scanned,
    WedgeDecoder,
    key_events_for,
)

TYPABLE = "".join(chr(c) for c in range(0x20, 0x7F))


def scan(text: str) -> list[KeyEvent]:
    return key_events_for(text)


@given(st.text(alphabet=TYPABLE, min_size=1, max_size=80), st.lists(st.integers(0, 400)))
def test_any_code_split_across_reads_decodes_as_typed(text: str, cuts: list[int]) -> None:
    events = scan(text) + scan("second")
    points = sorted({c % (len(events) + 1) for c in cuts})
    decoder = WedgeDecoder()
    out = []
    start = 0
    for p in [*points, len(events)]:
        out += decoder.feed(events[start:p])
        start = p
    assert out == [Scanned(text), Scanned("second")]


@given(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 2)), max_size=200))
def test_arbitrary_key_events_never_raise(pairs) -> None:
    decoder = WedgeDecoder()
    events = decoder.feed([KeyEvent(c, v) for c, v in pairs])
    assert all(isinstance(e, Scanned | Overflow) for e in events)


def test_shift_either_side_caps_lock_and_auto_repeat() -> None:
    a, one = key_code("KEY_A"), key_code("KEY_1")
    decoder = WedgeDecoder()
    events = [
        KeyEvent(KEY_RIGHTSHIFT, KEY_DOWN),
        KeyEvent(a, KEY_DOWN),
        KeyEvent(a, KEY_UP),
        KeyEvent(one, KEY_DOWN),  # shift held: '!'
        KeyEvent(KEY_RIGHTSHIFT, KEY_UP),
        KeyEvent(KEY_CAPSLOCK, KEY_DOWN),
        KeyEvent(KEY_CAPSLOCK, KEY_UP),
        KeyEvent(a, KEY_DOWN),  # caps: 'A'
        KeyEvent(KEY_LEFTSHIFT, KEY_DOWN),
        KeyEvent(a, KEY_DOWN),  # caps and shift: 'a'
        KeyEvent(a, KEY_REPEAT),  # held: the kernel repeats it
        KeyEvent(KEY_LEFTSHIFT, KEY_UP),
        KeyEvent(one, KEY_DOWN),
        KeyEvent(KEY_ENTER, KEY_DOWN),
    ]
    assert decoder.feed(events) == [Scanned("A!Aaa1")]


def test_tab_terminator_and_an_endless_code_is_dropped() -> None:
    decoder = WedgeDecoder(KEY_TAB)
    assert decoder.feed(key_events_for("X1", KEY_TAB)) == [Scanned("X1")]
    assert decoder.feed(key_events_for("X2")) == []  # Enter is text-less here
    assert decoder.pending == "X2"
    decoder.reset()
    long = key_events_for("9" * (MAX_CODE + 5), KEY_TAB)
    assert decoder.feed(long) == [Overflow(MAX_CODE + 5)]
    assert decoder.feed(key_events_for("ok", KEY_TAB)) == [Scanned("ok")]


def test_buttons_debounce_and_ignore_auto_repeat() -> None:
    f1, f2 = key_code("KEY_F1"), key_code("KEY_F2")
    buttons = ButtonMap("kiosk-buttons", {f1: "social", f2: "civil"})
    press = [KeyEvent(f1, KEY_DOWN), KeyEvent(f1, KEY_REPEAT), KeyEvent(f1, KEY_UP)]
    assert [r.service for r in buttons.feed(press, 10.0)] == ["social"]
    assert buttons.feed([KeyEvent(f1, KEY_DOWN)], 10.0 + DEBOUNCE_S / 2) == []  # a bounce
    later = buttons.feed([KeyEvent(f1, KEY_DOWN), KeyEvent(f2, KEY_DOWN)], 12.0)
    assert [(r.service, r.source) for r in later] == [
        ("social", Source.BUTTON),
        ("civil", Source.BUTTON),
    ]
    assert buttons.feed([KeyEvent(key_code("KEY_F3"), KEY_DOWN)], 20.0) == []


def scanner_device(**extra) -> CodeScannerDevice:
    return CodeScannerDevice.model_validate(
        {"id": "kiosk-qr", "kind": "code_scanner", "transport": {"type": "evdev", "name": "QR"}}
        | extra
    )


def test_scanner_codes_become_appointment_requests() -> None:
    scanner = ScannerMap(scanner_device())
    [request] = scanner.feed(scan("HALL-APPT:social:R-2026-0042"), 1.0)
    assert (request.service, request.source, request.priority) == (
        "social",
        Source.QR,
        Priority.APPOINTMENT,
    )
    assert scanner.feed(scan("https://example.com/not-ours"), 2.0) == []
    assert scanner.unrecognised == 1
    # Half a code, then silence: the next scan is not glued to it.
    half = scan("HALL-APPT:civil:R1")[:10]
    assert scanner.feed(half, 3.0) == []
    [request] = scanner.feed(scan("HALL-APPT:civil:R2"), 10.0)
    assert request.service == "civil"


class ScriptedSource(KeySource):
    """Batches of key events as a device would deliver them, then silence."""

    def __init__(self, batches: list[list[KeyEvent]]) -> None:
        self._batches = batches

    @property
    def endpoint(self) -> str:
        return "scripted"

    async def batches(self) -> AsyncIterator[list[KeyEvent]]:
        for batch in self._batches:
            yield batch
        await asyncio.Event().wait()


async def test_buttons_and_scanner_issue_tickets_in_a_hall(tmp_path: Path) -> None:
    data = hall_config(tmp_path / "state")
    data["devices"] = [
        {
            "id": "kiosk-buttons",
            "kind": "ticket_buttons",
            "transport": {"type": "evdev", "path": "/dev/input/event-test"},
            "keymap": {"KEY_F1": "social", "BTN_0": "civil"},
        },
        {"id": "kiosk-qr", "kind": "code_scanner", "transport": {"type": "evdev", "name": "QR"}},
    ]
    config = HallAgentConfig.model_validate(data)
    f1, btn0 = key_code("KEY_F1"), key_code("BTN_0")
    code = scan("HALL-APPT:housing:A7")
    sources: dict[str, KeySource] = {
        "kiosk-buttons": ScriptedSource(
            [[KeyEvent(f1, KEY_DOWN)], [KeyEvent(f1, KEY_UP)], [KeyEvent(btn0, KEY_DOWN)]]
        ),
        "kiosk-qr": ScriptedSource([code[:7], code[7:30], code[30:]]),  # one scan, three reads
    }
    store = Store.open(config.storage.path)
    try:
        async with (
            Hall(config, store) as hall,
            TicketInputs(hall, sources=sources) as inputs,
        ):
            await inputs.wait_handled(3)
            tickets = await hall.read(lambda e, n: sorted(e.tickets.values(), key=lambda t: t.rank))
    finally:
        store.close()
    got = sorted((t.number, t.source.value, t.priority.value) for t in tickets)
    assert got == [
        ("A001", "button", "normal"),
        ("B001", "button", "normal"),
        ("C001", "qr", "appointment"),
    ]
    assert list(inputs.refused) == []


def uinput_available() -> bool:
    return os.access("/dev/uinput", os.W_OK)


@pytest.mark.skipif(not uinput_available(), reason="no writable /dev/uinput on this machine")
async def test_a_real_evdev_device_through_uinput(tmp_path: Path) -> None:
    from evdev import UInput, ecodes

    from drivers.evdev_input import EvdevSource

    name = f"hall-test-scanner-{os.getpid()}"
    keys = sorted({e.code for e in scan("HALL-APPT:social:U1")} | {KEY_ENTER})
    with UInput({ecodes.EV_KEY: keys}, name=name) as device:
        opened = asyncio.Event()
        source = EvdevSource(name=name, on_health=lambda ok, _: ok and opened.set())
        decoder = WedgeDecoder()
        batches = source.batches()
        reading = asyncio.ensure_future(anext(batches))
        async with asyncio.timeout(10):
            await opened.wait()  # found by name and grabbed: now it hears every key
        for event in scan("HALL-APPT:social:U1"):
            device.write(ecodes.EV_KEY, event.code, event.value)
            device.syn()
        async with asyncio.timeout(5):
            got = decoder.feed(await reading)
            while not got:
                got = decoder.feed(await anext(batches))
        assert got == [Scanned("HALL-APPT:social:U1")]
        await batches.aclose()


async def test_inputs_keep_only_the_latest_requests(tmp_path: Path) -> None:
    """Kiosk buttons issue thousands of tickets a week: the inputs keep the latest
    KEPT_RECENT issued and refused requests and count them all."""
    from agent.features.inputs import KEPT_RECENT, TakeRequest

    requests = KEPT_RECENT + 100
    data = hall_config(tmp_path / "state")
    data["services"][0]["daily_cap"] = requests
    config = HallAgentConfig.model_validate(data)
    store = Store.open(config.storage.path)
    try:
        async with Hall(config, store) as hall, TicketInputs(hall, sources={}) as inputs:
            for _ in range(requests):
                await inputs.take(TakeRequest("social", Source.BUTTON, device="kiosk-buttons"))
            # Over the cap: each refused, kept as the latest refusals.
            for _ in range(requests):
                await inputs.take(TakeRequest("social", Source.BUTTON, device="kiosk-buttons"))
            await inputs.wait_handled(2 * requests)
    finally:
        store.close()
    assert (inputs.issued_total, inputs.refused_total) == (requests, requests)
    assert len(inputs.issued) == len(inputs.refused) == KEPT_RECENT
    assert inputs.issued[-1]["number"] == f"A{requests:03d}"
    assert inputs.refused[-1][0].service == "social"
