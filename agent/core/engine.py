"""The queue engine: a pure state machine over the hall's tickets and windows.

No I/O and no clocks: every operation takes the wall-clock time ``now`` as data and
returns an :class:`Outcome` (the events it produced and which records it changed).
The store writes an outcome's changes and events in one transaction; the agent runs
operations through one serialized writer, so the engine itself needs no locking.

Operations arrive as data (``agent.core.operations``) and are applied in one ``match``
(:meth:`QueueEngine.apply`); every ticket status change goes through the move table
(``agent.core.status``); every event is a typed payload (``agent.core.events``).

Why one module of about 1,200 lines: it is one state machine. Every rule (issuing, routing,
the window operations, the business day, 好差评) reads and changes the same tickets,
windows and counters inside one operation, and records what it changed in the same
``Outcome``; split into classes, each would reach into the others' state.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from agent.config import HallAgentConfig, Service, Window
from agent.core import events as ev
from agent.core import operations as op
from agent.core import wording
from agent.core.errors import NotFound, Refused
from agent.core.estimate import (
    DEMAND_MINUTES,
    Demand,
    Estimates,
    Simulation,
    Waiter,
    play_queue,
    play_until,
)
from agent.core.events import Event, EventData
from agent.core.model import (
    JSON,
    MAX_RATING_COMMENT,
    MAX_STAFF_PER_WINDOW,
    HallCounters,
    Priority,
    RatingLevel,
    Source,
    Ticket,
    TicketStatus,
    WindowState,
    WindowStatus,
    business_day,
)
from agent.core.opening import citizen_text, opening
from agent.core.places import Places, arrival, count_places, place_key, places_after
from agent.core.snapshot import build_snapshot
from agent.core.status import Move, allowed, check, move


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one operation did: its result, its events, and the records to persist."""

    result: JSON = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)
    tickets: dict[str, Ticket] = dataclasses.field(default_factory=dict)
    windows: dict[str, WindowStatus] = dataclasses.field(default_factory=dict)
    hall_changed: bool = False
    stored: list[Any] = dataclasses.field(default_factory=list)  # filled in once committed
    # The ticket the operation was about (issued, called, finished...), when there is one.
    ticket: Ticket | None = None


@dataclasses.dataclass(slots=True)
class _Kept:
    """The last play of the queue (agent.core.estimate) and the state it stands for."""

    key: tuple[Any, ...]  # the engine's _state_key() it was played (or kept up) for
    at: dt.datetime  # the clock time it was played at
    play: Simulation | None  # None in a copy that only reads (the hall's committed engine)
    estimates: Estimates | None = None  # made from the play when first asked for


def new_token() -> str:
    """A ticket's status-page credential: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


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
        *,
        token_source: Callable[[], str] = new_token,
    ) -> None:
        self.config = config
        # Each ticket's status-page token; the only value the engine does not derive from
        # its operations and ``now`` (tests may pass a deterministic source).
        self._token_source = token_source
        self.hall = hall
        self.tickets: dict[str, Ticket] = {t.id: t for t in tickets}
        self.windows: dict[str, WindowStatus] = {w.id: w for w in windows}
        for w in config.windows:
            self.windows.setdefault(w.id, WindowStatus(id=w.id))
        self._out = Outcome()
        # Every operation (and every replacement of records from outside) starts a new
        # version; what is computed from the records is kept with the version it is for.
        self._version = 0
        # The last play of the queue (see estimates()) and the last places (see _aheads()).
        self._kept: _Kept | None = None
        self._places: Places | None = None
        # The last places() answer and the places and estimates it was made from.
        self._placed: tuple[Places, Estimates, dict[str, tuple[int, int]]] | None = None
        # The last snapshot with and without the waiting list, and what it was made from.
        self._snapshots: dict[bool, tuple[tuple[Any, ...], Estimates, JSON]] = {}
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

    def replaced(self, like: QueueEngine | None = None) -> None:
        """Records were replaced from outside (the hall's committed copy, updated after each
        commit): what was computed from the old ones (estimates, places) is dropped, or,
        with ``like`` (an engine whose records are now equal to these), taken from it when
        it has them for its current records."""
        self._version += 1
        self._kept = None
        self._places = None
        if like is None:
            return
        if self._state_key()[1:] != like._state_key()[1:]:
            return  # not the same records after all
        kept = like._kept
        if kept is not None and kept.key == like._state_key():
            found = kept.estimates
            if found is None and kept.play is not None:
                found = kept.estimates = kept.play.estimates()
            self._kept = _Kept(self._state_key(), kept.at, None, found)
        places = like._places
        if places is not None and places.version == like._version:
            self._places = Places(self._version, places.lines, places.places)

    def _begin(self, now: dt.datetime) -> Outcome:
        _require_aware(now)
        self._version += 1
        self._out = Outcome()
        self._roll(now)
        return self._out

    def _touch(self, ticket: Ticket) -> None:
        self._out.tickets[ticket.id] = ticket

    def _touch_window(self, window: WindowStatus) -> None:
        self._out.windows[window.id] = window

    def _emit(self, payload: EventData, now: dt.datetime) -> None:
        self._out.events.append(Event(payload, now))

    def _ticket_event(
        self, kind: type[ev.TicketEvent], ticket: Ticket, now: dt.datetime, **extra: Any
    ) -> None:
        extra.setdefault("with_staff", self._with_staff(ticket.window, ticket.staff))
        payload = kind(
            ticket=ticket.number,
            ticket_id=ticket.id,
            service=ticket.service,
            day=ticket.day.isoformat(),
            status=ticket.status,
            priority=ticket.priority,
            window=ticket.window,
            staff=ticket.staff,
            **extra,
        )
        self._emit(payload, now)

    def _with_staff(self, window_id: str | None, staff: str | None) -> list[str] | None:
        """Who else is signed in at the window besides ``staff`` (None: nobody)."""
        status = None if window_id is None else self.windows.get(window_id)
        if status is None:
            return None
        return [s for s in status.signed_in() if s != staff] or None

    def _actor(self, window: WindowStatus, staff: str | None) -> str | None:
        """Who pressed: ``staff`` when given (they must be signed in here), else the one
        who serves at the window."""
        if staff is None:
            return window.staff
        staff = staff.strip()
        if staff not in window.signed_in():
            here = ", ".join(window.signed_in()) or "nobody"
            raise Refused(
                f"staff {staff} is not signed in at window {window.id} (signed in: {here}); "
                "sign in there first"
            )
        return staff

    def _pressed_by(self, window: WindowStatus, ticket: Ticket, staff: str | None) -> None:
        """A staff member named as pressing for the window's ticket serves it from now on."""
        if staff is None:
            return
        actor = self._actor(window, staff)
        if ticket.staff != actor:
            ticket.staff = actor
            self._touch(ticket)

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
        for ticket in sorted(self.tickets.values(), key=arrival):
            if ticket.status.is_open and ticket.undated:
                ticket.day = today
                ticket.undated = False
                self._touch(ticket)
                carried.append(ticket)
            elif ticket.status.is_open:
                move(ticket, Move.EXPIRE)
                ticket.ended_at = now
                self._touch(ticket)
                self._ticket_event(ev.TicketExpired, ticket, now, reason="business day closed")
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
        closed = ev.DayClosed(
            day=closing.isoformat(),
            next_day=today.isoformat(),
            issued=issued,
            served=served,
            expired=expired,
            carried=[t.number for t in carried] or None,
        )
        self._emit(closed, now)
        # Closed days stay in the store (history is never deleted); memory keeps today.
        self.tickets = {k: t for k, t in self.tickets.items() if t.status.is_open}

    def tick(self, now: dt.datetime) -> Outcome:
        """Run time-driven rules (the business-day rollover)."""
        return self._begin(now)

    # -- operations as data ------------------------------------------------------------

    def apply(self, operation: op.Operation, now: dt.datetime) -> Outcome:
        """Apply one operation: the only place an operation becomes an engine call.

        Then, in the same outcome, ``ticket.turn_near`` for a ticket that moved up to
        ``queue.turn_near`` people ahead and (with ``ticket.qr_url``) ``ticket.status``
        for every ticket whose status or place changed."""
        follows = self._follows_places()
        kept = self._places
        before = kept if kept is not None and kept.version == self._version else None
        if before is None and follows:
            before = self._places_now()
        out = self._dispatch(operation, now)
        if before is not None:
            after, moved = self._places_after(before, out)
            self._places = after
            if follows:
                self._report_places(out, before.places, after.places, moved, now)
        return out

    def _dispatch(self, operation: op.Operation, now: dt.datetime) -> Outcome:
        match operation:
            case op.Take():
                out = self.take(
                    operation.service,
                    now,
                    source=operation.source,
                    priority=operation.priority,
                    id_hash=operation.id_hash,
                    birth_date=operation.birth_date,
                    granted_by=operation.granted_by,
                    appointment=operation.appointment,
                )
                if operation.card is not None and out.ticket is not None:
                    self._identity_read(operation.card, "kiosk", now, ticket=out.ticket)
                return out
            case op.CardAtWindow(window=w, card=card):
                return self.card_at_window(w, card, now)
            case op.Cancel(number=number, reason=reason):
                return self.cancel(number, now, reason=reason)
            case op.CallNext(window=w, staff=by):
                return self.call_next(w, now, staff=by)
            case op.CallNumber(window=w, number=number, staff=by):
                return self.call_number(w, number, now, staff=by)
            case op.CallDigits(window=w, digits=digits, staff=by):
                return self.call_number(w, self._number_for_digits(w, digits), now, staff=by)
            case op.CallBack(window=w, staff=by):
                return self.call_number(w, self._held_ticket(w), now, staff=by)
            case op.Recall(window=w, staff=by):
                return self.recall(w, now, staff=by)
            case op.StartServing(window=w, staff=by):
                return self.start_serving(w, now, staff=by)
            case op.Finish(window=w, staff=by):
                return self.finish(w, now, staff=by)
            case op.NoShow(window=w, staff=by):
                return self.no_show(w, now, staff=by)
            case op.Hold(window=w, staff=by):
                return self.hold(w, now, staff=by)
            case op.Transfer(window=w, service=service, position=position, staff=by):
                return self.transfer(w, service, now, front=position == "front", staff=by)
            case op.TransferToPosition(window=w, position=position, staff=by):
                return self.transfer(w, self._service_by_position(position), now, staff=by)
            case op.Pause(window=w, reason=reason, staff=by):
                return self.pause(w, now, reason=reason, staff=by)
            case op.Resume(window=w, staff=by):
                return self.resume(w, now, staff=by)
            case op.TogglePause(window=w, reason=reason, staff=by):
                status = self.windows.get(w)
                if status is not None and status.state is WindowState.PAUSED:
                    return self.resume(w, now, staff=by)
                return self.pause(w, now, reason=reason, staff=by)
            case op.SignIn(window=w, staff=staff, name=name):
                return self.sign_in(w, staff, now, staff_name=name)
            case op.SignOut(window=w, staff=staff):
                return self.sign_out(w, now, staff=staff)
            case op.RequestRating(window=w, ticket_number=number, trigger=trigger):
                return self.request_rating(w, now, ticket_number=number, trigger=trigger)
            case op.Rate():
                return self.rate(
                    operation.window,
                    operation.level,
                    now,
                    reasons=operation.reasons,
                    comment=operation.comment,
                    channel=operation.channel,
                    device=operation.device,
                    ticket_id=operation.ticket_id,
                )
            case op.RatingTimeout(window=w, ticket_id=ticket_id, pressed_level=pressed):
                return self.rating_timed_out(w, ticket_id, now, pressed_level=pressed)
            case op.Tick():
                return self.tick(now)
        raise TypeError(f"not a queue operation: {operation!r}")

    def _identity_read(
        self,
        card: op.CardRead,
        flow: Literal["kiosk", "window"],
        now: dt.datetime,
        *,
        ticket: Ticket | None = None,
        window: str | None = None,
        staff: str | None = None,
    ) -> None:
        self._emit(
            ev.IdentityRead(
                flow=flow,
                device=card.device,
                **card.personal,
                window=window,
                ticket=None if ticket is None else ticket.number,
                ticket_id=None if ticket is None else ticket.id,
                staff=staff,
                appointment=card.appointment,
            ),
            now,
        )

    def card_at_window(self, window_id: str, card: op.CardRead, now: dt.datetime) -> Outcome:
        """An ID card read at a window, for the window's current ticket and staff."""
        out = self._begin(now)
        status = self.windows.get(window_id)
        current = self._current(status) if status is not None else None
        staff = None if status is None else status.staff
        if current is not None and current.staff is not None:
            staff = current.staff  # who serves the ticket (two may be signed in)
        self._identity_read(card, "window", now, ticket=current, window=window_id, staff=staff)
        out.result = {"window": window_id}
        if current is not None:
            out.result |= {"ticket": current.number, "ticket_id": current.id}
        if staff is not None:
            out.result["staff"] = staff
        out.ticket = current
        return out

    def _held_ticket(self, window_id: str) -> str:
        held = self.held(window_id)
        if not held:
            raise Refused(f"window {window_id} holds no ticket to call back")
        return held[0].number

    def _service_by_position(self, digits: str) -> str:
        services = self.config.services
        position = int(digits) if digits.isdigit() else 0
        if not 1 <= position <= len(services):
            listed = ", ".join(f"{i} {s.name}" for i, s in enumerate(services, 1))
            raise Refused(f"no service {digits} to transfer to; the services are {listed}")
        return services[position - 1].id

    def _number_for_digits(self, window_id: str, digits: str) -> str:
        """The ticket a keypad means by its digits: today's callable ticket of a service
        this window serves whose number is those digits (a keypad cannot type the prefix).
        A full number (a page can type it) is taken as it is."""
        if not digits.isdigit():
            return digits.strip().upper()
        wanted = int(digits)
        config = self._window_config(window_id)
        matches = sorted(
            t.number
            for t in self.tickets.values()
            if t.day == self.hall.day
            and t.service in config.services
            and allowed(t, Move.CALL)
            and int("".join(ch for ch in t.number if ch.isdigit()) or -1) == wanted
        )
        if not matches:
            raise Refused(f"no ticket numbered {digits} waits for window {window_id}")
        if len(matches) > 1:
            raise Refused(
                f"{digits} could be {', '.join(matches)}; call it by its full number from "
                "the web caller page"
            )
        return matches[0]

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
        granted_by: str | None = None,
        appointment: str | None = None,
    ) -> Outcome:
        out = self._begin(now)
        # What was kept for the queue as the last operation left it (estimates, places)
        # serves this take too, unless the day rolled over on the way here.
        quiet = not (out.events or out.tickets or out.windows or out.hall_changed)
        before = self._state_key(self._version - 1) if quiet else None
        kept = self._places
        places = kept if quiet and kept is not None and kept.version == self._version - 1 else None
        service = self._service(service_id)
        local = now.astimezone(self.config.hall.zone)
        # An untrusted clock cannot tell office hours: a hall that is open with the wrong
        # date on its Pi still issues tickets (the cap and other rules still apply).
        # The business calendar: holidays, make-up days (调休), special dates, hours.
        found = opening(self.config, service, local)
        if self.clock_trusted and not found.open:
            hours = ", ".join(str(p) for p in self.config.weekly_hours(service))
            then = "" if found.next_open is None else f"; it opens {found.next_open:%Y-%m-%d %H:%M}"
            raise Refused(
                f"{service.name} is not issuing tickets now ({found.reason}{then}); "
                f"hours: {hours or 'all day'}",
                citizen=citizen_text(service.name, found),
            )
        issued = self.hall.counters.get(service.id, 0)
        if service.daily_cap is not None and issued >= service.daily_cap:
            raise Refused(
                f"{service.name} has reached today's limit of {service.daily_cap} tickets; "
                "please come back on the next working day",
                citizen=wording.daily_cap_reached(
                    service.name, wording.hours_text(self.config.weekly_hours(service))
                ),
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
                        f"this ID card already holds ticket {t.number} for {service.name}",
                        citizen=wording.already_holding(service.name, t.number),
                    )
        if appointment is not None:
            for t in self.tickets.values():
                if t.appointment == appointment and t.day == self.hall.day:
                    raise Refused(
                        f"appointment {appointment} is already checked in: ticket {t.number}"
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
            granted_by=granted_by if priority.is_green else None,
            appointment=appointment,
            token=self._token_source(),
        )
        self.tickets[ticket.id] = ticket
        self._touch(ticket)
        out.hall_changed = True
        ahead, wait, waiting = self._issued_place(ticket, places, before, now)
        self._ticket_event(
            ev.TicketIssued,
            ticket,
            now,
            source=source,
            ahead=ahead,
            wait_minutes=wait,
            granted_by=ticket.granted_by,
            appointment=appointment,
        )
        out.ticket = ticket
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

    def _issued_place(
        self,
        ticket: Ticket,
        places: Places | None,
        before: tuple[Any, ...] | None,
        now: dt.datetime,
    ) -> tuple[int, int, int]:
        """A ticket just issued: people ahead, estimated wait (minutes), people waiting for
        its service with it. From what was kept for the queue just before (``places``,
        ``before``: the state key then), when there is that."""
        if places is not None:
            line = places.lines.get(ticket.service, [])
            ahead = bisect.bisect_left(line, (place_key(ticket), ""))
            waiting = len(line) + 1
        else:
            ahead = self.people_ahead(ticket, now)
            waiting = len(self.waiting(ticket.service))
        joined, found = (False, None) if before is None else self._join_kept(ticket, before, now)
        if not joined:
            wait = self.wait_minutes(ticket, now)
        elif found is None:  # no window serves it at all (as wait_minutes says then)
            wait = round(ahead * self.average_minutes(ticket.service))
        else:
            wait = max(0, round(found))
        return ahead, wait, waiting

    def _next_rank(self) -> int:
        rank = self.hall.next_rank
        self.hall.next_rank += 1
        self._out.hall_changed = True
        return rank

    def cancel(self, number: str, now: dt.datetime, *, reason: str = "") -> Outcome:
        out = self._begin(now)
        ticket = self._by_number(number)
        move(ticket, Move.CANCEL)
        ticket.ended_at = now
        self._touch(ticket)
        self._ticket_event(ev.TicketCancelled, ticket, now, reason=reason)
        out.ticket = ticket
        out.result = {"ticket": ticket.public()}
        return out

    # -- routing -----------------------------------------------------------------------

    def _order_key(
        self, ticket: Ticket, window: Window, now: dt.datetime
    ) -> tuple[int, int, int, str]:
        service_rank = window.services.index(ticket.service)
        if ticket.priority.is_green:
            return (0, service_rank, *arrival(ticket))
        aging = self.config.queue.aging_minutes
        if aging is not None and now - ticket.issued_at >= dt.timedelta(minutes=aging):
            return (1, 0, *arrival(ticket))
        return (2, service_rank, *arrival(ticket))

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
            self._emit(ev.WindowOpened(window=window.id, staff=window.staff), now)

    def _finish_current(self, window: WindowStatus, now: dt.datetime, implicit: bool) -> None:
        ticket = self._current(window)
        if ticket is None:
            return
        if ticket.status is TicketStatus.HELD:
            window.current = None
            self._touch_window(window)
            return
        started = ticket.serving_at or ticket.called_at or now
        move(ticket, Move.FINISH)
        ticket.ended_at = now
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        minutes = max(0.0, (now - started).total_seconds() / 60)
        if self.clock_trusted and minutes <= _LONGEST_SERVICE_MINUTES:
            # A clock set between the call and the finish is no service time.
            self._record_duration(ticket.service, minutes)
        self._ticket_event(
            ev.TicketFinished, ticket, now, minutes=round(minutes, 2), implicit=implicit
        )
        self._rating_after_finish(window, ticket, now, implicit=implicit)

    def _record_duration(self, service_id: str, minutes: float) -> None:
        keep = self.config.queue.service_time_window
        history = deque(self.hall.durations.get(service_id, []), maxlen=keep)
        history.append(round(minutes, 3))
        self.hall.durations[service_id] = list(history)
        self._out.hall_changed = True

    def _call(
        self,
        window: WindowStatus,
        ticket: Ticket,
        now: dt.datetime,
        kind: type[ev.TicketCalled | ev.TicketReturned],
        actor: str | None,
    ) -> None:
        move(ticket, Move.CALL)
        ticket.window = window.id
        ticket.staff = actor
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

    def call_next(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        """Finish the window's current ticket, if any, and call the next one."""
        out = self._begin(now)
        window = self._ready_window(window_id, now)
        actor = self._actor(window, staff)
        ticket = self.next_for(window_id, now)
        current = self._current(window)
        if current is not None:
            self._pressed_by(window, current, staff)
        self._finish_current(window, now, implicit=True)
        if ticket is None:
            out.result = {"ticket": None, "message": f"no one is waiting for window {window_id}"}
            return out
        self._call(window, ticket, now, ev.TicketCalled, actor)
        out.result = {"ticket": ticket.public()}
        out.ticket = ticket
        return out

    def call_number(
        self, window_id: str, number: str, now: dt.datetime, *, staff: str | None = None
    ) -> Outcome:
        """Call a specific ticket: a waiting one, or one that missed its call (过号)."""
        out = self._begin(now)
        window = self._ready_window(window_id, now)
        actor = self._actor(window, staff)
        ticket = self._by_number(number)
        config = self._window_config(window_id)
        if ticket.service not in config.services:
            raise Refused(
                f"window {window_id} does not serve {self._service(ticket.service).name} "
                f"(ticket {ticket.number}); transfer it or call it from a window that does"
            )
        check(ticket, Move.CALL)
        if ticket.status is TicketStatus.HELD and ticket.window != window_id:
            raise Refused(f"ticket {ticket.number} is held by window {ticket.window}")
        if window.current == ticket.id:
            raise Refused(f"ticket {ticket.number} is already at window {window_id}; use recall")
        current = self._current(window)
        if current is not None:
            self._pressed_by(window, current, staff)
        self._finish_current(window, now, implicit=True)
        returned = ticket.status is TicketStatus.HELD
        kind = ev.TicketReturned if returned else ev.TicketCalled
        self._call(window, ticket, now, kind, actor)
        out.result = {"ticket": ticket.public()}
        out.ticket = ticket
        return out

    def recall(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, Move.RECALL)
        limit = self.config.queue.recall_limit
        if ticket.recalls >= limit:
            raise Refused(
                f"ticket {ticket.number} was recalled {limit} times already; mark it no-show"
            )
        self._pressed_by(window, ticket, staff)
        move(ticket, Move.RECALL)
        ticket.recalls += 1
        self._touch(ticket)
        config = self._window_config(window_id)
        self._ticket_event(
            ev.TicketRecalled,
            ticket,
            now,
            recalls=ticket.recalls,
            window_name=config.name,
            window_number=config.number,
        )
        out.result = {"ticket": ticket.public()}
        return out

    def start_serving(
        self, window_id: str, now: dt.datetime, *, staff: str | None = None
    ) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, Move.SERVE)
        self._pressed_by(window, ticket, staff)
        move(ticket, Move.SERVE)
        ticket.serving_at = now
        self._touch(ticket)
        self._ticket_event(ev.TicketServing, ticket, now)
        out.result = {"ticket": ticket.public()}
        return out

    def finish(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, Move.FINISH)
        self._pressed_by(window, ticket, staff)
        self._finish_current(window, now, implicit=False)
        out.result = {"ticket": ticket.public()}
        return out

    def no_show(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, Move.NO_SHOW)
        self._pressed_by(window, ticket, staff)
        move(ticket, Move.NO_SHOW)
        ticket.ended_at = now
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event(ev.TicketNoShow, ticket, now, called_count=ticket.called_count)
        out.result = {"ticket": ticket.public()}
        return out

    def hold(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        """Park the current ticket (the citizen fetches a paper); call it back by number."""
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, Move.HOLD)
        self._pressed_by(window, ticket, staff)
        move(ticket, Move.HOLD)
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event(ev.TicketHeld, ticket, now)
        out.result = {"ticket": ticket.public()}
        return out

    def held(self, window_id: str) -> list[Ticket]:
        held = (
            t
            for t in self.tickets.values()
            if t.status is TicketStatus.HELD and t.window == window_id
        )
        return sorted(held, key=arrival)

    def transfer(
        self,
        window_id: str,
        service_id: str,
        now: dt.datetime,
        *,
        front: bool = True,
        staff: str | None = None,
    ) -> Outcome:
        """Send the current ticket to another service's queue, at its front or its back."""
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        target = self._service(service_id)
        if target.id == ticket.service:
            raise Refused(f"ticket {ticket.number} is already for {target.name}")
        check(ticket, Move.TRANSFER)
        self._pressed_by(window, ticket, staff)
        from_staff = ticket.staff
        with_staff = self._with_staff(window_id, from_staff)
        if front:
            ranks = [t.rank for t in self.waiting(target.id)]
            rank = min([*ranks, self.hall.next_rank]) - 1
        else:
            rank = self._next_rank()
        source_service = ticket.service
        ticket.service = target.id
        move(ticket, Move.TRANSFER)
        ticket.rank = rank
        ticket.window = None
        ticket.staff = None
        ticket.recalls = 0
        ticket.serving_at = None
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        self._ticket_event(
            ev.TicketTransferred,
            ticket,
            now,
            from_service=source_service,
            from_window=window_id,
            from_staff=from_staff,
            with_staff=with_staff,
            position="front" if front else "back",
        )
        out.result = {"ticket": ticket.public()}
        return out

    def pause(
        self, window_id: str, now: dt.datetime, *, reason: str = "", staff: str | None = None
    ) -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.state is WindowState.PAUSED:
            raise Refused(f"window {window_id} is already paused")
        actor = self._actor(window, staff)
        window.state = WindowState.PAUSED
        self._touch_window(window)
        self._emit(ev.WindowPaused(window=window_id, reason=reason, staff=actor), now)
        out.result = {"window": window.to_json()}
        return out

    def resume(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if window.state is not WindowState.PAUSED:
            raise Refused(f"window {window_id} is not paused")
        actor = self._actor(window, staff)
        window.state = WindowState.OPEN
        self._touch_window(window)
        self._emit(ev.WindowResumed(window=window_id, staff=actor), now)
        out.result = {"window": window.to_json()}
        return out

    def sign_in(
        self, window_id: str, staff_id: str, now: dt.datetime, *, staff_name: str | None = None
    ) -> Outcome:
        """Sign a staff member in. Up to ``queue.staff_per_window`` at once (two: A serving
        and B assisting); the first serves, a press without a name is theirs. With one
        allowed, a second sign-in replaces the first."""
        out = self._begin(now)
        self._window_config(window_id)
        staff_id = staff_id.strip()
        if not staff_id:
            raise Refused("a staff number is needed to sign in")
        window = self.windows[window_id]
        here = window.signed_in()
        limit = min(self.config.queue.staff_per_window, MAX_STAFF_PER_WINDOW)
        if staff_id not in here and len(here) >= limit > 1:
            raise Refused(
                f"window {window_id} already has {limit} staff signed in ({', '.join(here)}); "
                "one of them signs out first"
            )
        for other in self.windows.values():
            if other.id != window_id and staff_id in other.signed_in():
                self._sign_out_one(other, staff_id, now, reason=f"signed in at window {window_id}")
        if staff_id not in here and len(here) >= limit:
            self._sign_out(window, now, reason=f"replaced by {staff_id}")
        with_staff = [s for s in window.signed_in() if s != staff_id] or None
        if window.staff is None or window.staff == staff_id:
            window.staff = staff_id
            window.staff_name = staff_name
        else:
            window.others = [o for o in window.others if o["staff"] != staff_id]
            window.others.append({"staff": staff_id, "name": staff_name})
        self._touch_window(window)
        self._emit(ev.StaffSignedIn(window=window_id, staff=staff_id, with_staff=with_staff), now)
        if window.state is WindowState.CLOSED:
            self._open_window(window, now)
        out.result = {"window": window.to_json()}
        return out

    def _sign_out(self, window: WindowStatus, now: dt.datetime, reason: str) -> None:
        """Everyone signs out: the current ticket is finished and the window closes."""
        everyone: list[str | None] = [*window.signed_in()] or [None]
        self._finish_current(window, now, implicit=True)
        window.staff = None
        window.staff_name = None
        window.others = []
        window.state = WindowState.CLOSED
        self._touch_window(window)
        for staff in everyone:
            self._emit(ev.StaffSignedOut(window=window.id, staff=staff, reason=reason), now)
        self._emit(ev.WindowClosed(window=window.id), now)

    def _sign_out_one(
        self, window: WindowStatus, staff: str, now: dt.datetime, reason: str
    ) -> None:
        """One staff member signs out; with someone left the window stays open and its
        ticket passes to them."""
        remaining = [s for s in window.signed_in() if s != staff]
        if not remaining:
            self._sign_out(window, now, reason)
            return
        if window.staff == staff:
            first = window.others.pop(0)
            window.staff, window.staff_name = str(first["staff"]), first.get("name")
        else:
            window.others = [o for o in window.others if o["staff"] != staff]
        current = self._current(window)
        if current is not None and current.staff == staff:
            current.staff = window.staff
            self._touch(current)
        self._touch_window(window)
        self._emit(
            ev.StaffSignedOut(window=window.id, staff=staff, reason=reason, remaining=remaining),
            now,
        )

    def sign_out(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        """``staff`` signs out (the others stay); without a name, everyone does and the
        window closes."""
        out = self._begin(now)
        self._window_config(window_id)
        window = self.windows[window_id]
        if staff is not None:
            staff = staff.strip()
            if staff not in window.signed_in():
                here = ", ".join(window.signed_in()) or "nobody"
                raise Refused(
                    f"staff {staff} is not signed in at window {window_id} (signed in: {here})"
                )
            self._sign_out_one(window, staff, now, reason="signed out")
        else:
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
        with_staff = self._with_staff(window.id, staff)
        window.rating = {
            "ticket_id": ticket.id,
            "ticket": ticket.number,
            "service": ticket.service,
            "staff": staff,
            "staff_name": window.name_of(staff),
            "with_staff": with_staff,
            "requested_at": now.isoformat(),
            "trigger": trigger,
        }
        self._touch_window(window)
        self._emit(
            ev.RatingRequested(
                window=window.id,
                ticket=ticket.number,
                ticket_id=ticket.id,
                service=ticket.service,
                staff=staff,
                trigger=trigger,
                with_staff=with_staff,
            ),
            now,
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
            "with_staff": pending.get("with_staff"),
            "requested_at": pending.get("requested_at"),
            "rated_at": now.isoformat(),
        }
        ticket.rating = rating
        window.rating = None
        self._touch(ticket)
        self._touch_window(window)
        fields = {k: v for k, v in rating.items() if k != "rated_at"}
        submitted = ev.RatingSubmitted(
            ticket=ticket.number,
            ticket_id=ticket.id,
            day=ticket.day.isoformat(),
            service=ticket.service,
            service_name=self._service(ticket.service).name,
            window_name=config.name,
            window_number=config.number,
            region_code=self.config.hall.region_code,
            **fields,
        )
        self._emit(submitted, now)
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
        timed_out = ev.RatingTimedOut(
            window=window.id,
            ticket=pending["ticket"],
            ticket_id=pending["ticket_id"],
            service=pending.get("service"),
            staff=pending.get("staff"),
            requested_at=pending.get("requested_at"),
            reason=reason,
            recorded=None,
            pressed_level=pressed_level,
            with_staff=pending.get("with_staff"),
        )
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
            timed_out = dataclasses.replace(timed_out, recorded=policy.default_level)
            self._emit(timed_out, now)
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
            self._emit(timed_out, now)
        return recorded

    # -- figures -----------------------------------------------------------------------

    def people_ahead(self, ticket: Ticket, now: dt.datetime) -> int:
        """Waiting tickets of the same service that routing would call before this one."""
        if ticket.status is not TicketStatus.WAITING:
            return 0

        mine = place_key(ticket)
        return sum(1 for t in self.waiting(ticket.service) if place_key(t) < mine)

    def average_minutes(self, service_id: str) -> float:
        history = self.hall.durations.get(service_id)
        if history:
            return sum(history) / len(history)
        return self._service(service_id).expected_minutes

    def estimates(self, now: dt.datetime) -> Estimates:
        """When each waiting ticket, and a newcomer of each service, is likely called, by
        playing the routing forward (``agent.core.estimate``). Kept until the next operation
        and for at most ``ESTIMATE_REUSE`` of clock time: the take, its place events, the
        snapshot, the status pages and the reads between two commits share one run (an
        estimate is in whole minutes; seconds later it says the same). A take of a normal
        ticket within that time adds the ticket to the kept run (see ``take``)."""
        kept = self._kept
        fresh = kept is not None and abs(now - kept.at) <= ESTIMATE_REUSE
        if kept is not None and fresh and kept.key == self._state_key():
            if kept.estimates is None:
                assert kept.play is not None
                kept.estimates = kept.play.estimates()
            return kept.estimates
        play = play_queue(self, now, [s.id for s in self.config.services])
        found = play.estimates()
        self._kept = _Kept(self._state_key(), now, play, found)
        return found

    def _estimates_of(self, ticket_ids: Iterable[str], now: dt.datetime) -> Estimates:
        """Estimates that hold (at least) ``ticket_ids``, exactly as :meth:`estimates`
        gives them: the kept play's when it is for this state, else a play that stops once
        they are called (``agent.core.estimate.play_until``). A call moves the tickets near
        the head of a line to their ``turn_near``; their waits need the first steps of a
        play, not all of it. The whole play, which reads need, is left to whoever asks
        next (the hall plays it after it has answered: ``Hall._estimate_after``); the
        result is not kept."""
        if self.has_estimates(now):
            return self.estimates(now)
        return play_until(self, now, [s.id for s in self.config.services], ticket_ids)

    def has_estimates(self, now: dt.datetime) -> bool:
        """Whether :meth:`estimates` at ``now`` answers from what is kept (no play)."""
        kept = self._kept
        return (
            kept is not None
            and abs(now - kept.at) <= ESTIMATE_REUSE
            and kept.key == self._state_key()
        )

    def _state_key(self, version: int | None = None) -> tuple[Any, ...]:
        """What the kept estimates must have been made for (tests may change records in
        place between operations: the counts and windows catch most of that)."""
        return (
            self._version if version is None else version,
            len(self.tickets),
            self.hall.next_rank,
            tuple((w.state, w.current) for w in self.windows.values()),
        )

    def _join_kept(
        self, ticket: Ticket, before: tuple[Any, ...], now: dt.datetime
    ) -> tuple[bool, float | None]:
        """A normal ticket just taken, added to the kept run when that run was made for the
        queue as it was just before (``before``) and not longer ago than ESTIMATE_REUSE:
        whether it joined and its estimate, as a new run would give it (None: no window
        serves it), without playing everyone again (the run goes on from where the
        service's newcomer reached the head of its line, agent.core.estimate.Simulation).
        Not joined: the caller plays the queue."""
        kept = self._kept
        if (
            kept is None
            or kept.play is None
            or kept.key != before
            or abs(now - kept.at) > ESTIMATE_REUSE
            or ticket.priority.is_green
            or not self.clock_trusted
        ):
            return False, None
        service = self._service(ticket.service)
        if service.daily_cap is not None and (
            self.hall.counters.get(service.id, 0) >= service.daily_cap
        ):
            return False, None  # the last ticket of the day: no one else is expected
        # The kept run stands for the queue at ``kept.at``: a ticket issued since counts
        # as waiting for no time yet, and in the last hour's arrivals only if issued then.
        expected = kept.play.expected(service.id)
        more = 1 / DEMAND_MINUTES if ticket.issued_at <= kept.at else 0.0
        found = kept.play.append(
            Waiter(ticket.id, ticket.service, False, ticket.rank, 0.0),
            Demand(expected.normal + more, expected.green),
        )
        kept.key = self._state_key()
        kept.estimates = None
        return True, found

    def wait_minutes(
        self, ticket: Ticket, now: dt.datetime, estimates: Estimates | None = None
    ) -> int:
        """The estimated wait of a waiting ticket, in whole minutes (0 for any other)."""
        if ticket.status is not TicketStatus.WAITING:
            return 0
        found = (estimates or self.estimates(now)).ticket_minutes(ticket.id)
        if found is None:  # no window serves its service at all
            return round(self.people_ahead(ticket, now) * self.average_minutes(ticket.service))
        return found

    def places(self, now: dt.datetime) -> dict[str, tuple[int, int]]:
        """People ahead and the estimated wait (minutes) of every waiting ticket, by id
        (as :meth:`people_ahead` and :meth:`wait_minutes`). Kept with the places and
        estimates it was made from: every read of the same state shares it (do not change
        it)."""
        estimates = self.estimates(now)
        placed = self._places_now()
        kept = self._placed
        if kept is not None and kept[0] is placed and kept[1] is estimates:
            return kept[2]
        found = estimates.tickets.get
        out: dict[str, tuple[int, int]] = {}
        for tid, (service, ahead) in placed.places.items():
            minutes = found(tid)
            if minutes is None:  # no window serves it at all
                out[tid] = (ahead, round(ahead * self.average_minutes(service)))
            else:  # (as Estimates.ticket_minutes: never below 0)
                out[tid] = (ahead, round(minutes) if minutes > 0 else 0)
        self._placed = (placed, estimates, out)
        return out

    def _aheads(self) -> dict[str, tuple[str, int]]:
        """Each waiting ticket's service and people ahead (as :meth:`people_ahead`)."""
        return self._places_now().places

    def _places_now(self) -> Places:
        """The waiting tickets' places, kept with the version they are for: an operation
        applied through :meth:`apply` updates them for the services it touched."""
        kept = self._places
        if kept is not None and kept.version == self._version:
            return kept
        self._places = count_places(self.tickets.values(), self._version)
        return self._places

    def _places_after(self, before: Places, out: Outcome) -> tuple[Places, set[str]]:
        """The places after one operation, from those before it (every ticket an operation
        changes is in its outcome, or it would not be saved). Also the ids whose place
        moved."""
        if self._version != before.version + 1 or out is not self._out:
            after = self._places_now()  # not one operation after ``before``: count again
            changed = after.places.items()
            return after, {tid for tid, place in changed if before.places.get(tid, place) != place}
        self._places, moved = places_after(before, self._version, out.tickets)
        return self._places, moved

    def _follows_places(self) -> bool:
        return self.config.queue.turn_near is not None or bool(self.config.ticket.qr_url)

    def _report_places(
        self,
        out: Outcome,
        before: dict[str, tuple[str, int]],
        after: dict[str, tuple[str, int]],
        moved: set[str],
        now: dt.datetime,
    ) -> None:
        """``ticket.turn_near`` and ``ticket.status`` for what the operation moved."""
        near = self.config.queue.turn_near
        turning = [
            tid
            for tid in moved
            if near is not None
            and after[tid][1] <= near < before[tid][1]
            and not self.tickets[tid].turn_near
        ]
        publish: set[str] = set()
        if self.config.ticket.qr_url:
            publish = moved | {
                e.payload.ticket_id for e in out.events if isinstance(e.payload, ev.TicketEvent)
            }
        if not turning and not publish:
            return
        # Without publish, only the few near their turn: a play until they are called.
        estimates = self.estimates(now) if publish else self._estimates_of(turning, now)

        def ticket(tid: str) -> Ticket | None:
            return out.tickets.get(tid) or self.tickets.get(tid)

        def order(tid: str) -> tuple[int, str]:
            found = ticket(tid)
            return (found.rank, tid) if found is not None else (0, tid)

        for tid in sorted(turning, key=order):
            near_turn = self.tickets[tid]
            near_turn.turn_near = True
            self._touch(near_turn)
            wait = self.wait_minutes(near_turn, now, estimates)
            self._ticket_event(
                ev.TicketTurnNear, near_turn, now, ahead=after[tid][1], wait_minutes=wait
            )
        for tid in sorted(publish, key=order):
            t = ticket(tid)
            if t is None or t.token is None:
                continue
            waiting = t.status is TicketStatus.WAITING
            window_name = None
            if t.window is not None and t.status.is_open:
                window_name = next(
                    (w.name for w in self.config.windows if w.id == t.window), t.window
                )
            self._ticket_event(
                ev.TicketStatusUpdate,
                t,
                now,
                token=t.token,
                ahead=after[tid][1] if waiting and tid in after else None,
                wait_minutes=self.wait_minutes(t, now, estimates) if waiting else None,
                window_name=window_name,
            )

    def snapshot(self, now: dt.datetime, *, waiting_list: bool = True) -> JSON:
        """The whole queue as screens and the API show it (``waiting_list=False``: without
        the list of waiting tickets, which screens do not show).

        Kept until the records, the estimates or a service's opening change: every read of
        the same state gets the same dict, which must not be changed."""
        estimates = self.estimates(now)
        local = now.astimezone(self.config.hall.zone)
        # Whether each service is open now, and if not why and when next (the calendar).
        openings = tuple(opening(self.config, s, local) for s in self.config.services)
        key = (self._state_key(), openings)
        kept = self._snapshots.get(waiting_list)
        if kept is not None and kept[0] == key and kept[1] is estimates:
            return kept[2]
        found = build_snapshot(self, estimates, openings, waiting_list)
        self._snapshots[waiting_list] = (key, estimates, found)
        return found

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
        self._version += 1
        for w in config.windows:
            self.windows.setdefault(w.id, WindowStatus(id=w.id))
        kept = {w.id for w in config.windows}
        self.windows = {k: v for k, v in self.windows.items() if k in kept}


# How long (clock time) one run of the estimate serves the same queue: screens and the API
# read it many times a second, and it is shown in whole minutes.
ESTIMATE_REUSE = dt.timedelta(seconds=2)
# Longer than any service (the config's expected_minutes allows up to 480): a clock jump.
_LONGEST_SERVICE_MINUTES = 480.0


def _age(birth: dt.date, today: dt.date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years
