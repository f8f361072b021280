"""Simulated halls for central's ingest: lightweight MQTT 5 clients that speak the contract
as far as the ingest sees it. Each publishes its events (QoS 1, ``event/{type}``), may drop
some on the way (a real gap), answers ``replay_events`` like the real link (re-sends what it
still has, says what it lost) and records the acks it gets.

Not a test module: tests/test_ingest_pg.py and bench/ingest_pg.py use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from agent.central.contract import Ack, EventEnvelope, Metrics, ReplayEvents, Reply

AT = "2026-11-23T09:{minute:02d}:{second:02d}.000+08:00"


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def envelope(hall: str, seq: int, epoch: int = 1) -> bytes:
    kind = ("ticket.issued", "ticket.called", "rating.submitted")[seq % 3]
    event = EventEnvelope(
        hall=hall,
        epoch=epoch,
        seq=seq,
        id=f"{hall}-{epoch}-{seq}",
        type=kind,
        at=AT.format(minute=(seq // 60) % 60, second=seq % 60),
        clock_ok=True,
        data={"ticket": f"A{seq:03d}", "level": 1 + seq % 5},
    )
    return event.model_dump_json().encode()


@dataclass
class SimHall:
    hall: str
    last: int  # seqs 1..last
    dropped: set[int] = field(default_factory=set)  # not delivered the first time
    lost: set[int] = field(default_factory=set)  # not in its store any more
    epoch: int = 1
    replays: list[tuple[int, int]] = field(default_factory=list)
    acks: list[tuple[float, Ack]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self, seq: int) -> bytes:
        return envelope(self.hall, seq, self.epoch)

    def topic(self, seq: int) -> str:
        kind = ("ticket.issued", "ticket.called", "rating.submitted")[seq % 3]
        return f"hall/v1/{self.hall}/event/{kind}"

    @property
    def acked(self) -> int:
        return max((a.seq for _, a in self.acks if a.epoch == self.epoch), default=0)

    async def send(self, mqtt: aiomqtt.Client, seqs: Iterable[int]) -> None:
        for seq in seqs:
            await mqtt.publish(self.topic(seq), self.event(seq), qos=1)

    async def announce(self, mqtt: aiomqtt.Client) -> None:
        """The hall's metrics once its outbox is drained: everything up to ``last`` was
        published (how central learns of a lost tail)."""
        metrics = Metrics(
            at=AT.format(minute=59, second=0),
            outbox_depth=0,
            outbox_bytes=0,
            oldest_pending_age_s=None,
            evicted_total=0,
            reconnects=0,
            published_total=self.last,
            last_seq=self.last,
            epoch=self.epoch,
            devices={},
        )
        await mqtt.publish(f"hall/v1/{self.hall}/metrics", metrics.model_dump_json(), qos=0)

    async def answer(self, mqtt: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        async for message in mqtt.messages:
            topic = message.topic.value
            assert isinstance(message.payload, bytes)
            if topic.endswith("/ack"):
                self.acks.append((loop.time(), Ack.model_validate_json(message.payload)))
            elif topic.endswith("/cmd/replay_events"):
                command = ReplayEvents.model_validate_json(message.payload)
                span = range(command.from_seq, command.to_seq + 1)
                self.replays.append((command.from_seq, command.to_seq))
                have = [s for s in span if 1 <= s <= self.last and s not in self.lost]
                reply = Reply(
                    cmd_id=command.cmd_id,
                    name="replay_events",
                    status="ok",
                    result={
                        "resending": len(have),
                        "missing": [list(r) for r in ranges(set(span) - set(have))],
                        "epoch": self.epoch,
                    },
                )
                await mqtt.publish(f"hall/v1/{self.hall}/reply", reply.model_dump_json(), qos=1)
                await self.send(mqtt, have)

    async def run(self, port: int, *, publish: bool = True, metrics_every: float = 1.0) -> None:
        """Connect, listen for commands and acks, publish every seq not dropped, keep
        answering until cancelled."""
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=self.hall, protocol=aiomqtt.ProtocolVersion.V5
        ) as mqtt:
            await mqtt.subscribe(f"hall/v1/{self.hall}/cmd/#", qos=1)
            await mqtt.subscribe(f"hall/v1/{self.hall}/ack", qos=1)
            answering = asyncio.create_task(self.answer(mqtt))
            self.ready.set()
            if publish:
                await self.send(mqtt, (s for s in range(1, self.last + 1) if s not in self.dropped))
            try:
                while not answering.done():  # metrics, periodically, like the real link
                    await self.announce(mqtt)
                    await asyncio.wait([answering], timeout=metrics_every)
                await answering
            finally:
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering


# -- a city: halls that live through an outage of the broker ---------------------------------


def _session_expiry(seconds: int) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = seconds
    return properties


@dataclass
class CityHall:
    """One hall of ``City``: an outbox of seqs, published in order while connected, that
    reconnects like the real link (a persistent session; after an outage of the broker, a
    random wait of up to ``spread`` seconds) and catches up at most ``drain_rate`` events
    a second (the link's ``mqtt.drain_rate``).

    Trouble, decided when an event is made (``add``): a seq is *dropped* with
    ``gap_rate`` (not published the first time: a real gap, which the ingest must ask
    for; never two in a row, never the last of an ``add``, so every drop is one gap that
    later events reveal), *doubled* with ``dup_rate`` (published twice: a duplicate).
    Replays are answered like the real link: a ``reply``, then the seqs again.
    """

    hall: str
    rng: random.Random
    gap_rate: float = 0.0
    dup_rate: float = 0.0
    drain_rate: float = 200.0
    metrics_every: float | None = None  # the link's metrics_interval_s (None: only drained)
    epoch: int = 1
    last: int = 0  # seqs 1..last exist
    cursor: int = 0  # every seq up to here was published (or dropped on its way)
    target: int = 0  # the seq ``done`` waits for the ack of
    dropped: set[int] = field(default_factory=set)
    doubled: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)  # dropped seqs already passed over
    acked: int = 0
    acks: int = 0  # acks received
    acked_at: float | None = None  # loop time the ack reached ``target``
    replays: list[tuple[int, int]] = field(default_factory=list)
    published: int = 0  # event publications (doubles and replays included)
    connects: int = 0
    connected_at: float | None = None  # loop time of the last connect
    delay: float = 0.0  # before the next connect
    up: asyncio.Event = field(default_factory=asyncio.Event)  # may connect
    fresh: asyncio.Event = field(default_factory=asyncio.Event)  # new events in the outbox
    done: asyncio.Event = field(default_factory=asyncio.Event)  # acked up to ``target``

    planned: int = 0  # trouble decided up to here

    def plan(self, count: int) -> None:
        """Decide the trouble of the next ``count`` seqs (the last of them is never dropped:
        a lost tail is only revealed by ``metrics``, tested elsewhere)."""
        first = self.planned + 1
        for seq in range(first, first + count):
            tail = seq == first + count - 1
            if not tail and seq - 1 not in self.dropped and self.rng.random() < self.gap_rate:
                self.dropped.add(seq)
            elif self.rng.random() < self.dup_rate:
                self.doubled.add(seq)
        self.planned += count

    def release(self, count: int = 1) -> None:
        """``count`` new events in the outbox (planned or not)."""
        if self.last + count > self.planned:
            self.plan(self.last + count - self.planned)
        self.last += count
        self.fresh.set()

    def add(self, count: int) -> None:
        self.plan(count)
        self.release(count)

    def expect(self) -> None:
        """``done`` once everything made so far is acknowledged."""
        self.target = self.last
        self.acked_at = None
        self.done.clear()
        self._check_done()

    def _check_done(self) -> None:
        if self.acked >= self.target and not self.done.is_set():
            self.acked_at = asyncio.get_running_loop().time()
            self.done.set()

    def topic(self, seq: int) -> str:
        kind = ("ticket.issued", "ticket.called", "rating.submitted")[seq % 3]
        return f"hall/v1/{self.hall}/event/{kind}"

    async def _send(self, mqtt: aiomqtt.Client, seq: int) -> None:
        # Like the link: a publish not confirmed within 30 s ends the connection (its task
        # group), and the hall publishes again from its cursor after reconnecting.
        body = envelope(self.hall, seq, self.epoch)
        await mqtt.publish(self.topic(seq), body, qos=1, timeout=30)
        self.published += 1

    async def _publish_outbox(self, mqtt: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        gap = 1.0 / self.drain_rate if self.drain_rate > 0 else 0.0
        next_at = loop.time()
        while True:
            self.fresh.clear()
            while self.cursor < self.last:
                seq = self.cursor + 1
                if seq in self.dropped and seq not in self.skipped:
                    self.skipped.add(seq)  # lost on its way, this once
                else:
                    if gap:
                        next_at = max(next_at + gap, loop.time())
                        if next_at > loop.time() + 0.02:  # sleep seldom: in bursts
                            await asyncio.sleep(next_at - loop.time())
                    await self._send(mqtt, seq)
                    if seq in self.doubled:
                        await self._send(mqtt, seq)
                self.cursor = seq
            await self._announce(mqtt)
            await self.fresh.wait()

    async def _metrics(self, mqtt: aiomqtt.Client) -> None:
        assert self.metrics_every
        while True:
            await asyncio.sleep(self.metrics_every)
            await self._announce(mqtt)

    async def _announce(self, mqtt: aiomqtt.Client) -> None:
        """The link's ``metrics``: every ``metrics_every`` seconds if set, and each time the
        outbox is drained (the real link sends them every ``metrics_interval_s`` only)."""
        metrics = Metrics(
            at=AT.format(minute=59, second=0),
            outbox_depth=self.last - self.cursor,
            outbox_bytes=0,
            oldest_pending_age_s=None,
            evicted_total=0,
            reconnects=max(0, self.connects - 1),
            published_total=self.published,
            last_seq=self.last,
            epoch=self.epoch,
            acked_seq=self.acked,
            devices={},
        )
        await mqtt.publish(f"hall/v1/{self.hall}/metrics", metrics.model_dump_json(), qos=0)

    async def _answer(self, mqtt: aiomqtt.Client) -> None:
        async for message in mqtt.messages:
            topic = message.topic.value
            assert isinstance(message.payload, bytes)
            if topic.endswith("/ack"):
                ack = Ack.model_validate_json(message.payload)
                self.acks += 1
                if ack.epoch == self.epoch:
                    self.acked = max(self.acked, ack.seq)
                    self._check_done()
            elif topic.endswith("/cmd/replay_events"):
                command = ReplayEvents.model_validate_json(message.payload)
                self.replays.append((command.from_seq, command.to_seq))
                have = [
                    s for s in range(command.from_seq, command.to_seq + 1) if 1 <= s <= self.last
                ]
                reply = Reply(
                    cmd_id=command.cmd_id,
                    name="replay_events",
                    status="ok",
                    result={"resending": len(have), "missing": [], "epoch": self.epoch},
                )
                await mqtt.publish(f"hall/v1/{self.hall}/reply", reply.model_dump_json(), qos=1)
                for seq in have:
                    await self._send(mqtt, seq)

    async def run(self, port: int, connects: asyncio.Semaphore | None = None) -> None:
        """Connect whenever allowed (``up``), after ``delay``; keep going until cancelled.
        ``connects`` bounds how many connection attempts of the city run at once."""
        loop = asyncio.get_running_loop()
        while True:
            await self.up.wait()
            if self.delay > 0:
                delay, self.delay = self.delay, 0.0
                await asyncio.sleep(delay)
                continue  # ``up`` may have been cleared meanwhile
            client = aiomqtt.Client(
                "127.0.0.1",
                port,
                identifier=self.hall,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,  # a persistent session, like the link's
                properties=_session_expiry(7 * 24 * 3600),
                keepalive=60,
                timeout=30,
            )
            try:
                async with connects or contextlib.nullcontext():
                    await client.__aenter__()
            except aiomqtt.MqttError:
                self.delay = self.rng.uniform(0.5, 2.0)  # the broker is not back yet
                continue
            self.connects += 1
            self.connected_at = loop.time()
            try:
                await client.subscribe(f"hall/v1/{self.hall}/cmd/#", qos=1)
                await client.subscribe(f"hall/v1/{self.hall}/ack", qos=1)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._answer(client))
                    tasks.create_task(self._publish_outbox(client))
                    if self.metrics_every:
                        tasks.create_task(self._metrics(client))
            except* aiomqtt.MqttError:
                pass  # the connection dropped: the broker went away
            finally:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            if self.up.is_set():
                self.delay = self.rng.uniform(0.5, 2.0)


class City:
    """Many ``CityHall``s in one event loop, driven phase by phase: connect, a live
    stretch, an outage (``down``, the broker stopped by the caller, ``hour`` of events into
    every outbox, the broker started again, ``back``), ``wait_done``. tests/test_city.py
    runs one in-process; bench/city.py runs several in processes of their own
    (bench/_city_sim.py)."""

    def __init__(
        self,
        names: Iterable[str],
        port: int,
        *,
        seed: int = 1,
        gap_rate: float = 0.0,
        dup_rate: float = 0.0,
        drain_rate: float = 200.0,
        metrics_every: float | None = None,
        connect_limit: int = 64,
    ) -> None:
        self.port = port
        self.rng = random.Random(seed)
        self.halls = [
            CityHall(
                name,
                random.Random(f"{seed}:{name}"),
                gap_rate=gap_rate,
                dup_rate=dup_rate,
                drain_rate=drain_rate,
                metrics_every=metrics_every,
            )
            for name in names
        ]
        self.connect_limit = connect_limit
        self.tasks: list[asyncio.Task[None]] = []

    def _failed(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"a simulated hall failed: {task.exception()!r}")

    async def _until(self, events: list[asyncio.Event], limit: float) -> None:
        waiting = [asyncio.create_task(e.wait()) for e in events]
        try:
            deadline = asyncio.get_running_loop().time() + limit
            pending: set[asyncio.Task[Any]] = set(waiting)
            while pending:
                self._failed()
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    stuck = [
                        f"{h.hall} last {h.last} cursor {h.cursor} acked {h.acked}"
                        f" connects {h.connects} replays {h.replays[-3:]}"
                        for h in self.halls
                        if not h.done.is_set()
                    ]
                    raise TimeoutError(
                        f"{len(pending)} of {len(events)} halls not done: {stuck[:5]}"
                    )
                _, pending = await asyncio.wait(pending, timeout=min(left, 1.0))
        finally:
            for task in waiting:
                task.cancel()

    async def connect(self, limit: float = 300) -> None:
        """Every hall connected and subscribed (its outbox empty)."""
        connects = asyncio.Semaphore(self.connect_limit)
        self.tasks = [asyncio.create_task(h.run(self.port, connects)) for h in self.halls]
        for hall in self.halls:
            hall.up.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not all(h.connects for h in self.halls):
            self._failed()
            if loop.time() > deadline:
                raise TimeoutError("not every hall connected")
            await asyncio.sleep(0.1)

    async def live(self, events: int, seconds: float) -> None:
        """Each hall makes ``events`` events at random moments over ``seconds``."""

        async def one(hall: CityHall) -> None:
            hall.plan(events)
            start = asyncio.get_running_loop().time()
            for at in sorted(hall.rng.uniform(0, seconds) for _ in range(events)):
                await asyncio.sleep(max(0.0, start + at - asyncio.get_running_loop().time()))
                hall.release()

        await asyncio.gather(*(one(h) for h in self.halls))
        for hall in self.halls:
            hall.expect()

    def down(self) -> None:
        """No hall reconnects until ``back`` (the caller stops the broker next)."""
        for hall in self.halls:
            hall.up.clear()

    def hour(self, events: int) -> None:
        """``events`` more events in every hall's outbox while the broker is away."""
        for hall in self.halls:
            hall.add(events)
            hall.expect()

    def back(self, spread: float) -> None:
        """The broker is back: each hall reconnects after a random wait of up to ``spread``."""
        for hall in self.halls:
            hall.delay = hall.rng.uniform(0, spread)
            hall.up.set()

    async def wait_done(self, limit: float = 600) -> None:
        await self._until([h.done for h in self.halls], limit)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def counts(self) -> dict[str, Any]:
        """Totals so far, and the loop times of the last connect and the last full ack."""
        connected = [h.connected_at for h in self.halls if h.connected_at is not None]
        acked = [h.acked_at for h in self.halls if h.acked_at is not None]
        return {
            "halls": len(self.halls),
            "events": sum(h.last for h in self.halls),
            "published": sum(h.published for h in self.halls),
            "acks": sum(h.acks for h in self.halls),
            "replays": sum(len(h.replays) for h in self.halls),
            "connects": sum(h.connects for h in self.halls),
            "first_connected_at": min(connected, default=None),
            "last_connected_at": max(connected, default=None),
            "last_acked_at": max(acked, default=None) if len(acked) == len(self.halls) else None,
        }

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "hall": h.hall,
                "last": h.last,
                "dropped": sorted(h.dropped),
                "doubled": len(h.doubled),
                "replays": h.replays,
                "acks": h.acks,
                "acked": h.acked,
                "acked_at": h.acked_at,
                "published": h.published,
                "connects": h.connects,
                "connected_at": h.connected_at,
            }
            for h in self.halls
        ]
