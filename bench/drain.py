"""Drain rate of an outbox backlog through the central link, against raw aiomqtt loops.

A backlog of 20 000 real events (the queue engine's ticket and window events, as a busy
hall writes them) is built once in a store while offline, then copied afresh for every
run. Each run drains it to a local mosquitto, and a subscriber in its own process
(QoS 1, ``hall/v1/+/event/#``) counts every ``seq``. The clock starts when the client
starts connecting and stops when the subscriber has the last missing event.

- ``link@N``: the real ``Link`` (with its ``Hall`` and ``Store``) with ``mqtt.inflight =
  N`` and ``mqtt.drain_rate = 10000`` (the highest allowed, so that the pacer is not what
  is measured). It reads the store in batches, builds each envelope, publishes at QoS 1
  with a window of N in flight, and marks PUBACKed events published.
- ``raw@N`` (baseline): a plain aiomqtt QoS 1 loop over the same payloads (the very JSON
  strings the link sends, on the same topics, prepared before the clock starts), with N
  concurrent ``publish()`` calls bounded by a semaphore, and paho's in-flight limit set to
  N like the link does.
- ``raw-sequential``: ``for ...: await client.publish(...)``, one in flight.
- ``paced``: once, after the rounds: the link at its default window with ``drain_rate``
  set to ``--paced-rate`` (2 000/s), timed from connected to the last PUBACK: the rate the
  agent sent at, against the cap (the cap itself is proven on a moved clock in
  ``tests/test_pacer.py``; this is the real clock, the real broker).

Both kinds of client connect alike (MQTT 5, clean start false, a session expiry). Every
round runs every mode once, in an order that rotates from round to round; figures are
medians over the rounds. The target: the link at its default window drains at least half
as fast as the raw loop with the same window. ``--profile`` (done anyway when the target
is missed) adds a cProfile of one link drain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
from _common import median, print_table, scratch_dir, write_results
from _mqtt import (
    Broker,
    Subscriber,
    broker_version,
    build_backlog,
    copy_store,
    cpu_seconds,
    envelope_json,
    event_templates,
    link_config,
    stored_events,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.central.link import Link
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import Store, StoredEvent

NAME = "drain"
TARGET_RATIO = 0.5
DEFAULT_INFLIGHT = 32
DRAIN_RATE = 10_000.0


class Bench:
    def __init__(
        self, broker: Broker, subscriber: Subscriber, master: Path, work: Path, count: int
    ) -> None:
        self.broker = broker
        self.subscriber = subscriber
        self.master = master
        self.work = work
        self.count = count
        self.events: list[StoredEvent] = stored_events(master)
        self.runs = 0
        assert broker.proc is not None
        self.broker_pid = broker.proc.pid
        self.warnings = WarningCount()
        mqtt_log = logging.getLogger("mqtt")
        mqtt_log.addHandler(self.warnings)
        mqtt_log.propagate = False

    def hall_id(self, mode: str) -> str:
        self.runs += 1
        self.warnings.count = 0
        slug = mode.replace("@", "-").replace("_", "-")
        return f"drain-{self.runs:03d}-{slug}"


class Meter:
    """CPU seconds of this process, the subscriber and the broker over one run."""

    def __init__(self, bench: Bench) -> None:
        self.pids = {"subscriber": bench.subscriber.pid, "broker": bench.broker_pid}
        self.started: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def start(self) -> None:
        self.started = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.started["self"] = time.process_time()

    def stop_self(self) -> None:
        self.cpu["self"] = time.process_time() - self.started["self"]

    def stop_others(self) -> None:
        for key, pid in self.pids.items():
            self.cpu[key] = cpu_seconds(pid) - self.started[key]


class WarningCount(logging.Handler):
    """Counts aiomqtt's "There are N pending publish calls." warnings (without printing)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _figures(
    bench: Bench,
    t0: float,
    connected: float,
    acked: float,
    meter: Meter,
    report: dict[str, Any],
    hall_id: str,
) -> dict[str, Any]:
    count = bench.count
    seen = report["halls"][hall_id]
    last = seen["last_at"] if seen["last_at"] is not None else float("nan")
    meter.stop_others()
    return {
        "events_per_s": count / (last - t0),
        "seconds": last - t0,
        "publisher_events_per_s": count / (acked - t0),
        "connected_to_last_puback_events_per_s": count / (acked - connected),
        "connect_ms": (connected - t0) * 1000,
        "cpu_us_per_event": meter.cpu["self"] / count * 1e6,
        "subscriber_cpu_us_per_event": meter.cpu["subscriber"] / count * 1e6,
        "broker_cpu_us_per_event": meter.cpu["broker"] / count * 1e6,
        "subscriber_cpu_percent": meter.cpu["subscriber"] / (last - t0) * 100,
        "mqtt_warnings": bench.warnings.count,
        "complete": report["complete"],
        "missing": seen["missing"],
        "duplicates": seen["duplicates"],
        "misordered": seen["misordered"],
    }


async def run_link(
    bench: Bench,
    inflight: int,
    profiler: cProfile.Profile | None = None,
    drain_rate: float = DRAIN_RATE,
) -> dict[str, Any]:
    hall_id = bench.hall_id(f"link@{inflight}")
    storage = bench.work / hall_id
    copy_store(bench.master, storage)
    # No random wait before the first connect (a hall's start-up spread): the clock runs.
    config = link_config(
        storage,
        hall_id,
        bench.broker.url,
        drain_rate=drain_rate,
        inflight=inflight,
        reconnect_spread_s=0,
    )
    store = Store.open(storage)
    try:
        async with Hall(config, store) as hall:
            report_task = await bench.subscriber.expect({hall_id: bench.count})
            if profiler is not None:
                profiler.enable()
            meter = Meter(bench)
            meter.start()
            t0 = time.monotonic()
            async with Link(hall, DeviceBoard(config)) as link:
                await asyncio.wait_for(link.connected.wait(), 30)
                connected = time.monotonic()
                # The link signals nothing per PUBACK: poll its counter (costs ~nothing).
                while link.counters.published < bench.count:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
                acked = time.monotonic()
                meter.stop_self()
                if profiler is not None:
                    profiler.disable()
                report = await report_task
                # Not timed: the last published marks reach the store within 0.2 s.
                deadline = time.monotonic() + 10
                depth = await hall.store_call(lambda s: s.outbox_depth())
                while depth and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    depth = await hall.store_call(lambda s: s.outbox_depth())
    finally:
        store.close()
    figures = _figures(bench, t0, connected, acked, meter, report, hall_id)
    figures["unpublished_after"] = depth
    return figures


def _connect_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 600
    return props


async def run_raw(bench: Bench, inflight: int | None) -> dict[str, Any]:
    """``inflight`` concurrent publish() calls, or ``None``: one awaited after the other."""
    mode = "raw-sequential" if inflight is None else f"raw@{inflight}"
    hall_id = bench.hall_id(mode)
    messages = [
        (f"hall/v1/{hall_id}/event/{e.type}", envelope_json(e, hall_id)) for e in bench.events
    ]
    client = aiomqtt.Client(
        bench.broker.host,
        bench.broker.port,
        identifier=hall_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        keepalive=45,
        properties=_connect_properties(),
        max_inflight_messages=inflight or DEFAULT_INFLIGHT,
        timeout=45,
    )
    report_task = await bench.subscriber.expect({hall_id: bench.count})
    meter = Meter(bench)
    meter.start()
    t0 = time.monotonic()
    async with client:
        connected = time.monotonic()
        if inflight is None:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1)
        else:
            window = asyncio.Semaphore(inflight)

            async def send(topic: str, payload: str) -> None:
                try:
                    await client.publish(topic, payload, qos=1)
                finally:
                    window.release()

            async with asyncio.TaskGroup() as tasks:
                for topic, payload in messages:
                    await window.acquire()
                    tasks.create_task(send(topic, payload))
        acked = time.monotonic()
        meter.stop_self()
        report = await report_task
    return _figures(bench, t0, connected, acked, meter, report, hall_id)


def modes_for(windows: list[int]) -> list[str]:
    return [f"link@{n}" for n in windows] + [f"raw@{n}" for n in windows] + ["raw-sequential"]


async def one_run(bench: Bench, mode: str) -> dict[str, Any]:
    kind, _, n = mode.partition("@")
    if kind == "link":
        return await run_link(bench, int(n))
    if kind == "raw":
        return await run_raw(bench, int(n))
    return await run_raw(bench, None)


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    templates = event_templates(work / "templates")
    master = work / "master"
    backlog = build_backlog(master, args.events, templates)
    warm_master = work / "warm"
    build_backlog(warm_master, 2000, templates)
    windows = sorted(set(args.inflight) | {DEFAULT_INFLIGHT})
    modes = modes_for(windows)
    broker = Broker(work / "broker")
    broker.start()
    try:
        async with Subscriber(broker, "bench-central") as subscriber:
            # Warm-up: imports, the broker's first connections, the page cache.
            warm = Bench(broker, subscriber, warm_master, work / "runs", 2000)
            for mode in ("link@32", "raw@32", "raw-sequential"):
                await one_run(warm, mode)
            bench = Bench(broker, subscriber, master, work / "runs", args.events)
            bench.runs = warm.runs
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            for r in range(args.rounds):
                shift = r % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    runs[mode].append(await one_run(bench, mode))
                print(
                    f"round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{m} {runs[m][-1]['events_per_s']:.0f}/s" for m in modes),
                    file=sys.stderr,
                )
            paced = await run_link(bench, DEFAULT_INFLIGHT, drain_rate=args.paced_rate)
            profile = None
            figures = summarise(runs, windows)
            achieved = paced["connected_to_last_puback_events_per_s"]
            figures["paced"] = {
                "cap_per_s": args.paced_rate,
                "sent_per_s": achieved,
                "ratio_to_cap": achieved / args.paced_rate,
                "missing": paced["missing"],
                "duplicates": paced["duplicates"],
            }
            if args.profile or not figures["target"]["met"]:
                profile = await profile_link(bench)
    finally:
        broker.stop()
    return {
        "figures": figures,
        "backlog": backlog,
        "modes": modes,
        "windows": windows,
        "profile": profile,
    }


def summarise(runs: dict[str, list[dict[str, Any]]], windows: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for mode, series in runs.items():
        figures[mode] = {
            "events_per_s_median": median([s["events_per_s"] for s in series]),
            "events_per_s_min": min(s["events_per_s"] for s in series),
            "events_per_s_max": max(s["events_per_s"] for s in series),
            "seconds_median": median([s["seconds"] for s in series]),
            "publisher_events_per_s_median": median([s["publisher_events_per_s"] for s in series]),
            "connect_ms_median": median([s["connect_ms"] for s in series]),
            "cpu_us_per_event_median": median([s["cpu_us_per_event"] for s in series]),
            "subscriber_cpu_us_per_event_median": median(
                [s["subscriber_cpu_us_per_event"] for s in series]
            ),
            "subscriber_cpu_percent_median": median([s["subscriber_cpu_percent"] for s in series]),
            "broker_cpu_us_per_event_median": median(
                [s["broker_cpu_us_per_event"] for s in series]
            ),
            "mqtt_warnings_median": median([s["mqtt_warnings"] for s in series]),
            "missing_total": sum(s["missing"] for s in series),
            "duplicates_total": sum(s["duplicates"] for s in series),
            "misordered_total": sum(s["misordered"] for s in series),
            "all_complete": all(s["complete"] for s in series),
            "runs": series,
        }
    sequential = figures["raw-sequential"]["events_per_s_median"]
    for n in windows:
        link, raw = figures[f"link@{n}"], figures[f"raw@{n}"]
        paired = [
            a["events_per_s"] / b["events_per_s"]
            for a, b in zip(runs[f"link@{n}"], runs[f"raw@{n}"], strict=True)
        ]
        link["ratio_to_raw_same_window"] = link["events_per_s_median"] / raw["events_per_s_median"]
        link["ratio_to_raw_same_window_paired_median"] = median(paired)
        link["ratio_to_raw_sequential"] = link["events_per_s_median"] / sequential
        raw["ratio_to_raw_sequential"] = raw["events_per_s_median"] / sequential
    ratio = figures[f"link@{DEFAULT_INFLIGHT}"]["ratio_to_raw_same_window"]
    figures["target"] = {
        "link_default_window_ratio_min": TARGET_RATIO,
        "ratio": ratio,
        "met": ratio >= TARGET_RATIO,
    }
    return figures


async def profile_link(bench: Bench, top: int = 30) -> str:
    """cProfile of one link drain at the default window (the event loop's thread only)."""
    profiler = cProfile.Profile()
    await run_link(bench, DEFAULT_INFLIGHT, profiler)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="backlog size (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each mode (5)")
    parser.add_argument(
        "--inflight",
        type=int,
        nargs="+",
        default=[8, 128],
        help=f"windows besides the default {DEFAULT_INFLIGHT} (8 128)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one link drain")
    parser.add_argument(
        "--paced-rate", type=float, default=2000.0, help="drain_rate of the paced run (2000)"
    )
    args = parser.parse_args(argv)

    with scratch_dir("drain-") as work:
        result = asyncio.run(measure(args, work))
    figures = result["figures"]
    parameters = {
        "events": args.events,
        "rounds": args.rounds,
        "modes": result["modes"],
        "drain_rate": DRAIN_RATE,
        "default_inflight": DEFAULT_INFLIGHT,
        "backlog": result["backlog"],
        "broker": broker_version() + " (local, no persistence, tests/broker.py config)",
        "subscriber": "separate process, aiomqtt, QoS 1 on hall/v1/+/event/#",
        "clock": "from the start of connecting to the subscriber's receipt of the last event",
    }
    path = write_results(NAME, parameters, figures, profile=result["profile"])

    print(
        f"drain of a {args.events}-event backlog to local mosquitto, {args.rounds} rounds, "
        "medians; events/s to the subscriber's last receipt"
    )
    rows = []
    for mode in result["modes"]:
        f = figures[mode]
        rows.append(
            [
                mode,
                f["events_per_s_median"],
                f"{f['events_per_s_min']:.0f}-{f['events_per_s_max']:.0f}",
                f["publisher_events_per_s_median"],
                f["connect_ms_median"],
                f["cpu_us_per_event_median"],
                f["subscriber_cpu_percent_median"],
                f["broker_cpu_us_per_event_median"],
                f"{f['missing_total']}/{f['duplicates_total']}/{f['misordered_total']}",
                _ratio(f.get("ratio_to_raw_same_window")),
                f"{f.get('ratio_to_raw_sequential', 1.0):.2f}x",
            ]
        )
    print_table(
        [
            "mode",
            "events/s",
            "range",
            "to PUBACK/s",
            "connect ms",
            "cpu us/ev",
            "sub cpu %",
            "broker us/ev",
            "miss/dup/ooo",
            "vs raw same window",
            "vs sequential",
        ],
        rows,
    )
    target = figures["target"]
    met = "met" if target["met"] else "NOT met"
    print(
        f"target link@{DEFAULT_INFLIGHT} >= {TARGET_RATIO}x raw@{DEFAULT_INFLIGHT}: "
        f"{target['ratio']:.2f}x ({met})"
    )
    paced = figures["paced"]
    print(
        f"paced at {paced['cap_per_s']:.0f}/s: sent {paced['sent_per_s']:.0f}/s "
        f"({paced['ratio_to_cap']:.3f}x the cap), {paced['missing']} missing"
    )
    if result["profile"]:
        print(result["profile"])
    print(f"results: {path}")
    return 0


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
