"""Linux input devices (evdev): USB keypads, GPIO buttons (gpio-key), scanner wedges.

:class:`KeySource` is the interface: an async iterator of key events. :class:`EvdevSource`
opens the device by path or by (part of) its name, grabs it (EVIOCGRAB: the keys no
longer reach the console or a login prompt), and reopens it when it is unplugged and
plugged back in. A test passes its own source (any async iterator of
:class:`protocols.keyboard_wedge.KeyEvent`) instead.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from protocols.keyboard_wedge import EV_KEY, KeyEvent

log = logging.getLogger(__name__)

# How often a missing device is looked for again.
REOPEN_S = 2.0


class InputError(DriverError):
    """The input device cannot be used; the message says what to check."""


def key_code(name: str) -> int:
    """The kernel's code for a key name as evtest prints it (``KEY_F1``, ``BTN_0``)."""
    from evdev import ecodes

    code = ecodes.ecodes.get(name)
    if not isinstance(code, int):
        raise InputError(f"{name} is not a Linux key name (see evtest)")
    return code


class KeySource(abc.ABC):
    """Key events from one device, for as long as it is iterated."""

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Which device, for people."""

    @abc.abstractmethod
    def batches(self) -> AsyncIterator[list[KeyEvent]]:
        """Key events in the batches the device delivered them (one read each)."""


class EvdevSource(KeySource):
    """A real input device through python-evdev."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        name: str | None = None,
        grab: bool = True,
        on_health: Callable[[bool, str], None] | None = None,
    ) -> None:
        if (path is None) == (name is None):
            raise InputError("give the device's path or its name, not both")
        self.path = path
        self.name = name
        self.grab = grab
        self._on_health = on_health

    @property
    def endpoint(self) -> str:
        return f"input device {self.path}" if self.path else f"input device named {self.name!r}"

    def _find(self) -> str:
        import evdev

        if self.path is not None:
            return str(self.path)
        for candidate in evdev.list_devices():
            with contextlib.suppress(OSError):
                device = evdev.InputDevice(candidate)
                found = self.name is not None and self.name.lower() in device.name.lower()
                device.close()
                if found:
                    return str(candidate)
        raise InputError(f"no input device has {self.name!r} in its name (see evtest)")

    def _open(self) -> Any:
        import evdev

        try:
            device = evdev.InputDevice(self._find())
            if self.grab:
                device.grab()
        except OSError as err:
            raise InputError(f"{self.endpoint} cannot be opened: {err.strerror}") from err
        return device

    def _health(self, ok: bool, detail: str) -> None:
        if self._on_health is not None:
            self._on_health(ok, detail)

    async def batches(self) -> AsyncIterator[list[KeyEvent]]:
        failing = ""
        while True:
            try:
                device = await asyncio.to_thread(self._open)
            except InputError as err:
                if str(err) != failing:
                    log.warning("%s; looking again every %.0f s", err, REOPEN_S)
                    failing = str(err)
                    self._health(False, str(err))
                await asyncio.sleep(REOPEN_S)
                continue
            failing = ""
            log.info("%s open (%s)%s", self.endpoint, device.name, ", grabbed" if self.grab else "")
            self._health(True, device.name)
            try:
                async for batch in _read_batches(device):
                    yield batch
            except OSError as err:
                log.warning("%s went away (%s); waiting for it", self.endpoint, err.strerror)
                self._health(False, f"unplugged: {err.strerror}")
            finally:
                with contextlib.suppress(OSError):
                    device.close()


async def _read_batches(device: Any) -> AsyncIterator[list[KeyEvent]]:
    """One list per read, so a code split over reads is seen as the device sent it."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(device.fd, ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                events = list(device.read())
            except BlockingIOError:
                continue
            batch = [KeyEvent(e.code, e.value) for e in events if e.type == EV_KEY]
            if batch:
                yield batch
    finally:
        loop.remove_reader(device.fd)
