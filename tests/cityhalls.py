"""Simulated halls for central's ingest: lightweight MQTT 5 clients that speak the contract
as far as the ingest sees it. Each publishes its events (QoS 1, ``event/{type}``), may drop
some on the way (a real gap), answers ``replay_events`` like the real link (re-sends what it
still has, says what it lost) and records the acks it gets.

Not a test module: tests/test_ingest_pg.py and bench/ingest_pg.py use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

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
