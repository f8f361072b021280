"""Reports (统计报表): the hall's figures for any range of business days, their exports,
the ``report.daily`` event at each rollover and central's ``get_report`` command.

The records are the store's (``agent/runtime/store/stats.py``), the figures
:mod:`agent.core.reports`'; this module reads the one, computes the other off the event
loop, and turns a report into tables with Chinese headers: CSV (one view, or every view
one after the other) and XLSX (one sheet per view, openpyxl). docs/reports.md says what
each figure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from agent.central import contract as c
from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.events import Event
from agent.core.reports import (
    VIEWS,
    TicketLife,
    View,
    combine,
    day_bounds,
    day_tally,
    parse_range,
)
from agent.runtime.hall import Hall
from agent.runtime.store import Store, StoredEvent, StoreError, Written
from agent.runtime.tasks import BackgroundTasks, stop

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# A longer range is split by the one asking (a year and a little: a year's comparison).
MAX_DAYS = 400


class Reports:
    """Reports of one hall: read its records, compute, export."""

    def __init__(self, hall: Hall) -> None:
        self.hall = hall

    def today(self) -> dt.date:
        return self.hall.business_day()

    async def now(self) -> dt.datetime:
        """The hall's time (its clock, in its zone)."""
        now: dt.datetime = await self.hall.read(lambda _, now: now)
        return now

    def span(
        self, first: str | dt.date | None, last: str | dt.date | None
    ) -> tuple[dt.date, dt.date]:
        """The business days asked for (see :func:`agent.core.reports.parse_range`); a
        :class:`Refused` saying what to write instead."""
        try:
            start, end = parse_range(first, last, self.today())
        except ValueError as err:
            raise Refused(str(err)) from None
        if (end - start).days + 1 > MAX_DAYS:
            raise Refused(f"a report covers at most {MAX_DAYS} days; ask for a shorter range")
        return start, end

    async def report(self, first: dt.date, last: dt.date, views: Iterable[View] = VIEWS) -> JSON:
        """The report of business days ``first``..``last`` with the ``views`` asked for.

        A closed day is read from its kept tally (``stat_days``); a closed day without one
        is tallied from its records once and kept; the open day (today) is tallied from
        its records every time."""
        config = self.hall.config
        today, now = await self.hall.read(lambda engine, now: (engine.hall.day, now))
        wanted = list(views)
        kept: dict[str, JSON] = {}
        if first < today:
            closed_last = min(last, today - dt.timedelta(days=1))
            parts = ["hall", *wanted]
            kept = await self.hall.store_call(lambda s: s.day_tallies(first, closed_last, parts))
        needed = [
            day
            for day in _days(first, min(last, today))
            if day == today or day.isoformat() not in kept
        ]
        fresh: dict[str, JSON] = {}
        for lo, hi in _runs(needed):
            fresh.update(await self._tally_days(lo, hi, now))
        closed = {day: t for day, t in fresh.items() if day < today.isoformat()}
        if closed:
            await self._keep(closed)

        def read(store: Store) -> tuple[Any, Any]:
            return store.bad_ratings(first, last), store.setting("staff")

        bad, roster = await self.hall.store_call(read)
        names: dict[View, dict[str, str]] = {
            "service": {s.id: s.name for s in config.services},
            "window": {w.id: w.name for w in config.windows},
            "staff": _staff_names(roster),
        }
        body = await asyncio.to_thread(
            combine,
            [*kept.values(), *fresh.values()],
            first=first,
            last=last,
            views=wanted,
            names=names,
            bad=bad,
        )
        return {
            "hall_id": config.hall.id,
            "hall_name": config.hall.name,
            "generated_at": now.isoformat(timespec="seconds"),
            **body,
        }

    async def _tally_days(self, first: dt.date, last: dt.date, now: dt.datetime) -> dict[str, JSON]:
        """Each day's tally from the records (duty and pauses up to ``now`` at most)."""
        zone, hour = self.hall.config.hall.zone, self.hall.config.hall.day_start_hour
        start, end = day_bounds(first, last, zone, hour)
        until = min(end, now.timestamp())
        tickets, spans = await self.hall.store_call(
            lambda s: s.report_records(first, last, start, until)
        )

        def tally() -> dict[str, JSON]:
            by_day: dict[str, list[TicketLife]] = {d.isoformat(): [] for d in _days(first, last)}
            for ticket in tickets:
                by_day.setdefault(ticket.day, []).append(ticket)
            out = {}
            for day, found in by_day.items():
                lo, hi = day_bounds(
                    dt.date.fromisoformat(day), dt.date.fromisoformat(day), zone, hour
                )
                hi = min(hi, until)
                inside = [
                    s for s in spans if s.start_at < hi and (s.end_at is None or s.end_at > lo)
                ]
                out[day] = day_tally(found, inside, lo, hi)
            return out

        return await asyncio.to_thread(tally)

    async def _keep(self, tallies: dict[str, JSON]) -> None:
        """Keep closed days' tallies (a failure only costs the next report the time)."""

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            store.keep_day_tallies(tallies)
            return Written([], None)

        try:
            await self.hall.write(write)
        except StoreError as err:
            log.warning("could not keep the tallies of %d closed days: %s", len(tallies), err)

    async def command(self, command: c.GetReport) -> JSON:
        """Central's ``get_report``."""
        first, last = self.span(command.from_, command.to)
        return await self.report(first, last, VIEWS if command.by is None else (command.by,))

    async def daily_event(self, day: dt.date) -> Event:
        """The ``report.daily`` event of a closed business day."""
        body = await self.report(day, day, ("service", "window", "staff"))
        views = body["views"]
        return Event(
            ev.ReportDaily(
                day=day.isoformat(),
                hall=body["hall"],
                services=views["service"],
                windows=views["window"],
                staff=views["staff"],
                bad_ratings=body["bad_ratings"],
            ),
            await self.now(),
        )


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _runs(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) runs."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if runs and day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _staff_names(roster: Any) -> dict[str, str]:
    """Staff numbers to names from the roster central pushed (``set_staff``)."""
    names: dict[str, str] = {}
    if isinstance(roster, list):
        for member in roster:
            if isinstance(member, dict) and member.get("staff") and member.get("name"):
                names[str(member["staff"])] = str(member["name"])
    return names


# -- the daily event ------------------------------------------------------------------------


class DailyReports:
    """Sends ``report.daily`` once each ``day.closed`` is committed. An async context
    manager; a day whose report could not be written is logged (central can ask for it
    with ``get_report``)."""

    def __init__(self, reports: Reports) -> None:
        self.reports = reports
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> DailyReports:
        async with contextlib.AsyncExitStack() as stack:
            events = await stack.enter_async_context(self.reports.hall.events())
            tasks = await stack.enter_async_context(BackgroundTasks())
            follow = tasks.create_task(self._follow(events), name="daily-reports")
            stack.push_async_callback(stop, follow)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        while True:
            stored = await events.get()
            match stored.payload:
                case ev.DayClosed(day=day):
                    await self.send(dt.date.fromisoformat(day))

    async def send(self, day: dt.date) -> list[StoredEvent]:
        """Compute and append the day's ``report.daily`` (its own write)."""
        try:
            event = await self.reports.daily_event(day)

            def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[list[StoredEvent]]:
                return Written.of_events(store.append([event], clock_ok=clock_ok))

            return await self.reports.hall.write(write)
        except Exception:
            log.exception("could not send the report of %s; central can ask with get_report", day)
            return []


@contextlib.asynccontextmanager
async def hall_reports(hall: Hall) -> AsyncIterator[Reports]:
    """The hall's reports, with ``report.daily`` sent at every rollover."""
    reports = Reports(hall)
    async with DailyReports(reports):
        yield reports
