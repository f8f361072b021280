"""LED strips over RS-485 (or a serial-to-TCP adapter): one bus, many strips by address.

:class:`LedBus` owns one connection (a serial port through pyserial-asyncio-fast, or a
TCP socket) shared by every strip on it, sends one frame at a time and, for protocols
whose strips answer, waits for the answer. It reconnects on the next frame after a
failure and reports its health through a callback. The frame bytes come from a
:class:`protocols.led.LedCodec`; a test passes its own :class:`LinkOpener` to run
without hardware.
"""

from drivers.led.bus import (
    BusHealth,
    LedBus,
    LedError,
    LedRefused,
    LedUnavailable,
    SerialLinkTarget,
    TcpLinkTarget,
    open_link,
)
from drivers.line import LinkOpener

__all__ = [
    "BusHealth",
    "LedBus",
    "LedError",
    "LedRefused",
    "LedUnavailable",
    "LinkOpener",
    "SerialLinkTarget",
    "TcpLinkTarget",
    "open_link",
]
