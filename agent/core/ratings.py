"""The satisfaction rating (好差评) at a window's rater: when a rating opens, what a
citizen may answer, and what is recorded when they do not answer in time.

A rating opens when a window finishes a ticket (``rating.start_on``) or on request, is
answered once, and ends by an answer, a timeout (the policy may record a default, never
over a bad key the citizen pressed) or the next ticket's rating. Separate from the queue's
operations (``agent.core.engine``) because it changes only the window's open rating and the
ticket's recorded rating; the engine calls :meth:`RatingRules._rating_after_finish` when it
finishes a ticket.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.model import (
    JSON,
    MAX_RATING_COMMENT,
    RatingLevel,
    Ticket,
    TicketStatus,
    WindowStatus,
)
from agent.core.queue_state import Outcome, QueueState


class RatingRules(QueueState):
    """The 好差评 operations of the queue engine."""

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
