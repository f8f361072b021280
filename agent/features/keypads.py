"""Window callers and raters that are keypads: on the RS-485 keypad bus or evdev.

Every bus (one serial port or TCP adapter, shared by the callers and raters wired to it)
and every evdev keypad becomes a driver from drivers/keypad. Presses go, in order per
window, to the :class:`~agent.features.callers.CallerDesk` or the
:class:`~agent.features.rating.RatingDesk`; what the devices show comes back: a bus caller shows
its window's current ticket number and beeps when a press was refused, and a bus rater is
told to invite the citizen when a rating opens at its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

from agent.config import (
    CallerDevice,
    EvdevTransport,
    HallAgentConfig,
    NetworkTransport,
    RaterDevice,
    SerialTransport,
)
from agent.core import events as ev
from agent.features._targets import line_target
from agent.features.callers import CallerDesk, Debouncer
from agent.features.rating import RatingDesk
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import StoredEvent
from agent.runtime.tasks import BackgroundTasks
from drivers.keypad import (
    BusHealth,
    DeviceOpener,
    EvdevKeys,
    KeypadBus,
    evdev_opener,
)
from drivers.transport import LineTarget, LinkOpener, open_line
from protocols.keypad import (
    CallerCommand,
    CallerKey,
    CallerPress,
    DeviceInput,
    KeypadProtocol,
    RaterPress,
    interpret,
    keypad_protocol,
)

log = logging.getLogger(__name__)

KeypadDevice = CallerDevice | RaterDevice
# Digits typed on an evdev keypad are kept for at most this many (a sign-in code's length).
MAX_DIGITS = 8


def device_windows(config: HallAgentConfig) -> dict[str, str]:
    """Which window each device belongs to."""
    return {d: w.id for w in config.windows for d in w.devices}


def _display_digits(number: str | None) -> str:
    return "" if number is None else "".join(ch for ch in number if ch.isdigit())


@dataclasses.dataclass(slots=True)
class _Bus:
    driver: KeypadBus
    protocol: KeypadProtocol
    devices: dict[int, KeypadDevice]


@dataclasses.dataclass(frozen=True, slots=True)
class _CallerJob:
    device: KeypadDevice
    command: CallerCommand


@dataclasses.dataclass(frozen=True, slots=True)
class _RaterJob:
    device: RaterDevice
    level: int
    index: int


class WindowKeypads:
    """Every keypad caller and rater of the hall. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        board: DeviceBoard,
        callers: CallerDesk,
        ratings: RatingDesk,
        *,
        bus_opener: Callable[[LineTarget], LinkOpener] | None = None,
        evdev_opener_for: Callable[[EvdevTransport], DeviceOpener] | None = None,
    ) -> None:
        self.hall = hall
        self.board = board
        self.callers = callers
        self.ratings = ratings
        self._bus_opener = bus_opener or (lambda t: functools.partial(open_line, t))
        self._evdev_opener = evdev_opener_for or (lambda t: evdev_opener(t.path, t.name))
        self.windows = device_windows(hall.config)
        self.buses: dict[str, _Bus] = {}
        self._bus_of: dict[str, _Bus] = {}
        self.evdev: dict[str, EvdevKeys] = {}
        self._digits: dict[str, str] = {}
        self._queues: dict[
            str, asyncio.Queue[tuple[_CallerJob | _RaterJob, asyncio.Future[None]]]
        ] = {}
        self._tasks = BackgroundTasks()
        self._stack = contextlib.AsyncExitStack()
        self._rater_presses = Debouncer(hall.config.callers.debounce_s)
        self._unknown_addresses: set[tuple[str, int]] = set()
        self.ignored = 0

    @property
    def devices(self) -> list[KeypadDevice]:
        return [
            d
            for d in self.hall.config.devices
            if isinstance(d, CallerDevice | RaterDevice)
            and isinstance(d.transport, SerialTransport | NetworkTransport | EvdevTransport)
        ]

    async def __aenter__(self) -> WindowKeypads:
        stack = self._stack
        # Entered first: a bus that connects while starting refreshes its displays in it.
        self._tasks = await stack.enter_async_context(BackgroundTasks())
        stack.push_async_callback(self._tasks.stop_all)  # what drivers started while closing
        by_endpoint: dict[str, list[KeypadDevice]] = {}
        for device in self.devices:
            if device.id not in self.windows:
                self.board.report(device.id, "error", "not listed in any window's devices")
                continue
            transport = device.transport
            if isinstance(transport, EvdevTransport):
                keys = EvdevKeys(
                    device.id,
                    self._evdev_opener(transport),
                    functools.partial(self._evdev_key, device),
                    grab=transport.grab,
                    on_health=functools.partial(self._health, [device.id]),
                )
                self.evdev[device.id] = await stack.enter_async_context(keys)
            else:
                endpoint = transport.endpoint() or device.id
                by_endpoint.setdefault(endpoint, []).append(device)
        for endpoint, members in by_endpoint.items():
            transport = members[0].transport
            assert isinstance(transport, SerialTransport | NetworkTransport)
            protocol = keypad_protocol(members[0].protocol)
            addresses = {d.address: d for d in members if d.address is not None}
            driver = KeypadBus(
                endpoint,
                protocol,
                self._bus_opener(line_target(transport)),
                functools.partial(self._bus_input, endpoint),
                on_health=functools.partial(self._bus_health, endpoint),
            )
            bus = _Bus(driver, protocol, addresses)
            self.buses[endpoint] = bus
            for device in members:
                self._bus_of[device.id] = bus
            await stack.enter_async_context(driver)
        events = await stack.enter_async_context(self.hall.events())
        self._tasks.create_task(self._follow(events), name="keypad-displays")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.stop_all()  # the display follower, window workers, refreshes
        await self._stack.aclose()

    # -- health ---------------------------------------------------------------------------

    def _health(self, device_ids: list[str], health: BusHealth) -> None:
        for device_id in device_ids:
            if health.connected:
                self.board.report(device_id, "ok", "")
            else:
                self.board.report(device_id, "offline", health.detail)

    def _bus_health(self, endpoint: str, health: BusHealth) -> None:
        bus = self.buses.get(endpoint)
        if bus is None:
            return
        self._health([d.id for d in bus.devices.values()], health)
        if health.connected:
            self._spawn(self._refresh_bus(bus), "keypad-refresh")

    # -- input --------------------------------------------------------------------------------

    def _bus_input(self, endpoint: str, press: DeviceInput) -> asyncio.Future[None] | None:
        """Handle a bus keypad's press; the bus acknowledges it when the returned future is
        done (the press saved, or refused), or at once for None."""
        bus = self.buses[endpoint]
        device = bus.devices.get(press.address)
        if device is None:
            if (endpoint, press.address) not in self._unknown_addresses:
                self._unknown_addresses.add((endpoint, press.address))
                log.warning(
                    "keypad bus %s: a keypad at address %d is not in the config; its keys "
                    "are ignored",
                    endpoint,
                    press.address,
                )
            self.ignored += 1
            return None
        match press:
            case CallerPress() if isinstance(device, CallerDevice):
                command = interpret(press.key, press.digits)
                if command is None:
                    bus.driver.send(bus.protocol.beep(press.address))
                    return None
                return self._enqueue(device, _CallerJob(device, command))
            case RaterPress() if isinstance(device, RaterDevice):
                if press.key >= len(device.keys):
                    self.ignored += 1
                    return None
                return self._enqueue(device, _RaterJob(device, device.keys[press.key], press.key))
            case _:
                log.debug("keypad %s sent %s, which it does not have", device.id, press)
                self.ignored += 1
                return None

    def _evdev_key(self, device: KeypadDevice, name: str) -> None:
        if isinstance(device, RaterDevice):
            level = device.keymap.get(name)
            if level is not None:
                # Reasons are chosen by position: the key of 非常满意 is the first.
                self._enqueue(device, _RaterJob(device, level, 5 - level))
            return
        action = device.keymap.get(name)
        if action is None:
            return
        digits = self._digits.get(device.id, "")
        if action.startswith("digit"):
            self._digits[device.id] = (digits + action[-1])[-MAX_DIGITS:]
            return
        self._digits.pop(device.id, None)
        if action == "clear":
            return
        command = interpret(CallerKey(action), digits)
        if command is not None:
            self._enqueue(device, _CallerJob(device, command))

    def _enqueue(self, device: KeypadDevice, job: _CallerJob | _RaterJob) -> asyncio.Future[None]:
        """Queue a press behind the window's others; the future is done once it was handled."""
        window_id = self.windows[device.id]
        queue = self._queues.get(window_id)
        if queue is None:
            queue = self._queues[window_id] = asyncio.Queue()
            self._tasks.create_task(self._work(window_id, queue), name=f"keypads-{window_id}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.put_nowait((job, done))
        return done

    async def _work(
        self,
        window_id: str,
        queue: asyncio.Queue[tuple[_CallerJob | _RaterJob, asyncio.Future[None]]],
    ) -> None:
        """One window's presses in the order they came."""
        while True:
            job, done = await queue.get()
            try:
                if isinstance(job, _CallerJob):
                    await self._caller(window_id, job, done)
                else:
                    await self._rater(window_id, job, done)
            except Exception:  # one press must never stop the window's keypads
                log.exception("window %s: a keypad press failed", window_id)
            finally:
                _settle(done)

    async def _caller(self, window_id: str, job: _CallerJob, handled: asyncio.Future[None]) -> None:
        answer = await self.callers.act(window_id, job.command, source=job.device.id)
        _settle(handled)  # saved (or refused): the keypad may be told, before its display
        bus = self._bus_of.get(job.device.id)
        address = job.device.address
        if bus is None or address is None or answer.repeat:
            return
        if not answer.done or answer.result.get("ticket", True) is None:
            bus.driver.send(bus.protocol.beep(address))
        bus.driver.send(bus.protocol.show_number(address, _display_digits(answer.current)))

    async def _rater(self, window_id: str, job: _RaterJob, handled: asyncio.Future[None]) -> None:
        if not self._rater_presses.accept(job.device.id, job.index):
            return
        answer = await self.ratings.keypad_key(
            window_id, job.device.id, job.level, job.index, channel="keypad"
        )
        _settle(handled)
        bus = self._bus_of.get(job.device.id)
        address = job.device.address
        if bus is not None and address is not None and not answer.recorded:
            bus.driver.send(bus.protocol.beep(address))
        if answer.recorded and answer.rating is not None:
            log.info("window %s: rated %s on %s", window_id, answer.rating["level"], job.device.id)

    # -- output -------------------------------------------------------------------------------

    def _start_rating(self, window_id: str) -> None:
        """A rating was requested at the window: its bus raters light up."""
        for device in self._window_devices(window_id, RaterDevice):
            bus = self._bus_of.get(device.id)
            if bus is not None and device.address is not None:
                bus.driver.send(bus.protocol.start_rating(device.address))

    def _window_devices(self, window_id: str, kind: type[Any]) -> list[Any]:
        return [
            d for d in self.devices if isinstance(d, kind) and self.windows.get(d.id) == window_id
        ]

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        """Keep bus callers' displays on their window's current ticket, whoever called it
        (the web page, central, another keypad)."""
        while True:
            event = await events.get()
            match event.payload:
                case ev.RatingRequested(window=window_id):
                    self._start_rating(window_id)
                case (
                    ev.TicketEvent(window=str() as window_id)
                    | ev.WindowOpened(window=window_id)
                    | ev.WindowPaused(window=window_id)
                    | ev.WindowResumed(window=window_id)
                    | ev.WindowClosed(window=window_id)
                    | ev.StaffSignedIn(window=window_id)
                    | ev.StaffSignedOut(window=window_id)
                ):
                    await self._refresh_window(window_id)

    async def _refresh_window(self, window_id: str) -> None:
        callers = [d for d in self._window_devices(window_id, CallerDevice) if d.id in self._bus_of]
        if not callers:
            return
        current = await self.callers.current(window_id)
        for device in callers:
            bus = self._bus_of[device.id]
            if device.address is not None:
                bus.driver.send(bus.protocol.show_number(device.address, _display_digits(current)))

    async def _refresh_bus(self, bus: _Bus) -> None:
        windows = {self.windows[d.id] for d in bus.devices.values() if isinstance(d, CallerDevice)}
        for window_id in sorted(windows):
            await self._refresh_window(window_id)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.create_task(coro, name=name)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
