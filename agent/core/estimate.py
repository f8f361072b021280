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
import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

# A phantom sorts after every real ticket of its service.
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


def simulate(
    lanes: Sequence[Lane],
    waiting: Iterable[Waiter],
    minutes: Mapping[str, float],
    *,
    aging: float | None = None,
    newcomers: Iterable[str] = (),
) -> Estimates:
    """Play the queue forward (see the module); ``minutes`` is the mean service time of
    each service, ``newcomers`` the services whose newcomer wait is wanted."""
    greens: dict[str, deque[Waiter]] = {}
    normals: dict[str, deque[Waiter]] = {}
    for w in sorted(waiting, key=lambda w: (w.rank, w.id)):
        (greens if w.green else normals).setdefault(w.service, deque()).append(w)
    phantoms = set(newcomers)
    called: dict[str, float] = {}
    newcomer_at: dict[str, float] = {}

    heap = [(max(0.0, lane.free_in), i) for i, lane in enumerate(lanes)]
    heapq.heapify(heap)
    while heap:
        at, i = heapq.heappop(heap)
        lane = lanes[i]
        best: tuple[int, int, int, str] | None = None
        source: deque[Waiter] | None = None
        phantom: str | None = None
        for order, service in enumerate(lane.services):
            queue = greens.get(service)
            if queue:
                key = (0, order, queue[0].rank, queue[0].id)
                if best is None or key < best:
                    best, source, phantom = key, queue, None
            queue = normals.get(service)
            if queue:
                head = queue[0]
                aged = aging is not None and head.waited + at >= aging
                key = (1, 0, head.rank, head.id) if aged else (2, order, head.rank, head.id)
                if best is None or key < best:
                    best, source, phantom = key, queue, None
            elif service in phantoms:
                key = (2, order, *_LAST)
                if best is None or key < best:
                    best, source, phantom = key, None, service
        if best is None:
            continue  # nothing left this window would call
        if phantom is not None:
            phantoms.discard(phantom)
            newcomer_at[phantom] = at
            heapq.heappush(heap, (at, i))  # a phantom takes no time
            continue
        assert source is not None
        ticket = source.popleft()
        called[ticket.id] = at
        heapq.heappush(heap, (at + max(0.0, minutes.get(ticket.service, 0.0)), i))
    return Estimates(called, newcomer_at)
