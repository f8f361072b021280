"""A keypad seen by Linux as an input device (USB keypad, GPIO buttons): key names.

The device is found by path or by (part of) its name, grabbed so its keys do not reach
the console, and read with python-evdev's ``async_read_loop``. Only key-down events are
passed on (auto-repeat and key-up are not presses). A device that goes away (unplugged)
is looked for again every few seconds. A test passes its own ``opener`` (any object with
``async_read_loop``, ``grab`` and ``close``) where there is no ``/dev/uinput``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from drivers.keypad.bus import BusHealth, KeypadUnavailable
from drivers.transport import stop_task

log = logging.getLogger(__name__)

EV_KEY = 1
KEY_DOWN = 1
RETRY_S = 2.0


class InputDeviceLike(Protocol):
    def async_read_loop(self) -> AsyncIterator[Any]: ...

    def grab(self) -> None: ...

    def close(self) -> None: ...


DeviceOpener = Callable[[], InputDeviceLike]


def key_name(code: int) -> str | None:
    """evdev's name for a key code (the first, where a code has several)."""
    from evdev import ecodes

    name = ecodes.KEY.get(code) or ecodes.BTN.get(code)
    if isinstance(name, list | tuple):
        return str(name[0]) if name else None
    return None if name is None else str(name)


def evdev_opener(path: Path | None, name: str | None) -> DeviceOpener:
    """Open the device by path, or the first whose name contains ``name``."""

    def open_device() -> InputDeviceLike:
        import evdev

        try:
            if path is not None:
                return evdev.InputDevice(str(path))
            for candidate in evdev.list_devices():
                device = evdev.InputDevice(candidate)
                if name is not None and name in device.name:
                    return device
                device.close()
        except OSError as err:
            raise KeypadUnavailable(f"input device {path or name!r}: {err}") from err
        raise KeypadUnavailable(f"no input device named {name!r} is plugged in")

    return open_device


class EvdevKeys:
    """Key-down names from one input device, to ``on_key``. An async context manager."""

    def __init__(
        self,
        label: str,
        opener: DeviceOpener,
        on_key: Callable[[str], None],
        *,
        grab: bool = True,
        on_health: Callable[[BusHealth], None] | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self.label = label
        self._opener = opener
        self._on_key = on_key
        self._grab = grab
        self._on_health = on_health
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.health = BusHealth(False, "not opened yet")
        self.presses = 0

    async def __aenter__(self) -> EvdevKeys:
        self._task = asyncio.create_task(self._run(), name=f"evdev {self.label}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_task(self._task)

    def _report(self, health: BusHealth) -> None:
        if health != self.health:
            self.health = health
            if self._on_health is not None:
                self._on_health(health)

    async def _run(self) -> None:
        while True:
            try:
                device = self._opener()
            except KeypadUnavailable as err:
                if self.health.connected or self.health.detail != str(err):
                    log.warning("keypad %s: %s", self.label, err)
                self._report(BusHealth(False, str(err)))
                await asyncio.sleep(self._retry_s)
                continue
            try:
                if self._grab:
                    device.grab()
                self._report(BusHealth(True, ""))
                async for event in device.async_read_loop():
                    if event.type == EV_KEY and event.value == KEY_DOWN:
                        name = key_name(event.code)
                        if name is not None:
                            self.presses += 1
                            self._on_key(name)
            except OSError as err:
                log.warning("keypad %s went away: %s", self.label, err)
                self._report(BusHealth(False, f"went away: {err}"))
            finally:
                with contextlib.suppress(OSError):
                    device.close()
            await asyncio.sleep(self._retry_s)
