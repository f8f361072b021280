"""ESC/POS printer status: real-time replies (DLE EOT n) and automatic status back (GS a).

Sans-I/O, in the manner of h11: the driver sends :func:`status_request` bytes and tells
the parser what it asked (:meth:`StatusParser.expect`), feeds whatever the printer sends
back (:meth:`StatusParser.feed`) and gets typed events. A DLE EOT reply is one byte that
does not say which question it answers, so replies are matched to questions in order.
Automatic status back (ASB) arrives unasked, as four bytes, on the same line; the two are
told apart by the fixed bits of their first byte:

- DLE EOT reply: ``0xx1xx10`` (bits 1 and 4 set, bits 0 and 7 clear);
- ASB first byte: ``0xx1xx00`` (bit 4 set, bits 0, 1 and 7 clear), then three bytes
  ``0xx0xxxx`` (bits 4 and 7 clear).

Anything else (XON/XOFF on a serial line, line noise, a reply to a command we do not
track) is reported as :class:`Unrecognised` and skipped: the parser never raises on
what the printer sends and resynchronises on the next byte.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque

DLE = 0x10
EOT = 0x04
GS = 0x1D

# At most this many questions may wait for their answers: a driver asks four at a time;
# more means replies are being lost and the matching can no longer be trusted.
MAX_OUTSTANDING = 8


class StatusRequest(enum.IntEnum):
    """The ``n`` of DLE EOT n."""

    PRINTER = 1
    OFFLINE_CAUSE = 2
    ERROR_CAUSE = 3
    PAPER = 4


def status_request(n: StatusRequest) -> bytes:
    """``DLE EOT n``: the printer answers one byte at once, even while offline."""
    return bytes((DLE, EOT, int(n)))


def enable_automatic_status(
    *, online: bool = True, error: bool = True, paper: bool = True
) -> bytes:
    """``GS a n``: ask the printer to send 4 status bytes on every change."""
    n = (0x02 if online else 0) | (0x04 if error else 0) | (0x08 if paper else 0)
    return bytes((GS, ord("a"), n))


def is_realtime_reply(byte: int) -> bool:
    return byte & 0x93 == 0x12


def is_asb_header(byte: int) -> bool:
    return byte & 0x93 == 0x10


def _is_asb_body(byte: int) -> bool:
    return byte & 0x90 == 0


@dataclasses.dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What the printer said about itself; ``False`` also where it has not said yet."""

    offline: bool = False
    cover_open: bool = False
    paper_near_end: bool = False
    paper_out: bool = False
    cutter_error: bool = False
    unrecoverable_error: bool = False
    recoverable_error: bool = False
    auto_recoverable_error: bool = False
    error: bool = False  # "an error occurred" without a known cause
    feed_button: bool = False
    drawer_open: bool = False

    @property
    def can_print(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the printer cannot print, most useful first, as stable codes."""
        causes = (
            ("paper_out", self.paper_out),
            ("cover_open", self.cover_open),
            ("cutter_error", self.cutter_error),
            ("unrecoverable_error", self.unrecoverable_error),
            ("recoverable_error", self.recoverable_error),
            ("auto_recoverable_error", self.auto_recoverable_error),
            ("error", self.error),
        )
        found = tuple(code for code, on in causes if on)
        if self.offline and not found:
            return ("offline",)
        return found

    @property
    def warnings(self) -> tuple[str, ...]:
        """Conditions that still allow printing but need a person soon."""
        return ("paper_near_end",) if self.paper_near_end and not self.paper_out else ()


# -- events ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RealTimeReply:
    """The answer to ``DLE EOT request``."""

    request: StatusRequest
    value: int


@dataclasses.dataclass(frozen=True, slots=True)
class AutomaticStatus:
    """Four bytes of automatic status back (GS a), a complete picture."""

    value: bytes

    def status(self) -> PrinterStatus:
        first, second, third, _ = self.value
        return PrinterStatus(
            drawer_open=bool(first & 0x04),
            offline=bool(first & 0x08),
            cover_open=bool(first & 0x20),
            feed_button=bool(first & 0x40),
            recoverable_error=bool(second & 0x04),
            cutter_error=bool(second & 0x08),
            unrecoverable_error=bool(second & 0x20),
            auto_recoverable_error=bool(second & 0x40),
            paper_near_end=bool(third & 0x03),
            paper_out=bool(third & 0x0C),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Unrecognised:
    """A byte that is no status we asked for or expect; skipped."""

    value: int
    why: str


StatusEvent = RealTimeReply | AutomaticStatus | Unrecognised


def apply_reply(status: PrinterStatus, reply: RealTimeReply) -> PrinterStatus:
    """The status with the fields that ``reply`` answers replaced by its bits."""
    v = reply.value
    match reply.request:
        case StatusRequest.PRINTER:
            return dataclasses.replace(
                status,
                drawer_open=bool(v & 0x04),
                offline=bool(v & 0x08),
                feed_button=bool(v & 0x40),
            )
        case StatusRequest.OFFLINE_CAUSE:
            return dataclasses.replace(
                status,
                cover_open=bool(v & 0x04),
                # bit 5 "stopped by paper end" is repeated by n=4, which says more.
                error=bool(v & 0x40),
            )
        case StatusRequest.ERROR_CAUSE:
            return dataclasses.replace(
                status,
                recoverable_error=bool(v & 0x04),
                cutter_error=bool(v & 0x08),
                unrecoverable_error=bool(v & 0x20),
                auto_recoverable_error=bool(v & 0x40),
                # once a cause is known the generic "error occurred" flag adds nothing
                error=status.error and not v & 0x6C,
            )
        case StatusRequest.PAPER:
            return dataclasses.replace(
                status,
                paper_near_end=v & 0x0C == 0x0C,
                paper_out=v & 0x60 == 0x60,
            )


class StatusParser:
    """Incremental parser of what a printer sends back. Never raises on input."""

    def __init__(self) -> None:
        self._expected: deque[StatusRequest] = deque()
        self._asb = bytearray()

    @property
    def outstanding(self) -> int:
        return len(self._expected)

    def expect(self, request: StatusRequest) -> None:
        """The driver has just sent ``status_request(request)``."""
        if len(self._expected) >= MAX_OUTSTANDING:
            raise OverflowError(
                f"{MAX_OUTSTANDING} status questions are unanswered; call forget() first"
            )
        self._expected.append(request)

    def forget(self) -> None:
        """Drop unanswered questions (after a timeout or a reconnect): a late answer
        would otherwise be taken for the answer to the next question."""
        self._expected.clear()
        self._asb.clear()

    def feed(self, data: bytes) -> list[StatusEvent]:
        events: list[StatusEvent] = []
        for byte in data:
            if self._asb:
                if _is_asb_body(byte):
                    self._asb.append(byte)
                    if len(self._asb) == 4:
                        events.append(AutomaticStatus(bytes(self._asb)))
                        self._asb.clear()
                    continue
                events.extend(Unrecognised(b, "automatic status cut short") for b in self._asb)
                self._asb.clear()
            if is_realtime_reply(byte):
                if self._expected:
                    events.append(RealTimeReply(self._expected.popleft(), byte))
                else:
                    events.append(Unrecognised(byte, "status reply nobody asked for"))
            elif is_asb_header(byte):
                self._asb.append(byte)
            else:
                events.append(Unrecognised(byte, "not a status byte"))
        return events


def describe(code: str) -> str:
    """A sentence for the kiosk screen and the ops person."""
    return _DESCRIPTIONS.get(code, code.replace("_", " "))


_DESCRIPTIONS = {
    "paper_out": "the ticket printer is out of paper (打印机缺纸): load a new roll",
    "paper_near_end": "the ticket printer's paper is nearly used up (纸将尽): have a roll ready",
    "cover_open": "the ticket printer's cover is open (打印机盖未关): close it",
    "cutter_error": (
        "the ticket printer's cutter is jammed (切刀故障): clear it and close the cover"
    ),
    "unrecoverable_error": "the ticket printer reports a fault (打印机故障): switch it off and on",
    "recoverable_error": "the ticket printer reports an error (打印机错误): check it",
    "auto_recoverable_error": "the ticket printer is recovering, e.g. the head is too hot",
    "error": "the ticket printer reports an error (打印机错误): check it",
    "offline": "the ticket printer is offline (打印机离线)",
}
