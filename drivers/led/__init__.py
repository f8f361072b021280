"""LED strips over RS-485 (or a serial-to-TCP adapter): one bus, many strips by address.

:class:`LedBus` owns one connection (a serial port through pyserial-asyncio-fast, or a
TCP socket) shared by every strip on it, sends one frame at a time and, for protocols
whose strips answer, waits for the answer. It reconnects on the next frame after a
failure and reports its health through a callback. The frame bytes come from a
:class:`protocols.led.LedCodec`; the line is opened by the opener it is given
(:func:`drivers.transport.open_line`, or a test's own to run without hardware).
"""

from drivers.led.bus import (
    BusHealth,
    LedBus,
    LedError,
    LedRefused,
    LedUnavailable,
)

__all__ = [
    "BusHealth",
    "LedBus",
    "LedError",
    "LedRefused",
    "LedUnavailable",
]
