"""Durable event append rate of the Store against a raw SQLite insert loop.

Three ways of writing one event per transaction, all in WAL mode with
``synchronous=FULL`` on the same file system (bench/.tmp, beside the repository):

- ``raw``: a plain ``sqlite3`` loop, ``BEGIN IMMEDIATE; INSERT; COMMIT``, one row the size
  of a stored event into a table with only an integer key. The floor: what one durable
  commit costs on this disk.
- ``store.commit``: ``Store.commit(outcome, hall)`` with the Outcome of a real ``take``
  (ticket upsert + hall row + the ``issued`` event), as the hall's writer does it.
- ``store.append``: ``Store.append([event])``, one event per transaction, no queue state.

The Outcomes are made by the queue engine before the clock starts, so only the store is
timed. Each round runs every mode once on a fresh database, in an order that rotates
from round to round; figures are medians over the rounds. Run with ``--profile`` to see
where ``Store.commit`` spends its time (done anyway when it is below half of raw).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import bench_hall, median, percentile, print_table, scratch_dir, write_results
from _fsync import add_arguments, reexec, suffix
from _fsync import mode as fsync_mode

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.events import Event
from agent.core.model import HallCounters
from agent.runtime.store import Store
from agent.runtime.store.core import _dumps

NAME = "store_append"
TARGET_RATIO = 0.5
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
MODES = ("raw", "store.commit", "store.append")

Take = tuple[Outcome, HallCounters]


def make_takes(count: int, storage: Path) -> tuple[list[Take], int]:
    """``count`` real take Outcomes, each with the hall counters as they were after it."""
    config = HallAgentConfig.model_validate(bench_hall(storage, width=4))
    engine = QueueEngine.fresh(config, START)
    services = [s.id for s in config.services]
    takes: list[Take] = []
    for i in range(count):
        now = START + dt.timedelta(seconds=i)
        outcome = engine.take(services[i % len(services)], now)
        assert len(outcome.events) == 1
        hall = engine.hall
        snapshot = HallCounters(
            day=hall.day,
            next_rank=hall.next_rank,
            counters=dict(hall.counters),
            durations={k: list(v) for k, v in hall.durations.items()},
        )
        takes.append((outcome, snapshot))
    # The row size the store records for an event: its data plus the envelope around it.
    sizes = [len(_dumps(o.events[0].data)) + 160 for o, _ in takes]
    return takes, round(sum(sizes) / len(sizes))


# -- measuring -----------------------------------------------------------------------------


def _write_bytes() -> int | None:
    """Bytes this process has caused to be written to storage (Linux /proc/self/io)."""
    try:
        for line in Path("/proc/self/io").read_text(encoding="ascii").splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(
    prepare: Callable[[Path], Any], work: Callable[[Any], list[float]], count: int
) -> dict[str, Any]:
    """Time ``work`` alone: opening and closing the database are outside the clock."""
    with scratch_dir("store-append-") as directory:
        handle = prepare(directory)
        written = _write_bytes()
        cpu = time.process_time()
        wall = time.perf_counter()
        times = work(handle)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        after = _write_bytes()
        handle.close()
    return {
        "events_per_s": count / wall,
        "us_per_tx": wall / count * 1e6,
        "cpu_us_per_tx": cpu / count * 1e6,
        "tx_p50_us": percentile(times, 50) * 1e6,
        "tx_p99_us": percentile(times, 99) * 1e6,
        "tx_max_us": max(times) * 1e6,
        "bytes_written_per_tx": (
            None if written is None or after is None else (after - written) / count
        ),
    }


def one_run(mode: str, takes: list[Take], row_size: int) -> dict[str, Any]:
    count = len(takes)
    if mode == "raw":
        return measure(_open_raw, lambda c: _raw_loop(c, count, row_size), count)
    if mode == "store.commit":
        return measure(Store.open, lambda s: _timed_commits(s, takes), count)
    events = [o.events[0] for o, _ in takes]
    return measure(Store.open, lambda s: _timed_appends(s, events), count)


def _open_raw(directory: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
    return conn


# Each loop returns every transaction's duration in seconds (the tail shows checkpoints).


def _timed_commits(store: Store, takes: list[Take]) -> list[float]:
    commit = store.commit
    clock = time.perf_counter
    times = []
    for outcome, hall in takes:
        started = clock()
        commit(outcome, hall)
        times.append(clock() - started)
    return times


def _timed_appends(store: Store, events: list[Event]) -> list[float]:
    append = store.append
    clock = time.perf_counter
    times = []
    for event in events:
        started = clock()
        append([event])
        times.append(clock() - started)
    return times


def _raw_loop(conn: sqlite3.Connection, count: int, row_size: int) -> list[float]:
    row = "x" * row_size
    execute = conn.execute
    clock = time.perf_counter
    times = []
    for seq in range(1, count + 1):
        started = clock()
        execute("BEGIN IMMEDIATE")
        execute("INSERT INTO events (seq, data) VALUES (?, ?)", (seq, row))
        execute("COMMIT")
        times.append(clock() - started)
    return times


def profile_commit(takes: list[Take], top: int = 25) -> str:
    """cProfile of Store.commit over the same Outcomes, sorted by own time."""
    with scratch_dir("store-profile-") as directory:
        store = Store.open(directory)
        profiler = cProfile.Profile()
        profiler.enable()
        _timed_commits(store, takes)
        profiler.disable()
        store.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--transactions", type=int, default=None, help="per run (2000; 200 with --fsync-ms)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="runs of each mode (9; 5 with --fsync-ms)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile Store.commit")
    add_arguments(parser)
    args = parser.parse_args(argv)
    # Its raw mode is the baseline: under the shim it pays the same delay per commit.
    reexec(args.fsync_ms, args.one_core)
    delayed = bool(args.fsync_ms)
    args.transactions = args.transactions or (200 if delayed else 2000)
    args.rounds = args.rounds or (5 if delayed else 9)

    with scratch_dir("store-config-") as storage:
        takes, row_size = make_takes(args.transactions, storage)

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    # A warm-up run of each mode: page cache, file system metadata, imports.
    for mode in MODES:
        one_run(mode, takes[: min(200, len(takes) // 4)], row_size)
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            runs[mode].append(one_run(mode, takes, row_size))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{m} {runs[m][-1]['events_per_s']:.0f}/s" for m in MODES),
            file=sys.stderr,
        )

    figures: dict[str, Any] = {}
    for mode in MODES:
        rates = [run["events_per_s"] for run in runs[mode]]
        figures[mode] = {
            "events_per_s_median": median(rates),
            "events_per_s_min": min(rates),
            "events_per_s_max": max(rates),
            "us_per_tx_median": median([run["us_per_tx"] for run in runs[mode]]),
            "cpu_us_per_tx_median": median([run["cpu_us_per_tx"] for run in runs[mode]]),
            "tx_p50_us_median": median([run["tx_p50_us"] for run in runs[mode]]),
            "tx_p99_us_median": median([run["tx_p99_us"] for run in runs[mode]]),
            "bytes_written_per_tx_median": _median_or_none(
                [run["bytes_written_per_tx"] for run in runs[mode]]
            ),
            "runs": runs[mode],
        }
    raw = figures["raw"]["events_per_s_median"]
    for mode in MODES[1:]:
        paired = [
            s["events_per_s"] / b["events_per_s"]
            for s, b in zip(runs[mode], runs["raw"], strict=True)
        ]
        figures[mode]["ratio_to_raw"] = figures[mode]["events_per_s_median"] / raw
        figures[mode]["ratio_to_raw_paired_median"] = median(paired)
    ratio = figures["store.commit"]["ratio_to_raw"]
    figures["target"] = {"store_commit_ratio_min": TARGET_RATIO, "met": ratio >= TARGET_RATIO}

    profile = None
    if args.profile or ratio < TARGET_RATIO:
        profile = profile_commit(takes)

    parameters = {
        **fsync_mode(args.fsync_ms, args.one_core),
        "transactions_per_run": args.transactions,
        "rounds": args.rounds,
        "events_per_transaction": 1,
        "raw_row_bytes": row_size,
        "journal_mode": "WAL",
        "synchronous": "FULL",
        "sqlite": sqlite3.sqlite_version,
        "scratch": "bench/.tmp (same file system as the repository)",
    }
    path = write_results(
        NAME + suffix(args.fsync_ms, args.one_core), parameters, figures, profile=profile
    )

    print(
        f"durable append, 1 event per transaction, {args.transactions} tx x {args.rounds} "
        "rounds, medians"
    )
    rows = []
    for mode in MODES:
        f = figures[mode]
        rows.append(
            [
                mode,
                f["events_per_s_median"],
                f"{f['events_per_s_min']:.0f}-{f['events_per_s_max']:.0f}",
                f["us_per_tx_median"],
                f["cpu_us_per_tx_median"],
                f["tx_p99_us_median"],
                _kib(f["bytes_written_per_tx_median"]),
                f"{f.get('ratio_to_raw', 1.0):.2f}x",
            ]
        )
    print_table(
        ["mode", "events/s", "range", "us/tx", "cpu us/tx", "p99 us", "KiB written/tx", "vs raw"],
        rows,
    )
    met = "met" if figures["target"]["met"] else "NOT met"
    print(f"target store.commit >= {TARGET_RATIO}x raw: {ratio:.2f}x ({met})")
    if profile:
        print(profile)
    print(f"results: {path}")
    return 0


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def _kib(value: float | None) -> float | str:
    return "-" if value is None else value / 1024


if __name__ == "__main__":
    sys.exit(main())
