"""The queue engine: a pure state machine over the hall's tickets and windows.

No I/O and no clocks: every operation takes the wall-clock time ``now`` as data and
returns an :class:`Outcome` (the events it produced and which records it changed).
The store writes an outcome's changes and events in one transaction; the agent runs
operations through one serialized writer, so the engine itself needs no locking.

Operations arrive as data (``agent.core.operations``) and are applied in one ``match``
(:meth:`QueueEngine.apply`); every ticket status change goes through the move table
(``agent.core.status``); every event is a typed payload (``agent.core.events``).

It is one state machine over the same tickets, windows and counters, read in parts that
each stand on the one below:

- ``agent.core.queue_state``: the records, the outcome in progress, lookups, and the
  business-day rollover that starts every operation;
- ``agent.core.figures``: what is computed from the records and kept until they change
  (waits, places, the snapshot), and the place events an operation causes;
- ``agent.core.ratings``: 好差评 at a window's rater;
- this module: the operations (issuing, routing, calling, transfers, staff, config).

The places themselves (``agent.core.places``) and the snapshot document
(``agent.core.snapshot``) are plain functions of the records.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from typing import Literal

from agent.config import HallAgentConfig, Window
from agent.core import events as ev
from agent.core import operations as op
from agent.core import wording
from agent.core.errors import Refused
from agent.core.figures import QueueFigures
from agent.core.model import (
    MAX_STAFF_PER_WINDOW,
    HallCounters,
    Priority,
    Source,
    Ticket,
    TicketStatus,
    WindowState,
    WindowStatus,
    business_day,
)
from agent.core.opening import citizen_text, opening
from agent.core.places import arrival
from agent.core.queue_state import Outcome
from agent.core.ratings import RatingRules
from agent.core.status import Move, allowed, check, move

__all__ = ["Outcome", "QueueEngine"]


class QueueEngine(RatingRules, QueueFigures):
    """The hall's queue. Mutates its state in place; every call returns an Outcome."""

    @classmethod
    def fresh(cls, config: HallAgentConfig, now: dt.datetime) -> QueueEngine:
        return cls(config, HallCounters(day=business_day(now, config)))

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
        out, ticket = self._send_away(window_id, Move.NO_SHOW, now, staff)
        ticket.ended_at = now
        self._ticket_event(ev.TicketNoShow, ticket, now, called_count=ticket.called_count)
        out.result = {"ticket": ticket.public()}
        return out

    def hold(self, window_id: str, now: dt.datetime, *, staff: str | None = None) -> Outcome:
        """Park the current ticket (the citizen fetches a paper); call it back by number."""
        out, ticket = self._send_away(window_id, Move.HOLD, now, staff)
        self._ticket_event(ev.TicketHeld, ticket, now)
        out.result = {"ticket": ticket.public()}
        return out

    def _send_away(
        self, window_id: str, step: Move, now: dt.datetime, staff: str | None
    ) -> tuple[Outcome, Ticket]:
        """The window's current ticket leaves it by ``step`` (no-show, hold): the window
        has no ticket then."""
        out = self._begin(now)
        window, ticket = self._require_current(window_id)
        check(ticket, step)
        self._pressed_by(window, ticket, staff)
        move(ticket, step)
        window.current = None
        self._touch(ticket)
        self._touch_window(window)
        return out, ticket

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


# Longer than any service (the config's expected_minutes allows up to 480): a clock jump.
_LONGEST_SERVICE_MINUTES = 480.0


def _age(birth: dt.date, today: dt.date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years
