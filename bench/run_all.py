"""Run the benchmarks, one after the other, each in its own process.

    .venv/bin/python bench/run_all.py                 # the quick ones
    .venv/bin/python bench/run_all.py --all           # and the central link's and the soak
                                                      # (+ ~6 and ~15 minutes)
    .venv/bin/python bench/run_all.py store_append    # only the ones named
    .venv/bin/python bench/run_all.py --pi            # a Pi's disk and CPU: see below
    .venv/bin/python bench/run_all.py --targets       # every figure with a Pi target, one run

``--fsync-ms 0,5,20`` runs each latency benchmark once per fsync delay (bench/_fsync.py: an
LD_PRELOAD shim makes every fsync of the agent's process sleep that long first, as an SD
card's would take), ``--one-core`` once more pinned to CPU 0 at the largest delay; each
writes ``bench/results/<name>@fsync<N>ms[@1core].json`` beside the raw-SQLite baseline
under the same delay. ``--pi`` is ``under_load write_amplification`` plus the latency
benchmarks with ``--fsync-ms 0,5,20 --one-core``.

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
    "write_amplification",
    "estimate_error",
    "status_page_latency",
    "start_latency",
)
# The ones that take --fsync-ms and --one-core (bench/_fsync.py).
LATENCY = ("store_append", "take_latency", "print_latency", "screens_latency", "keypad_latency")
# Its own sweep of fsync delays and a one-core run: minutes, so only when named or --pi.
PI = ("under_load",)
# The central link's: each starts its own mosquitto; together about 8 minutes (update_time
# builds a wheelhouse and a real bundle first).
LINK = ("drain", "backlog_rss", "fleet", "update_time")
# A simulated week of a busy hall: about 15 minutes.
SOAK = ("soak_memory",)
BENCHMARKS = QUICK + LINK + PI + SOAK
# --targets: every figure a Pi's targets name (docs/benchmarks.md, "What this means on a
# Pi"), each beside its baseline from the same run; the arguments keep it to the delays
# the targets are set at (10 and 20 ms per fsync).
TARGETS: dict[str, list[str]] = {
    "under_load": ["--delays", "10,20", "--one-core-delays", ""],
    "start_latency": [],
    "soak_memory": [],
    "write_amplification": [],
}


def targets(name: str, figures: dict[str, Any]) -> list[list[Any]]:
    """The rows of the summary: what, measured, target, met."""
    met = {True: "yes", False: "NO", None: "-"}
    if "@" in name:  # a delayed run: its own figure beside the raw commit's
        return delayed(name, figures)
    if name == "under_load":
        return [
            [
                f"{what} ({t['configuration']})",
                f"{t['measured']} ({t.get('baseline', '-')})",
                t["target"],
                t["met"],
            ]
            for what, t in figures["target"].items()
        ]
    if name == "write_amplification":
        w, raw = figures["written"], figures["raw_sqlite"]
        return [
            [
                "bytes written per ticket's life (take..acked)",
                f"{w['bytes_per_life'] / 1024:.1f} KiB ({w['bytes_per_commit'] / 1024:.1f} "
                f"KiB/commit; raw {raw['bytes_per_commit'] / 1024:.1f} KiB/commit)",
                "-",
                "-",
            ]
        ]
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
    if name == "start_latency":
        start, verbs, t = figures["start"], figures["verbs"], figures["target"]
        worst = max(verbs.values(), key=lambda v: v["wall_s_median"])
        return [
            [
                "start -> API answering, example config",
                f"{start['example']['median_s']:.2f} s (agent CPU "
                f"{start['example']['cpu_s_median']:.2f} s)",
                "<= 1.0 s",
                met[t["example_met"]],
            ],
            [
                "start -> API answering, no devices",
                f"{start['no-devices']['median_s']:.2f} s (agent CPU "
                f"{start['no-devices']['cpu_s_median']:.2f} s)",
                "<= 0.6 s",
                met[t["no_devices_met"]],
            ],
            [
                "slowest client verb (wall / RSS)",
                f"{worst['wall_s_median']:.2f} s / "
                f"{max(v['rss_mb_max'] or 0 for v in verbs.values()):.1f} MB "
                f"(python -c pass {figures['baseline']['python -c pass']['wall_s_median']:.2f} s)",
                "<= 0.15 s / <= 30 MB",
                met[t["verbs_met"]],
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
    if name == "update_time":
        slow, base = figures["slow link"], figures["localhost"]
        return [
            [
                f"update of the real bundle ({figures['bundle_mb']} MB) over "
                f"{figures['round_trip_ms']:g} ms RTT, {figures['rate_mb_s']:g} MB/s",
                f"{slow['stages_sum_s']:.1f} s (download {slow['download_s']:.1f} s) vs "
                f"{base['stages_sum_s']:.1f} s on localhost "
                f"({figures['ratio_stages_sum_to_localhost']:.2f}x)",
                "-",
                "-",
            ]
        ]
    if name == "status_page_latency":
        c, a, load = figures["call_to_page"], figures["call_to_answer"], figures["page_load"]
        return [
            [
                "call -> the ticket's status page shows its new place (Chromium)",
                f"p50 {c['p50_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms "
                f"(answer p50 {a['p50_ms']:.1f} ms); page load p50 {load['p50_ms']:.0f} ms",
                "-",
                "-",
            ]
        ]
    if name == "estimate_error":
        a = figures["errors"]["all"]
        return [
            [
                "wait shown at take vs real wait, MAE (old formula -> simulation)",
                f"{a['old_mae_min']:.1f} -> {a['new_mae_min']:.1f} min "
                f"({a['mae_ratio_new_over_old']:.2f}x)",
                "-",
                "-",
            ]
        ]
    return []


def delayed(name: str, figures: dict[str, Any]) -> list[list[Any]]:
    raw = figures.get("raw_sqlite") or {}
    base = f"raw commit p50 {raw['p50_ms']:.1f} ms" if raw else ""
    if name.startswith("take_latency"):
        f = figures["clients_1"]["take"]
        shown = f"take p50 {f['p50_ms']:.1f} / p99 {f['p99_ms']:.1f} ms"
    elif name.startswith("store_append"):
        f = figures["store.commit"]
        shown = f"{f['events_per_s_median']:.0f} commits/s ({f['ratio_to_raw']:.2f}x raw)"
        base = f"raw {figures['raw']['events_per_s_median']:.0f}/s"
    elif name.startswith("print_latency"):
        f = next(iter(v for k, v in figures.items() if k != "raw_sqlite"))
        shown = f"kiosk -> last byte p50 {f['kiosk_to_last_byte']['p50_ms']:.1f} ms"
    elif name.startswith("screens_latency"):
        shown = f"call -> DOM p50 {figures['call_to_dom']['p50_ms']:.1f} ms"
    elif name.startswith("keypad_latency"):
        shown = f"next -> ack p50 {figures['next_to_acknowledged']['p50_ms']:.1f} ms"
    else:
        return []
    return [[name, shown, base, "-"]]


def plan(
    names: list[str], delays: list[str], one_core: bool, targets_only: bool = False
) -> list[tuple[str, list[str]]]:
    """(results name, extra arguments) for every run."""
    runs: list[tuple[str, list[str]]] = []
    for name in names:
        if targets_only and name in TARGETS:
            runs.append((name, TARGETS[name]))
            continue
        if name not in LATENCY or not delays:
            runs.append((name, []))
            continue
        for ms in delays:
            runs.append((f"{name}@fsync{float(ms):g}ms", ["--fsync-ms", ms]))
        if one_core:
            ms = max(delays, key=float)
            runs.append((f"{name}@fsync{float(ms):g}ms@1core", ["--fsync-ms", ms, "--one-core"]))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the hall-agent benchmarks.")
    parser.add_argument(
        "names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: {', '.join(QUICK)})"
    )
    parser.add_argument(
        "--all", action="store_true", help=f"also {', '.join(LINK)} (about 8 minutes more)"
    )
    parser.add_argument(
        "--fsync-ms",
        default="",
        help="comma-separated fsync delays (e.g. 0,5,20): each latency benchmark once per delay",
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="with --fsync-ms: each latency benchmark once more on CPU 0 at the largest delay",
    )
    parser.add_argument(
        "--pi",
        action="store_true",
        help="under_load, write_amplification and the latency benchmarks at 0, 5 and 20 ms "
        "per fsync and on one core (about 15 minutes)",
    )
    parser.add_argument(
        "--targets",
        action="store_true",
        help=f"the figures with a target for a Pi, in one run: {', '.join(TARGETS)} "
        "(about 20 minutes)",
    )
    args = parser.parse_args(argv)
    if args.targets:
        args.names = args.names or list(TARGETS)
    if args.pi:
        args.names = args.names or ["under_load", "write_amplification", *LATENCY]
        args.fsync_ms = args.fsync_ms or "0,5,20"
        args.one_core = True
    names = args.names or list(BENCHMARKS if args.all else QUICK)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    delays = [d.strip() for d in args.fsync_ms.split(",") if d.strip()]
    runs = plan(names, delays, args.one_core, args.targets)
    failed = []
    for result, extra in runs:
        script = result.split("@")[0]
        print(f"\n== {result}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / f"{script}.py"), *extra])
        print(f"({result}: {time.monotonic() - started:.0f} s)", flush=True)
        if code != 0:
            failed.append(result)

    rows = []
    for name, _ in runs:
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
