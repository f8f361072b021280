"""The printer's side of ESC/POS: parse the byte stream a host sends into commands, and
lay the commands out as printed tickets.

:class:`CommandParser` is incremental and bounded: feed any slice of the stream, get the
commands complete so far; a command cut in two waits for its rest. Unknown or oversized
commands come out as :class:`Malformed` and parsing goes on after them, never raising.
:class:`TicketReader` is a printer's state (Chinese mode, code page, size, alignment,
stored QR data) that turns commands into :class:`PrintedTicket` objects, one per cut.
The virtual printer is these two plus a socket; tests use them to read what was sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from protocols.errors import ProtocolError
from protocols.escpos_model import Align, Bitmap, Block, Feed, QrCode, QrLevel, TextLine

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
LF, CR = 0x0A, 0x0D

# A raster image larger than this (bytes of bit data) is refused: a whole 80 mm ticket
# drawn as one image is ~150 KB; 4 MB is a 72-byte-wide image 58 000 dots (7 m) long.
MAX_RASTER_BYTES = 4 * 1024 * 1024
# Printers wrap long lines; a "line" longer than this is garbage, flushed in pieces.
MAX_LINE_BYTES = 4096

# Parameter byte counts of the fixed-length commands we know (after ESC/FS/GS and the
# command byte). Commands only skipped are here too, so they do not desynchronise.
_ESC_FIXED = {
    b"@"[0]: 0,
    b"!"[0]: 1,
    b"E"[0]: 1,
    b"G"[0]: 1,
    b"-"[0]: 1,
    b"a"[0]: 1,
    b"d"[0]: 1,
    b"J"[0]: 1,
    b"2"[0]: 0,
    b"3"[0]: 1,
    b"t"[0]: 1,
    b"M"[0]: 1,
    b"R"[0]: 1,
    b"V"[0]: 1,
    b"{"[0]: 1,
    b" "[0]: 1,
    b"="[0]: 1,
    b"p"[0]: 3,
    b"c"[0]: 2,
    b"$"[0]: 2,
}
_FS_FIXED = {b"&"[0]: 0, b"."[0]: 0, b"!"[0]: 1, b"W"[0]: 1, b"-"[0]: 1, b"S"[0]: 2, b"C"[0]: 1}
_GS_FIXED = {
    b"!"[0]: 1,
    b"a"[0]: 1,
    b"B"[0]: 1,
    b"h"[0]: 1,
    b"w"[0]: 1,
    b"H"[0]: 1,
    b"f"[0]: 1,
    b"r"[0]: 1,
    b"I"[0]: 1,
    b"L"[0]: 2,
    b"W"[0]: 2,
}
# Code pages (ESC t n) the reader decodes; others read as CP437.
_CODE_PAGES = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    16: "cp1252",
    17: "cp866",
}


# -- commands ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Text:
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class LineFeed:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """A fixed-length ESC/FS/GS command: ``prefix`` (ESC, FS or GS), its letter, params."""

    prefix: int
    code: int
    params: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class StatusQuery:
    """DLE EOT n: answered at once, even while the printer is offline."""

    n: int


@dataclasses.dataclass(frozen=True, slots=True)
class QrFunction:
    """GS ( k with cn = 49 (QR): fn 65 model, 67 module size, 69 level, 80 store, 81 print."""

    fn: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RasterImage:
    width_bytes: int
    height: int
    mode: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Cut:
    mode: int
    feed: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """A command that was understood and has no effect on a ticket (GS ( L, GS k ...)."""

    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are no command this parser knows, or that break a limit; skipped."""

    data: bytes
    why: str


ParsedCommand = (
    Text | LineFeed | Command | StatusQuery | QrFunction | RasterImage | Cut | Skipped | Malformed
)


class _Incomplete(ProtocolError):
    """The buffer ends inside a command: wait for more bytes."""


class CommandParser:
    """Incremental ESC/POS stream parser (the printer's receive side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ParsedCommand]:
        self._buffer += data
        commands: list[ParsedCommand] = []
        pos = 0
        while pos < len(self._buffer):
            try:
                command, pos = self._one(pos)
            except _Incomplete:
                break
            commands.append(command)
        del self._buffer[:pos]
        return commands

    def _need(self, end: int) -> None:
        if end > len(self._buffer):
            raise _Incomplete

    def _one(self, pos: int) -> tuple[ParsedCommand, int]:
        buf = self._buffer
        byte = buf[pos]
        if byte >= 0x20:
            end = pos
            while end < len(buf) and buf[end] >= 0x20 and end - pos < MAX_LINE_BYTES:
                end += 1
            return Text(bytes(buf[pos:end])), end
        if byte == LF:
            return LineFeed(), pos + 1
        if byte in (ESC, FS, GS):
            self._need(pos + 2)
            code = buf[pos + 1]
            table = {ESC: _ESC_FIXED, FS: _FS_FIXED, GS: _GS_FIXED}[byte]
            if code in table:
                end = pos + 2 + table[code]
                self._need(end)
                return Command(byte, code, bytes(buf[pos + 2 : end])), end
            if byte == GS:
                return self._gs(pos, code)
            return Malformed(bytes(buf[pos : pos + 2]), "unknown command"), pos + 2
        if byte == DLE:
            self._need(pos + 2)
            if buf[pos + 1] in (0x04, 0x05):  # DLE EOT n, DLE ENQ n
                self._need(pos + 3)
                if buf[pos + 1] == 0x04:
                    return StatusQuery(buf[pos + 2]), pos + 3
                return Skipped(bytes(buf[pos : pos + 3])), pos + 3
            if buf[pos + 1] == 0x14:  # DLE DC4 fn m t
                self._need(pos + 5)
                return Skipped(bytes(buf[pos : pos + 5])), pos + 5
            return Malformed(bytes(buf[pos : pos + 2]), "unknown real-time command"), pos + 2
        # CR, HT, FF, CAN and other single control bytes change nothing on a ticket.
        return Skipped(bytes(buf[pos : pos + 1])), pos + 1

    def _gs(self, pos: int, code: int) -> tuple[ParsedCommand, int]:
        buf = self._buffer
        if code == ord("V"):  # GS V m [n]
            self._need(pos + 3)
            mode = buf[pos + 2]
            if mode in (65, 66, 97, 98, 103, 104):
                self._need(pos + 4)
                return Cut(mode, buf[pos + 3]), pos + 4
            return Cut(mode), pos + 3
        if code == ord("("):  # GS ( fn pL pH data
            self._need(pos + 5)
            size = buf[pos + 3] | buf[pos + 4] << 8
            end = pos + 5 + size
            self._need(end)
            body = bytes(buf[pos + 5 : end])
            if buf[pos + 2] == ord("k") and len(body) >= 2 and body[0] == 49:
                return QrFunction(body[1], body[2:]), end
            return Skipped(bytes(buf[pos:end])), end
        if code == ord("v"):  # GS v 0 m xL xH yL yH d...
            self._need(pos + 8)
            if buf[pos + 2] != ord("0"):
                return Malformed(bytes(buf[pos : pos + 3]), "unknown GS v form"), pos + 3
            width = buf[pos + 4] | buf[pos + 5] << 8
            height = buf[pos + 6] | buf[pos + 7] << 8
            size = width * height
            if size > MAX_RASTER_BYTES:
                why = f"raster image of {size} bytes is over the {MAX_RASTER_BYTES} limit"
                return Malformed(bytes(buf[pos : pos + 8]), why), pos + 8
            end = pos + 8 + size
            self._need(end)
            return RasterImage(width, height, buf[pos + 3], bytes(buf[pos + 8 : end])), end
        if code == ord("k"):  # GS k m d... NUL  |  GS k m n d1..dn  (barcodes)
            self._need(pos + 3)
            m = buf[pos + 2]
            if m <= 6:
                nul = buf.find(0, pos + 3)
                if nul < 0:
                    if len(buf) - pos > 260:
                        return Malformed(bytes(buf[pos : pos + 3]), "barcode without end"), pos + 3
                    raise _Incomplete
                return Skipped(bytes(buf[pos : nul + 1])), nul + 1
            self._need(pos + 4)
            end = pos + 4 + buf[pos + 3]
            self._need(end)
            return Skipped(bytes(buf[pos:end])), end
        return Malformed(bytes(buf[pos : pos + 2]), "unknown command"), pos + 2


# -- the printer's state ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PrintedTicket:
    """What came out between two cuts."""

    blocks: tuple[Block, ...]

    def lines(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, TextLine)]

    def text(self) -> str:
        return "\n".join(self.lines())

    def qr_payloads(self) -> list[str]:
        return [b.payload for b in self.blocks if isinstance(b, QrCode)]

    def as_text(self) -> str:
        """A plain-text picture of the ticket, for the .txt file next to the PNG."""
        out: list[str] = []
        for block in self.blocks:
            match block:
                case TextLine():
                    size = f" [x{block.scale}]" if block.scale > 1 else ""
                    out.append(f"{block.text}{size}")
                case QrCode():
                    out.append(f"[QR {block.payload}]")
                case Bitmap():
                    out.append(f"[image {block.width}x{block.height}]")
                case Feed():
                    out.extend([""] * block.lines)
                case _:
                    out.append("-" * 32)
        return "\n".join(out) + "\n"


class TicketReader:
    """A printer's state: applies commands, returns a ticket at each cut."""

    def __init__(self, *, chinese_mode: bool = False) -> None:
        self.chinese_mode = chinese_mode
        self._power_on_chinese = chinese_mode
        self.code_page = 0
        self.align = Align.LEFT
        self.width = 1
        self.height = 1
        self.bold = False
        self._line = bytearray()
        self._blocks: list[Block] = []
        self._qr_data = b""
        self._qr_module = 3
        self._qr_level = QrLevel.L
        self.unknown = 0

    def feed(self, commands: Iterable[ParsedCommand]) -> list[PrintedTicket]:
        done: list[PrintedTicket] = []
        for command in commands:
            ticket = self.apply(command)
            if ticket is not None:
                done.append(ticket)
        return done

    def pending(self) -> tuple[Block, ...]:
        """What is printed but not yet cut off."""
        return tuple(self._blocks)

    def apply(self, command: ParsedCommand) -> PrintedTicket | None:
        match command:
            case Text(data):
                self._line += data
                if len(self._line) > MAX_LINE_BYTES:
                    self._flush_line()
            case LineFeed():
                if self._line:
                    self._flush_line()
                else:
                    self._feed(1)
            case Command():
                self._command(command)
            case QrFunction():
                self._qr(command)
            case RasterImage():
                self._flush_line()
                self._blocks.append(Bitmap(command.width_bytes, command.height, command.data))
            case Cut():
                self._flush_line()
                ticket = PrintedTicket(tuple(self._blocks))
                self._blocks.clear()
                return ticket
            case Malformed():
                self.unknown += 1
            case StatusQuery() | Skipped():
                pass
        return None

    def _feed(self, lines: int) -> None:
        if lines <= 0:
            return
        last = self._blocks[-1] if self._blocks else None
        if isinstance(last, Feed):
            self._blocks[-1] = Feed(last.lines + lines)
        else:
            self._blocks.append(Feed(lines))

    def _decode(self, data: bytes) -> str:
        if self.chinese_mode:
            return data.decode("gb18030", errors="replace")
        return data.decode(_CODE_PAGES.get(self.code_page, "cp437"), errors="replace")

    def _flush_line(self) -> None:
        if not self._line:
            return
        text = self._decode(bytes(self._line))
        self._line.clear()
        scale = max(self.width, self.height)
        self._blocks.append(TextLine(text, scale=scale, align=self.align, bold=self.bold))

    def _command(self, command: Command) -> None:
        prefix, code, params = command.prefix, chr(command.code), command.params
        if prefix == ESC:
            self._esc(code, params)
        elif prefix == FS and code == "&":
            self.chinese_mode = True
        elif prefix == FS and code == ".":
            self.chinese_mode = False
        elif prefix == GS and code == "!":
            self.width = (params[0] >> 4 & 0x07) + 1
            self.height = (params[0] & 0x07) + 1

    def _esc(self, code: str, params: bytes) -> None:
        match code:
            case "@":
                self._flush_line()
                self.align, self.width, self.height, self.bold = Align.LEFT, 1, 1, False
                self.code_page = 0
            case "!":
                n = params[0]
                self.bold = bool(n & 0x08)
                self.height = 2 if n & 0x10 else 1
                self.width = 2 if n & 0x20 else 1
            case "E":
                self.bold = bool(params[0] & 1)
            case "a":
                self.align = {0: Align.LEFT, 1: Align.CENTER, 2: Align.RIGHT}.get(
                    params[0] % 48, Align.LEFT
                )
            case "d":
                self._flush_line()
                self._feed(params[0])
            case "t":
                self.code_page = params[0]

    def _qr(self, command: QrFunction) -> None:
        match command.fn:
            case 67 if command.data:
                self._qr_module = command.data[0]
            case 69 if command.data:
                self._qr_level = QrLevel(min(3, max(0, command.data[0] - 48)))
            case 80:
                self._qr_data = command.data[1:]  # after m = '0'
            case 81:
                self._flush_line()
                payload = self._qr_data.decode("utf-8", errors="replace")
                module = min(16, max(1, self._qr_module))
                try:
                    qr = QrCode(payload, module, self._qr_level, self.align)
                except ValueError:  # empty or over the size a ticket needs
                    self.unknown += 1
                else:
                    self._blocks.append(qr)


def read_tickets(data: bytes, *, chinese_mode: bool = False) -> list[PrintedTicket]:
    """Every ticket in a complete stream (tests and tools)."""
    return TicketReader(chinese_mode=chinese_mode).feed(CommandParser().feed(data))
