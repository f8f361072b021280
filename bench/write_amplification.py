"""Bytes written to storage per ticket's whole life, and where they go.

A ticket's life in a hall with raters and a central: ``take`` → ``call`` (next at a
window) → ``finish`` (which opens the window's rating) → ``rate`` → ``published`` (the
broker's PUBACKs, one ``mark_published`` for the life's events) → ``acked`` (central's
ack of everything so far, one ``mark_acked``). Each step is what the hall's writer does:
the queue engine applies the operation, ``Store.commit`` writes it in one transaction.

Two measurements, on fresh stores on the repository's file system:

- **written**: ``write_bytes`` of ``/proc/self/io`` (what this process caused to be sent to
  the storage layer: WAL frames, and the checkpoints that copy them back into the
  database, in the kernel's 4 KiB pages), per step, with the store as it runs (WAL
  auto-checkpoint at 1 000 pages). Baseline: the raw-SQLite loop (one row of an event's
  size per commit, ``bench/raw_commit.py``'s pragmas), as many commits as the lives had.
- **WAL frames**: the same lives with the auto-checkpoint off, the WAL read frame by frame:
  each frame is one B-tree page a commit changed (``page_size + 24`` bytes), and each page
  is named by ``dbstat`` (the table or index it belongs to). This says which tables and
  indexes each step rewrites.

    .venv/bin/python bench/write_amplification.py            # 300 lives, about 10 s
    .venv/bin/python bench/write_amplification.py --lives 1000
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import bench_hall, median, print_table, scratch_dir, write_results

from agent.config import HallAgentConfig
from agent.core import operations as op
from agent.core.engine import QueueEngine
from agent.runtime.store import Store
from agent.runtime.store.core import _dumps

NAME = "write_amplification"
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
STEPS = ("take", "call", "finish", "rate", "published", "acked")
SERVICES = ("social", "civil", "housing", "general")
WINDOW_OF = {"social": "w1", "civil": "w2", "housing": "w2", "general": "w3"}


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text(encoding="ascii").splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def config(storage: Path) -> HallAgentConfig:
    data = bench_hall(storage, width=4)
    data["devices"] = [
        {"id": f"rater-{w}", "kind": "rater", "transport": {"type": "web"}}
        for w in ("w1", "w2", "w3")
    ]
    for window in data["windows"]:
        window["devices"] = [f"rater-{window['id']}"]
    data["rating"] = {"start_on": "finish"}
    return HallAgentConfig.model_validate(data)


class Life:
    """The hall's writer, without the event loop: engine.apply, then Store.commit."""

    def __init__(self, storage: Path) -> None:
        self.config = config(storage)
        self.store = Store.open(storage)
        self.engine = QueueEngine.fresh(self.config, START)
        self.now = START
        self.sizes: dict[str, list[int]] = collections.defaultdict(list)
        for window in self.config.windows:
            self.apply(op.SignIn(window=window.id, staff=f"s-{window.number}", name="王芳"))

    def close(self) -> None:
        self.store.close()

    def apply(self, operation: op.Operation, step: str | None = None) -> None:
        self.now += dt.timedelta(seconds=2)  # 6 000 lives fit in the day
        outcome = self.engine.apply(operation, self.now)
        if step is not None:
            # What the commit writes, as JSON (the sizes of the rows' data columns).
            if outcome.hall_changed:
                self.sizes[f"{step}: hall row"].append(len(_dumps(self.engine.hall.to_json())))
            for t in outcome.tickets.values():
                self.sizes[f"{step}: ticket row"].append(len(_dumps(t.to_json())))
            for w in outcome.windows.values():
                self.sizes[f"{step}: window row"].append(len(_dumps(w.to_json())))
            for e in outcome.events:
                self.sizes[f"{step}: event {e.type}"].append(len(_dumps(e.data)))
        self.store.commit(outcome, self.engine.hall)

    def step(self, n: int, step: str) -> None:
        service = SERVICES[n % len(SERVICES)]
        window = WINDOW_OF[service]
        if step == "take":
            self.first_seq = self.store.last_seq + 1
            self.apply(op.Take(service=service), step)
        elif step == "call":
            self.apply(op.CallNext(window=window), step)
        elif step == "finish":
            self.apply(op.Finish(window=window), step)
        elif step == "rate":
            self.apply(op.Rate(window=window, level=5), step)
        elif step == "published":
            self.store.mark_published(list(range(self.first_seq, self.store.last_seq + 1)))
        elif step == "acked":
            self.store.mark_acked(self.store.epoch, self.store.last_seq)


def written(lives: int) -> dict[str, Any]:
    """/proc/self/io write_bytes per step, the store as it runs."""
    per_step = dict.fromkeys(STEPS, 0)
    commits = 0
    with scratch_dir("write-amp-") as folder:
        life = Life(folder / "state")
        try:
            for n in range(lives):
                for step in STEPS:
                    before = _write_bytes()
                    life.step(n, step)
                    per_step[step] += _write_bytes() - before
                    commits += 1
            page_size = life.store._conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            life.close()
    total = sum(per_step.values())
    return {
        "page_size": page_size,
        "bytes_per_life": total / lives,
        "bytes_per_commit": total / commits,
        "bytes_per_step": {k: v / lives for k, v in per_step.items()},
        "json_bytes_median": {k: median(v) for k, v in sorted(life.sizes.items())},
    }


def raw(commits: int, row_bytes: int) -> dict[str, Any]:
    with scratch_dir("write-amp-raw-") as folder:
        conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        row = "x" * row_bytes
        before = _write_bytes()
        for seq in range(1, commits + 1):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events (seq, data) VALUES (?, ?)", (seq, row))
            conn.execute("COMMIT")
        total = _write_bytes() - before
        conn.close()
    return {"row_bytes": row_bytes, "commits": commits, "bytes_per_commit": total / commits}


def wal_frames(lives: int) -> dict[str, Any]:
    """The WAL frames each step appends, by the B-tree each page belongs to."""
    frames: dict[str, collections.Counter[int]] = {s: collections.Counter() for s in STEPS}
    with scratch_dir("write-amp-wal-") as folder:
        life = Life(folder / "state")
        conn = life.store._conn
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        wal = life.store.path.with_name(life.store.path.name + "-wal")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        frame = page_size + 24
        offset = max(32, wal.stat().st_size)
        try:
            for n in range(lives):
                for step in STEPS:
                    life.step(n, step)
                    with wal.open("rb") as fh:
                        fh.seek(offset)
                        data = fh.read()
                    for at in range(0, len(data) - frame + 1, frame):
                        (page,) = struct.unpack(">I", data[at : at + 4])
                        frames[step][page] += 1
                    offset += len(data) - len(data) % frame
            owner = {
                int(p): str(name)
                for name, p in conn.execute("SELECT name, pageno FROM dbstat").fetchall()
            }
        finally:
            life.close()
    by_step: dict[str, Any] = {}
    for step, counted in frames.items():
        named: collections.Counter[str] = collections.Counter()
        for page, count in counted.items():
            named[owner.get(page, "freelist/other")] += count
        by_step[step] = {
            "frames_per_life": sum(counted.values()) / lives,
            "wal_bytes_per_life": sum(counted.values()) * frame / lives,
            "frames_by_btree": {k: round(v / lives, 2) for k, v in named.most_common()},
        }
    total = sum(s["frames_per_life"] for s in by_step.values())
    return {
        "page_size": page_size,
        "frame_bytes": frame,
        "frames_per_life": total,
        "wal_bytes_per_life": total * frame,
        "by_step": by_step,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lives", type=int, default=300, help="tickets, each its whole life")
    parser.add_argument("--rounds", type=int, default=3, help="of the written measurement")
    args = parser.parse_args(argv)

    runs = [written(args.lives) for _ in range(args.rounds)]
    best = sorted(runs, key=lambda r: r["bytes_per_life"])[len(runs) // 2]
    event_bytes = (
        round(
            median(
                best["json_bytes_median"][k] for k in best["json_bytes_median"] if ": event " in k
            )
        )
        + 160
    )
    baseline = raw(args.lives * len(STEPS), event_bytes)
    frames = wal_frames(args.lives)
    figures = {
        "written": {**best, "bytes_per_life_runs": [r["bytes_per_life"] for r in runs]},
        "raw_sqlite": baseline,
        "wal": frames,
        "commits_per_life": len(STEPS),
    }
    path = write_results(
        NAME,
        {
            "lives": args.lives,
            "rounds": args.rounds,
            "steps": list(STEPS),
            "sqlite": sqlite3.sqlite_version,
        },
        figures,
    )
    kib = 1024
    print(
        f"written per ticket's life ({args.lives} lives, median of {args.rounds} runs): "
        f"{best['bytes_per_life'] / kib:.1f} KiB, {best['bytes_per_commit'] / kib:.1f} KiB "
        f"per commit; raw SQLite {baseline['bytes_per_commit'] / kib:.1f} KiB per commit "
        f"({event_bytes}-byte row); page_size {best['page_size']}"
    )
    print_table(
        ["step", "written KiB", "WAL frames", "WAL KiB", "frames by B-tree"],
        [
            [
                step,
                best["bytes_per_step"][step] / kib,
                frames["by_step"][step]["frames_per_life"],
                frames["by_step"][step]["wal_bytes_per_life"] / kib,
                ", ".join(
                    f"{k} {v:g}" for k, v in frames["by_step"][step]["frames_by_btree"].items()
                ),
            ]
            for step in STEPS
        ],
    )
    print("JSON written (median bytes):")
    print_table(["what", "bytes"], [[k, v] for k, v in best["json_bytes_median"].items()])
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
