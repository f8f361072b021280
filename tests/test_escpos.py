"""Ticket documents to ESC/POS and back: Chinese mode, GB18030, QR, raster, the stream parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.escpos import (
    CHINESE_OFF,
    CHINESE_ON,
    INIT,
    encode_gb18030,
    encode_raster,
    raster_command,
)
from protocols.escpos_commands import (
    MAX_RASTER_BYTES,
    CommandParser,
    Malformed,
    QrFunction,
    RasterImage,
    StatusQuery,
    TicketReader,
    read_tickets,
)
from protocols.escpos_model import (
    Align,
    Bitmap,
    Feed,
    Paper,
    QrCode,
    QrLevel,
    Rule,
    TextLine,
    display_width,
    document,
    in_font,
    wrap,
)
from protocols.escpos_raster import (
    CJK_FONT,
    FALLBACK_FONTS,
    Typesetter,
    bitmap_of,
    cmap_ranges,
)

PAPER = Paper.for_width(80)
RARE = "𠮷䶮"  # CJK Ext-B (4 bytes in GB18030) and Ext-A (in no GBK font)
PUNCTUATION = "，。！？、：；（）【】《》“”"

needs_font = pytest.mark.skipif(
    not Path(CJK_FONT).exists(), reason="fonts-wqy-microhei is not installed (scripts/setup)"
)


@pytest.fixture(scope="module")
def typesetter() -> Typesetter:
    if not Path(CJK_FONT).exists():
        pytest.skip("fonts-wqy-microhei is not installed (scripts/setup)")
    return Typesetter(Path(CJK_FONT).read_bytes(), PAPER.width_dots)


SAMPLE = document(
    [
        TextLine("演示社区党群服务中心", bold=True),
        TextLine("社保医保", scale=2),
        TextLine("A012", scale=6, bold=True),
        TextLine(f"您前面还有 3 人{PUNCTUATION}"),
        TextLine("，。！"),  # only full-width punctuation: python-escpos prints ???
        TextLine(f"姓名 {RARE}"),
        QrCode("https://hall.example.gov.cn/q/demo-hall/20260302-A012?窗口=3"),
        Rule(),
        TextLine("过号请重新取号", align=Align.LEFT),
    ]
)


def test_chinese_mode_is_switched_on_and_off_around_the_ticket():
    data = encode_gb18030(SAMPLE, PAPER, font_charset="gb18030")
    assert data.startswith(INIT + CHINESE_ON)
    assert CHINESE_OFF in data
    assert data.index(CHINESE_OFF) > data.index("过号".encode("gb18030"))
    assert data.endswith(b"\x1dV\x00")  # python-escpos full cut, after a feed


def test_text_is_gb18030_and_survives_exactly():
    data = encode_gb18030(SAMPLE, PAPER, font_charset="gb18030")
    assert "，。！".encode("gb18030") + b"\n" in data
    assert "𠮷".encode("gb18030") in data  # four bytes: 95 32 82 36
    (ticket,) = read_tickets(data)
    rule = "-" * PAPER.columns()
    expected = [
        b.text if isinstance(b, TextLine) else rule
        for b in SAMPLE.blocks
        if isinstance(b, TextLine | Rule)
    ]
    assert ticket.lines() == expected
    assert ticket.qr_payloads() == SAMPLE.qr_payloads()


def test_python_escpos_text_path_loses_full_width_punctuation():
    # Why the encoder writes GB18030 itself: python-escpos 3.1's text() sends a string of
    # only full-width punctuation through code pages, as "?" (PROTOCOLS.md).
    from escpos.printer import Dummy  # type: ignore[import-untyped]

    printer = Dummy()
    printer.text("，。！")
    assert printer.output.endswith(b"???")
    assert CHINESE_ON not in printer.output


def test_without_chinese_mode_the_printer_prints_mojibake():
    # The reader models a printer that starts in ANK mode: FS & is what makes it right.
    data = "取号".encode("gb18030") + b"\n\x1dV\x00"
    (wrong,) = read_tickets(data)
    (right,) = read_tickets(CHINESE_ON + data)
    assert wrong.lines() != ["取号"]
    assert right.lines() == ["取号"]


def test_sizes_alignment_bold_and_qr_settings_are_read_back():
    data = encode_gb18030(SAMPLE, PAPER, font_charset="gb18030")
    (ticket,) = read_tickets(data)
    lines = [b for b in ticket.blocks if isinstance(b, TextLine)]
    number = lines[2]
    assert (number.text, number.scale, number.bold, number.align) == ("A012", 6, True, Align.CENTER)
    assert lines[-1].align is Align.LEFT
    (qr,) = [b for b in ticket.blocks if isinstance(b, QrCode)]
    assert (qr.module, qr.level) == (6, QrLevel.M)


def test_native_qr_bytes_follow_the_manual():
    data = encode_gb18030(document([QrCode("AB", module=4, level=QrLevel.Q)]), PAPER)
    assert b"\x1d(k\x04\x00\x31\x41\x32\x00" in data  # model 2
    assert b"\x1d(k\x03\x00\x31\x43\x04" in data  # module size 4
    assert b"\x1d(k\x03\x00\x31\x45\x32" in data  # level Q
    assert b"\x1d(k\x05\x00\x31\x50\x30AB" in data  # store: pL = len + 3
    assert b"\x1d(k\x03\x00\x31\x51\x30" in data  # print


def test_long_lines_are_wrapped_between_characters():
    text = "民政救助残疾人服务" * 4  # 36 wide characters: 72 columns at scale 1
    (ticket,) = read_tickets(encode_gb18030(document([TextLine(text)]), PAPER))
    assert "".join(ticket.lines()) == text
    assert all(display_width(line) <= PAPER.columns() for line in ticket.lines())


def test_wrap_prefers_spaces_between_latin_words():
    assert wrap("Social and medical insurance", 12) == ["Social and", "medical", "insurance"]
    assert wrap("社保医保社保医保", 8) == ["社保医保", "社保医保"]
    assert wrap("", 8) == [""]


def test_font_charsets():
    assert in_font("社保，。", "gb2312")
    assert not in_font("䶮", "gbk")
    assert not in_font("𠮷", "gbk")
    assert in_font("𠮷䶮", "gb18030")


def test_lines_outside_the_printer_font_are_sent_as_images(typesetter):
    doc = document([TextLine("社保医保"), TextLine(f"姓名 {RARE}"), TextLine("过号请重新取号")])
    data = encode_gb18030(doc, PAPER, font_charset="gbk", typesetter=typesetter)
    assert "𠮷".encode("gb18030") not in data
    (ticket,) = read_tickets(data)
    assert ticket.lines() == ["社保医保", "过号请重新取号"]
    (image,) = [b for b in ticket.blocks if isinstance(b, Bitmap)]
    assert image.width == PAPER.width_dots


def test_raster_profile_sends_the_whole_ticket_as_an_image(typesetter):
    data = encode_raster(SAMPLE, PAPER, typesetter)
    assert CHINESE_ON not in data
    (ticket,) = read_tickets(data)
    assert ticket.lines() == []
    images = [b for b in ticket.blocks if isinstance(b, Bitmap)]
    assert images
    expected = bitmap_of(typesetter.render(SAMPLE.blocks))
    assert sum(i.height for i in images) == expected.height
    assert b"".join(i.data for i in images) == expected.data


def test_raster_command_round_trip():
    bitmap = Bitmap(2, 3, bytes(range(6)))
    (command,) = CommandParser().feed(raster_command(bitmap))
    assert command == RasterImage(2, 3, 0, bytes(range(6)))
    with pytest.raises(ValueError, match="does not match"):
        raster_command(Bitmap(2, 3, b"\x00"))


def test_document_validation():
    with pytest.raises(ValueError, match="scale"):
        TextLine("x", scale=9)
    with pytest.raises(ValueError, match="one line"):
        TextLine("a\nb")
    with pytest.raises(ValueError, match="payload"):
        QrCode("")
    with pytest.raises(ValueError, match="no known printable width"):
        Paper.for_width(76)


# -- the stream parser ------------------------------------------------------------------------


def test_status_queries_inside_a_job_are_found():
    commands = CommandParser().feed(b"\x1b@\x10\x04\x01AB\n\x10\x04\x04")
    assert [c for c in commands if isinstance(c, StatusQuery)] == [StatusQuery(1), StatusQuery(4)]


def test_unknown_command_is_skipped_and_parsing_resumes():
    commands = CommandParser().feed(b"\x1bzAB\n\x1dV\x00")
    assert isinstance(commands[0], Malformed)
    (ticket,) = read_tickets(b"\x1bzAB\n\x1dV\x00")
    assert ticket.lines() == ["AB"]


def test_oversized_raster_image_is_refused_without_waiting_for_its_data():
    header = b"\x1dv0\x00\xff\xff\xff\xff"  # 65535 x 65535 bytes
    assert MAX_RASTER_BYTES < 0xFFFF * 0xFFFF
    commands = CommandParser().feed(header + b"AB\n")
    assert isinstance(commands[0], Malformed)
    assert "limit" in commands[0].why


def test_a_command_cut_in_two_waits_for_its_rest():
    parser = CommandParser()
    assert parser.feed(b"\x1d(k\x05\x00\x31\x50") == []
    assert parser.feed(b"\x30AB") == [QrFunction(80, b"0AB")]
    assert parser.buffered == 0


def test_qr_payload_too_long_for_a_ticket_is_counted_not_raised():
    payload = b"x" * 2000
    size = len(payload) + 3
    data = b"\x1d(k" + bytes((size & 0xFF, size >> 8)) + b"\x31\x50\x30" + payload
    reader = TicketReader()
    reader.feed(CommandParser().feed(data + b"\x1d(k\x03\x00\x31\x51\x30\x1dV\x00"))
    assert reader.unknown == 1


text_chars = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),
    st.sampled_from(PUNCTUATION + RARE + "丨亳犇"),
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
)
line_text = st.text(text_chars, min_size=1, max_size=20)
payloads = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FFFF, exclude_categories=("Cs",)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(line_text, min_size=1, max_size=5), payloads, st.integers(1, 8))
def test_any_chinese_text_and_qr_payload_survive(lines, payload, scale):
    blocks = [TextLine(t, scale=1) for t in lines]
    blocks.append(QrCode(payload))
    blocks.append(TextLine(lines[0][:2], scale=scale))
    doc = document(blocks)
    data = encode_gb18030(doc, PAPER, font_charset="gb18030")
    (ticket,) = read_tickets(data)
    expected = [
        part
        for b in doc.blocks
        if isinstance(b, TextLine)
        for part in wrap(b.text, PAPER.columns(b.scale))
    ]
    assert ticket.lines() == expected
    assert ticket.qr_payloads() == [payload]


@settings(max_examples=100, deadline=None)
@given(st.lists(line_text, min_size=1, max_size=4), st.lists(st.integers(0, 400), max_size=10))
def test_fragmentation_does_not_change_what_is_printed(lines, cuts):
    doc = document([TextLine(t) for t in lines] + [QrCode("https://x.cn/t/A012")])
    data = encode_gb18030(doc, PAPER, font_charset="gb18030")
    whole = read_tickets(data)
    parser, reader = CommandParser(), TicketReader()
    pieces, start = [], 0
    for cut in [*sorted({c % len(data) for c in cuts}), len(data)]:
        pieces.append(data[start:cut])
        start = max(start, cut)
    tickets = [t for piece in pieces for t in reader.feed(parser.feed(piece))]
    assert tickets == whole
    parser, reader = CommandParser(), TicketReader()
    one_by_one = [t for b in data for t in reader.feed(parser.feed(bytes((b,))))]
    assert one_by_one == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_printer_side(data):
    parser, reader = CommandParser(), TicketReader(chinese_mode=True)
    for ticket in reader.feed(parser.feed(data)):
        assert isinstance(ticket.as_text(), str)
    assert parser.buffered <= len(data)


def test_as_text_pictures_the_ticket():
    (ticket,) = read_tickets(encode_gb18030(SAMPLE, PAPER, font_charset="gb18030"))
    text = ticket.as_text()
    assert "A012 [x6]" in text
    assert "[QR https://hall.example.gov.cn/q/demo-hall/20260302-A012?窗口=3]" in text
    assert isinstance(ticket.blocks[-1], Feed)


@needs_font
def test_typesetter_draws_ink_for_text(typesetter):
    image = typesetter.text_image(TextLine("社保医保", scale=2))
    assert image.width == PAPER.width_dots
    assert image.getextrema() == (0, 255)  # black ink on white paper


@needs_font
def test_a_font_given_by_path_draws_what_its_bytes_draw(typesetter):
    """The agent gives the font's path (FreeType maps the file: no private copy of a 5 MB
    font in memory); the ticket comes out the same as from the font's bytes."""
    by_path = Typesetter(Path(CJK_FONT), PAPER.width_dots)
    assert by_path.render(SAMPLE.blocks).tobytes() == typesetter.render(SAMPLE.blocks).tobytes()


def _fallbacks() -> list[Path]:
    """The fonts for rare characters. scripts/setup installs them (fonts-hanazono): in CI a
    missing one fails the test rather than skip it."""
    found = [Path(f) for f in FALLBACK_FONTS]
    if not all(f.is_file() for f in found) and not os.environ.get("CI"):
        pytest.skip("fonts-hanazono is not installed (scripts/setup)")
    return found


@needs_font
def test_rare_characters_are_drawn_with_a_fallback_font_not_as_empty_boxes(typesetter):
    """A rare character in a name (䶮 in Extension A, 𠮷 in Extension B) is not in the
    ticket font: it printed as the font's empty box. It is drawn with the fallback font,
    on the same baseline; the rest of the line stays in the ticket font."""
    with_fallback = Typesetter(Path(CJK_FONT), PAPER.width_dots, _fallbacks())
    box = "\U000f0000"  # a private-use character no font here has: the empty box

    def drawn(ts: Typesetter, text: str) -> bytes:
        return ts.text_image(TextLine(text, scale=2)).tobytes()

    # Without a fallback each rare character is the box (the test can tell the two apart).
    assert drawn(typesetter, "䶮") == drawn(typesetter, box)
    assert drawn(typesetter, "𠮷") == drawn(typesetter, box)
    for rare in RARE:
        assert drawn(with_fallback, rare) != drawn(with_fallback, box), rare
        assert drawn(with_fallback, rare) != drawn(typesetter, rare), rare
    runs = with_fallback.runs(f"龚{RARE}（生僻字）", 1)
    assert [text for text, _ in runs] == ["龚", RARE, "（生僻字）"]
    assert runs[0][1] is runs[2][1] is with_fallback.font(1)
    assert runs[1][1] is not with_fallback.font(1)
    # A line of GBK only is one run in the ticket font: drawn exactly as before.
    plain = TextLine(f"您前面还有 3 人{PUNCTUATION}", scale=2)
    assert with_fallback.runs(plain.text, 2) == [(plain.text, with_fallback.font(2))]
    assert with_fallback.text_image(plain).tobytes() == typesetter.text_image(plain).tobytes()
    # Wrapping measures each run in its own font.
    wide = f"姓名 {RARE * 12}"
    assert all(
        with_fallback.length(line, 2) <= PAPER.width_dots
        for line in with_fallback._lines(TextLine(wide, scale=2))
    )


def _codes(table: bytes) -> set[int]:
    return {code for first, last in cmap_ranges(table) for code in range(first, last + 1)}


@needs_font
def test_the_raw_cmap_reading_finds_what_fonttools_finds():
    """The fonts' characters are read from the raw table (fontTools' own reading names
    every glyph: megabytes); they must be the ones fontTools maps."""
    from fontTools.ttLib import TTFont

    fonts = [Path(CJK_FONT)] + [Path(f) for f in FALLBACK_FONTS if Path(f).is_file()]
    for path in fonts:
        with TTFont(str(path), fontNumber=0, lazy=True) as font:
            assert _codes(font.reader["cmap"]) == set(font.getBestCmap()), path


def test_the_raw_cmap_reading_of_a_bmp_only_font():
    """A font with only a format 4 subtable (the BMP), built here."""
    from fontTools.fontBuilder import FontBuilder

    cmap = {0x41: "A", 0x42: "B", 0x4E00: "uni4E00", 0x4DAE: "uni4DAE"}
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder([".notdef", *cmap.values()])
    builder.setupCharacterMap(cmap)
    table = builder.font["cmap"].compile(builder.font)
    assert {t.format for t in builder.font["cmap"].tables} == {4}
    assert _codes(table) == set(cmap)


def test_an_empty_font_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Typesetter(b"", PAPER.width_dots)
