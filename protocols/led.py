"""LED strip frames (窗口条屏): one codec per controller family behind one interface.

There is no common standard for the LED strips above hall windows: every controller
vendor has its own frames. This module has two, both sans-I/O (bytes in, typed values
out; no asyncio, serial, socket or clock):

``text_frame`` — the hall agent's documented text frame, for controllers that show
GB2312 text (what our emulator speaks, and what a vendor board is configured or
flashed to speak)::

    STX  ADDR_H ADDR_L  CMD  FLAGS  LEN  DATA...  CHK  ETX
    02   address (BE)   cmd  flags  n    n bytes  xor  03

- ADDR: the strip's bus address, 0-65535, big-endian.
- CMD: ``31`` show text, ``32`` clear, ``30`` ping. A reply from the strip carries
  ``CMD | 80`` and one DATA byte: ``00`` done, ``01`` checksum error, ``02`` text
  not shown (bad GB2312 or too long), ``03`` unknown command.
- FLAGS (show text): bit 0 flash (a new call), bit 1 scroll (text wider than the strip).
- LEN: DATA length, at most :data:`MAX_DATA` (a 64-character GB2312 line is 128 bytes).
- CHK: XOR of every byte from ADDR_H through the last DATA byte.

``number_board`` — the cheap numeric boards' four bytes ``[id, hi, lo, sum]``: the
number ``hi * 256 + lo`` (0-9999) shown at board ``id``, ``sum = (id + hi + lo) mod
256``. Such a board shows digits only: the ticket's letters are dropped. It never
answers.

Parsers are incremental (:meth:`feed` any slice of bytes, get whole frames), bounded,
and never raise on garbage: a bad frame is reported as :class:`Rejected` and the parser
resynchronises on the next start byte.
"""

from __future__ import annotations

import abc
import dataclasses
import enum

from protocols.errors import ProtocolError

STX = 0x02
ETX = 0x03
REPLY = 0x80

# A strip line holds at most 64 Chinese characters; longer input is a fault, not text.
MAX_DATA = 128
# Bytes kept while waiting for the rest of a frame: a frame is at most 136 bytes, so more
# than this without a whole frame is noise and is dropped.
MAX_BUFFER = 4 * (MAX_DATA + 8)
# The numeric boards show four digits.
MAX_BOARD_NUMBER = 9999


class LedProtocolError(ProtocolError, ValueError):
    """Text or values that a frame cannot carry (the message says what to change)."""


class Command(enum.IntEnum):
    PING = 0x30
    SHOW = 0x31
    CLEAR = 0x32


class ReplyStatus(enum.IntEnum):
    DONE = 0x00
    BAD_CHECKSUM = 0x01
    BAD_TEXT = 0x02
    UNKNOWN_COMMAND = 0x03


FLASH = 0x01
SCROLL = 0x02


@dataclasses.dataclass(frozen=True, slots=True)
class TextFrame:
    """One ``text_frame`` frame, either direction."""

    address: int
    command: int
    flags: int = 0
    data: bytes = b""

    @property
    def is_reply(self) -> bool:
        return bool(self.command & REPLY)

    @property
    def text(self) -> str:
        """The GB2312 text of a SHOW frame. Raises :class:`LedProtocolError`."""
        try:
            return self.data.decode("gb2312")
        except UnicodeDecodeError as err:
            raise LedProtocolError(f"the text is not GB2312: {err}") from err

    @property
    def status(self) -> ReplyStatus | None:
        if not self.is_reply or len(self.data) != 1:
            return None
        try:
            return ReplyStatus(self.data[0])
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True, slots=True)
class BoardFrame:
    """One ``number_board`` frame: show ``number`` at board ``address``."""

    address: int
    number: int


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """Bytes that were not a valid frame, and why (for counters and logs)."""

    reason: str
    data: bytes


Frame = TextFrame | BoardFrame
ParseEvent = TextFrame | BoardFrame | Rejected


def gb2312_text(text: str) -> bytes:
    """Encode for a strip; characters GB2312 lacks become '?' (a strip has no other font)."""
    return text.encode("gb2312", errors="replace")


def _xor(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def _check_address(address: int, limit: int) -> None:
    if not 0 <= address <= limit:
        raise LedProtocolError(f"address {address} is outside 0-{limit}")


def encode_text_frame(frame: TextFrame) -> bytes:
    _check_address(frame.address, 0xFFFF)
    if len(frame.data) > MAX_DATA:
        raise LedProtocolError(
            f"{len(frame.data)} bytes of text do not fit a frame (at most {MAX_DATA}); "
            "shorten the strip's text template"
        )
    if not 0 <= frame.command <= 0xFF or not 0 <= frame.flags <= 0xFF:
        raise LedProtocolError("command and flags are single bytes")
    body = bytes(
        (frame.address >> 8, frame.address & 0xFF, frame.command, frame.flags, len(frame.data))
    )
    body += frame.data
    return bytes((STX,)) + body + bytes((_xor(body), ETX))


class TextFrameParser:
    """Incremental parser of ``text_frame`` bytes (the strip's side and the host's)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ParseEvent]:
        self._buffer += data
        events: list[ParseEvent] = []
        while True:
            event = self._next()
            if event is None:
                break
            events.append(event)
        if len(self._buffer) > MAX_BUFFER:
            events.append(Rejected("buffer overflow without a whole frame", bytes(self._buffer)))
            self._buffer.clear()
        return events

    def _next(self) -> ParseEvent | None:
        buf = self._buffer
        start = buf.find(STX)
        if start < 0:
            if buf:
                junk = bytes(buf)
                buf.clear()
                return Rejected("bytes before a start byte", junk)
            return None
        if start > 0:
            junk = bytes(buf[:start])
            del buf[:start]
            return Rejected("bytes before a start byte", junk)
        if len(buf) < 6:
            return None
        length = buf[5]
        if length > MAX_DATA:
            del buf[:1]
            return Rejected(f"declared length {length} over {MAX_DATA}", bytes((STX,)))
        total = 6 + length + 2
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        body = raw[1 : 6 + length]
        if raw[-1] != ETX or raw[-2] != _xor(body):
            # Drop only the start byte: the real frame may begin inside these bytes.
            del buf[:1]
            what = "end byte" if raw[-1] != ETX else "checksum"
            return Rejected(f"bad {what}", raw)
        del buf[:total]
        return TextFrame(
            address=(raw[1] << 8) | raw[2], command=raw[3], flags=raw[4], data=raw[6 : 6 + length]
        )


def encode_board_frame(frame: BoardFrame) -> bytes:
    _check_address(frame.address, 0xFF)
    if not 0 <= frame.number <= MAX_BOARD_NUMBER:
        raise LedProtocolError(f"a number board shows 0-{MAX_BOARD_NUMBER}, not {frame.number}")
    hi, lo = frame.number >> 8, frame.number & 0xFF
    return bytes((frame.address, hi, lo, (frame.address + hi + lo) & 0xFF))


class BoardFrameParser:
    """Incremental parser of ``number_board`` frames; slides a byte on a bad sum."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ParseEvent]:
        self._buffer += data
        events: list[ParseEvent] = []
        junk = bytearray()
        while len(self._buffer) >= 4:
            a, hi, lo, total = self._buffer[:4]
            number = (hi << 8) | lo
            if (a + hi + lo) & 0xFF == total and number <= MAX_BOARD_NUMBER:
                if junk:
                    events.append(Rejected("bytes that are not a frame", bytes(junk)))
                    junk.clear()
                events.append(BoardFrame(a, number))
                del self._buffer[:4]
            else:
                junk.append(self._buffer.pop(0))
        if junk:
            events.append(Rejected("bytes that are not a frame", bytes(junk)))
        return events


def _digits(text: str) -> int | None:
    digits = "".join(ch for ch in text if ch.isascii() and ch.isdigit())
    if not digits:
        return None
    return int(digits[-4:])


class LedCodec(abc.ABC):
    """One controller family: what the host sends, and how to read what comes back."""

    name: str
    #: Whether the strip answers each frame (the driver then waits for the answer).
    replies: bool

    @abc.abstractmethod
    def show(self, address: int, text: str, *, flash: bool = False) -> bytes:
        """Bytes that make the strip at ``address`` show ``text``."""

    @abc.abstractmethod
    def clear(self, address: int) -> bytes:
        """Bytes that blank the strip at ``address``."""

    @abc.abstractmethod
    def parser(self) -> TextFrameParser | BoardFrameParser:
        """A fresh parser for this family's frames (replies on the host's side)."""

    def is_answer(self, event: ParseEvent, address: int, sent: bytes) -> bool:
        """Whether ``event`` is the strip's answer to the frame ``sent`` to ``address``."""
        return False

    def refusal(self, answer: ParseEvent) -> str | None:
        """Why the strip did not do what its answer answers, or None when it did."""
        return None


class TextFrameCodec(LedCodec):
    name = "text_frame"
    replies = True

    def show(self, address: int, text: str, *, flash: bool = False) -> bytes:
        data = gb2312_text(text)
        flags = (FLASH if flash else 0) | (SCROLL if len(data) > 16 else 0)
        return encode_text_frame(TextFrame(address, Command.SHOW, flags, data))

    def clear(self, address: int) -> bytes:
        return encode_text_frame(TextFrame(address, Command.CLEAR))

    def ping(self, address: int) -> bytes:
        return encode_text_frame(TextFrame(address, Command.PING))

    def parser(self) -> TextFrameParser:
        return TextFrameParser()

    def is_answer(self, event: ParseEvent, address: int, sent: bytes) -> bool:
        return (
            isinstance(event, TextFrame)
            and event.is_reply
            and event.address == address
            and len(sent) > 3
            and event.command == sent[3] | REPLY
        )

    def refusal(self, answer: ParseEvent) -> str | None:
        if not isinstance(answer, TextFrame) or answer.status is ReplyStatus.DONE:
            return None
        return _REFUSALS.get(answer.status, "the strip answered with an unknown status")


_REFUSALS: dict[ReplyStatus | None, str] = {
    ReplyStatus.BAD_CHECKSUM: "the strip saw a bad checksum (noise on the line?)",
    ReplyStatus.BAD_TEXT: "the strip could not show the text (not GB2312, or too long)",
    ReplyStatus.UNKNOWN_COMMAND: "the strip does not know the command",
}


class NumberBoardCodec(LedCodec):
    name = "number_board"
    replies = False

    def show(self, address: int, text: str, *, flash: bool = False) -> bytes:
        number = _digits(text)
        if number is None:
            return self.clear(address)
        return encode_board_frame(BoardFrame(address, number))

    def clear(self, address: int) -> bytes:
        # The boards have no blank command; 0 is what they show when idle.
        return encode_board_frame(BoardFrame(address, 0))

    def parser(self) -> BoardFrameParser:
        return BoardFrameParser()


CODECS: dict[str, type[LedCodec]] = {
    TextFrameCodec.name: TextFrameCodec,
    NumberBoardCodec.name: NumberBoardCodec,
}


def codec_for(name: str) -> LedCodec:
    try:
        return CODECS[name]()
    except KeyError:
        raise LedProtocolError(f"no LED codec {name!r}; known: {', '.join(CODECS)}") from None
