"""Latency of a printed ticket: ``take`` at the local API → the last byte of the ticket at a
(virtual) network printer.

A real ``hall-agent run`` subprocess prints on the virtual printer (``agent.demo.emulators.
printer``), which runs in this process on its own event loop thread and listens on TCP like
a network printer's port 9100. It parses every byte (real ESC/POS) and stamps the moment
the cut command, the last byte of a ticket, arrives; the client stamps the moment it sends
the take. Both clocks are this process's ``time.perf_counter``.

Series, interleaved in blocks so a noisy moment hits each alike:

- ``kiosk → last byte``: ``POST /api/v1/tickets {"source": "touch"}`` → the cut at the
  printer. The ticket is committed first, then the printing component picks up the
  ``ticket.issued`` event, lays out and encodes the ticket, asks the printer's status
  (DLE EOT 1, 2, 4), sends the job, and asks the status again.
- ``kiosk → answer``: the same request → its 201, which waits for the print outcome.
- ``central take`` (baseline): ``{"source": "central"}``, a ticket that is not printed:
  the same API, queue and durable commit, no printing.

Both printer profiles are measured, each with its own agent: ``gb18030`` (the printer's
font, ~0.5 KB per ticket) and ``raster`` (the ticket drawn with Pillow and sent as a
~40 KB image).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from _common import (
    AgentProcess,
    LoopThread,
    bench_hall,
    median,
    percentile,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)
from _fsync import NoShim, add_arguments, agent_env, mode, raw_baseline, suffix, taskset_prefix

from agent.demo.emulators.printer import VirtualPrinter

NAME = "print_latency"
SERIES = ("kiosk_to_last_byte", "kiosk_to_answer", "central_take")


@dataclass
class Series:
    latencies_ms: list[float] = field(default_factory=list)
    block_p50_ms: list[float] = field(default_factory=list)


class PrinterThread(LoopThread):
    """The virtual printer on an event loop of its own, in a thread of this process."""

    def __init__(self) -> None:
        super().__init__()
        self.printer = VirtualPrinter(None, render=False)

    def __enter__(self) -> PrinterThread:
        self.start()
        self.port = self.call(self.printer.start_tcp("127.0.0.1", 0))
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.printer.stop_tcp())
        self.stop()

    def wait_for(self, count: int) -> float:
        """The perf_counter at which the ``count``-th ticket's cut arrived."""
        tickets = self.call(self.printer.wait_for_tickets(count, within=20))
        return float(tickets[count - 1].received_at)


def agent_config(storage: Any, port: int, profile: str) -> dict[str, Any]:
    config = bench_hall(storage, port=0, width=4)
    config["devices"] = [
        {
            "id": "kiosk-printer",
            "kind": "printer",
            "transport": {"type": "network", "host": "127.0.0.1", "port": port},
            "profile": profile,
            "poll_interval_s": 2,
        }
    ]
    config["ticket"] = {"qr_url": "https://hall.example.gov.cn/q/{hall}/{ticket_id}"}
    return config


def measure(
    url: str,
    printer: PrinterThread,
    requests: int,
    blocks: int,
    warmup: int,
    headers: dict[str, str],
) -> dict[str, Series]:
    series = {name: Series() for name in SERIES}
    printed = len(printer.printer.tickets)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:

        def kiosk() -> tuple[float, float]:
            nonlocal printed
            started = time.perf_counter()
            r = client.post("/api/v1/tickets", json={"service": "social", "source": "touch"})
            answered = time.perf_counter()
            if r.status_code != 201 or r.json()["result"]["print"]["state"] != "printed":
                raise RuntimeError(f"take failed: {r.status_code} {r.text}")
            printed += 1
            last_byte = printer.wait_for(printed)
            return (last_byte - started) * 1000, (answered - started) * 1000

        def central() -> float:
            started = time.perf_counter()
            r = client.post("/api/v1/tickets", json={"service": "civil", "source": "central"})
            if r.status_code != 201:
                raise RuntimeError(f"take failed: {r.status_code} {r.text}")
            return (time.perf_counter() - started) * 1000

        for _ in range(warmup):
            kiosk()
            central()
        per_block = -(-requests // blocks)
        for b in range(blocks):
            block: dict[str, list[float]] = {name: [] for name in SERIES}
            order = ("kiosk", "central") if b % 2 == 0 else ("central", "kiosk")
            for kind in order:
                for _ in range(per_block):
                    if kind == "kiosk":
                        last, answer = kiosk()
                        block["kiosk_to_last_byte"].append(last)
                        block["kiosk_to_answer"].append(answer)
                    else:
                        block["central_take"].append(central())
            for name, values in block.items():
                series[name].latencies_ms += values
                series[name].block_p50_ms.append(percentile(values, 50))
            print(f"block {b + 1}/{blocks} done", file=sys.stderr)
    return series


def summarise(s: Series) -> dict[str, Any]:
    lat = s.latencies_ms
    return {
        "requests": len(lat),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
        "median_of_block_p50_ms": median(s.block_p50_ms),
        "block_p50_ms": [round(v, 3) for v in s.block_p50_ms],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per series and profile")
    parser.add_argument("--blocks", type=int, default=6, help="interleaved blocks (6)")
    parser.add_argument("--warmup", type=int, default=20, help="per series and profile")
    parser.add_argument("--profiles", default="gb18030,raster", help="printer profiles")
    add_arguments(parser)
    args = parser.parse_args(argv)
    profiles = args.profiles.split(",")
    try:
        env, prefix = agent_env(args.fsync_ms), taskset_prefix(args.one_core)
    except NoShim as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 0

    figures: dict[str, Any] = {}
    rows = []
    for profile in profiles:
        with scratch_dir(f"print-latency-{profile}-") as work, PrinterThread() as printer:
            storage = work / "state"
            config = write_config(
                work / "config.yaml", agent_config(storage, printer.port, profile)
            )
            with AgentProcess(
                config, storage, work / "agent.log", env=env, prefix=prefix
            ) as agent_:
                measured = measure(
                    agent_.url, printer, args.requests, args.blocks, args.warmup, agent_.ops
                )
            job_bytes = printer.printer.bytes_received
            tickets = len(printer.printer.tickets)
        figures[profile] = {name: summarise(s) for name, s in measured.items()}
        figures[profile]["bytes_per_ticket"] = round(job_bytes / tickets)
        for name in SERIES:
            f = figures[profile][name]
            rows.append(
                [profile, name, f["requests"], f["p50_ms"], f["p95_ms"], f["p99_ms"], f["max_ms"]]
            )
    figures["raw_sqlite"] = raw_baseline(args.fsync_ms, args.one_core)
    parameters = {
        **mode(args.fsync_ms, args.one_core),
        "requests_per_series_and_profile": args.requests,
        "blocks": args.blocks,
        "warmup_per_series_and_profile": args.warmup,
        "profiles": profiles,
        "transport": "network (TCP on 127.0.0.1), virtual printer in the bench process",
        "client": f"httpx {httpx.__version__} Client, keep-alive, 1 request at a time",
        "agent": "hall-agent run, fresh storage in bench/.tmp, offline, log level WARNING",
    }
    path = write_results(NAME + suffix(args.fsync_ms, args.one_core), parameters, figures)
    print("take → printed ticket, network printer, ms")
    print_table(["profile", "series", "n", "p50", "p95", "p99", "max"], rows)
    for profile in profiles:
        print(f"{profile}: {figures[profile]['bytes_per_ticket']} bytes per ticket")
    raw = figures["raw_sqlite"]
    print(f"raw SQLite commit: p50 {raw['p50_ms']:.2f} ms, p99 {raw['p99_ms']:.2f} ms")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
