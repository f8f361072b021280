"""Central's side of the MQTT contract, for tests: a subscriber that keeps every message.

Not a test module. ``Central`` is deliberately independent of ``hallctl``: it is the
oracle the link is judged against, so it only uses aiomqtt and the topic names of
DESIGN §5. It keeps a persistent session (clean start false, a session expiry), so a
broker with persistence queues events for it across a restart like it would for central.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = "hall/v1"
# Long enough for any test; short enough that a left-over session does not linger.
SESSION_EXPIRY_S = 600


def publish_properties(**values: Any) -> Properties:
    """MQTT 5 PUBLISH properties, e.g. ``MessageExpiryInterval=1``."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.payload)


class Central:
    """A subscriber (and publisher) on one hall's subtree; an async context manager.

    Reconnects by itself when the broker goes away; ``connected`` says whether it is up.
    """

    def __init__(
        self,
        url: str,
        hall_id: str,
        filters: Iterable[str],
        *,
        client_id: str | None = None,
        persistent: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.host = parts.hostname
        self.port = parts.port or 1883
        self.hall_id = hall_id
        self.base = f"{ROOT}/{hall_id}"
        self.filters = [self.full(f) for f in filters]
        self.client_id = client_id or f"central-{uuid.uuid4().hex[:8]}"
        self.persistent = persistent
        self.tls_context = tls_context
        self.messages: list[Received] = []
        self.connected = asyncio.Event()
        self.connects = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"central-{self.client_id}")
        await wait_event(self.connected, 10, f"{self.client_id} connected to the broker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _make_client(self) -> aiomqtt.Client:
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = SESSION_EXPIRY_S if self.persistent else 0
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self.persistent,
            properties=connect,
            tls_context=self.tls_context,
            # Without it, each small publish waits ~40 ms for a delayed ACK (Nagle).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            timeout=10,
        )

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._make_client() as client:
                    for topic in self.filters:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self.connects += 1
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.messages.append(
                            Received(
                                str(message.topic),
                                payload,
                                message.retain,
                                message.properties,
                                time.monotonic(),
                            )
                        )
            except aiomqtt.MqttError:
                pass
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(0.1)

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish, e.g. to ``cmd/get_status`` (see :meth:`full`)."""
        await wait_event(self.connected, 20, f"{self.client_id} connected to publish")
        assert self._client is not None
        await self._client.publish(
            self.full(topic), payload, qos=qos, retain=retain, properties=properties, timeout=20
        )

    async def command(
        self, name: str, body: dict[str, Any] | bytes, properties: Properties | None = None
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
        await self.publish(f"cmd/{name}", payload, properties=properties)

    # -- reading what arrived -------------------------------------------------------------

    def full(self, topic: str) -> str:
        """Topics are relative to the hall's subtree unless they start with ``hall/`` or
        ``central/`` (where a test's own response topics live)."""
        return topic if topic.startswith(("hall/", "central/")) else f"{self.base}/{topic}"

    def on(self, topic: str) -> list[Received]:
        full = self.full(topic)
        return [m for m in self.messages if m.topic == full]

    def events(self) -> list[dict[str, Any]]:
        prefix = f"{self.base}/event/"
        return [m.json() for m in self.messages if m.topic.startswith(prefix)]

    def event_seqs(self) -> list[int]:
        return [e["seq"] for e in self.events()]

    def replies(self, cmd_id: str | None = None) -> list[dict[str, Any]]:
        replies = [m.json() for m in self.on("reply")]
        return replies if cmd_id is None else [r for r in replies if r["cmd_id"] == cmd_id]

    async def reply_to(self, cmd_id: str, seconds: float = 10) -> dict[str, Any]:
        await until(lambda: self.replies(cmd_id), seconds, f"a reply to command {cmd_id}")
        return self.replies(cmd_id)[0]

    def latest(self, topic: str) -> dict[str, Any] | None:
        found = self.on(topic)
        return found[-1].json() if found else None


async def wait_event(event: asyncio.Event, seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for: {what}") from None


async def until(
    condition: Callable[[], object] | Callable[[], Awaitable[object]],
    seconds: float,
    what: str | Callable[[], str],
    *,
    every: float = 0.02,
) -> None:
    """Wait until ``condition()`` is true (it may be async); fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {seconds}s waiting for: {text}")
        await asyncio.sleep(every)


@dataclasses.dataclass(frozen=True, slots=True)
class Tally:
    """What central saw of the hall's event stream, judged by ``seq``."""

    expected: int
    received: int
    missing: list[int]
    duplicates: int
    misordered: int
    unexpected: list[int]

    def __str__(self) -> str:
        missing = self.missing[:10]
        return (
            f"expected {self.expected}, received {self.received}, missing {len(self.missing)} "
            f"{missing}, duplicates {self.duplicates}, misordered {self.misordered}, "
            f"unexpected {self.unexpected[:10]}"
        )


def tally(received: list[int], expected: Iterable[int]) -> Tally:
    """Missing and unexpected seqs, duplicates, and first arrivals below an earlier one."""
    want = set(expected)
    seen: set[int] = set()
    duplicates = misordered = 0
    highest = 0
    for seq in received:
        if seq in seen:
            duplicates += 1
            continue
        seen.add(seq)
        if seq < highest:
            misordered += 1
        highest = max(highest, seq)
    return Tally(
        expected=len(want),
        received=len(received),
        missing=sorted(want - seen),
        duplicates=duplicates,
        misordered=misordered,
        unexpected=sorted(seen - want),
    )


def first_arrivals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream deduplicated on (epoch, seq) as central does, in arrival order."""
    seen: set[tuple[int, int]] = set()
    out = []
    for event in events:
        key = (event["epoch"], event["seq"])
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out
