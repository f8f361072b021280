"""Where each waiting ticket stands: the lines of the queue in routing order.

A ticket's place (its service's line, the people ahead of it) is read by every status
page, the turn-near rule and the take's answer; counting it again after each operation
would walk every ticket. So the places are an immutable value (:class:`Places`) that the
engine keeps with the version of its records and updates for only the lines an operation
touched (:func:`places_after`). Separate from ``agent.core.engine`` because it is plain
arithmetic over tickets: no engine state, no events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from agent.core.model import Ticket, TicketStatus

# One line of a service: (place key, ticket id), sorted.
Line = list[tuple[tuple[int, int], str]]


@dataclasses.dataclass(frozen=True, slots=True)
class Places:
    """Every waiting ticket's place: each service's line in routing order (green channel
    first, then by rank) and, by ticket id, its service and the people ahead of it.
    Never changed once made (an operation makes a new one), so copies can share it."""

    version: int
    lines: dict[str, Line]
    places: dict[str, tuple[str, int]]


def place_key(ticket: Ticket) -> tuple[int, int]:
    """A waiting ticket's order in its service's line: green channel first, then rank."""
    return (0 if ticket.priority.is_green else 1, ticket.rank)


def arrival(ticket: Ticket) -> tuple[int, str]:
    """Queue order; the id breaks rank ties (a transfer to the front can share a rank) so
    the order never depends on how the tickets were loaded."""
    return (ticket.rank, ticket.id)


def count_places(tickets: Iterable[Ticket], version: int) -> Places:
    """The places of the waiting ones among ``tickets``, counted from nothing."""
    lines: dict[str, Line] = {}
    for t in tickets:
        if t.status is TicketStatus.WAITING:
            lines.setdefault(t.service, []).append((place_key(t), t.id))
    places: dict[str, tuple[str, int]] = {}
    for service, line in lines.items():
        line.sort()
        places.update(_placed(lines, service))
    return Places(version, lines, places)


def places_after(
    before: Places, version: int, touched: dict[str, Ticket]
) -> tuple[Places, set[str]]:
    """The places after one operation that changed ``touched``, from those before it: only
    the lines of the services whose tickets it touched change. Also the ids whose place
    moved."""
    affected: set[str] = set()
    for tid, ticket in touched.items():
        old = before.places.get(tid)
        if old is not None:
            affected.add(old[0])
        if ticket.status is TicketStatus.WAITING:
            affected.add(ticket.service)
    if not affected:
        return Places(version, before.lines, before.places), set()
    lines = dict(before.lines)
    places = dict(before.places)
    if _joined_at_the_back(before, touched, lines, places):
        return Places(version, lines, places), set()
    for tid in touched:
        places.pop(tid, None)
    moved: set[str] = set()
    for service in affected:
        line = [item for item in before.lines.get(service, ()) if item[1] not in touched]
        line.extend(
            (place_key(t), t.id)
            for t in touched.values()
            if t.status is TicketStatus.WAITING and t.service == service
        )
        line.sort()
        lines[service] = line
        for tid, place in _placed(lines, service):
            places[tid] = place
            if before.places.get(tid, place) != place:
                moved.add(tid)
    return Places(version, lines, places), moved


def _placed(lines: dict[str, Line], service: str) -> list[tuple[str, tuple[str, int]]]:
    """(id, (service, people ahead)) for one sorted line: tickets with the same key (a
    transfer to the front can share a rank) have the same people ahead."""
    out = []
    ahead = 0
    previous: tuple[int, int] | None = None
    for i, (key, tid) in enumerate(lines.get(service, ())):
        if key != previous:
            ahead, previous = i, key
        out.append((tid, (service, ahead)))
    return out


def _joined_at_the_back(
    before: Places,
    touched: dict[str, Ticket],
    lines: dict[str, Line],
    places: dict[str, tuple[str, int]],
) -> bool:
    """A take's usual case: the only tickets touched are new, waiting and behind everyone
    of their service. Then each joins the end of its line (in ``lines`` and ``places``,
    copies of ``before``'s) and no one else's place moves. False (and nothing changed)
    otherwise."""
    joined: list[tuple[str, tuple[tuple[int, int], str]]] = []
    for tid, ticket in touched.items():
        if tid in before.places or ticket.status is not TicketStatus.WAITING:
            return False
        key = place_key(ticket)
        line = before.lines.get(ticket.service, [])
        if line and line[-1][0] >= key:
            return False
        joined.append((ticket.service, (key, tid)))
    if len({service for service, _ in joined}) != len(joined):
        return False  # two in one line: counted the usual way
    for service, item in joined:
        line = lines.get(service, [])
        places[item[1]] = (service, len(line))
        lines[service] = [*line, item]
    return True
