"""A QR/barcode scanner in keyboard-wedge mode: Linux key events in, scanned codes out.

The scanner "types" each code as a US keyboard would, then a terminator key (Enter, or
Tab). Sans-I/O: :meth:`WedgeDecoder.feed` takes key events (the kernel's key codes and
values — 1 down, 0 up, 2 auto-repeat) from however many reads they arrive in and returns
the codes completed by them. Shift (either side) and Caps Lock are followed, so
``HALL-APPT:social:X1`` comes out as typed. A code longer than :data:`MAX_CODE` is
dropped whole (a stuck key or a keyboard mistaken for a scanner), reported as
:class:`Overflow`.

Key codes are the kernel's (``linux/input-event-codes.h``), held here as a table so this
module needs no evdev.
"""

from __future__ import annotations

import dataclasses

EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2

KEY_TAB = 15
KEY_ENTER = 28
KEY_LEFTSHIFT = 42
KEY_RIGHTSHIFT = 54
KEY_CAPSLOCK = 58
KEY_KPENTER = 96
TERMINATORS = {"KEY_ENTER": KEY_ENTER, "KEY_TAB": KEY_TAB}

# An appointment or ID QR code is well under this; more is not a scan.
MAX_CODE = 512

# code -> (unshifted, shifted); letters are handled with Caps Lock below.
_KEYS: dict[int, tuple[str, str]] = {
    2: ("1", "!"),
    3: ("2", "@"),
    4: ("3", "#"),
    5: ("4", "$"),
    6: ("5", "%"),
    7: ("6", "^"),
    8: ("7", "&"),
    9: ("8", "*"),
    10: ("9", "("),
    11: ("0", ")"),
    12: ("-", "_"),
    13: ("=", "+"),
    26: ("[", "{"),
    27: ("]", "}"),
    39: (";", ":"),
    40: ("'", '"'),
    41: ("`", "~"),
    43: ("\\", "|"),
    51: (",", "<"),
    52: (".", ">"),
    53: ("/", "?"),
    57: (" ", " "),
    # the numeric keypad (a scanner set to send keypad digits)
    55: ("*", "*"),
    71: ("7", "7"),
    72: ("8", "8"),
    73: ("9", "9"),
    74: ("-", "-"),
    75: ("4", "4"),
    76: ("5", "5"),
    77: ("6", "6"),
    78: ("+", "+"),
    79: ("1", "1"),
    80: ("2", "2"),
    81: ("3", "3"),
    82: ("0", "0"),
    83: (".", "."),
    98: ("/", "/"),
}
_LETTER_ROWS = ((16, "qwertyuiop"), (30, "asdfghjkl"), (44, "zxcvbnm"))
_LETTERS: dict[int, str] = {
    first + i: letter for first, row in _LETTER_ROWS for i, letter in enumerate(row)
}


@dataclasses.dataclass(frozen=True, slots=True)
class KeyEvent:
    """One key event as the kernel reports it (type EV_KEY)."""

    code: int
    value: int


@dataclasses.dataclass(frozen=True, slots=True)
class Scanned:
    code: str


@dataclasses.dataclass(frozen=True, slots=True)
class Overflow:
    """More than :data:`MAX_CODE` characters without a terminator: dropped."""

    length: int


WedgeEvent = Scanned | Overflow


def character(code: int, shift: bool, caps: bool) -> str | None:
    """The character a US keyboard types for a key, or None for keys that type none."""
    letter = _LETTERS.get(code)
    if letter is not None:
        return letter.upper() if shift != caps else letter
    pair = _KEYS.get(code)
    if pair is None:
        return None
    return pair[1] if shift else pair[0]


class WedgeDecoder:
    """Key events → scanned codes, one code per terminator key."""

    def __init__(self, terminator: int = KEY_ENTER) -> None:
        self.terminator = terminator
        self._shift: set[int] = set()
        self._caps = False
        self._chars: list[str] = []
        self._overflowed = 0
        self.ignored = 0  # keys that type nothing (Ctrl, F-keys ...)

    @property
    def pending(self) -> str:
        """The characters of a code not terminated yet."""
        return "".join(self._chars)

    def reset(self) -> None:
        """Forget a partial code (the driver calls this after a long silence mid-code)."""
        self._chars.clear()
        self._overflowed = 0

    def feed(self, events: list[KeyEvent] | tuple[KeyEvent, ...]) -> list[WedgeEvent]:
        out: list[WedgeEvent] = []
        for event in events:
            result = self._key(event)
            if result is not None:
                out.append(result)
        return out

    def _key(self, event: KeyEvent) -> WedgeEvent | None:
        code, value = event.code, event.value
        if code in (KEY_LEFTSHIFT, KEY_RIGHTSHIFT):
            if value == KEY_UP:
                self._shift.discard(code)
            else:
                self._shift.add(code)
            return None
        if value == KEY_UP:
            return None
        if code == KEY_CAPSLOCK:
            if value == KEY_DOWN:
                self._caps = not self._caps
            return None
        terminators = (
            (self.terminator, KEY_KPENTER) if self.terminator == KEY_ENTER else (self.terminator,)
        )
        if code in terminators:
            if self._overflowed:
                length = self._overflowed
                self.reset()
                return Overflow(length)
            text = "".join(self._chars)
            self._chars.clear()
            return Scanned(text) if text else None
        ch = character(code, bool(self._shift), self._caps)
        if ch is None:
            self.ignored += 1
            return None
        if self._overflowed or len(self._chars) >= MAX_CODE:
            self._overflowed = max(self._overflowed, len(self._chars)) + 1
            self._chars.clear()
            return None
        self._chars.append(ch)
        return None


def key_events_for(text: str, terminator: int = KEY_ENTER) -> list[KeyEvent]:
    """The key events a wedge scanner sends for ``text`` (tests and the emulated scanner)."""
    reverse: dict[str, tuple[int, bool]] = {}
    for code, (plain, shifted) in _KEYS.items():
        if code in (55, 74, 78, 83, 98) or 71 <= code <= 82:
            continue  # keypad keys: the main row is what scanners send
        reverse.setdefault(plain, (code, False))
        reverse.setdefault(shifted, (code, True))
    for code, letter in _LETTERS.items():
        reverse[letter] = (code, False)
        reverse[letter.upper()] = (code, True)
    events: list[KeyEvent] = []
    for ch in text:
        if ch not in reverse:
            raise ValueError(f"a US keyboard cannot type {ch!r}")
        code, shift = reverse[ch]
        if shift:
            events.append(KeyEvent(KEY_LEFTSHIFT, KEY_DOWN))
        events += [KeyEvent(code, KEY_DOWN), KeyEvent(code, KEY_UP)]
        if shift:
            events.append(KeyEvent(KEY_LEFTSHIFT, KEY_UP))
    events += [KeyEvent(terminator, KEY_DOWN), KeyEvent(terminator, KEY_UP)]
    return events
