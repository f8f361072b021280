"""What every keypad bus protocol speaks: frames, key presses, host commands.

A bus protocol (one module per vendor, registered in :mod:`protocols.keypad`) turns bytes
into :class:`Frame` values with an incremental parser, and frames into typed inputs: a
caller's key press (with the digits typed before it) or a rater's key. The host answers
with frames of its own: acknowledgements, a number to show, a beep, "start a rating".

What a caller's keys *mean* (``6`` then confirm gives the ticket up, a code of two or
more digits then confirm signs staff in, ...) is the same for every keypad, on the bus or
on evdev, and lives here in :func:`interpret`.
"""

from __future__ import annotations

import abc
import dataclasses
import enum

from protocols.errors import ProtocolError


class KeypadError(ProtocolError, ValueError):
    """A value cannot be put in a frame (an address out of range, a digit that is not one)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One frame of the bus, whichever way it goes."""

    address: int
    function: int
    data: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes the parser dropped while looking for the next valid frame, and why."""

    data: bytes
    reason: str


class CallerKey(enum.StrEnum):
    """A caller's function keys. Digits are not keys: they travel with the key after them."""

    NEXT = "next"
    RECALL = "recall"
    RATE = "rate"
    CONFIRM = "confirm"
    PAUSE = "pause"
    TRANSFER = "transfer"
    # Keys a bus keypad does not have but an evdev keypad or a page may map.
    SERVING = "serving"
    FINISH = "finish"
    NO_SHOW = "no_show"
    HOLD = "hold"
    SIGN_OUT = "sign_out"


@dataclasses.dataclass(frozen=True, slots=True)
class CallerPress:
    """A caller's key, with the digits typed just before it (``""`` when none)."""

    address: int
    key: CallerKey
    digits: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RaterPress:
    """A rater's key, by its index on the unit (0 = the leftmost, usually 非常满意)."""

    address: int
    key: int


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownInput:
    """A valid frame from a device that means nothing known (acknowledged all the same)."""

    address: int
    frame: Frame


DeviceInput = CallerPress | RaterPress | UnknownInput


@dataclasses.dataclass(frozen=True, slots=True)
class ShowNumber:
    address: int
    text: str  # what the display shows, right-aligned, blanks as spaces


@dataclasses.dataclass(frozen=True, slots=True)
class Beep:
    address: int


@dataclasses.dataclass(frozen=True, slots=True)
class StartRating:
    address: int


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownCommand:
    frame: Frame


HostCommand = ShowNumber | Beep | StartRating | UnknownCommand


class FrameParser(abc.ABC):
    """Incremental: feed bytes as they come, get the frames (and what was skipped)."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Frame | Skipped]:
        """Every frame completed by ``data``; never raises on what the line carries."""

    @abc.abstractmethod
    def idle(self) -> list[Frame | Skipped]:
        """The line went quiet: a frame still incomplete never will be. Drop its start and
        look again in what followed it (a garbled length must not hold a real frame back
        until the next key press)."""

    @property
    @abc.abstractmethod
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""


class KeypadProtocol(abc.ABC):
    """One vendor's keypad bus protocol: framing and the meaning of frames."""

    name: str
    baudrate: int = 9600

    @abc.abstractmethod
    def parser(self) -> FrameParser: ...

    @abc.abstractmethod
    def encode(self, frame: Frame) -> bytes: ...

    # -- host side ----------------------------------------------------------------------

    @abc.abstractmethod
    def decode_device(self, frame: Frame) -> DeviceInput:
        """What a device's frame says."""

    @abc.abstractmethod
    def acknowledgement(self, frame: Frame) -> Frame:
        """The host's answer to a device's frame (without it the device sends it again)."""

    @abc.abstractmethod
    def show_number(self, address: int, text: str) -> Frame:
        """Show ``text`` (digits and spaces) on a caller's display."""

    @abc.abstractmethod
    def beep(self, address: int) -> Frame: ...

    @abc.abstractmethod
    def start_rating(self, address: int) -> Frame:
        """Ask a rater to invite the citizen to rate."""

    # -- device side (emulators, tests) ----------------------------------------------------

    @abc.abstractmethod
    def caller_frame(self, press: CallerPress) -> Frame: ...

    @abc.abstractmethod
    def rater_frame(self, press: RaterPress) -> Frame: ...

    @abc.abstractmethod
    def decode_host(self, frame: Frame) -> HostCommand:
        """What a host's frame asks (an acknowledgement is recognised by the device that
        waits for it: compare with :meth:`acknowledgement` of the frame it sent)."""


class CallerAction(enum.StrEnum):
    """What staff asked for, whichever keypad or page they used."""

    NEXT = "next"
    CALL_NUMBER = "call_number"
    RECALL = "recall"
    SERVING = "serving"
    FINISH = "finish"
    NO_SHOW = "no_show"
    HOLD = "hold"
    CALL_BACK = "call_back"
    TRANSFER = "transfer"
    PAUSE = "pause"  # pauses an open window, resumes a paused one
    REQUEST_RATING = "request_rating"
    SIGN_IN = "sign_in"
    SIGN_OUT = "sign_out"
    CAPTURE = "capture"  # the window's document camera takes the papers (高拍)


@dataclasses.dataclass(frozen=True, slots=True)
class CallerCommand:
    action: CallerAction
    argument: str = ""  # digits: a ticket number, a transfer target, a sign-in code


# A digit typed before "confirm" (确认) selects an operation, as on existing hall keypads.
CONFIRM_DIGITS: dict[str, CallerAction] = {
    "6": CallerAction.NO_SHOW,  # 弃号 give up
    "0": CallerAction.HOLD,  # 挂起 hold
    "3": CallerAction.CALL_BACK,  # 回呼 call back the held ticket
    "9": CallerAction.CAPTURE,  # 高拍 capture a page with the window's document camera
    "8": CallerAction.SIGN_OUT,  # 签退 sign out (a keypad without a sign-out key)
}
# A staff sign-in code is at least this long, so it never collides with a confirm digit.
SIGN_IN_CODE_MIN = 2
SIGN_IN_CODE_MAX = 8

_PLAIN: dict[CallerKey, CallerAction] = {
    CallerKey.RECALL: CallerAction.RECALL,
    CallerKey.RATE: CallerAction.REQUEST_RATING,
    CallerKey.PAUSE: CallerAction.PAUSE,
    CallerKey.SERVING: CallerAction.SERVING,
    CallerKey.FINISH: CallerAction.FINISH,
    CallerKey.NO_SHOW: CallerAction.NO_SHOW,
    CallerKey.HOLD: CallerAction.HOLD,
    CallerKey.SIGN_OUT: CallerAction.SIGN_OUT,
}


def interpret(key: CallerKey, digits: str = "") -> CallerCommand | None:
    """What a key with the digits typed before it asks for; ``None`` when nothing.

    - next: call the next ticket; with digits, call the ticket with that number;
    - confirm: alone, the citizen arrived (serving); ``6`` gives the ticket up (no-show),
      ``0`` holds it, ``3`` calls the held ticket back, ``9`` captures a page, ``8`` signs
      out; a code of 2-8 digits signs in;
    - transfer: with digits, the target service's position (1 = the first service);
    - recall, rate (request a rating), pause (and resume) ignore digits.
    """
    if digits and not digits.isdigit():
        return None
    if key is CallerKey.NEXT:
        if digits:
            return CallerCommand(CallerAction.CALL_NUMBER, digits)
        return CallerCommand(CallerAction.NEXT)
    if key is CallerKey.CONFIRM:
        if not digits:
            return CallerCommand(CallerAction.SERVING)
        if digits in CONFIRM_DIGITS:
            return CallerCommand(CONFIRM_DIGITS[digits])
        if SIGN_IN_CODE_MIN <= len(digits) <= SIGN_IN_CODE_MAX:
            return CallerCommand(CallerAction.SIGN_IN, digits)
        return None
    if key is CallerKey.TRANSFER:
        return CallerCommand(CallerAction.TRANSFER, digits) if digits else None
    return CallerCommand(_PLAIN[key])
