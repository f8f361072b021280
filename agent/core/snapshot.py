"""The queue as screens, the kiosk and the API show it (``QueueEngine.snapshot``).

Separate from ``agent.core.engine`` because it only reads: it turns the engine's records,
the estimates and the calendar into one JSON document and changes nothing. The engine
keeps the result until its records, the estimates or an opening change.
"""

from __future__ import annotations

from agent.core.estimate import Estimates, Queue
from agent.core.model import JSON, Ticket, TicketStatus
from agent.core.opening import Opening, citizen_text
from agent.core.places import arrival


def build_snapshot(
    queue: Queue, estimates: Estimates, openings: tuple[Opening, ...], waiting_list: bool
) -> JSON:
    """The whole queue as screens and the API show it, from the engine's records, its
    estimates and each service's opening now (in the order of the config's services)."""
    services = []
    counts: dict[str, int] = {}
    # Each window's held tickets, found in the same pass (not one pass per window).
    held: dict[str | None, list[Ticket]] = {}
    for t in queue.tickets.values():
        if t.status is TicketStatus.WAITING:
            counts[t.service] = counts.get(t.service, 0) + 1
        elif t.status is TicketStatus.HELD:
            held.setdefault(t.window, []).append(t)
    for s, found in zip(queue.config.services, openings, strict=True):
        waiting = counts.get(s.id, 0)
        wait = estimates.newcomer_minutes(s.id)
        services.append(
            {
                "id": s.id,
                "name": s.name,
                "prefix": s.prefix,
                "waiting": waiting,
                "issued_today": queue.hall.counters.get(s.id, 0),
                "daily_cap": s.daily_cap,
                "open": found.open,
                # Why not, in citizen words, and when it next opens (the kiosk).
                "closed_reason": citizen_text(s.name, found),
                "next_open": None if found.next_open is None else found.next_open.isoformat(),
                "wait_minutes": (
                    round(waiting * queue.average_minutes(s.id)) if wait is None else wait
                ),
            }
        )
    windows = []
    for w in queue.config.windows:
        status = queue.windows[w.id]
        current = None if status.current is None else queue.tickets.get(status.current)
        windows.append(
            {
                **status.to_json(),
                "name": w.name,
                "number": w.number,
                "services": list(w.services),
                "ticket": None if current is None else current.public(),
                "held": [t.number for t in sorted(held.get(w.id, ()), key=arrival)],
            }
        )
    snapshot: JSON = {
        "day": queue.hall.day.isoformat(),
        "services": services,
        "windows": windows,
    }
    if waiting_list:
        snapshot["waiting"] = [t.public() for t in sorted(queue.waiting(), key=arrival)]
    return snapshot
