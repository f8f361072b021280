"""A GA/T 467 reader over a byte stream (serial line or TCP): commands, polling, debounce.

:class:`Gat467Client` sends one request at a time and waits for its answer (bounded by a
timeout that follows the line speed). :class:`Gat467Watcher` keeps a client connected and
polls find → select → read:

- a card is read once per placement: while find keeps answering "found" for the card read
  last it is not selected or read again;
- a card is "removed" after ``removal_polls`` polls in a row found nothing;
- the same card placed again within ``debounce_s`` is not reported again (a hand that
  lifts and drops the card, or a reader that loses it for a moment);
- a card that cannot be read is retried on the next polls; after ``problem_after`` failures
  (or at once when the card is refused) a :class:`CardProblem` says what to do;
- an unplugged, hung or unreachable reader is reconnected with a capped backoff, and the
  health says what is wrong (reported once per change).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from drivers.errors import DriverError
from drivers.idreader.base import (
    CardPresented,
    CardProblem,
    CardRemoved,
    IdReader,
    ReaderEvent,
    ReaderHealth,
    ReaderUnavailable,
)
from drivers.transport import (
    LineTarget,
    LineUnavailable,
    Link,
    SerialTarget,
    TcpTarget,
    open_line,
    stop_task,
)
from protocols.gat467 import (
    CardRejected,
    Command,
    FrameParser,
    Gat467Error,
    NoSuchItem,
    ReaderFault,
    ReaderStatusError,
    Response,
    Status,
    UnknownCardType,
    decode_additional_address,
    decode_card_data,
    decode_sam_id,
    encode_request,
)
from protocols.idcard import decode_text

log = logging.getLogger(__name__)

# The largest answer (text + photo + fingerprint), for the answer timeout.
_LARGEST_ANSWER = 2321


def _endpoint(target: LineTarget) -> str:
    """Where the reader is, for people (``serial port /dev/ttyUSB0``)."""
    if isinstance(target, TcpTarget):
        return f"network {target.host}:{target.port}"
    return f"serial port {target.port}"


class Gat467Client:
    """Request/answer over one connection. Not shared: one request at a time."""

    def __init__(self, streams: Link, *, baudrate: int | None = None) -> None:
        self._reader, self._writer = streams
        self._parser = FrameParser()
        # Bytes at 10 bits each on a serial line, plus room for the reader to think.
        per_byte = 10 / baudrate if baudrate else 0.0
        self.answer_timeout_s = 0.8 + _LARGEST_ANSWER * per_byte * 1.5
        self.bad_frames = 0

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()

    async def request(self, command: Command) -> Response:
        """Send ``command`` and return its answer (whatever its status).

        A garbled answer (bad checksum) is asked for again once. Raises ReaderUnavailable
        when the line fails or nothing valid comes back in time.
        """
        for attempt in (1, 2):
            try:
                self._writer.write(encode_request(command))
                await self._writer.drain()
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
                # arrives with the answer, and the watcher would never stop.
                async with asyncio.timeout(self.answer_timeout_s):
                    return await self._answer()
            except _Garbled:
                self.bad_frames += 1
                if attempt == 2:
                    raise ReaderUnavailable(
                        "the ID card reader's answers arrive garbled (bad checksums); check "
                        "the cable and the baud rate"
                    ) from None
            except TimeoutError:
                raise ReaderUnavailable(
                    f"the ID card reader did not answer {command.name} within "
                    f"{self.answer_timeout_s:.1f} s"
                ) from None
            except (OSError, EOFError, asyncio.IncompleteReadError) as err:
                raise ReaderUnavailable(
                    f"the ID card reader's line failed (unplugged?): {err}"
                ) from err
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(self) -> Response:
        while True:
            data = await self._reader.read(4096)
            if not data:
                raise EOFError("the connection was closed")
            for event in self._parser.feed(data):
                if isinstance(event, Response):
                    return event
                raise _Garbled

    async def call(self, command: Command) -> Response:
        """``request`` that raises the answer's typed error unless it is a success."""
        return (await self.request(command)).raise_for_status()

    async def find(self) -> bool:
        answer = await self.request(Command.FIND_CARD)
        if answer.ok:
            return True
        if answer.status == Status.NO_CARD:
            return False
        answer.raise_for_status()
        return False

    async def read(
        self, *, fingerprint: bool = False, additional_address: bool = False
    ) -> CardPresented:
        await self.call(Command.SELECT_CARD)
        command = Command.READ_TEXT_PHOTO_FINGERPRINT if fingerprint else Command.READ_TEXT_PHOTO
        answer = await self.call(command)
        blocks = decode_card_data(answer.data, with_fingerprint=fingerprint)
        card = decode_text(blocks.text)
        extra = None
        if additional_address:
            try:
                extra_answer = await self.call(Command.READ_ADDITIONAL_ADDRESS)
                extra = decode_additional_address(extra_answer.data) or None
            except (NoSuchItem, ReaderStatusError) as err:
                # Additional address is optional; a card without one says 91.
                log.debug("no additional address: %s", err)
        return CardPresented(card, blocks.photo, blocks.fingerprint or None, extra)

    async def sam_id(self) -> str:
        return decode_sam_id((await self.call(Command.READ_SAM_ID)).data)


class _Garbled(DriverError):
    """An answer with a bad checksum: ask again."""


Connector = Callable[[], Awaitable[tuple[Gat467Client, str]]]


def connector_for(target: LineTarget) -> Connector:
    """Connects to the reader; raises ReaderUnavailable with the cause."""

    async def connect() -> tuple[Gat467Client, str]:
        try:
            streams = await open_line(target)
        except LineUnavailable as err:
            raise ReaderUnavailable(
                f"cannot open the ID card reader at {_endpoint(target)}: {err.reason}"
            ) from err
        baud = target.baudrate if isinstance(target, SerialTarget) else None
        return Gat467Client(streams, baudrate=baud), _endpoint(target)

    return connect


@dataclasses.dataclass(frozen=True, slots=True)
class PollSettings:
    poll_interval_s: float = 0.3
    removal_polls: int = 2
    debounce_s: float = 2.0
    problem_after: int = 3
    reconnect_max_s: float = 5.0
    fingerprint: bool = False
    additional_address: bool = True


class Gat467Watcher(IdReader):
    """Keeps one GA/T 467 reader connected and polled; events through ``next_event``."""

    def __init__(
        self,
        target: LineTarget,
        settings: PollSettings | None = None,
        *,
        connector: Connector | None = None,
        on_health: Callable[[ReaderHealth], None] | None = None,
    ) -> None:
        self._target = target
        self.settings = settings or PollSettings()
        self._connect = connector or connector_for(target)
        self._on_health = on_health
        self._health = ReaderHealth(connected=False, ok=False, detail="not connected yet")
        self._events: asyncio.Queue[ReaderEvent] = asyncio.Queue(maxsize=64)
        self._task: asyncio.Task[None] | None = None
        self.reads = 0
        self.suppressed = 0
        self.polls = 0
        self.connects = 0

    @property
    def endpoint(self) -> str:
        return _endpoint(self._target)

    @property
    def health(self) -> ReaderHealth:
        return self._health

    async def __aenter__(self) -> Gat467Watcher:
        self._task = asyncio.create_task(self._run(), name=f"idreader {self.endpoint}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def next_event(self) -> ReaderEvent:
        return await self._events.get()

    # -- internals -------------------------------------------------------------------------

    def _report(self, health: ReaderHealth) -> None:
        if health == self._health:
            return
        self._health = health
        if self._on_health is not None:
            self._on_health(health)

    def _emit(self, event: ReaderEvent) -> None:
        if self._events.full():  # nobody is listening: the oldest is the least useful
            self._events.get_nowait()
        self._events.put_nowait(event)

    async def _run(self) -> None:
        delay = 0.2
        failing: str | None = None
        while True:
            client: Gat467Client | None = None
            try:
                client, _ = await self._connect()
                self.connects += 1
                await self._probe(client)
                if failing is not None:
                    log.info("ID card reader at %s works again", self.endpoint)
                failing = None
                delay = 0.2
                await self._poll(client)
            except ReaderUnavailable as err:
                reason = str(err)
                if reason != failing:
                    log.warning("ID card reader at %s: %s; retrying", self.endpoint, reason)
                failing = reason
                self._report(ReaderHealth(connected=False, ok=False, detail=reason))
            except ReaderFault as err:
                reason = str(err)
                if reason != failing:
                    log.error("ID card reader at %s: %s", self.endpoint, reason)
                failing = reason
                self._report(ReaderHealth(connected=True, ok=False, detail=reason))
            finally:
                if client is not None:
                    await client.close()
            await asyncio.sleep(delay)
            delay = min(self.settings.reconnect_max_s, delay * 2)

    async def _probe(self, client: Gat467Client) -> None:
        """The security module answers and works; its id goes into the health detail."""
        await client.call(Command.SAM_STATUS)
        try:
            sam = await client.sam_id()
        except (ReaderStatusError, Gat467Error) as err:
            log.debug("reader at %s gave no SAM id: %s", self.endpoint, err)
            sam = None
        detail = f"SAM {sam}" if sam else "ready"
        self._report(ReaderHealth(connected=True, ok=True, detail=detail, sam_id=sam))

    async def _poll(self, client: Gat467Client) -> None:
        settings = self.settings
        on_reader = False  # the card read last is (as far as we know) still there
        absent = 0
        failures = 0
        last_key: str | None = None
        last_at = 0.0
        while True:
            self.polls += 1
            found = await client.find()
            if not found:
                absent += 1
                failures = 0
                if on_reader and absent >= settings.removal_polls:
                    on_reader = False
                    last_at = time.monotonic()
                    self._emit(CardRemoved())
            elif not on_reader:
                absent = 0
                try:
                    presented = await client.read(
                        fingerprint=settings.fingerprint,
                        additional_address=settings.additional_address,
                    )
                except (CardRejected, UnknownCardType) as err:
                    on_reader = True  # told once per placement, not at every poll
                    self._emit(CardProblem(str(err), err.status))
                except ReaderFault:
                    raise
                except ReaderStatusError as err:
                    failures += 1
                    if failures == settings.problem_after:
                        self._emit(CardProblem(str(err), err.status))
                except Gat467Error as err:  # a read answer that does not decode
                    failures += 1
                    if failures == settings.problem_after:
                        self._emit(CardProblem(f"the card's data cannot be decoded: {err}"))
                else:
                    on_reader = True
                    failures = 0
                    self.reads += 1
                    now = time.monotonic()
                    same = presented.key == last_key
                    if same and now - last_at < settings.debounce_s:
                        self.suppressed += 1
                    else:
                        self._emit(presented)
                    last_key, last_at = presented.key, now
            else:
                absent = 0
                last_at = time.monotonic()
            await asyncio.sleep(settings.poll_interval_s)
