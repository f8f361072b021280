"""LED strips: codecs (property tests, byte at a time, rejections), the bus driver against
the virtual bus over TCP and a pty, and strips following calls in a running agent."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import as_ops, hall_config

from agent.config import HallAgentConfig
from agent.daemon import running_agent
from agent.demo.emulators.led import VirtualLedBus
from agent.features.led import strip_text
from drivers.led import (
    LedBus,
    LedRefused,
    LedUnavailable,
)
from drivers.transport import SerialTarget, TcpTarget, open_line
from protocols.led import (
    MAX_DATA,
    BoardFrame,
    BoardFrameParser,
    Command,
    LedProtocolError,
    NumberBoardCodec,
    Rejected,
    TextFrame,
    TextFrameCodec,
    TextFrameParser,
    encode_board_frame,
    encode_text_frame,
)

# GB2312 text a strip may show: ASCII letters and digits, and common Chinese characters.
gb2312_text = st.text(
    alphabet=st.sampled_from("ABCDE0123456789 请号到窗口办理暂停服务全科综合业务社保医保"),
    max_size=60,
)
frames = st.builds(
    TextFrame,
    address=st.integers(0, 0xFFFF),
    command=st.sampled_from([int(c) for c in Command] + [0xB1]),
    flags=st.integers(0, 3),
    data=st.binary(max_size=MAX_DATA),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[start:p])
        start = p
    return pieces


@given(frames)
def test_text_frame_round_trip(frame: TextFrame) -> None:
    assert TextFrameParser().feed(encode_text_frame(frame)) == [frame]


@given(st.lists(frames, min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=8))
def test_fragmentation_does_not_change_the_frames(batch, cuts) -> None:
    stream = b"".join(encode_text_frame(f) for f in batch)
    parser = TextFrameParser()
    got = [e for piece in split(stream, cuts) for e in parser.feed(piece)]
    assert got == batch


@given(gb2312_text)
def test_show_carries_gb2312_text(text: str) -> None:
    [frame] = TextFrameParser().feed(TextFrameCodec().show(7, text, flash=True))
    assert isinstance(frame, TextFrame)
    assert (frame.address, frame.command, frame.text) == (7, Command.SHOW, text)
    assert frame.flags & 0x01


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for parser in (TextFrameParser(), BoardFrameParser()):
        events = [e for byte in data for e in parser.feed(bytes([byte]))]
        assert all(isinstance(e, TextFrame | BoardFrame | Rejected) for e in events)


def test_byte_at_a_time_and_resynchronisation_after_garbage() -> None:
    good = encode_text_frame(TextFrame(3, Command.SHOW, 0, "请A012号".encode("gb2312")))
    corrupt = bytearray(good)
    corrupt[-2] ^= 0xFF  # bad checksum
    stream = b"\x55\xaa" + bytes(corrupt) + good + b"\x02\x00"
    parser = TextFrameParser()
    events = [e for byte in stream for e in parser.feed(bytes([byte]))]
    frames_ = [e for e in events if isinstance(e, TextFrame)]
    assert [f.text for f in frames_] == ["请A012号"]
    assert any(isinstance(e, Rejected) and "checksum" in e.reason for e in events)


def test_oversized_length_and_unencodable_text_are_refused() -> None:
    header = bytes((0x02, 0x00, 0x01, 0x31, 0x00, MAX_DATA + 1))
    events = TextFrameParser().feed(header)
    assert isinstance(events[0], Rejected)
    assert "length" in events[0].reason
    with pytest.raises(LedProtocolError, match="do not fit"):
        encode_text_frame(TextFrame(1, Command.SHOW, 0, b"x" * (MAX_DATA + 1)))
    # A character outside GB2312 is shown as '?', not sent as garbage.
    [frame] = TextFrameParser().feed(TextFrameCodec().show(1, "请䶮号"))
    assert isinstance(frame, TextFrame)
    assert frame.text == "请?号"


@given(st.integers(0, 255), st.integers(0, 9999), st.lists(st.integers(0, 40), max_size=4))
def test_number_board_round_trip_any_split(address: int, number: int, cuts) -> None:
    frame = encode_board_frame(BoardFrame(address, number))
    data = b"\x99" + frame
    # The number board's 4-byte frames have no sync byte: a noise byte that forms a valid
    # frame with the next three (0x99 00 04 9D for 1181 at address 0) is, on the wire, a
    # frame. Noise is only skippable when it is not one.
    assume(not any(isinstance(e, BoardFrame) for e in BoardFrameParser().feed(data[:4])))
    parser = BoardFrameParser()
    got = [e for piece in split(data, cuts) for e in parser.feed(piece)]
    assert BoardFrame(address, number) in got


def test_number_board_shows_the_digits_of_a_ticket() -> None:
    codec = NumberBoardCodec()
    [frame] = BoardFrameParser().feed(codec.show(4, "请A012号"))
    assert frame == BoardFrame(4, 12)
    assert codec.clear(4) == bytes((4, 0, 0, 4))
    with pytest.raises(LedProtocolError):
        encode_board_frame(BoardFrame(300, 1))


async def test_bus_driver_and_virtual_bus_over_tcp_and_pty() -> None:
    async with VirtualLedBus(addresses=[1, 2]) as virtual:
        port = await virtual.start_tcp("127.0.0.1", 0)
        target = TcpTarget("127.0.0.1", port)
        codec = TextFrameCodec()
        async with LedBus(target.endpoint, codec, lambda: open_line(target)) as bus:
            await bus.send(1, codec.show(1, "请A001号"))
            assert virtual.text(1) == "请A001号"
            with pytest.raises(LedUnavailable, match="did not answer"):
                await bus.send(9, codec.show(9, "无此屏"))  # no strip 9 on the bus
            assert 9 in bus.health.silent
            await bus.send(2, codec.clear(2))
            assert bus.health.connected
            assert bus.health.silent == frozenset({9})
            not_gb2312 = encode_text_frame(TextFrame(1, Command.SHOW, 0, b"\xff\xfe"))
            with pytest.raises(LedRefused, match="could not show the text"):
                await bus.send(1, not_gb2312)
            assert virtual.text(1) == "请A001号"
        serial = SerialTarget(virtual.open_pty())
        async with LedBus(serial.endpoint, codec, lambda: open_line(serial)) as bus:
            await bus.send(2, codec.show(2, "暂停服务"))
            assert virtual.text(2) == "暂停服务"


async def test_bus_reconnects_after_the_adapter_restarts() -> None:
    async with VirtualLedBus() as virtual:
        port = await virtual.start_tcp("127.0.0.1", 0)
        target = TcpTarget("127.0.0.1", port, timeout_s=1)
        codec = TextFrameCodec()
        async with LedBus(target.endpoint, codec, lambda: open_line(target)) as bus:
            await bus.send(1, codec.show(1, "A001"))
            await virtual.stop_tcp()
            refused = 0
            for _ in range(5):  # the drop may be noticed on the first or second frame
                try:
                    await bus.send(1, codec.show(1, "A002"))
                except LedUnavailable:
                    refused += 1
            assert refused >= 4
            assert not bus.health.connected
            await virtual.start_tcp("127.0.0.1", port)
            await bus.send(1, codec.show(1, "A003"))
            assert virtual.text(1) == "A003"


def test_strip_text_follows_the_window() -> None:
    from agent.config import LedStripDevice

    device = LedStripDevice.model_validate(
        {"id": "led", "kind": "led_strip", "transport": {"type": "network", "host": "h", "port": 1}}
    )
    row = {"number": 3, "state": "open", "ticket": {"number": "A012", "status": "called"}}
    assert strip_text(device, row) == "请A012号"
    assert strip_text(device, {**row, "state": "paused"}) == "暂停服务"
    assert strip_text(device, {**row, "ticket": None}) == "3号窗口"
    assert strip_text(device, {**row, "ticket": {"number": "A012", "status": "finished"}}) == (
        "3号窗口"
    )


async def test_strips_show_each_call_in_a_running_agent(tmp_path: Path) -> None:
    async with VirtualLedBus(addresses=[1, 2]) as virtual:
        port = await virtual.start_tcp("127.0.0.1", 0)
        led = {"type": "network", "host": "127.0.0.1", "port": port}
        data = hall_config(tmp_path / "state")
        data["devices"] = [
            {"id": "led-w1", "kind": "led_strip", "transport": led, "address": 1},
            {"id": "led-w2", "kind": "led_strip", "transport": led, "address": 2},
        ]
        data["windows"][0]["devices"] = ["led-w1"]
        data["windows"][1]["devices"] = ["led-w2"]
        config = HallAgentConfig.model_validate(data)
        async with (
            running_agent(config) as running,
            httpx.AsyncClient(base_url=running.url, headers=as_ops(running)) as client,
        ):
            await virtual.wait_for_text(1, "1号窗口")
            await virtual.wait_for_text(2, "2号窗口")
            for service in ("social", "civil", "social"):
                r = await client.post("/api/v1/tickets", json={"service": service})
                assert r.status_code == 201
            started = time.perf_counter()
            assert (await client.post("/api/v1/windows/w1/next")).status_code == 200
            frame = await virtual.wait_for_text(1, "请A001号")
            assert frame.flash
            assert frame.received_at > started
            assert (await client.post("/api/v1/windows/w2/next")).status_code == 200
            await virtual.wait_for_text(2, "请B001号")
            before = virtual.strips[1].frames
            assert (await client.post("/api/v1/windows/w1/recall")).status_code == 200
            await virtual.wait_for(lambda bus: bus.strips[1].frames > before)
            assert virtual.text(1) == "请A001号"
            assert virtual.strips[1].flash
            await client.post("/api/v1/windows/w1/pause")
            await virtual.wait_for_text(1, "暂停服务")
            await client.post("/api/v1/windows/w1/resume")
            assert (await client.post("/api/v1/windows/w1/next")).status_code == 200
            await virtual.wait_for_text(1, "请A002号")
            assert running.devices.get("led-w1").status == "ok"
            assert not virtual.rejected
