"""The caller/rater keypad bus codec (protocols/keypad): frames, parser, meanings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.keypad import (
    Beep,
    CallerAction,
    CallerCommand,
    CallerKey,
    CallerPress,
    Frame,
    KeypadError,
    RaterPress,
    ShowNumber,
    Skipped,
    StartRating,
    UnknownCommand,
    UnknownInput,
    interpret,
    keypad_protocol,
)
from protocols.keypad.ff68 import MAX_DATA, Ff68Parser, checksum

FF68 = keypad_protocol("ff68")


def frames_of(events: list[Frame | Skipped]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def parse_all(data: bytes, chunks: list[int] | None = None) -> list[Frame | Skipped]:
    parser = Ff68Parser()
    out: list[Frame | Skipped] = []
    if chunks is None:
        out += parser.feed(data)
    else:
        pos = 0
        for size in chunks:
            out += parser.feed(data[pos : pos + size])
            pos += size
        out += parser.feed(data[pos:])
    out += parser.idle()
    return out


# -- the wire format, byte for byte ----------------------------------------------------------


def test_caller_next_key_frame_bytes() -> None:
    frame = FF68.caller_frame(CallerPress(1, CallerKey.NEXT))
    assert FF68.encode(frame) == bytes.fromhex("ff 68 03 03 68 01 01 0c 0e 16")


def test_confirm_with_a_digit_carries_the_digit_before_the_key() -> None:
    frame = FF68.caller_frame(CallerPress(2, CallerKey.CONFIRM, "6"))
    # L = 2 + 2 data bytes; CS = 02 + 01 + 06 + 0F = 0x18
    assert FF68.encode(frame) == bytes.fromhex("ff 68 04 04 68 02 01 06 0f 18 16")


def test_rater_key_is_acknowledged_with_function_01_and_a_checksum_0x10_less() -> None:
    press = FF68.rater_frame(RaterPress(11, 2))
    ack = FF68.acknowledgement(press)
    raw_press, raw_ack = FF68.encode(press), FF68.encode(ack)
    assert raw_press == bytes.fromhex("ff 68 03 03 68 0b 11 02 1e 16")
    assert raw_ack == bytes.fromhex("ff 68 03 03 68 0b 01 02 0e 16")
    assert raw_press[-2] - raw_ack[-2] == 0x10


def test_caller_frames_are_acknowledged_by_their_echo() -> None:
    frame = FF68.caller_frame(CallerPress(3, CallerKey.RECALL))
    assert FF68.acknowledgement(frame) == frame


def test_host_commands_bytes() -> None:
    assert FF68.encode(FF68.show_number(1, "12")) == bytes.fromhex(
        "ff 68 08 08 68 01 02 0a 0a 0a 0a 01 02 2e 16"
    )
    assert FF68.encode(FF68.beep(1)) == bytes.fromhex("ff 68 02 02 68 01 03 04 16")
    assert FF68.encode(FF68.start_rating(11)) == bytes.fromhex("ff 68 03 03 68 0b 01 0b 17 16")


def test_the_device_side_decodes_what_the_host_sends() -> None:
    assert FF68.decode_host(FF68.show_number(4, "1034")) == ShowNumber(4, "  1034")
    assert FF68.decode_host(FF68.show_number(4, "")) == ShowNumber(4, "      ")
    assert FF68.decode_host(FF68.beep(4)) == Beep(4)
    assert FF68.decode_host(FF68.start_rating(12)) == StartRating(12)
    odd = Frame(4, 0x44, b"\x01")
    assert FF68.decode_host(odd) == UnknownCommand(odd)


def test_the_host_decodes_every_caller_key_and_the_rater_keys() -> None:
    for key in (
        CallerKey.NEXT,
        CallerKey.RECALL,
        CallerKey.RATE,
        CallerKey.CONFIRM,
        CallerKey.PAUSE,
        CallerKey.TRANSFER,
    ):
        for digits in ("", "3", "1024"):
            press = CallerPress(7, key, digits)
            assert FF68.decode_device(FF68.caller_frame(press)) == press
    for index in range(5):
        assert FF68.decode_device(FF68.rater_frame(RaterPress(11, index))) == RaterPress(11, index)


def test_frames_that_mean_nothing_known_are_unknown_inputs() -> None:
    for frame in (Frame(1, 0x01, b"\x0e"), Frame(1, 0x01, b"\x1a\x0c"), Frame(1, 0x55, b"")):
        assert FF68.decode_device(frame) == UnknownInput(1, frame)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FF68.encode(Frame(256, 1)), "not a byte"),
        (lambda: FF68.encode(Frame(1, 1, bytes(MAX_DATA + 1))), "at most"),
        (lambda: FF68.show_number(1, "A012"), "digits and blanks"),
        (lambda: FF68.caller_frame(CallerPress(1, CallerKey.FINISH)), "no finish key"),
        (lambda: FF68.caller_frame(CallerPress(1, CallerKey.NEXT, "1a")), "digits only"),
        (lambda: keypad_protocol("acme"), "unknown keypad protocol 'acme'"),
    ],
)
def test_values_that_cannot_be_framed_raise_the_typed_error(make, message: str) -> None:
    with pytest.raises(KeypadError, match=message):
        make()


# -- the parser -----------------------------------------------------------------------------

FRAMES = [
    FF68.caller_frame(CallerPress(1, CallerKey.NEXT)),
    FF68.caller_frame(CallerPress(2, CallerKey.CONFIRM, "0")),
    FF68.rater_frame(RaterPress(11, 4)),
    FF68.show_number(3, "7"),
]
STREAM = b"".join(FF68.encode(f) for f in FRAMES)


def test_byte_at_a_time_gives_the_same_frames() -> None:
    assert frames_of(parse_all(STREAM, [1] * len(STREAM))) == FRAMES


def test_merged_frames_in_one_read() -> None:
    assert parse_all(STREAM) == FRAMES


def test_a_bad_checksum_is_reported_and_the_next_frame_still_read() -> None:
    bad = bytearray(FF68.encode(FRAMES[0]))
    bad[-2] ^= 0x01
    events = parse_all(bytes(bad) + FF68.encode(FRAMES[1]))
    assert frames_of(events) == [FRAMES[1]]
    assert any(isinstance(e, Skipped) and "bad checksum" in e.reason for e in events)


def test_a_bad_end_byte_is_not_a_frame() -> None:
    bad = bytearray(FF68.encode(FRAMES[0]))
    bad[-1] = 0x17
    events = parse_all(bytes(bad) + FF68.encode(FRAMES[2]))
    assert frames_of(events) == [FRAMES[2]]
    assert any(isinstance(e, Skipped) and "bad end byte" in e.reason for e in events)


def test_noise_between_frames_is_skipped_and_reported() -> None:
    noise = b"\x00\x13\x68\x02\x99garbage\x68\x68"
    events = parse_all(noise + FF68.encode(FRAMES[0]) + noise + FF68.encode(FRAMES[1]))
    assert frames_of(events) == FRAMES[:2]
    skipped = b"".join(e.data for e in events if isinstance(e, Skipped))
    assert len(skipped) >= 2 * (len(noise) - 1)


def test_a_frame_inside_a_broken_one_is_found() -> None:
    # A header claiming 6 bytes of payload, cut short by a real frame that follows.
    broken = bytes.fromhex("68 08 08 68 01 01")
    assert frames_of(parse_all(broken + FF68.encode(FRAMES[1]) + bytes(8))) == [FRAMES[1]]


def test_a_garbled_length_does_not_hold_a_frame_back_once_the_line_is_quiet() -> None:
    parser = Ff68Parser()
    garbled = bytes.fromhex("68 22 22 68")  # waits for 38 more bytes that never come
    assert frames_of(parser.feed(garbled + FF68.encode(FRAMES[0]))) == []
    assert parser.buffered > 0
    assert frames_of(parser.idle()) == [FRAMES[0]]
    assert parser.buffered == 0


def test_oversized_lengths_are_not_waited_for() -> None:
    parser = Ff68Parser()
    huge = bytes.fromhex("68 fe fe 68")
    assert frames_of(parser.feed(huge + FF68.encode(FRAMES[0]))) == [FRAMES[0]]


def test_frames_without_the_preamble_are_read_too() -> None:
    raw = FF68.encode(FRAMES[0])[1:]
    assert parse_all(raw) == [FRAMES[0]]


def test_a_line_full_of_noise_is_reported_in_bounded_pieces() -> None:
    parser = Ff68Parser()
    events = parser.feed(bytes(range(0x10, 0x60)) * 20)
    assert events
    assert all(isinstance(e, Skipped) and len(e.data) <= 256 for e in events)
    assert parser.buffered < 8


# -- properties -----------------------------------------------------------------------------

frames_strategy = st.builds(
    Frame,
    address=st.integers(0, 255),
    function=st.integers(0, 255),
    data=st.binary(max_size=MAX_DATA),
)
# Noise without 0x68 cannot hold a synchronisation pattern; see the next property for any.
noise = st.binary(max_size=12).map(lambda b: b.replace(b"\x68", b"\x00"))


@given(st.lists(st.tuples(noise, frames_strategy), max_size=8), st.data())
def test_round_trip_through_noise_and_any_fragmentation(pairs, data) -> None:
    stream = b"".join(junk + FF68.encode(frame) for junk, frame in pairs)
    expected = [frame for _, frame in pairs]
    assert frames_of(parse_all(stream)) == expected
    cuts = data.draw(st.lists(st.integers(0, 12), max_size=len(stream)))
    assert frames_of(parse_all(stream, cuts)) == expected


@given(st.binary(max_size=400), st.lists(st.integers(1, 40), max_size=40))
def test_arbitrary_bytes_never_raise_and_only_give_valid_frames(raw: bytes, cuts) -> None:
    whole = parse_all(raw)
    for frame in frames_of(whole):
        assert checksum(frame.address, frame.function, frame.data) == checksum(
            frame.address, frame.function, frame.data
        )
        assert len(frame.data) <= MAX_DATA
        assert FF68.encode(frame)[1:] in raw or FF68.encode(frame) in raw
    assert frames_of(parse_all(raw, cuts)) == frames_of(whole)


@given(frames_strategy)
def test_every_valid_frame_decodes_without_raising(frame: Frame) -> None:
    FF68.decode_device(frame)
    FF68.decode_host(frame)


# -- what caller keys mean ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "digits", "command"),
    [
        (CallerKey.NEXT, "", CallerCommand(CallerAction.NEXT)),
        (CallerKey.NEXT, "12", CallerCommand(CallerAction.CALL_NUMBER, "12")),
        (CallerKey.RECALL, "", CallerCommand(CallerAction.RECALL)),
        (CallerKey.RECALL, "5", CallerCommand(CallerAction.RECALL)),
        (CallerKey.RATE, "", CallerCommand(CallerAction.REQUEST_RATING)),
        (CallerKey.CONFIRM, "", CallerCommand(CallerAction.SERVING)),
        (CallerKey.CONFIRM, "6", CallerCommand(CallerAction.NO_SHOW)),
        (CallerKey.CONFIRM, "0", CallerCommand(CallerAction.HOLD)),
        (CallerKey.CONFIRM, "3", CallerCommand(CallerAction.CALL_BACK)),
        (CallerKey.CONFIRM, "9", CallerCommand(CallerAction.CAPTURE)),
        (CallerKey.CONFIRM, "8", CallerCommand(CallerAction.SIGN_OUT)),
        (CallerKey.CONFIRM, "1024", CallerCommand(CallerAction.SIGN_IN, "1024")),
        (CallerKey.CONFIRM, "7", None),
        (CallerKey.CONFIRM, "123456789", None),
        (CallerKey.PAUSE, "", CallerCommand(CallerAction.PAUSE)),
        (CallerKey.TRANSFER, "2", CallerCommand(CallerAction.TRANSFER, "2")),
        (CallerKey.TRANSFER, "", None),
        (CallerKey.FINISH, "", CallerCommand(CallerAction.FINISH)),
        (CallerKey.SIGN_OUT, "", CallerCommand(CallerAction.SIGN_OUT)),
        (CallerKey.NEXT, "x1", None),
    ],
)
def test_interpret(key: CallerKey, digits: str, command: CallerCommand | None) -> None:
    assert interpret(key, digits) == command
