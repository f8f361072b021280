"""Ticket blocks drawn as a monochrome image, the way a thermal printer lays them out.

Used two ways: to print on printers without a Chinese font (raster profile), and by the
virtual printer to turn what it received into a PNG a person can look at. The font is
passed in as bytes (the caller reads the file), or as the path of the font file, which
FreeType then maps itself: the agent does, so a 5 MB CJK font stays in the page cache,
shared and read only where glyphs are used, instead of a private copy in its memory.

Pillow and qrcode are imported at the first drawing, not with this module: a printer's
feature builds its :class:`Typesetter` at start, and an agent that has not printed yet
does not carry them (~3 MB of memory, most of it Pillow's libraries).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from protocols.escpos_model import (
    HALF_WIDTH_DOTS,
    LINE_DOTS,
    Align,
    Bitmap,
    Block,
    Feed,
    QrCode,
    QrLevel,
    Rule,
    TextLine,
    in_font,
    wrap,
)

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
# For the characters the main font lacks (WenQuanYi Micro Hei has GBK: a rare character in a
# hall's or a person's name, 䶮 in CJK Extension A, 𠮷 in Extension B, would print as an
# empty box): Hanazono Mincho (Debian's fonts-hanazono) has Extensions A to F.
FALLBACK_FONTS = (
    "/usr/share/fonts/truetype/hanazono/HanaMinA.ttf",
    "/usr/share/fonts/truetype/hanazono/HanaMinB.ttf",
)

# The printer's Chinese characters are 24 x 24 dots; the font's glyphs fill ~90 % of em.
_EM_PER_SCALE = 26
_MARGIN = 8
_CODE_POINTS = 0x110000


def _qr_level(level: QrLevel) -> int:
    from qrcode import constants  # type: ignore[import-untyped]

    levels: dict[QrLevel, int] = {
        QrLevel.L: constants.ERROR_CORRECT_L,
        QrLevel.M: constants.ERROR_CORRECT_M,
        QrLevel.Q: constants.ERROR_CORRECT_Q,
        QrLevel.H: constants.ERROR_CORRECT_H,
    }
    return levels[level]


INK = 0
PAPER = 255


class Typesetter:
    """Draws blocks ``width`` dots wide with a CJK font (e.g. WenQuanYi Micro Hei), and
    each character that font lacks with the first of ``fallbacks`` that has it."""

    def __init__(self, font: bytes | Path, width: int, fallbacks: Sequence[Path] = ()) -> None:
        """``font``: the font file's bytes, or its path (FreeType maps the file);
        ``fallbacks``: the paths of fonts for the characters it has not."""
        if isinstance(font, bytes) and not font:
            raise ValueError("the font file is empty")
        self._font = font
        self.width = width
        self._fonts: dict[int, ImageFont.FreeTypeFont] = {}
        self._fallbacks = tuple(fallbacks)
        # The characters of each font (0: the main one), read from its cmap when a line
        # first needs it, one bit per code point (139 KB a font, where a set of the 40-60
        # thousand characters would be megabytes); and the fallbacks' faces by (font, size).
        self._covered: dict[int, bytearray] = {}
        self._fallback_faces: dict[tuple[int, int], ImageFont.FreeTypeFont] = {}

    def font(self, scale: int) -> ImageFont.FreeTypeFont:
        size = _EM_PER_SCALE * scale
        if size not in self._fonts:
            source = self._font
            # BytesIO over the bytes shares them (read() whole returns the same object).
            where = str(source) if isinstance(source, Path) else io.BytesIO(source)
            from PIL import ImageFont

            self._fonts[size] = ImageFont.truetype(where, size)
        return self._fonts[size]

    def _x(self, content_width: int, align: Align) -> int:
        if align is Align.CENTER:
            return max(0, (self.width - content_width) // 2)
        if align is Align.RIGHT:
            return max(0, self.width - content_width - _MARGIN)
        return _MARGIN

    def runs(self, text: str, scale: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        """``text`` in runs of one font each: the main font, and for a character it lacks
        the first fallback that has it (none has it: the main font's empty box).

        The main font is taken to have GBK, which every CJK font for Chinese has: a line of
        GBK only is one run, and no font's cmap is read for it.
        """
        main = self.font(scale)
        if not self._fallbacks or in_font(text, "gbk"):
            return [(text, main)]
        runs: list[tuple[str, ImageFont.FreeTypeFont]] = []
        for ch in text:
            face = main if in_font(ch, "gbk") else self._face_for(ord(ch), scale)
            if runs and runs[-1][1] is face:
                runs[-1] = (runs[-1][0] + ch, face)
            else:
                runs.append((ch, face))
        return runs

    def _face_for(self, code: int, scale: int) -> ImageFont.FreeTypeFont:
        for index in range(len(self._fallbacks) + 1):
            if self._coverage(index)[code >> 3] >> (code & 7) & 1:
                return self._face(index, scale)
        return self.font(scale)

    def _coverage(self, index: int) -> bytearray:
        covered = self._covered.get(index)
        if covered is None:
            from fontTools.ttLib import TTFont, TTLibError  # type: ignore[import-untyped]

            covered = bytearray(_CODE_POINTS // 8)  # unreadable: it has nothing
            source: bytes | Path = self._font if index == 0 else self._fallbacks[index - 1]
            where = io.BytesIO(source) if isinstance(source, bytes) else str(source)
            try:
                with TTFont(where, fontNumber=0, lazy=True) as font:
                    table = font.reader["cmap"]  # the raw table: no glyph names decoded
                for first, last in cmap_ranges(table):
                    for code in range(first, min(last, _CODE_POINTS - 1) + 1):
                        covered[code >> 3] |= 1 << (code & 7)
            except (TTLibError, OSError, KeyError, struct.error):
                pass  # the next font may have it
            self._covered[index] = covered
        return covered

    def _face(self, index: int, scale: int) -> ImageFont.FreeTypeFont:
        if index == 0:
            return self.font(scale)
        key = (index, _EM_PER_SCALE * scale)
        if key not in self._fallback_faces:
            from PIL import ImageFont

            self._fallback_faces[key] = ImageFont.truetype(str(self._fallbacks[index - 1]), key[1])
        return self._fallback_faces[key]

    def length(self, text: str, scale: int) -> float:
        """How wide ``text`` is drawn, in dots."""
        return sum(face.getlength(run) for run, face in self.runs(text, scale))

    def _lines(self, block: TextLine) -> list[str]:
        return wrap(
            block.text, self.width - 2 * _MARGIN, lambda text: self.length(text, block.scale)
        )

    def text_image(self, block: TextLine) -> Image.Image:
        """One text block, as wide as the paper (alignment drawn in)."""
        from PIL import Image, ImageDraw

        lines = self._lines(block)
        row = LINE_DOTS * block.scale
        image = Image.new("L", (self.width, row * len(lines)), PAPER)
        self._draw_text(ImageDraw.Draw(image), block, lines, 0)
        return _threshold(image)

    def _draw_text(
        self, draw: ImageDraw.ImageDraw, block: TextLine, lines: list[str], top: int
    ) -> None:
        ascent = self.font(block.scale).getmetrics()[0]
        row = LINE_DOTS * block.scale
        stroke = max(1, block.scale // 2) if block.bold else 0
        for i, line in enumerate(lines):
            runs = self.runs(line, block.scale)
            x = float(self._x(round(sum(f.getlength(r) for r, f in runs)), block.align))
            y = top + i * row + (row - HALF_WIDTH_DOTS * 2 * block.scale) // 2
            for run, face in runs:  # every run on the main font's baseline
                draw.text(
                    (x, y + ascent),
                    run,
                    font=face,
                    anchor="ls",
                    fill=INK,
                    stroke_width=stroke,
                    stroke_fill=INK,
                )
                x += face.getlength(run)

    def render(self, blocks: Sequence[Block]) -> Image.Image:
        """The blocks one under the other, as a printer would feed them out."""
        from PIL import Image

        parts: list[Image.Image] = []
        for block in blocks:
            match block:
                case TextLine():
                    parts.append(self.text_image(block))
                case QrCode():
                    parts.append(self._qr(block))
                case Rule():
                    parts.append(self._rule())
                case Feed():
                    parts.append(Image.new("L", (self.width, LINE_DOTS * block.lines), PAPER))
                case Bitmap():
                    parts.append(self._bitmap(block))
        height = sum(p.height for p in parts) or 1
        sheet = Image.new("L", (self.width, height), PAPER)
        top = 0
        for part in parts:
            sheet.paste(part, (0, top))
            top += part.height
        return _threshold(sheet)

    def _qr(self, block: QrCode) -> Image.Image:
        import qrcode
        from PIL import Image, ImageDraw

        code = qrcode.QRCode(border=0, error_correction=_qr_level(block.level))
        code.add_data(block.payload.encode("utf-8"))
        code.make(fit=True)
        matrix = code.get_matrix()
        side = len(matrix) * block.module
        image = Image.new("L", (self.width, side + LINE_DOTS), PAPER)
        left = self._x(side, block.align)
        draw = ImageDraw.Draw(image)
        for y, row in enumerate(matrix):
            for x, dark in enumerate(row):
                if dark:
                    x0, y0 = left + x * block.module, y * block.module
                    draw.rectangle((x0, y0, x0 + block.module - 1, y0 + block.module - 1), fill=INK)
        return image

    def _rule(self) -> Image.Image:
        from PIL import Image, ImageDraw

        image = Image.new("L", (self.width, LINE_DOTS), PAPER)
        draw = ImageDraw.Draw(image)
        y = LINE_DOTS // 2
        for x in range(_MARGIN, self.width - _MARGIN, 12):
            draw.line((x, y, x + 6, y), fill=INK, width=2)
        return image

    def _bitmap(self, block: Bitmap) -> Image.Image:
        from PIL import Image

        # Raster data: 1 = ink; PIL mode "1" bytes: 1 = white. Invert through "L".
        bits = Image.frombytes("1", (block.width, block.height), block.data)
        ink = bits.convert("L").point(lambda v: PAPER - v)
        image = Image.new("L", (self.width, block.height), PAPER)
        width = min(block.width, self.width)
        x = 0 if block.align is Align.LEFT else self._x(width, block.align)
        image.paste(ink.crop((0, 0, width, block.height)), (x, 0))
        return image


def cmap_ranges(table: bytes) -> Iterator[tuple[int, int]]:
    """The ranges of code points (first, last) a font's raw ``cmap`` table maps: from its
    Unicode subtable of format 12 (all planes) when it has one, else of format 4 (the BMP).

    Read from the bytes (OpenType's layout), because fontTools' own reading names every
    glyph: tens of megabytes for a font of 60 000, where this needs nothing.
    """
    count = struct.unpack_from(">H", table, 2)[0]
    found: dict[int, int] = {}
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", table, 4 + 8 * i)
        if (platform, encoding) in ((0, 3), (0, 4), (0, 6), (3, 1), (3, 10)):
            found.setdefault(struct.unpack_from(">H", table, offset)[0], offset)
    if 12 in found:
        offset = found[12]
        for group in range(struct.unpack_from(">I", table, offset + 12)[0]):
            first, last, _glyph = struct.unpack_from(">III", table, offset + 16 + 12 * group)
            yield first, last
    elif 4 in found:
        offset = found[4]
        segments = struct.unpack_from(">H", table, offset + 6)[0] // 2
        lasts = struct.unpack_from(f">{segments}H", table, offset + 14)
        firsts = struct.unpack_from(f">{segments}H", table, offset + 16 + 2 * segments)
        yield from ((f, la) for f, la in zip(firsts, lasts, strict=True) if f != 0xFFFF)


def _threshold(image: Image.Image) -> Image.Image:
    """Pure ink or paper: a thermal head has no grey, and python-escpos would dither the
    anti-aliased edges of the glyphs into speckles."""
    return image.point(lambda v: INK if v < 128 else PAPER)


def bitmap_of(image: Image.Image, align: Align = Align.LEFT) -> Bitmap:
    """An image as raster data (dark pixels are ink)."""
    from PIL import Image

    mono = image.convert("L").point(lambda v: 255 if v < 128 else 0).convert("1")
    width_bytes = (mono.width + 7) // 8
    if mono.width % 8:
        padded = Image.new("1", (width_bytes * 8, mono.height), 0)
        padded.paste(mono, (0, 0))
        mono = padded
    return Bitmap(width_bytes, mono.height, mono.tobytes(), align)
