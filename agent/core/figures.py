"""What the queue engine computes from its records, and keeps until they change.

The waits (a play of the routing, ``agent.core.estimate``), the people ahead of every
waiting ticket (``agent.core.places``), the places answer of the status pages and the
snapshot of the screens: each is read many times between two operations, so each is kept
with the version of the records it was made from (:class:`QueueFigures`), and an operation
applied through ``QueueEngine.apply`` updates the places and reports what moved
(``ticket.turn_near``, ``ticket.status``). Separate from the operations
(``agent.core.engine``) because none of this changes the queue: it reads it, and keeps
what it read.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from agent.core import events as ev
from agent.core.estimate import (
    DEMAND_MINUTES,
    Demand,
    Estimates,
    Simulation,
    Waiter,
    play_queue,
    play_until,
)
from agent.core.model import (
    JSON,
    Ticket,
    TicketStatus,
)
from agent.core.opening import opening
from agent.core.places import Places, count_places, place_key, places_after
from agent.core.queue_state import Outcome, QueueState
from agent.core.snapshot import build_snapshot


@dataclasses.dataclass(slots=True)
class _Kept:
    """The last play of the queue (agent.core.estimate) and the state it stands for."""

    key: tuple[Any, ...]  # the engine's _state_key() it was played (or kept up) for
    at: dt.datetime  # the clock time it was played at
    play: Simulation | None  # None in a copy that only reads (the hall's committed engine)
    estimates: Estimates | None = None  # made from the play when first asked for


class QueueFigures(QueueState):
    """The figures of the queue (waits, places, snapshot) and what is kept of them."""

    # What is kept starts empty; each is set on the instance when first made.
    # The last play of the queue (see estimates()) and the last places (see _aheads()).
    _kept: _Kept | None = None
    _places: Places | None = None
    # The last places() answer and the places and estimates it was made from.
    _placed: tuple[Places, Estimates, dict[str, tuple[int, int]]] | None = None
    # The last snapshot with and without the waiting list, and what it was made from
    # (replaced whole, never changed in place: the empty one is shared).
    _snapshots: Mapping[bool, tuple[tuple[Any, ...], Estimates, JSON]] = MappingProxyType({})

    def replaced(self, like: QueueFigures | None = None) -> None:
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
        self._snapshots = {**self._snapshots, waiting_list: (key, estimates, found)}
        return found


# How long (clock time) one run of the estimate serves the same queue: screens and the API
# read it many times a second, and it is shown in whole minutes.
ESTIMATE_REUSE = dt.timedelta(seconds=2)
