"""The queue engine: a pure state machine over the hall's tickets and windows.

No I/O and no clocks: every operation takes the wall-clock time ``now`` as data and
returns an :class:`Outcome` (the events it produced and which records it changed).
The store writes an outcome's changes and events in one transaction; the agent runs
operations through one serialized writer, so the engine itself needs no locking.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from agent.config import HallAgentConfig, Service, Window

JSON = dict[str, Any]


class QueueError(Exception):
    """An operation the hall's rules refuse. The message is for the person who asked."""

    status = 409
    code = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(QueueError):
    status = 404
    code = "not_found"


class Refused(QueueError):
    """A rule of the hall says no (closed, cap reached, wrong state, ...)."""


class TicketStatus(enum.StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    SERVING = "serving"
    HELD = "held"
    FINISHED = "finished"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in OPEN_STATUSES


OPEN_STATUSES = frozenset(
    {TicketStatus.WAITING, TicketStatus.CALLED, TicketStatus.SERVING, TicketStatus.HELD}
)


class Priority(enum.StrEnum):
    """Priority classes. Everything but ``normal`` is served before normal tickets."""

    NORMAL = "normal"
    ELDERLY = "elderly"
    DISABLED = "disabled"
    VETERAN = "veteran"
    APPOINTMENT = "appointment"

    @property
    def is_green(self) -> bool:
        return self is not Priority.NORMAL


class Source(enum.StrEnum):
    BUTTON = "button"
    TOUCH = "touch"
    QR = "qr"
    ID_CARD = "id_card"
    CENTRAL = "central"
    API = "api"


class WindowState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    PAUSED = "paused"


class EventClass(enum.IntEnum):
    """Retention classes of the outbox: higher survives longer when storage is full."""

    CHATTER = 0
    OPERATIONAL = 1
    BUSINESS = 2


class RatingLevel(enum.IntEnum):
    """The five levels of the national 好差评 scheme (GB/T 39734-2020 §7.3)."""

    VERY_SATISFIED = 5
    SATISFIED = 4
    FAIRLY_SATISFIED = 3
    DISSATISFIED = 2
    VERY_DISSATISFIED = 1

    @property
    def label(self) -> str:
        return RATING_LABELS[self]

    @property
    def is_bad(self) -> bool:
        """差评: a reason is required and central follows it up."""
        return self <= RatingLevel.DISSATISFIED


RATING_LABELS: dict[RatingLevel, str] = {
    RatingLevel.VERY_SATISFIED: "非常满意",
    RatingLevel.SATISFIED: "满意",
    RatingLevel.FAIRLY_SATISFIED: "基本满意",
    RatingLevel.DISSATISFIED: "不满意",
    RatingLevel.VERY_DISSATISFIED: "非常不满意",
}
# A citizen's free-text reason on the tablet.
MAX_RATING_COMMENT = 200


@dataclasses.dataclass(slots=True)
class Ticket:
    id: str
    day: dt.date
    number: str
    service: str
    issued_service: str
    priority: Priority
    source: Source
    issued_at: dt.datetime
    rank: int
    status: TicketStatus = TicketStatus.WAITING
    window: str | None = None
    staff: str | None = None
    id_hash: str | None = None
    called_count: int = 0
    recalls: int = 0
    called_at: dt.datetime | None = None
    serving_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    # Issued while the clock was not trusted: which business day it belongs to is unknown
    # until the clock is set (see QueueEngine._roll).
    undated: bool = False
    # The citizen's satisfaction rating (好差评), at most one per ticket.
    rating: JSON | None = None

    def to_json(self) -> JSON:
        out: JSON = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.datetime | dt.date):
                value = value.isoformat()
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: JSON) -> Ticket:
        def when(key: str) -> dt.datetime | None:
            raw = data.get(key)
            return None if raw is None else dt.datetime.fromisoformat(raw)

        issued = when("issued_at")
        assert issued is not None
        return cls(
            id=data["id"],
            day=dt.date.fromisoformat(data["day"]),
            number=data["number"],
            service=data["service"],
            issued_service=data["issued_service"],
            priority=Priority(data["priority"]),
            source=Source(data["source"]),
            issued_at=issued,
            rank=int(data["rank"]),
            status=TicketStatus(data["status"]),
            window=data.get("window"),
            staff=data.get("staff"),
            id_hash=data.get("id_hash"),
            called_count=int(data.get("called_count", 0)),
            recalls=int(data.get("recalls", 0)),
            called_at=when("called_at"),
            serving_at=when("serving_at"),
            ended_at=when("ended_at"),
            undated=bool(data.get("undated", False)),
            rating=data.get("rating"),
        )

    def public(self) -> JSON:
        """The ticket as shown to screens, the API and central (no identity hash)."""
        out = self.to_json()
        out.pop("id_hash")
        out.pop("rank")
        out.pop("undated")
        return out


@dataclasses.dataclass(slots=True)
class WindowStatus:
    id: str
    state: WindowState = WindowState.CLOSED
    staff: str | None = None
    staff_name: str | None = None
    current: str | None = None
    # The rating the window's rater waits for: ticket, staff, when it was asked.
    rating: JSON | None = None

    def to_json(self) -> JSON:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: JSON) -> WindowStatus:
        return cls(
            id=data["id"],
            state=WindowState(data["state"]),
            staff=data.get("staff"),
            staff_name=data.get("staff_name"),
            current=data.get("current"),
            rating=data.get("rating"),
        )


@dataclasses.dataclass(slots=True)
class HallCounters:
    """Hall-wide state that is not a ticket or a window."""

    day: dt.date
    next_rank: int = 1
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    durations: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> JSON:
        return {
            "day": self.day.isoformat(),
            "next_rank": self.next_rank,
            "counters": dict(self.counters),
            "durations": {k: list(v) for k, v in self.durations.items()},
        }

    @classmethod
    def from_json(cls, data: JSON) -> HallCounters:
        return cls(
            day=dt.date.fromisoformat(data["day"]),
            next_rank=int(data["next_rank"]),
            counters={k: int(v) for k, v in data["counters"].items()},
            durations={k: [float(x) for x in v] for k, v in data["durations"].items()},
        )


# Every event type the hall emits: the contract documents (hallctl/asyncapi.py) are
# generated from this list, and an event of another type cannot be made.
EVENT_TYPES: tuple[str, ...] = (
    *(
        f"ticket.{kind}"
        for kind in (
            "issued",
            "called",
            "recalled",
            "serving",
            "finished",
            "no_show",
            "held",
            "returned",
            "transferred",
            "cancelled",
            "expired",
            "print_failed",
            "reprinted",
        )
    ),
    *(f"window.{kind}" for kind in ("opened", "paused", "resumed", "closed")),
    "staff.signed_in",
    "staff.signed_out",
    "staff.roster_set",
    "rating.requested",
    "rating.submitted",
    "rating.timed_out",
    "identity.read",
    "appointments.set",
    "document.captured",
    "notice.shown",
    "device.changed",
    "day.closed",
    "config.applied",
    "config.rejected",
    "outbox.evicted",
)
_KNOWN_EVENTS = frozenset(EVENT_TYPES)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    type: str
    at: dt.datetime
    data: JSON
    cls: EventClass = EventClass.BUSINESS

    def __post_init__(self) -> None:
        if self.type not in _KNOWN_EVENTS:
            raise ValueError(f"unknown event type {self.type!r}: add it to EVENT_TYPES")


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one operation did: its result, its events, and the records to persist."""

    result: JSON = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)
    tickets: dict[str, Ticket] = dataclasses.field(default_factory=dict)
    windows: dict[str, WindowStatus] = dataclasses.field(default_factory=dict)
    hall_changed: bool = False
    stored: list[Any] = dataclasses.field(default_factory=list)  # filled in once committed


def business_day(now: dt.datetime, config: HallAgentConfig) -> dt.date:
    """The business day ``now`` belongs to, in the hall's zone, starting at its start hour."""
    local = now.astimezone(config.hall.zone)
    return (local - dt.timedelta(hours=config.hall.day_start_hour)).date()


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the engine needs time-zone-aware datetimes")


class QueueEngine:
    """The hall's queue. Mutates its state in place; every call returns an Outcome."""

    def __init__(
        self,
        config: HallAgentConfig,
        hall: HallCounters,
        tickets: Iterable[Ticket] = (),
        windows: Iterable[WindowStatus] = (),
    ) -> None:
        self.config = config
        self.hall = hall
        self.tickets: dict[str, Ticket] = {t.id: t for t in tickets}
        self.windows: dict[str, WindowStatus] = {w.id: w for w in windows}
        for w in config.windows:
            self.windows.setdefault(w.id, WindowStatus(id=w.id))
        self._out = Outcome()
        # Whether ``now`` can be believed; the hall sets it before each operation from its
        # clock check. An untrusted clock never changes the business day.
        self.clock_trusted = True

    @classmethod
    def fresh(cls, config: HallAgentConfig, now: dt.datetime) -> QueueEngine:
        return cls(config, HallCounters(day=business_day(now, config)))

    # -- bookkeeping -------------------------------------------------------------------

    @property
    def pending(self) -> Outcome:
        """What the operation in progress (or the last one) changed so far."""
        return self._out

    def _begin(self, now: dt.datetime) -> Outcome:
        _require_aware(now)
        self._out = Outcome()
        self._roll(now)
        return self._out

    def _touch(self, ticket: Ticket) -> None:
        self._out.tickets[ticket.id] = ticket

    def _touch_window(self, window: WindowStatus) -> None:
        self._out.windows[window.id] = window

    def _emit(
        self, kind: str, now: dt.datetime, data: JSON, cls: EventClass = EventClass.BUSINESS
    ) -> None:
        self._out.events.append(Event(kind, now, data, cls))

    def _ticket_event(self, kind: str, ticket: Ticket, now: dt.datetime, **extra: Any) -> None:
        data: JSON = {
            "ticket": ticket.number,
            "ticket_id": ticket.id,
            "service": ticket.service,
            "day": ticket.day.isoformat(),
            "status": ticket.status.value,
            "priority": ticket.priority.value,
        }
        if ticket.window is not None:
            data["window"] = ticket.window
        if ticket.staff is not None:
            data["staff"] = ticket.staff
        data.update(extra)
        self._emit(f"ticket.{kind}", now, data)

    # -- lookups -----------------------------------------------------------------------

    def _window_config(self, window_id: str) -> Window:
        try:
            return self.config.window(window_id)
        except KeyError:
            known = ", ".join(w.id for w in self.config.windows)
            raise NotFound(f"there is no window {window_id!r}; the windows are {known}") from None

    def _service(self, service_id: str) -> Service:
        try:
            return self.config.service(service_id)
        except KeyError:
            known = ", ".join(f"{s.id} ({s.name})" for s in self.config.services)
            raise NotFound(
                f"there is no service {service_id!r}; the services are {known}"
            ) from None

    def _by_number(self, number: str) -> Ticket:
        wanted = number.strip().upper()
        for t in self.tickets.values():
            if t.day == self.hall.day and t.number == wanted:
                return t
        raise NotFound(f"no ticket {wanted} was issued today ({self.hall.day.isoformat()})")

    def _current(self, window: WindowStatus) -> Ticket | None:
        return None if window.current is None else self.tickets.get(window.current)

    def _require_current(self, window_id: str) -> tuple[WindowStatus, Ticket]:
        self._window_config(window_id)
        window = self.windows[window_id]
        ticket = self._current(window)
        if ticket is None:
            raise Refused(f"window {window_id} has no called ticket; call one first")
        return window, ticket

    def waiting(self, service_id: str | None = None) -> list[Ticket]:
        return [
            t
            for t in self.tickets.values()
            if t.status is TicketStatus.WAITING and (service_id is None or t.service == service_id)
        ]

    # -- business day ------------------------------------------------------------------

    def _roll(self, now: dt.datetime) -> None:
        """Close the business day if ``now`` is in a later one.

        The day only moves forward: a clock that jumps back never reopens an old day or
        resets counters twice; tickets are then counted on the newest day seen.

        And only a trusted clock moves it: a Pi that booted with a wrong date keeps the
        last day it knew (so a date in the future cannot skip the real next day), and when
        the clock is set the day closes once. Tickets issued meanwhile (``undated``) belong
        to the citizens in the hall now: they move into the new day instead of expiring,
        and the new day's numbers continue after theirs, so no number is shown twice.
        """
        today = business_day(now, self.config)
        if today <= self.hall.day or not self.clock_trusted:
            return
        closing = self.hall.day
        expired = 0
        carried: list[Ticket] = []
        for ticket in sorted(self.tickets.values(), key=_arrival):
            if ticket.status.is_open and ticket.undated:
                ticket.day = today
                ticket.undated = False
                self._touch(ticket)
                carried.append(ticket)
            elif ticket.status.is_open:
                ticket.status = TicketStatus.EXPIRED
                ticket.ended_at = now
                self._touch(ticket)
                self._ticket_event("expired", ticket, now, reason="business day closed")
                expired += 1
        for window in self.windows.values():
            current = self._current(window)
            if window.current is not None and (current is None or current.day != today):
                window.current = None
                self._touch_window(window)
        issued = dict(self.hall.counters)
        served = sum(
            1
            for t in self.tickets.values()
            if t.day == closing and t.status is TicketStatus.FINISHED
        )
        self.hall.day = today
        self.hall.counters = {}
        for ticket in carried:
            count = int("".join(ch for ch in ticket.number if ch.isdigit()) or 0)
            previous = self.hall.counters.get(ticket.issued_service, 0)
            self.hall.counters[ticket.issued_service] = max(previous, count)
        self._out.hall_changed = True
        closed: JSON = {
            "day": closing.isoformat(),
            "next_day": today.isoformat(),
            "issued": issued,
            "served": served,
            "expired": expired,
        }
        if carried:
            closed["carried"] = [t.number for t in carried]
        self._emit("day.closed", now, closed)
        # Closed days stay in the store (history is never deleted); memory keeps today.
        self.tickets = {k: t for k, t in self.tickets.items() if t.status.is_open}

    def tick(self, now: dt.datetime) -> Outcome:
        """Run time-driven rules (the business-day rollover)."""
        return self._begin(now)

    # -- issuing -----------------------------------------------------------------------

    def take(
        self,
        service_id: str,
        now: dt.datetime,
        *,
        source: Source = Source.API,
        priority: Priority = Priority.NORMAL,
        id_hash: str | None = None,
        birth_date: dt.date | None = None,
    ) -> Outcome:
        out = self._begin(now)
        service = self._service(service_id)
        local = now.astimezone(self.config.hall.zone)
        # An untrusted clock cannot tell office hours: a hall that is open with the wrong
        # date on its Pi still issues tickets (the cap and other rules still apply).
        if self.clock_trusted and not service.open_at(local):
            hours = ", ".join(
                f"{p.start:%H:%M}-{p.end:%H:%M} ({'/'.join(p.days)})" for p in service.hours
            )
            raise Refused(f"{service.name} is not issuing tickets now; hours: {hours}")
        issued = self.hall.counters.get(service.id, 0)
        if service.daily_cap is not None and issued >= service.daily_cap:
            raise Refused(
                f"{service.name} has reached today's limit of {service.daily_cap} tickets; "
                "please come back on the next working day"
            )
        if issued + 1 >= 10**service.width:
            raise Refused(
                f"{service.name} has used every {service.width}-digit number today; "
                "raise the service's width in the config"
            )
        if id_hash is not None and self.config.queue.one_waiting_ticket_per_id:
            for t in self.tickets.values():
                if t.id_hash == id_hash and t.service == service.id and t.status.is_open:
                    raise Refused(
                        f"this ID card already holds ticket {t.number} for {service.name}"
                    )
        if (
            priority is Priority.NORMAL
            and birth_date is not None
            and _age(birth_date, local.date()) >= self.config.queue.green_channel_age
        ):
            priority = Priority.ELDERLY
        count = issued + 1
        self.hall.counters[service.id] = count
        number = f"{service.prefix}{count:0{service.width}d}"
        ticket = Ticket(
            id=f"{self.hall.day:%Y%m%d}-{number}",
            day=self.hall.day,
            number=number,
            service=service.id,
            issued_service=service.id,
            priority=priority,
            source=source,
            issued_at=now,
            rank=self._next_rank(),
            id_hash=id_hash,
            undated=not self.clock_trusted,
        )
        self.tickets[ticket.id] = ticket
        self._touch(ticket)
        out.hall_changed = True
        ahead = self.people_ahead(ticket, now)
        wait = self.estimated_wait_minutes(service.id, ahead)
        self._ticket_event(
            "issued", ticket, now, source=source.value, ahead=ahead, wait_minutes=wait
        )
        waiting = len(self.waiting(service.id))
        out.result = {
            "ticket": ticket.public(),
            "service_name": service.name,
            "ahead": ahead,
            "wait_minutes": wait,
        }
        if service.waiting_warning is not None and waiting >= service.waiting_warning:
            out.result["warning"] = (
                f"{waiting} people are waiting for {service.name}; the wait will be long"
            )
        return out

    def _next_rank(self) -> int:
        rank = self.hall.next_rank
        self.hall.next_rank += 1
        self._out.hall_changed = True
        return rank

    def cancel(self, number: str, now: dt.datetime, *, reason: str = "") -> Outcome:
        out = self._begin(now)
        ticket = self._by_number(number)
        if ticket.status is not TicketStatus.WAITING:
            raise Refused(
                f"ticket {ticket.number} is {ticket.status.value}; "
                "only waiting tickets can be cancelled"
            )
        ticket.status = TicketStatus.CANCELLED
        ticket.ended_at = now
        self._touch(ticket)
        self._ticket_event("cancelled", ticket, now, reason=reason)
        out.result = {"ticket": ticket.public()}
        return out

    # -- routing -----------------------------------------------------------------------

    def _order_key(
        self, ticket: Ticket, window: Window, now: dt.datetime
    ) -> tuple[int, int, int, str]:
        service_rank = window.services.index(ticket.service)
        if ticket.priority.is_green:
            return (0, service_rank, *_arrival(ticket))
        aging = self.config.queue.aging_minutes
        if aging is not None and now - ticket.issued_at >= dt.timedelta(minutes=aging):
            return (1, 0, *_arrival(ticket))
        return (2, service_rank, *_arrival(ticket))

    def next_for(self, window_id: str, now: dt.datetime) -> Ticket | None:
        """The ticket "next" would call at this window now, without calling it."""
        window = self._window_config(window_id)
        candidates = [t for t in self.waiting() if t.service in window.services]
        if not candidates:
            return None
        return min(candidates, key=lambda t: self._order_key(t, window, now))

    # -- window operations -------------------------------------------------------------

    def _open_window(self, window: WindowStatus, now: dt.datetime) -> None:
        if window.state is WindowState.CLOSED:
            window.state = WindowState.OPEN
            self._touch_window(window)
            self._emit("window.opened", now, {"window": window.id, "staff": window.staff})

    def _finish_current(self, window: WindowStatus, now: dt.datetime, implicit: bool) -> None:
        ticket = self._current(window)
        if ticket is None:
            return
        if ticket.status is TicketStatus.HELD:
            window.current = None
            self._touch_window(window)
            return
        started = ticket.serving_at or ticket.called_at or now
        ticket.status = TicketStatus.FINISHED
        ticket.ended_at = now
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        minutes = max(0.0, (now - started).total_seconds() / 60)
        if self.clock_trusted and minutes <= _LONGEST_SERVICE_MINUTES:
            # A clock set between the call and the finish is no service time.
            self._record_duration(ticket.service, minutes)
        self._ticket_event("finished", ticket, now, minutes=round(minutes, 2), implicit=implicit)
        self._rating_after_finish(window, ticket, now, implicit=implicit)

    def _record_duration(self, service_id: str, minutes: float) -> None:
        keep = self.config.queue.service_time_window
        history = deque(self.hall.durations.get(service_id, []), maxlen=keep)
        history.append(round(minutes, 3))
        self.hall.durations[service_id] = list(history)
        self._out.hall_changed = True

    def _call(self, window: WindowStatus, ticket: Ticket, now: dt.datetime, kind: str) -> None:
        ticket.status = TicketStatus.CALLED
        ticket.window = window.id
        ticket.staff = window.staff
        ticket.called_count += 1
        # The recall limit counts per call: a no-show or held ticket called back starts afresh.
        ticket.recalls = 0
        ticket.called_at = now
        window.current = ticket.id
        self._touch(ticket)
        self._touch_window(window)
        config = self._window_config(window.id)
        self._ticket_event(kind, ticket, now, window_name=config.name, window_number=config.number)

    def _ready_window(self, window_id: str, now: dt.datetime) -> WindowStatus:
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.state is WindowState.PAUSED:
            raise Refused(f"window {window_id} is paused; resume it before calling")
        self._open_window(window, now)
        return window

    def call_next(self, window_id: str, now: dt.datetime) -> Outcome:
        """Finish the window's current ticket, if any, and call the next one."""
        out = self._begin(now)
        window = self._ready_window(window_id, now)
        ticket = self.next_for(window_id, now)
        self._finish_current(window, now, implicit=True)
        if ticket is None:
            out.result = {"ticket": None, "message": f"no one is waiting for window {window_id}"}
            return out
        self._call(window, ticket, now, "called")
        out.result = {"ticket": ticket.public()}
        return out

    def call_number(self, window_id: str, number: str, now: dt.datetime) -> Outcome:
        """Call a specific ticket: a waiting one, or one that missed its call (过号)."""
        out = self._begin(now)
        window = self._ready_window(window_id, now)
        ticket = self._by_number(number)
        config = self._window_config(window_id)
        if ticket.service not in config.services:
            raise Refused(
                f"window {window_id} does not serve {self._service(ticket.service).name} "
                f"(ticket {ticket.number}); transfer it or call it from a window that does"
            )
        callable_states = (TicketStatus.WAITING, TicketStatus.NO_SHOW, TicketStatus.HELD)
        if ticket.status not in callable_states:
            raise Refused(f"ticket {ticket.number} is {ticket.status.value} and cannot be called")
        if ticket.status is TicketStatus.HELD and ticket.window != window_id:
            raise Refused(f"ticket {ticket.number} is held by window {ticket.window}")
        if window.current == ticket.id:
            raise Refused(f"ticket {ticket.number} is already at window {window_id}; use recall")
        self._finish_current(window, now, implicit=True)
        returned = ticket.status is TicketStatus.HELD
        self._call(window, ticket, now, "returned" if returned else "called")
        out.result = {"ticket": ticket.public()}
        return out

    def recall(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        _, ticket = self._require_current(window_id)
        if ticket.status is not TicketStatus.CALLED:
            raise Refused(
                f"ticket {ticket.number} is {ticket.status.value}; "
                "only a called ticket can be recalled"
            )
        limit = self.config.queue.recall_limit
        if ticket.recalls >= limit:
            raise Refused(
                f"ticket {ticket.number} was recalled {limit} times already; mark it no-show"
            )
        ticket.recalls += 1
        self._touch(ticket)
        config = self._window_config(window_id)
        self._ticket_event(
            "recalled",
            ticket,
            now,
            recalls=ticket.recalls,
            window_name=config.name,
            window_number=config.number,
        )
        out.result = {"ticket": ticket.public()}
        return out

    def start_serving(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        _, ticket = self._require_current(window_id)
        if ticket.status is not TicketStatus.CALLED:
            raise Refused(f"ticket {ticket.number} is {ticket.status.value}, not called")
        ticket.status = TicketStatus.SERVING
        ticket.serving_at = now
        self._touch(ticket)
        self._ticket_event("serving", ticket, now)
        out.result = {"ticket": ticket.public()}
        return out

    def finish(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        if ticket.status not in (TicketStatus.CALLED, TicketStatus.SERVING):
            raise Refused(f"ticket {ticket.number} is {ticket.status.value}; nothing to finish")
        self._finish_current(window, now, implicit=False)
        out.result = {"ticket": ticket.public()}
        return out

    def no_show(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        if ticket.status is not TicketStatus.CALLED:
            raise Refused(
                f"ticket {ticket.number} is {ticket.status.value}; "
                "only a called ticket can be a no-show"
            )
        ticket.status = TicketStatus.NO_SHOW
        ticket.ended_at = now
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event("no_show", ticket, now, called_count=ticket.called_count)
        out.result = {"ticket": ticket.public()}
        return out

    def hold(self, window_id: str, now: dt.datetime) -> Outcome:
        """Park the current ticket (the citizen fetches a paper); call it back by number."""
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        if ticket.status not in (TicketStatus.CALLED, TicketStatus.SERVING):
            raise Refused(f"ticket {ticket.number} is {ticket.status.value} and cannot be held")
        ticket.status = TicketStatus.HELD
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event("held", ticket, now)
        out.result = {"ticket": ticket.public()}
        return out

    def held(self, window_id: str) -> list[Ticket]:
        held = (
            t
            for t in self.tickets.values()
            if t.status is TicketStatus.HELD and t.window == window_id
        )
        return sorted(held, key=_arrival)

    def transfer(
        self, window_id: str, service_id: str, now: dt.datetime, *, front: bool = True
    ) -> Outcome:
        """Send the current ticket to another service's queue, at its front or its back."""
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        target = self._service(service_id)
        if target.id == ticket.service:
            raise Refused(f"ticket {ticket.number} is already for {target.name}")
        if ticket.status not in (TicketStatus.CALLED, TicketStatus.SERVING):
            raise Refused(
                f"ticket {ticket.number} is {ticket.status.value} and cannot be transferred"
            )
        if front:
            ranks = [t.rank for t in self.waiting(target.id)]
            rank = min([*ranks, self.hall.next_rank]) - 1
        else:
            rank = self._next_rank()
        source_service = ticket.service
        ticket.service = target.id
        ticket.status = TicketStatus.WAITING
        ticket.rank = rank
        ticket.window = None
        ticket.staff = None
        ticket.recalls = 0
        ticket.serving_at = None
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event(
            "transferred",
            ticket,
            now,
            from_service=source_service,
            from_window=window_id,
            position="front" if front else "back",
        )
        out.result = {"ticket": ticket.public()}
        return out

    def pause(self, window_id: str, now: dt.datetime, *, reason: str = "") -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.state is WindowState.PAUSED:
            raise Refused(f"window {window_id} is already paused")
        window.state = WindowState.PAUSED
        self._touch_window(window)
        self._emit("window.paused", now, {"window": window_id, "reason": reason})
        out.result = {"window": window.to_json()}
        return out

    def resume(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.state is not WindowState.PAUSED:
            raise Refused(f"window {window_id} is not paused")
        window.state = WindowState.OPEN
        self._touch_window(window)
        self._emit("window.resumed", now, {"window": window_id})
        out.result = {"window": window.to_json()}
        return out

    def sign_in(
        self, window_id: str, staff_id: str, now: dt.datetime, *, staff_name: str | None = None
    ) -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        staff_id = staff_id.strip()
        if not staff_id:
            raise Refused("a staff number is needed to sign in")
        for other in self.windows.values():
            if other.staff == staff_id and other.id != window_id:
                self._sign_out(other, now, reason=f"signed in at window {window_id}")
        window = self.windows[window_id]
        if window.staff is not None and window.staff != staff_id:
            self._sign_out(window, now, reason=f"replaced by {staff_id}")
        window.staff = staff_id
        window.staff_name = staff_name
        self._touch_window(window)
        self._emit(
            "staff.signed_in", now, {"window": window_id, "staff": staff_id}, EventClass.OPERATIONAL
        )
        if window.state is WindowState.CLOSED:
            self._open_window(window, now)
        out.result = {"window": window.to_json()}
        return out

    def _sign_out(self, window: WindowStatus, now: dt.datetime, reason: str) -> None:
        staff = window.staff
        self._finish_current(window, now, implicit=True)
        window.staff = None
        window.staff_name = None
        window.state = WindowState.CLOSED
        self._touch_window(window)
        self._emit(
            "staff.signed_out",
            now,
            {"window": window.id, "staff": staff, "reason": reason},
            EventClass.OPERATIONAL,
        )
        self._emit("window.closed", now, {"window": window.id})

    def sign_out(self, window_id: str, now: dt.datetime) -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.staff is None and window.state is WindowState.CLOSED:
            raise Refused(f"window {window_id} is already closed")
        self._sign_out(window, now, reason="signed out")
        out.result = {"window": window.to_json()}
        return out

    # -- satisfaction rating (好差评) ----------------------------------------------------

    def has_rater(self, window_id: str) -> bool:
        return any(d.kind == "rater" for d in self.config.window_devices(window_id))

    def request_rating(
        self,
        window_id: str,
        now: dt.datetime,
        *,
        ticket_number: str | None = None,
        trigger: str = "request",
    ) -> Outcome:
        """Invite the citizen at a window to rate: the window's current ticket, or the one it
        finished last (or ``ticket_number``, served at this window today)."""
        out = self._begin(now)
        self._window_config(window_id)
        if not self.has_rater(window_id):
            raise Refused(
                f"window {window_id} has no satisfaction rater; add a rater to its devices"
            )
        window = self.windows[window_id]
        ticket = self._rating_candidate(window, ticket_number)
        if ticket.rating is not None:
            raise Refused(
                f"ticket {ticket.number} was rated already ({ticket.rating.get('label')}); "
                "a ticket is rated once"
            )
        self._open_rating(window, ticket, now, trigger)
        out.result = {"rating": window.rating}
        return out

    def rate(
        self,
        window_id: str,
        level: int,
        now: dt.datetime,
        *,
        reasons: Iterable[str] = (),
        comment: str = "",
        channel: str = "api",
        device: str | None = None,
        ticket_id: str | None = None,
    ) -> Outcome:
        """Record the citizen's rating of the ticket the window's rater waits for."""
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        pending = window.rating
        if pending is None:
            raise Refused(
                f"no rating is open at window {window_id}; finish the ticket or request a "
                "rating first"
            )
        if ticket_id is not None and ticket_id != pending["ticket_id"]:
            raise Refused(
                f"that rating has ended; window {window_id} now rates ticket {pending['ticket']}"
            )
        try:
            chosen = RatingLevel(level)
        except ValueError:
            levels = ", ".join(f"{lv.value} {lv.label}" for lv in RatingLevel)
            raise Refused(f"{level} is not a rating level; the levels are {levels}") from None
        ticket = self.tickets.get(pending["ticket_id"])
        if ticket is None or ticket.rating is not None:
            self._close_rating(window, now, "ended")
            raise Refused(f"ticket {pending['ticket']} can no longer be rated")
        picked = self._rating_reasons(chosen, reasons, comment)
        self._record_rating(window, ticket, chosen, now, picked, comment.strip(), channel, device)
        out.result = {"rating": ticket.rating}
        return out

    def rating_timed_out(
        self,
        window_id: str,
        ticket_id: str,
        now: dt.datetime,
        *,
        pressed_level: int | None = None,
    ) -> Outcome:
        """The citizen did not rate in time: apply the timeout policy (nothing when the
        rating was already given or replaced). ``pressed_level`` is a bad key pressed
        without a reason: no default is ever recorded over it."""
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.rating is None or window.rating["ticket_id"] != ticket_id:
            out.result = {"rating": None}
            return out
        recorded = self._close_rating(window, now, "timeout", pressed_level)
        out.result = {"rating": recorded}
        return out

    def _rating_candidate(self, window: WindowStatus, number: str | None) -> Ticket:
        if number is not None:
            ticket = self._by_number(number)
            rateable = (TicketStatus.CALLED, TicketStatus.SERVING, TicketStatus.FINISHED)
            if ticket.window != window.id or ticket.status not in rateable:
                raise Refused(f"ticket {ticket.number} was not served at window {window.id}")
            return ticket
        current = self._current(window)
        if current is not None and current.status in (TicketStatus.CALLED, TicketStatus.SERVING):
            return current
        finished = [
            t
            for t in self.tickets.values()
            if t.window == window.id and t.status is TicketStatus.FINISHED and t.ended_at
        ]
        if not finished:
            raise Refused(f"window {window.id} has no ticket to rate; call or finish one first")
        return max(finished, key=lambda t: (t.ended_at or t.issued_at, t.rank))

    def _rating_after_finish(
        self, window: WindowStatus, ticket: Ticket, now: dt.datetime, *, implicit: bool
    ) -> None:
        start_on = self.config.rating.start_on
        if start_on == "request" or (implicit and start_on == "finish"):
            return
        if ticket.rating is None and self.has_rater(window.id):
            self._open_rating(window, ticket, now, "next" if implicit else "finish")

    def _open_rating(
        self, window: WindowStatus, ticket: Ticket, now: dt.datetime, trigger: str
    ) -> None:
        if window.rating is not None:
            if window.rating["ticket_id"] == ticket.id:
                return  # already waiting for this one
            self._close_rating(window, now, "replaced")
        staff = ticket.staff or window.staff
        window.rating = {
            "ticket_id": ticket.id,
            "ticket": ticket.number,
            "service": ticket.service,
            "staff": staff,
            "staff_name": window.staff_name if staff == window.staff else None,
            "requested_at": now.isoformat(),
            "trigger": trigger,
        }
        self._touch_window(window)
        self._emit(
            "rating.requested",
            now,
            {
                "window": window.id,
                "ticket": ticket.number,
                "ticket_id": ticket.id,
                "service": ticket.service,
                "staff": staff,
                "trigger": trigger,
            },
            EventClass.OPERATIONAL,
        )

    def _rating_reasons(
        self, level: RatingLevel, reasons: Iterable[str], comment: str
    ) -> list[str]:
        allowed = self.config.rating.reasons
        picked: list[str] = []
        for reason in reasons:
            if reason not in allowed:
                raise Refused(f"unknown reason {reason!r}; the reasons are {', '.join(allowed)}")
            if reason not in picked:
                picked.append(reason)
        if len(comment) > MAX_RATING_COMMENT:
            raise Refused(f"the comment is over {MAX_RATING_COMMENT} characters; shorten it")
        if not level.is_bad and picked:
            raise Refused(f"reasons are given for 不满意 and 非常不满意, not for {level.label}")
        if level.is_bad and not picked and not comment.strip():
            raise Refused(
                f"a {level.label} rating needs a reason (请选择或填写原因): choose from "
                f"{', '.join(allowed)}, or describe what went wrong"
            )
        return picked

    def _record_rating(
        self,
        window: WindowStatus,
        ticket: Ticket,
        level: RatingLevel,
        now: dt.datetime,
        reasons: list[str],
        comment: str,
        channel: str,
        device: str | None,
        *,
        defaulted: bool = False,
    ) -> JSON:
        pending = window.rating or {}
        config = self._window_config(window.id)
        rating: JSON = {
            "level": level.value,
            "label": level.label,
            "bad": level.is_bad,
            "reasons": reasons,
            "comment": comment,
            "channel": channel,
            "device": device,
            "defaulted": defaulted,
            "window": window.id,
            "staff": pending.get("staff", ticket.staff),
            "staff_name": pending.get("staff_name"),
            "requested_at": pending.get("requested_at"),
            "rated_at": now.isoformat(),
        }
        ticket.rating = rating
        window.rating = None
        self._touch(ticket)
        self._touch_window(window)
        data: JSON = {
            "ticket": ticket.number,
            "ticket_id": ticket.id,
            "day": ticket.day.isoformat(),
            "service": ticket.service,
            "service_name": self._service(ticket.service).name,
            "window_name": config.name,
            "window_number": config.number,
            **rating,
        }
        data.pop("rated_at")
        if self.config.hall.region_code is not None:
            data["region_code"] = self.config.hall.region_code
        self._emit("rating.submitted", now, data)
        return rating

    def _close_rating(
        self,
        window: WindowStatus,
        now: dt.datetime,
        reason: str,
        pressed_level: int | None = None,
    ) -> JSON | None:
        """End the window's open rating without the citizen's answer: by the timeout policy
        a default is recorded (never over a bad key the citizen pressed)."""
        pending = window.rating
        assert pending is not None
        ticket = self.tickets.get(pending["ticket_id"])
        policy = self.config.rating
        pressed_bad = pressed_level is not None and pressed_level <= RatingLevel.DISSATISFIED
        data: JSON = {
            "window": window.id,
            "ticket": pending["ticket"],
            "ticket_id": pending["ticket_id"],
            "service": pending.get("service"),
            "staff": pending.get("staff"),
            "requested_at": pending.get("requested_at"),
            "reason": reason,
            "recorded": None,
        }
        if pressed_level is not None:
            data["pressed_level"] = pressed_level
        window.rating = None
        self._touch_window(window)
        recorded = None
        if (
            policy.on_timeout == "default"
            and reason in ("timeout", "replaced")
            and not pressed_bad
            and ticket is not None
            and ticket.rating is None
        ):
            data["recorded"] = policy.default_level
            self._emit("rating.timed_out", now, data, EventClass.OPERATIONAL)
            window.rating = pending  # the record carries who and when
            recorded = self._record_rating(
                window,
                ticket,
                RatingLevel(policy.default_level),
                now,
                [],
                "",
                "timeout",
                None,
                defaulted=True,
            )
        else:
            self._emit("rating.timed_out", now, data, EventClass.OPERATIONAL)
        return recorded

    # -- figures -----------------------------------------------------------------------

    def people_ahead(self, ticket: Ticket, now: dt.datetime) -> int:
        """Waiting tickets of the same service that routing would call before this one."""
        if ticket.status is not TicketStatus.WAITING:
            return 0

        def key(t: Ticket) -> tuple[int, int]:
            return (0 if t.priority.is_green else 1, t.rank)

        mine = key(ticket)
        return sum(1 for t in self.waiting(ticket.service) if key(t) < mine)

    def average_minutes(self, service_id: str) -> float:
        history = self.hall.durations.get(service_id)
        if history:
            return sum(history) / len(history)
        return self._service(service_id).expected_minutes

    def estimated_wait_minutes(self, service_id: str, ahead: int) -> int:
        serving = [w for w in self.config.windows if service_id in w.services]
        open_ = [w for w in serving if self.windows[w.id].state is WindowState.OPEN]
        lanes = max(1, len(open_) or len(serving))
        return round(ahead * self.average_minutes(service_id) / lanes)

    def snapshot(self, now: dt.datetime) -> JSON:
        """The whole queue as screens and the API show it."""
        services = []
        for s in self.config.services:
            waiting = len(self.waiting(s.id))
            services.append(
                {
                    "id": s.id,
                    "name": s.name,
                    "prefix": s.prefix,
                    "waiting": waiting,
                    "issued_today": self.hall.counters.get(s.id, 0),
                    "daily_cap": s.daily_cap,
                    "open": s.open_at(now.astimezone(self.config.hall.zone)),
                    "wait_minutes": self.estimated_wait_minutes(s.id, waiting),
                }
            )
        windows = []
        for w in self.config.windows:
            status = self.windows[w.id]
            current = self._current(status)
            windows.append(
                {
                    **status.to_json(),
                    "name": w.name,
                    "number": w.number,
                    "services": list(w.services),
                    "ticket": None if current is None else current.public(),
                    "held": [t.number for t in self.held(w.id)],
                }
            )
        return {
            "day": self.hall.day.isoformat(),
            "services": services,
            "windows": windows,
            "waiting": [t.public() for t in sorted(self.waiting(), key=_arrival)],
        }

    def open_tickets(self) -> Iterator[Ticket]:
        return (t for t in self.tickets.values() if t.status.is_open)

    def reconfiguration_problems(self, config: HallAgentConfig) -> list[str]:
        """Why the queue cannot switch to ``config`` now (empty when it can)."""
        problems = []
        services = {s.id for s in config.services}
        windows = {w.id for w in config.windows}
        for ticket in self.open_tickets():
            if ticket.service not in services:
                problems.append(
                    f"service {ticket.service!r} is removed but ticket {ticket.number} is "
                    f"{ticket.status.value}; push the change after it is served or transferred"
                )
            if ticket.window is not None and ticket.window not in windows:
                problems.append(
                    f"window {ticket.window!r} is removed but holds ticket {ticket.number}; "
                    "finish or transfer it first"
                )
        for ticket in self.waiting():
            if ticket.service in services and not any(
                ticket.service in w.services for w in config.windows
            ):
                problems.append(
                    f"no window would serve {ticket.service!r}, which has ticket "
                    f"{ticket.number} waiting"
                )
        return problems

    def reconfigure(self, config: HallAgentConfig) -> None:
        """Switch to a new config (services, windows, rules); check it first."""
        problems = self.reconfiguration_problems(config)
        if problems:
            raise Refused("; ".join(problems))
        self.config = config
        for w in config.windows:
            self.windows.setdefault(w.id, WindowStatus(id=w.id))
        kept = {w.id for w in config.windows}
        self.windows = {k: v for k, v in self.windows.items() if k in kept}


# Longer than any service (the config's expected_minutes allows up to 480): a clock jump.
_LONGEST_SERVICE_MINUTES = 480.0


def _arrival(ticket: Ticket) -> tuple[int, str]:
    """Queue order; the id breaks rank ties (a transfer to the front can share a rank) so
    the order never depends on how the tickets were loaded."""
    return (ticket.rank, ticket.id)


def _age(birth: dt.date, today: dt.date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years
