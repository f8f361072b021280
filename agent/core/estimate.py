"""Wait estimates by simulating the hall's routing (pure, no clock, no I/O).

In a 全科 hall several services share windows: a window serves its services in its own
order, green-channel tickets first, and a window that serves four services takes a citizen
of one of them only when it is free and no one it prefers is waiting. Dividing one service's
backlog by the windows that serve it (what the agent did before) ignores everyone else
queued at the same windows and runs low. Instead, the queue as it stands is played forward:

- every *available* window is a lane, free once its current citizen is done (the mean
  service time of that citizen's service minus the time already spent, never below 0);
  the available windows are the open ones, and, for a service no open window serves (the
  hall has not opened yet, everyone serving it is paused), the windows that serve it as if
  they opened now;
- the lane that is free first takes the ticket routing would give it then (the engine's
  order: green channel and appointments in the window's service order, then normal tickets
  that waited ``aging_minutes``, oldest first, then normal tickets in the window's service
  order), and is busy for that service's mean time;
- a ticket's estimate is when a lane takes it. No one is assumed to arrive later.

"A newcomer to service S" (the wait a screen shows per service) is a phantom ticket at the end
of S's queue that takes no time: it is called when a window would call the next ticket of S
after everyone now waiting, and it delays no one, so one run answers every service at once.

The run is O(tickets × services per window + tickets × log windows): 200 waiting tickets over
8 windows take well under a millisecond (``bench/estimate_error.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from agent.config import HallAgentConfig, Window
from agent.core.model import HallCounters, Ticket, TicketStatus, WindowState, WindowStatus
from agent.core.opening import opening

# Estimates expect the next this-many minutes to bring as many citizens as the last did.
DEMAND_MINUTES = 60.0

# A phantom sorts after every waiting ticket of its service, and before any expected arrival.
_LAST = (1 << 62, "~")


@dataclasses.dataclass(frozen=True, slots=True)
class Lane:
    """A window that will call tickets: its services in its order, when it is free."""

    id: str
    services: tuple[str, ...]
    free_in: float  # minutes from now


class Waiter(NamedTuple):
    """A waiting ticket as routing sees it (a tuple: a play makes one per waiting ticket)."""

    id: str
    service: str
    green: bool
    rank: int
    waited: float  # minutes since it was issued


@dataclasses.dataclass(frozen=True, slots=True)
class Estimates:
    """Minutes until each ticket is called, and until a newcomer of each service would be.

    A ticket or service no lane reaches (no window serves it) is absent.
    """

    tickets: Mapping[str, float]
    newcomers: Mapping[str, float]

    def ticket_minutes(self, ticket_id: str) -> int | None:
        found = self.tickets.get(ticket_id)
        return None if found is None else max(0, round(found))

    def newcomer_minutes(self, service: str) -> int | None:
        found = self.newcomers.get(service)
        return None if found is None else max(0, round(found))


@dataclasses.dataclass(frozen=True, slots=True)
class Demand:
    """Citizens expected to arrive for one service, per minute, normal and green channel
    (the engine takes the last hour's takes as the next hour's)."""

    normal: float = 0.0
    green: float = 0.0


# A line's entries: a waiting ticket is (rank, id, waited); the line's phantom and its
# expected arrivals are not stored (see _Line.head).
_Real = tuple[tuple[int, str], str, float]
# A lane's line as a play reads it: (order at the lane, line index, green, waiting tickets,
# how many, has a phantom, expected arrivals, per minute, first arrival's rank).
_Slot = tuple[int, int, bool, list[_Real], int, bool, int, float, int]


class _Line:
    """One service's green-channel or normal line, in the order routing takes it: the
    waiting tickets, then (normal lines of a newcomer service) the phantom, then the
    expected arrivals. A play walks it with a position (one per line in a ``_Mark``)."""

    __slots__ = ("count", "first_rank", "green", "minutes", "phantom", "rate", "reals", "service")

    def __init__(self, service: str, green: bool) -> None:
        self.service = service
        self.green = green
        self.reals: list[_Real] = []
        self.phantom = False
        self.rate = 0.0
        self.count = 0
        self.first_rank = _LAST[0] + 1
        self.minutes = 0.0  # the service's mean time (never below 0)

    def expect(self, rate: float, horizon: float) -> None:
        self.rate = rate
        self.count = int(rate * horizon + 0.5) if rate > 0 else 0


@dataclasses.dataclass(slots=True)
class _Mark:
    """The play's state at one moment: where it stood in every line, the lanes' heap, how
    many waiting tickets and phantoms were called, and how many steps led there."""

    step: int
    pos: list[int]
    heap: list[tuple[float, int]]
    done: int


class _Part:
    """A play of one part of the queue (see :class:`Simulation`) that can take one more
    ticket at the back of a service's normal line without playing everything again.

    Until the moment the service's phantom is called, a ticket added behind everyone of
    that service changes nothing: routing sees only the heads of lines, and the ticket is
    at the head only where the phantom would be, with the same key (the service's expected
    arrivals are behind it). It is called then in the phantom's place and takes its
    service's time. So the play keeps its state at that moment (a :class:`_Mark` per
    service: the lanes' heap and a position per line) and :meth:`append` goes on from
    there, with the service's arrivals re-counted: the result is the same as a play of
    the whole queue with the ticket in it (``tests/test_estimate.py`` checks this against
    :func:`simulate`). With aging, a real ticket at the head may age and be called before
    the phantom would be: the mark is then where the phantom reached the head. In a long
    queue the play after the mark is short: a take costs a few steps, not a whole play.

    :meth:`append` plays on from the mark only until the new ticket is called (its
    estimate) and leaves the rest of the play paused: the next ticket added goes back to
    its own mark anyway, so several takes in a row (the hall's writer applies a group of
    them before it commits) play the queue behind them once, not once each. Whatever reads
    the play (:meth:`estimates`) plays it to the end first; a mark the paused play has not
    reached yet is played to when a ticket of its service is added.
    """

    def __init__(
        self,
        lanes: Sequence[Lane],
        waiting: Iterable[Waiter],
        minutes: Mapping[str, float],
        *,
        aging: float | None = None,
        newcomers: Iterable[str] = (),
        demand: Mapping[str, Demand] | None = None,
        horizon: float = 60.0,
        until: Iterable[str] | None = None,
        called: dict[str, float],
        newcomer_at: dict[str, float],
    ) -> None:
        self._minutes = minutes
        # With ``until``: stop once these tickets are called (see :func:`play_until`).
        self._until = None if until is None else set(until)
        self._aging = aging
        self._horizon = horizon
        self._lines: list[_Line] = []
        self._index: dict[tuple[str, bool], int] = {}
        total = 0
        for w in sorted(waiting, key=lambda w: (w.rank, w.id)):
            self._line(w.service, w.green).reals.append(((w.rank, w.id), w.id, w.waited))
            total += 1
        for service in dict.fromkeys(newcomers):
            self._line(service, False).phantom = True
            total += 1
        for service, rate in (demand or {}).items():
            self._line(service, False).expect(rate.normal, horizon)
            self._line(service, True).expect(rate.green, horizon)
        # Each lane's lines in its order, looked up once: (order, line index, green).
        self._slots = [
            [
                (order, self._index_of(service, green), green)
                for order, service in enumerate(lane.services)
                for green in (True, False)
            ]
            for lane in lanes
        ]
        self._slots_now: list[list[_Slot]] | None = None
        self._total = total
        # Shared by the parts of one play (each writes only its own tickets and services).
        self.called = called
        self.newcomer_at = newcomer_at
        # Where each newcomer service's phantom came to the head of its line.
        self._marks: dict[str, _Mark] = {}
        # Where the play stopped, when it did before the end (see append); None: played out.
        self._paused: _Mark | None = None
        heap = [(max(0.0, lane.free_in), i) for i, lane in enumerate(lanes)]
        heapq.heapify(heap)
        start = _Mark(0, [0] * len(self._lines), heap, 0)
        if aging is not None:
            for line in self._lines:
                if line.phantom and not line.reals:
                    self._marks[line.service] = _Mark(0, list(start.pos), list(heap), 0)
        self._play(start)

    def _line(self, service: str, green: bool) -> _Line:
        key = (service, green)
        found = self._index.get(key)
        if found is None:
            found = self._index[key] = len(self._lines)
            line = _Line(service, green)
            line.minutes = max(0.0, self._minutes.get(service, 0.0))
            self._lines.append(line)
        return self._lines[found]

    def _index_of(self, service: str, green: bool) -> int:
        self._line(service, green)
        return self._index[(service, green)]

    def _compiled(self) -> list[list[_Slot]]:
        """Each lane's lines as the play walks them, with what the play reads of each line
        unpacked once (attribute look-ups cost more than the step's own work); lines with
        no one in them or expected (an empty green channel) are left out. Made again after
        :meth:`append` changed a line."""
        found = self._slots_now
        if found is None:
            lines = self._lines
            found = self._slots_now = [
                [
                    (
                        order,
                        index,
                        green,
                        line.reals,
                        len(line.reals),
                        line.phantom,
                        line.count,
                        line.rate,
                        line.first_rank,
                    )
                    for order, index, green in slots
                    if (line := lines[index]).reals or line.phantom or line.count > 0
                ]
                for slots in self._slots
            ]
        return found

    # One loop on purpose: it is the estimate's hot path, a helper per step would cost a call.
    def _play(  # noqa: PLR0915
        self, mark: _Mark, *, ticket: str | None = None, service: str | None = None
    ) -> None:
        """Play on from ``mark`` (which it consumes) until everyone waiting and every
        phantom is called or no lane is left that serves them; with ``ticket``, only until
        that ticket is called, with ``service``, until the service's mark is set: the play
        is then paused (``_paused``) where it stands."""
        lines, slots, aging = self._lines, self._compiled(), self._aging
        pos, heap, done, step, total = mark.pos, mark.heap, mark.done, mark.step, self._total
        until = self._until
        called, newcomer_at, marks = self.called, self.newcomer_at, self._marks
        watch = until is not None or ticket is not None or service is not None
        pop, push = heapq.heappop, heapq.heappush
        while heap and done < total:
            if watch:
                if until is not None and not until:
                    return  # every ticket asked for is called: the rest cannot change them
                if (ticket is not None and ticket in called) or (
                    service is not None and service in marks
                ):
                    self._paused = _Mark(step, pos, heap, done)
                    return
            at, i = pop(heap)
            step += 1
            best: tuple[int, int, tuple[int, str]] | None = None
            source = -1
            soonest: float | None = None  # when someone this window serves arrives
            for order, index, green, reals, n, phantom_line, count, rate, first in slots[i]:
                p = pos[index]
                phantom = False
                if p < n:
                    rank, _, waited = reals[p]
                elif phantom_line and p == n:
                    rank, waited, phantom = _LAST, 0.0, True
                else:
                    k = p - n - phantom_line
                    if k >= count:
                        continue
                    arrives = (k + 0.5) / rate
                    if arrives > at:  # not yet arrived
                        if soonest is None or arrives < soonest:
                            soonest = arrives
                        continue
                    rank, waited = (first + k, ""), -arrives
                if green:
                    key = (0, order, rank)
                elif aging is not None and not phantom and waited + at >= aging:
                    key = (1, 0, rank)
                else:
                    key = (2, order, rank)
                if best is None or key < best:
                    best, source = key, index
            if source < 0:
                if soonest is not None:
                    push(heap, (soonest, i))  # idle until then
                continue  # else: nothing left this window would call
            line = lines[source]
            p = pos[source]
            n = len(line.reals)
            if line.phantom and p == n:
                if aging is None:
                    # The phantom is called now: a ticket added behind everyone of its
                    # service would be called here in its place (without aging nothing
                    # tells them apart before), so a play with it goes on from just before
                    # this step.
                    again = _Mark(step - 1, list(pos), list(heap), done)
                    push(again.heap, (at, i))
                    marks[line.service] = again
                pos[source] = p + 1
                newcomer_at[line.service] = at
                push(heap, (at, i))  # a phantom takes no time
                done += 1
                continue
            pos[source] = p + 1
            push(heap, (at + line.minutes, i))
            if p >= n:
                continue  # an expected arrival
            taken = line.reals[p][1]
            called[taken] = at
            if until is not None:
                until.discard(taken)
            done += 1
            if p + 1 == n and line.phantom and aging is not None:
                # The phantom is at the head now. With aging, a ticket behind everyone may
                # be called sooner than the phantom (it ages, a phantom does not): a play
                # with it goes on from here.
                marks[line.service] = _Mark(step, list(pos), list(heap), done)

    def expected(self, service: str) -> Demand:
        """The arrivals the play expects for ``service``, per minute."""
        found = [self._index.get((service, green)) for green in (False, True)]
        rates = [0.0 if i is None else self._lines[i].rate for i in found]
        return Demand(rates[0], rates[1])

    def _play_out(self, service: str | None = None) -> None:
        """Play a paused play on: to the end, or until ``service``'s mark is set."""
        paused, self._paused = self._paused, None
        if paused is not None:
            self._play(paused, service=service)

    def play_out(self) -> None:
        """Play a paused play to the end."""
        self._play_out()

    def append(self, waiter: Waiter, demand: Demand | None = None) -> float | None:
        """Add a normal ticket behind every waiting ticket of its service (a take) and
        play on; returns its estimate (None: no lane serves the service). ``demand``:
        the service's expected arrivals now (the new ticket counts in the last hour's)."""
        line = self._line(waiter.service, False)
        if line.reals and line.reals[-1][0] >= (waiter.rank, waiter.id):
            raise ValueError(f"ticket {waiter.id} is not behind everyone of its service")
        if not line.phantom:
            raise ValueError(f"{waiter.service} was not played with a newcomer")
        if waiter.service not in self._marks:
            self._play_out(waiter.service)  # a paused play may not have come to it yet
        mark = self._marks.pop(waiter.service, None)
        line.reals.append(((waiter.rank, waiter.id), waiter.id, waiter.waited))
        self._slots_now = None
        self._total += 1
        if demand is not None:
            line.expect(demand.normal, self._horizon)
        if mark is None:  # no lane reaches this service: nobody is called
            return None
        self._marks = {s: m for s, m in self._marks.items() if m.step <= mark.step}
        # What was played (or paused) after the mark is played again with the new ticket.
        self._paused = None
        self._play(_Mark(mark.step, list(mark.pos), list(mark.heap), mark.done), ticket=waiter.id)
        return self.called.get(waiter.id)


class Simulation:
    """A play of the queue (see the module) that can take one more ticket at the back of
    a service's normal line without playing everything again (:meth:`append`).

    Windows that share no service, not even through other windows (a 社保 window and a
    户籍 window, when no open window serves both), never wait for each other: the queue is
    played in such *parts*, each its own play (:class:`_Part`) over its windows and the
    lines of their services, and a take plays again only its own part. Together the parts
    give exactly the estimates of one play of everything (``tests/test_estimate.py``
    checks this against a plain reference play). Services no window serves make a part
    with no windows: nobody in it is called.
    """

    def __init__(
        self,
        lanes: Sequence[Lane],
        waiting: Iterable[Waiter],
        minutes: Mapping[str, float],
        *,
        aging: float | None = None,
        newcomers: Iterable[str] = (),
        demand: Mapping[str, Demand] | None = None,
        horizon: float = 60.0,
        until: Iterable[str] | None = None,
    ) -> None:
        waiting = list(waiting)
        newcomers = list(dict.fromkeys(newcomers))
        demand = demand or {}
        # Services joined by the windows that serve them (union-find on service ids).
        root: dict[str, str] = {}

        def find(service: str) -> str:
            root.setdefault(service, service)
            while root[service] != service:
                root[service] = root[root[service]]
                service = root[service]
            return service

        for lane in lanes:
            for service in lane.services:
                root[find(service)] = find(lane.services[0])
        unserved = "\0"  # the part of the services no window serves (not a service id)
        served = set(root)

        def part_of(service: str) -> str:
            return find(service) if service in served else unserved

        keys: dict[str, None] = {}
        for lane in lanes:
            if lane.services:
                keys.setdefault(find(lane.services[0]))
        part_lanes: dict[str, list[Lane]] = {key: [] for key in keys}
        for lane in lanes:  # each part keeps its windows in their order (ties: the first)
            if lane.services:
                part_lanes[find(lane.services[0])].append(lane)
        part_waiting: dict[str, list[Waiter]] = {}
        for w in waiting:
            part_waiting.setdefault(part_of(w.service), []).append(w)
        part_newcomers: dict[str, list[str]] = {}
        for service in newcomers:
            part_newcomers.setdefault(part_of(service), []).append(service)
        part_demand: dict[str, dict[str, Demand]] = {}
        for service, rate in demand.items():
            part_demand.setdefault(part_of(service), {})[service] = rate
        asked = None if until is None else set(until)
        self._until = asked
        self.called: dict[str, float] = {}
        self.newcomer_at: dict[str, float] = {}
        self._shared = False
        self._parts: dict[str, _Part] = {}
        for key in dict.fromkeys([*part_lanes, *part_waiting, *part_newcomers, *part_demand]):
            mine = part_waiting.get(key, [])
            if asked is not None and not asked.intersection(w.id for w in mine):
                continue  # nothing asked for is in this part: no need to play it
            self._parts[key] = _Part(
                part_lanes.get(key, []) if key != unserved else [],
                mine,
                minutes,
                aging=aging,
                newcomers=part_newcomers.get(key, ()),
                demand=part_demand.get(key),
                horizon=horizon,
                until=None if asked is None else asked.intersection(w.id for w in mine),
                called=self.called,
                newcomer_at=self.newcomer_at,
            )
        self._part_of = {
            service: self._parts[key]
            for service in {*served, *(w.service for w in waiting), *newcomers, *demand}
            if (key := part_of(service)) in self._parts
        }

    def expected(self, service: str) -> Demand:
        """The arrivals the play expects for ``service``, per minute."""
        part = self._part_of.get(service)
        return Demand() if part is None else part.expected(service)

    def estimates(self) -> Estimates:
        """The play's estimates (played to the end first; kept as they are: a later
        :meth:`append` works on copies)."""
        for part in self._parts.values():
            part.play_out()
        self._shared = True
        return Estimates(self.called, self.newcomer_at)

    def append(self, waiter: Waiter, demand: Demand | None = None) -> float | None:
        """Add a normal ticket behind every waiting ticket of its service (a take) and
        play on its part; returns its estimate (None: no lane serves the service).
        ``demand``: the service's expected arrivals now (the new ticket counts in the last
        hour's)."""
        if self._until is not None:
            raise ValueError("a play stopped early (until=) cannot take more tickets")
        if waiter.green:
            raise ValueError("only a normal ticket joins at the back of its line")
        part = self._part_of.get(waiter.service)
        if part is None:
            raise ValueError(f"{waiter.service} was not played with a newcomer")
        if self._shared:
            self.called, self.newcomer_at = dict(self.called), dict(self.newcomer_at)
            for each in self._parts.values():
                each.called, each.newcomer_at = self.called, self.newcomer_at
            self._shared = False
        return part.append(waiter, demand)


def simulate(
    lanes: Sequence[Lane],
    waiting: Iterable[Waiter],
    minutes: Mapping[str, float],
    *,
    aging: float | None = None,
    newcomers: Iterable[str] = (),
    demand: Mapping[str, Demand] | None = None,
    horizon: float = 60.0,
) -> Estimates:
    """Play the queue forward (see the module); ``minutes`` is the mean service time of
    each service, ``newcomers`` the services whose newcomer wait is wanted, ``demand`` the
    citizens expected to arrive during the next ``horizon`` minutes (they are served in
    their turn, and green-channel ones before the others)."""
    return Simulation(
        lanes,
        waiting,
        minutes,
        aging=aging,
        newcomers=newcomers,
        demand=demand,
        horizon=horizon,
    ).estimates()


# -- the hall's queue as the simulation sees it ------------------------------------------


class Queue(Protocol):
    """What the estimate reads of the queue engine (``agent.core.engine.QueueEngine``)."""

    config: HallAgentConfig
    hall: HallCounters
    tickets: dict[str, Ticket]
    windows: dict[str, WindowStatus]

    def waiting(self, service_id: str | None = None) -> list[Ticket]: ...

    def average_minutes(self, service_id: str) -> float: ...


def estimate_queue(engine: Queue, now: dt.datetime, newcomers: list[str]) -> Estimates:
    """The engine's queue played forward (see :func:`play_queue`)."""
    return play_queue(engine, now, newcomers).estimates()


def play_until(
    engine: Queue, now: dt.datetime, newcomers: list[str], tickets: Iterable[str]
) -> Estimates:
    """The estimates of ``tickets`` as :func:`estimate_queue` gives them, from a play that
    stops once they are called. A play is a walk in time order in which nothing later
    changes what came before, so a ticket near the head of its line (a ``ticket.turn_near``
    after a call) costs a few steps, not a play of everyone. The result holds only what was
    called or reached by then: ask it only about ``tickets``."""
    return play_queue(engine, now, newcomers, until=tickets).estimates()


def play_queue(
    engine: Queue, now: dt.datetime, newcomers: list[str], *, until: Iterable[str] | None = None
) -> Simulation:
    """The engine's queue played forward: its open windows (and, for a service no open
    window serves, the windows that serve it as if they opened now), its waiting tickets,
    each service's mean time and the last hour's arrivals expected again (``until``: see
    :func:`play_until`)."""
    waiting = engine.waiting()
    lanes: list[Lane] = []
    taken: set[str] = set()
    for w in engine.config.windows:
        if engine.windows[w.id].state is WindowState.OPEN:
            lanes.append(_lane(engine, w, now))
            taken.add(w.id)
    served = {s for lane in lanes for s in lane.services}
    missing = ({t.service for t in waiting} | set(newcomers)) - served
    if missing:  # not open yet, or everyone serving it paused: as if they opened now
        for w in engine.config.windows:  # (for those services only: the others' estimates
            if w.id not in taken and missing.intersection(w.services):  # stay as they are)
                lane = _lane(engine, w, now)
                only = tuple(s for s in lane.services if s in missing)
                lanes.append(dataclasses.replace(lane, services=only))
    return Simulation(
        lanes,
        (
            Waiter(
                t.id,
                t.service,
                t.priority.is_green,
                t.rank,
                max(0.0, (now - t.issued_at).total_seconds() / 60),
            )
            for t in waiting
        ),
        {s.id: engine.average_minutes(s.id) for s in engine.config.services},
        aging=engine.config.queue.aging_minutes,
        newcomers=newcomers,
        demand=_demand(engine, now),
        horizon=DEMAND_MINUTES,
        until=until,
    )


def service_demand(engine: Queue, now: dt.datetime, service: str) -> Demand:
    """One service's expected arrivals (see :func:`_demand`)."""
    return _demand(engine, now, only=service).get(service, Demand())


def _demand(engine: Queue, now: dt.datetime, only: str | None = None) -> dict[str, Demand]:
    """Who is likely to come in the next hour: as many as came in the last, per service
    and channel (services not issuing now expect no one)."""
    since = now - dt.timedelta(minutes=DEMAND_MINUTES)
    counts: dict[str, list[int]] = {}
    for t in engine.tickets.values():
        if only is not None and t.service != only:
            continue
        if since < t.issued_at <= now and t.day == engine.hall.day:
            counts.setdefault(t.service, [0, 0])[1 if t.priority.is_green else 0] += 1
    local = now.astimezone(engine.config.hall.zone)
    demand: dict[str, Demand] = {}
    for service_id, (normal, green) in counts.items():
        try:
            service = engine.config.service(service_id)
        except KeyError:
            continue
        full = service.daily_cap is not None and (
            engine.hall.counters.get(service_id, 0) >= service.daily_cap
        )
        if opening(engine.config, service, local).open and not full:
            demand[service_id] = Demand(normal / DEMAND_MINUTES, green / DEMAND_MINUTES)
    return demand


def _lane(engine: Queue, window: Window, now: dt.datetime) -> Lane:
    status = engine.windows[window.id]
    current = None if status.current is None else engine.tickets.get(status.current)
    free_in = 0.0
    if current is not None and current.status in (TicketStatus.CALLED, TicketStatus.SERVING):
        started = current.serving_at or current.called_at or now
        spent = max(0.0, (now - started).total_seconds() / 60)
        free_in = max(0.0, engine.average_minutes(current.service) - spent)
    return Lane(window.id, tuple(window.services), free_in)
