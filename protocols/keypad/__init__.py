"""Caller and rater keypad bus protocols (RS-485), one module per vendor.

A protocol is chosen by name in the config (``protocol: ff68``); adding another vendor's
keypads is one module implementing :class:`KeypadProtocol` and one line in
:data:`PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.keypad.base import (
    Beep,
    CallerAction,
    CallerCommand,
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
    interpret,
)
from protocols.keypad.ff68 import Ff68Protocol

PROTOCOLS: dict[str, Callable[[], KeypadProtocol]] = {
    "ff68": Ff68Protocol,
}


def keypad_protocol(name: str) -> KeypadProtocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        known = ", ".join(sorted(PROTOCOLS))
        raise KeypadError(f"unknown keypad protocol {name!r}; known: {known}") from None


__all__ = [
    "PROTOCOLS",
    "Beep",
    "CallerAction",
    "CallerCommand",
    "CallerKey",
    "CallerPress",
    "DeviceInput",
    "Frame",
    "FrameParser",
    "HostCommand",
    "KeypadError",
    "KeypadProtocol",
    "RaterPress",
    "ShowNumber",
    "Skipped",
    "StartRating",
    "UnknownCommand",
    "UnknownInput",
    "interpret",
    "keypad_protocol",
]
