"""Central's ingest: events/s of the scale-out ingest on PostgreSQL with 1, 2 and 4 workers
against the SQLite ingest (the baseline), in the same run, for 100 and 2,000 halls.

Method (as the issue measured the SQLite ingest): the consumers' persistent sessions are
created (each ``hallctl ingest`` process subscribes, then stops), ``--events`` events are
published round-robin over the halls while the consumers are down, so they queue in the
broker, then the consumers start and the clock runs from when all are subscribed until
every event is in the database (polled every 50 ms). A counting subscriber on
``hall/v1/+/ack`` gives the acks per event.
PostgreSQL is a throw-away cluster with ``fsync`` on (durable, like SQLite's
``synchronous=FULL``); mosquitto is the tests' (tests/broker.py).

    .venv/bin/python bench/ingest_pg.py                  # 10,000 events, 100 and 2,000 halls
    .venv/bin/python bench/ingest_pg.py --events 4000 --halls 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from _common import ROOT, print_table, scratch_dir, write_results

sys.path.insert(0, str(ROOT / "tests"))
from broker import Broker  # type: ignore[import-not-found]
from cityhalls import envelope  # type: ignore[import-not-found]
from postgres import Postgres  # type: ignore[import-not-found]

NAME = "ingest_pg"


def command(broker: Broker, db: str, client_id: str, group: str) -> list[str]:
    # A group of its own per run: the previous run's workers keep persistent sessions in
    # their group, and the broker would still give them their turn.
    return [
        sys.executable, "-m", "hallctl.cli", "--broker", broker.url, "ingest", "--db", db,
        "--client-id", client_id, "--gap-timeout", "5", "--group", group,
    ]  # fmt: skip


async def start(argv: list[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("a") as out:
        return await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )


async def stop(procs: list[asyncio.subprocess.Process], grace: float = 20) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            print(f"process {proc.pid} ignored SIGTERM for {grace:.0f} s; killed", file=sys.stderr)
            proc.kill()
            await proc.wait()


async def wait_for(condition: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def publish(port: int, halls: int, events: int) -> None:
    """Round-robin over the halls (seq by seq), from 8 connections (a hall's seqs may
    be queued out of order across them, as a fleet's would be)."""
    payloads = [
        (f"hall/v1/hd-{h:04d}/event/ticket.issued", envelope(f"hd-{h:04d}", seq))
        for seq in range(1, events // halls + 1)
        for h in range(halls)
    ]
    clients = [
        aiomqtt.Client(
            "127.0.0.1", port, identifier=f"pub-{i}", protocol=aiomqtt.ProtocolVersion.V5
        )
        for i in range(8)
    ]

    async def send(client: aiomqtt.Client, part: list[tuple[str, bytes]]) -> None:
        async with client:
            for topic, body in part:
                await client.publish(topic, body, qos=1)

    await asyncio.gather(*(send(c, payloads[i::8]) for i, c in enumerate(clients)))


async def one_run(
    broker: Broker, pg: Postgres, work: Path, kind: str, workers: int, halls: int, events: int
) -> dict[str, Any]:
    if kind == "sqlite":
        db_file = work / f"sqlite-{halls}-{time.monotonic_ns()}.db"
        db = str(db_file)

        def stored() -> int:
            if not db_file.exists():
                return 0
            with sqlite3.connect(db_file) as conn:
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    else:
        db = pg.create_database()

        def stored() -> int:
            with psycopg.connect(db) as conn:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
                return int(row[0]) if row else 0

    tag = f"{kind}-{workers}-{halls}-{time.monotonic_ns()}"
    group = f"g{time.monotonic_ns()}"
    argvs = [command(broker, db, f"{tag}-{i}", group) for i in range(workers)]
    log = work / f"{tag}.log"
    # 1. the sessions (and, for PostgreSQL, the schema)
    procs = [await start(argv, log) for argv in argvs]
    await wait_for(lambda: log.read_text().count("subscribed to") >= workers, 60, "subscribe")
    await stop(procs)
    # 2. the backlog, queued in the broker, and the ack counter
    total = (events // halls) * halls
    acks = 0
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=f"acks-{tag}", protocol=aiomqtt.ProtocolVersion.V5
    ) as counter:
        await counter.subscribe("hall/v1/+/ack", qos=0)

        async def count() -> None:
            nonlocal acks
            async for _ in counter.messages:
                acks += 1

        counting = asyncio.create_task(count())
        await publish(broker.port, halls, events)
        # 3. the consumers, timed until everything is stored
        # Timed from when every consumer is subscribed again: the processes' start-up
        # (a second or two each on a loaded machine) is not the ingest's.
        procs = [await start(argv, log) for argv in argvs]
        await wait_for(
            lambda: log.read_text().count("subscribed to") >= 2 * workers, 120, "subscribe"
        )
        started, first = time.monotonic(), stored()
        await wait_for(lambda: stored() >= total, 600, f"{total} events stored")
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.5)  # the last coalesced acks
        counting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counting
    await stop(procs)
    return {
        "kind": kind,
        "workers": workers,
        "halls": halls,
        "events": total,
        "timed_events": total - first,
        "seconds": round(elapsed, 2),
        "events_per_s": round((total - first) / elapsed),
        "acks_per_event": round(acks / total, 3),
    }


async def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    results = []
    broker = Broker(work / "mosquitto", persistence=False)
    broker.start()
    try:
        with Postgres(durable=True) as pg:
            for halls in args.halls:
                for kind, workers in [("sqlite", 1), *(("postgresql", w) for w in args.workers)]:
                    result = await one_run(broker, pg, work, kind, workers, halls, args.events)
                    print(result, flush=True)
                    results.append(result)
    finally:
        broker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--halls", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    with scratch_dir("ingest-pg-") as work:
        results = asyncio.run(measure(args, work))
    for halls in args.halls:
        base = next(r for r in results if r["halls"] == halls and r["kind"] == "sqlite")
        for r in results:
            if r["halls"] == halls:
                r["x_sqlite"] = round(r["events_per_s"] / base["events_per_s"], 2)
    print_table(
        ["store", "workers", "halls", "events", "s", "events/s", "× SQLite", "acks/event"],
        [
            [r["kind"], r["workers"], r["halls"], r["events"], r["seconds"], r["events_per_s"],
             r["x_sqlite"], r["acks_per_event"]]
            for r in results
        ],
    )  # fmt: skip
    path = write_results(NAME, vars(args), {"runs": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
