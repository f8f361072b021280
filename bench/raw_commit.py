"""The raw-SQLite baseline of the latency benchmarks: one ``INSERT`` + ``COMMIT`` per
operation, with the store's pragmas (WAL, ``synchronous=FULL``, ``foreign_keys``,
``busy_timeout``), on the repository's file system.

This is the floor of anything the agent answers only once it is durable (a take, a call,
a press): one fsync and almost no CPU. The latency benchmarks run it under the same
fsync delay and CPU pinning as the agent (``bench/_fsync.py``):

    .venv/bin/python bench/raw_commit.py --ops 300
    HALL_BENCH_FSYNC_MS=20 LD_PRELOAD=bench/.tmp/shim/fsync_delay-….so \\
        .venv/bin/python bench/raw_commit.py
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

from _common import percentile, print_table, scratch_dir

# The size of a stored take's event row (store_append.py measures it).
ROW_BYTES = 330


def run(ops: int, row_bytes: int) -> dict[str, float]:
    with scratch_dir("raw-commit-") as folder:
        conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=5000",
        ):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        row = "x" * row_bytes
        times = []
        started = time.perf_counter()
        for seq in range(1, ops + 1):
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events (seq, data) VALUES (?, ?)", (seq, row))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - started
        conn.close()
    return {
        "ops": ops,
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "p99_ms": percentile(times, 99),
        "max_ms": max(times),
        "ops_per_s": ops / elapsed,
        "fsync_delay_ms": float(os.environ.get("HALL_BENCH_FSYNC_MS") or 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--row-bytes", type=int, default=ROW_BYTES)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(args.ops, args.row_bytes)
    if args.json:
        print(json.dumps(figures))
    else:
        print_table(["figure", "value"], [[k, v] for k, v in figures.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
