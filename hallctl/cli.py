"""``hallctl``: central's console for the halls, over the same MQTT 5 contract.

``fleet`` lists the halls from their retained ``state``; ``tail`` prints events; ``cmd``
sends one command and prints its reply; ``ingest`` is a reference consumer that stores
events in SQLite, deduplicated on ``(hall, epoch, seq)``, asks for ``replay_events`` when
a gap stays open, and acks what it has committed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ValidationError

from agent.central.contract import (
    COMMANDS,
    ROOT,
    Ack,
    Birth,
    EventEnvelope,
    EvictedData,
    Metrics,
    ReplayEvents,
    ReplayResult,
    Reply,
    Will,
    validate_incoming,
)
from hallctl.gaps import Range, Tracker
from hallctl.store import EventStore

log = logging.getLogger("hallctl")

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# How long the broker keeps ingest's session (and the events queued in it) while ingest is
# down: a restart or an upgrade of the consumer must not lose a single event.
INGEST_SESSION_EXPIRY_S = 7 * 86400
# A replay request that sits in an offline hall's session longer than this is stale: the
# gap will be asked for again once the hall is back.
REPLAY_EXPIRY_S = 60
RECONNECT_MAX_S = 30.0
# One replay_events asks for at most this many seqs (the hall refuses more than 100,000);
# the rest of a long gap is asked for once this part has arrived.
REPLAY_CHUNK = 10_000
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class HallctlError(Exception):
    """A problem the operator can fix; printed without a traceback."""


class UsageError(HallctlError):
    """The command line is wrong (exit 2)."""


# -- payloads that ride inside the contract's generic fields -------------------------------


# -- broker connection ---------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerOptions:
    host: str
    port: int
    tls: aiomqtt.TLSParameters | None
    username: str | None
    password: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BrokerOptions:
        parts = urlsplit(args.broker)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise UsageError(
                f"--broker {args.broker!r}: write mqtts://HOST:8883 or mqtt://HOST:1883"
            )
        tls_files = (args.ca, args.cert, args.key)
        if parts.scheme == "mqtt" and any(tls_files):
            raise UsageError("--ca/--cert/--key are given but --broker is plaintext mqtt://")
        if (args.cert is None) != (args.key is None):
            raise UsageError("--cert and --key go together")
        for path in tls_files:
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{path}: no such file")
        tls = None
        if parts.scheme == "mqtts":
            tls = aiomqtt.TLSParameters(
                ca_certs=args.ca and str(args.ca),
                certfile=args.cert and str(args.cert),
                keyfile=args.key and str(args.key),
            )
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            tls=tls,
            username=args.username,
            password=os.environ.get("HALLCTL_PASSWORD"),
        )

    def client(
        self,
        identifier: str | None = None,
        *,
        persistent: bool = False,
        timeout: float = 10.0,
    ) -> aiomqtt.Client:
        properties = None
        if persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = INGEST_SESSION_EXPIRY_S
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier or f"hallctl-{uuid.uuid4().hex[:12]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            username=self.username,
            password=self.password,
            tls_params=self.tls,
            timeout=timeout,
            keepalive=30,
        )


def _hall_of(topic: str) -> str:
    """``hall/v1/{hall}/...`` → ``{hall}``."""
    parts = topic.split("/")
    return parts[2] if len(parts) > 2 else ""


def _expiry(seconds: float) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = max(1, math.ceil(seconds))
    return properties


def _json(model: BaseModel) -> str:
    return model.model_dump_json(exclude_none=True)


@contextlib.asynccontextmanager
async def _connected(broker: BrokerOptions, **options: Any) -> AsyncIterator[aiomqtt.Client]:
    try:
        async with broker.client(**options) as client:
            yield client
    except aiomqtt.MqttError as err:
        raise HallctlError(f"broker {broker.host}:{broker.port}: {err}") from err


# -- fleet ---------------------------------------------------------------------------------


async def fleet(args: argparse.Namespace) -> int:
    """Every hall's retained ``state``: retained messages arrive right after subscribing."""
    states: dict[str, dict[str, Any]] = {}
    async with _connected(BrokerOptions.from_args(args)) as client:
        await client.subscribe(f"{ROOT}/+/state", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.wait):
                async for message in client.messages:
                    hall = _hall_of(message.topic.value)
                    if not message.payload:  # a cleared retained state
                        states.pop(hall, None)
                        continue
                    states[hall] = _state_row(hall, message.payload)
    rows = [states[hall] for hall in sorted(states)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    columns = ("hall", "state", "boot_id", "session", "agent", "config", "started_at")
    table = [columns, *([str(row.get(c) or "-") for c in columns] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    online = sum(1 for row in rows if row["state"] == "online")
    print(f"{len(rows)} halls: {online} online, {len(rows) - online} offline or unknown")
    return EXIT_OK


def _state_row(hall: str, payload: bytes | bytearray) -> dict[str, Any]:
    try:
        data = json.loads(payload)
        state: Birth | Will = (
            Birth.model_validate(data) if data.get("online") else Will.model_validate(data)
        )
    except (ValueError, AttributeError, ValidationError) as err:
        return {"hall": hall, "state": "invalid", "error": str(err).splitlines()[0]}
    row: dict[str, Any] = {"hall": hall, **state.model_dump(mode="json")}
    if isinstance(state, Birth):
        row["state"] = "online"
        row["agent"] = state.agent_version
        row["config"] = state.config_version
    else:
        row["state"] = "offline (clean stop)" if state.clean else "offline"
    return row


# -- tail ----------------------------------------------------------------------------------


async def tail(args: argparse.Namespace) -> int:
    printed = 0
    async with _connected(BrokerOptions.from_args(args)) as client:
        topic = f"{ROOT}/{args.hall}/event/#"
        await client.subscribe(topic, qos=1)
        log.debug("subscribed to %s", topic)
        async for message in client.messages:
            try:
                event = EventEnvelope.model_validate_json(message.payload)
            except ValidationError as err:
                print(f"invalid event on {message.topic.value}: {err}", file=sys.stderr)
                continue
            if args.type and not event.type.startswith(args.type):
                continue
            print(_json(event) if args.json else event_line(event), flush=True)
            printed += 1
            if args.count and printed >= args.count:
                break
    return EXIT_OK


def event_line(event: EventEnvelope) -> str:
    clock = "" if event.clock_ok else " (clock?)"
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"{event.at}{clock} {event.hall} {event.epoch}:{event.seq} {event.type} {data}"


# -- cmd -----------------------------------------------------------------------------------


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value is JSON when it parses as JSON (``3``, ``true``, ``[...]``),
    else the plain string (``w1``, ``A012``)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r}: parameters are written key=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def build_command(name: str, pairs: Sequence[str], *, cmd_id: str | None = None) -> Any:
    """The validated payload for ``cmd/{name}``; HallctlError says what to fix."""
    model = COMMANDS.get(name)
    if model is None:
        raise UsageError(f"unknown command {name!r}; the commands are: {', '.join(COMMANDS)}")
    payload = {"cmd_id": cmd_id or f"hallctl-{uuid.uuid4()}", **parse_params(pairs)}
    try:
        command = validate_incoming(model, payload)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in err.errors()
        )
        fields = ", ".join(f for f in model.model_fields if f != "cmd_id")
        raise UsageError(f"{name}: {problems} (its parameters: {fields})") from err
    return command.model_dump(mode="json", exclude_unset=True)


async def cmd(args: argparse.Namespace) -> int:
    if args.raw:
        payload = {"cmd_id": f"hallctl-{uuid.uuid4()}", **parse_params(args.params)}
    else:
        payload = build_command(args.name, args.params)
    cmd_id = str(payload["cmd_id"])
    broker = BrokerOptions.from_args(args)
    identifier = f"hallctl-{uuid.uuid4().hex[:12]}"
    # Under the hall's own subtree: broker ACLs let a hall publish nowhere else.
    response_topic = f"{ROOT}/{args.hall}/reply/{identifier}"
    properties = _expiry(args.timeout)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = cmd_id.encode()
    reply: Reply | None = None
    async with _connected(broker, identifier=identifier) as client:
        await client.subscribe(response_topic, qos=1)
        # Also the hall's common reply topic, for a hall that ignores the response topic.
        await client.subscribe(f"{ROOT}/{args.hall}/reply", qos=1)
        await client.publish(
            f"{ROOT}/{args.hall}/cmd/{args.name}",
            json.dumps(payload, ensure_ascii=False),
            qos=1,
            properties=properties,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                async for message in client.messages:
                    with contextlib.suppress(ValidationError):
                        candidate = Reply.model_validate_json(message.payload)
                        if candidate.cmd_id == cmd_id:
                            reply = candidate
                            break
    if reply is None:
        print(
            f"no reply from {args.hall} within {args.timeout:g}s; the command expires"
            " at the broker and will not run later",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(json.dumps(reply.model_dump(mode="json"), ensure_ascii=False, indent=2))
    return EXIT_OK if reply.status == "ok" else EXIT_FAILED


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
    ) -> None:
        self.store = store
        self.hall = hall
        self.ack_every = max(1, ack_every)
        self.gap_timeout = gap_timeout
        self.until_complete = until_complete
        self.tracker = Tracker()
        self.store.restore(self.tracker, time.monotonic())
        self.acked: dict[str, tuple[int, int]] = {}
        self.replays: dict[str, tuple[str, int, Range]] = {}  # cmd_id → what was asked
        self.stats = IngestStats()
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
            now = time.monotonic()
            moved = {hall for message in batch if (hall := self.handle(message, now))}
            self.store.commit()
            await self.ack(client, moved)
        ticker.cancel()

    async def request_replays(self, client: aiomqtt.Client) -> None:
        due = self.tracker.due(time.monotonic(), self.gap_timeout, limit=REPLAY_CHUNK)
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


async def serve(broker: BrokerOptions, consumer: Ingest, client_id: str) -> None:
    """Run ``consumer`` until it is complete (or cancelled), reconnecting as needed."""
    delay = 1.0
    failing = False
    while True:
        failure: BaseException | None = None
        try:
            async with broker.client(client_id, persistent=True) as client:
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
        delay = min(delay * 2, RECONNECT_MAX_S)


async def ingest(args: argparse.Namespace) -> int:
    broker = BrokerOptions.from_args(args)
    store = EventStore(args.db)
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


# -- files ---------------------------------------------------------------------------------


async def files(args: argparse.Namespace) -> int:
    """Receive the halls' document uploads into ``--out`` (hallctl/files.py)."""
    from hallctl.files import FileReceiver, receive_files

    broker = BrokerOptions.from_args(args)
    receiver = FileReceiver(args.out)
    failing = False
    while True:
        try:
            async with broker.client(args.client_id, persistent=True) as client:
                if failing:
                    log.info("connected to the broker again")
                failing = False
                await receive_files(client, receiver, args.hall)
        except aiomqtt.MqttError as err:
            if not failing:
                log.warning("broker %s:%d: %s; retrying", broker.host, broker.port, err)
            failing = True
            await asyncio.sleep(RECONNECT_MAX_S / 4)


# -- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallctl", description="Central's console for the halls (MQTT 5 contract)."
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("HALLCTL_BROKER", DEFAULT_BROKER),
        help="mqtt://HOST:1883 or mqtts://HOST:8883 (env HALLCTL_BROKER)",
    )
    parser.add_argument("--ca", type=Path, help="CA certificate to trust (PEM), for mqtts")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), for mqtts")
    parser.add_argument("--key", type=Path, help="client certificate's key (PEM)")
    parser.add_argument("--username", help="password from env HALLCTL_PASSWORD")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fleet", help="list halls from their retained state")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect (default 2)")
    p.set_defaults(run=fleet)

    p = sub.add_parser("tail", help="print events as they arrive, one line each")
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--type", default="", help="event type prefix, e.g. ticket. or rating")
    p.add_argument("--count", type=int, default=0, help="stop after N events")
    p.add_argument("--json", action="store_true", help="print whole envelopes")
    p.set_defaults(run=tail)

    p = sub.add_parser("cmd", help="send one command and print its reply")
    p.add_argument("hall")
    p.add_argument("name", help=", ".join(COMMANDS))
    p.add_argument("params", nargs="*", metavar="key=value", help="JSON values or strings")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (also its expiry)")
    p.add_argument("--raw", action="store_true", help="send without validating (tests a hall)")
    p.set_defaults(run=cmd)

    p = sub.add_parser("ingest", help="reference consumer: store, dedupe, replay gaps, ack")
    p.add_argument("--db", type=Path, required=True, help="SQLite file")
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--ack-every", type=int, default=100, help="events per commit and ack")
    p.add_argument(
        "--gap-timeout", type=float, default=2.0, help="seconds a gap may stay open (default 2)"
    )
    p.add_argument("--client-id", default="hallctl-ingest", help="fixed, for the session")
    p.add_argument(
        "--until-complete",
        type=int,
        metavar="N",
        help="exit once seqs 1..N of every hall's current epoch are stored",
    )
    p.set_defaults(run=ingest)

    p = sub.add_parser("files", help="receive captured documents: chunks in, checked files out")
    p.add_argument("--out", type=Path, required=True, help="folder; one subfolder per hall")
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--client-id", default="hallctl-files", help="fixed, for the session")
    p.set_defaults(run=files)
    return parser


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run one subcommand; what a person can fix is printed, not raised."""
    args = _parser().parse_args(argv)
    if args.verbose:
        log.setLevel(logging.DEBUG)
    try:
        code: int = await args.run(args)
    except UsageError as err:
        print(f"hallctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    except HallctlError as err:
        print(f"hallctl: {err}", file=sys.stderr)
        return EXIT_FAILED
    return code


async def _until_signal(argv: Sequence[str] | None) -> int:
    """SIGINT and SIGTERM end the command orderly (ingest closes its database)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[int] = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await run(argv)
    except asyncio.CancelledError:
        if stopped:
            return EXIT_OK
        raise


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mqtt").setLevel(logging.WARNING)
    return asyncio.run(_until_signal(argv))


if __name__ == "__main__":
    sys.exit(main())
