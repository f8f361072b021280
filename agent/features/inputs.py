"""Ticket inputs: physical buttons and the QR scanner at the kiosk.

- **Buttons** (:class:`ButtonMap`): each configured key (a USB keypad, or a Raspberry Pi
  GPIO button through the ``gpio-key`` overlay) issues a ticket for its service, as the
  touch page would (``source: button``, printed, refused while the printer cannot
  print). A key bouncing or held down issues one ticket, not several.
- **Scanner** (:class:`ScannerMap`): a keyboard-wedge scanner's codes are decoded by
  :mod:`protocols.keyboard_wedge`; a code matching the device's ``appointment_pattern``
  issues an appointment ticket (green channel) for the service it names
  (``source: qr``). Other codes are logged by length only (a code may carry personal
  data) and ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping

from agent.config import CodeScannerDevice, TicketButtonsDevice
from agent.core.errors import QueueError
from agent.core.model import Priority, Source
from agent.core.operations import Take
from agent.features.issuing import Issuing
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import StoreError
from agent.runtime.tasks import BackgroundTasks
from drivers.evdev_input import EvdevSource, InputError, KeySource, key_code
from protocols.keyboard_wedge import (
    KEY_DOWN,
    TERMINATORS,
    KeyEvent,
    Overflow,
    Scanned,
    WedgeDecoder,
)

log = logging.getLogger(__name__)

# A button pressed again within this time is a bounce or an impatient second press.
DEBOUNCE_S = 0.8
# How many of the latest issued and refused requests are kept (tests).
KEPT_RECENT = 64
# A scan arrives within milliseconds; a partial code quiet this long is dropped.
SCAN_GAP_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class TakeRequest:
    """A ticket an input asks for."""

    service: str
    source: Source
    priority: Priority = Priority.NORMAL
    device: str = ""


class ButtonMap:
    """Key events of a ticket-button device → ticket requests. Pure: the clock is given."""

    def __init__(self, device_id: str, keymap: Mapping[int, str]) -> None:
        self.device_id = device_id
        self.keymap = dict(keymap)
        self._last: dict[int, float] = {}

    @classmethod
    def for_device(cls, device: TicketButtonsDevice) -> ButtonMap:
        return cls(device.id, {key_code(name): service for name, service in device.keymap.items()})

    def feed(self, batch: list[KeyEvent], now: float) -> list[TakeRequest]:
        out: list[TakeRequest] = []
        for event in batch:
            service = self.keymap.get(event.code)
            if service is None or event.value != KEY_DOWN:  # auto-repeat is not a press
                continue
            last = self._last.get(event.code)
            self._last[event.code] = now
            if last is not None and now - last < DEBOUNCE_S:
                continue
            out.append(TakeRequest(service, Source.BUTTON, device=self.device_id))
        return out


class ScannerMap:
    """Key events of a scanner → appointment ticket requests. Pure: the clock is given."""

    def __init__(self, device: CodeScannerDevice) -> None:
        self.device_id = device.id
        self.pattern = re.compile(device.appointment_pattern)
        self.decoder = WedgeDecoder(TERMINATORS[device.terminator])
        self._last_key: float | None = None
        self.unrecognised = 0

    def feed(self, batch: list[KeyEvent], now: float) -> list[TakeRequest]:
        if (
            self._last_key is not None
            and now - self._last_key > SCAN_GAP_S
            and self.decoder.pending
        ):
            log.info("scanner %s: a partial code was dropped", self.device_id)
            self.decoder.reset()
        self._last_key = now
        out: list[TakeRequest] = []
        for event in self.decoder.feed(batch):
            if isinstance(event, Overflow):
                log.warning(
                    "scanner %s: %d characters without an end key; ignored (is it a keyboard?)",
                    self.device_id,
                    event.length,
                )
                continue
            assert isinstance(event, Scanned)
            match = self.pattern.match(event.code)
            if match is None:
                self.unrecognised += 1
                log.info(
                    "scanner %s: a %d-character code that is not an appointment; ignored",
                    self.device_id,
                    len(event.code),
                )
                continue
            out.append(
                TakeRequest(
                    match.group("service"),
                    Source.QR,
                    Priority.APPOINTMENT,
                    device=self.device_id,
                )
            )
        return out


Mapper = ButtonMap | ScannerMap


class TicketInputs:
    """Buttons and scanners at work. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard | None = None,
        issuing: Issuing | None = None,
        *,
        sources: Mapping[str, KeySource] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.issuing = issuing or Issuing(hall)
        self._clock = clock
        # The latest requests only (tests): a kiosk's buttons issue thousands a week.
        self.issued: collections.deque[dict[str, object]] = collections.deque(maxlen=KEPT_RECENT)
        self.refused: collections.deque[tuple[TakeRequest, str]] = collections.deque(
            maxlen=KEPT_RECENT
        )
        self.issued_total = 0
        self.refused_total = 0
        self._inputs: list[tuple[str, KeySource, Mapper]] = []
        for device in hall.config.devices:
            mapper: Mapper
            try:
                if isinstance(device, TicketButtonsDevice):
                    mapper = ButtonMap.for_device(device)
                elif isinstance(device, CodeScannerDevice):
                    mapper = ScannerMap(device)
                else:
                    continue
            except InputError as err:
                log.error("input %s is not used: %s", device.id, err)
                if devices is not None:
                    devices.report(device.id, "error", str(err))
                continue
            source = (sources or {}).get(device.id) or EvdevSource(
                path=device.transport.path,
                name=device.transport.name,
                grab=device.transport.grab,
                on_health=functools.partial(self._health, device.id),
            )
            self._inputs.append((device.id, source, mapper))
        self._stack = contextlib.AsyncExitStack()
        self._tasks = BackgroundTasks()
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> TicketInputs:
        self._tasks = await self._stack.enter_async_context(BackgroundTasks())
        for device_id, source, mapper in self._inputs:
            self._tasks.create_task(self._run(device_id, source, mapper), name=f"input-{device_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._tasks.cancel()
        await self._stack.aclose()

    def _health(self, device_id: str, ok: bool, detail: str) -> None:
        if self.devices is not None:
            self.devices.report(device_id, "ok" if ok else "offline", detail)

    async def _run(self, device_id: str, source: KeySource, mapper: Mapper) -> None:
        try:
            async for batch in source.batches():
                for request in mapper.feed(batch, self._clock()):
                    await self.take(request)
        except InputError as err:
            log.error("input %s: %s", device_id, err)
            if self.devices is not None:
                self.devices.report(device_id, "error", str(err))

    async def take(self, request: TakeRequest) -> None:
        """Issue the ticket an input asked for; a refusal is logged, never raised."""
        try:
            outcome = await self.issuing.take(
                Take(service=request.service, source=request.source, priority=request.priority)
            )
        except (QueueError, ShuttingDown, StoreError) as err:
            log.info("%s could not issue a %s ticket: %s", request.device, request.service, err)
            self.refused.append((request, str(err)))
            self.refused_total += 1
        else:
            if outcome.ticket is not None:
                log.info("%s issued %s", request.device, outcome.ticket.number)
                self.issued.append(outcome.ticket.public())
                self.issued_total += 1
        async with self._changed:
            self._changed.notify_all()

    async def wait_handled(self, count: int, within: float = 10.0) -> None:
        """Until ``count`` requests were issued or refused (tests)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.issued_total + self.refused_total >= count)


@contextlib.asynccontextmanager
async def ticket_inputs(
    hall: Hall, devices: DeviceBoard, issuing: Issuing
) -> AsyncIterator[TicketInputs | None]:
    """Buttons and scanners at work, or None when none is configured."""
    kinds = (TicketButtonsDevice, CodeScannerDevice)
    if not any(isinstance(d, kinds) for d in hall.config.devices):
        yield None
        return
    async with TicketInputs(hall, devices, issuing) as inputs:
        yield inputs
