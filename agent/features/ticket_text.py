"""What a ticket says, as text: the facts printed on it, where its QR code leads, the
windows that serve it, the materials checklist and the wait lines. Shared by the printed
ticket (``agent.features.printing``), the take's answer and the ticket's status page;
light to import (no printer library)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.model import Priority, Ticket
from agent.runtime.store import StoredEvent


@dataclasses.dataclass(frozen=True, slots=True)
class TicketFacts:
    """What a printed ticket says, taken from its ``ticket.issued`` event or the queue."""

    ticket_id: str
    number: str
    service: str
    day: str
    priority: Priority
    issued_at: dt.datetime | None  # None when the clock was not trustworthy
    ahead: int | None
    wait_minutes: int | None
    # The status page's credential (``Ticket.token``); None: no status-page QR code.
    token: str | None = None

    @classmethod
    def from_event(cls, event: StoredEvent, issued: ev.TicketIssued) -> TicketFacts:
        return cls(
            ticket_id=issued.ticket_id,
            number=issued.ticket,
            service=issued.service,
            day=issued.day,
            priority=Priority(issued.priority),
            issued_at=dt.datetime.fromisoformat(event.at) if event.clock_ok else None,
            ahead=issued.ahead,
            wait_minutes=issued.wait_minutes,
        )


def status_url(config: HallAgentConfig, facts: TicketFacts) -> str | None:
    """Where the ticket's QR code leads: ``ticket.qr_url`` filled in (a district's site), or
    the agent's own status page ``{web.public_url}/t/{token}``; None when there is neither."""
    layout = config.ticket
    if layout.qr_url:
        if "{token}" in layout.qr_url and facts.token is None:
            return None
        return layout.qr_url.format(
            hall=config.hall.id,
            day=facts.day,
            ticket=facts.number,
            ticket_id=facts.ticket_id,
            service=facts.service,
            token=facts.token or "",
        )
    if layout.status_page and config.web.public_url and facts.token:
        return f"{config.web.public_url.rstrip('/')}/t/{facts.token}"
    return None


def ticket_status_url(config: HallAgentConfig, ticket: Ticket) -> str | None:
    """The link the ticket's QR code carries (:func:`status_url`), from the queue's ticket."""
    facts = TicketFacts(
        ticket_id=ticket.id,
        number=ticket.number,
        service=ticket.service,
        day=ticket.day.isoformat(),
        priority=ticket.priority,
        issued_at=ticket.issued_at,
        ahead=None,
        wait_minutes=None,
        token=ticket.token,
    )
    return status_url(config, facts)


def window_names(config: HallAgentConfig, service: str) -> list[str]:
    """The names of the windows that serve ``service``, in the hall's order."""
    return [w.name for w in config.windows if service in w.services]


def checklist(config: HallAgentConfig, service: str) -> tuple[list[str], int]:
    """The materials printed per ``ticket.materials``, and how many are left out."""
    try:
        guide = config.service(service).guide
    except KeyError:
        return [], 0
    materials = list(guide.materials) if guide is not None else []
    chosen = config.ticket.materials
    if chosen == "none":
        return [], 0
    if chosen == "all":
        return materials, 0
    return materials[:chosen], max(0, len(materials) - chosen)


def wait_lines(ahead: int, wait_minutes: int | None) -> list[str]:
    """People ahead and the estimate as the ticket and the status page say them."""
    if ahead <= 0:
        return ["即将叫号，请留意叫号屏"]
    if not wait_minutes:
        return [f"您前面还有 {ahead} 人", "即将叫号，请留意叫号屏"]
    return [f"您前面还有 {ahead} 人", f"预计等待约 {wait_minutes} 分钟"]
