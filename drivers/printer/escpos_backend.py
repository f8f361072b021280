"""ESC/POS printers over network, serial, USB and device files.

The transports are blocking, so every call runs on the printer's own worker thread,
never on the event loop. A link opens the connection (finding a USB printer by vendor and
product id and detaching the kernel's usblp driver, as python-escpos does), writes and
reads; the status questions and their parsing are ours (:mod:`protocols.escpos_status`),
because python-escpos's ``paper_status()`` reports "paper adequate" when the printer does
not answer at all.

The links are written here on the socket, pyserial and pyusb directly rather than on
python-escpos's printer classes: importing those (``escpos.printer``) loads every printer
kind python-escpos has, its capabilities database, python-barcode and more (~6-7 MB of
memory for the life of the process); pyserial and pyusb are imported at the first open
of a printer of that kind. python-escpos is still the ticket's command encoder
(:mod:`protocols.escpos`), imported at the first ticket.

The four transports differ only in how they are opened, written and read; those
differences are the small :class:`Link` classes below.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from drivers.printer.base import Printer, PrinterUnavailable
from drivers.transport import SerialTarget, TcpTarget
from protocols.escpos_status import (
    PrinterStatus,
    RealTimeReply,
    StatusParser,
    StatusRequest,
    apply_reply,
    status_request,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long the printer has to answer the status questions. Real printers answer DLE EOT
# within a few ms, even while offline or out of paper.
STATUS_TIMEOUT_S = 1.0
_ROUTINE = (StatusRequest.PRINTER, StatusRequest.OFFLINE_CAUSE, StatusRequest.PAPER)


@dataclasses.dataclass(frozen=True, slots=True)
class UsbTarget:
    vendor_id: int
    product_id: int
    serial: str | None = None
    in_ep: int = 0x82
    out_ep: int = 0x01
    timeout_s: float = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class FileTarget:
    path: Path


# The serial and TCP targets are every driver's (drivers.transport); USB and device files
# are the printer's own.
PrinterTarget = TcpTarget | SerialTarget | UsbTarget | FileTarget


class Link(abc.ABC):
    """A blocking connection to the printer, used only on the printer's worker thread."""

    reads: bool = True

    def __init__(self) -> None:
        self.device: Any = None  # the open socket, serial port, file or USB device

    @property
    @abc.abstractmethod
    def endpoint(self) -> str: ...

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (``self.device`` is then set); raises :class:`PrinterUnavailable`."""

    def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            with contextlib.suppress(Exception):  # a half-dead connection may fail to close
                self._close(device)

    def _close(self, device: Any) -> None:
        device.close()

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def read(self, timeout: float) -> bytes:
        """What the printer sent within ``timeout`` s (``b""`` if nothing); raises
        ``ConnectionError`` when the connection is gone."""


class _NetworkLink(Link):
    def __init__(self, target: TcpTarget) -> None:
        super().__init__()
        self.target = target

    @property
    def endpoint(self) -> str:
        return f"network printer {self.target.host}:{self.target.port}"

    def open(self) -> None:
        try:
            sock = socket.create_connection(
                (self.target.host, self.target.port), timeout=self.target.timeout_s
            )
        except OSError as err:
            raise PrinterUnavailable(f"cannot connect to {self.endpoint}: {err}") from err
        # Status questions are 3-byte writes right after a job: with Nagle's algorithm they
        # wait for the job's ACK, which the printer's stack may delay by 40 ms or more.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.device = sock

    def _close(self, device: Any) -> None:
        with contextlib.suppress(OSError):
            device.shutdown(socket.SHUT_RDWR)
        device.close()

    def write(self, data: bytes) -> None:
        self.device.sendall(data)

    def read(self, timeout: float) -> bytes:
        sock = self.device
        sock.settimeout(timeout)
        try:
            data: bytes = sock.recv(64)
        except TimeoutError:
            return b""
        finally:
            sock.settimeout(self.target.timeout_s)
        if not data:
            raise ConnectionError("the printer closed the connection")
        return data


class _SerialLink(Link):
    def __init__(self, target: SerialTarget) -> None:
        super().__init__()
        self.target = target

    @property
    def endpoint(self) -> str:
        return f"serial printer {self.target.port}"

    def open(self) -> None:
        import serial  # type: ignore[import-untyped]  # pyserial, at the first open

        try:
            port = serial.Serial(
                port=self.target.port,
                baudrate=self.target.baudrate,
                bytesize=self.target.bytesize,
                parity=self.target.parity,
                stopbits=self.target.stopbits,
                timeout=self.target.timeout_s,
                # No write timeout would let a printer holding the line with flow control
                # block the worker thread for ever.
                write_timeout=self.target.timeout_s,
                xonxoff=False,
                dsrdtr=False,
            )
        except (ValueError, OSError) as err:  # serial.SerialException is an OSError
            raise PrinterUnavailable(f"cannot open {self.endpoint}: {_first_line(err)}") from err
        self.device = port

    def _close(self, device: Any) -> None:
        if device.is_open:
            device.flush()
            device.close()

    def write(self, data: bytes) -> None:
        self.device.write(data)

    def read(self, timeout: float) -> bytes:
        port = self.device
        port.timeout = timeout
        # read(n) waits for all n bytes or the timeout: ask only for what is there, or 1.
        data: bytes = port.read(max(1, port.in_waiting))
        return data


class _UsbLink(Link):
    def __init__(self, target: UsbTarget) -> None:
        super().__init__()
        self.target = target

    @property
    def endpoint(self) -> str:
        serial = f" serial {self.target.serial}" if self.target.serial else ""
        return f"USB printer {self.target.vendor_id:04x}:{self.target.product_id:04x}{serial}"

    def open(self) -> None:
        import usb.core  # type: ignore[import-untyped]  # pyusb, at the first open

        query: dict[str, Any] = {
            "idVendor": self.target.vendor_id,
            "idProduct": self.target.product_id,
        }
        if self.target.serial:
            query["serial_number"] = self.target.serial
        try:
            device = usb.core.find(**query)
        except (usb.core.USBError, ValueError) as err:  # ValueError: no libusb backend
            raise PrinterUnavailable(f"cannot open {self.endpoint}: {_first_line(err)}") from err
        if device is None:
            raise PrinterUnavailable(
                f"cannot open {self.endpoint}: not found or cable not plugged in"
            )
        _detach_kernel_driver(device)
        try:
            device.set_configuration()
            device.reset()
        except usb.core.USBError as err:  # as python-escpos: logged, the write will tell
            log.debug("%s: could not set the USB configuration: %s", self.endpoint, err)
        self.device = device

    def _close(self, device: Any) -> None:
        import usb.util  # type: ignore[import-untyped]

        usb.util.dispose_resources(device)

    def write(self, data: bytes) -> None:
        self.device.write(self.target.out_ep, data, int(self.target.timeout_s * 1000))

    def read(self, timeout: float) -> bytes:
        import usb.core

        try:
            data = self.device.read(self.target.in_ep, 64, max(1, int(timeout * 1000)))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as err:
            raise ConnectionError(str(err)) from err
        return bytes(data)


def _detach_kernel_driver(device: Any) -> None:
    """Take interface 0 from the kernel's usblp driver (only libusb1 can: elsewhere the
    printer is used as it is)."""
    import usb.core

    if not device.backend.__module__.endswith("libusb1"):
        return
    active: bool | None = None
    with contextlib.suppress(NotImplementedError):
        active = device.is_kernel_driver_active(0)
    if active is None or active:
        try:
            device.detach_kernel_driver(0)
        except NotImplementedError:
            pass
        except usb.core.USBError as err:
            if active is not None:
                log.debug("could not detach the kernel driver from the printer: %s", err)


class _FileLink(Link):
    reads = False

    def __init__(self, target: FileTarget) -> None:
        super().__init__()
        self.target = target

    @property
    def endpoint(self) -> str:
        return f"printer device file {self.target.path}"

    def open(self) -> None:
        try:
            self.device = self.target.path.open("wb")
        except OSError as err:
            raise PrinterUnavailable(f"cannot open {self.endpoint}: {_first_line(err)}") from err

    def write(self, data: bytes) -> None:
        self.device.write(data)
        self.device.flush()

    def read(self, timeout: float) -> bytes:
        return b""


_LINKS: dict[type[Any], Callable[[Any], Link]] = {
    TcpTarget: _NetworkLink,
    SerialTarget: _SerialLink,
    UsbTarget: _UsbLink,
    FileTarget: _FileLink,
}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(line.strip() for line in text if line.strip()) or type(err).__name__


class EscposPrinter(Printer):
    """A :class:`Printer` over one ESC/POS link, with its worker thread."""

    def __init__(
        self, target: PrinterTarget, *, status_timeout_s: float = STATUS_TIMEOUT_S
    ) -> None:
        self._link = _LINKS[type(target)](target)
        self.reads_status = self._link.reads
        self._status_timeout = status_timeout_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="printer")
        self._parser = StatusParser()

    @property
    def endpoint(self) -> str:
        return self._link.endpoint

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def status(self) -> PrinterStatus | None:
        return await self._run(self._status_blocking)

    async def send(self, data: bytes) -> None:
        await self._run(lambda: self._send_blocking(data))

    async def close(self) -> None:
        await self._run(self._link.close)
        self._thread.shutdown(wait=True)

    # -- on the worker thread ------------------------------------------------------------

    def _connected(self) -> Link:
        if self._link.device is None:
            self._parser.forget()
            self._link.open()
        return self._link

    def _io(self, fn: Callable[[Link], T]) -> T:
        link = self._connected()
        try:
            return fn(link)
        except OSError as err:  # ConnectionError, TimeoutError, serial, socket, USB errors
            link.close()
            raise PrinterUnavailable(f"{link.endpoint}: {_first_line(err)}") from err

    def _send_blocking(self, data: bytes) -> None:
        self._io(lambda link: link.write(data))

    def _status_blocking(self) -> PrinterStatus | None:
        if not self._link.reads:
            self._connected()
            return None
        return self._io(self._ask)

    def _ask(self, link: Link) -> PrinterStatus:
        status = PrinterStatus()
        self._parser.forget()
        questions = list(_ROUTINE)
        for question in questions:
            self._parser.expect(question)
        link.write(b"".join(status_request(q) for q in questions))
        answered = 0
        deadline = time.monotonic() + self._status_timeout
        while answered < len(questions):
            left = deadline - time.monotonic()
            if left <= 0:
                self._parser.forget()
                raise TimeoutError(
                    f"the printer answered {answered} of {len(questions)} status questions "
                    f"within {self._status_timeout:g} s"
                )
            for event in self._parser.feed(link.read(left)):
                if isinstance(event, RealTimeReply):
                    answered += 1
                    status = apply_reply(status, event)
                    if event.request is StatusRequest.OFFLINE_CAUSE and event.value & 0x40:
                        # "an error occurred": ask which one.
                        self._parser.expect(StatusRequest.ERROR_CAUSE)
                        link.write(status_request(StatusRequest.ERROR_CAUSE))
                        questions.append(StatusRequest.ERROR_CAUSE)
        return status
