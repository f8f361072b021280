"""The broker connection every ``hallctl`` verb shares: the ``--broker``/TLS options, the
client they build, the errors an operator can fix and the exit codes they map to.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# How long the broker keeps ingest's session (and the events queued in it) while ingest is
# down: a restart or an upgrade of the consumer must not lose a single event.
INGEST_SESSION_EXPIRY_S = 7 * 86400
RECONNECT_MAX_S = 30.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class HallctlError(Exception):
    """A problem the operator can fix; printed without a traceback."""


class UsageError(HallctlError):
    """The command line is wrong (exit 2)."""


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
        manual_ack: bool = False,
        receive_maximum: int | None = None,
    ) -> aiomqtt.Client:
        """An MQTT 5 client. ``manual_ack``: a QoS 1 message is PUBACKed only when the
        caller says so (``client._client.ack(mid, qos)``, paho's manual ack, which aiomqtt
        2.5 does not wrap), so a message received but not yet processed is redelivered to
        the persistent session after a crash; ``receive_maximum``: at most this many such
        unacknowledged messages are sent to the client at a time (the rest wait in the
        broker)."""
        properties = None
        if persistent or receive_maximum is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if persistent:
                properties.SessionExpiryInterval = INGEST_SESSION_EXPIRY_S
            if receive_maximum is not None:
                properties.ReceiveMaximum = max(1, min(receive_maximum, 65535))
        client = aiomqtt.Client(
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
        if manual_ack:
            # Before connecting: a persistent session's queued messages arrive at once.
            client._client.manual_ack_set(True)
        return client


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
