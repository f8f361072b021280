"""Where a driver reaches its device over a byte line, and the opening of that line.

:class:`SerialTarget` (a serial port: RS-232, or RS-485 through a USB adapter) and
:class:`TcpTarget` (a TCP socket: a network printer, a serial-to-TCP adapter) are the
serial and TCP targets of every driver; the agent makes them from the configured
transport. :func:`open_line` opens one as asyncio streams (pyserial-asyncio-fast for a
serial port) for the drivers that speak over streams: keypad buses, LED buses, ID card
readers. The ticket printer opens the same targets through python-escpos on its worker
thread. The drivers that read in a background task stop it with :func:`stop_task`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

from drivers.errors import DriverError

#: How long a TCP endpoint has to accept a connection, unless the target says otherwise.
CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class SerialTarget:
    port: str  # a device path or a pyserial URL (socket://host:port)
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    #: Read and write timeout of a blocking transport (the ticket printer's); the asyncio
    #: line of :func:`open_line` does not wait on it.
    timeout_s: float = 5.0

    @property
    def framing(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits:g}"

    @property
    def endpoint(self) -> str:
        return f"serial {self.port} ({self.framing})"


@dataclasses.dataclass(frozen=True, slots=True)
class TcpTarget:
    host: str
    port: int
    timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def endpoint(self) -> str:
        return f"tcp {self.host}:{self.port}"


LineTarget = SerialTarget | TcpTarget
Link = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: Opens a driver's line; raises :class:`LineUnavailable` (a test passes its own).
LinkOpener = Callable[[], Awaitable[Link]]


class LineUnavailable(DriverError):
    """The serial port or TCP endpoint cannot be opened; the message says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        #: The cause alone (the system's words), for a driver that words its own message.
        self.reason = reason


async def open_line(target: LineTarget) -> Link:
    """Open the line; raises :class:`LineUnavailable` with the cause."""
    try:
        if isinstance(target, TcpTarget):
            async with asyncio.timeout(target.timeout_s):
                return await asyncio.open_connection(target.host, target.port)
        import serial_asyncio_fast

        link: Link = await serial_asyncio_fast.open_serial_connection(
            url=target.port,
            baudrate=target.baudrate,
            bytesize=target.bytesize,
            parity=target.parity,
            stopbits=target.stopbits,
        )
    except TimeoutError as err:
        raise LineUnavailable(
            f"{target.endpoint} did not accept a connection", str(err) or type(err).__name__
        ) from err
    except (OSError, ValueError) as err:  # pyserial's SerialException is an OSError
        reason = str(err) or type(err).__name__
        raise LineUnavailable(f"{target.endpoint} cannot be opened: {err}", reason) from err
    return link


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a driver's background task and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
