"""Run the benchmarks, one after the other, each in its own process.

    .venv/bin/python bench/run_all.py                 # the quick ones
    .venv/bin/python bench/run_all.py --all           # and the central link's and the soak
                                                      # (+ ~6 and ~15 minutes)
    .venv/bin/python bench/run_all.py store_append    # only the ones named

Each benchmark prints its table and writes bench/results/<name>.json; at the end this
prints the figures that have a target, read back from those files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, print_table

BENCH = Path(__file__).resolve().parent
QUICK = (
    "store_append",
    "take_latency",
    "idle",
    "print_latency",
    "screens_latency",
    "keypad_latency",
    "identity_documents",
)
# The central link's: each starts its own mosquitto; together about 6 minutes.
LINK = ("drain", "backlog_rss", "fleet")
# A simulated week of a busy hall: about 15 minutes.
SOAK = ("soak_memory",)
BENCHMARKS = QUICK + LINK + SOAK


def targets(name: str, figures: dict[str, Any]) -> list[list[Any]]:
    """The rows of the summary: what, measured, target, met."""
    met = {True: "yes", False: "NO", None: "-"}
    if name == "store_append":
        f = figures["store.commit"]
        return [
            [
                "store append vs raw SQLite (equal durability)",
                f"{f['ratio_to_raw']:.2f}x ({f['events_per_s_median']:.0f} vs "
                f"{figures['raw']['events_per_s_median']:.0f} events/s)",
                ">= 0.5x",
                met[figures["target"]["met"]],
            ]
        ]
    if name == "take_latency":
        f = figures.get("clients_1", {}).get("take")
        if f is None:
            return []
        return [
            [
                "take p99 at 1 client",
                f"{f['p99_ms']:.2f} ms (p50 {f['p50_ms']:.2f})",
                "<= 20 ms",
                met[figures["target"]["met"]],
            ]
        ]
    if name == "print_latency":
        return [
            [
                f"take -> last ticket byte, network printer, {profile}",
                f"p50 {f['kiosk_to_last_byte']['p50_ms']:.1f} ms, "
                f"p99 {f['kiosk_to_last_byte']['p99_ms']:.1f} ms",
                "-",
                "-",
            ]
            for profile, f in figures.items()
        ]
    if name == "screens_latency":
        return [
            [
                f"call -> {what}",
                f"p50 {figures[key]['p50_ms']:.1f} ms, p99 {figures[key]['p99_ms']:.1f} ms",
                "-",
                "-",
            ]
            for key, what in (
                ("call_to_dom", "big-screen DOM updated (Chromium)"),
                ("call_to_led_frame", "LED frame written"),
                ("call_to_answer", "its API answer (baseline)"),
            )
        ]
    if name == "idle":
        a = figures["agent"]
        return [
            [
                "idle RSS",
                f"{a['rss_mb_max']:.1f} MB",
                "<= 80 MB",
                met[figures["target"]["rss_met"]],
            ],
            [
                "idle CPU (one core)",
                f"{a['cpu_percent_of_one_core']:.2f} %",
                "<= 1 %",
                met[figures["target"]["cpu_met"]],
            ],
        ]
    if name == "drain":
        f = figures["link@32"]
        return [
            [
                "outbox drain vs raw aiomqtt loop (window 32)",
                f"{f['ratio_to_raw_same_window']:.2f}x ({f['events_per_s_median']:.0f} vs "
                f"{figures['raw@32']['events_per_s_median']:.0f} events/s)",
                ">= 0.5x",
                met[figures["target"]["met"]],
            ]
        ]
    if name == "backlog_rss":
        t = figures["target"]
        return [
            [
                "RSS a 100k backlog adds (offline)",
                f"{t['offline_adds_mb']:.1f} MB (drain peak {t['drain_peak_adds_mb']:+.1f} MB)",
                "< 20 MB",
                met[t["met"]],
            ]
        ]
    if name == "soak_memory":
        t = figures["target"]
        return [
            [
                "RSS idle, every device kind (baseline: import agent.daemon)",
                f"{figures['idle_rss_mb']:.1f} MB ({figures['baseline_rss_mb']:.1f} MB)",
                "<= 70 MB",
                met[t["idle_met"]],
            ],
            [
                "RSS growth over a simulated week (after day 1; from idle)",
                f"{figures['growth_after_day1_mb']:+.1f} MB "
                f"({figures['growth_from_idle_mb']:+.1f} MB)",
                "<= 5 MB",
                met[t["growth_met"]],
            ],
        ]
    if name == "fleet":
        r, d = figures["reconnect"], figures["drain"]
        return [
            [
                f"fleet of {figures['halls']}: reconnect spread after a broker restart",
                f"{r['spread_s']:.1f} s ({r['first_s']:.1f}-{r['last_s']:.1f} s), all drained "
                f"at {d['all_drained_s']:.1f} s, missing {d['missing_total']}",
                ">= 30 s",
                met[figures["target"]["met"] and figures["target"]["nothing_lost"]],
            ]
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the hall-agent benchmarks.")
    parser.add_argument(
        "names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: {', '.join(QUICK)})"
    )
    parser.add_argument(
        "--all", action="store_true", help=f"also {', '.join(LINK)} (about 6 minutes more)"
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS if args.all else QUICK)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    failed = []
    for name in names:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / f"{name}.py")])
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
        if code != 0:
            failed.append(name)

    rows = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if name in failed or not path.exists():
            continue
        rows += targets(name, json.loads(path.read_text(encoding="utf-8"))["figures"])
    print("\n== summary")
    print_table(["figure", "measured", "target", "met"], rows)
    if failed:
        print(f"failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
