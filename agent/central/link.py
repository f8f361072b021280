"""The link to central over MQTT 5 (aiomqtt 2.x): session, birth and will, the outbox
publisher, central's acks, commands and config pushes.

One connection at a time. The link never decides anything about the queue: commands go
through the hall's single writer like local operations, and events leave the store's
outbox strictly in ``seq`` order. Whatever happens to the network, the hall keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import agent
from agent.central.commands import CommandDesk, CommandHandlers
from agent.central.contract import Birth, DeviceState, Metrics, Topics, Will
from agent.central.pushed import ConfigDesk
from agent.central.state import LinkCounters, LinkState
from agent.config import HallAgentConfig, MqttConfig
from agent.errors import HallAgentError
from agent.runtime.devices import DeviceBoard, DeviceHealth
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import Store, StoredEvent, StoreError, Written
from agent.runtime.tasks import BackgroundTasks

if TYPE_CHECKING:
    # aiomqtt and paho are imported when the link first connects (an offline hall, one
    # without mqtt.url, never loads them: docs/benchmarks.md, "Start and client commands").
    import aiomqtt
    from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

# How many unpublished events one read of the store brings.
_BATCH = 256
# The first connection after start waits a random time up to this (seconds).
FIRST_CONNECT_SPREAD_S = 10.0
# Confirmed events are marked published in the store at most this often (seconds).
_MARK_EVERY = 0.2
# An ack the hall cannot apply is answered with an ``outbox.ack_refused`` event at most
# once per reason this often (seconds): a broken central cannot flood the outbox.
ACK_REFUSAL_EVERY_S = 60.0


class _SocketErrors(logging.Handler):
    """Keeps paho's last socket error: a TLS alert from the broker (say, it refused the
    hall's client certificate) is reported nowhere else; the connect just times out."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def describe_connect_error(
    err: Exception, clock_ok: bool, socket_error: str | None = None, *, client_cert: bool = False
) -> str:
    """A person-readable cause for a failed connection, TLS causes named as such.

    ``client_cert``: the hall presents a client certificate. A broker that refuses it under
    TLS 1.3 sends its alert after the handshake; a busy hall may read only the closed
    socket ("EOF occurred in violation of protocol"), which then names both causes."""
    text = str(err)
    if socket_error and ("ssl" in socket_error.lower() or "alert" in socket_error.lower()):
        text = f"{text}: {socket_error}"
    lowered = text.lower()
    if "certificate has expired" in lowered or "not yet valid" in lowered:
        hint = (
            "the hall's clock looks wrong; fix time synchronisation (timedatectl)"
            if not clock_ok
            else "check the certificate's dates and the hall's clock"
        )
        return f"TLS: a certificate is outside its validity period ({text}); {hint}"
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        return (
            f"TLS: the broker's certificate is not trusted by mqtt.tls.ca_file ({text}); "
            "check the CA file and the broker's host name. No plaintext attempt is made."
        )
    if "alert" in lowered and any(
        word in lowered for word in ("certificate", "handshake", "unknown ca")
    ):
        return (
            f"TLS: the broker refused this hall's client certificate ({text}); check "
            "mqtt.tls.cert_file and key_file"
        )
    if client_cert and "eof occurred in violation of protocol" in lowered:
        return (
            f"TLS: the broker refused this hall's client certificate, or closed the connection "
            f"during the TLS handshake ({text}); check mqtt.tls.cert_file and key_file, then "
            "the broker's log"
        )
    # Only a refused CONNECT: paho's own error numbers (4 is "not connected") overlap.
    from aiomqtt.exceptions import MqttConnectError

    if isinstance(err, MqttConnectError) and err.rc is not None:
        code = getattr(err.rc, "value", err.rc)
        if code in (134, 135, 4, 5):
            return (
                f"the broker refused the login ({text}); check mqtt.username/password and "
                "the broker's ACL for this hall"
            )
    return text or type(err).__name__


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    """Trust only the configured CA (pinning) and present the hall's certificate."""
    tls = mqtt.tls
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise LinkConfigError(
            f"cannot load the TLS files (ca {tls.ca_file}, cert {tls.cert_file}, key "
            f"{tls.key_file}): {err}; check the paths and that the service user can read them"
        ) from err
    return context


class LinkConfigError(HallAgentError):
    """The link cannot start with this configuration."""


class Backoff:
    """Full-jitter exponential backoff. The first wait after a drop is spread wide so a
    city's halls do not reconnect together; the counter resets only after a stable
    connection."""

    def __init__(self, mqtt: MqttConfig, rng: random.Random) -> None:
        self._first = mqtt.reconnect_spread_s
        self._cap = mqtt.reconnect_max_s
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, max(self._first, 1.0) * (2**self.attempt))
        if self.attempt == 0:
            ceiling = min(self._cap, self._first)
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


# An envelope rewritten as it is published; a task run while connected; a topic's handler.
EnvelopeFilter = Callable[[dict[str, Any]], dict[str, Any]]
ConnectedTask = Callable[["aiomqtt.Client"], Coroutine[Any, Any, None]]
Route = Callable[[bytes], Awaitable[None]]


class Link:
    """The hall's connection to central; an async context manager. What the device
    features add (command handlers, envelope filters, tasks while connected, topics) is
    given at construction, so nothing is published or subscribed without them."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard,
        *,
        boot_id: str | None = None,
        rng: random.Random | None = None,
        on_config: Callable[[HallAgentConfig], None] | None = None,
        handlers: CommandHandlers | None = None,
        envelope_filters: Sequence[EnvelopeFilter] = (),
        while_connected: Sequence[ConnectedTask] = (),
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.hall = hall
        self.config = hall.config
        self.mqtt = hall.config.mqtt
        self.devices = devices
        self.topics = Topics(hall.config.hall.id)
        self.boot_id = boot_id or uuid.uuid4().hex
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.session = 0
        self.state = LinkState.DISABLED if not self.mqtt.enabled else LinkState.CONNECTING
        self.counters = LinkCounters()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._backoff = Backoff(self.mqtt, self._rng)
        self._stop = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: BackgroundTasks | None = None
        self._client: aiomqtt.Client | None = None
        self._tls: ssl.SSLContext | None = None
        # Applied to each event's envelope as it is published (never to the stored copy):
        # e.g. personal data sealed at rest is opened here (agent/runtime/personal.py).
        self.envelope_filters = tuple(envelope_filters)
        # Tasks run while a connection is up, beside the outbox (e.g. document uploads);
        # each returns or raises when the connection drops.
        self.while_connected = tuple(while_connected)
        # Handlers of further central → hall topics: topic -> handler(payload).
        self.routes: Mapping[str, Route] = dict(routes or {})
        self.commands = CommandDesk(hall, self.topics, devices, handlers)
        self.configs = ConfigDesk(hall, on_config)
        self.connected = asyncio.Event()
        # The highest seq central acked that is not saved yet (saved every ack_apply_s).
        self._acked_to: int | None = None
        self._ack_arrived = asyncio.Event()
        # When an ack refusal was last reported, per reason (monotonic seconds).
        self.ack_refusal_every_s = ACK_REFUSAL_EVERY_S
        self._refusal_reported: dict[str, float] = {}
        # paho's own log: its socket errors feed the link's one clear message instead.
        self._paho_log = logging.getLogger(f"{__name__}.mqtt.{self.config.hall.id}")
        self._paho_log.propagate = False
        self._paho_log.setLevel(logging.ERROR)
        self._socket_errors = _SocketErrors()
        self._paho_log.handlers[:] = [self._socket_errors]

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Link:
        if not self.mqtt.enabled:
            log.info("no central link configured (mqtt.url is empty): the hall runs offline")
            return self
        await self.configs.load_applied()
        try:
            self._tls = tls_context(self.mqtt) if self.mqtt.uses_tls else None
        except LinkConfigError as err:
            # The hall still runs and buffers; the ops person sees this in the log and status.
            self.state = LinkState.MISCONFIGURED
            self.counters.last_error = str(err)
            log.error("central link not started: %s; the hall runs offline and buffers", err)
            return self
        self._tasks = await self._stack.enter_async_context(BackgroundTasks())
        self.commands.background = self._tasks  # a replay central asks for runs there
        self._tasks.create_task(self._run(), name="central-link")
        self._tasks.create_task(self._apply_acks(), name="central-acks")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Say goodbye (retained offline state) if connected, then disconnect."""
        self._stop.set()
        client = self._client
        if client is not None and self.connected.is_set():
            import aiomqtt

            will = Will(boot_id=self.boot_id, session=self.session, clean=True)
            try:
                await client.publish(
                    self.topics.state, will.model_dump_json(), qos=1, retain=True, timeout=2
                )
            except aiomqtt.MqttError as err:
                log.warning("could not publish the offline state before stopping: %s", err)
        if self._tasks is not None:
            self._tasks.cancel()  # the connection loop, and a replay under way
            await self._save_acks()
        await self._stack.aclose()
        self.state = LinkState.STOPPED

    # -- the connection loop ---------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        mqtt = self.mqtt
        assert mqtt.host is not None
        assert mqtt.port is not None
        will = Will(boot_id=self.boot_id, session=self.session)
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = mqtt.session_expiry_s
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=self.config.hall.id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            keepalive=mqtt.keepalive,
            username=mqtt.username,
            password=None if mqtt.password is None else mqtt.password.get_secret_value(),
            will=aiomqtt.Will(self.topics.state, will.model_dump_json(), qos=1, retain=True),
            properties=connect,
            tls_context=self._tls,
            max_inflight_messages=mqtt.inflight,
            timeout=10.0,  # connect, subscribe; publishes pass their own
            logger=self._paho_log,
            # Small QoS 1 messages (replies, acks of a replay) must not wait for delayed ACKs.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # aiomqtt warns on every publish while more than this many are pending; a window
        # of in-flight events is the design here, not a problem.
        client.pending_calls_threshold = mqtt.inflight * 2 + 16
        return client

    async def _run(self) -> None:
        failing: str | None = None
        # Halls that power up together after a district power cut do not all connect in
        # the same second: a short random wait before the first attempt.
        await self._pause(
            self._rng.uniform(0, min(self.mqtt.reconnect_spread_s, FIRST_CONNECT_SPREAD_S))
        )
        # After that wait, so the import (~40 ms here) is not paid before the local API
        # answers at start.
        import aiomqtt

        while not self._stop.is_set():
            # The number this connection gets if it succeeds (its will carries it already):
            # attempts that fail while the broker is away do not count.
            self.session = self.counters.connects + 1
            self.state = LinkState.CONNECTING
            self._socket_errors.last = None
            started = time.monotonic()
            self._reload_tls()
            try:
                client = self._make_client()
                async with client:
                    self._mark_connected(client, restored=failing is not None)
                    failing = None
                    await self._connected(client)
            except* aiomqtt.MqttError as group:
                # A drop surfaces from the connection's TaskGroup wrapped in a group.
                err = _first_error(group)
                reason = describe_connect_error(
                    err,
                    self.hall.clock_ok(),
                    self._socket_errors.last,
                    client_cert=self.mqtt.tls.cert_file is not None,
                )
                self.counters.last_error = reason
                if reason != failing:
                    log.warning("central link down: %s; the hall keeps running and buffers", reason)
                failing = reason
            except* StoreError as group:
                # The outbox could not be read or marked (a full disk): reconnect later
                # rather than let the link die while the hall goes on.
                reason = f"the outbox store failed: {group.exceptions[0]}"
                self.counters.last_error = reason
                if reason != failing:
                    log.warning("central link paused: %s; retrying", reason)
                failing = reason
            finally:
                self._client = None
                self.connected.clear()
                self.counters.connected_since = None
            if self._stop.is_set():
                break
            if time.monotonic() - started >= self.mqtt.stable_after_s:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            self.state = LinkState.WAITING
            log.debug("reconnecting in %.1f s", delay)
            await self._pause(delay)

    def _mark_connected(self, client: aiomqtt.Client, *, restored: bool) -> None:
        self._client = client
        self.counters.connects += 1
        if self.counters.connects > 1:
            self.counters.reconnects += 1
        self.counters.connected_since = time.monotonic()
        self.state = LinkState.CONNECTED
        if restored:
            log.info("central link restored (%s)", self.mqtt.url)
        else:
            log.info("connected to central at %s as %s", self.mqtt.url, self.config.hall.id)

    def _reload_tls(self) -> None:
        """The TLS files again before each connect: a renewed client certificate
        (agent/features/certificates.py) is used from the next connection on. Files that
        cannot be loaded now leave the last good context in use."""
        if self._tls is None:
            return
        try:
            self._tls = tls_context(self.mqtt)
        except LinkConfigError as err:
            log.warning("%s; connecting with the TLS files loaded before", err)

    async def _pause(self, seconds: float) -> None:
        """Wait, unless the link is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _connected(self, client: aiomqtt.Client) -> None:
        """Everything that runs while one connection is up; returns when it drops."""
        topics = self.topics
        await client.subscribe(topics.commands, qos=1)
        await client.subscribe(topics.config, qos=1)
        await client.subscribe(topics.ack, qos=1)
        for topic in self.routes:
            await client.subscribe(topic, qos=1)
        await self.publish_birth(client)
        # After the birth: a will the broker publishes late for an earlier connection of
        # this hall (a session taken over after a crash) must not leave us shown offline.
        await client.subscribe(topics.state, qos=1)
        for health in self.devices.all():
            await self._publish_device(client, health)
        self.connected.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._receive(client), name="link-receive")
            tasks.create_task(self._publish_outbox(client), name="link-outbox")
            tasks.create_task(self._publish_devices(client), name="link-devices")
            tasks.create_task(self._publish_metrics(client), name="link-metrics")
            for extra in self.while_connected:
                tasks.create_task(extra(client), name=f"link-{getattr(extra, '__name__', 'extra')}")

    def event_payload(self, event: StoredEvent) -> str:
        envelope = event.envelope(self.config.hall.id)
        for envelope_filter in self.envelope_filters:
            envelope = envelope_filter(envelope)
        return json.dumps(envelope, ensure_ascii=False)

    async def publish_birth(self, client: aiomqtt.Client) -> None:
        birth = Birth(
            boot_id=self.boot_id,
            session=self.session,
            agent_version=agent.__version__,
            config_version=self.configs.applied_version,
            started_at=self.started_at,
            clock_ok=self.hall.clock_ok(),
        )
        await client.publish(self.topics.state, birth.model_dump_json(), qos=1, retain=True)

    async def _publish_device(self, client: aiomqtt.Client, health: DeviceHealth) -> None:
        state = DeviceState.model_validate(health.payload())
        await client.publish(
            self.topics.device(health.device_id), state.model_dump_json(), qos=1, retain=True
        )

    async def _publish_devices(self, client: aiomqtt.Client) -> None:
        changes = self.devices.watch()
        try:
            while True:
                health = await changes.get()
                await self._publish_device(client, health)
        finally:
            self.devices.unwatch(changes)

    # -- incoming ----------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        import aiomqtt

        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                await self._dispatch(client, topic, payload, message.properties)
            except (aiomqtt.MqttError, StoreError):
                raise  # the connection or the disk: reconnect and try again
            except Exception:
                # A bug in handling one message must not take the link down: with a
                # persistent session the broker would redeliver it forever.
                log.exception("could not handle a message on %s; it is dropped", topic)

    async def _dispatch(
        self, client: aiomqtt.Client, topic: str, payload: bytes, properties: Properties | None
    ) -> None:
        if topic == self.topics.ack:
            await self._on_ack(payload)
        elif topic in self.routes:
            await self.routes[topic](payload)
        elif topic == self.topics.state:
            if not self._stop.is_set() and _is_stale_will(payload):
                log.info("a late offline state of an earlier connection arrived; re-announcing")
                await self.publish_birth(client)
        elif topic == self.topics.config:
            if await self.configs.on_push(payload):
                await self.publish_birth(client)
        elif topic.startswith(self.topics.command_prefix):
            name = topic[len(self.topics.command_prefix) :]
            await self.commands.handle(client, name, payload, properties, self._replay)

    async def _on_ack(self, payload: bytes) -> None:
        from agent.central.contract import Ack

        try:
            ack = Ack.model_validate_json(payload)
        except ValueError as err:
            self.counters.acks_malformed += 1
            problem = str(err).splitlines()[0]
            log.warning("ignored a malformed ack from central: %s", problem)
            await self._refuse_ack("malformed", None, None, _malformed_detail(err))
            return
        if ack.epoch != self.hall.store.epoch:
            self.counters.acks_wrong_epoch += 1
            log.info(
                "ignored central's ack for epoch %d (this store is epoch %d)",
                ack.epoch,
                self.hall.store.epoch,
            )
            await self._refuse_ack("wrong_epoch", ack.epoch, ack.seq)
            return
        seq = ack.seq
        last = self.hall.last_seq
        if seq > last:
            # Central cannot have stored a seq this hall has not given out: its ack is not
            # about this hall's log (a restored store, a mixed-up hall), so none of it is
            # applied. The bound is the last seq given out, not the last one the broker
            # confirmed: central may see an event before its PUBACK reaches the hall, and
            # events sent before a restart are confirmed by no one.
            self.counters.acks_beyond_last += 1
            log.warning(
                "refused central's ack of seq %d: this hall has given out only up to %d",
                seq,
                last,
            )
            await self._refuse_ack("beyond_last_seq", ack.epoch, seq)
            return
        self.counters.acked_seq = max(self.counters.acked_seq, seq)
        self._acked_to = max(self._acked_to or 0, seq)
        self._ack_arrived.set()

    async def _refuse_ack(
        self, reason: str, epoch: int | None, seq: int | None, detail: str | None = None
    ) -> None:
        """Tell central, with an ``outbox.ack_refused`` event, that its ack was not applied
        (at most once per reason per ``ack_refusal_every_s``)."""
        from agent.core import events as ev

        now = time.monotonic()
        last = self._refusal_reported.get(reason)
        if last is not None and now - last < self.ack_refusal_every_s:
            return
        self._refusal_reported[reason] = now
        refused = ev.OutboxAckRefused(
            reason=reason,
            epoch=epoch,
            seq=seq,
            last_seq=self.hall.last_seq,
            hall_epoch=self.hall.store.epoch,
            acked_seq=self.counters.acked_seq,
            detail=detail,
        )

        def write(store: Store, at: dt.datetime, clock_ok: bool) -> Written[None]:
            return Written(store.append([ev.Event(refused, at)], clock_ok=clock_ok), None)

        try:
            await self.hall.write(write)
        except (StoreError, ShuttingDown) as err:
            log.debug("could not record the refusal of central's ack: %s", err)

    async def _apply_acks(self) -> None:
        """Save central's acks at most every ``ack_apply_s``, in the writer's next group."""
        while True:
            await self._ack_arrived.wait()
            self._ack_arrived.clear()
            await asyncio.sleep(self.mqtt.ack_apply_s)
            await self._save_acks()

    async def _save_acks(self) -> None:
        seq = self._acked_to
        if seq is None:
            return
        self._acked_to = None
        epoch = self.hall.store.epoch
        try:
            await self.hall.write(lambda s, _now, _ok: Written([], s.mark_acked(epoch, seq)))
        except (StoreError, ShuttingDown) as err:
            # Kept for the next try: central's ack is only a permission to prune.
            self._acked_to = max(self._acked_to or 0, seq)
            log.debug("central's ack up to %d is saved later: %s", seq, err)

    # -- outgoing events ---------------------------------------------------------------------

    async def _publish_outbox(self, client: aiomqtt.Client) -> None:
        """Publish every unpublished event in seq order, a bounded window in flight, paced."""
        window = asyncio.Semaphore(self.mqtt.inflight)
        pacer = Pacer(self.mqtt.drain_rate, burst=self.mqtt.inflight)
        confirmed: list[int] = []
        cursor = 0
        async with self.hall.events() as fresh, asyncio.TaskGroup() as tasks:
            tasks.create_task(self._mark_loop(confirmed), name="link-mark-published")

            async def send(event: StoredEvent) -> None:
                try:
                    await client.publish(
                        self.topics.event(event.type),
                        self.event_payload(event),
                        qos=1,
                        timeout=max(30.0, self.mqtt.keepalive * 1.5),
                    )
                finally:
                    window.release()
                confirmed.append(event.seq)
                self.counters.published += 1

            while True:
                batch = await self.hall.store_read(
                    functools.partial(Store.unpublished, after_seq=cursor, limit=_BATCH)
                )
                if not batch:
                    await _drain_or_wait(fresh, wait_s=5.0)
                    continue
                for event in batch:
                    await pacer.take()
                    await window.acquire()
                    tasks.create_task(send(event))
                    cursor = event.seq

    async def _mark_loop(self, confirmed: list[int]) -> None:
        try:
            while True:
                await asyncio.sleep(_MARK_EVERY)
                await self._flush_marks(confirmed)
        finally:
            # Mark what was confirmed before the connection dropped.
            await asyncio.shield(self._flush_marks(confirmed))

    async def _flush_marks(self, confirmed: list[int]) -> None:
        if not confirmed:
            return
        seqs = confirmed[:]
        del confirmed[:]

        def mark(store: Store, _now: dt.datetime, _ok: bool) -> Written[None]:
            store.mark_published(seqs)
            return Written([], None)

        try:
            await self.hall.write(mark)
        except ShuttingDown:
            # Not lost: unmarked events are published again at the next connection.
            log.debug("the hall stopped before %d publications were marked", len(seqs))

    async def _replay(self, client: aiomqtt.Client, from_seq: int, to_seq: int) -> int:
        """Re-send a retained range (central found a gap); returns how many were sent."""
        pacer = Pacer(self.mqtt.drain_rate, burst=self.mqtt.inflight)
        sent = 0
        cursor = from_seq
        while cursor <= to_seq:
            start = cursor
            batch = await self.hall.store_read(
                functools.partial(Store.events_between, from_seq=start, to_seq=to_seq, limit=_BATCH)
            )
            if not batch:
                break
            for event in batch:
                await pacer.take()
                await client.publish(
                    self.topics.event(event.type),
                    self.event_payload(event),
                    qos=1,
                )
                sent += 1
            cursor = batch[-1].seq + 1
        return sent

    async def _publish_metrics(self, client: aiomqtt.Client) -> None:
        while True:
            metrics = await self.metrics()
            await client.publish(self.topics.metrics, metrics.model_dump_json(), qos=0)
            await asyncio.sleep(self.mqtt.metrics_interval_s)

    async def metrics(self) -> Metrics:
        stats = await self.hall.store_read(Store.stats)
        last_seq = self.hall.last_seq
        now = dt.datetime.now(dt.UTC)
        oldest = None
        if stats.oldest_unpublished_at is not None:
            oldest = max(
                0.0, (now - dt.datetime.fromisoformat(stats.oldest_unpublished_at)).total_seconds()
            )
        return Metrics(
            at=now.isoformat(timespec="seconds"),
            outbox_depth=stats.unpublished,
            outbox_bytes=stats.bytes,
            oldest_pending_age_s=oldest,
            evicted_total=stats.evicted_total,
            reconnects=self.counters.reconnects,
            published_total=self.counters.published,
            last_seq=last_seq,
            epoch=self.hall.store.epoch,
            acked_seq=self.counters.acked_seq,
            devices={h.device_id: h.status for h in self.devices.all()},
        )


def _malformed_detail(err: ValueError) -> str:
    """What is wrong with a malformed ack, short, without echoing its bytes at length."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the message"
        return f"{where}: {first['msg']}"[:200]
    return str(err).splitlines()[0][:200]


def _first_error(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    import aiomqtt

    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, aiomqtt.MqttError)
    return found


def _is_stale_will(payload: bytes) -> bool:
    """Whether a retained ``state`` says offline while this connection is up."""
    try:
        state = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(state, dict) and state.get("online") is False


async def _drain_or_wait(fresh: asyncio.Queue[StoredEvent], wait_s: float) -> None:
    """Wait until new events were committed (or ``wait_s`` passed); drain the signal."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await fresh.get()
    while not fresh.empty():
        fresh.get_nowait()


class Pacer:
    """A token bucket: at most ``rate`` per second on average, ``burst`` at once.

    Over any stretch of ``t`` seconds at most ``burst + rate * t`` takes return. The clock and
    the sleep are parameters so that this bound is tested on a clock the test moves.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._rate = rate
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    async def take(self) -> None:
        while True:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            # The tolerance stops a float rounding (a token of 0.9999999) from spinning on
            # sleeps too short to move the clock.
            if self._tokens >= 1 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1)
                return
            await self._sleep((1 - self._tokens) / self._rate)
