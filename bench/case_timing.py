"""Proxy cases (代收代办) in a hall with a year of them, in the real store.

A year (``--days``, 365) of ``--per-day`` cases (20) is written into the store as the case
desk writes them (``Store.save_case``, sealed citizen and all); the cases of the last
``--open-days`` days (30) are still open. Then, each ``--rounds`` times (medians), through
the hall's writer and reader as the API calls them:

- ``register``: one case registered (sealing, number, row and ``case.registered`` in one
  commit; no printer);
- ``check deadlines``: one pass of the deadline watcher (the first pass, which warns about
  every generated case at once, is reported apart as ``first check``);
- ``list due (manager)``: every case near or past its date, with the ``due`` state;
- ``list window``: one window's cases (every status);
- ``public look-up``: one case by number, as the kiosk asks.

The baseline, measured in the same run on the same file: one ticket taken
(``Hall.execute(Take)``), one commit of the same writer with its fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import bench_hall, median, print_table, scratch_dir, write_results

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.cases import Case, CaseStatus, case_number, promised_date
from agent.core.events import Event
from agent.core.operations import Take
from agent.features.cases import CaseDesk, Registration
from agent.runtime.hall import Hall
from agent.runtime.personal import Vault, mask_citizen
from agent.runtime.store import Store
from agent.workdays import WorkingDays
from protocols.idcard import check_digit

NAME = "case_timing"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MATERIALS = ["本人有效身份证件", "社会保障卡", "近期一寸免冠照片 1 张"]
ID_NUMBER = "11010819900307246" + check_digit("11010819900307246")


def hall_config(storage: Path) -> HallAgentConfig:
    data = bench_hall(storage)
    for service in data["services"]:
        service["guide"] = {"materials": MATERIALS, "time_limit_days": 5}
    return HallAgentConfig.model_validate(data)


def generate(
    store: Store, vault: Vault, last: dt.date, days: int, per_day: int, open_days: int
) -> int:
    """``days`` days of cases ending the day before ``last``; returns how many are open."""
    rnd = random.Random(17)
    working = WorkingDays()
    sealed = vault.seal({"name": "张三", "id_number": ID_NUMBER, "phone": None}, b"case")
    masked = mask_citizen("张三", ID_NUMBER, None)
    still_open = 0
    for back in range(days, 0, -1):
        day = last - dt.timedelta(days=back)
        with store.group():
            for n in range(1, per_day + 1):
                at = dt.datetime.combine(day, dt.time(9), SHANGHAI) + dt.timedelta(minutes=n * 20)
                is_open = back <= open_days
                status = CaseStatus.PROCESSING if is_open else CaseStatus.CLOSED
                case = Case(
                    number=case_number("DB", day, n),
                    day=day,
                    service=rnd.choice(["social", "civil", "housing", "general"]),
                    window=rnd.choice(["w1", "w2", "w3"]),
                    staff="1001",
                    registered_at=at.isoformat(timespec="seconds"),
                    promised=promised_date(day, 5, working),
                    promised_by="guide",
                    time_limit_days=5,
                    materials=MATERIALS[:2],
                    citizen=masked,
                    status=status,
                )
                still_open += is_open
                event = ev.CaseRegistered(
                    case=case.number,
                    service=case.service,
                    window=case.window,
                    day=day.isoformat(),
                    promised=case.promised.isoformat(),
                    promised_by="guide",
                    materials=case.materials,
                    form="hash",
                    id_hash="0" * 64,
                )
                store.save_case(
                    case.to_json(),
                    [Event(event, at)],
                    person=sealed if is_open else None,
                )
    return still_open


async def timed(fn: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


async def measure(
    config: HallAgentConfig, store: Store, vault: Vault, rounds: int
) -> dict[str, list[float]]:
    async with Hall(config, store) as hall:
        desk = CaseDesk(hall, None, vault=vault)
        some = (await desk.listing(window="w1"))["cases"][0]["number"]
        entry = Registration(
            service="social",
            window="w1",
            name="李四",
            id_number=ID_NUMBER,
            materials=MATERIALS[:1],
            staff="1001",
        )
        return {
            "baseline (take a ticket)": await timed(
                lambda: hall.execute(Take(service="social")), rounds
            ),
            "register": await timed(lambda: desk.register(entry), rounds),
            "first check": await timed(desk.check_deadlines, 1),
            "check deadlines": await timed(desk.check_deadlines, rounds),
            "list due (manager)": await timed(lambda: desk.listing(due_filter="due"), rounds),
            "list window": await timed(lambda: desk.listing(window="w1"), rounds),
            "public look-up": await timed(lambda: desk.public(some), rounds),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=20)
    parser.add_argument("--open-days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    vault = Vault(secrets.token_bytes(32))
    # The first deadline pass warns about every generated case: not what is measured.
    logging.getLogger("agent").setLevel(logging.ERROR)
    with scratch_dir("cases-") as folder:
        config = hall_config(folder / "state")
        store = Store.open(config.storage.path)
        try:
            today = dt.datetime.now(SHANGHAI).date()
            start = time.perf_counter()
            still_open = generate(store, vault, today, args.days, args.per_day, args.open_days)
            print(
                f"generated {args.days * args.per_day} cases ({still_open} open) in "
                f"{time.perf_counter() - start:.1f} s"
            )
            found = asyncio.run(measure(config, store, vault, args.rounds))
        finally:
            store.close()
    base = median(found.pop("baseline (take a ticket)"))
    rows = []
    figures: dict[str, Any] = {"baseline_take_s": round(base, 5), "open_cases": still_open}
    for name, values in found.items():
        m = median(values)
        rows.append([name, round(m * 1000, 2), round(max(values) * 1000, 2), round(m / base, 2)])
        figures[name] = {
            "median_s": round(m, 5),
            "max_s": round(max(values), 5),
            "x_baseline": round(m / base, 2),
        }
    print_table(["operation", "median ms", "max ms", "x take"], rows)
    print(f"baseline (one ticket taken, one commit): {base * 1000:.2f} ms")
    write_results(
        NAME,
        {
            "days": args.days,
            "per_day": args.per_day,
            "open_days": args.open_days,
            "rounds": args.rounds,
        },
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
