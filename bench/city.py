"""A city in a box: N simulated halls against the scale-out ingest on PostgreSQL with 1, 2
and 4 workers (1 worker is the baseline), through a live stretch and a citywide outage.

Each run (one per worker count), on a fresh database:

1. ``--workers`` ``hallctl ingest --db postgresql://…`` processes on one MQTT 5 shared
   subscription; the halls (tests/cityhalls.py ``City``, split over ``--sims`` processes:
   bench/_city_sim.py) connect as lightweight MQTT 5 clients with persistent sessions.
2. **Live**: each hall makes ``--live-events`` events at random moments over
   ``--live-seconds``; the stretch ends when every hall is acknowledged to its last seq.
3. **Outage**: mosquitto is stopped; every hall's outbox takes ``--hour-events`` more
   events (the hour, scaled: a busy hall makes ~300 an hour); mosquitto starts again
   (same port, its persistence kept) and the clock starts. Each hall reconnects after a
   random wait of up to ``--spread`` seconds and drains its outbox at most
   ``--drain-rate`` events a second (the link's ``reconnect_spread_s``/``drain_rate``).
   The clock stops when every hall is acknowledged to its last seq: the catch-up time
   (it includes the ingest's ``--ack-age``, 30 s, for the last events of each hall; the
   time until every event was stored is reported too).

Throughout, each hall drops ``--gap-rate`` of its events the first time (a real gap the
ingest must ask for; replayed on request like the real link) and publishes
``--dup-rate`` twice. Reported per run: the catch-up's events/s (stored, between 10 % and
90 % of the backlog; the ingest is saturated then), acks per event (live, catch-up),
replay requests per real gap (and any duplicate or spurious ones), the catch-up time and
what it would be for a real hour at the measured rate; every event is checked to be
stored once. PostgreSQL is a throw-away cluster with ``fsync`` on; mosquitto is the
tests' (tests/broker.py), with ``max_queued_messages`` unlimited.

mosquitto 2.0 does not restore shared subscriptions from its persistence, so what halls
publish after its restart and before the workers subscribe again is dropped by the broker
(the halls have their PUBACK) and only the halls' ``metrics`` reveal it. By default the
halls are let back once the workers are subscribed again; ``--halls-first`` lets them back
at once, with ``metrics`` every ``--metrics-every`` seconds (the link's 60 by default), and
counts the replays that recover what the broker dropped.

    .venv/bin/python bench/city.py                         # 2,000 halls, 1/2/4 workers
    .venv/bin/python bench/city.py --halls 200 --workers 1 2 --hour-events 20
    .venv/bin/python bench/city.py --hour-events 300 --spread 45   # a real hour
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from _common import ROOT, print_table, scratch_dir, write_results
from ingest_pg import start as start_worker  # one way to run and stop the workers
from ingest_pg import stop, wait_for

sys.path.insert(0, str(ROOT / "tests"))
from broker import Broker  # type: ignore[import-not-found]
from postgres import Postgres  # type: ignore[import-not-found]

NAME = "city"
REAL_HOUR_EVENTS = 300  # a busy hall: 3,000 events a day
BENCH = Path(__file__).resolve().parent


# -- processes -----------------------------------------------------------------------------


class Sim:
    """One bench/_city_sim.py process: a JSON command a line in, a JSON answer a line out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, args: argparse.Namespace, port: int, first: int, count: int, log: Path
    ) -> Sim:
        with log.open("a") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(BENCH / "_city_sim.py"), "--port", str(port),
                "--first", str(first), "--count", str(count), "--seed", str(args.seed),
                "--gap-rate", str(args.gap_rate), "--dup-rate", str(args.dup_rate),
                "--drain-rate", str(args.drain_rate),
                "--metrics-every", str(args.metrics_every if args.halls_first else 0),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, limit=1 << 26,
            )  # fmt: skip
        return cls(proc)

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a hall simulator exited during {command['do']}")
        answer: dict[str, Any] = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"a hall simulator failed {command['do']}: {answer['error']}")
        return answer


async def ask_all(sims: list[Sim], **command: Any) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(s.ask(**command) for s in sims)))


def total(answers: list[dict[str, Any]], key: str) -> int:
    return sum(int(a[key]) for a in answers)


def worker_command(
    broker: Broker, db: str, client_id: str, group: str, gap_timeout: float
) -> list[str]:
    return [
        sys.executable, "-m", "hallctl.cli", "--broker", broker.url, "ingest", "--db", db,
        "--client-id", client_id, "--group", group, "--gap-timeout", str(gap_timeout),
    ]  # fmt: skip


# -- CPU time, to say what bounds the rate -------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> float:
    seconds = 0.0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            seconds += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return seconds


def postgres_pids(pg: Postgres) -> list[int]:
    """The postmaster and its children (the workers' backends among them)."""
    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == master:
                pids.append(int(entry.name))
    return pids


# -- one run -------------------------------------------------------------------------------


def stored_count(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def rate_between(samples: list[tuple[float, int]], base: int, backlog: int) -> float | None:
    """Events/s while the count went from 10 % to 90 % of the backlog above ``base``."""
    low = next((t for t, n in samples if n >= base + 0.1 * backlog), None)
    high = next((t for t, n in samples if n >= base + 0.9 * backlog), None)
    if low is None or high is None or high <= low:
        return None
    return 0.8 * backlog / (high - low)


def replay_figures(halls: list[dict[str, Any]]) -> dict[str, int]:
    """Each real gap is one dropped seq (never two in a row): how many requests covered
    it; a request that covers no dropped seq is spurious (or, with --halls-first, asks
    for what the broker dropped at its restart)."""
    gaps = asked_once = unasked = duplicates = other = 0
    for hall in halls:
        dropped = set(hall["dropped"])
        gaps += len(dropped)
        for seq in dropped:
            covering = sum(1 for a, b in hall["replays"] if a <= seq <= b)
            asked_once += covering == 1
            unasked += covering == 0
            duplicates += max(0, covering - 1)
        other += sum(1 for a, b in hall["replays"] if not any(a <= s <= b for s in dropped))
    requests = sum(len(h["replays"]) for h in halls)
    return {
        "real_gaps": gaps,
        "replay_requests": requests,
        "gaps_asked_once": asked_once,
        "gaps_never_asked": unasked,
        "duplicate_requests": duplicates,
        "other_requests": other,
    }


async def one_run(
    args: argparse.Namespace, broker: Broker, pg: Postgres, work: Path, workers: int
) -> dict[str, Any]:
    db = pg.create_database()
    tag = f"w{workers}-{time.monotonic_ns()}"
    group = f"city{time.monotonic_ns()}"
    log = work / f"{tag}-workers.log"
    argvs = [
        worker_command(broker, db, f"{tag}-{i}", group, args.gap_timeout) for i in range(workers)
    ]
    procs = [await start_worker(argv, log) for argv in argvs]
    sims: list[Sim] = []
    try:
        await wait_for(lambda: log.read_text().count("subscribed to") >= workers, 120, "workers")
        per = -(-args.halls // args.sims)
        for i in range(args.sims):
            first, count = i * per, min(per, args.halls - i * per)
            if count > 0:
                sims.append(
                    await Sim.start(args, broker.port, first, count, work / f"{tag}-sim.log")
                )
        started = time.monotonic()
        await ask_all(sims, do="connect")
        connect_s = time.monotonic() - started
        print(f"  {args.halls} halls connected in {connect_s:.1f} s", flush=True)

        # -- live ----------------------------------------------------------------------------
        before = await ask_all(sims, do="counts")
        started = time.monotonic()
        await ask_all(sims, do="live", events=args.live_events, seconds=args.live_seconds)
        await ask_all(sims, do="wait", limit=600)
        live = await ask_all(sims, do="counts")
        live_s = max(a["last_acked_at"] for a in live) - started
        live_events = total(live, "events") - total(before, "events")
        live_acks = total(live, "acks") - total(before, "acks")
        print(f"  live: {live_events} events in {live_s:.1f} s, {live_acks} acks", flush=True)

        # -- the outage ----------------------------------------------------------------------
        await ask_all(sims, do="down")
        broker.stop()
        await ask_all(sims, do="hour", events=args.hour_events)
        await asyncio.sleep(args.outage_s)
        base = stored_count(db)
        backlog = args.halls * args.hour_events
        monitored = [p.pid for p in procs]
        sim_pids = [s.proc.pid for s in sims]
        broker.start()
        back = time.monotonic()
        cpu_before = {
            "workers": cpu_seconds(monitored),
            "halls": cpu_seconds(sim_pids),
            "mosquitto": cpu_seconds([broker.proc.pid]),
            "postgresql": cpu_seconds(postgres_pids(pg)),
        }
        if not args.halls_first:
            await wait_for(
                lambda: log.read_text().count("subscribed to") >= 2 * workers, 120, "resubscribe"
            )
        workers_back_s = time.monotonic() - back
        await ask_all(sims, do="back", spread=args.spread)
        samples: list[tuple[float, int]] = []

        async def poll() -> None:
            while True:
                samples.append((time.monotonic(), stored_count(db)))
                await asyncio.sleep(args.poll_s)

        polling = asyncio.create_task(poll())
        try:
            done = await ask_all(sims, do="wait", limit=args.limit_s)
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        caught_up = max(a["last_acked_at"] for a in done)
        catch_up_s = caught_up - back
        cpu = {
            "workers": cpu_seconds(monitored) - cpu_before["workers"],
            "halls": cpu_seconds(sim_pids) - cpu_before["halls"],
            "mosquitto": cpu_seconds([broker.proc.pid]) - cpu_before["mosquitto"],
            "postgresql": cpu_seconds(postgres_pids(pg)) - cpu_before["postgresql"],
        }
        samples.append((time.monotonic(), stored_count(db)))
        all_stored = next((t for t, n in samples if n >= base + backlog), None)
        last_connect_s = max(a["last_connected_at"] for a in done) - back
        rate = rate_between(samples, base, backlog)
        catch_acks = total(done, "acks") - total(live, "acks")
        halls: list[dict[str, Any]] = []
        for sim in sims:
            halls += (await sim.ask(do="report"))["halls"]
        await ask_all(sims, do="stop")
    except BaseException:
        if args.keep_logs:  # the scratch folder goes; the workers' and halls' logs stay
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in (f"{tag}-workers.log", f"{tag}-sim.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(work / name, args.keep_logs / name)
            print(f"  logs kept in {args.keep_logs}", file=sys.stderr)
        raise
    finally:
        for sim in sims:
            if sim.proc.returncode is None:
                sim.proc.kill()
                await sim.proc.wait()
        await stop(procs, grace=30)

    # -- checks: every event stored once ---------------------------------------------------
    with psycopg.connect(db) as conn:
        per_hall = conn.execute(
            "SELECT hall, count(*), count(DISTINCT seq), min(seq), max(seq) FROM events"
            " GROUP BY hall"
        ).fetchall()
    expected = {h["hall"]: h["last"] for h in halls}
    wrong = [
        r
        for r in per_hall
        if (r[1], r[2], r[3], r[4]) != (expected.get(r[0]),) * 2 + (1, expected.get(r[0]))
    ]
    if wrong or len(per_hall) != len(halls):
        raise RuntimeError(f"events not stored exactly once: {wrong[:5]} ({len(per_hall)} halls)")
    if any(h["acked"] != h["last"] for h in halls):
        raise RuntimeError("a hall was not acknowledged to its last seq")
    log_text = log.read_text()
    asked = sum(
        int(line.split(" replays asked")[0].rsplit(" ", 1)[1])
        for line in log_text.splitlines()
        if "ingest worker stopped" in line
    )
    replays = replay_figures(halls)
    events = sum(h["last"] for h in halls)
    duplicates_published = sum(h["doubled"] for h in halls)
    return {
        "workers": workers,
        "halls": args.halls,
        "events": events,
        "live_events": live_events,
        "live_s": round(live_s, 2),
        "live_acks_per_event": round(live_acks / live_events, 3),
        "backlog_events": backlog,
        "events_per_s": round(rate) if rate else None,
        # What the halls can offer at most while they reconnect: the backlog over the
        # spread. A measured rate close to it says the halls' reconnects bound the rate,
        # not the ingest (then the extrapolation to a real hour is pessimistic).
        "offered_per_s": round(backlog / args.spread) if args.spread else None,
        "bound_by": "ingest"
        if rate and (not args.spread or rate < 0.8 * backlog / args.spread)
        else "spread",
        "workers_back_s": round(workers_back_s, 2),
        "last_connect_s": round(last_connect_s, 2),
        "all_stored_s": round(all_stored - back, 2) if all_stored else None,
        "catch_up_s": round(catch_up_s, 2),
        "catch_up_acks_per_event": round(catch_acks / backlog, 3),
        "real_hour_events": args.halls * REAL_HOUR_EVENTS,
        # Only from a rate the ingest set (the spread paces a small backlog's halls).
        "real_hour_catch_up_s": round(args.halls * REAL_HOUR_EVENTS / rate)
        if rate and (not args.spread or rate < 0.8 * backlog / args.spread)
        else None,
        "acks_per_event": round(total(done, "acks") / events, 3),
        "doubled_events": duplicates_published,
        "replays_asked_by_workers": asked,
        **replays,
        "replays_per_real_gap": round(replays["replay_requests"] / replays["real_gaps"], 3)
        if replays["real_gaps"]
        else None,
        "cpu_s_during_catch_up": {k: round(v, 1) for k, v in cpu.items()},
        "connect_s": round(connect_s, 1),
    }


async def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    results = []
    broker = Broker(work / "mosquitto", persistence=True)
    broker.start()
    try:
        with Postgres(durable=True) as pg:
            for workers in args.workers:
                print(f"{workers} worker(s):", flush=True)
                result = await one_run(args, broker, pg, work, workers)
                print(f"  {result}", flush=True)
                results.append(result)
    finally:
        broker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--halls", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sims", type=int, default=2, help="processes for the halls")
    parser.add_argument("--live-events", type=int, default=5, help="per hall")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument(
        "--hour-events", type=int, default=30,
        help=f"per hall, made during the outage (a real busy hour: {REAL_HOUR_EVENTS})",
    )  # fmt: skip
    parser.add_argument("--spread", type=float, default=10.0, help="reconnect spread, s")
    parser.add_argument("--drain-rate", type=float, default=200.0, help="per hall, events/s")
    parser.add_argument("--gap-rate", type=float, default=0.01)
    parser.add_argument("--dup-rate", type=float, default=0.01)
    parser.add_argument("--gap-timeout", type=float, default=2.0, help="hallctl ingest's")
    parser.add_argument("--outage-s", type=float, default=3.0, help="real seconds down")
    parser.add_argument("--halls-first", action="store_true")
    parser.add_argument("--metrics-every", type=float, default=60.0)
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--limit-s", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--keep-logs", type=Path, help="copy a failed run's logs here")
    parser.add_argument(
        "--results-name", default=NAME, help="bench/results/<this>.json (keep several runs)"
    )
    args = parser.parse_args(argv)
    # 2,000 halls are 2,000 sockets in mosquitto and in the simulators (inherited).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.halls + 200:
        parser.error(f"RLIMIT_NOFILE's hard limit ({hard}) is too low for {args.halls} halls")
    load_before = os.getloadavg()
    with scratch_dir("city-") as work:
        results = asyncio.run(measure(args, work))
    base = next((r for r in results if r["workers"] == args.workers[0]), None)
    for r in results:
        ratio = None
        if base and base["events_per_s"] and r["events_per_s"]:
            ratio = round(r["events_per_s"] / base["events_per_s"], 2)
        r["x_baseline"] = ratio
    print(
        f"\n{args.halls} halls; live: {args.live_events} events each over {args.live_seconds:g} s;"
        f" outage: {args.hour_events} events each (a real busy hour is {REAL_HOUR_EVENTS}),"
        f" reconnect spread {args.spread:g} s, drain {args.drain_rate:g}/s per hall"
    )
    print_table(
        ["workers", "events/s", f"× {args.workers[0]} w", "bound by", "acks/ev live",
         "acks/ev catch-up", "replays/gap", "dup+other", "all stored s", "catch-up s",
         "real hour s"],
        [
            [r["workers"], r["events_per_s"] or "-", r["x_baseline"] or "-", r["bound_by"],
             r["live_acks_per_event"], r["catch_up_acks_per_event"],
             r["replays_per_real_gap"] or "-",
             f"{r['duplicate_requests']}+{r['other_requests']}",
             r["all_stored_s"] or "-", r["catch_up_s"], r["real_hour_catch_up_s"] or "-"]
            for r in results
        ],
    )  # fmt: skip
    print(
        "events/s: stored per second between 10 % and 90 % of the outage's backlog;"
        " real hour s: the real hour's backlog"
        f" ({args.halls} × {REAL_HOUR_EVENTS}) at that rate (an extrapolation, not measured)"
    )
    load_after = os.getloadavg()
    path = write_results(
        args.results_name,
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        {"runs": results},
        load_average={"before": load_before, "after": load_after},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
