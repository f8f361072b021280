"""The demo's past: about a month of a busy hall, made at its first start, so that the
manager's page (/pages/manager) and ``hall-agent report`` have real figures to show.

Every day is played through the real queue engine with a controlled clock — citizens take
tickets (more in the morning and mid-afternoon, fewer at weekends), the staff on the day's
rota sign in, call, serve, mark no-shows, transfer, pause for lunch and sign out, citizens
rate (now and then a 差评 with its reason) — and each operation's outcome is committed with
the store's own ``commit``, one transaction per day: the events, the tickets and the
statistics records are exactly what the hall's writer would have left, and the real
rollover closes each day (its leftover tickets expire). Today is played up to now, then
the windows are signed out for the live simulation to take over.

Only into a store that holds nothing yet: a demo state that already has a history (an
earlier run) keeps it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError
from agent.core.events import Event
from agent.core.model import Priority, Source, business_day
from agent.runtime.store import Store

log = logging.getLogger(__name__)

# Share of the day's citizens arriving in each hour (09:00 .. 16:59).
ARRIVALS_BY_HOUR = {9: 12, 10: 17, 11: 14, 12: 6, 13: 7, 14: 16, 15: 16, 16: 12}
# Citizens on a weekday, and the share at weekends (Saturday, Sunday).
PER_WEEKDAY = (100, 140)
WEEKEND_SHARE = (0.6, 0.4)
# Mean minutes of business per service kind (lognormal around it), and the mix.
SERVICE_MINUTES = {"social": 9.0, "civil-affairs": 16.0, "household": 11.0, "elderly": 7.0}
SERVICE_MIX = {"social": 40, "household": 25, "civil-affairs": 15, "elderly": 20}
# 5 非常满意 .. 1 非常不满意, for the citizens who rate (most do).
LEVEL_WEIGHTS = {5: 70, 4: 17, 3: 6, 2: 5, 1: 2}
RATED_SHARE = 0.85
COMMENTS = ["等了很久", "材料要求没有一次说清", "工作人员态度一般", ""]
OPEN_AT = dt.time(8, 45)
CLOSE_AT = dt.time(17, 30)


@dataclasses.dataclass
class Filled:
    """What :func:`fill_history` made."""

    first: dt.date
    last: dt.date
    days: int
    tickets: int
    operations: int
    seconds: float


@dataclasses.dataclass
class _Window:
    id: str
    staff: str | None = None
    busy: bool = False
    paused: bool = False
    lunch: tuple[float, float] = (0.0, 0.0)
    lunch_done: bool = False
    closed: bool = False
    signed_in: bool = False


class _Day:
    """One business day played through the engine; each outcome committed to the store."""

    def __init__(
        self,
        engine: QueueEngine,
        store: Store,
        day: dt.date,
        rota: Sequence[str],
        rng: random.Random,
        until: dt.datetime | None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.day = day
        self.rng = rng
        self.zone = engine.config.hall.zone
        self.until = until
        self.reasons = list(engine.config.rating.reasons)
        self.windows = {
            w.id: _Window(w.id, staff=rota[i % len(rota)])
            for i, w in enumerate(engine.config.windows)
        }
        for i, window in enumerate(self.windows.values()):
            start = 12 * 60 + 30 * (i % 2)
            window.lunch = (start, start + 60)
        self.services = [s.id for s in engine.config.services]
        self.queue: list[tuple[float, int, str, str]] = []
        self.changes = Outcome()
        self.seq = 0
        self.tickets = 0
        self.operations = 0

    def at(self, minutes: float) -> dt.datetime:
        return dt.datetime.combine(self.day, dt.time(0), self.zone) + dt.timedelta(minutes=minutes)

    def later(self, minutes: float, kind: str, what: str) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (minutes, self.seq, kind, what))

    def apply(self, minutes: float, operation: op.Operation) -> Outcome | None:
        """Apply one operation (None: refused; what it changed on the way is kept)."""
        now = self.at(minutes)
        self.operations += 1
        try:
            outcome = self.engine.apply(operation, now)
        except QueueError:
            self._keep(self.engine.pending)
            return None
        self._keep(outcome)
        return outcome

    def _keep(self, outcome: Outcome) -> None:
        """The day's changes, in order: its events, and its records as they end."""
        day = self.changes
        day.events.extend(outcome.events)
        day.tickets.update(outcome.tickets)
        day.windows.update(outcome.windows)
        day.hall_changed = day.hall_changed or outcome.hall_changed

    def commit(self) -> None:
        """The day's changes in one transaction: its statistics records from its events,
        its tickets, windows and counters as they ended. A past day's events stay out of
        the outbox (central never receives a simulated past); today's go in as the hall's
        writer would have put them."""
        store = self.store
        if self.until is not None:
            store.commit(self.changes, self.engine.hall)
            return
        with store.group():
            store.record_stats(self.changes.events)
            store.commit(self.changes, self.engine.hall, events=[])

    def play(self) -> None:
        rng = self.rng
        weekday = self.day.weekday()
        citizens = rng.randint(*PER_WEEKDAY)
        if weekday >= 5:
            citizens = int(citizens * WEEKEND_SHARE[weekday - 5])
        hours, weights = zip(*ARRIVALS_BY_HOUR.items(), strict=True)
        for hour in rng.choices(hours, weights, k=citizens):
            self.later(hour * 60 + rng.uniform(0, 60), "arrive", "")
        open_at = OPEN_AT.hour * 60 + OPEN_AT.minute
        close_at = CLOSE_AT.hour * 60 + CLOSE_AT.minute
        cutoff = None
        if self.until is not None:
            local = self.until.astimezone(self.zone)
            cutoff = (local - self.at(0)).total_seconds() / 60
        if cutoff is not None and cutoff <= open_at - 15:
            return  # today has not begun yet: the running hall opens it
        self.apply(open_at - 15, op.Tick())  # the day opens: yesterday closes
        for window in self.windows.values():
            self.later(open_at + rng.uniform(0, 10), "sign_in", window.id)
            self.later(window.lunch[0], "lunch", window.id)
            self.later(close_at, "close", window.id)
        while self.queue:
            minutes, _, kind, what = heapq.heappop(self.queue)
            if cutoff is not None and minutes >= cutoff:
                self.stop(cutoff)
                return
            getattr(self, f"_{kind}")(minutes, what)

    def stop(self, minutes: float) -> None:
        """Today, at the present: every window finishes what it does and signs out (the
        live simulation signs in again)."""
        for window in self.windows.values():
            if window.busy:
                self.apply(minutes, op.Finish(window=window.id))
            if window.signed_in and not window.closed:
                self.apply(minutes, op.SignOut(window=window.id))

    # -- what happens --------------------------------------------------------------------

    def _arrive(self, minutes: float, _: str) -> None:
        rng = self.rng
        service = rng.choices(self.services, [SERVICE_MIX.get(s, 10) for s in self.services])[0]
        elderly = rng.random() < 0.12
        take = op.Take(
            service=service,
            source=rng.choices(
                [Source.TOUCH, Source.ID_CARD, Source.QR, Source.BUTTON], [50, 25, 15, 10]
            )[0],
            priority=Priority.ELDERLY if elderly else Priority.NORMAL,
            granted_by="self" if elderly else None,
        )
        outcome = self.apply(minutes, take)
        if outcome is None or outcome.ticket is None:
            return
        self.tickets += 1
        if rng.random() < 0.02:  # gave up waiting
            self.later(minutes + rng.uniform(10, 40), "cancel", outcome.ticket.number)
        for window in self.windows.values():
            if not (window.busy or window.paused or window.closed or window.staff is None):
                self.later(minutes + rng.uniform(0.2, 1.0), "free", window.id)

    def _cancel(self, minutes: float, number: str) -> None:
        self.apply(minutes, op.Cancel(number=number, reason="citizen left"))

    def _sign_in(self, minutes: float, window_id: str) -> None:
        window = self.windows[window_id]
        assert window.staff is not None
        self.apply(minutes, op.SignIn(window=window_id, staff=window.staff))
        window.signed_in = True
        self.later(minutes + 0.5, "free", window_id)

    def _lunch(self, minutes: float, window_id: str) -> None:
        window = self.windows[window_id]
        if not window.busy and not window.closed:
            self._pause(minutes, window)

    def _pause(self, minutes: float, window: _Window) -> None:
        window.paused, window.lunch_done = True, True
        self.apply(minutes, op.Pause(window=window.id, reason="午休"))
        self.later(max(window.lunch[1], minutes + 30), "resume", window.id)

    def _resume(self, minutes: float, window_id: str) -> None:
        window = self.windows[window_id]
        window.paused = False
        self.apply(minutes, op.Resume(window=window_id))
        self._free(minutes, window_id)

    def _close(self, minutes: float, window_id: str) -> None:
        window = self.windows[window_id]
        if not window.busy and not window.closed:
            window.closed = True
            self.apply(minutes, op.SignOut(window=window_id))

    def _free(self, minutes: float, window_id: str) -> None:
        """The window is free: lunch, closing, or the next citizen."""
        rng = self.rng
        window = self.windows[window_id]
        window.busy = False
        if window.paused or window.closed:
            return
        close_at = CLOSE_AT.hour * 60 + CLOSE_AT.minute
        if minutes >= close_at:
            self._close(minutes, window_id)
            return
        if not window.lunch_done and minutes >= window.lunch[0]:
            self._pause(minutes, window)
            return
        outcome = self.apply(minutes, op.CallNext(window=window_id))
        if outcome is None or outcome.ticket is None:
            return  # nobody waiting: the next arrival frees it again
        window.busy = True
        service = outcome.ticket.service
        fate = rng.random()
        if fate < 0.04:  # not there
            self.later(minutes + 2, "no_show", window_id)
            return
        if fate < 0.07:  # the wrong queue: sent on to another service's
            self.later(minutes + 3, "transfer", window_id)
            return
        mean = SERVICE_MINUTES.get(service, 7.0)
        took = min(rng.lognormvariate(0, 0.45) * mean, mean * 4)
        self.later(minutes + took, "finish", window_id)

    def _no_show(self, minutes: float, window_id: str) -> None:
        self.apply(minutes, op.NoShow(window=window_id))
        self._free(minutes + 0.5, window_id)

    def _transfer(self, minutes: float, window_id: str) -> None:
        current = self.engine.windows[window_id].current
        ticket = self.engine.tickets.get(current) if current else None
        others = [s for s in self.services if ticket is None or s != ticket.service]
        self.apply(minutes, op.Transfer(window=window_id, service=self.rng.choice(others)))
        self._free(minutes + 0.5, window_id)

    def _finish(self, minutes: float, window_id: str) -> None:
        rng = self.rng
        self.apply(minutes, op.Finish(window=window_id))
        if rng.random() < RATED_SHARE and self.engine.windows[window_id].rating is not None:
            levels, weights = zip(*LEVEL_WEIGHTS.items(), strict=True)
            level = rng.choices(levels, weights)[0]
            reasons: tuple[str, ...] = ()
            comment = ""
            if level <= 2 and self.reasons:
                reasons = tuple(
                    rng.sample(self.reasons, k=min(len(self.reasons), rng.choice([1, 1, 2])))
                )
                comment = rng.choice(COMMENTS)
            rate = op.Rate(
                window=window_id, level=level, reasons=reasons, comment=comment, channel="keypad"
            )
            self.apply(minutes + rng.uniform(0.1, 0.4), rate)
        self._free(minutes + 0.5, window_id)


def fill_history(
    config: HallAgentConfig,
    roster: Sequence[dict[str, Any]],
    *,
    days: int = 30,
    now: dt.datetime | None = None,
    seed: int = 17,
) -> Filled | None:
    """Play ``days`` business days before today, and today up to ``now``, into the store
    of ``config`` (None, doing nothing, when it already holds anything)."""
    began = time.perf_counter()
    now = (now or dt.datetime.now(dt.UTC)).astimezone(config.hall.zone)
    today = business_day(now, config)
    first = today - dt.timedelta(days=days)
    store = Store.open(config.storage.path)
    try:
        if store.last_seq > 0:
            return None
        rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        start = dt.datetime.combine(first, OPEN_AT, config.hall.zone) - dt.timedelta(hours=1)
        # The past's tickets are not followed on phones: no place events for them.
        quiet = config.model_copy(
            update={
                "queue": config.queue.model_copy(update={"turn_near": None}),
                "ticket": config.ticket.model_copy(update={"qr_url": None}),
                "web": config.web.model_copy(update={"public_url": None}),
            }
        )
        engine = QueueEngine.fresh(quiet, start)
        store.append(
            [Event(ev.RosterSet(count=len(roster)), start)], settings={"staff": list(roster)}
        )
        staff = [str(member["staff"]) for member in roster]
        tickets = operations = 0
        for offset in range(days + 1):
            day = first + dt.timedelta(days=offset)
            # The day's rota: as many of the staff as there are windows, turn by turn.
            turn = offset % len(staff)
            rota = (staff[turn:] + staff[:turn])[: len(config.windows)]
            # As the hall after a restart: the open tickets only (the ended ones are saved).
            engine = QueueEngine(
                quiet,
                engine.hall,
                [t for t in engine.tickets.values() if t.status.is_open],
                engine.windows.values(),
            )
            played = _Day(engine, store, day, rota, rng, now if day == today else None)
            played.play()
            played.commit()
            tickets += played.tickets
            operations += played.operations
    finally:
        store.close()
    filled = Filled(first, today, days, tickets, operations, time.perf_counter() - began)
    log.info(
        "the demo's past: %d days from %s, %d tickets, %d operations in %.1f s",
        days,
        first,
        tickets,
        operations,
        filled.seconds,
    )
    return filled
