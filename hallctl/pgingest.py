"""``hallctl ingest --db postgresql://…``: one stateless worker of a scale-out ingest.

Run as many as the load needs, each with its own ``--client-id``: they share the halls'
events through an MQTT 5 shared subscription (``$share/{group}/hall/v1/+/event/#``, and
the same for ``reply`` and ``metrics``), so the broker hands each message to one of them.
A worker keeps nothing in memory that another needs: every batch is one PostgreSQL
transaction that only inserts (the events and the seqs that arrived; hallctl/pgstore.py),
and three sweeps — the marks (each hall's contiguous high-water mark), the gaps (replay
requests) and the acks — run on whichever worker takes the database's advisory lock
first, so a gap is asked for once and a hall gets at most one ack per ``--ack-interval``,
always its contiguous mark, only once the events under it are committed.

A worker that dies loses nothing: it PUBACKs a message to the broker only once the batch
holding it is committed (paho's manual ack), so what it had received but not committed
is still the broker's, in the worker's persistent session, and is delivered again when
the worker comes back with the same ``--client-id``. The worker's own publishes (acks,
replay requests) go out on a second connection, so their PUBACKs never wait behind a
flood of events coming in (``--receive-maximum`` can also bound that flood where the
broker keeps to it). What a worker that never comes back
held is not lost either: it was never acked to the hall, so it shows up as a gap (later
events, or the hall's ``metrics`` saying what it published) that a sweep asks the hall
to replay.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiomqtt
import psycopg
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
from hallctl.broker import EXIT_OK, BrokerOptions, HallctlError, _expiry, _hall_of, _json
from hallctl.gaps import MAX_REPLAY_INTERVAL_S
from hallctl.ingest import REPLAY_CHUNK, REPLAY_EXPIRY_S, serve
from hallctl.pgstore import Batch, PgStore, Row
from hallctl.refusals import TYPE as ACK_REFUSED
from hallctl.refusals import AckRefusals

log = logging.getLogger("hallctl")

DEFAULT_GROUP = "ingest"
DEFAULT_ACK_INTERVAL_S = 1.0
# A hall is acked once this many of its stored events are not acked yet, or once the
# oldest of them was stored this long ago, whichever comes first (and never more often
# than --ack-interval): ≤ 1/50 ack per event while a hall sends fast, at most one per
# 30 s while it sends slowly. (20 s gave 0.054 acks per event in a catch-up where the
# ingest stored 0.76 events/s per hall: 30 s keeps ≤ 0.05 down to 0.67.)
DEFAULT_ACK_EVENTS = 50
DEFAULT_ACK_AGE_S = 30.0
DEFAULT_BATCH = 500
# The gap sweep waits for every worker to have committed what it had received by a time
# (its drained mark) before it asks for a gap or asks again; if some worker's queue never
# lets that be known, it asks after this long anyway (so a real gap is never left).
DRAIN_FALLBACK_S = 600.0
# The worker's own publishes (acks, replay requests) wait this long for their PUBACK; a
# timeout only drops the connection, never a received message (it is PUBACKed after its
# commit), but a connection dropped for nothing is a reconnect and a redelivery.
PUBLISH_TIMEOUT_S = 60.0
# MQTT's largest: the broker may send this many events not yet committed.
DEFAULT_RECEIVE_MAXIMUM = 65535
# Acks in flight at once in one sweep.
ACK_WINDOW = 64
# A batch that met another worker's transaction in a deadlock is tried again this often.
RETRIES = 5
CLOSE_TIMEOUT_S = 5.0


@dataclass
class WorkerStats:
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    batches: int = 0
    replays_requested: int = 0
    acks: int = 0


class ParseError(ValueError):
    pass


def to_row(event: EventEnvelope) -> Row:
    """The events table's row; ``day`` is the hall's local date of ``at``."""
    try:
        at = dt.datetime.fromisoformat(event.at)
    except ValueError as err:
        raise ParseError(f"at {event.at!r} is not an ISO 8601 time") from err
    if at.tzinfo is None:
        raise ParseError(f"at {event.at!r} has no UTC offset")
    return Row(
        hall=event.hall,
        epoch=event.epoch,
        seq=event.seq,
        day=at.date(),
        id=event.id,
        type=event.type,
        at=at,
        clock_ok=event.clock_ok,
        data=event.data,
    )


class PgIngest:
    """One worker: receive a batch → one transaction; a ticker for the two sweeps."""

    def __init__(
        self,
        store: PgStore,
        sweeper: PgStore,
        *,
        hall: str = "+",
        group: str = DEFAULT_GROUP,
        batch: int = DEFAULT_BATCH,
        gap_timeout: float = 2.0,
        drain_fallback: float = DRAIN_FALLBACK_S,
        ack_interval: float = DEFAULT_ACK_INTERVAL_S,
        ack_events: int = DEFAULT_ACK_EVENTS,
        ack_age: float = DEFAULT_ACK_AGE_S,
        receive_maximum: int | None = None,
        until_complete: int | None = None,
        make_id: Callable[[], str] = lambda: f"ingest-{uuid.uuid4()}",
    ) -> None:
        self.store = store  # the batches' connection
        self.sweeper = sweeper  # the sweeps' connection (runs while a batch waits)
        self.hall = hall
        self.group = group
        self.batch = max(1, batch)
        self.gap_timeout = gap_timeout
        self.drain_fallback = drain_fallback
        self.ack_interval = ack_interval
        self.ack_events = max(1, ack_events)
        self.ack_age = max(0.0, ack_age)
        # Always sent: mosquitto 2.0 gives a client that sends none its
        # max_inflight_messages (20 by default), and a worker that PUBACKs after each
        # commit then gets batches of 20. A tight window cost two thirds of the
        # throughput on mosquitto 2.0.11, which does not keep to it anyway.
        self.receive_maximum = receive_maximum or DEFAULT_RECEIVE_MAXIMUM
        self.until_complete = until_complete
        self.make_id = make_id
        self.stats = WorkerStats()
        self.refusals = AckRefusals()
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._warned: set[str] = set()
        # How long what this worker has received and not yet taken will take to commit
        # (its queue's length × the time a message took lately), written to ``workers``
        # for whoever watches the ingest (the gap sweep goes by the drained marks).
        self.backlog_s = 0.0
        # Drained mark (the loop's clock): every message received before it is committed;
        # checkpoints (messages taken + queued then, time) not yet committed through.
        self._drained = -1.0
        self._busy = True
        self._taken_at = 0.0
        self._checkpoints: collections.deque[tuple[int, float]] = collections.deque()
        self._receiving: aiomqtt.Client | None = None
        self._name = ""
        self._per_message_s = 0.0
        # A connection of its own for the worker's publishes (serve_worker's): their
        # PUBACKs then never queue behind the events the broker is sending this worker.
        self.outgoing: Callable[[], AbstractAsyncContextManager[aiomqtt.Client]] | None = None

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        base = f"$share/{self.group}/{ROOT}/{self.hall}"
        return [(f"{base}/event/#", 1), (f"{base}/reply", 1), (f"{base}/metrics", 0)]

    # -- one batch -------------------------------------------------------------------------

    async def collect(self, messages: list[aiomqtt.Message]) -> Batch:
        rows: list[Row] = []
        gone: list[tuple[str, int, int, int]] = []
        announced: list[tuple[str, int, int]] = []
        for message in messages:
            topic = message.topic.value
            kind = topic.split("/")[3] if topic.count("/") >= 3 else ""
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            hall = _hall_of(topic)
            if kind == "event":
                row = self._event(hall, bytes(payload))
                if row is not None:
                    rows.append(row)
                    if row.type == "outbox.evicted":
                        gone += self._evicted(row)
            elif kind == "reply":
                gone += await self._reply(hall, bytes(payload))
            elif kind == "metrics":
                try:
                    metrics = Metrics.model_validate_json(payload)
                except ValidationError:
                    continue
                # Only a drained outbox says "everything up to last_seq was published".
                if metrics.outbox_depth == 0 and metrics.last_seq > 0:
                    announced.append((hall, metrics.epoch, metrics.last_seq))
        return Batch(rows=rows, gone=gone, announced=announced)

    def _event(self, hall: str, payload: bytes) -> Row | None:
        try:
            event = EventEnvelope.model_validate_json(payload)
            if event.hall != hall:
                raise ParseError(f"an event of hall {event.hall} on {hall}'s topic")
            return to_row(event)
        except (ValidationError, ParseError) as err:
            self.stats.invalid += 1
            self._warn_once(f"invalid:{hall}", "%s sent an invalid event: %s", hall, err)
            return None

    def _evicted(self, row: Row) -> list[tuple[str, int, int, int]]:
        try:
            evicted = EvictedData.model_validate(row.data)
        except ValidationError as err:
            self._warn_once(f"evicted:{row.hall}", "bad outbox.evicted data: %s", err)
            return []
        for start, end in evicted.ranges:
            log.warning("%s evicted seqs %d..%d of epoch %d", row.hall, start, end, row.epoch)
        return [(row.hall, row.epoch, s, e) for s, e in evicted.ranges if 1 <= s <= e]

    async def _reply(self, hall: str, payload: bytes) -> list[tuple[str, int, int, int]]:
        try:
            reply = Reply.model_validate_json(payload)
        except ValidationError:
            return []
        result: ReplayResult | None = None
        if reply.status == "ok":
            try:
                result = ReplayResult.model_validate(reply.result or {})
            except ValidationError as err:
                self._warn_once(f"replay-result:{hall}", "bad replay_events result: %s", err)
        # The reply came in at the latest when its batch was taken: the hall publishes the
        # events after it, so what it re-sends reached the broker after that time.
        received_age = asyncio.get_running_loop().time() - self._taken_at
        asked = await self.store.take_replay(
            reply.cmd_id,
            resending=result is not None and result.resending > 0,
            received_age_s=received_age,
        )
        if asked is None:
            return []  # a reply to somebody else's command
        _, epoch, start, end = asked
        if reply.status != "ok":
            log.warning(
                "%s answered replay %d..%d with %s: %s", hall, start, end, reply.status, reply.error
            )
            return []
        if result is None or result.epoch not in (None, epoch):
            return []
        for s, e in result.missing:
            log.warning("%s no longer has seqs %d..%d of epoch %d", hall, s, e, epoch)
        return [(hall, epoch, s, e) for s, e in result.missing if 1 <= s <= e]

    async def apply(self, batch: Batch) -> None:
        for attempt in range(RETRIES):
            try:
                applied = await self.store.apply(batch)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            self.stats.stored += applied.stored
            self.stats.duplicates += applied.duplicates
            self.stats.batches += 1
            refused = [r for r in batch.rows if r.type == ACK_REFUSED]
            if refused:
                new = {(h, e, s) for h, e, s in applied.new}
                for row in refused:
                    key = (row.hall, row.epoch, row.seq)
                    if key in new:  # stored now: not a replay or a redelivery
                        new.discard(key)  # (the same event twice in one batch counts once)
                        self.refusals.note(row.hall, row.data)
            return

    async def receive(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        loop = asyncio.get_running_loop()
        taken = 0  # messages taken from the client's queue, all committed once a batch is
        self._checkpoints.clear()  # (counted on an earlier connection)
        while True:
            self._busy = False
            batch = [await anext(messages)]
            self._busy = True
            while len(messages) > 0 and len(batch) < self.batch:
                batch.append(await anext(messages))
            began = self._taken_at = loop.time()
            taken += len(batch)
            # Every message received before now is in this batch or still queued: once the
            # first ``taken + queued`` are committed, this worker has drained past now. Not
            # when the window of messages not PUBACKed is full: the broker may then hold
            # more back for this worker.
            queued = len(messages)
            if queued + len(batch) < self.receive_maximum:
                self._checkpoints.append((taken + queued, began))
            await self.apply(await self.collect(batch))
            # Committed: now the broker may forget them (in the order they came, as MQTT
            # wants). Invalid ones too: a redelivery would not make them valid.
            for message in batch:
                if message.qos > 0:
                    client._client.ack(message.mid, message.qos)
            while self._checkpoints and self._checkpoints[0][0] <= taken:
                self._drained = max(self._drained, self._checkpoints.popleft()[1])
            each = (loop.time() - began) / len(batch)
            self._per_message_s += 0.3 * (each - self._per_message_s)
            self.backlog_s = len(messages) * self._per_message_s

    def drained_age(self, client: aiomqtt.Client) -> float | None:
        """How long ago this worker last had committed everything it had received then
        (None: not yet known). Idle with nothing queued: now."""
        now = asyncio.get_running_loop().time()
        if not self._busy and len(client.messages) == 0:
            self._drained = now
        if self._drained < 0:
            return None
        return max(0.0, now - self._drained)

    # -- the sweeps ------------------------------------------------------------------------

    async def request_replays(self, client: aiomqtt.Client) -> None:
        asks = await self.sweeper.due_gaps(
            timeout_s=self.gap_timeout,
            max_wait_s=MAX_REPLAY_INTERVAL_S,
            chunk=REPLAY_CHUNK,
            make_id=self.make_id,
            unanswered_s=REPLAY_EXPIRY_S,
            fallback_s=self.drain_fallback,
        )
        for cmd_id, gap in asks or []:
            command = ReplayEvents(cmd_id=cmd_id, from_seq=gap.start, to_seq=gap.end)
            log.info(
                "asking %s to replay %d..%d of epoch %d", gap.hall, gap.start, gap.end, gap.epoch
            )
            await client.publish(
                f"{ROOT}/{gap.hall}/cmd/replay_events",
                _json(command),
                qos=1,
                properties=_expiry(REPLAY_EXPIRY_S),
                timeout=PUBLISH_TIMEOUT_S,
            )
            self.stats.replays_requested += 1

    async def send_acks(self, client: aiomqtt.Client, *, final: bool = False) -> bool:
        """False when another worker held the ack sweep. ``final``: every hall whose mark
        moved, now (``--until-complete``)."""
        window = asyncio.Semaphore(ACK_WINDOW)

        async def one(hall: str, epoch: int, seq: int) -> None:
            async with window:
                await client.publish(
                    f"{ROOT}/{hall}/ack",
                    _json(Ack(epoch=epoch, seq=seq)),
                    qos=1,
                    timeout=PUBLISH_TIMEOUT_S,
                )

        async def send(due: list[tuple[str, int, int]]) -> None:
            async with asyncio.TaskGroup() as group:
                for hall, epoch, seq in due:
                    group.create_task(one(hall, epoch, seq))
            self.stats.acks += len(due)

        if final:
            swept = await self.sweeper.ack_sweep(send, interval_s=0.0, events=1, age_s=0.0)
        else:
            swept = await self.sweeper.ack_sweep(
                send, interval_s=self.ack_interval, events=self.ack_events, age_s=self.ack_age
            )
        return swept is not None

    async def complete(self) -> bool:
        if self.until_complete is None:
            return False
        marks = await self.sweeper.marks()
        return bool(marks) and all(seq >= self.until_complete for _, seq in marks.values())

    async def tick(self, client: aiomqtt.Client, receiver: asyncio.Task[None]) -> None:
        interval = min(0.25, self.gap_timeout / 4, self.ack_interval / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweeper.advance()
                drained = None
                if self._receiving is not None:
                    drained = self.drained_age(self._receiving)
                await self.sweeper.note_backlog(self._name, self.backlog_s, drained)
                await self.request_replays(client)
                await self.send_acks(client)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as err:
                # A batch's upsert of a hall's top met the marks' sweep: PostgreSQL rolled
                # one back; the sweeps are idempotent, the next round does it.
                log.info("a sweep met a batch (%s); again next round", err.sqlstate)
                continue
            self.refusals.due()
            if await self.complete():
                # The final marks, now (another worker may hold the sweep for a moment).
                for _ in range(100):
                    if await self.send_acks(client, final=True):
                        break
                    await asyncio.sleep(interval)
                receiver.cancel()
                self.done.set()
                return

    async def run_connected(self, client: aiomqtt.Client) -> None:
        async with contextlib.AsyncExitStack() as stack:
            out = client
            if self.outgoing is not None:
                out = await stack.enter_async_context(self.outgoing())
            await self._run(client, out)

    async def _run(self, client: aiomqtt.Client, out: aiomqtt.Client) -> None:
        """Receive on ``client``; publish acks and replay requests on ``out``."""
        self._name = client.identifier
        self._receiving = client
        for topic, qos in self.subscriptions:
            await client.subscribe(topic, qos=qos)
        log.info(
            "ingest worker %s subscribed to %s",
            client.identifier,
            ", ".join(t for t, _ in self.subscriptions),
        )
        self.ready.set()
        async with asyncio.TaskGroup() as group:
            receiver = group.create_task(self.receive(client), name="ingest-events")
            group.create_task(self.tick(out, receiver), name="ingest-sweeps")
        # (receiving ends only when the ticker found every hall complete)


async def serve_worker(broker: BrokerOptions, worker: PgIngest, client_id: str) -> None:
    """Run ``worker`` until complete or cancelled: PUBACKs after commit, a bounded window
    of unacknowledged messages, and the worker's publishes on a second connection
    (``{client_id}-out``, clean, not persistent: an ack or a replay request lost with it
    is sent again by a later sweep)."""

    @contextlib.asynccontextmanager
    async def outgoing() -> AsyncIterator[aiomqtt.Client]:
        client = broker.client(f"{client_id}-out")
        # A sweep's acks are in flight together (aiomqtt warns above 10 by default).
        client.pending_calls_threshold = 2 * ACK_WINDOW
        try:
            async with client:
                yield client
        finally:
            # A lost broker is reported by the receiving connection; this one's loss,
            # which nothing awaits, would otherwise be logged as "never retrieved".
            lost = client._disconnected
            if lost.done() and not lost.cancelled():
                lost.exception()

    worker.outgoing = outgoing
    await serve(
        broker,
        worker,
        client_id,
        manual_ack=True,
        receive_maximum=worker.receive_maximum,
    )


async def open_worker(url: str, **options: object) -> PgIngest:
    """Connect (twice: batches and sweeps), migrate, and build a worker."""
    try:
        store = await PgStore.connect(url)
        sweeper = await PgStore.connect(url)
    except psycopg.OperationalError as err:
        raise HallctlError(f"cannot connect to PostgreSQL: {err}".strip()) from err
    version = await store.migrate()
    log.info("PostgreSQL schema at version %d", version)
    return PgIngest(store, sweeper, **options)  # type: ignore[arg-type]


async def close_worker(worker: PgIngest) -> None:
    """Close both connections; a connection still busy with a cancelled query gets a few
    seconds, then the process's exit closes it (stopping must never hang)."""
    for store in (worker.store, worker.sweeper):
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await store.close()
        except TimeoutError:
            log.warning("a PostgreSQL connection did not close within %gs", CLOSE_TIMEOUT_S)


async def ingest_postgres(args: argparse.Namespace) -> int:
    broker = BrokerOptions.from_args(args)
    worker = await open_worker(
        args.db,
        hall=args.hall,
        group=args.group,
        batch=args.batch,
        gap_timeout=args.gap_timeout,
        ack_interval=args.ack_interval,
        ack_events=args.ack_events,
        ack_age=args.ack_age,
        receive_maximum=args.receive_maximum,
        until_complete=args.until_complete,
    )
    try:
        await serve_worker(broker, worker, args.client_id)
    finally:
        await close_worker(worker)
        worker.refusals.flush()
        s = worker.stats
        log.info(
            "ingest worker stopped: %d stored, %d duplicates, %d invalid, %d batches,"
            " %d replays asked, %d acks",
            s.stored,
            s.duplicates,
            s.invalid,
            s.batches,
            s.replays_requested,
            s.acks,
        )
    return EXIT_OK
