"""The ticket document: what a ticket holds, the paper it goes on, and how its text
measures in a printer's font.

A ticket is a :class:`TicketDocument`: lines of text with a size and alignment, a QR
code, rules, blank lines and images (:data:`Block`). This module is the shared model
below the encoders (:mod:`protocols.escpos`), the renderer (:mod:`protocols.escpos_raster`)
and the stream parser (:mod:`protocols.escpos_commands`); it imports none of them.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

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


def document(blocks: Sequence[Block]) -> TicketDocument:
    return TicketDocument(tuple(blocks))
