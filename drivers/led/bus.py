"""One LED bus: a serial line or TCP link, one frame at a time, answers awaited."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from drivers.errors import DriverError
from drivers.transport import LineUnavailable, Link, LinkOpener
from protocols.led import LedCodec, ParseEvent, Rejected

log = logging.getLogger(__name__)

# A strip answers within a few character times (at 9600 baud a frame takes ~15 ms).
ANSWER_TIMEOUT_S = 0.5
# Tries per frame: a lost answer on a noisy RS-485 line is common; a dead strip is not.
ATTEMPTS = 2


class LedError(DriverError):
    """Base of the LED driver's errors; the message says what to check."""


class LedUnavailable(LedError):
    """The bus cannot be reached, or a strip does not answer."""


class LedRefused(LedError):
    """The strip answered that it did not do it (bad text, unknown command)."""


@dataclasses.dataclass(frozen=True, slots=True)
class BusHealth:
    connected: bool
    detail: str = ""
    #: Addresses whose last frame went unanswered (protocols whose strips answer).
    silent: frozenset[int] = frozenset()


class LedBus:
    """Frames to the strips of one bus, one at a time. An async context manager."""

    def __init__(
        self,
        endpoint: str,
        codec: LedCodec,
        opener: LinkOpener,
        *,
        on_health: Callable[[BusHealth], None] | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.codec = codec
        self._opener = opener
        self._on_health = on_health
        self._answer_timeout_s = answer_timeout_s
        self._lock = asyncio.Lock()
        self._link: Link | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._answers: asyncio.Queue[ParseEvent] = asyncio.Queue()
        self._silent: set[int] = set()
        self.health = BusHealth(False, "not connected yet")
        #: perf_counter() when the last frame's last byte was handed to the transport.
        self.last_written: float | None = None
        self.frames_sent = 0
        self.rejected = 0
        #: Called after every (re)connect, so the owner can send every strip its text again.
        self.on_connect: Callable[[], None] | None = None

    async def __aenter__(self) -> LedBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drop("closed")

    def _report(self, health: BusHealth) -> None:
        if health != self.health:
            self.health = health
            if self._on_health is not None:
                self._on_health(health)

    async def _connect(self) -> Link:
        if self._link is not None:
            return self._link
        try:
            self._link = await self._opener()
        except LineUnavailable as err:
            raise LedUnavailable(str(err)) from err
        self._answers = asyncio.Queue()
        parser = self.codec.parser()
        self._reader_task = asyncio.create_task(
            self._read(self._link[0], parser), name=f"led-read {self.endpoint}"
        )
        log.info("LED bus %s connected", self.endpoint)
        self._report(BusHealth(True, "", frozenset(self._silent)))
        if self.on_connect is not None:
            self.on_connect()
        return self._link

    async def _read(self, reader: asyncio.StreamReader, parser: object) -> None:
        feed = getattr(parser, "feed")  # noqa: B009 - both parser kinds have feed()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(4096):
                for event in feed(data):
                    if isinstance(event, Rejected):
                        self.rejected += 1
                        log.debug("LED bus %s: %s", self.endpoint, event.reason)
                        continue
                    self._answers.put_nowait(event)
        # The far end closed: close our side too; the next frame reconnects.
        if self._link is not None and self._link[0] is reader:
            writer = self._link[1]
            self._link = None
            writer.close()
            self._report(BusHealth(False, "the connection was closed by the bus adapter"))

    async def _drop(self, why: str) -> None:
        link, self._link = self._link, None
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if link is not None:
            link[1].close()
            with contextlib.suppress(ConnectionError, OSError):
                await link[1].wait_closed()
        if why != "closed":
            self._report(BusHealth(False, why))

    async def send(self, address: int, frame: bytes) -> None:
        """Send one frame to the strip at ``address``; for answering protocols, wait for
        its answer. Raises :class:`LedUnavailable` after :data:`ATTEMPTS` tries."""
        async with self._lock:
            problem = ""
            for _ in range(ATTEMPTS):
                try:
                    await self._send_once(address, frame)
                except LedRefused:
                    self._report(BusHealth(True, "", frozenset(self._silent)))
                    raise
                except LedUnavailable as err:
                    problem = str(err)
                    continue
                if address in self._silent:
                    self._silent.discard(address)
                    log.info("LED strip %d on %s answers again", address, self.endpoint)
                self._report(BusHealth(True, "", frozenset(self._silent)))
                return
            if self.health.connected and address not in self._silent:
                self._silent.add(address)
                self._report(BusHealth(True, problem, frozenset(self._silent)))
            raise LedUnavailable(problem)

    async def _send_once(self, address: int, frame: bytes) -> None:
        try:
            _, writer = await self._connect()
            while not self._answers.empty():  # stale answers of an earlier timeout
                self._answers.get_nowait()
            writer.write(frame)
            await writer.drain()
        except LedUnavailable as err:
            self._report(BusHealth(False, str(err)))
            raise
        except (ConnectionError, OSError) as err:
            await self._drop(f"writing to {self.endpoint} failed: {err}")
            raise LedUnavailable(f"writing to {self.endpoint} failed: {err}") from err
        self.last_written = time.perf_counter()
        self.frames_sent += 1
        if not self.codec.replies:
            return
        try:
            async with asyncio.timeout(self._answer_timeout_s):
                while True:
                    event = await self._answers.get()
                    if self.codec.is_answer(event, address, frame):
                        break
        except TimeoutError:
            raise LedUnavailable(
                f"LED strip {address} on {self.endpoint} did not answer within "
                f"{self._answer_timeout_s:g} s; check its address and power"
            ) from None
        problem = self.codec.refusal(event)
        if problem is not None:
            raise LedRefused(f"LED strip {address} on {self.endpoint}: {problem}")
