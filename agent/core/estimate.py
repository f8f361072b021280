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
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

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


@dataclasses.dataclass(frozen=True, slots=True)
class Waiter:
    """A waiting ticket as routing sees it."""

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


@dataclasses.dataclass(slots=True)
class _Entry:
    id: str
    service: str
    rank: tuple[int, str]
    waited: float  # minutes since issued; negative for one yet to arrive
    real: bool = True  # a waiting ticket (False: an expected arrival or a phantom)
    phantom: bool = False
    arrives: float = 0.0  # minutes from now

    def __post_init__(self) -> None:
        self.arrives = max(0.0, -self.waited)


def _arrivals(
    service: str, rate: float, horizon: float, first_rank: int, green: bool
) -> list[_Entry]:
    if rate <= 0:
        return []
    count = int(rate * horizon + 0.5)
    kind = "g" if green else "n"
    return [
        _Entry(f"~{kind}{service}{k}", service, (first_rank + k, ""), -(k + 0.5) / rate, False)
        for k in range(count)
    ]


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
    greens: dict[str, deque[_Entry]] = {}
    normals: dict[str, deque[_Entry]] = {}
    for w in sorted(waiting, key=lambda w: (w.rank, w.id)):
        entry = _Entry(w.id, w.service, (w.rank, w.id), w.waited)
        (greens if w.green else normals).setdefault(w.service, deque()).append(entry)
    remaining = sum(len(q) for q in greens.values()) + sum(len(q) for q in normals.values())
    for service in dict.fromkeys(newcomers):
        phantom = _Entry(service, service, _LAST, 0.0, False, True)
        normals.setdefault(service, deque()).append(phantom)
        remaining += 1
    for service, rate in (demand or {}).items():
        later = _LAST[0] + 1
        normals.setdefault(service, deque()).extend(
            _arrivals(service, rate.normal, horizon, later, False)
        )
        greens.setdefault(service, deque()).extend(
            _arrivals(service, rate.green, horizon, later, True)
        )
    called: dict[str, float] = {}
    newcomer_at: dict[str, float] = {}

    # Each lane's queues in its order, looked up once: (order, queue, green).
    slots = [
        [
            (order, queue, green)
            for order, service in enumerate(lane.services)
            for queue, green in (
                (greens.setdefault(service, deque()), True),
                (normals.setdefault(service, deque()), False),
            )
        ]
        for lane in lanes
    ]
    heap = [(max(0.0, lane.free_in), i) for i, lane in enumerate(lanes)]
    heapq.heapify(heap)
    while heap and remaining:
        at, i = heapq.heappop(heap)
        best: tuple[int, int, tuple[int, str]] | None = None
        source: deque[_Entry] | None = None
        soonest: float | None = None  # when someone this window serves arrives
        for order, queue, green in slots[i]:
            if not queue:
                continue
            head = queue[0]
            if head.arrives > at:
                soonest = head.arrives if soonest is None else min(soonest, head.arrives)
                continue
            if green:
                key = (0, order, head.rank)
            elif aging is not None and not head.phantom and head.waited + at >= aging:
                key = (1, 0, head.rank)
            else:
                key = (2, order, head.rank)
            if best is None or key < best:
                best, source = key, queue
        if source is None:
            if soonest is not None:
                heapq.heappush(heap, (soonest, i))  # idle until then
            continue  # else: nothing left this window would call
        entry = source.popleft()
        if entry.phantom:
            newcomer_at[entry.service] = at
            remaining -= 1
            heapq.heappush(heap, (at, i))  # a phantom takes no time
            continue
        if entry.real:
            called[entry.id] = at
            remaining -= 1
        heapq.heappush(heap, (at + max(0.0, minutes.get(entry.service, 0.0)), i))
    return Estimates(called, newcomer_at)


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
    """The engine's queue played forward: its open windows (and, for a service no open
    window serves, the windows that serve it as if they opened now), its waiting tickets,
    each service's mean time and the last hour's arrivals expected again."""
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
    return simulate(
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
    )


def _demand(engine: Queue, now: dt.datetime) -> dict[str, Demand]:
    """Who is likely to come in the next hour: as many as came in the last, per service
    and channel (services not issuing now expect no one)."""
    since = now - dt.timedelta(minutes=DEMAND_MINUTES)
    counts: dict[str, list[int]] = {}
    for t in engine.tickets.values():
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
