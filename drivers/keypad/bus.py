"""One keypad bus (RS-485 through a serial port, or a serial-to-TCP adapter).

Keypads talk first: a key press is a frame the host must acknowledge (by the protocol's
acknowledgement, usually its echo) or the keypad sends it again. The bus reads all the
time and hands what each valid frame means to ``on_input``. When ``on_input`` returns an
awaitable (the press is being saved), the frame is acknowledged once it is done, so a
keypad is never told "received" about a press a power cut could still lose; otherwise at
once. The same frame arriving again while its acknowledgement is pending is the keypad
resending it: it is not handed on again, only acknowledged with the first. The bus
reconnects with a capped backoff when the port goes away (a USB adapter unplugged, an
adapter's TCP link dropped) and reports its health through ``on_health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from drivers.errors import DriverError
from drivers.transport import LineUnavailable, LinkOpener, stop_task
from protocols.keypad import DeviceInput, Frame, KeypadProtocol, Skipped

log = logging.getLogger(__name__)

# Silence on the line after which a half-received frame is given up (at 9600 baud a
# character takes ~1 ms; a keypad sends a frame in one burst).
IDLE_S = 0.05
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
# A press still being handled after this long is acknowledged anyway (something is stuck;
# the keypad would otherwise resend for ever).
ACK_AFTER_S = 10.0


class KeypadDriverError(DriverError):
    """Base of the keypad driver's errors; the message says what to check."""


class KeypadUnavailable(KeypadDriverError):
    """The keypad cannot be reached (its input device is missing). A bus opener raises
    this or, like :func:`drivers.transport.open_line`, ``LineUnavailable``."""


@dataclasses.dataclass(frozen=True, slots=True)
class BusHealth:
    connected: bool
    detail: str = ""


@dataclasses.dataclass(slots=True)
class BusCounters:
    frames: int = 0  # valid frames from keypads (each acknowledged once handled)
    resends: int = 0  # frames that repeated one still being handled (not handled again)
    rejected: int = 0  # frames with a bad checksum or end byte
    noise_bytes: int = 0
    sent: int = 0  # frames the host sent besides acknowledgements
    connects: int = 0


class KeypadBus:
    """Reads, acknowledges and decodes one bus's frames; sends commands. Async CM."""

    def __init__(
        self,
        endpoint: str,
        protocol: KeypadProtocol,
        opener: LinkOpener,
        on_input: Callable[[DeviceInput], Awaitable[object] | None],
        *,
        on_health: Callable[[BusHealth], None] | None = None,
        idle_s: float = IDLE_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
    ) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self._opener = opener
        self._on_input = on_input
        self._on_health = on_health
        self._idle_s = idle_s
        self._reconnect_max_s = reconnect_max_s
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._acks: set[asyncio.Task[None]] = set()
        # Frames handed on and not yet acknowledged: a copy of one is a resend.
        self._unacknowledged: dict[Frame, asyncio.Future[object]] = {}
        self.health = BusHealth(False, "not connected yet")
        self.counters = BusCounters()

    async def __aenter__(self) -> KeypadBus:
        self._task = asyncio.create_task(self._run(), name=f"keypad-bus {self.endpoint}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        for ack in list(self._acks):
            await stop_task(ack)
        await self._close()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def send(self, frame: Frame) -> bool:
        """Send a command frame now; False when the bus is not connected (it is not kept:
        a number shown late would be wrong)."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        writer.write(self.protocol.encode(frame))
        self.counters.sent += 1
        return True

    # -- the connection ---------------------------------------------------------------------

    def _report(self, health: BusHealth) -> None:
        if health != self.health:
            self.health = health
            if self._on_health is not None:
                self._on_health(health)

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        self._connected.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            try:
                reader, writer = await self._opener()
            except (LineUnavailable, KeypadUnavailable) as err:
                if self.health.connected or self.health.detail != str(err):
                    log.warning("keypad bus %s: %s", self.endpoint, err)
                self._report(BusHealth(False, str(err)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max_s)
                continue
            delay = RECONNECT_FIRST_S
            self._writer = writer
            self.counters.connects += 1
            self._connected.set()
            log.info("keypad bus %s connected", self.endpoint)
            self._report(BusHealth(True, ""))
            try:
                await self._serve(reader)
            except (ConnectionError, OSError) as err:
                log.warning("keypad bus %s lost: %s", self.endpoint, err)
            finally:
                await self._close()
            self._report(BusHealth(False, "the connection was lost; reconnecting"))
            await asyncio.sleep(delay)

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        parser = self.protocol.parser()
        while True:
            if parser.buffered:
                try:
                    async with asyncio.timeout(self._idle_s):
                        data = await reader.read(4096)
                except TimeoutError:
                    self._handle(parser.idle())
                    continue
            else:
                data = await reader.read(4096)
            if not data:
                return
            self._handle(parser.feed(data))

    def _handle(self, events: list[Frame | Skipped]) -> None:
        for event in events:
            if isinstance(event, Skipped):
                if event.reason.startswith("noise"):
                    self.counters.noise_bytes += len(event.data)
                else:
                    self.counters.rejected += 1
                    log.debug("keypad bus %s: %s", self.endpoint, event.reason)
                continue
            self.counters.frames += 1
            handled = self._unacknowledged.get(event)
            if handled is not None:
                self.counters.resends += 1  # the keypad did not hear us yet: same press
            else:
                awaitable = self._on_input(self.protocol.decode_device(event))
                if awaitable is None:
                    self._acknowledge(event)
                    continue
                handled = asyncio.ensure_future(awaitable)
                self._unacknowledged[event] = handled
            ack = asyncio.create_task(self._acknowledge_when(handled, event))
            self._acks.add(ack)
            ack.add_done_callback(self._acks.discard)

    def _acknowledge(self, frame: Frame) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(self.protocol.encode(self.protocol.acknowledgement(frame)))

    async def _acknowledge_when(self, handled: asyncio.Future[object], frame: Frame) -> None:
        try:
            async with asyncio.timeout(ACK_AFTER_S):
                await asyncio.shield(handled)  # a copy's wait must not cancel the press
        except TimeoutError:
            log.debug("keypad bus %s: a press took over %g s", self.endpoint, ACK_AFTER_S)
        except Exception:  # handled (and logged) by whoever handles the press
            log.debug("keypad bus %s: a press failed", self.endpoint, exc_info=True)
        if self._unacknowledged.get(frame) is handled:  # not a newer press of the same key
            del self._unacknowledged[frame]
        self._acknowledge(frame)
