"""A ticket's status page on the citizen's phone: ``/t/{token}``.

The printed ticket's QR code opens ``{web.public_url}/t/{token}`` on the hall's Wi-Fi. The
token (``Ticket.token``: 128 random bits, saved with the ticket in the take's transaction)
is the only credential: the page shows the ticket's number, service, status, the people
ahead, the estimated wait, the windows that serve it and the service guide's materials —
nothing personal — and an unknown token gets the same "not found" page as a malformed one.

The page's state is the ``ticket`` view of the pages' feed (``agent/web/pages.py``): every
rebuild of the hall's view (one per commit) reads today's tickets and their places once
(:class:`TicketStates`: a row per ticket, made again only for the tickets the commit
changed, and one simulation of the queue for all of them), and
each open page gets its own ticket's state over Server-Sent Events when it changed
(``/pages/feed/ticket?token=…``; ``/pages/state/ticket?token=…`` once, as JSON).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from agent.config import HallAgentConfig
from agent.core.engine import QueueEngine
from agent.core.model import Priority, Ticket, TicketStatus
from agent.features.ticket_text import checklist, wait_lines, window_names
from agent.web.kiosk_pages import guide_json
from agent.web.pages import STATIC, HallView, PageFeed, ViewNotFound

JSON = dict[str, Any]

# What new_token() makes (22 URL-safe characters); anything else is not looked up.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

STATUS_TEXT: dict[TicketStatus, str] = {
    TicketStatus.WAITING: "排队等候中",
    TicketStatus.CALLED: "正在叫您的号，请到窗口办理",
    TicketStatus.SERVING: "正在办理",
    TicketStatus.HELD: "暂缓办理，请补齐材料后留意叫号",
    TicketStatus.FINISHED: "已办结，感谢您的耐心等待",
    TicketStatus.NO_SHOW: "已过号，请到引导台咨询或重新取号",
    TicketStatus.CANCELLED: "已取消",
    TicketStatus.EXPIRED: "已过期（非当日号票）",
}

_PRIORITY_TEXT = {
    Priority.ELDERLY: "绿色通道 · 老年人",
    Priority.DISABLED: "绿色通道 · 残疾人",
    Priority.VETERAN: "绿色通道 · 军人",
    Priority.APPOINTMENT: "预约",
}


def _guide(config: HallAgentConfig, service: str) -> JSON | None:
    try:
        return guide_json(config.service(service).guide)
    except KeyError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class TicketBoard:
    """The day's tickets as their pages need them, read in the hall's turn once per rebuild
    (cheap: a row per ticket and one simulation); a page's state is made from it only for
    the pages that are open (:func:`ticket_view`)."""

    config: HallAgentConfig
    rows: Mapping[str, _Row]  # by token
    places: Mapping[str, tuple[int, int]]  # ticket id -> (people ahead, minutes)
    at: dt.datetime


class _Row(NamedTuple):
    id: str
    number: str
    service: str
    status: TicketStatus
    window: str | None
    priority: Priority
    issued_at: dt.datetime
    day: dt.date


def _row(t: Ticket) -> _Row:
    return _Row(t.id, t.number, t.service, t.status, t.window, t.priority, t.issued_at, t.day)


def ticket_states(engine: QueueEngine, now: dt.datetime) -> TicketBoard:
    """Every ticket of the business day, by token, with the places of the waiting ones."""
    rows = {t.token: _row(t) for t in engine.tickets.values() if t.token is not None}
    places = (
        engine.places(now) if any(r.status is TicketStatus.WAITING for r in rows.values()) else {}
    )
    return TicketBoard(engine.config, rows, places, now)


class TicketStates:
    """:func:`ticket_states` for the pages' feed, which reads the hall's committed copy
    after every commit: a ticket's row is made again only when its record changed. The
    committed copy replaces a ticket's record when a commit changes it and never alters one
    (``Hall._published``), so a row is kept while its record is the same object (with the
    same status, should a record be altered after all). About a third of the time of making
    every row again (0.9 ms per rebuild at 1 500 tickets, after every commit)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Ticket, _Row]] = {}  # by ticket id
        self._rows: dict[str, _Row] = {}  # by token, as the last board has them

    def __call__(self, engine: QueueEngine, now: dt.datetime) -> TicketBoard:
        kept = self._kept
        fresh: dict[str, tuple[Ticket, _Row]] = {}
        made: list[tuple[str, _Row]] = []  # (token, row) made again or new
        new = 0
        waiting = False
        for t in engine.tickets.values():
            found = kept.get(t.id)
            if found is None or found[0] is not t or found[1].status is not t.status:
                if t.token is None:
                    continue
                new += found is None
                found = (t, _row(t))
                made.append((t.token, found[1]))
            fresh[t.id] = found
            waiting = waiting or found[1].status is TicketStatus.WAITING
        if len(fresh) - new != len(kept):  # some left the day: make the mapping again
            self._rows = {t.token: row for t, row in fresh.values() if t.token is not None}
        elif made:  # a new mapping (the boards handed out before keep theirs)
            self._rows = {**self._rows, **dict(made)}
        self._kept = fresh
        places = engine.places(now) if waiting else {}
        return TicketBoard(engine.config, self._rows, places, now)


def ticket_state(board: TicketBoard, row: _Row) -> JSON:
    """What the status page of one ticket shows."""
    config = board.config
    try:
        service_name = config.service(row.service).name
    except KeyError:
        service_name = row.service
    window_name = None
    if row.window is not None and row.status.is_open:
        window_name = next((w.name for w in config.windows if w.id == row.window), None)
    place = board.places.get(row.id) if row.status is TicketStatus.WAITING else None
    ahead, wait = place if place is not None else (None, None)
    materials, more = checklist(config, row.service)
    return {
        "hall": {"name": config.hall.name, "phone": config.hall.phone},
        "ticket": row.number,
        "service": row.service,
        "service_name": service_name,
        "priority": _PRIORITY_TEXT.get(row.priority),
        "status": row.status.value,
        "status_text": STATUS_TEXT[row.status],
        "ahead": ahead,
        "wait_minutes": wait,
        "wait_text": wait_lines(ahead, wait) if ahead is not None else [],
        "windows": window_names(config, row.service),
        "window_name": window_name,
        "issued_at": f"{row.issued_at.astimezone(config.hall.zone):%H:%M}",
        "day": row.day.isoformat(),
        "materials_printed": len(materials) + more > 0,
        "guide": _guide(config, row.service),
        "updated_at": board.at.astimezone(config.hall.zone).isoformat(timespec="seconds"),
    }


def ticket_view(view: HallView, query: Mapping[str, str]) -> JSON:
    """The ``ticket`` view: one ticket's status page, by its token."""
    token = query.get("token", "")
    board = view.extras.get("tickets")
    row = board.rows.get(token) if isinstance(board, TicketBoard) and TOKEN.match(token) else None
    if board is None or row is None:
        raise ViewNotFound("没有找到这张号票，可能已过期；请以纸质号票为准，或到引导台咨询")
    return ticket_state(board, row)


def ticket_routes(feed: PageFeed) -> APIRouter:
    """``GET /t/{token}``: the page (open to anyone: the token is the credential)."""
    router = APIRouter(include_in_schema=False)
    feed.add_view("ticket", ticket_view)
    feed.add_queue_source("tickets", TicketStates())
    page = (STATIC / "ticket.html").read_text(encoding="utf-8")
    headers = {
        "Cache-Control": "no-store",
        # The token is in the address: never sent on to another site.
        "Referrer-Policy": "no-referrer",
        "X-Robots-Tag": "noindex",
    }

    @router.get("/t/{token}")
    async def ticket_page(token: str) -> HTMLResponse:
        # The same page for any token: it says "not found" itself when its feed does.
        return HTMLResponse(page, headers=headers)

    return router
