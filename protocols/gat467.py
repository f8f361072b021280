"""GA/T 467 resident ID card reader, security module (SAM) protocol: frames and commands.

Sans-I/O, in the manner of h11: :class:`FrameParser` takes bytes as they arrive and hands
out whole frames; :func:`encode_request` and :func:`encode_response` make the bytes. The
same frame shape goes both ways::

    request : AA AA AA 96 69 | LEN_H LEN_L | CMD PARA    | DATA... | CHK
    response: AA AA AA 96 69 | LEN_H LEN_L | SW1 SW2 SW3 | DATA... | CHK

``LEN`` (big-endian) counts every byte after itself, ``CHK`` included; ``CHK`` is the XOR
of the bytes from ``LEN_H`` through the last data byte. The parser never raises on
garbage: bytes that do not start a frame are skipped, a frame with a bad checksum is
reported as a :class:`BadFrame` event and the parser looks for the next preamble. Only
the frame's own decoding helpers raise, and only :class:`Gat467Error` subclasses.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator

from protocols.errors import ProtocolError

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"

# The largest answer of the protocol is 30 10 (text + photo + fingerprint): LEN 2314.
# Anything longer is not this protocol; bounding it keeps a noisy line from making the
# parser hold megabytes while it waits for bytes that never come.
MAX_LENGTH = 4096
# LEN counts at least the two or three header bytes and the checksum.
MIN_REQUEST_LENGTH = 3
MIN_RESPONSE_LENGTH = 4

TEXT_BYTES = 256
PHOTO_BYTES = 1024
FINGERPRINT_BYTES = 1024
ADDITIONAL_ADDRESS_BYTES = 70
SAM_ID_BYTES = 16


class Gat467Error(ProtocolError):
    """Base of every error of this codec; the message says what went wrong."""


class FrameError(Gat467Error):
    """Bytes that are not a valid frame (length, checksum, layout)."""


class Direction(enum.Enum):
    """Which side a parser listens to: a reader's answers, or a host's requests."""

    RESPONSE = "response"
    REQUEST = "request"


class Command(enum.Enum):
    """The commands a host sends, as their (CMD, PARA) bytes."""

    RESET_SAM = (0x10, 0xFF)
    SAM_STATUS = (0x11, 0xFF)
    READ_SAM_ID = (0x12, 0xFF)
    FIND_CARD = (0x20, 0x01)
    SELECT_CARD = (0x20, 0x02)
    READ_TEXT_PHOTO = (0x30, 0x01)
    READ_ADDITIONAL_ADDRESS = (0x30, 0x03)
    READ_TEXT_PHOTO_FINGERPRINT = (0x30, 0x10)

    @property
    def cmd(self) -> int:
        return self.value[0]

    @property
    def para(self) -> int:
        return self.value[1]

    @classmethod
    def lookup(cls, cmd: int, para: int) -> Command | None:
        return _COMMANDS.get((cmd, para))


_COMMANDS = {c.value: c for c in Command}


class Status(enum.IntEnum):
    """SW3 of an answer (SW1 = SW2 = 00)."""

    SUCCESS = 0x90
    FIND_OK = 0x9F
    NO_SUCH_ITEM = 0x91
    REQUEST_CHECKSUM = 0x10
    REQUEST_LENGTH = 0x11
    COMMAND_ERROR = 0x21
    NOT_ALLOWED = 0x23
    UNRECOGNISED = 0x24
    CARD_REJECTED_SAM = 0x31
    SAM_REJECTED_CARD = 0x32
    VERIFICATION = 0x33
    CARD_TYPE = 0x40
    READ_FAILED = 0x41
    RANDOM_NUMBER = 0x47
    SELF_TEST = 0x60
    NOT_AUTHORISED = 0x66
    NO_CARD = 0x80
    SELECT_FAILED = 0x81

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCESS, Status.FIND_OK)


class ReaderStatusError(Gat467Error):
    """The reader answered with an error status (SW3); ``status`` is the code."""

    #: Whether trying the same card again may succeed (a card moved, a bad read).
    transient: bool = False

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NoCard(ReaderStatusError):
    """No card on the reader (find failed): the normal answer while nobody is there."""

    transient = True


class CardReadFailed(ReaderStatusError):
    """The card is there but could not be selected or read; hold it still and retry."""

    transient = True


class CardRejected(ReaderStatusError):
    """Card and security module did not authenticate each other: a damaged or fake card."""


class UnknownCardType(ReaderStatusError):
    """The card is not a card type this reader knows."""


class ReaderFault(ReaderStatusError):
    """The security module itself failed or refused (self-test, authorisation)."""


class RequestRejected(ReaderStatusError):
    """The reader refused the request's bytes (checksum, length, command): a host bug or
    a noisy line."""

    transient = True


class NoSuchItem(ReaderStatusError):
    """The card has no such item (e.g. no additional address)."""


# What each error status means, for the person at the counter or the ops person.
_ERRORS: dict[int, tuple[type[ReaderStatusError], str]] = {
    Status.NO_SUCH_ITEM: (NoSuchItem, "the card has no such item"),
    Status.REQUEST_CHECKSUM: (
        RequestRejected,
        "the reader received a request with a bad checksum (noise on the line?)",
    ),
    Status.REQUEST_LENGTH: (RequestRejected, "the reader received a request of a wrong length"),
    Status.COMMAND_ERROR: (RequestRejected, "the reader does not know the command"),
    Status.NOT_ALLOWED: (
        RequestRejected,
        "the reader does not allow this operation now (find and select the card first)",
    ),
    Status.UNRECOGNISED: (ReaderFault, "the reader reported an unrecognised error"),
    Status.CARD_REJECTED_SAM: (
        CardRejected,
        "the card did not accept the reader's security module; the card may be damaged or "
        "not genuine",
    ),
    Status.SAM_REJECTED_CARD: (
        CardRejected,
        "the security module did not accept the card; the card may be damaged or not genuine",
    ),
    Status.VERIFICATION: (
        CardRejected,
        "the card's information failed verification; the card may be damaged or not genuine",
    ),
    Status.CARD_TYPE: (UnknownCardType, "the card type is not recognised by the reader"),
    Status.READ_FAILED: (CardReadFailed, "reading the card failed; hold the card still and retry"),
    Status.RANDOM_NUMBER: (
        CardReadFailed,
        "the card failed to give a random number; place the card again",
    ),
    Status.SELF_TEST: (
        ReaderFault,
        "the reader's security module failed its self-test; the reader needs service",
    ),
    Status.NOT_AUTHORISED: (
        ReaderFault,
        "the reader's security module is not authorised; the reader needs service",
    ),
    Status.NO_CARD: (NoCard, "no card on the reader"),
    Status.SELECT_FAILED: (CardReadFailed, "selecting the card failed; place the card again"),
}


def status_error(status: int) -> ReaderStatusError:
    """The typed error for an error status; unknown codes are reader faults."""
    kind, message = _ERRORS.get(
        status, (ReaderFault, f"the reader answered with unknown status 0x{status:02X}")
    )
    return kind(status, f"{message} (SW3 0x{status:02X})")


def describe_status(status: int) -> str:
    if status in (Status.SUCCESS, Status.FIND_OK):
        return "success"
    return str(status_error(status))


# -- frames ------------------------------------------------------------------------------


def checksum(body: bytes) -> int:
    """XOR of the bytes from LEN_H through the last data byte."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def _frame(header: bytes, data: bytes) -> bytes:
    length = len(header) + len(data) + 1
    if length > MAX_LENGTH:
        raise FrameError(f"a frame holds at most {MAX_LENGTH - len(header) - 1} data bytes")
    body = length.to_bytes(2, "big") + header + data
    return PREAMBLE + body + bytes((checksum(body),))


def encode_request(command: Command, data: bytes = b"") -> bytes:
    """The bytes a host sends for ``command``."""
    return _frame(bytes((command.cmd, command.para)), data)


def encode_response(status: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    """The bytes a reader answers with (used by the emulator and tests)."""
    if not 0 <= status <= 0xFF:
        raise FrameError(f"status {status} is not a byte")
    return _frame(bytes((sw1, sw2, status)), data)


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A reader's answer."""

    sw1: int
    sw2: int
    status: int
    data: bytes

    @property
    def ok(self) -> bool:
        return self.sw1 == 0 and self.sw2 == 0 and self.status in (Status.SUCCESS, Status.FIND_OK)

    def raise_for_status(self) -> Response:
        """The response itself when it says success, else its typed error."""
        if self.ok:
            return self
        raise status_error(self.status)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A host's request; ``command`` is None for a (CMD, PARA) this codec does not know."""

    cmd: int
    para: int
    data: bytes

    @property
    def command(self) -> Command | None:
        return Command.lookup(self.cmd, self.para)


@dataclasses.dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame-shaped run of bytes that failed its check; the parser moved past it."""

    reason: str
    raw: bytes


Frame = Response | Request
ParserEvent = Response | Request | BadFrame


class FrameParser:
    """Incremental parser: ``feed(bytes)`` returns the frames (and bad frames) completed.

    Bounded: it never holds more than one frame's worth of bytes (at most
    ``MAX_LENGTH + 7``) plus what arrived in one ``feed``. Garbage between frames is
    skipped and counted in ``skipped``.
    """

    def __init__(self, direction: Direction = Direction.RESPONSE) -> None:
        self.direction = direction
        self._buffer = bytearray()
        self.skipped = 0
        self._min = MIN_RESPONSE_LENGTH if direction is Direction.RESPONSE else MIN_REQUEST_LENGTH

    def feed(self, data: bytes) -> list[ParserEvent]:
        self._buffer += data
        return list(self._frames())

    def _frames(self) -> Iterator[ParserEvent]:
        buf = self._buffer
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                # Keep a tail that may be the start of a preamble split across feeds.
                keep = _preamble_prefix(buf)
                self.skipped += len(buf) - keep
                del buf[: len(buf) - keep]
                return
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < len(PREAMBLE) + 2:
                return
            length = int.from_bytes(buf[5:7], "big")
            if not self._min <= length <= MAX_LENGTH:
                # Not a frame of this protocol: skip one byte of the preamble and look again.
                yield BadFrame(f"impossible length {length}", bytes(buf[:7]))
                self.skipped += 1
                del buf[:1]
                continue
            total = len(PREAMBLE) + 2 + length
            if len(buf) < total:
                return
            raw = bytes(buf[:total])
            body = raw[len(PREAMBLE) : -1]
            if checksum(body) != raw[-1]:
                # Resynchronise after the preamble: a real frame may start inside this one
                # (a reader that was cut off mid-answer and answered again).
                yield BadFrame(
                    f"bad checksum 0x{raw[-1]:02X}, expected 0x{checksum(body):02X}", raw
                )
                self.skipped += 1
                del buf[:1]
                continue
            del buf[:total]
            yield self._decode(body[2:])

    def _decode(self, content: bytes) -> Frame:
        if self.direction is Direction.RESPONSE:
            return Response(content[0], content[1], content[2], bytes(content[3:]))
        return Request(content[0], content[1], bytes(content[2:]))

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _preamble_prefix(buf: bytearray) -> int:
    """How many bytes at the end of ``buf`` could begin a preamble."""
    for keep in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
        if buf[-keep:] == PREAMBLE[:keep]:
            return keep
    return 0


# -- payloads ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CardData:
    """What a read (30 01 or 30 10) returns: the raw blocks, not yet decoded."""

    text: bytes
    photo: bytes
    fingerprint: bytes | None = None


def decode_card_data(data: bytes, *, with_fingerprint: bool) -> CardData:
    """Split a read response's data into its blocks (lengths first, big-endian)."""
    header = 6 if with_fingerprint else 4
    if len(data) < header:
        raise FrameError(f"a card read answer needs {header} length bytes, got {len(data)}")
    text_len = int.from_bytes(data[0:2], "big")
    photo_len = int.from_bytes(data[2:4], "big")
    finger_len = int.from_bytes(data[4:6], "big") if with_fingerprint else 0
    if text_len != TEXT_BYTES:
        raise FrameError(f"the text block is {text_len} bytes, not {TEXT_BYTES}")
    if photo_len not in (0, PHOTO_BYTES):
        raise FrameError(f"the photo block is {photo_len} bytes, not {PHOTO_BYTES}")
    if finger_len not in (0, FINGERPRINT_BYTES):
        raise FrameError(f"the fingerprint block is {finger_len} bytes, not 0 or 1024")
    expected = header + text_len + photo_len + finger_len
    if len(data) != expected:
        raise FrameError(f"the card read answer has {len(data)} data bytes, expected {expected}")
    text = data[header : header + text_len]
    photo = data[header + text_len : header + text_len + photo_len]
    finger = data[header + text_len + photo_len :] if with_fingerprint else None
    return CardData(bytes(text), bytes(photo), None if finger is None else bytes(finger))


def encode_card_data(card: CardData) -> bytes:
    """The read answer's data for a card (the emulator's side)."""
    if len(card.text) != TEXT_BYTES:
        raise FrameError(f"the text block must be {TEXT_BYTES} bytes")
    if len(card.photo) not in (0, PHOTO_BYTES):
        raise FrameError(f"the photo block must be 0 or {PHOTO_BYTES} bytes")
    lengths = len(card.text).to_bytes(2, "big") + len(card.photo).to_bytes(2, "big")
    finger = b""
    if card.fingerprint is not None:
        if len(card.fingerprint) not in (0, FINGERPRINT_BYTES):
            raise FrameError(f"the fingerprint block must be 0 or {FINGERPRINT_BYTES} bytes")
        lengths += len(card.fingerprint).to_bytes(2, "big")
        finger = card.fingerprint
    return lengths + card.text + card.photo + finger


def decode_sam_id(data: bytes) -> str:
    """The security module's id as readers print it: ``05.01-20101030-0000123456-1234567890``."""
    if len(data) != SAM_ID_BYTES:
        raise FrameError(f"a SAM id is {SAM_ID_BYTES} bytes, got {len(data)}")
    first = int.from_bytes(data[0:2], "little")
    second = int.from_bytes(data[2:4], "little")
    third = int.from_bytes(data[4:8], "little")
    fourth = int.from_bytes(data[8:12], "little")
    fifth = int.from_bytes(data[12:16], "little")
    return f"{first:02d}.{second:02d}-{third:08d}-{fourth:010d}-{fifth:010d}"


def encode_sam_id(first: int, second: int, third: int, fourth: int, fifth: int) -> bytes:
    return (
        first.to_bytes(2, "little")
        + second.to_bytes(2, "little")
        + third.to_bytes(4, "little")
        + fourth.to_bytes(4, "little")
        + fifth.to_bytes(4, "little")
    )


def decode_additional_address(data: bytes) -> str:
    """The additional (changed) address: 70 bytes UCS-2 LE, space padded."""
    if len(data) != ADDITIONAL_ADDRESS_BYTES:
        raise FrameError(
            f"an additional address is {ADDITIONAL_ADDRESS_BYTES} bytes, got {len(data)}"
        )
    return ucs2(data)


def ucs2(data: bytes) -> str:
    """UCS-2 LE text with the card's space (and NUL) padding removed."""
    if len(data) % 2:
        raise FrameError("UCS-2 text has an odd number of bytes")
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError as err:
        raise FrameError(f"the text is not UCS-2: {err}") from err
    return text.rstrip(" \x00")
