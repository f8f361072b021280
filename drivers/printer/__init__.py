"""Ticket printers: the :class:`Printer` interface, its transports and the print queue.

``open_printer(target)`` picks the implementation from the target's type; a test or a
tool can pass any :class:`Printer` of its own to :class:`PrintQueue` instead.
"""

from drivers.printer.base import (
    Printer,
    PrinterError,
    PrinterHealth,
    PrinterNotReady,
    PrinterUnavailable,
)
from drivers.printer.escpos_backend import (
    EscposPrinter,
    FileTarget,
    PrinterTarget,
    UsbTarget,
)
from drivers.printer.queue import PrintJob, PrintQueue, PrintResult


def open_printer(target: PrinterTarget) -> Printer:
    """The printer for a transport (no I/O yet: it connects on first use)."""
    return EscposPrinter(target)


__all__ = [
    "EscposPrinter",
    "FileTarget",
    "PrintJob",
    "PrintQueue",
    "PrintResult",
    "Printer",
    "PrinterError",
    "PrinterHealth",
    "PrinterNotReady",
    "PrinterTarget",
    "PrinterUnavailable",
    "UsbTarget",
    "open_printer",
]
