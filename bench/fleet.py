"""A fleet of 200 halls' central links against one mosquitto that restarts.

Every hall is the real thing minus its web server and drivers: its own ``Store`` (a fresh
SQLite file), ``Hall`` (queue engine behind its single writer) and ``Link``, hall ids
``fleet-000``..``fleet-199``, all in this one process on one event loop, with the
**shipped defaults** of the link (``reconnect_spread_s``, ``reconnect_max_s``,
``stable_after_s``, ``drain_rate``, ``inflight``): the point is how a real fleet spreads
its reconnects. mosquitto runs with persistence, and central is a counting subscriber in
its own process with a persistent session (QoS 1 on ``hall/v1/+/event/#`` and
``hall/v1/+/state``), so nothing published while it reconnects is lost to it.

1. ``startup``: every link starts at once; time until all are connected.
2. ``online``: every hall takes 2 tickets; the subscriber must see them all.
3. ``outage``: mosquitto is stopped (SIGTERM, it saves its sessions); the links notice; for
   5 s each hall keeps serving (takes, calls, a finish: 8 operations each, spread over
   the outage), which builds a small backlog in every outbox; mosquitto starts again on
   the same port.
4. ``recovery``: the time of each hall's reconnect is recorded in two ways: here, when
   its ``link.counters.connects`` goes up (polled every 50 ms), and at central, when its
   live birth arrives. Then the time until the subscriber holds every ``seq`` of every
   hall up to each store's ``last_seq``, with missing, duplicates and out-of-order counts
   per hall.

Reported: first and last reconnect after the broker came back, their spread, a histogram
in 5 s buckets, the connect attempts that met the closed port, the time until every
backlog is drained, and the process's RSS per hall, CPU and event-loop lag (a timer that
should fire every 50 ms: when it is late, 2 cores were not enough for the fleet and the
timings are stretched by that much). The target: reconnects spread over at least 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import median, percentile, print_table, scratch_dir, write_results
from _mqtt import Broker, Subscriber, broker_version, link_config, read_vm

from agent.central.link import Link
from agent.config import MqttConfig
from agent.core.errors import QueueError
from agent.core.operations import CallNext, Finish, Take
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import Store

NAME = "fleet"
TARGET_SPREAD_S = 30.0
BUCKET_S = 5.0
SERVICES = ("social", "civil", "housing", "general")
WINDOWS = ("w1", "w2", "w3")


class LogCount(logging.Handler):
    """Counts log records by level and logger instead of printing 200 halls' worth."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()  # by message template

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}"] += 1
        if record.levelno >= logging.WARNING:
            self.warnings[f"{record.name}: {record.msg}"] += 1


class Member:
    """One hall of the fleet."""

    def __init__(self, index: int, work: Path, url: str) -> None:
        self.hall_id = f"fleet-{index:03d}"
        self.index = index
        self.config = link_config(work / self.hall_id, self.hall_id, url)
        self.store = Store.open(self.config.storage.path)
        self.hall = Hall(self.config, self.store)
        self.link: Link | None = None
        self.connects_before = 0
        self.sessions_before = 0
        self.reconnected_at: float | None = None
        self.operations = 0
        self.refused = 0

    async def operate(self, step: int) -> None:
        """One step of a hall's work: mostly takes, now and then a call or a finish."""
        service = SERVICES[(self.index + step) % len(SERVICES)]
        window = WINDOWS[(self.index + step) % len(WINDOWS)]
        kind = step % 4
        try:
            if kind == 3:
                await self.hall.execute(CallNext(window=window))
            elif kind == 2 and step > 4:
                await self.hall.execute(Finish(window=window))
            else:
                await self.hall.execute(Take(service=service))
        except QueueError:
            self.refused += 1
        else:
            self.operations += 1


class LoopLag:
    """How late a 50 ms timer fires: the event loop's own measure of CPU starvation."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.lags: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            now = time.monotonic()
            self.lags.append((now, now - due))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def between(self, start: float, end: float) -> dict[str, float]:
        values = [lag * 1000 for at, lag in self.lags if start <= at <= end]
        if not values:
            return {"p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
        return {
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
        }


async def wait_until(condition: Any, limit_s: float, what: str, every: float = 0.05) -> float:
    """Poll ``condition()``; the monotonic time it became true. Raises after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit_s:.0f} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic()


def hold_port(host: str, port: int) -> socket.socket | None:
    """Keep the broker's port bound (not listening: connects are refused) while it is down,
    so that no socket on the machine gets it as its ephemeral port. Best effort."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def histogram(offsets: list[float], bucket: float) -> list[dict[str, Any]]:
    if not offsets:
        return []
    top = int(max(offsets) // bucket)
    counts = Counter(int(x // bucket) for x in offsets)
    return [
        {"from_s": b * bucket, "to_s": (b + 1) * bucket, "halls": counts.get(b, 0)}
        for b in range(top + 1)
    ]


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    logs = LogCount()
    root = logging.getLogger()
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    for name in ("mqtt", "agent"):
        logging.getLogger(name).propagate = True
    logging.lastResort = None

    phases: dict[str, Any] = {}
    rss_start = read_vm()
    broker = Broker(work / "broker", persistence=True)
    broker.start()
    lag = LoopLag()
    lag.start()
    members: list[Member] = []
    try:
        async with (
            contextlib.AsyncExitStack() as stack,
            Subscriber(broker, "fleet-central", persistent=True) as central,
        ):
            # -- setup: stores and halls (not timed as part of any phase) ---------------
            t = time.monotonic()
            for i in range(args.halls):
                member = Member(i, work / "halls", broker.url)
                stack.callback(member.store.close)
                await stack.enter_async_context(member.hall)
                members.append(member)
            phases["setup_s"] = time.monotonic() - t
            rss_halls = read_vm()

            # -- 1. startup: all links at once ------------------------------------------
            cpu = time.process_time()
            t_start_links = time.monotonic()
            for member in members:
                member.link = await stack.enter_async_context(
                    Link(member.hall, DeviceBoard(member.config))
                )
            t_all_up = await wait_until(
                lambda: all(m.link is not None and m.link.connected.is_set() for m in members),
                60,
                "every hall's first connect",
            )
            phases["startup"] = {
                "all_connected_s": t_all_up - t_start_links,
                "cpu_s": time.process_time() - cpu,
                "loop_lag": lag.between(t_start_links, t_all_up),
            }
            rss_connected = read_vm()

            # -- 2. online: a little traffic that must arrive ---------------------------
            t = time.monotonic()
            for step in range(2):
                await asyncio.gather(*(m.operate(step) for m in members))
            expected = {m.hall_id: m.store.last_seq for m in members}
            report = await (await central.expect(expected, limit_s=60, forget=False))
            phases["online"] = {
                "events": sum(expected.values()),
                "complete": report["complete"],
                "delivered_s": report["at"] - t,
            }

            # -- 3. outage --------------------------------------------------------------
            for m in members:
                assert m.link is not None
                m.connects_before = m.link.counters.connects
                m.sessions_before = m.link.session
            cpu = time.process_time()
            t_stop = time.monotonic()
            broker.stop()
            placeholder = hold_port(broker.host, broker.port)
            t_noticed = await wait_until(
                lambda: not any(m.link is not None and m.link.connected.is_set() for m in members),
                30,
                "every link to notice the broker is gone",
            )
            steps = 8
            for step in range(2, 2 + steps):
                await asyncio.gather(*(m.operate(step) for m in members))
                await asyncio.sleep(
                    max(0.0, t_stop + (step - 1) * args.down / (steps + 1) - time.monotonic())
                )
            t_ops_done = time.monotonic()
            await asyncio.sleep(max(0.0, t_stop + args.down - time.monotonic()))
            attempts_down = sum(
                m.link.session - m.sessions_before for m in members if m.link is not None
            )
            t_back = time.monotonic()
            port_held = placeholder is not None
            if placeholder is not None:
                placeholder.close()
            broker.start()
            t_listening = time.monotonic()
            phases["outage"] = {
                "down_s": t_back - t_stop,
                "port_held_while_down": port_held,
                "links_noticed_s": t_noticed - t_stop,
                "operations_s": t_ops_done - t_stop,
                "operations": sum(m.operations for m in members),
                "refused": sum(m.refused for m in members),
                "connect_attempts_while_down": attempts_down,
                "halls_that_tried_while_down": sum(
                    1
                    for m in members
                    if m.link is not None and m.link.session - m.sessions_before > 0
                ),
                "loop_lag": lag.between(t_stop, t_back),
            }

            # -- 4. recovery ------------------------------------------------------------
            expected = {m.hall_id: m.store.last_seq for m in members}
            drained_task = await central.expect(expected, limit_s=args.timeout, forget=False)

            def record_reconnects() -> bool:
                now = time.monotonic()
                for m in members:
                    if (
                        m.reconnected_at is None
                        and m.link is not None
                        and m.link.counters.connects > m.connects_before
                    ):
                        m.reconnected_at = now
                return all(m.reconnected_at is not None for m in members)

            try:
                t_all_back = await wait_until(record_reconnects, args.timeout, "every reconnect")
            except TimeoutError:
                t_all_back = None
            report = await drained_task
            cpu_recovery = time.process_time() - cpu
            births = await central.births()
            rss_end = read_vm()
            # The links are stopped (each publishes its offline state) by the exit stack.
    finally:
        await lag.stop()
        broker.stop()
        root.removeHandler(logs)

    # -- figures -------------------------------------------------------------------------
    offsets = sorted(m.reconnected_at - t_back for m in members if m.reconnected_at is not None)
    central_offsets = []
    for m in members:
        after = [b - t_back for b in births["births"].get(m.hall_id, []) if b >= t_back]
        if after:
            central_offsets.append(min(after))
    central_offsets.sort()
    halls = report["halls"]
    drained_at = [h["last_at"] for h in halls.values() if h["last_at"] is not None]
    per_hall_drain = [
        halls[m.hall_id]["last_at"] - m.reconnected_at
        for m in members
        if m.reconnected_at is not None and halls[m.hall_id]["last_at"] is not None
    ]
    missing = {h: v["missing"] for h, v in halls.items() if v["missing"]}
    defaults = MqttConfig()
    spread = offsets[-1] - offsets[0] if offsets else math.nan
    recovery_end = max(drained_at) if drained_at else time.monotonic()
    figures = {
        "halls": args.halls,
        "reconnect": {
            "reconnected": len(offsets),
            "first_s": offsets[0] if offsets else None,
            "last_s": offsets[-1] if offsets else None,
            "spread_s": spread,
            "p10_s": percentile(offsets, 10),
            "median_s": median(offsets),
            "p90_s": percentile(offsets, 90),
            "histogram_5s": histogram(offsets, BUCKET_S),
            "max_per_second": max(Counter(int(x) for x in offsets).values()) if offsets else 0,
            "all_reconnected_s": None if t_all_back is None else t_all_back - t_back,
            "offsets_s": [round(x, 3) for x in offsets],
        },
        "reconnect_seen_by_central": {
            "births": len(central_offsets),
            "first_s": central_offsets[0] if central_offsets else None,
            "last_s": central_offsets[-1] if central_offsets else None,
            "spread_s": (central_offsets[-1] - central_offsets[0]) if central_offsets else None,
            "histogram_5s": histogram(central_offsets, BUCKET_S),
        },
        "drain": {
            "complete": report["complete"],
            "events_expected": sum(expected.values()),
            "backlog_events": sum(expected.values()) - phases["online"]["events"],
            "all_drained_s": (max(drained_at) - t_back) if drained_at else None,
            "per_hall_reconnect_to_drained_s_median": median(per_hall_drain),
            "per_hall_reconnect_to_drained_s_max": max(per_hall_drain) if per_hall_drain else None,
            "missing_total": sum(h["missing"] for h in halls.values()),
            "halls_with_missing": missing,
            "halls_missing_0": sum(1 for h in halls.values() if h["missing"] == 0),
            "duplicates_total": sum(h["duplicates"] for h in halls.values()),
            "misordered_total": sum(h["misordered"] for h in halls.values()),
            "central_connects": report["connects"],
        },
        "phases": phases,
        "recovery": {
            "broker_listening_after_start_s": t_listening - t_back,
            "cpu_s": cpu_recovery,
            "cpu_percent_of_one_core": cpu_recovery / (recovery_end - t_stop) * 100,
            "loop_lag": lag.between(t_back, recovery_end),
        },
        "memory": {
            "rss_mb_before": rss_start["VmRSS"] / 1024,
            "rss_mb_halls_open": rss_halls["VmRSS"] / 1024,
            "rss_mb_all_connected": rss_connected["VmRSS"] / 1024,
            "rss_mb_end": rss_end["VmRSS"] / 1024,
            "peak_rss_mb": rss_end["VmHWM"] / 1024,
            "per_hall_kb": (rss_connected["VmRSS"] - rss_start["VmRSS"]) / args.halls,
            "per_link_kb": (rss_connected["VmRSS"] - rss_halls["VmRSS"]) / args.halls,
            "threads": rss_end["Threads"],
        },
        "log_records": dict(sorted(logs.counts.items())),
        "warnings": dict(logs.warnings.most_common()),
        "link_defaults": {
            "reconnect_spread_s": defaults.reconnect_spread_s,
            "reconnect_max_s": defaults.reconnect_max_s,
            "stable_after_s": defaults.stable_after_s,
            "drain_rate": defaults.drain_rate,
            "inflight": defaults.inflight,
            "keepalive": defaults.keepalive,
        },
    }
    figures["target"] = {
        "spread_s_min": TARGET_SPREAD_S,
        "spread_s": spread,
        "met": bool(spread >= TARGET_SPREAD_S),
        "nothing_lost": report["complete"] and not missing,
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--halls", type=int, default=200, help="halls in the fleet (200)")
    parser.add_argument("--down", type=float, default=5.0, help="broker down time, s (5)")
    parser.add_argument("--timeout", type=float, default=150.0, help="recovery limit, s (150)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with scratch_dir("fleet-") as work:
        figures = asyncio.run(measure(args, work))
    figures["total_run_s"] = time.monotonic() - started
    parameters = {
        "halls": args.halls,
        "broker_down_s": args.down,
        "operations_per_hall": {"online": 2, "during_outage": 8},
        "broker": broker_version() + " (local, persistence on, stopped with SIGTERM)",
        "central": "separate process, paho, persistent session, QoS 1",
        "one_process": "every hall's Store, Hall and Link on one asyncio loop",
        "reconnect_time": "when link.counters.connects went up, polled every 50 ms",
    }
    path = write_results(NAME, parameters, figures)

    r, d, c = figures["reconnect"], figures["drain"], figures["reconnect_seen_by_central"]
    ph, mem = figures["phases"], figures["memory"]
    print(
        f"fleet of {args.halls} halls, one process, shipped link defaults "
        f"(spread {figures['link_defaults']['reconnect_spread_s']:g} s, cap "
        f"{figures['link_defaults']['reconnect_max_s']:g} s); broker down "
        f"{ph['outage']['down_s']:.1f} s"
    )
    rows = [
        ["startup: all connected", f"{ph['startup']['all_connected_s']:.2f} s"],
        [
            "outage: operations / backlog events",
            f"{ph['outage']['operations']} / {d['backlog_events']}",
        ],
        [
            "outage: connect attempts on the closed port",
            f"{ph['outage']['connect_attempts_while_down']} "
            f"({ph['outage']['halls_that_tried_while_down']} halls)",
        ],
        ["reconnected", f"{r['reconnected']}/{args.halls}"],
        [
            "first / median / last reconnect",
            f"{_s(r['first_s'])} / {_s(r['median_s'])} / "
            f"{_s(r['last_s'])} after the broker came back",
        ],
        ["spread (last - first)", _s(r["spread_s"])],
        ["most reconnects in one second", str(r["max_per_second"])],
        ["central saw births: first / last", f"{_s(c['first_s'])} / {_s(c['last_s'])}"],
        ["every backlog drained", f"{_s(d['all_drained_s'])} after the broker came back"],
        [
            "reconnect to drained, per hall",
            f"median {_s(d['per_hall_reconnect_to_drained_s_median'])}"
            f", max {_s(d['per_hall_reconnect_to_drained_s_max'])}",
        ],
        [
            "missing / duplicates / out of order",
            f"{d['missing_total']} / "
            f"{d['duplicates_total']} / {d['misordered_total']} "
            f"({d['halls_missing_0']}/{args.halls} halls with missing = 0)",
        ],
        [
            "RSS: before / all connected / peak",
            f"{mem['rss_mb_before']:.0f} / "
            f"{mem['rss_mb_all_connected']:.0f} / {mem['peak_rss_mb']:.0f} MB "
            f"({mem['per_hall_kb']:.0f} kB per hall, {mem['threads']} threads)",
        ],
        [
            "event-loop lag during recovery",
            f"p99 {figures['recovery']['loop_lag']['p99_ms']:.0f} "
            f"ms, max {figures['recovery']['loop_lag']['max_ms']:.0f} ms",
        ],
        [
            "aiomqtt 'pending publish calls' warnings",
            str(figures["warnings"].get("mqtt: There are %d pending publish calls.", 0)),
        ],
        [
            "CPU from outage to drained",
            f"{figures['recovery']['cpu_s']:.1f} s "
            f"({figures['recovery']['cpu_percent_of_one_core']:.0f} % of one core)",
        ],
    ]
    print_table(["figure", "value"], rows)
    print("reconnects after the broker came back, 5 s buckets:")
    print_table(
        ["from s", "to s", "halls", ""],
        [[b["from_s"], b["to_s"], b["halls"], "#" * b["halls"]] for b in r["histogram_5s"]],
    )
    t = figures["target"]
    print(
        f"target reconnect spread >= {TARGET_SPREAD_S:.0f} s: {_s(t['spread_s'])} "
        f"({'met' if t['met'] else 'NOT met'}); "
        f"nothing lost: {'yes' if t['nothing_lost'] else 'NO'}"
    )
    print(f"total run {figures['total_run_s']:.0f} s; results: {path}")
    return 0


def _s(value: float | None) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.1f} s")
    )


if __name__ == "__main__":
    sys.exit(main())
