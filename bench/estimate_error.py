"""How far the wait shown at take time is from the real wait, in a 全科 hall.

A busy day is generated (seeded) and replayed through the real ``QueueEngine`` with a
controlled clock: four services with different service times share five windows (three
全科 windows serving all four, each in its own order, one for 社保 and 综合, one for 民政 and
户籍; one 全科 window closes for lunch), citizens arrive with a morning and an afternoon peak,
one in ten on the green channel, and each is served for a random time around its service's
mean. A window that finishes calls "next" at once; an idle window calls as soon as someone
it serves arrives.

For every ticket the benchmark keeps the wait the ticket showed when it was taken (the
engine's estimate: the simulation of the routing, ``agent/core/estimate.py``) and what the
old formula would have said (that service's people ahead × its mean ÷ the open windows that
serve it), and the real wait (called − issued). Reported: the mean absolute error (MAE) and
the mean signed error (bias) of both, over all tickets and per service; how long one
estimate takes against the old formula (per take, and per page rebuild: ``snapshot``); and
the outbox load of ``ticket.status`` (emitted when ``ticket.qr_url`` is set) and
``ticket.turn_near`` for the day.

    .venv/bin/python bench/estimate_error.py [--days 5] [--tickets 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import hall_config, print_table, write_results

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import QueueEngine
from agent.core.estimate import Estimates
from agent.core.model import HallCounters, Priority, Source, Ticket, WindowState, business_day
from agent.web.ticket_page import ticket_states

NAME = "estimate_error"
ZONE = dt.timezone(dt.timedelta(hours=8))
# Mean minutes per service, and its share of the citizens.
SERVICES = {
    "social": (9.0, 0.35),
    "civil": (14.0, 0.15),
    "housing": (6.0, 0.2),
    "general": (4.0, 0.3),
}
WINDOWS = [
    ("w1", ["social", "civil", "housing", "general"]),
    ("w2", ["civil", "housing", "general", "social"]),
    ("w3", ["general", "social", "housing", "civil"]),
    ("w4", ["social", "general"]),
    ("w5", ["civil", "housing"]),
]
OPEN, CLOSE = dt.time(9, 0), dt.time(17, 0)
LUNCH = (dt.time(12, 0), dt.time(13, 0), "w3")


def config(tmp: Path) -> HallAgentConfig:
    data = hall_config(tmp)
    data["services"] = [
        {"id": s, "name": s, "prefix": "ABCD"[i], "expected_minutes": mean}
        for i, (s, (mean, _)) in enumerate(SERVICES.items())
    ]
    data["windows"] = [
        {"id": w, "name": f"{i + 1}号窗口", "number": i + 1, "services": services}
        for i, (w, services) in enumerate(WINDOWS)
    ]
    data["ticket"] = {"qr_url": "https://zwfw.example.gov.cn/q/{token}"}
    return HallAgentConfig.model_validate(data)


def arrivals(rng: random.Random, day: dt.date, count: int) -> list[tuple[dt.datetime, str, bool]]:
    """``count`` citizens over the day, peaks at 9:30 and 14:30."""
    start = dt.datetime.combine(day, OPEN, ZONE)
    minutes = (dt.datetime.combine(day, CLOSE, ZONE) - start).total_seconds() / 60 - 30
    out = []
    for _ in range(count):
        peak = rng.choice([30.0, 330.0])
        at = min(max(0.0, rng.gauss(peak, 70.0)), minutes)
        service = rng.choices(list(SERVICES), [share for _, share in SERVICES.values()])[0]
        out.append((start + dt.timedelta(minutes=at), service, rng.random() < 0.1))
    return sorted(out)


def old_formula(engine: QueueEngine, service: str, ahead: int) -> int:
    """What the agent showed before: ahead × mean ÷ open windows that serve the service."""
    serving = [w for w in engine.config.windows if service in w.services]
    open_ = [w for w in serving if engine.windows[w.id].state is WindowState.OPEN]
    lanes = max(1, len(open_) or len(serving))
    return round(ahead * engine.average_minutes(service) / lanes)


@dataclasses.dataclass
class Record:
    service: str
    green: bool
    shown: int
    old: int
    issued_at: dt.datetime
    called_at: dt.datetime | None = None

    @property
    def real(self) -> float:
        assert self.called_at is not None
        return (self.called_at - self.issued_at).total_seconds() / 60


@dataclasses.dataclass
class Day:
    records: dict[str, Record]
    estimate_s: list[float]
    old_s: list[float]
    snapshot_s: list[float]
    snapshot_base_s: list[float]
    pages_s: list[float]
    status_events: int
    status_bytes: int
    turn_near: int
    events: int


def _no_estimates(_now: dt.datetime) -> Estimates:
    """The baseline snapshot: everything but the simulation (waits fall back to a product)."""
    return Estimates({}, {})


def replay(cfg: HallAgentConfig, seed: int, count: int) -> Day:
    rng = random.Random(seed)
    day = dt.date(2026, 3, 2) + dt.timedelta(days=seed)
    tokens = iter(range(10**9))
    opening = dt.datetime.combine(day, OPEN, ZONE)
    engine = QueueEngine(
        cfg,
        HallCounters(day=business_day(opening, cfg)),
        token_source=lambda: f"t{next(tokens):021d}",
    )
    records: dict[str, Record] = {}
    busy_until: dict[str, dt.datetime | None] = {w: None for w, _ in WINDOWS}
    stats = Day(records, [], [], [], [], [], 0, 0, 0, 0)

    def run(operation: op.Operation, now: dt.datetime) -> Any:
        out = engine.apply(operation, now)
        for event in out.events:
            stats.events += 1
            if isinstance(event.payload, ev.TicketStatusUpdate):
                stats.status_events += 1
                stats.status_bytes += len(json.dumps(event.data, ensure_ascii=False))
            elif isinstance(event.payload, ev.TicketTurnNear):
                stats.turn_near += 1
        return out

    def serve(window: str, now: dt.datetime) -> None:
        out = run(op.CallNext(window=window), now)
        ticket = out.ticket
        if ticket is None:
            busy_until[window] = None
            return
        records[ticket.id].called_at = now
        mean = SERVICES[ticket.service][0]
        busy_until[window] = now + dt.timedelta(minutes=rng.gammavariate(4.0, mean / 4.0))

    opening = dt.datetime.combine(day, OPEN, ZONE)
    for w, _ in WINDOWS:
        run(op.SignIn(window=w, staff=f"s-{w}"), opening)
    lunch_start = dt.datetime.combine(day, LUNCH[0], ZONE)
    lunch_end = dt.datetime.combine(day, LUNCH[1], ZONE)
    timeline: list[tuple[dt.datetime, int, Any]] = [
        (at, 1, (service, green)) for at, service, green in arrivals(rng, day, count)
    ]
    timeline += [(lunch_start, 0, "pause"), (lunch_end, 0, "resume")]
    timeline.sort(key=lambda item: (item[0], item[1]))
    lunch = LUNCH[2]

    def finish_due(until: dt.datetime) -> None:
        """Windows whose citizen is done by ``until`` call the next one, in time order."""
        while True:
            due = [
                (at, w)
                for w, at in busy_until.items()
                if at is not None and at <= until and engine.windows[w].state is WindowState.OPEN
            ]
            if not due:
                return
            at, window = min(due)
            serve(window, at)

    for at, _, what in timeline:
        finish_due(at)
        if what == "pause":
            if busy_until[lunch] is not None:  # the citizen at the window is finished first
                run(op.Finish(window=lunch), at)
                busy_until[lunch] = None
            run(op.Pause(window=lunch), at)
            continue
        if what == "resume":
            run(op.Resume(window=lunch), at)
            serve(lunch, at)
            continue
        service, green = what
        priority = Priority.ELDERLY if green else Priority.NORMAL
        out = run(op.Take(service=service, source=Source.TOUCH, priority=priority), at)
        ticket: Ticket = out.ticket
        ahead = out.result["ahead"]
        records[ticket.id] = Record(
            service, green, out.result["wait_minutes"], old_formula(engine, service, ahead), at
        )
        # Timing: the estimate as the take computes it, against the old formula.
        engine._kept = None  # a fresh run, not the one the take kept
        t0 = time.perf_counter()
        engine.wait_minutes(ticket, at)
        t1 = time.perf_counter()
        old_formula(engine, service, ahead)
        t2 = time.perf_counter()
        engine._kept = None
        engine.snapshot(at)
        t3 = time.perf_counter()
        without = engine.estimates
        engine.estimates = _no_estimates  # type: ignore[method-assign]
        engine.snapshot(at)
        engine.estimates = without  # type: ignore[method-assign]
        t3b = time.perf_counter()
        engine.snapshot(at)  # as a rebuild runs it: the status pages share its simulation
        t4 = time.perf_counter()
        ticket_states(engine, at)
        t5 = time.perf_counter()
        stats.pages_s.append(t5 - t4)
        stats.estimate_s.append(t1 - t0)
        stats.old_s.append(t2 - t1)
        stats.snapshot_s.append(t3 - t2)
        stats.snapshot_base_s.append(t3b - t3)
        for w, until in busy_until.items():
            if until is None and engine.windows[w].state is WindowState.OPEN:
                serve(w, at)
    finish_due(dt.datetime.combine(day, dt.time(23, 0), ZONE))
    return stats


def errors(records: list[Record], field: str) -> tuple[float, float]:
    diffs = [getattr(r, field) - r.real for r in records]
    return statistics.fmean(abs(d) for d in diffs), statistics.fmean(diffs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--tickets", type=int, default=300)
    args = parser.parse_args(argv)
    cfg = config(Path("/nonexistent-bench-state"))
    days = [replay(cfg, seed, args.tickets) for seed in range(args.days)]
    served = [r for d in days for r in d.records.values() if r.called_at is not None]
    assert len(served) == sum(len(d.records) for d in days), "every citizen is served"

    rows = []
    figures: dict[str, Any] = {}
    for name, group in [
        ("all", served),
        *[(s, [r for r in served if r.service == s]) for s in SERVICES],
    ]:
        old_mae, old_bias = errors(group, "old")
        new_mae, new_bias = errors(group, "shown")
        real = statistics.fmean(r.real for r in group)
        rows.append(
            [
                name,
                len(group),
                round(real, 1),
                round(old_mae, 1),
                round(old_bias, 1),
                round(new_mae, 1),
                round(new_bias, 1),
            ]
        )
        figures[name] = {
            "tickets": len(group),
            "mean_real_wait_min": round(real, 2),
            "old_mae_min": round(old_mae, 2),
            "old_bias_min": round(old_bias, 2),
            "new_mae_min": round(new_mae, 2),
            "new_bias_min": round(new_bias, 2),
            "mae_ratio_new_over_old": round(new_mae / old_mae, 3) if old_mae else None,
        }
    print_table(
        ["service", "tickets", "real wait", "old MAE", "old bias", "new MAE", "new bias"], rows
    )

    estimate = [s * 1e6 for d in days for s in d.estimate_s]
    old = [s * 1e6 for d in days for s in d.old_s]
    snapshot = [s * 1e6 for d in days for s in d.snapshot_s]
    base = [s * 1e6 for d in days for s in d.snapshot_base_s]
    pages = [s * 1e6 for d in days for s in d.pages_s]
    timing = {
        "estimate_per_take_us_p50": round(statistics.median(estimate), 1),
        "estimate_per_take_us_max": round(max(estimate), 1),
        "old_formula_us_p50": round(statistics.median(old), 1),
        "estimate_over_old_p50": round(statistics.median(estimate) / statistics.median(old), 1),
        "snapshot_us_p50": round(statistics.median(snapshot), 1),
        "snapshot_without_simulation_us_p50": round(statistics.median(base), 1),
        "snapshot_over_without_p50": round(
            statistics.median(snapshot) / statistics.median(base), 2
        ),
        # Every status page of the day, once per rebuild of the pages' view.
        "ticket_pages_us_p50": round(statistics.median(pages), 1),
        "ticket_pages_over_snapshot_p50": round(
            statistics.median(pages) / statistics.median(snapshot), 2
        ),
    }
    print_table(["timing", "value"], [[k, v] for k, v in timing.items()])
    outbox = {
        "events_per_day": round(statistics.fmean(d.events for d in days)),
        "ticket_status_per_day": round(statistics.fmean(d.status_events for d in days)),
        "ticket_status_kb_per_day": round(statistics.fmean(d.status_bytes for d in days) / 1024, 1),
        "turn_near_per_day": round(statistics.fmean(d.turn_near for d in days)),
    }
    print_table(["outbox (ticket.qr_url set)", "value"], [[k, v] for k, v in outbox.items()])
    path = write_results(
        NAME,
        {
            "days": args.days,
            "tickets_per_day": args.tickets,
            "services": SERVICES,
            "windows": WINDOWS,
        },
        {"errors": figures, "timing": timing, "outbox": outbox},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
