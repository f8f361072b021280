"""The LED strips above the windows: each shows its window's current number.

Every committed event that changes a window (a call, a recall, finish, no-show, pause,
sign-out …) makes the strips look at the queue again; a strip is sent a frame only when
its text changes, except that a call or recall is always sent, flashing, even with the
same number. After a bus (re)connects, and every :data:`RESYNC_S` seconds, every strip
is sent its text again: a strip that lost power shows the right number within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from agent.config import LedStripDevice, NetworkTransport
from agent.core import events as ev
from agent.core.engine import QueueEngine
from agent.core.model import TicketStatus, WindowState
from agent.features._targets import line_target
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import StoredEvent
from agent.runtime.tasks import BackgroundTasks, stop
from drivers.led import (
    BusHealth,
    LedBus,
    LedRefused,
    LedUnavailable,
)
from drivers.transport import LinkOpener, open_line
from protocols.led import LedProtocolError, codec_for

log = logging.getLogger(__name__)

RESYNC_S = 60.0
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# The events that change what a window's strip shows.
WINDOW_EVENTS = (
    *ev.CALLS,
    ev.TicketServing,
    ev.TicketFinished,
    ev.TicketNoShow,
    ev.TicketHeld,
    ev.TicketTransferred,
    ev.TicketExpired,
    ev.WindowOpened,
    ev.WindowPaused,
    ev.WindowResumed,
    ev.WindowClosed,
    ev.StaffSignedOut,
    ev.DayClosed,
    ev.ConfigApplied,
)


@dataclasses.dataclass(slots=True)
class Strip:
    device: LedStripDevice
    window: str | None
    bus: LedBus
    shown: str | None = None  # None: unknown, send again
    flash: bool = False  # the next frame flashes (a new call)


def _bus_key(device: LedStripDevice) -> str:
    transport = device.transport
    if isinstance(transport, NetworkTransport):
        return f"tcp {transport.host.lower()}:{transport.port}"
    return f"serial {transport.port}"


def _opener(device: LedStripDevice) -> LinkOpener:
    target = line_target(device.transport)
    return lambda: open_line(target)


def strip_text(device: LedStripDevice, window: dict[str, Any] | None) -> str:
    """What a strip shows for its window's row of the queue snapshot."""
    if window is None:
        return ""
    number = window["number"]
    if window["state"] == WindowState.PAUSED:
        return device.paused_text.format(window=number)
    ticket = window.get("ticket")
    if ticket is not None and ticket["status"] in (TicketStatus.CALLED, TicketStatus.SERVING):
        return device.text.format(ticket=ticket["number"], window=number)
    return device.idle_text.format(window=number)


class LedStrips:
    """Every configured LED strip at work. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard | None,
        *,
        openers: dict[str, LinkOpener] | None = None,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.buses: dict[str, LedBus] = {}
        self.strips: list[Strip] = []
        owners = {d: w.id for w in hall.config.windows for d in w.devices}
        for device in hall.config.devices:
            if not isinstance(device, LedStripDevice):
                continue
            key = _bus_key(device)
            bus = self.buses.get(key)
            if bus is None:
                opener = (openers or {}).get(key) or _opener(device)
                bus = LedBus(
                    key,
                    codec_for(device.protocol),
                    opener,
                    on_health=functools.partial(self._bus_health, key),
                )
                bus.on_connect = self._resend_all
                self.buses[key] = bus
            window = owners.get(device.id)
            if window is None:
                log.warning("LED strip %s belongs to no window; it stays blank", device.id)
            self.strips.append(Strip(device, window, bus))
        self._dirty = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self.sent = 0

    async def __aenter__(self) -> LedStrips:
        async with contextlib.AsyncExitStack() as stack:
            for bus in self.buses.values():
                await stack.enter_async_context(bus)
            events = await stack.enter_async_context(self.hall.events())
            tasks = await stack.enter_async_context(BackgroundTasks())
            follow = tasks.create_task(self._follow(events), name="led-events")
            sync = tasks.create_task(self._sync_loop(), name="led-sync")
            stack.push_async_callback(stop, sync)
            stack.push_async_callback(stop, follow)
            self._stack = stack.pop_all()
        self._dirty.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _resend_all(self) -> None:
        for strip in self.strips:
            strip.shown = None
        self._dirty.set()

    def _bus_health(self, key: str, health: BusHealth) -> None:
        if self.devices is None:
            return
        for strip in self.strips:
            if _bus_key(strip.device) != key:
                continue
            if not health.connected:
                self.devices.report(strip.device.id, "offline", health.detail)
            elif strip.device.address in health.silent:
                self.devices.report(
                    strip.device.id, "error", health.detail or "the strip does not answer"
                )
            else:
                self.devices.report(strip.device.id, "ok", f"{key}, address {strip.device.address}")

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        while True:
            payload = (await events.get()).payload
            if not isinstance(payload, WINDOW_EVENTS):
                continue
            if isinstance(payload, ev.CALLS):
                for strip in self.strips:
                    if strip.window == payload.window:
                        strip.flash = True
                        strip.shown = None
            self._dirty.set()

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            wait = RESYNC_S if failures == 0 else RETRY_S[min(failures, len(RETRY_S)) - 1]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._dirty.wait()
            if not self._dirty.is_set() and failures == 0:
                self._resend_all()  # the periodic resync; a retry sends only what failed
            self._dirty.clear()
            try:
                ok = await self.sync()
            except ShuttingDown:
                return
            failures = 0 if ok else failures + 1

    async def sync(self) -> bool:
        """Send every strip whose text changed; returns whether all frames went out."""

        def windows(engine: QueueEngine, now: dt.datetime) -> dict[str, dict[str, Any]]:
            return {w["id"]: w for w in engine.snapshot(now, waiting_list=False)["windows"]}

        rows = await self.hall.read(windows)
        ok = True
        for strip in self.strips:
            text = strip_text(strip.device, rows.get(strip.window or ""))
            if text == strip.shown:
                continue
            try:
                codec = strip.bus.codec
                frame = (
                    codec.show(strip.device.address, text, flash=strip.flash)
                    if text
                    else codec.clear(strip.device.address)
                )
                await strip.bus.send(strip.device.address, frame)
            except LedUnavailable as err:
                ok = False
                log.debug("LED strip %s: %s", strip.device.id, err)
                continue
            except (LedProtocolError, LedRefused) as err:
                log.error("LED strip %s cannot show %r: %s", strip.device.id, text, err)
                strip.shown = text  # the same text would fail again
                continue
            strip.shown = text
            strip.flash = False
            self.sent += 1
        return ok


@contextlib.asynccontextmanager
async def led_strips(hall: Hall, devices: DeviceBoard) -> AsyncIterator[LedStrips | None]:
    """The hall's LED strips at work, or None when none is configured."""
    if not any(isinstance(d, LedStripDevice) for d in hall.config.devices):
        yield None
        return
    async with LedStrips(hall, devices) as strips:
        yield strips
