"""Latency of taking a ticket through the local API of a real ``hall-agent run``.

The agent runs as its own process with a fresh storage directory, as systemd would start
it. Each client is a thread with its own httpx client and keep-alive connection, in this
process (on the same machine: on 2 cores the clients compete with the agent for CPU).

Measured at each concurrency level (1 and 20 clients by default):

- ``take``: ``POST /api/v1/tickets {"service": ...}`` → 201; the hall's single writer
  applies it and commits it durably (WAL, ``synchronous=FULL``) before answering.
- ``healthz``: ``GET /healthz``, the baseline: the same HTTP stack, no queue, no write.

The requests are spread over blocks that alternate level and endpoint, so a noisy
neighbour hits every series alike. Latencies are per request (send to full answer).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from _common import (
    AgentProcess,
    bench_hall,
    median,
    percentile,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)
from _fsync import NoShim, add_arguments, agent_env, mode, raw_baseline, suffix, taskset_prefix

NAME = "take_latency"
TARGET_P99_MS = 20.0
SERVICES = ("social", "civil", "housing", "general")
ENDPOINTS = ("healthz", "take")


@dataclass
class Series:
    latencies_ms: list[float] = field(default_factory=list)
    block_rates: list[float] = field(default_factory=list)
    block_p50_ms: list[float] = field(default_factory=list)
    errors: int = 0


class Load:
    """``level`` clients, each a thread with its own keep-alive httpx connection.

    Threads with the sync client rather than asyncio: httpx's async path looks for the
    optional ``sniffio`` on every request, a failed import that costs this side about
    0.2 ms per call when it is not installed, and would be counted as agent latency.
    """

    def __init__(self, url: str, level: int, headers: dict[str, str]) -> None:
        self.level = level
        self.clients = [
            httpx.Client(
                base_url=url,
                headers=headers,
                timeout=30,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in range(level)
        ]
        self._pool = ThreadPoolExecutor(max_workers=level, thread_name_prefix="client")
        self._lock = threading.Lock()
        self._services = itertools.cycle(SERVICES)

    def close(self) -> None:
        self._pool.shutdown()
        for client in self.clients:
            client.close()

    def _one(self, client: httpx.Client, endpoint: str) -> tuple[float, bool]:
        if endpoint == "take":
            with self._lock:
                body = {"service": next(self._services)}
            started = time.perf_counter()
            response = client.post("/api/v1/tickets", json=body)
            ok = response.status_code == 201
        else:
            started = time.perf_counter()
            response = client.get("/healthz")
            ok = response.status_code == 200
        return (time.perf_counter() - started) * 1000, ok

    def block(self, endpoint: str, count: int, series: Series | None) -> None:
        """``count`` requests, ``level`` in flight at any time."""
        remaining = count
        start = threading.Barrier(self.level)

        def client_loop(client: httpx.Client) -> list[tuple[float, bool]]:
            nonlocal remaining
            done: list[tuple[float, bool]] = []
            start.wait()
            while True:
                with self._lock:
                    if remaining <= 0:
                        return done
                    remaining -= 1
                done.append(self._one(client, endpoint))

        started = time.perf_counter()
        results = list(self._pool.map(client_loop, self.clients))
        elapsed = time.perf_counter() - started
        if series is None:
            return
        block = []
        for latency, ok in itertools.chain.from_iterable(results):
            block.append(latency)
            series.errors += not ok
        series.latencies_ms += block
        series.block_p50_ms.append(percentile(block, 50))
        series.block_rates.append(count / elapsed)


def measure(
    url: str,
    levels: list[int],
    requests: int,
    blocks: int,
    warmup: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    loads = {level: Load(url, level, headers) for level in levels}
    series = {(level, ep): Series() for level in levels for ep in ENDPOINTS}
    try:
        for load in loads.values():
            for endpoint in ENDPOINTS:
                load.block(endpoint, warmup, None)
        per_block = -(-requests // blocks)
        for b in range(blocks):
            plan = [(level, ep) for level in levels for ep in ENDPOINTS]
            shift = b % len(plan)
            for level, endpoint in plan[shift:] + plan[:shift]:
                loads[level].block(endpoint, per_block, series[level, endpoint])
            print(f"block {b + 1}/{blocks} done", file=sys.stderr)
    finally:
        for load in loads.values():
            load.close()
    return {
        "series": series,
        "tickets_taken": warmup * len(levels) + per_block * blocks * len(levels),
    }


def summarise(s: Series) -> dict[str, Any]:
    lat = s.latencies_ms
    return {
        "requests": len(lat),
        "errors": s.errors,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
        "mean_ms": sum(lat) / len(lat),
        "requests_per_s_median": median(s.block_rates),
        # In run order: a drift here is the queue growing (or the neighbours waking up).
        "block_p50_ms": [round(v, 3) for v in s.block_p50_ms],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per level and endpoint")
    parser.add_argument("--levels", default="1,20", help="concurrent clients (1,20)")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved blocks (10)")
    parser.add_argument("--warmup", type=int, default=100, help="per level and endpoint")
    add_arguments(parser)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    try:
        env, prefix = agent_env(args.fsync_ms), taskset_prefix(args.one_core)
    except NoShim as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 0
    with scratch_dir("take-latency-") as work:
        storage = work / "state"
        config = write_config(work / "config.yaml", bench_hall(storage, port=0, width=4))
        with AgentProcess(config, storage, work / "agent.log", env=env, prefix=prefix) as agent_:
            measured = measure(
                agent_.url, levels, args.requests, args.blocks, args.warmup, agent_.ops
            )

    figures: dict[str, Any] = {}
    rows = []
    for level in levels:
        base = summarise(measured["series"][level, "healthz"])
        take = summarise(measured["series"][level, "take"])
        take["ratio_to_healthz"] = {
            q: take[f"{q}_ms"] / base[f"{q}_ms"] for q in ("p50", "p95", "p99")
        }
        figures[f"clients_{level}"] = {"healthz": base, "take": take}
        for name, f in (("healthz", base), ("take", take)):
            rows.append(
                [
                    f"{level}",
                    name,
                    f["requests"],
                    f["errors"],
                    f["p50_ms"],
                    f["p95_ms"],
                    f["p99_ms"],
                    f["max_ms"],
                    f["requests_per_s_median"],
                ]
            )
    p99 = figures["clients_1"]["take"]["p99_ms"] if 1 in levels else None
    figures["target"] = {
        "take_p99_ms_at_1_client_max": TARGET_P99_MS,
        "met": None if p99 is None else p99 <= TARGET_P99_MS,
    }
    figures["raw_sqlite"] = raw_baseline(args.fsync_ms, args.one_core)
    parameters = {
        **mode(args.fsync_ms, args.one_core),
        "levels": levels,
        "requests_per_level_and_endpoint": args.requests,
        "blocks": args.blocks,
        "warmup_per_level_and_endpoint": args.warmup,
        "tickets_in_queue_at_end": measured["tickets_taken"],
        "client": f"httpx {httpx.__version__} Client per thread, keep-alive, 1 connection each",
        "agent": "hall-agent run, fresh storage in bench/.tmp, offline, log level WARNING",
    }
    path = write_results(NAME + suffix(args.fsync_ms, args.one_core), parameters, figures)

    raw = figures["raw_sqlite"]
    print(
        f"raw SQLite commit at this fsync delay: p50 {raw['p50_ms']:.2f} ms, "
        f"p99 {raw['p99_ms']:.2f} ms"
    )
    print(f"local API latency, {args.requests} requests per series, ms")
    print_table(
        ["clients", "request", "n", "err", "p50", "p95", "p99", "max", "req/s"],
        rows,
    )
    for level in levels:
        r = figures[f"clients_{level}"]["take"]["ratio_to_healthz"]
        print(
            f"take / healthz at {level} client(s): p50 {r['p50']:.1f}x, "
            f"p95 {r['p95']:.1f}x, p99 {r['p99']:.1f}x"
        )
    if p99 is not None:
        met = "met" if figures["target"]["met"] else "NOT met"
        print(f"target take p99 <= {TARGET_P99_MS:.0f} ms at 1 client: {p99:.2f} ms ({met})")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
