"""Ticket documents as ESC/POS bytes, for Chinese thermal printers.

A ticket is a :class:`~protocols.escpos_model.TicketDocument` (:mod:`protocols.escpos_model`):
lines of text with a size and alignment, a QR code, rules and blank lines. It becomes bytes
in one of two ways, chosen per printer:

- :func:`encode_gb18030` — the printer's own Chinese font: ``ESC @``, ``FS &`` (Chinese
  mode on), every line encoded as GB18030 by hand, ``FS .`` (Chinese mode off), cut.
  A line with a character the printer's font does not have (``font_charset``: gb2312,
  gbk or gb18030) is sent as a raster image of that line instead, so a rare character
  in a hall's or service's name prints rather than becoming ``?`` or a blank.
- :func:`encode_raster` — printers without a Chinese font: the whole ticket rendered
  with a CJK font (:mod:`protocols.escpos_raster`) and sent as ``GS v 0`` images.

Sizes, alignment, bold, native QR (``GS ( k``), images and the cut are produced by
python-escpos's ``Escpos`` command methods, writing into memory; python-escpos (with
python-barcode and its printer capabilities, ~6 MB of memory) is imported at the first
ticket encoded, not with this module nor with the printer's connection, so that an agent
that has not printed yet does not pay for it (:func:`before_escpos_import` lets the agent
prepare that import; :func:`commands_loaded` tells whether it is done). Its text path is
not used: python-escpos 3.1 sends a string as GB18030 only when it holds a CJK ideograph in
U+4E00–U+9FA5, never sends ``FS &``, and turns strings of only full-width punctuation
(``，。！``) or characters outside that block (``䶮``, ``𠮷``) into ``?``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from protocols.escpos_model import (
    Align,
    Bitmap,
    Feed,
    FontCharset,
    Paper,
    QrCode,
    Rule,
    TextLine,
    TicketDocument,
    in_font,
    wrap,
)
from protocols.escpos_raster import Typesetter

ESC = b"\x1b"
GS = b"\x1d"
FS = b"\x1c"
INIT = ESC + b"@"
CHINESE_ON = FS + b"&"
CHINESE_OFF = FS + b"."


# -- python-escpos, writing into memory --------------------------------------------------------


class _Commands(Protocol):
    """What the encoders use of python-escpos's ``Escpos`` and the subclass below."""

    def _raw(self, msg: bytes) -> None: ...
    def output(self) -> bytes: ...
    def style(self, align: Align, scale: int = 1, bold: bool = False) -> None: ...
    def image(self, img_source: Any, *, center: bool) -> None: ...
    def qr(self, content: str, *, ec: int, size: int, native: bool) -> None: ...
    def cut(self) -> None: ...


_before_import: list[Callable[[], object]] = []


def before_escpos_import(prepare: Callable[[], object]) -> None:
    """Have ``prepare`` called once, just before python-escpos is first imported (the agent
    points python-escpos's capabilities cache at its state folder then)."""
    _before_import[:] = [prepare]


def commands_loaded() -> bool:
    """Whether python-escpos's command encoder is imported (encoding is then quick; the
    first encoding imports it, ~0.3 s here and more on a Pi)."""
    return _commands_class.cache_info().currsize > 0


def _commands(paper: Paper) -> _Commands:
    commands: _Commands = _commands_class()(paper)
    return commands


@functools.cache
def _commands_class() -> type[Any]:
    """python-escpos's command methods, collecting bytes instead of sending them (the
    class is made at the first ticket: python-escpos is imported then)."""
    for prepare in _before_import:
        prepare()
    from escpos.escpos import Escpos  # type: ignore[import-untyped]

    class Commands(Escpos):  # type: ignore[misc]
        def __init__(self, paper: Paper) -> None:
            super().__init__(profile="default")
            data: dict[str, Any] = dict(self.profile.profile_data)
            # The generic profile's width is "Unknown", which makes image() print a notice
            # to stdout on every call; the roll's width is known here.
            data["media"] = {
                "width": {"mm": paper.width_mm, "pixels": paper.width_dots},
                "dpi": 203,
            }
            self.profile.profile_data = data
            self._chunks: list[bytes] = []

        def _raw(self, msg: bytes) -> None:
            self._chunks.append(bytes(msg))

        def output(self) -> bytes:
            return b"".join(self._chunks)

        def style(self, align: Align, scale: int = 1, bold: bool = False) -> None:
            self.set(align=align.value, bold=bold, custom_size=True, width=scale, height=scale)

    return Commands


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
    out = _commands(paper)
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
    out = _commands(paper)
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
