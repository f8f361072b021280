"""The counting subscriber of the central-link benchmarks: central's side, in its own process.

Started by ``_mqtt.Subscriber`` (never run by hand). It subscribes at QoS 1 to
``hall/v1/+/event/#`` and ``hall/v1/+/state`` and keeps, per hall, every event ``seq`` with
the ``time.monotonic()`` of its first arrival (the clock is system-wide, so the benchmark
process can compare it with its own), duplicates, arrivals out of order, and every live
birth (``state`` with ``online: true``, not retained). It uses paho-mqtt directly, its
network loop on one thread and a plain callback per message: about half the CPU per
message of an asyncio client, which matters on 2 cores shared with the publisher and the
broker. paho reconnects by itself when the broker goes away; with ``--persistent`` the
MQTT 5 session is kept (clean start false, a session expiry), so a broker with
persistence queues events for it across a restart, as it would for central.

It talks JSON lines: on stdout ``{"ready": ...}`` once subscribed, then one report per
request read from stdin:

- ``{"expect": {hall: last_seq, ...}, "timeout": s, "grace": s, "forget": bool}`` waits
  until every hall has every seq 1..last_seq (or the timeout), then ``grace`` seconds more
  for late duplicates, and reports each hall;
- ``{"births": true}`` reports the live births seen so far.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

SESSION_EXPIRY_S = 900
SEQ = b'"seq": '


class HallRecord:
    __slots__ = ("duplicates", "first", "max_seq", "misordered", "received")

    def __init__(self) -> None:
        self.first: dict[int, float] = {}  # seq -> monotonic time of its first arrival
        self.received = 0
        self.duplicates = 0
        self.misordered = 0
        self.max_seq = 0


def seq_of(payload: bytes | bytearray) -> int:
    """The envelope's seq; a cheap scan of the link's own JSON, json.loads otherwise."""
    at = payload.find(SEQ)
    if at >= 0:
        end = payload.find(b",", at)
        if end > 0:
            return int(payload[at + len(SEQ) : end])
    return int(json.loads(payload)["seq"])


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.halls: dict[str, HallRecord] = {}
        self.births: dict[str, list[float]] = {}
        self.pending: dict[str, int] = {}  # hall -> seqs of the current request still missing
        self.expected: dict[str, int] = {}
        self.complete = threading.Event()
        self.connects = 0
        self.connected_at: list[float] = []
        self.subscribed = threading.Event()

    # paho's network thread --------------------------------------------------------------

    def on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(
            [
                ("hall/v1/+/event/#", SubscribeOptions(qos=1)),
                ("hall/v1/+/state", SubscribeOptions(qos=1)),
            ]
        )

    def on_subscribe(self, _c: Any, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
        with self.lock:
            self.connects += 1
            self.connected_at.append(time.monotonic())
        self.subscribed.set()

    def on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        parts = message.topic.split("/", 4)
        if len(parts) < 4:
            return
        with self.lock:
            if parts[3] == "event":
                self.on_event(parts[2], message.payload, now)
            elif parts[3] == "state" and not message.retain:
                # A retained state is an old birth (or will) replayed on subscribe.
                try:
                    online = json.loads(message.payload).get("online") is True
                except (ValueError, AttributeError):
                    return
                if online:
                    self.births.setdefault(parts[2], []).append(now)

    def on_event(self, hall: str, payload: bytes | bytearray, now: float) -> None:
        record = self.halls.get(hall)
        if record is None:
            record = self.halls[hall] = HallRecord()
        seq = seq_of(payload)
        record.received += 1
        if seq in record.first:
            record.duplicates += 1
            return
        record.first[seq] = now
        if seq < record.max_seq:
            record.misordered += 1
        else:
            record.max_seq = seq
        if hall in self.pending and seq <= self.expected[hall]:
            self.pending[hall] -= 1
            if self.pending[hall] == 0:
                del self.pending[hall]
                if not self.pending:
                    self.complete.set()

    # the request thread ------------------------------------------------------------------

    def expect(self, expected: dict[str, int]) -> None:
        with self.lock:
            self.expected = dict(expected)
            self.pending = {}
            for hall, last in expected.items():
                record = self.halls.get(hall)
                have = 0 if record is None else sum(1 for s in record.first if s <= last)
                if have < last:
                    self.pending[hall] = last - have
            self.complete = threading.Event()
            if not self.pending:
                self.complete.set()

    def report(self, hall: str, last: int) -> dict[str, Any]:
        record = self.halls.get(hall) or HallRecord()
        wanted = [record.first[s] for s in range(1, last + 1) if s in record.first]
        missing = [s for s in range(1, last + 1) if s not in record.first]
        return {
            "expected": last,
            "received": record.received,
            "distinct": len(record.first),
            "missing": len(missing),
            "missing_first": missing[:10],
            "duplicates": record.duplicates,
            "misordered": record.misordered,
            "extra": sum(1 for s in record.first if s > last),
            "first_at": min(wanted) if wanted else None,
            "last_at": max(wanted) if wanted else None,
        }


def emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def serve_requests(counter: Counter) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if "expect" in request:
            expected = {str(h): int(n) for h, n in request["expect"].items()}
            counter.expect(expected)
            complete = counter.complete.wait(request.get("timeout", 120))
            time.sleep(request.get("grace", 0.0))
            with counter.lock:
                document = {
                    "complete": complete,
                    "at": time.monotonic(),
                    "connects": counter.connects,
                    "halls": {h: counter.report(h, n) for h, n in expected.items()},
                }
                if request.get("forget"):
                    for hall in expected:
                        counter.halls.pop(hall, None)
            emit(document)
        elif "births" in request:
            with counter.lock:
                document = {
                    "births": counter.births,
                    "connects": counter.connects,
                    "connected_at": counter.connected_at,
                }
            emit(document)


def main() -> int:
    parser = argparse.ArgumentParser(description="the benchmarks' counting subscriber")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", default="bench-central")
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args()

    counter = Counter()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv5
    )
    client.on_connect = counter.on_connect
    client.on_subscribe = counter.on_subscribe
    client.on_message = counter.on_message
    client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.SessionExpiryInterval = SESSION_EXPIRY_S if args.persistent else 0
    client.connect(
        args.host, args.port, keepalive=60, clean_start=not args.persistent, properties=connect
    )
    client.loop_start()
    try:
        if not counter.subscribed.wait(30):
            raise SystemExit("the counting subscriber could not subscribe within 30 s")
        emit({"ready": True, "at": time.monotonic()})
        serve_requests(counter)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
