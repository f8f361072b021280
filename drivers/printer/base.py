"""The ticket printer's interface, its errors and its health, whatever the transport."""

from __future__ import annotations

import abc
import dataclasses

from drivers.errors import DriverError
from protocols.escpos_status import PrinterStatus, describe


class PrinterError(DriverError):
    """Base of the printer driver's errors; the message says what to do."""


class PrinterUnavailable(PrinterError):
    """The printer cannot be reached: unplugged, switched off, wrong address, no answer."""


class PrinterNotReady(PrinterError):
    """The printer answers but cannot print now (paper out, cover open, ...)."""

    def __init__(self, status: PrinterStatus) -> None:
        self.status = status
        super().__init__("; ".join(describe(p) for p in status.problems))


@dataclasses.dataclass(frozen=True, slots=True)
class PrinterHealth:
    """What the driver knows: reachable or not, and the last status the printer gave.

    ``status`` is ``None`` when the transport cannot read status (a ``/dev/usb/lp0``
    file): the printer is then assumed ready while it accepts data.
    """

    connected: bool
    status: PrinterStatus | None = None
    detail: str = ""

    @property
    def can_print(self) -> bool:
        return self.connected and (self.status is None or self.status.can_print)

    @property
    def problems(self) -> tuple[str, ...]:
        if not self.connected:
            return ("unreachable",)
        return () if self.status is None else self.status.problems

    @property
    def warnings(self) -> tuple[str, ...]:
        return () if self.status is None or not self.connected else self.status.warnings

    def reason(self) -> str:
        """Why the printer cannot print (or what needs attention), for people."""
        if not self.connected:
            return f"the ticket printer cannot be reached (打印机未连接): {self.detail}"
        codes = self.problems or self.warnings
        return "; ".join(describe(c) for c in codes)


class Printer(abc.ABC):
    """One ESC/POS printer on one transport. Methods run the blocking I/O off the loop.

    Every call reconnects when the connection was lost, so a printer unplugged and
    plugged back in (or a network printer restarted) works again without a restart.
    """

    #: Whether the transport can read the printer's status (a device file cannot).
    reads_status: bool = True

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the printer is, for people (``network 192.168.1.50:9100``)."""

    @abc.abstractmethod
    async def status(self) -> PrinterStatus | None:
        """Ask the printer for its real-time status; ``None`` when it cannot tell.

        Raises :class:`PrinterUnavailable` when it cannot be reached or does not answer.
        """

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Send a print job's bytes. Raises :class:`PrinterUnavailable`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection and the worker thread."""
