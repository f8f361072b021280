"""The public keypad bus frame used by existing hall callers and raters (RS-485, 9600 8N1).

::

    FF 68 L L 68 ADDR FUNC DATA… CS 16
    L  = 2 + len(DATA)              (sent twice)
    CS = (ADDR + FUNC + ΣDATA) mod 256

``FF`` is a wake-up preamble (several may precede a frame, none is needed to find one);
``68 L L 68`` is the synchronisation pattern. The host acknowledges every device frame
by echoing it; a rater's key (FUNC 0x11) is echoed with FUNC 0x01, so its checksum is
0x10 less.

Device → host:

- FUNC 0x01, a caller's key: DATA = the digits typed before it (one byte 0-9 each),
  then the key code: 0C next, 0D recall, 0B rating request, 0F confirm, 12 pause,
  13 transfer;
- FUNC 0x11, a rater's key: DATA[0] = the key's index (0-3 on a 4-key unit, 0-4 on 5).

Host → device: FUNC 0x02 + six digits shows a number (0x0A blank); FUNC 0x03 beeps;
FUNC 0x01 with DATA 0x0B starts a rating (sent to the rater's address).
"""

from __future__ import annotations

from protocols.keypad.base import (
    Beep,
    CallerKey,
    CallerPress,
    DeviceInput,
    Frame,
    FrameParser,
    HostCommand,
    KeypadError,
    KeypadProtocol,
    RaterPress,
    ShowNumber,
    Skipped,
    StartRating,
    UnknownCommand,
    UnknownInput,
)

PREAMBLE = 0xFF
START = 0x68
END = 0x16

FUNC_KEY = 0x01
FUNC_DISPLAY = 0x02
FUNC_BEEP = 0x03
FUNC_RATER_KEY = 0x11

BLANK = 0x0A
DISPLAY_DIGITS = 6

# A keypad's frame carries a key and a few digits. A garbled length byte must not make
# the parser wait for (and swallow) up to 253 bytes of real frames behind it.
MAX_DATA = 32
_MAX_L = 2 + MAX_DATA
# Noise is reported in pieces of at most this many bytes (a line full of noise must not
# grow a buffer without end).
MAX_JUNK = 256
_HEADER = 4  # 68 L L 68
_TRAILER = 2  # CS 16

KEY_CODES: dict[int, CallerKey] = {
    0x0B: CallerKey.RATE,
    0x0C: CallerKey.NEXT,
    0x0D: CallerKey.RECALL,
    0x0F: CallerKey.CONFIRM,
    0x12: CallerKey.PAUSE,
    0x13: CallerKey.TRANSFER,
}
_CODE_OF = {key: code for code, key in KEY_CODES.items()}
_START_RATING = 0x0B


def checksum(address: int, function: int, data: bytes) -> int:
    return (address + function + sum(data)) & 0xFF


def _check_frame(frame: Frame) -> None:
    if not 0 <= frame.address <= 0xFF:
        raise KeypadError(f"bus address {frame.address} is not a byte (0-255)")
    if not 0 <= frame.function <= 0xFF:
        raise KeypadError(f"function {frame.function} is not a byte (0-255)")
    if len(frame.data) > MAX_DATA:
        raise KeypadError(
            f"{len(frame.data)} data bytes; a keypad frame carries at most {MAX_DATA}"
        )


class Ff68Parser(FrameParser):
    """Finds ``68 L L 68 … CS 16`` frames in a byte stream and resynchronises after junk."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._junk = bytearray()
        self._out: list[Frame | Skipped] = []

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Skipped]:
        self._buf += data
        return self._scan(final=False)

    def idle(self) -> list[Frame | Skipped]:
        out = self._scan(final=True)
        self._flush_junk(out)
        return out

    def _drop(self, count: int) -> None:
        """Bytes that are no frame: preamble bytes are expected, others are junk."""
        self._junk += bytes(b for b in self._buf[:count] if b != PREAMBLE)
        del self._buf[:count]
        while len(self._junk) >= MAX_JUNK:
            self._out.append(Skipped(bytes(self._junk[:MAX_JUNK]), "noise between frames"))
            del self._junk[:MAX_JUNK]

    def _flush_junk(self, out: list[Frame | Skipped], reason: str = "noise between frames") -> None:
        if self._junk:
            out.append(Skipped(bytes(self._junk), reason))
            self._junk.clear()

    def _scan(self, *, final: bool) -> list[Frame | Skipped]:
        out = self._out = []
        buf = self._buf
        while buf:
            start = buf.find(START)
            if start < 0:
                self._drop(len(buf))
                break
            self._drop(start)
            if len(buf) < _HEADER:
                if final:
                    self._drop(1)
                    continue
                break
            length = buf[1]
            if buf[2] != length or buf[3] != START or not 2 <= length <= _MAX_L:
                self._drop(1)  # not a header: look for the next 68
                continue
            total = _HEADER + length + _TRAILER
            if len(buf) < total:
                if final:  # it will never complete: its 68 was not a frame's
                    self._drop(1)
                    continue
                break
            address, function = buf[4], buf[5]
            data = bytes(buf[6 : 4 + length])
            cs, end = buf[4 + length], buf[5 + length]
            if end != END or cs != checksum(address, function, data):
                self._flush_junk(out)
                why = "bad end byte" if end != END else "bad checksum"
                out.append(Skipped(bytes(buf[:total]), f"{why} in a frame for address {address}"))
                # Only its first byte is certainly junk: a real frame may start inside it.
                del buf[:1]
                continue
            self._flush_junk(out)
            out.append(Frame(address, function, data))
            del buf[:total]
        return out


class Ff68Protocol(KeypadProtocol):
    name = "ff68"
    baudrate = 9600

    def parser(self) -> FrameParser:
        return Ff68Parser()

    def encode(self, frame: Frame) -> bytes:
        _check_frame(frame)
        length = 2 + len(frame.data)
        cs = checksum(frame.address, frame.function, frame.data)
        return bytes(
            (PREAMBLE, START, length, length, START, frame.address, frame.function, *frame.data)
        ) + bytes((cs, END))

    # -- host side ------------------------------------------------------------------------

    def decode_device(self, frame: Frame) -> DeviceInput:
        data = frame.data
        if frame.function == FUNC_RATER_KEY and len(data) >= 1:
            return RaterPress(frame.address, data[0])
        if frame.function == FUNC_KEY and data:
            key = KEY_CODES.get(data[-1])
            digits = data[:-1]
            if key is not None and all(d <= 9 for d in digits):
                return CallerPress(frame.address, key, "".join(str(d) for d in digits))
        return UnknownInput(frame.address, frame)

    def acknowledgement(self, frame: Frame) -> Frame:
        if frame.function == FUNC_RATER_KEY:
            return Frame(frame.address, FUNC_KEY, frame.data)
        return frame

    def show_number(self, address: int, text: str) -> Frame:
        shown = text[-DISPLAY_DIGITS:].rjust(DISPLAY_DIGITS)
        if any(ch != " " and not ch.isdigit() for ch in shown) or not shown.isascii():
            raise KeypadError(f"a caller's display shows digits and blanks, not {text!r}")
        data = bytes(BLANK if ch == " " else int(ch) for ch in shown)
        return Frame(address, FUNC_DISPLAY, data)

    def beep(self, address: int) -> Frame:
        return Frame(address, FUNC_BEEP)

    def start_rating(self, address: int) -> Frame:
        return Frame(address, FUNC_KEY, bytes((_START_RATING,)))

    # -- device side ----------------------------------------------------------------------

    def caller_frame(self, press: CallerPress) -> Frame:
        code = _CODE_OF.get(press.key)
        if code is None:
            raise KeypadError(f"an ff68 caller has no {press.key.value} key")
        if press.digits and not (press.digits.isascii() and press.digits.isdigit()):
            raise KeypadError(f"digits only before a key, not {press.digits!r}")
        return Frame(press.address, FUNC_KEY, bytes((*(int(d) for d in press.digits), code)))

    def rater_frame(self, press: RaterPress) -> Frame:
        if not 0 <= press.key <= 0xFF:
            raise KeypadError(f"rater key {press.key} is not a byte")
        return Frame(press.address, FUNC_RATER_KEY, bytes((press.key,)))

    def decode_host(self, frame: Frame) -> HostCommand:
        data = frame.data
        shows = len(data) == DISPLAY_DIGITS and all(d <= 9 or d == BLANK for d in data)
        if frame.function == FUNC_DISPLAY and shows:
            text = "".join(" " if d == BLANK else str(d) for d in data)
            return ShowNumber(frame.address, text)
        if frame.function == FUNC_BEEP:
            return Beep(frame.address)
        if frame.function == FUNC_KEY and data == bytes((_START_RATING,)):
            return StartRating(frame.address)
        return UnknownCommand(frame)
