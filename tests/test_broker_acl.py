"""The shipped broker configuration (brokers/mosquitto.conf, brokers/hall.acl) on a real
mosquitto with client certificates: each hall is confined by its certificate's name.

Whether a publish was refused is told without timing: an observer that may read
everything subscribes first; the client then publishes what must be refused and, last, a
marker it may publish. mosquitto forwards one client's messages in order, so once the
marker arrived anything allowed before it would have arrived too.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from broker import Broker
from pki import Pki, client_cert

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 15.0


def shipped_security_lines() -> list[str]:
    """The per-listener security lines of brokers/mosquitto.conf (the test's Broker writes
    the listener, certificates and ports itself)."""
    wanted = ("use_identity_as_username", "require_certificate")
    text = (ROOT / "brokers" / "mosquitto.conf").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith(wanted)]


@pytest.fixture
def secured(broker_factory: Callable[..., Broker], pki: Pki, tmp_path: Path) -> Broker:
    acl = tmp_path / "hall.acl"
    shipped = (ROOT / "brokers" / "hall.acl").read_text(encoding="utf-8")
    # The test's observer reads everything; nothing else is added to the shipped ACL.
    acl.write_text(shipped + "\nuser test-observer\ntopic read #\n", encoding="utf-8")
    lines = shipped_security_lines()
    assert "use_identity_as_username true" in lines
    started: Broker = broker_factory(tls=pki, extra_config=[*lines, f"acl_file {acl}"])
    return started


@asynccontextmanager
async def connect(
    broker: Broker, pki: Pki, name: str, *, client_id: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    cert, key = client_cert(pki, name)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(cert), str(key))
    async with aiomqtt.Client(
        "localhost",
        broker.port,
        identifier=client_id or f"{name}-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=context,
    ) as client:
        yield client


async def refused(broker: Broker, pki: Pki, name: str, topic: str, **options: str) -> bool:
    """Publish ``topic`` at QoS 1 on a connection of its own, then the client's own
    metrics: True when the broker refused the first (mosquitto 2 answers "not authorized"
    and ends the connection, so the second publish fails)."""
    try:
        async with connect(broker, pki, name, **options) as client:
            await client.publish(topic, b"x", qos=1)
            await client.publish(f"hall/v1/{name}/metrics", b"{}", qos=1, timeout=WAIT_S)
    except aiomqtt.MqttError:
        return True
    return False


async def received_until(observer: aiomqtt.Client, marker: str) -> set[str]:
    got: set[str] = set()
    async with asyncio.timeout(WAIT_S):
        async for message in observer.messages:
            if message.topic.value == marker:
                return got
            got.add(message.topic.value)
    return got


async def test_a_hall_writes_only_its_own_outgoing_topics(secured: Broker, pki: Pki) -> None:
    refused_topics = [
        "hall/v1/hd-b/event/ticket.issued",  # another hall's events
        "hall/v1/hd-b/state",
        "hall/v1/hd-a/cmd/call_next",  # its own commands: central's
        "hall/v1/hd-a/ack",  # its own acks: central's
        "hall/v1/hd-a/config",  # its own config: central's
        "hall/v1/hd-a/file-ack",
        "hall/v2/hd-a/event/x",
    ]
    allowed = [
        "hall/v1/hd-a/event/ticket.issued",
        "hall/v1/hd-a/state",
        "hall/v1/hd-a/reply",
        "hall/v1/hd-a/reply/hallctl-1",
        "hall/v1/hd-a/metrics",
        "hall/v1/hd-a/device/printer",
        "hall/v1/hd-a/file/f1/chunk",
    ]
    async with connect(secured, pki, "test-observer") as observer:
        await observer.subscribe("hall/v1/#", qos=1)
        await observer.subscribe("hall/v2/#", qos=1)
        for topic in refused_topics:
            assert await refused(secured, pki, "hd-a", topic), topic
        async with connect(secured, pki, "hd-a") as hall:
            for topic in allowed:
                await hall.publish(topic, b"x", qos=1)
            await hall.publish("hall/v1/hd-a/event/marker", b"", qos=1)
        got = await received_until(observer, "hall/v1/hd-a/event/marker")
    assert got == set(allowed)


async def test_a_certificate_for_another_hall_cannot_act_as_this_hall(
    secured: Broker, pki: Pki
) -> None:
    """The client id claims hd-a, the certificate says hd-b: the broker goes by the
    certificate."""
    for topic in ("hall/v1/hd-a/event/ticket.issued", "hall/v1/hd-a/state"):
        assert await refused(secured, pki, "hd-b", topic, client_id="hd-a"), topic
    assert not await refused(
        secured, pki, "hd-b", "hall/v1/hd-b/event/ticket.issued", client_id="hd-a"
    )


async def test_a_hall_cannot_overwrite_its_retained_config_nor_read_another_halls(
    secured: Broker, pki: Pki
) -> None:
    async with connect(secured, pki, "central-console") as central:
        await central.publish("hall/v1/hd-a/config", b'{"version":"central"}', qos=1, retain=True)
        await central.publish("hall/v1/hd-b/config", b'{"version":"b"}', qos=1, retain=True)
    assert await refused(secured, pki, "hd-a", "hall/v1/hd-a/config")
    async with connect(secured, pki, "hd-a") as hall:
        granted = await hall.subscribe("hall/v1/hd-a/config", qos=1)
        # mosquitto grants the subscription but never delivers what the ACL denies: hd-b's
        # retained config would arrive right away, before the ack below.
        await hall.subscribe("hall/v1/hd-b/config", qos=1)
        await hall.subscribe("hall/v1/hd-a/ack", qos=1)
        async with connect(secured, pki, "central-ingest") as ingest:
            await ingest.publish("hall/v1/hd-a/ack", b'{"epoch":1,"seq":1}', qos=1)
        received: dict[str, bytes] = {}
        async with asyncio.timeout(WAIT_S):
            async for message in hall.messages:
                assert isinstance(message.payload, bytes)
                received[message.topic.value] = message.payload
                if "hall/v1/hd-a/ack" in received:
                    break
    assert [code.value for code in granted] == [1]  # type: ignore[union-attr]
    # Its own config as central retained it (the hall's write was refused), never hd-b's;
    # the ack from central's ingest came through.
    assert received == {
        "hall/v1/hd-a/config": b'{"version":"central"}',
        "hall/v1/hd-a/ack": b'{"epoch":1,"seq":1}',
    }
