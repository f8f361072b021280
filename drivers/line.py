"""The byte line to a bus of devices: a serial port (RS-485 adapter) or a TCP socket to a
serial-to-TCP adapter. The bus drivers (keypads, LED strips) open their line here and
raise their own "unavailable" error with the cause; the drivers that read in a background
task (keypads, ID card readers) stop it with :func:`stop_task`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

CONNECT_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True, slots=True)
class TcpLineTarget:
    host: str
    port: int
    timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def endpoint(self) -> str:
        return f"tcp {self.host}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True)
class SerialLineTarget:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    @property
    def endpoint(self) -> str:
        return f"serial {self.port} ({self.baudrate} {self.bytesize}{self.parity}{self.stopbits:g})"


LineTarget = TcpLineTarget | SerialLineTarget
Link = tuple[asyncio.StreamReader, asyncio.StreamWriter]
LinkOpener = Callable[[], Awaitable[Link]]


async def open_line(target: LineTarget, unavailable: Callable[[str], Exception]) -> Link:
    """Open the line; raises ``unavailable(message)`` with the cause."""
    try:
        if isinstance(target, TcpLineTarget):
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
        raise unavailable(f"{target.endpoint} did not accept a connection") from err
    except (OSError, ValueError) as err:  # pyserial's SerialException is an OSError
        raise unavailable(f"{target.endpoint} cannot be opened: {err}") from err
    return link


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a driver's background task and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
