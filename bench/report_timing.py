"""Report time for a year of a busy hall, generated into the real store.

A year (365 business days) of a hall with 8 windows and 10 staff taking ``--per-day``
tickets a day (300 by default): each ticket issued, called after a wait, served (or
no-show, transferred and served elsewhere, cancelled, expired), 70 % of the served rated
(差评 with a reason), staff signed in, paused for lunch and signed out. Each day's events
are applied in one transaction by the store's own hook (``Store._record_stats``, what
``Store.commit`` calls with every operation's events), so the records are exactly what the
hall's writer would have left.

First, once: the year's report straight after generation (``cold``): every day is tallied
from its records and kept, as after an upgrade (a running hall keeps each day's tally when
it closes). Then, each ``--rounds`` times (medians), with ``Reports.report`` on a ``Hall``
over that store, as the API and ``get_report`` call it:

- ``day``, ``month``, ``year``: every view (service, window, staff, hour);
- ``year by staff``: the staff view only;
- ``month xlsx``: a month's report (every view) and its XLSX export.

The baseline, measured in the same run on the same file: one plain SQLite aggregate over
the same year's rows (``COUNT`` and ``AVG`` grouped by service) — the floor of reading the
records at all. The target is 1 s for any report (issue 17).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import bench_hall, median, print_table, scratch_dir, write_results

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.events import Event
from agent.core.model import Priority, Source, TicketStatus
from agent.core.reports import VIEWS
from agent.features.report_tables import to_xlsx
from agent.features.reports import Reports
from agent.runtime.hall import Hall
from agent.runtime.store import DB_NAME, Store

NAME = "report_timing"
TARGET_S = 1.0
ZONE = ZoneInfo("Asia/Shanghai")
FIRST_DAY = dt.date(2025, 1, 1)
SERVICES = ["social", "civil", "housing", "general"]
WINDOWS = [f"w{n}" for n in range(1, 9)]
STAFF = [f"s-{n:03d}" for n in range(1, 11)]
REASONS = ["等候时间长", "服务态度差", "业务不熟练"]


def hall_config(storage: Path) -> HallAgentConfig:
    data = bench_hall(storage)
    data["windows"] = [
        {"id": w, "name": f"{n}号窗口", "number": n, "services": SERVICES}
        for n, w in enumerate(WINDOWS, start=1)
    ]
    return HallAgentConfig.model_validate(data)


def _at(day: dt.date, minutes: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), ZONE) + dt.timedelta(minutes=minutes)


def day_events(day: dt.date, per_day: int, rnd: random.Random) -> list[Event]:
    """One business day of a busy hall as the engine would emit it (in time order)."""
    out: list[tuple[dt.datetime, int, ev.EventData]] = []
    order = 0

    def emit(when: dt.datetime, payload: ev.EventData) -> None:
        nonlocal order
        order += 1
        out.append((when, order, payload))

    on_duty = rnd.sample(STAFF, len(WINDOWS))
    for window, staff in zip(WINDOWS, on_duty, strict=True):
        emit(_at(day, 8 * 60 + 45), ev.StaffSignedIn(window=window, staff=staff))
        emit(_at(day, 12 * 60 + rnd.randint(0, 15)), ev.WindowPaused(window=window, reason="午休"))
        emit(_at(day, 13 * 60 + 30), ev.WindowResumed(window=window))
        emit(
            _at(day, 17 * 60 + 30),
            ev.StaffSignedOut(window=window, staff=staff, reason="signed out"),
        )
        emit(_at(day, 17 * 60 + 30), ev.WindowClosed(window=window))
    counters = dict.fromkeys(SERVICES, 0)
    day_text = day.isoformat()
    for _ in range(per_day):
        service = rnd.choice(SERVICES)
        counters[service] += 1
        number = f"{'ABCD'[SERVICES.index(service)]}{counters[service]:03d}"
        ticket_id = f"{day:%Y%m%d}-{number}"
        issued = rnd.uniform(9 * 60, 17 * 60)
        priority = Priority.ELDERLY if rnd.random() < 0.08 else Priority.NORMAL
        source = rnd.choice([Source.TOUCH, Source.TOUCH, Source.ID_CARD, Source.QR])
        common: dict[str, Any] = {
            "ticket": number,
            "ticket_id": ticket_id,
            "day": day_text,
            "priority": priority,
        }
        emit(
            _at(day, issued),
            ev.TicketIssued(
                **common,
                service=service,
                status=TicketStatus.WAITING,
                source=source,
                ahead=0,
                wait_minutes=0,
            ),
        )
        fate = rnd.random()
        if fate < 0.03:
            emit(
                _at(day, issued + 5),
                ev.TicketCancelled(
                    **common, service=service, status=TicketStatus.CANCELLED, reason="left"
                ),
            )
            continue
        if fate < 0.06:
            emit(
                _at(day, 23 * 60),
                ev.TicketExpired(
                    **common, service=service, status=TicketStatus.EXPIRED, reason="day closed"
                ),
            )
            continue
        called = issued + rnd.expovariate(1 / 15)
        window = rnd.choice(WINDOWS)
        staff = on_duty[WINDOWS.index(window)]
        where: dict[str, Any] = {"window": window, "staff": staff}
        n = int(window[1:])
        emit(
            _at(day, called),
            ev.TicketCalled(
                **common,
                **where,
                service=service,
                status=TicketStatus.CALLED,
                window_name=f"{n}号窗口",
                window_number=n,
            ),
        )
        if fate < 0.12:
            emit(
                _at(day, called + 3),
                ev.TicketNoShow(
                    **common, **where, service=service, status=TicketStatus.NO_SHOW, called_count=1
                ),
            )
            continue
        if fate < 0.16:
            target = rnd.choice([s for s in SERVICES if s != service])
            emit(
                _at(day, called + 4),
                ev.TicketTransferred(
                    **common,
                    service=target,
                    status=TicketStatus.WAITING,
                    from_service=service,
                    from_window=window,
                    position="front",
                ),
            )
            service, called = target, called + 10
            window = rnd.choice(WINDOWS)
            staff = on_duty[WINDOWS.index(window)]
            where: dict[str, Any] = {"window": window, "staff": staff}
            n = int(window[1:])
            emit(
                _at(day, called),
                ev.TicketCalled(
                    **common,
                    **where,
                    service=service,
                    status=TicketStatus.CALLED,
                    window_name=f"{n}号窗口",
                    window_number=n,
                ),
            )
        minutes = round(rnd.lognormvariate(2.0, 0.5), 2)
        finished = called + minutes
        emit(
            _at(day, finished),
            ev.TicketFinished(
                **common,
                **where,
                service=service,
                status=TicketStatus.FINISHED,
                minutes=minutes,
                implicit=False,
            ),
        )
        if rnd.random() < 0.7:
            level = rnd.choices([5, 4, 3, 2, 1], weights=[70, 20, 6, 3, 1])[0]
            bad = level <= 2
            emit(
                _at(day, finished + 0.5),
                ev.RatingSubmitted(
                    ticket=number,
                    ticket_id=ticket_id,
                    day=day_text,
                    service=service,
                    service_name=service,
                    window_name=f"{n}号窗口",
                    window_number=n,
                    level=level,
                    label=str(level),
                    bad=bad,
                    reasons=[rnd.choice(REASONS)] if bad else [],
                    comment="",
                    channel="tablet",
                    device=None,
                    defaulted=False,
                    window=window,
                    staff=staff,
                    staff_name=None,
                    requested_at=None,
                ),
            )
    out.sort(key=lambda item: (item[0], item[1]))
    return [Event(payload, when) for when, _, payload in out]


def generate(storage: Path, days: int, per_day: int) -> tuple[float, int]:
    """Write ``days`` days into the store in ``storage``: seconds taken, events applied.

    Each day is one transaction of the store that applies the day's typed events to the
    statistics records with the same hook ``Store.commit`` calls (``_record_stats``); the
    events themselves are not appended to the outbox (its JSON encoding would take most of
    the time, and retention deletes acknowledged events anyway)."""
    rnd = random.Random(17)
    store = Store.open(storage)
    applied = 0
    began = time.perf_counter()
    try:
        for offset in range(days):
            events = day_events(FIRST_DAY + dt.timedelta(days=offset), per_day, rnd)
            store._transaction(functools.partial(store._record_stats, events=events))
            applied += len(events)
    finally:
        store.close()
    return time.perf_counter() - began, applied


def baseline(path: Path, first: dt.date, last: dt.date) -> float:
    """One plain aggregate over the same rows (the floor of reading them)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        began = time.perf_counter()
        conn.execute(
            "SELECT issued_service, COUNT(*), AVG(called_at - issued_at), AVG(service_s), "
            "SUM(rating >= 3) FROM stat_tickets WHERE day BETWEEN ? AND ? GROUP BY 1",
            (first.isoformat(), last.isoformat()),
        ).fetchall()
        return time.perf_counter() - began
    finally:
        conn.close()


async def measure(config: HallAgentConfig, storage: Path, rounds: int) -> dict[str, Any]:
    last_day = FIRST_DAY + dt.timedelta(days=364)
    clock = lambda: _at(last_day + dt.timedelta(days=1), 12 * 60)  # noqa: E731
    store = Store.open(storage)
    month = (dt.date(2025, 6, 1), dt.date(2025, 6, 30))
    cases: dict[str, Callable[[], Awaitable[Any]]] = {}
    try:
        async with Hall(config, store, clock=clock) as hall:
            reports = Reports(hall)

            async def xlsx() -> bytes:
                return to_xlsx(await reports.report(*month))

            cases = {
                "day": lambda: reports.report(dt.date(2025, 6, 18), dt.date(2025, 6, 18)),
                "month": lambda: reports.report(*month),
                "year": lambda: reports.report(FIRST_DAY, last_day),
                "year by staff": lambda: reports.report(FIRST_DAY, last_day, ("staff",)),
                "month xlsx": xlsx,
            }
            began = time.perf_counter()
            await reports.report(FIRST_DAY, last_day)
            cold = time.perf_counter() - began
            times: dict[str, list[float]] = {name: [] for name in cases}
            base: list[float] = []
            sample: dict[str, Any] = {}
            for n in range(rounds):
                base.append(baseline(storage / DB_NAME, FIRST_DAY, last_day))
                for name, run in cases.items():
                    began = time.perf_counter()
                    result = await run()
                    times[name].append(time.perf_counter() - began)
                    if n == 0 and name == "year":
                        sample = result["hall"]
    finally:
        store.close()
    return {
        "times": times,
        "baseline": base,
        "year_hall": sample,
        "views": list(VIEWS),
        "cold_year_s": cold,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with scratch_dir("reports-") as folder:
        storage = folder / "state"
        config = hall_config(storage)
        gen_s, events = generate(storage, args.days, args.per_day)
        size = (storage / DB_NAME).stat().st_size
        print(
            f"generated {args.days} days x {args.per_day} tickets: {events} events, "
            f"{size / 1e6:.0f} MB, in {gen_s:.1f} s"
        )
        found = asyncio.run(measure(config, storage, args.rounds))
    base = median(found["baseline"])
    rows = []
    figures: dict[str, Any] = {"baseline_s": round(base, 4), "target_s": TARGET_S}
    for name, values in found["times"].items():
        m = median(values)
        rows.append([name, round(m * 1000, 1), round(max(values) * 1000, 1), round(m / base, 1)])
        figures[name] = {
            "median_s": round(m, 4),
            "max_s": round(max(values), 4),
            "x_baseline": round(m / base, 1),
            "rounds_s": [round(v, 4) for v in values],
        }
    print_table(["report", "median ms", "max ms", "x baseline"], rows)
    print(f"baseline (one SQLite aggregate over the year): {base * 1000:.1f} ms")
    print(
        "year: issued {issued}, served {served}".format(
            issued=found["year_hall"].get("issued"), served=found["year_hall"].get("served")
        )
    )
    cold = found["cold_year_s"]
    print(
        f"first year report (tallies every day from its records and keeps them): "
        f"{cold * 1000:.0f} ms, x{cold / base:.1f} baseline"
    )
    figures["cold_year"] = {"s": round(cold, 4), "x_baseline": round(cold / base, 1)}
    figures["generate_s"] = round(gen_s, 1)
    figures["events"] = events
    figures["db_bytes"] = size
    write_results(
        NAME,
        {"days": args.days, "per_day": args.per_day, "rounds": args.rounds},
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
