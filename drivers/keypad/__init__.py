"""Window callers and raters as keypads: on the RS-485 keypad bus, or as evdev devices.

:class:`KeypadBus` owns one bus connection (a serial port through pyserial-asyncio-fast,
or a TCP socket) shared by every keypad on it; the frames come from a
:class:`protocols.keypad.KeypadProtocol`. :class:`EvdevKeys` reads one input device.
Both reconnect by themselves and report health through a callback; tests pass their
own opener to run without hardware.
"""

from drivers.keypad.bus import (
    BusCounters,
    BusHealth,
    KeypadBus,
    KeypadDriverError,
    KeypadUnavailable,
)
from drivers.keypad.evdev_keys import DeviceOpener, EvdevKeys, InputDeviceLike, evdev_opener

__all__ = [
    "BusCounters",
    "BusHealth",
    "DeviceOpener",
    "EvdevKeys",
    "InputDeviceLike",
    "KeypadBus",
    "KeypadDriverError",
    "KeypadUnavailable",
    "evdev_opener",
]
