"""The queue engine's records and the bookkeeping every operation shares.

:class:`QueueState` holds the hall's tickets, windows and counters and what every operation
does before and around its own rule: start the :class:`Outcome` (first closing the business
day when ``now`` is in a later one), record the tickets and windows it changed and the
events it emitted, and look up windows, services and tickets, refusing with a message that
says what exists. The engine's other parts build on it (``agent.core.figures``,
``agent.core.ratings``, ``agent.core.engine``); it is separate so that each of them can be
read with only this underneath, and so that none of them reaches into another's state.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from agent.config import HallAgentConfig, Service, Window
from agent.core import events as ev
from agent.core.errors import NotFound, Refused
from agent.core.events import Event, EventData
from agent.core.model import (
    JSON,
    HallCounters,
    Ticket,
    TicketStatus,
    WindowStatus,
    business_day,
)
from agent.core.places import arrival
from agent.core.status import Move, move


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


def new_token() -> str:
    """A ticket's status-page credential: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the engine needs time-zone-aware datetimes")


class QueueState:
    """The hall's records and the outcome of the operation in progress."""

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
        # Whether ``now`` can be believed; the hall sets it before each operation from its
        # clock check. An untrusted clock never changes the business day.
        self.clock_trusted = True

    # -- bookkeeping -------------------------------------------------------------------

    @property
    def pending(self) -> Outcome:
        """What the operation in progress (or the last one) changed so far."""
        return self._out

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
