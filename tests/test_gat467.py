"""The GA/T 467 codec: every command frame, real answer layouts for each card type,
status codes as typed errors, fragmentation, garbage, bad checksums, and hypothesis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.demo.emulators.idreader import FIXTURE_CARDS, SAM_ID
from protocols.gat467 import (
    MAX_LENGTH,
    PREAMBLE,
    BadFrame,
    CardData,
    CardReadFailed,
    CardRejected,
    Command,
    Direction,
    FrameError,
    FrameParser,
    Gat467Error,
    NoCard,
    NoSuchItem,
    ReaderFault,
    Request,
    RequestRejected,
    Response,
    Status,
    UnknownCardType,
    checksum,
    decode_additional_address,
    decode_card_data,
    decode_sam_id,
    describe_status,
    encode_card_data,
    encode_request,
    encode_response,
    status_error,
)
from protocols.idcard import (
    GENDERS,
    NATIONS,
    CardFormatError,
    CardType,
    IdCard,
    card_type_of,
    check_digit,
    decode_text,
    encode_text,
    id_number_valid,
)

# The full request frames as PROTOCOLS.md lists them.
REQUESTS = {
    Command.RESET_SAM: "AA AA AA 96 69 00 03 10 FF EC",
    Command.SAM_STATUS: "AA AA AA 96 69 00 03 11 FF ED",
    Command.READ_SAM_ID: "AA AA AA 96 69 00 03 12 FF EE",
    Command.FIND_CARD: "AA AA AA 96 69 00 03 20 01 22",
    Command.SELECT_CARD: "AA AA AA 96 69 00 03 20 02 21",
    Command.READ_TEXT_PHOTO: "AA AA AA 96 69 00 03 30 01 32",
    Command.READ_ADDITIONAL_ADDRESS: "AA AA AA 96 69 00 03 30 03 30",
    Command.READ_TEXT_PHOTO_FINGERPRINT: "AA AA AA 96 69 00 03 30 10 23",
}

FIND_OK = bytes.fromhex("AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97")
SELECT_OK = bytes.fromhex("AA AA AA 96 69 00 0C 00 00 90" + " 00" * 8 + " 9C")
NO_CARD = bytes.fromhex("AA AA AA 96 69 00 04 00 00 80 84")
SELECT_FAILED = bytes.fromhex("AA AA AA 96 69 00 04 00 00 81 85")


def responses(data: bytes, chunk: int | None = None) -> list[object]:
    parser = FrameParser()
    if chunk is None:
        return parser.feed(data)
    out: list[object] = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i : i + chunk])
    return out


def ucs(text: str, size: int) -> bytes:
    raw = text.encode("utf-16-le")
    return raw + b" \x00" * ((size - len(raw)) // 2)


def hand_block(fields: list[tuple[int, int, str]], marker: str) -> bytes:
    """A text block built by hand from (offset, size, text), independent of encode_text."""
    block = bytearray(b" \x00" * 128)
    for offset, size, text in fields:
        block[offset : offset + size] = ucs(text, size)
    block[248:250] = marker.encode("utf-16-le")
    return bytes(block)


# -- frames ------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "frame"), REQUESTS.items(), ids=str)
def test_every_command_frame(command: Command, frame: str) -> None:
    assert encode_request(command) == bytes.fromhex(frame)
    (parsed,) = FrameParser(Direction.REQUEST).feed(bytes.fromhex(frame))
    assert isinstance(parsed, Request)
    assert parsed.command is command
    assert parsed.data == b""


def test_documented_answers_parse_and_encode() -> None:
    assert encode_response(Status.FIND_OK, b"\x00" * 4) == FIND_OK
    assert encode_response(Status.SUCCESS, bytes(8)) == SELECT_OK
    assert encode_response(Status.NO_CARD) == NO_CARD
    assert encode_response(Status.SELECT_FAILED) == SELECT_FAILED
    (find,) = responses(FIND_OK)
    assert isinstance(find, Response)
    assert find.ok
    assert find.raise_for_status() is find
    (none,) = responses(NO_CARD)
    assert isinstance(none, Response)
    assert not none.ok
    with pytest.raises(NoCard, match="no card"):
        none.raise_for_status()
    (failed,) = responses(SELECT_FAILED)
    assert isinstance(failed, Response)
    with pytest.raises(CardReadFailed, match="0x81"):
        failed.raise_for_status()


def test_checksum_is_xor_from_length_through_data() -> None:
    frame = encode_request(Command.FIND_CARD)
    assert frame[-1] == 0x00 ^ 0x03 ^ 0x20 ^ 0x01
    assert checksum(frame[5:-1]) == frame[-1]


def test_read_answer_lengths_and_text_offset() -> None:
    card = FIXTURE_CARDS["resident"]
    plain = encode_response(Status.SUCCESS, encode_card_data(card.data(fingerprint=False)))
    assert plain[5:7] == b"\x05\x08"  # 1288
    assert len(plain) == 1295
    assert plain[10:14] == b"\x01\x00\x04\x00"
    assert plain[14 : 14 + 256] == encode_text(card.card)
    full = encode_response(Status.SUCCESS, encode_card_data(card.data(fingerprint=True)))
    assert full[5:7] == b"\x09\x0a"  # 2314
    assert len(full) == 2321
    assert full[10:16] == b"\x01\x00\x04\x00\x04\x00"
    assert full[16 : 16 + 256] == encode_text(card.card)
    (answer,) = responses(full)
    assert isinstance(answer, Response)
    blocks = decode_card_data(answer.data, with_fingerprint=True)
    assert blocks.photo == card.photo
    assert blocks.fingerprint is not None
    assert len(blocks.fingerprint) == 1024
    assert decode_text(blocks.text) == card.card


def test_read_answer_without_fingerprint_on_card() -> None:
    card = FIXTURE_CARDS["resident-elderly"]  # no fingerprint: length 00 00
    data = encode_card_data(card.data(fingerprint=True))
    assert data[4:6] == b"\x00\x00"
    blocks = decode_card_data(data, with_fingerprint=True)
    assert blocks.fingerprint == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00", "length bytes"),
        (b"\x00\x10\x04\x00" + bytes(16 + 1024), "text block is 16"),
        (b"\x01\x00\x03\x00" + bytes(256 + 768), "photo block"),
        (b"\x01\x00\x04\x00" + bytes(256 + 1000), "1260 data bytes"),
    ],
)
def test_malformed_read_answers_are_frame_errors(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_card_data(data, with_fingerprint=False)


def test_sam_id() -> None:
    assert decode_sam_id(SAM_ID) == "05.01-20101030-0000123456-1234567890"
    with pytest.raises(FrameError):
        decode_sam_id(b"\x00" * 15)


def test_additional_address() -> None:
    data = ucs("北京市海淀区海淀路80号", 70)
    assert decode_additional_address(data) == "北京市海淀区海淀路80号"
    with pytest.raises(FrameError):
        decode_additional_address(data[:-2])


# -- status codes ------------------------------------------------------------------------

ERROR_KINDS = {
    0x91: NoSuchItem,
    0x10: RequestRejected,
    0x11: RequestRejected,
    0x21: RequestRejected,
    0x23: RequestRejected,
    0x24: ReaderFault,
    0x31: CardRejected,
    0x32: CardRejected,
    0x33: CardRejected,
    0x40: UnknownCardType,
    0x41: CardReadFailed,
    0x47: CardReadFailed,
    0x60: ReaderFault,
    0x66: ReaderFault,
    0x80: NoCard,
    0x81: CardReadFailed,
}


@pytest.mark.parametrize(("code", "kind"), ERROR_KINDS.items(), ids=[hex(c) for c in ERROR_KINDS])
def test_status_codes_are_typed_errors(code: int, kind: type[Exception]) -> None:
    err = status_error(code)
    assert type(err) is kind
    assert err.status == code
    assert f"0x{code:02X}" in str(err)
    assert len(str(err)) > 20  # a sentence, not a code
    (answer,) = responses(encode_response(code))
    assert isinstance(answer, Response)
    with pytest.raises(kind):
        answer.raise_for_status()


def test_unknown_status_is_a_reader_fault_and_success_describes_itself() -> None:
    assert isinstance(status_error(0x55), ReaderFault)
    assert "0x55" in str(status_error(0x55))
    assert describe_status(0x90) == "success"
    assert describe_status(0x9F) == "success"
    assert status_error(0x41).transient
    assert not status_error(0x31).transient


# -- the parser --------------------------------------------------------------------------


def _stream() -> tuple[bytes, list[bytes]]:
    card = FIXTURE_CARDS["hk-resident"]
    frames = [
        FIND_OK,
        SELECT_OK,
        encode_response(Status.SUCCESS, encode_card_data(card.data(fingerprint=False))),
        NO_CARD,
    ]
    return b"".join(frames), frames


@pytest.mark.parametrize("chunk", [None, 1, 2, 7, 64, 1000])
def test_fragmentation_does_not_change_the_frames(chunk: int | None) -> None:
    stream, frames = _stream()
    got = responses(stream, chunk)
    assert [encode_response(r.status, r.data) for r in got if isinstance(r, Response)] == frames


def test_garbage_between_frames_is_skipped() -> None:
    _, frames = _stream()
    noisy = b"\x00\xffjunk\xaa\xaa" + frames[0] + b"\x96\x69\xaa" + frames[1] + b"\xaa\xaa\xaa"
    parser = FrameParser()
    got = []
    for byte in noisy:
        got += parser.feed(bytes((byte,)))
    assert [r for r in got if isinstance(r, Response)] == responses(frames[0] + frames[1])
    assert parser.skipped >= 10
    assert parser.buffered == 3  # a possible preamble start is kept


def test_bad_checksum_is_reported_and_the_next_frame_is_found() -> None:
    bad = FIND_OK[:-1] + b"\x00"
    got = responses(bad + NO_CARD)
    assert isinstance(got[0], BadFrame)
    assert "checksum" in got[0].reason
    assert got[-1] == Response(0, 0, 0x80, b"")
    assert sum(isinstance(e, Response) for e in got) == 1


def test_a_frame_cut_off_and_restarted_is_recovered() -> None:
    card = FIXTURE_CARDS["resident"]
    read = encode_response(Status.SUCCESS, encode_card_data(card.data(fingerprint=False)))
    got = responses(read[:500] + read)
    good = [e for e in got if isinstance(e, Response)]
    assert len(good) == 1
    assert decode_text(decode_card_data(good[0].data, with_fingerprint=False).text) == card.card


def test_impossible_lengths_are_rejected_without_waiting() -> None:
    oversized = PREAMBLE + (MAX_LENGTH + 1).to_bytes(2, "big") + b"\x00" * 10
    got = responses(oversized + NO_CARD)
    assert isinstance(got[0], BadFrame)
    assert "impossible length" in got[0].reason
    assert got[-1] == Response(0, 0, 0x80, b"")
    tiny = PREAMBLE + b"\x00\x01\x00"
    assert isinstance(responses(tiny + NO_CARD)[0], BadFrame)
    with pytest.raises(FrameError):
        encode_response(0x90, bytes(MAX_LENGTH))


def test_parser_memory_is_bounded_by_one_frame() -> None:
    parser = FrameParser()
    parser.feed(PREAMBLE + MAX_LENGTH.to_bytes(2, "big"))
    for _ in range(10):
        parser.feed(b"\x00" * 400)
    assert parser.buffered <= MAX_LENGTH + 7
    parser.feed(b"\x55" * 100_000)
    assert parser.buffered <= MAX_LENGTH + 7


# -- card layouts from hand-built blocks ----------------------------------------------------


def test_resident_card_layout() -> None:
    block = hand_block(
        [
            (0, 30, "张三"),
            (30, 2, "1"),
            (32, 4, "03"),
            (36, 16, "19800101"),
            (52, 70, "北京市东城区东华门大街1号"),
            (122, 36, "11010119800101001X"),
            (158, 30, "北京市公安局东城分局"),
            (188, 16, "20100101"),
            (204, 16, "长期"),
        ],
        " ",
    )
    card = decode_text(block)
    assert card.card_type is CardType.RESIDENT
    assert card.name == "张三"
    assert card.gender == "男"
    assert card.nation == "回"
    assert card.birth_date == dt.date(1980, 1, 1)
    assert card.address == "北京市东城区东华门大街1号"
    assert card.id_number == "11010119800101001X"
    assert card.authority == "北京市公安局东城分局"
    assert card.valid_from == dt.date(2010, 1, 1)
    assert card.valid_to is None
    assert card.long_term
    assert card.valid_on(dt.date(2060, 1, 1))
    assert card.age_on(dt.date(2045, 1, 1)) == 65
    assert card.age_on(dt.date(2044, 12, 31)) == 64
    assert card.as_dict()["valid_to"] == "长期"
    assert encode_text(card) == block


def test_foreigner_card_layout() -> None:
    block = hand_block(
        [
            (0, 120, "SMITH, JOHN"),
            (120, 2, "1"),
            (122, 30, "USA110075070412"),
            (152, 6, "USA"),
            (158, 30, "史密斯"),
            (188, 16, "20190801"),
            (204, 16, "20290801"),
            (220, 16, "19750704"),
            (236, 4, "02"),
            (240, 8, "1100"),
        ],
        "I",
    )
    card = decode_text(block)
    assert card.card_type is CardType.FOREIGNER
    assert card.name_en == "SMITH, JOHN"
    assert card.name == "史密斯"
    assert card.id_number == "USA110075070412"
    assert card.nationality == "USA"
    assert card.birth_date == dt.date(1975, 7, 4)
    assert card.valid_to == dt.date(2029, 8, 1)
    assert card.card_version == "02"
    assert card.authority == "1100"
    assert encode_text(card) == block


def test_foreigner_2023_card_layout_joins_the_english_name() -> None:
    first = "GARCIA LOPEZ, MARIA DE LOS ANGELES "  # 35 characters, the last a space
    assert len(first) == 35
    block = hand_block(
        [
            (0, 30, "玛丽亚"),
            (30, 2, "2"),
            (32, 4, "01"),
            (36, 16, "19920229"),
            (52, 70, first),
            (122, 36, "93372419920229001X"),
            (188, 16, "20240110"),
            (204, 16, "20340110"),
            (220, 22, "CARMEN"),
            (242, 6, "ESP"),
            (250, 6, "A1B"),
        ],
        "Y",
    )
    card = decode_text(block)
    assert card.card_type is CardType.FOREIGNER_2023
    assert card.name == "玛丽亚"
    assert card.name_en == "GARCIA LOPEZ, MARIA DE LOS ANGELES CARMEN"
    assert card.renewal_count == "01"
    assert card.birth_date == dt.date(1992, 2, 29)
    assert card.nationality == "ESP"
    assert card.previous_number == "A1B"
    assert card.id_number_ok
    assert encode_text(card) == block


def test_hong_kong_macau_taiwan_permit_layout() -> None:
    block = hand_block(
        [
            (0, 30, "陈大文"),
            (30, 2, "1"),
            (36, 16, "19681201"),
            (52, 70, "广东省深圳市福田区"),
            (122, 36, "810000196812011230"),
            (158, 30, "深圳市公安局福田分局"),
            (188, 16, "20210315"),
            (204, 16, "20260315"),
            (220, 18, "H12345678"),
            (238, 4, "01"),
        ],
        "J",
    )
    card = decode_text(block)
    assert card.card_type is CardType.HMT_RESIDENT
    assert card.name == "陈大文"
    assert card.pass_number == "H12345678"
    assert card.issue_count == "01"
    assert card.id_number_ok
    assert not card.valid_on(dt.date(2026, 3, 16))
    assert encode_text(card) == block


def test_unknown_marker_and_bad_dates_are_card_format_errors() -> None:
    with pytest.raises(CardFormatError, match="marker 'Q'"):
        card_type_of(hand_block([], "Q"))
    with pytest.raises(CardFormatError, match="256 bytes"):
        decode_text(b"\x20\x00" * 10)
    with pytest.raises(CardFormatError, match="birth date"):
        decode_text(hand_block([(36, 16, "19801301"), (188, 16, "20100101")], " "))
    with pytest.raises(CardFormatError, match="longer"):
        encode_text(
            IdCard(
                CardType.RESIDENT,
                "一二三四五六七八九十一二三四五六",
                "1",
                dt.date(2000, 1, 1),
                "1",
                dt.date(2000, 1, 1),
                None,
            )
        )


def test_code_tables() -> None:
    assert GENDERS == {"0": "未知", "1": "男", "2": "女", "9": "未说明"}
    assert len([k for k in NATIONS if int(k) <= 56]) == 56
    assert NATIONS["56"] == "基诺"
    assert NATIONS["98"] == "外国血统中国籍人士"


def test_id_number_check_digit() -> None:
    assert check_digit("11010519491231002") == "X"
    assert id_number_valid("11010519491231002X")
    assert id_number_valid("11010519491231002x")
    assert not id_number_valid("110105194912310021")
    assert not id_number_valid("USA110075070412")
    for fixture in FIXTURE_CARDS.values():
        if fixture.card.card_type is not CardType.FOREIGNER:
            assert fixture.card.id_number_ok, fixture.key


def test_every_fixture_card_round_trips_through_a_read_answer() -> None:
    for fixture in FIXTURE_CARDS.values():
        frame = encode_response(Status.SUCCESS, encode_card_data(fixture.data(fingerprint=False)))
        (answer,) = responses(frame, chunk=1)
        assert isinstance(answer, Response)
        blocks = decode_card_data(answer.data, with_fingerprint=False)
        assert decode_text(blocks.text) == fixture.card


# -- hypothesis --------------------------------------------------------------------------

# Text a card can hold: BMP characters without the padding space at either end.
card_text = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0xFFFD, exclude_categories=("Cs", "Zs", "Cc")
    ),
    max_size=15,
)
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))


@st.composite
def cards(draw: st.DrawFn) -> IdCard:
    kind = draw(st.sampled_from(list(CardType)))
    name = draw(card_text.filter(bool))
    fields = {
        "card_type": kind,
        "name": name,
        "gender_code": draw(st.sampled_from(list(GENDERS))),
        "birth_date": draw(dates),
        "id_number": draw(st.text("0123456789X", min_size=15, max_size=15)),
        "valid_from": draw(dates),
        "valid_to": draw(st.none() | dates),
    }
    if kind is CardType.RESIDENT:
        fields["nation_code"] = draw(st.sampled_from(list(NATIONS)))
        fields["address"] = draw(card_text)
        fields["authority"] = draw(card_text)
    if kind is CardType.FOREIGNER:
        fields["name_en"] = draw(card_text)
        fields["nationality"] = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=3))
    if kind is CardType.FOREIGNER_2023:
        words = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ,", min_size=1, max_size=9)
        fields["name_en"] = " ".join(draw(st.lists(words, max_size=4)))[:46]
    if kind is CardType.HMT_RESIDENT:
        fields["pass_number"] = draw(st.text("0123456789HM", max_size=9))
    return IdCard(**fields)


@given(cards())
@settings(max_examples=300, deadline=None)
def test_text_block_round_trip(card: IdCard) -> None:
    block = encode_text(card)
    assert len(block) == 256
    assert decode_text(block) == card


@given(st.binary(min_size=256, max_size=256))
@settings(max_examples=500, deadline=None)
def test_arbitrary_text_blocks_raise_only_card_format_errors(block: bytes) -> None:
    try:
        card = decode_text(block)
    except Gat467Error:
        return
    assert isinstance(card, IdCard)


@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), min_size=1, max_size=6),
    st.integers(1, 50),
)
@settings(max_examples=200, deadline=None)
def test_response_round_trip_under_any_fragmentation(
    frames: list[tuple[int, bytes]], chunk: int
) -> None:
    stream = b"".join(encode_response(s, d) for s, d in frames)
    got = responses(stream, chunk)
    assert [(r.status, r.data) for r in got if isinstance(r, Response)] == frames
    assert not any(isinstance(r, BadFrame) for r in got)


@given(st.binary(max_size=3000), st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash_the_parser(noise: bytes, chunk: int) -> None:
    parser = FrameParser()
    for i in range(0, len(noise), chunk):
        for event in parser.feed(noise[i : i + chunk]):
            assert isinstance(event, Response | BadFrame)
    # After any noise, a valid frame still comes through (at most one frame is held).
    tail = parser.feed(PREAMBLE + b"\x00" * 0) + parser.feed(NO_CARD * 3)
    assert Response(0, 0, 0x80, b"") in tail


@given(st.binary(max_size=2400), st.booleans())
@settings(max_examples=300, deadline=None)
def test_arbitrary_read_answers_raise_only_protocol_errors(data: bytes, finger: bool) -> None:
    try:
        blocks = decode_card_data(data, with_fingerprint=finger)
        decode_text(blocks.text)
    except Gat467Error:
        return


@given(st.binary(max_size=40))
def test_requests_round_trip(data: bytes) -> None:
    for command in Command:
        (parsed,) = FrameParser(Direction.REQUEST).feed(encode_request(command, data))
        assert isinstance(parsed, Request)
        assert (parsed.command, parsed.data) == (command, data)


def test_card_data_model_is_what_the_emulator_sends() -> None:
    data = CardData(b"\x20\x00" * 128, b"\x01" * 1024)
    assert decode_card_data(encode_card_data(data), with_fingerprint=False) == data
