"""``hallctl ingest``: a reference consumer that stores events in SQLite, deduplicated on
``(hall, epoch, seq)``, asks for ``replay_events`` when a gap stays open, and acks what it
has committed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiomqtt
from pydantic import ValidationError

from agent.central.contract import (
    ROOT,
    Ack,
    EventEnvelope,
    EvictedData,
    Metrics,
    ReplayEvents,
    ReplayResult,
    Reply,
)
from hallctl.broker import (
    EXIT_OK,
    BrokerOptions,
    _expiry,
    _hall_of,
    _json,
)
from hallctl.gaps import Range, Tracker
from hallctl.refusals import TYPE as ACK_REFUSED
from hallctl.refusals import AckRefusals
from hallctl.store import EventStore

log = logging.getLogger("hallctl")

# A replay request that sits in an offline hall's session longer than this is stale: the
# gap will be asked for again once the hall is back.
REPLAY_EXPIRY_S = 60
# The ingest retries a lost broker at least this often (seconds). Central runs a few
# consumers, not a city of halls, so there is no reconnect storm to spread; and mosquitto 2
# does not restore shared subscriptions at its restart, so until the workers subscribe
# again the halls' events go nowhere (they come back as replays, see
# docs/central-integration.md): the sooner the better.
INGEST_RECONNECT_MAX_S = 5.0
# One replay_events asks for at most this many seqs (the hall refuses more than 100,000);
# the rest of a long gap is asked for once this part has arrived.
REPLAY_CHUNK = 10_000


# -- ingest: storage -----------------------------------------------------------------------

# -- ingest: the consumer ------------------------------------------------------------------


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    replays_requested: int = 0
    acks: int = 0


class Ingest:
    """One consumer: receive → store → commit → ack, and a ticker asking for replays."""

    def __init__(
        self,
        store: EventStore,
        *,
        hall: str = "+",
        ack_every: int = 100,
        gap_timeout: float = 2.0,
        until_complete: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        # Monotonic seconds: when a gap opened and when it is due for a replay request.
        self.clock = clock
        self.hall = hall
        self.ack_every = max(1, ack_every)
        self.gap_timeout = gap_timeout
        self.until_complete = until_complete
        self.tracker = Tracker()
        self.store.restore(self.tracker, self.clock())
        self.acked: dict[str, tuple[int, int]] = {}
        self.replays: dict[str, tuple[str, int, Range]] = {}  # cmd_id → what was asked
        self.stats = IngestStats()
        self.refusals = AckRefusals(clock=clock)
        self.ready = asyncio.Event()  # set while subscribed
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        base = f"{ROOT}/{self.hall}"
        return [(f"{base}/event/#", 1), (f"{base}/reply", 1), (f"{base}/metrics", 0)]

    def complete(self) -> bool:
        if self.until_complete is None or not self.tracker.current:
            return False
        return all(
            self.tracker.streams[(hall, epoch)].high_water >= self.until_complete
            for hall, epoch in self.tracker.current.items()
        )

    # Each handler returns the hall whose high-water mark may have moved, if any.

    def handle(self, message: aiomqtt.Message, now: float) -> str | None:
        topic = message.topic.value
        kind = topic.split("/")[3] if topic.count("/") >= 3 else ""
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        if kind == "event":
            return self._event(topic, payload, now)
        if kind == "reply":
            return self._reply(topic, payload, now)
        if kind == "metrics":
            self._metrics(topic, payload, now)
        return None

    def _event(self, topic: str, payload: bytes, now: float) -> str | None:
        hall = _hall_of(topic)
        try:
            event = EventEnvelope.model_validate_json(payload)
        except ValidationError as err:
            self.stats.invalid += 1
            self._warn_once(f"invalid:{hall}", "%s sent an invalid event envelope: %s", hall, err)
            return None
        if event.hall != hall:
            self.stats.invalid += 1
            self._warn_once(
                f"foreign:{hall}", "%s published an event of hall %s; ignored", hall, event.hall
            )
            return None
        added = self.tracker.add(hall, event.epoch, event.seq, now)
        if added.new_epoch:
            self._epoch_changed(hall, event.epoch)
        if self.store.store(event):
            self.stats.stored += 1
            if event.type == ACK_REFUSED:
                self.refusals.note(hall, event.data)
        else:
            self.stats.duplicates += 1
            stored = self.store.stored_id(hall, event.epoch, event.seq)
            if stored != event.id:
                self._warn_once(
                    f"conflict:{hall}:{event.epoch}",
                    "%s sent seq %d of epoch %d twice with different ids (%s, %s); kept the first",
                    hall,
                    event.seq,
                    event.epoch,
                    stored,
                    event.id,
                )
        if event.type == "outbox.evicted":
            self._evicted(event, now)
        high_water = self.tracker.stream(hall, event.epoch).high_water
        self.store.set_high_water(hall, event.epoch, high_water)
        return hall

    def _epoch_changed(self, hall: str, epoch: int) -> None:
        older = sorted(e for (h, e) in self.tracker.streams if h == hall and e < epoch)
        if not older:
            return
        previous = self.tracker.streams[(hall, older[-1])]
        lost = previous.missing()
        log.warning(
            "%s started epoch %d (its store was recreated); epoch %d ends at seq %d%s",
            hall,
            epoch,
            older[-1],
            previous.top,
            f", never received: {lost}" if lost else "",
        )

    def _evicted(self, event: EventEnvelope, now: float) -> None:
        try:
            evicted = EvictedData.model_validate(event.data)
        except ValidationError as err:
            self._warn_once(f"evicted:{event.hall}", "bad outbox.evicted data: %s", err)
            return
        self._gone(event.hall, event.epoch, evicted.ranges, now, "evicted")

    def _gone(self, hall: str, epoch: int, ranges: list[Range], now: float, why: str) -> None:
        stream = self.tracker.stream(hall, epoch)
        for start, end in ranges:
            if 1 <= start <= end:
                if stream.mark_gone(start, end, now):
                    log.warning("%s %s seqs %d..%d of epoch %d", hall, why, start, end, epoch)
                self.store.mark_gone(hall, epoch, start, end)
        self.store.set_high_water(hall, epoch, stream.high_water)

    def _reply(self, topic: str, payload: bytes, now: float) -> str | None:
        try:
            reply = Reply.model_validate_json(payload)
        except ValidationError:
            return None
        asked = self.replays.pop(reply.cmd_id, None)
        if asked is None:
            return None  # a reply to somebody else's command
        hall, epoch, (start, end) = asked
        if reply.status != "ok":
            log.warning(
                "%s answered replay %d..%d with %s: %s", hall, start, end, reply.status, reply.error
            )
            return None
        try:
            result = ReplayResult.model_validate(reply.result or {})
        except ValidationError as err:
            self._warn_once(f"replay-result:{hall}", "bad replay_events result: %s", err)
            return None
        if result.epoch not in (None, epoch):
            return None  # the hall's store changed since; its new epoch is a new stream
        if result.missing:
            self._gone(hall, epoch, result.missing, now, "no longer has")
            return hall
        return None

    def _metrics(self, topic: str, payload: bytes, now: float) -> None:
        try:
            metrics = Metrics.model_validate_json(payload)
        except ValidationError:
            return
        hall = _hall_of(topic)
        # Only a drained outbox says "everything up to last_seq was published": then a
        # tail we never received is a gap (no later event would ever reveal it).
        if metrics.outbox_depth == 0 and metrics.last_seq > 0:
            self.tracker.announce(hall, metrics.epoch, metrics.last_seq, now)

    async def ack(self, client: aiomqtt.Client, halls: set[str]) -> None:
        for hall in sorted(halls):
            mark = self.tracker.high_water(hall)
            if mark is None or mark[1] == 0 or self.acked.get(hall) == mark:
                continue
            epoch, seq = mark
            await client.publish(f"{ROOT}/{hall}/ack", _json(Ack(epoch=epoch, seq=seq)), qos=1)
            self.acked[hall] = mark
            self.stats.acks += 1

    async def receive(self, client: aiomqtt.Client, ticker: asyncio.Task[None]) -> None:
        """Batches of up to ``ack_every`` messages: one commit, then the acks."""
        messages = client.messages
        while not self.complete():
            batch = [await anext(messages)]
            while len(messages) > 0 and len(batch) < self.ack_every:
                batch.append(await anext(messages))
            now = self.clock()
            moved = {hall for message in batch if (hall := self.handle(message, now))}
            self.store.commit()
            await self.ack(client, moved)
        ticker.cancel()

    async def request_replays(self, client: aiomqtt.Client) -> None:
        due = self.tracker.due(self.clock(), self.gap_timeout, limit=REPLAY_CHUNK)
        for hall, epoch, (start, end) in due:
            command = ReplayEvents(cmd_id=f"ingest-{uuid.uuid4()}", from_seq=start, to_seq=end)
            self.replays[command.cmd_id] = (hall, epoch, (start, end))
            log.info("asking %s to replay %d..%d of epoch %d", hall, start, end, epoch)
            await client.publish(
                f"{ROOT}/{hall}/cmd/replay_events",
                _json(command),
                qos=1,
                properties=_expiry(REPLAY_EXPIRY_S),
            )
            self.stats.replays_requested += 1
        if len(self.replays) > 10_000:  # halls that never answer must not grow this forever
            self.replays = dict(list(self.replays.items())[-1000:])

    async def tick(self, client: aiomqtt.Client) -> None:
        interval = min(0.25, self.gap_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            await self.request_replays(client)
            self.refusals.due()

    async def run_connected(self, client: aiomqtt.Client) -> None:
        for topic, qos in self.subscriptions:
            await client.subscribe(topic, qos=qos)
        log.info(
            "ingest subscribed to %s as %s",
            ", ".join(t for t, _ in self.subscriptions),
            client.identifier,
        )
        self.ready.set()
        self.acked.clear()  # re-ack on every connect: an ack lost with a connection is resent
        await self.ack(client, set(self.tracker.current))
        async with asyncio.TaskGroup() as group:
            ticker = group.create_task(self.tick(client), name="ingest-replays")
            group.create_task(self.receive(client, ticker), name="ingest-events")


class Consumer(Protocol):
    """What ``serve`` runs: the SQLite ingest, or a PostgreSQL worker (hallctl/pgingest.py)."""

    @property
    def ready(self) -> asyncio.Event: ...

    async def run_connected(self, client: aiomqtt.Client) -> None: ...


async def serve(
    broker: BrokerOptions,
    consumer: Consumer,
    client_id: str,
    *,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
) -> None:
    """Run ``consumer`` until it is complete (or cancelled), reconnecting as needed
    (``manual_ack``, ``receive_maximum``: BrokerOptions.client's)."""
    delay = 1.0
    failing = False
    while True:
        failure: BaseException | None = None
        try:
            async with broker.client(
                client_id,
                persistent=True,
                manual_ack=manual_ack,
                receive_maximum=receive_maximum,
            ) as client:
                if failing:
                    log.info("connected to the broker again")
                failing = False
                delay = 1.0
                await consumer.run_connected(client)
        except* aiomqtt.MqttError as group:
            failure = group.exceptions[0]
        else:
            return
        finally:
            consumer.ready.clear()
        if not failing:
            log.warning("broker %s:%d: %s; retrying", broker.host, broker.port, failure)
        failing = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, INGEST_RECONNECT_MAX_S)


async def ingest(args: argparse.Namespace) -> int:
    """The SQLite ingest (``--db FILE``); hallctl/pgingest.py runs ``--db postgresql://…``."""
    broker = BrokerOptions.from_args(args)
    store = EventStore(Path(args.db))
    consumer = Ingest(
        store,
        hall=args.hall,
        ack_every=args.ack_every,
        gap_timeout=args.gap_timeout,
        until_complete=args.until_complete,
    )
    try:
        await serve(broker, consumer, args.client_id)
    finally:
        store.close()
        consumer.refusals.flush()
        s = consumer.stats
        log.info(
            "ingest stopped: %d stored, %d duplicates, %d invalid, %d replays asked, %d acks",
            s.stored,
            s.duplicates,
            s.invalid,
            s.replays_requested,
            s.acks,
        )
    return EXIT_OK
