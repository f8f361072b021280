"""Properties of the queue engine over random days in the hall, checked against SQLite.

A state machine drives random operations from several windows while a clock moves
forward and jumps back and forth across business days. Every outcome (also the partial
one a refusal leaves, as the hall commits it) goes to a real store, and after every step
the engine rebuilt from that store must equal the live one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError
from agent.core.model import HallCounters, Priority, Ticket, TicketStatus, WindowState, business_day
from agent.runtime.store import Store

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=SHANGHAI)
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def hall_config(storage: Path, aging_minutes: int | None) -> HallAgentConfig:
    return HallAgentConfig.model_validate(
        {
            "hall": {"id": "hd-prop-001", "name": "属性测试大厅", "day_start_hour": 4},
            "queue": {"recall_limit": 1, "aging_minutes": aging_minutes},
            "services": [
                {
                    "id": "general",
                    "name": "综合业务",
                    "prefix": "A",
                    "hours": [
                        {"start": "08:00", "end": "12:00", "days": ALL_DAYS},
                        {"start": "13:00", "end": "18:00", "days": ALL_DAYS},
                    ],
                },
                {"id": "social", "name": "社保医保", "prefix": "B", "width": 2},
                {"id": "fund", "name": "公积金", "prefix": "C", "daily_cap": 6},
            ],
            "windows": [
                {"id": "w1", "name": "1号窗口", "number": 1, "services": ["general", "social"]},
                {"id": "w2", "name": "2号窗口", "number": 2, "services": ["social", "fund"]},
                {"id": "w3", "name": "3号窗口", "number": 3, "services": ["fund", "general"]},
            ],
            "storage": {"path": str(storage)},
        }
    )


WINDOWS = st.sampled_from(["w1", "w2", "w3"])
SERVICES = st.sampled_from(["general", "social", "fund"])
BIRTH_DATES = st.one_of(st.none(), st.sampled_from([dt.date(1950, 6, 1), dt.date(1985, 2, 3)]))


def is_green(ticket: Ticket) -> bool:
    return ticket.priority.is_green


class QueueDays(RuleBasedStateMachine):
    """The live engine, a real store behind it, and a model of what must hold."""

    aging_minutes: int | None = None
    base: Path

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="queue-", dir=self.base))
        self.config = hall_config(self.directory, self.aging_minutes)
        self.now = START
        self.engine = QueueEngine.fresh(self.config, self.now)
        self.first_day = self.engine.hall.day
        self.store = Store.open(self.directory)
        self.issued: set[tuple[str, str]] = set()  # (business day, number)
        self.counts: Counter[tuple[str, str]] = Counter()  # (business day, service)
        self.arrival: dict[str, int] = {}  # ticket id -> issue order
        self.transferred: set[str] = set()
        self.closed_days: Counter[str] = Counter()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- running operations as the hall does ---------------------------------------------

    def apply(self, op: Any) -> Outcome | None:
        day_before = self.engine.hall.day
        try:
            out: Outcome | None = op(self.now)
        except QueueError as err:
            out = None
            self.check_refusal(err)
        outcome = out if out is not None else self.engine.pending
        self.store.commit(outcome, self.engine.hall)
        self.check_events(outcome, day_before)
        return out

    @staticmethod
    def check_refusal(err: QueueError) -> None:
        assert err.message.strip(), "a refusal must say why"
        assert str(err) == err.message

    def check_events(self, out: Outcome, day_before: dt.date) -> None:
        day = self.engine.hall.day
        assert day >= day_before, "the business day went backwards"
        closed = [e for e in out.events if e.type == "day.closed"]
        if day > day_before:
            assert len(closed) == 1
            assert closed[0].data["day"] == day_before.isoformat()
            assert closed[0].data["next_day"] == day.isoformat()
            index = out.events.index(closed[0])
            expired = [e for e in out.events[:index] if e.type == "ticket.expired"]
            assert len(expired) == closed[0].data["expired"]
            assert all(e.data["day"] < day.isoformat() for e in expired)
        else:
            assert closed == []
        for event in closed:
            self.closed_days[event.data["day"]] += 1
            assert self.closed_days[event.data["day"]] == 1, "a day was closed twice"
        for event in out.events:
            if event.type == "ticket.issued":
                key = (event.data["day"], event.data["ticket"])
                assert key not in self.issued, f"{key} was issued twice"
                self.issued.add(key)
                service = self.config.service(event.data["service"])
                self.counts[(event.data["day"], service.id)] += 1
                count = self.counts[(event.data["day"], service.id)]
                assert event.data["day"] == day.isoformat()
                assert event.data["ticket"] == f"{service.prefix}{count:0{service.width}d}"
                self.arrival[event.data["ticket_id"]] = len(self.arrival)
            elif event.type == "ticket.transferred":
                self.transferred.add(event.data["ticket_id"])

    # -- the clock -------------------------------------------------------------------------

    @initialize(start_hour=st.integers(0, 23))
    def start(self, start_hour: int) -> None:
        self.now = self.now.replace(hour=start_hour)

    @rule(
        minutes=st.one_of(
            st.integers(0, 30),  # the usual: a few minutes between operations
            st.integers(60, 26 * 60),  # overnight, or a long pause
            st.integers(-26 * 60, -1),  # the clock is set back (NTP, a Pi without RTC)
        )
    )
    def clock_moves(self, minutes: int) -> None:
        self.now += dt.timedelta(minutes=minutes)
        self.apply(self.engine.tick)

    # -- issuing ---------------------------------------------------------------------------

    @rule(
        service=SERVICES,
        priority=st.sampled_from(Priority),
        id_hash=st.sampled_from([None, None, "id-1", "id-2"]),
        birth=BIRTH_DATES,
        count=st.integers(1, 3),
    )
    def take(
        self,
        service: str,
        priority: Priority,
        id_hash: str | None,
        birth: dt.date | None,
        count: int,
    ) -> None:
        for _ in range(count):
            self.apply(
                lambda now: self.engine.take(
                    service, now, priority=priority, id_hash=id_hash, birth_date=birth
                )
            )

    @rule(pick=st.integers(0, 200))
    def cancel(self, pick: int) -> None:
        self.apply(lambda now: self.engine.cancel(self.some_number(pick), now))

    def some_number(self, pick: int) -> str:
        today = sorted(n for d, n in self.issued if d == self.engine.hall.day.isoformat())
        return today[pick % len(today)] if today and pick < 190 else "Z99"

    # -- window operations -----------------------------------------------------------------

    @rule(window=WINDOWS)
    def call_next(self, window: str) -> None:
        before = self.waiting_now()
        out = self.apply(lambda now: self.engine.call_next(window, now))
        if out is None or out.result["ticket"] is None:
            if out is not None:
                expected = self.engine.waiting()
                served = self.config.window(window).services
                assert not [t for t in expected if t.service in served]
            return
        ticket = self.engine.tickets[out.result["ticket"]["id"]]
        assert ticket.id in before
        self.check_routing(window, ticket)

    def waiting_now(self) -> set[str]:
        # Waiting tickets as the next operation will see them (after any rollover).
        if business_day(self.now, self.config) > self.engine.hall.day:
            return set()
        return {t.id for t in self.engine.waiting()}

    def check_routing(self, window: str, ticket: Ticket) -> None:
        services = self.config.window(window).services
        rank = services.index(ticket.service)
        others = [t for t in self.engine.waiting() if t.service in services]
        if not is_green(ticket):
            assert not [t.number for t in others if is_green(t)], "green channel skipped"
        if self.aging_minutes is not None and not is_green(ticket):
            return  # an aged ticket may jump the service order and arrival order
        for other in others:
            if is_green(other) != is_green(ticket):
                continue
            assert services.index(other.service) >= rank, "the window's service order"
            if (
                other.service == ticket.service
                and ticket.id not in self.transferred
                and other.id not in self.transferred
            ):
                assert self.arrival[other.id] > self.arrival[ticket.id], "FIFO"

    @rule(window=WINDOWS, pick=st.integers(0, 200))
    def call_number(self, window: str, pick: int) -> None:
        self.apply(lambda now: self.engine.call_number(window, self.some_number(pick), now))

    def some_window(self, pick: int) -> str:
        """Mostly a window with a called ticket (so its operations apply), else any."""
        busy = sorted(w.id for w in self.engine.windows.values() if w.current is not None)
        if busy and pick < 8:
            return busy[pick % len(busy)]
        return f"w{pick % 3 + 1}"

    @rule(
        pick=st.integers(0, 9),
        operation=st.sampled_from(
            ["recall", "start_serving", "finish", "no_show", "hold", "pause", "resume", "sign_out"]
        ),
    )
    def at_the_window(self, pick: int, operation: str) -> None:
        window = self.some_window(pick)
        self.apply(lambda now: getattr(self.engine, operation)(window, now))

    @rule(pick=st.integers(0, 9), service=SERVICES, front=st.booleans())
    def transfer(self, pick: int, service: str, front: bool) -> None:
        window = self.some_window(pick)
        self.apply(lambda now: self.engine.transfer(window, service, now, front=front))

    @rule(pick=st.integers(0, 9))
    def call_back_held(self, pick: int) -> None:
        held = sorted(
            (t.window or "", t.number)
            for t in self.engine.open_tickets()
            if t.status is TicketStatus.HELD
        )
        window, number = held[pick % len(held)] if held else (f"w{pick % 3 + 1}", "A001")
        self.apply(lambda now: self.engine.call_number(window, number, now))

    @rule(window=WINDOWS, staff=st.sampled_from(["s-1", "s-2", "s-3"]))
    def sign_in(self, window: str, staff: str) -> None:
        self.apply(lambda now: self.engine.sign_in(window, staff, now))

    @rule(window=WINDOWS, staff=st.sampled_from(["s-1", "s-2", "s-3", None]))
    def sign_out(self, window: str, staff: str | None) -> None:
        self.apply(lambda now: self.engine.sign_out(window, now, staff=staff))

    @rule(window=WINDOWS, staff=st.sampled_from(["s-1", "s-2", "s-3"]))
    def next_pressed_by(self, window: str, staff: str) -> None:
        self.apply(lambda now: self.engine.call_next(window, now, staff=staff))

    # -- what must always hold ---------------------------------------------------------------

    @invariant()
    def staff_are_at_one_window_at_most_two_together(self) -> None:
        seen: set[str] = set()
        for window in self.engine.windows.values():
            here = window.signed_in()
            assert len(here) <= 2, f"{window.id}: {here}"
            assert not seen & set(here), f"{seen & set(here)} signed in at two windows"
            seen |= set(here)
            if here:  # someone signed in: the window is open (or paused)
                assert window.state.value != "closed", window.id
            current = None if window.current is None else self.engine.tickets[window.current]
            if current is not None and current.staff is not None and here:
                # Who serves the window's ticket is signed in there.
                assert current.staff in here, (window.id, current.staff, here)

    @invariant()
    def each_called_ticket_is_at_one_window(self) -> None:
        seen: set[str] = set()
        for window in self.engine.windows.values():
            if window.current is None:
                continue
            assert window.current not in seen, f"{window.current} is at two windows"
            seen.add(window.current)
            ticket = self.engine.tickets[window.current]
            assert ticket.status in (TicketStatus.CALLED, TicketStatus.SERVING)
            assert ticket.window == window.id
        for ticket in self.engine.tickets.values():
            if ticket.status in (TicketStatus.CALLED, TicketStatus.SERVING):
                assert ticket.id in seen, f"{ticket.number} is called but at no window"

    @invariant()
    def yesterday_is_closed(self) -> None:
        for ticket in self.engine.open_tickets():
            assert ticket.day == self.engine.hall.day
        for day, service in self.counts:
            if day == self.engine.hall.day.isoformat():
                assert self.engine.hall.counters[service] == self.counts[(day, service)]

    @invariant()
    def every_waiting_ticket_is_reachable(self) -> None:
        waiting = {t.id for t in self.engine.waiting()}
        reached: set[str] = set()
        now = self.within_business_day()
        for window in self.config.windows:
            sim = self.copy_engine()
            sim.windows[window.id].state = WindowState.OPEN
            expected = {t.id for t in sim.waiting() if t.service in window.services}
            calls = 0
            while (out := sim.call_next(window.id, now)).result["ticket"] is not None:
                reached.add(out.result["ticket"]["id"])
                calls += 1
                assert calls <= len(expected)
            assert calls == len(expected)
        assert waiting <= reached

    def within_business_day(self) -> dt.datetime:
        """Now, or the last moment of the engine's day if the clock is already past it."""
        day = self.engine.hall.day + dt.timedelta(days=1)
        end = dt.datetime.combine(day, dt.time(self.config.hall.day_start_hour), SHANGHAI)
        return min(self.now, end - dt.timedelta(microseconds=1))

    def copy_engine(self) -> QueueEngine:
        hall = self.engine.hall
        return QueueEngine(
            self.config,
            HallCounters(hall.day, hall.next_rank, dict(hall.counters), dict(hall.durations)),
            [dataclasses.replace(t) for t in self.engine.tickets.values()],
            [dataclasses.replace(w) for w in self.engine.windows.values()],
        )

    @invariant()
    def the_store_replays_to_the_same_queue(self) -> None:
        loaded = self.store.load()
        replayed = QueueEngine(
            self.config,
            loaded.hall or HallCounters(day=self.first_day),
            loaded.tickets,
            loaded.windows,
        )
        assert replayed.snapshot(self.now) == self.engine.snapshot(self.now)
        assert replayed.hall.to_json() == self.engine.hall.to_json()
        live = {k: t.to_json() for k, t in self.engine.tickets.items()}
        assert {k: t.to_json() for k, t in replayed.tickets.items()} == live
        assert {k: w.to_json() for k, w in replayed.windows.items()} == {
            k: w.to_json() for k, w in self.engine.windows.items()
        }

    @invariant()
    def the_log_is_gapless(self) -> None:
        seqs = [e.seq for e in self.store.events(1, 100_000)]
        assert seqs == list(range(1, self.store.last_seq + 1))


def test_queue_rules_hold_over_random_days(tmp_path: Path) -> None:
    class Machine(QueueDays):
        base = tmp_path

    run_state_machine_as_test(Machine, settings=SETTINGS)


def test_queue_rules_hold_with_aging(tmp_path: Path) -> None:
    class Machine(QueueDays):
        base = tmp_path
        aging_minutes = 30

    run_state_machine_as_test(Machine, settings=SETTINGS)
