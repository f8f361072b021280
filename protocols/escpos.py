"""Ticket documents and their ESC/POS bytes, for Chinese thermal printers.

A ticket is a :class:`TicketDocument`: lines of text with a size and alignment, a QR
code, rules and blank lines. It becomes bytes in one of two ways, chosen per printer:

- :func:`encode_gb18030` — the printer's own Chinese font: ``ESC @``, ``FS &`` (Chinese
  mode on), every line encoded as GB18030 by hand, ``FS .`` (Chinese mode off), cut.
  A line with a character the printer's font does not have (``font_charset``: gb2312,
  gbk or gb18030) is sent as a raster image of that line instead, so a rare character
  in a hall's or service's name prints rather than becoming ``?`` or a blank.
- :func:`encode_raster` — printers without a Chinese font: the whole ticket rendered
  with a CJK font (:mod:`protocols.escpos_raster`) and sent as ``GS v 0`` images.

Sizes, alignment, bold, native QR (``GS ( k``), images and the cut are produced by
python-escpos's ``Escpos`` command methods, writing into memory. Its text path is not
used: python-escpos 3.1 sends a string as GB18030 only when it holds a CJK ideograph in
U+4E00–U+9FA5, never sends ``FS &``, and turns strings of only full-width punctuation
(``，。！``) or characters outside that block (``䶮``, ``𠮷``) into ``?``.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from escpos.escpos import Escpos  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from protocols.escpos_raster import Typesetter

ESC = b"\x1b"
GS = b"\x1d"
FS = b"\x1c"
INIT = ESC + b"@"
CHINESE_ON = FS + b"&"
CHINESE_OFF = FS + b"."

# Character cell of font A on 203 dpi printers: 12 x 24 dots, a Chinese character 24 x 24.
HALF_WIDTH_DOTS = 12
LINE_DOTS = 30  # ESC 2 default line spacing on these printers

FontCharset = Literal["gb2312", "gbk", "gb18030"]


class Align(enum.StrEnum):
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"


class QrLevel(enum.IntEnum):
    """Error correction, as python-escpos and GS ( k number them."""

    L = 0
    M = 1
    Q = 2
    H = 3


@dataclasses.dataclass(frozen=True, slots=True)
class TextLine:
    """One line of text; ``scale`` 1–8 multiplies width and height (GS ! n)."""

    text: str
    scale: int = 1
    align: Align = Align.CENTER
    bold: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.scale <= 8:
            raise ValueError(f"text scale {self.scale} is outside 1-8")
        if "\n" in self.text or "\r" in self.text:
            raise ValueError("a TextLine holds one line; split the text first")


@dataclasses.dataclass(frozen=True, slots=True)
class QrCode:
    """A QR code printed by the printer itself (GS ( k); ``module`` dots per module."""

    payload: str
    module: int = 6
    level: QrLevel = QrLevel.M
    align: Align = Align.CENTER

    def __post_init__(self) -> None:
        if not 1 <= self.module <= 16:
            raise ValueError(f"QR module size {self.module} is outside 1-16")
        if not self.payload:
            raise ValueError("a QR code needs a payload")
        if len(self.payload.encode("utf-8")) > MAX_QR_BYTES:
            raise ValueError(f"a QR payload is at most {MAX_QR_BYTES} bytes of UTF-8")


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """A horizontal dashed line across the paper."""


@dataclasses.dataclass(frozen=True, slots=True)
class Feed:
    """Blank lines."""

    lines: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Bitmap:
    """A monochrome image as ESC/POS raster data: rows of ``width_bytes``, MSB left, 1 = ink."""

    width_bytes: int
    height: int
    data: bytes
    align: Align = Align.LEFT

    @property
    def width(self) -> int:
        return self.width_bytes * 8


Block = TextLine | QrCode | Rule | Feed | Bitmap

# A QR code of version 40 at level L holds 2 953 bytes; a ticket link is far shorter.
MAX_QR_BYTES = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class TicketDocument:
    blocks: tuple[Block, ...]

    def text(self) -> str:
        """The document's text, one line per text line (for logs and comparisons)."""
        return "\n".join(b.text for b in self.blocks if isinstance(b, TextLine))

    def qr_payloads(self) -> list[str]:
        return [b.payload for b in self.blocks if isinstance(b, QrCode)]


@dataclasses.dataclass(frozen=True, slots=True)
class Paper:
    """The printable width of a roll, in dots (8 dots per mm at 203 dpi)."""

    width_mm: int
    width_dots: int

    @classmethod
    def for_width(cls, mm: int) -> Paper:
        dots = {58: 384, 80: 576}.get(mm)
        if dots is None:
            raise ValueError(f"no known printable width for {mm} mm paper (58 or 80)")
        return cls(mm, dots)

    def columns(self, scale: int = 1) -> int:
        """Half-width characters per line at ``scale``."""
        return self.width_dots // (HALF_WIDTH_DOTS * scale)


# -- text ----------------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Columns a printer's font takes: wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap(text: str, limit: int, width: Callable[[str], float] = display_width) -> list[str]:
    """Break ``text`` into lines no wider than ``limit``, between characters (Chinese has
    no spaces), preferring to break at a space when the line holds Latin words."""
    if limit <= 0:
        raise ValueError("the line width must be positive")
    lines: list[str] = []
    line = ""
    for ch in text:
        if width(line + ch) <= limit or not line:
            line += ch
            continue
        space = line.rfind(" ")
        if ch != " " and space > 0 and line[space + 1 :].isascii():
            lines.append(line[:space])
            line = line[space + 1 :] + ch
        else:
            lines.append(line.rstrip())
            line = ch.lstrip()
    if line or not lines:
        lines.append(line)
    return lines


def in_font(text: str, charset: FontCharset) -> bool:
    """Whether a printer whose font covers ``charset`` can print every character."""
    if text.isascii():
        return True
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


# -- python-escpos, writing into memory --------------------------------------------------------


class _Commands(Escpos):  # type: ignore[misc]
    """python-escpos's command methods, collecting bytes instead of sending them."""

    def __init__(self, paper: Paper) -> None:
        super().__init__(profile="default")
        data: dict[str, Any] = dict(self.profile.profile_data)
        # The generic profile's width is "Unknown", which makes image() print a notice to
        # stdout on every call; the roll's width is known here.
        data["media"] = {"width": {"mm": paper.width_mm, "pixels": paper.width_dots}, "dpi": 203}
        self.profile.profile_data = data
        self._chunks: list[bytes] = []

    def _raw(self, msg: bytes) -> None:
        self._chunks.append(bytes(msg))

    def output(self) -> bytes:
        return b"".join(self._chunks)

    def style(self, align: Align, scale: int = 1, bold: bool = False) -> None:
        self.set(align=align.value, bold=bold, custom_size=True, width=scale, height=scale)


def _text_lines(block: TextLine, paper: Paper) -> Iterator[TextLine]:
    for part in wrap(block.text, paper.columns(block.scale)):
        yield dataclasses.replace(block, text=part)


def encode_gb18030(
    document: TicketDocument,
    paper: Paper,
    *,
    font_charset: FontCharset = "gbk",
    typesetter: Typesetter | None = None,
) -> bytes:
    """The ticket in the printer's Chinese mode (FS & ... FS .), GB18030 text.

    Lines the printer's font cannot show go as images when a ``typesetter`` is given;
    without one they are sent as GB18030 and the printer shows what its font has.
    """
    out = _Commands(paper)
    out._raw(INIT + CHINESE_ON)
    for block in document.blocks:
        match block:
            case TextLine():
                for line in _text_lines(block, paper):
                    if typesetter is not None and not in_font(line.text, font_charset):
                        out.image(typesetter.text_image(line), center=False)
                        continue
                    out.style(line.align, line.scale, line.bold)
                    out._raw(line.text.encode("gb18030") + b"\n")
            case QrCode():
                out.style(block.align)
                out.qr(block.payload, ec=int(block.level), size=block.module, native=True)
                out._raw(b"\n")
            case Rule():
                out.style(Align.LEFT)
                out._raw(b"-" * paper.columns() + b"\n")
            case Feed():
                out._raw(b"\n" * block.lines)
            case Bitmap():
                out.style(block.align)
                out._raw(raster_command(block))
    out.style(Align.LEFT)
    out._raw(CHINESE_OFF)
    out.cut()
    return out.output()


def encode_raster(document: TicketDocument, paper: Paper, typesetter: Typesetter) -> bytes:
    """The whole ticket as images (GS v 0): any ESC/POS printer prints it, font or not."""
    out = _Commands(paper)
    out._raw(INIT)
    out.image(typesetter.render(document.blocks), center=False)
    out.cut()
    return out.output()


def raster_command(bitmap: Bitmap) -> bytes:
    """``GS v 0 m xL xH yL yH d...`` for a bitmap, normal density."""
    if len(bitmap.data) != bitmap.width_bytes * bitmap.height:
        raise ValueError("bitmap data does not match its size")
    return (
        GS
        + b"v0\x00"
        + bitmap.width_bytes.to_bytes(2, "little")
        + bitmap.height.to_bytes(2, "little")
        + bitmap.data
    )


def document(blocks: Sequence[Block]) -> TicketDocument:
    return TicketDocument(tuple(blocks))
