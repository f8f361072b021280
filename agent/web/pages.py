"""Pages for the hall's screens and the kiosk, kept live over Server-Sent Events.

One :class:`PageFeed` follows the hall: after every committed event (and when the
printer's state changes, a notice expires or another component asks) it builds one
:class:`HallView` — the queue snapshot, the recent calls, the notices, the staff roster,
the kiosk's issuing state — and every open page gets the part it shows. Each message a
page receives is that page's *full* state, so a page that reconnects (the agent
restarted, the Wi-Fi dropped) is whole again with its first message: there are no
deltas to miss.

Views are registered by name (``hall``, ``window``, ``kiosk`` here; the caller and rater
pages add theirs): a view is a pure function of the :class:`HallView` and the page's
query parameters. Other components add data with :meth:`PageFeed.add_source` and call
:meth:`PageFeed.refresh` when it changes. The routes:

- ``GET /pages/hall``, ``/pages/window/{id}``, ``/pages/kiosk`` — the pages;
- ``GET /pages/feed/{view}?…`` — the event stream (``state`` messages, ``ping`` every
  :data:`PING_S` seconds);
- ``GET /pages/state/{view}?…`` — the same state once, as JSON;
- ``GET /pages/static/{file}`` and ``/pages/font/cjk`` — shared CSS and JS, and the CJK
  font, so nothing is fetched from outside the hall.

docs/pages.md describes the framework for page authors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse

from agent.config import HALL_STAFFING, ScreenDevice
from agent.core import events as ev
from agent.core import opening, wording
from agent.core.engine import QueueEngine
from agent.core.model import Ticket, TicketStatus, WindowState
from agent.core.rota import duty_board
from agent.errors import HallAgentError
from agent.features.content import image_url, next_change, screen_bulletins, screen_notices
from agent.features.staffing import photos_of
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import ContentItem, StoredEvent
from agent.runtime.tasks import BackgroundTasks
from agent.web.kiosk_pages import guide_json, kiosk_routes
from agent.web.manager_page import manager_routes

if TYPE_CHECKING:
    from agent.features.issuing import Issuing
    from agent.features.printing import TicketPrinting

log = logging.getLogger(__name__)

JSON = dict[str, Any]

STATIC = Path(__file__).resolve().parent / "static"
# A page that hears nothing for three pings reconnects (pages.js).
PING_S = 15.0
# Rebuilt at least this often: service hours open and close, notices expire.
REBUILD_S = 30.0
# How long a state request waits for the view to show the events committed before it.
CATCH_UP_S = 2.0
# Rebuilt at most this often while changes come one after another (under a burst of takes
# every commit would rebuild the view: a copy of every waiting ticket's row and place, the
# whole estimate): the changes of the gap show together, at most this much later. A state
# request waiting for its own action (``caught_up``) does not wait for the gap.
REBUILD_GAP_S = 0.1
# EventSource waits this long before reconnecting (the field ``retry:``), in ms.
RETRY_MS = 1000

_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class ViewNotFound(HallAgentError):
    """A page asked for a view or a window that does not exist (404)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HallView:
    """Everything pages show, built once per change and shared by every view."""

    rev: int
    seq: int  # every event up to this seq is in the view
    at: dt.datetime  # when it was built (hall time)
    hall: JSON  # id, name
    queue: JSON  # QueueEngine.snapshot(), without the waiting list
    calls: list[JSON]  # recent calls, newest first
    notices: list[JSON]  # active notices
    staff: dict[str, JSON]  # roster by staff number
    issuing: JSON  # {"enabled", "reason"} from the printer
    photos: frozenset[str]  # staff numbers with a photo on disk
    settings: JSON  # pages config: large_text, highlight_s, ...
    extras: dict[str, Any]  # from sources other components added


View = Callable[[HallView, Mapping[str, str]], JSON]


def _call_entry(engine: QueueEngine, ticket: Ticket, at: dt.datetime) -> JSON:
    config = engine.config
    try:
        window = config.window(ticket.window or "")
        window_name, window_number = window.name, window.number
    except KeyError:
        window_name, window_number = ticket.window or "", None
    try:
        service_name = config.service(ticket.service).name
    except KeyError:
        service_name = ticket.service
    return {
        # Changes with every call and recall of the ticket: pages flash a new key.
        "key": f"{ticket.id}/{ticket.called_count}/{ticket.recalls}",
        "ticket": ticket.number,
        "service": ticket.service,
        "service_name": service_name,
        "priority": ticket.priority.value,
        "window": ticket.window,
        "window_name": window_name,
        "window_number": window_number,
        "status": ticket.status.value,
        "at": at.isoformat(timespec="milliseconds"),
    }


def recent_calls(
    engine: QueueEngine, recalled_at: Mapping[str, dt.datetime], limit: int
) -> list[JSON]:
    """Today's calls, newest first, from the tickets themselves (so a restart keeps them)."""
    called = [
        t
        for t in engine.tickets.values()
        if t.day == engine.hall.day and t.called_at is not None and t.window is not None
    ]

    def when(t: Ticket) -> dt.datetime:
        assert t.called_at is not None
        again = recalled_at.get(t.id)
        return max(t.called_at, again) if again is not None else t.called_at

    called.sort(key=when, reverse=True)
    return [_call_entry(engine, t, when(t)) for t in called[:limit]]


class PageFeed:
    """Builds the hall's view after every change and streams it to the pages."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard | None = None,
        printing: TicketPrinting | None = None,
        issuing: Issuing | None = None,
        *,
        rebuild_gap_s: float = REBUILD_GAP_S,
    ) -> None:
        self.hall = hall
        self.rebuild_gap_s = rebuild_gap_s
        self.devices = devices
        self.printing = printing
        # Whether the kiosk may issue (the store and the printer), shown on its page.
        self.issuing = issuing
        self.views: dict[str, View] = {}
        self._sources: dict[str, Callable[[], Any]] = {}
        self._queue_sources: dict[str, Callable[[QueueEngine, dt.datetime], Any]] = {}
        self._current: HallView | None = None
        self._changed = asyncio.Condition()
        self._dirty = asyncio.Event()
        # Set by a state request that waits for the view (no gap while one waits).
        self._hurry = asyncio.Event()
        self._catching_up = 0
        self._last_rebuild = -math.inf  # the event loop's time of the last rebuild
        self._closed = False
        self._rev = 0
        self._followed = 0  # the seq of the last event taken into account
        self._recalled_at: dict[str, dt.datetime] = {}
        self._notices: list[JSON] = []
        self._content: list[ContentItem] = []  # the hall's own (agent/features/content.py)
        self._staff: dict[str, JSON] = {}
        self._photos: frozenset[str] = frozenset()
        self._tasks = BackgroundTasks()
        self._stack = contextlib.AsyncExitStack()
        # Open streams per (view, window): a screen device is "ok" while a page shows it.
        self._open: collections.Counter[tuple[str, str]] = collections.Counter()
        for name, view in BUILT_IN_VIEWS.items():
            self.add_view(name, view)
        # Read at every rebuild, so a config central pushed shows at once.
        self.add_source("service_hours", self._service_hours)
        self.add_source("service_guides", self._service_guides)
        self.add_queue_source("today_hours", _today_hours)
        # The kiosk's one banner on a day the whole hall is closed (a holiday, ...).
        self.add_queue_source(
            "closed_day",
            lambda e, now: opening.closed_day_text(e.config, now.astimezone(e.config.hall.zone)),
        )
        # Who is on duty at each window (AB岗, 轮班): the big screen's staff board.
        self.add_queue_source("duty", lambda e, now: duty_board(e.config, e.windows, now))

    def _service_hours(self) -> dict[str, str]:
        config = self.hall.config
        return {s.id: wording.hours_text(config.weekly_hours(s)) for s in config.services}

    def _service_guides(self) -> dict[str, JSON]:
        guides = {s.id: guide_json(s.guide) for s in self.hall.config.services}
        return {service: guide for service, guide in guides.items() if guide is not None}

    # -- extension points ----------------------------------------------------------------

    def add_view(self, name: str, view: View) -> None:
        """Register a page's view: ``view(hall_view, query) -> state`` (pure, fast)."""
        self.views[name] = view

    def add_source(self, name: str, read: Callable[[], Any]) -> None:
        """Add data to every :class:`HallView` as ``extras[name]``; call :meth:`refresh`
        when it changes."""
        self._sources[name] = read

    def add_queue_source(self, name: str, read: Callable[[QueueEngine, dt.datetime], Any]) -> None:
        """Add data read from the queue to every :class:`HallView` as ``extras[name]``:
        ``read(engine, now)`` runs in the hall's turn with the snapshot (quick, no I/O)."""
        self._queue_sources[name] = read

    def refresh(self) -> None:
        """Rebuild the view soon (something pages show has changed)."""
        self._dirty.set()

    @property
    def current(self) -> HallView | None:
        return self._current

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> PageFeed:
        async with contextlib.AsyncExitStack() as stack:
            events = await stack.enter_async_context(self.hall.events())
            self._followed = self.hall.store.last_seq
            await self._load_settings()
            await self._rebuild()
            tasks = self._tasks = await stack.enter_async_context(BackgroundTasks())
            tasks.create_task(self._follow(events), name="pages-events")
            tasks.create_task(self._rebuild_loop(), name="pages-rebuild")
            if self.devices is not None:
                tasks.create_task(self._follow_devices(self.devices), name="pages-devices")
            self._stack = stack.pop_all()
        self._report_screens()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End every stream (pages reconnect to the next agent) and stop following."""
        if self._closed:
            return
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        self._tasks.cancel()
        await self._stack.aclose()

    async def _load_settings(self) -> None:
        def read(store: Any) -> tuple[Any, Any, list[ContentItem], Any]:
            return (
                store.setting("notices"),
                store.setting("staff"),
                store.content_items(),
                store.setting(HALL_STAFFING),
            )

        notices, staff, self._content, edited = await self.hall.store_read(read)
        self._notices = [n for n in notices or [] if isinstance(n, dict)]
        if edited:  # the roster the hall edited (agent/features/staffing.py), with photos
            photos = photos_of(edited)
            staff = [
                {**m.model_dump(), "photo": photos.get(m.staff)} for m in self.hall.config.staff
            ]
        elif staff is None:  # no roster from central yet: the config's
            staff = [m.model_dump() for m in self.hall.config.staff]
        self._staff = {m["staff"]: m for m in staff or [] if isinstance(m, dict) and "staff" in m}
        self._photos = await asyncio.to_thread(_photos, self.hall.config.pages.staff_photos)

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        while True:
            event = await events.get()
            match event.payload:
                case ev.TicketRecalled(ticket_id=ticket_id):
                    self._recalled_at[ticket_id] = dt.datetime.fromisoformat(event.at)
                case (
                    ev.NoticeShown()
                    | ev.RosterSet()
                    | ev.ContentChanged()
                    | ev.ConfigApplied()
                    | ev.StaffingEdited()
                ):
                    await self._load_settings()
                case ev.DayClosed():
                    self._recalled_at.clear()
            self._followed = max(self._followed, event.seq)
            # Several events of one commit are one change: build once after the last.
            if events.empty():
                self._dirty.set()

    async def _follow_devices(self, devices: DeviceBoard) -> None:
        changes = devices.watch()
        try:
            while True:
                await changes.get()
                self._dirty.set()
        finally:
            devices.unwatch(changes)

    async def _rebuild_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._until_next_change()):
                    await self._dirty.wait()
            # Changes right after a rebuild wait for the gap to end and show together.
            gap = self._last_rebuild + self.rebuild_gap_s - loop.time()
            if gap > 0 and not self._catching_up:
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(gap):
                        await self._hurry.wait()
            self._dirty.clear()
            self._last_rebuild = loop.time()
            try:
                await self._rebuild()
            except ShuttingDown:
                return
            except Exception:  # a bug in a view source must not freeze every screen
                log.exception("the pages' view could not be built")

    def _until_next_change(self) -> float:
        """Seconds to the next rebuild: REBUILD_S, or sooner when a notice, news or job
        item starts or ends (it appears and disappears on time)."""
        now = dt.datetime.now(self.hall.config.hall.zone)
        change = next_change(self._content, self._notices, now)
        if change is None:
            return REBUILD_S
        return min(REBUILD_S, max(0.05, (change - now).total_seconds() + 0.05))

    async def _rebuild(self) -> None:
        settings = self.hall.config.pages
        seq = self._followed
        recalled = dict(self._recalled_at)
        limit = settings.recent_calls + len(self.hall.config.windows)

        queue_sources = dict(self._queue_sources)

        def build(engine: QueueEngine, now: dt.datetime) -> tuple[JSON, list[JSON], JSON]:
            snapshot = engine.snapshot(now, waiting_list=False)
            read = {name: source(engine, now) for name, source in queue_sources.items()}
            return snapshot, recent_calls(engine, recalled, limit), read

        queue, calls, from_queue = await self.hall.read(build)
        now = dt.datetime.now(self.hall.config.hall.zone)
        issuing: JSON = {"enabled": True, "reason": None}
        if self.issuing is not None:
            issuing = dict(self.issuing.state()["issuing"])
        elif self.printing is not None:
            issuing = dict(self.printing.state()["issuing"])
        self._rev += 1
        view = HallView(
            rev=self._rev,
            seq=seq,
            at=now,
            hall={"id": self.hall.config.hall.id, "name": self.hall.config.hall.name},
            queue=queue,
            calls=calls,
            notices=screen_notices(self._content, self._notices, now),
            staff=self._staff,
            issuing=issuing,
            photos=self._photos,
            settings={
                "large_text": settings.large_text,
                "highlight_s": settings.highlight_s,
                "guide_rotation_s": settings.guide_rotation_s,
                "recent_calls": settings.recent_calls,
                "bulletin_rotation_s": settings.content.rotation_s,
            },
            extras={
                **from_queue,
                **{name: read() for name, read in self._sources.items()},
                "bulletins": screen_bulletins(self._content, now),
            },
        )
        self._current = view
        async with self._changed:
            self._changed.notify_all()

    # -- streams -------------------------------------------------------------------------

    def render(self, name: str, query: Mapping[str, str]) -> JSON:
        """One view's state now. Raises :class:`ViewNotFound`."""
        view = self.views.get(name)
        if view is None:
            raise ViewNotFound(f"there is no page view {name!r}; known: {', '.join(self.views)}")
        if self._current is None:
            raise ViewNotFound("the hall's view is not built yet")
        return view(self._current, query)

    async def caught_up(self, within: float = CATCH_UP_S) -> None:
        """Until the view shows every event committed so far (at most ``within`` s).

        A page that fetches its state right after an action (a staff member pressed "next")
        sees that action, not the view from just before it.
        """
        target = self.hall.store.last_seq
        if self._current is not None and self._current.seq >= target:
            return
        self._catching_up += 1
        self._hurry.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within), self._changed:
                    await self._changed.wait_for(
                        lambda: (
                            self._closed
                            or (self._current is not None and self._current.seq >= target)
                        )
                    )
        finally:
            self._catching_up -= 1

    async def wait_rebuilt(self, after_rev: int, within: float = 5.0) -> HallView:
        """The view once it is newer than ``after_rev`` (tests, components that act on it)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(
                lambda: self._current is not None and self._current.rev > after_rev
            )
        assert self._current is not None
        return self._current

    async def _wait_past(self, rev: int) -> None:
        """Until the view is newer than ``rev`` or the feed closes, at most PING_S."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_S):
                    await self._changed.wait_for(
                        lambda: (
                            self._closed or (self._current is not None and self._current.rev != rev)
                        )
                    )

    async def stream(self, name: str, query: Mapping[str, str]) -> AsyncIterator[str]:
        """Server-sent events: the view's full state now and after every change of it."""
        if name not in self.views:
            raise ViewNotFound(f"there is no page view {name!r}; known: {', '.join(self.views)}")
        key = (name, query.get("window", ""))
        self._open[key] += 1
        self._report_screens()
        try:
            async for chunk in self._stream(name, query):
                yield chunk
        finally:
            self._open[key] -= 1
            self._report_screens()

    def _report_screens(self) -> None:
        """Screens are pages: a screen device is ok while at least one page shows it."""
        if self.devices is None or self._closed:
            return
        config = self.hall.config
        owners = {d: w.id for w in config.windows for d in w.devices}
        for device in config.devices:
            if not isinstance(device, ScreenDevice):
                continue
            if device.role == "hall":
                count = self._open[("hall", "")]
            else:
                count = self._open[("window", owners.get(device.id, ""))]
            if count:
                self.devices.report(device.id, "ok", f"{count} page(s) open")
            else:
                self.devices.report(device.id, "offline", "no page shows this screen")

    async def _stream(self, name: str, query: Mapping[str, str]) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        yield f"retry: {RETRY_MS}\n\n"
        sent_rev = -1
        sent_body = ""
        sent_at = loop.time()
        while not self._closed:
            await self._wait_past(sent_rev)
            current = self._current
            if self._closed:
                return
            body = sent_body
            if current is not None and current.rev != sent_rev:
                sent_rev = current.rev
                try:
                    state = self.views[name](current, query)
                except ViewNotFound as err:
                    yield _sse("error", {"message": str(err)})
                    return
                body = json.dumps(state, ensure_ascii=False, sort_keys=True)
            if current is not None and body != sent_body:
                sent_body = body
                sent_at = loop.time()
                yield _sse_raw("state", _envelope(current, body))
            elif loop.time() - sent_at >= PING_S:
                # Quiet for this page (other pages' changes do not reach it): still alive.
                sent_at = loop.time()
                yield "event: ping\ndata: {}\n\n"


def _envelope(view: HallView, body: str) -> str:
    at = json.dumps(view.at.isoformat(timespec="milliseconds"))
    return f'{{"rev": {view.rev}, "server_time": {at}, "view": {body}}}'


def _sse(event: str, data: JSON) -> str:
    return _sse_raw(event, json.dumps(data, ensure_ascii=False))


def _sse_raw(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


def _photos(folder: Path | None) -> frozenset[str]:
    if folder is None or not folder.is_dir():
        return frozenset()
    return frozenset(
        p.stem for p in folder.iterdir() if p.suffix.lower() in _PHOTO_TYPES and p.is_file()
    )


def photo_path(folder: Path | None, staff: str) -> Path | None:
    if folder is None or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", staff):
        return None
    for suffix in _PHOTO_TYPES:
        path = folder / f"{staff}{suffix}"
        if path.is_file():
            return path
    return None


# -- the built-in views ----------------------------------------------------------------------


def _window_rows(view: HallView) -> list[JSON]:
    rows: list[JSON] = view.queue["windows"]
    return rows


def _staff_card(view: HallView, window: JSON) -> JSON | None:
    staff = window.get("staff")
    if not staff:
        return None
    member = view.staff.get(staff, {})
    edited = member.get("photo")  # a photo the hall uploaded on /pages/manager/staff
    return {
        "staff": staff,
        "name": member.get("name") or window.get("staff_name") or "",
        "photo": (
            image_url(edited)
            if edited
            else f"/pages/staff/{staff}/photo"
            if staff in view.photos
            else None
        ),
    }


def staff_board(view: HallView) -> list[JSON]:
    """The big screen's staff board (服务人员公示): per window, who is on duty now with their
    role (A 主岗, B 备岗; ``stands_in``: B 顶岗 while A is absent), name, 工号, photo."""
    board: list[JSON] = view.extras.get("duty") or []
    return [
        {
            **row,
            "people": [
                {
                    **person,
                    **(
                        _staff_card(view, {"staff": person["staff"], "staff_name": person["name"]})
                        or {}
                    ),
                }
                for person in row["people"]
            ],
        }
        for row in board
    ]


def _common(view: HallView, query: Mapping[str, str]) -> JSON:
    large = query.get("large")
    return {
        "hall": view.hall,
        "large_text": view.settings["large_text"] if large is None else large in ("1", "true"),
        "highlight_s": view.settings["highlight_s"],
        "notices": view.notices,
    }


def hall_view(view: HallView, query: Mapping[str, str]) -> JSON:
    """The big screen: current calls, recent calls, waiting per service, staff, notices."""
    services = {s["id"]: s for s in view.queue["services"]}
    current: list[JSON] = []
    current_keys: set[str] = set()
    for call in view.calls:
        if call["status"] in (TicketStatus.CALLED, TicketStatus.SERVING) and not any(
            c["window"] == call["window"] for c in current
        ):
            current.append(call)
            current_keys.add(call["key"])
    windows = []
    for w in _window_rows(view):
        card = _staff_card(view, w)
        windows.append(
            {
                "id": w["id"],
                "name": w["name"],
                "number": w["number"],
                "state": w["state"],
                "staff": card,
            }
        )
    return {
        **_common(view, query),
        "current": current,
        "recent": [c for c in view.calls if c["key"] not in current_keys][
            : view.settings["recent_calls"]
        ],
        "services": [
            {
                "id": s["id"],
                "name": s["name"],
                "prefix": s["prefix"],
                "waiting": s["waiting"],
                "wait_minutes": s["wait_minutes"],
                "open": s["open"],
            }
            for s in services.values()
        ],
        "windows": windows,
        "today_hours": view.extras.get("today_hours"),
        "staff_board": staff_board(view),
        **_rotating_guides(view, services.values()),
        # The hall's news and jobs (社区动态, 招聘信息), one at a time beside the calls.
        "bulletins": view.extras.get("bulletins", []),
        "bulletin_rotation_s": view.settings.get("bulletin_rotation_s"),
    }


def _today_hours(engine: QueueEngine, now: dt.datetime) -> str:
    """The big screen's line: 今日办理时间 09:00–12:00 13:30–17:00, or 今日休息（…）."""
    local = now.astimezone(engine.config.hall.zone)
    return opening.today_line(opening.hall_day(engine.config, local.date()))


def _rotating_guides(view: HallView, services: Iterable[JSON]) -> JSON:
    """The guides the big screen shows in turn: of the services people wait for, with
    materials to bring (一次性告知 where everyone waiting can read it)."""
    rotation = view.settings.get("guide_rotation_s")
    guides = view.extras.get("service_guides", {})
    shown = []
    if rotation is not None:
        for s in services:
            guide = guides.get(s["id"])
            if s["waiting"] and guide is not None and guide["materials"]:
                shown.append(
                    {
                        "service": s["id"],
                        "name": s["name"],
                        "materials": guide["materials"],
                        "time_limit": guide["time_limit"],
                    }
                )
    return {"guides": shown, "guide_rotation_s": rotation}


def window_view(view: HallView, query: Mapping[str, str]) -> JSON:
    """One window's screen: its number, the ticket it calls and its service guide, the
    staff member, paused."""
    wanted = query.get("window", "")
    row = next((w for w in _window_rows(view) if w["id"] == wanted), None)
    if row is None:
        known = ", ".join(w["id"] for w in _window_rows(view))
        raise ViewNotFound(f"there is no window {wanted!r}; the windows are {known}")
    ticket = row.get("ticket")
    call = next((c for c in view.calls if c["window"] == wanted), None)
    showing = None
    guide = None
    if ticket is not None and ticket["status"] in (TicketStatus.CALLED, TicketStatus.SERVING):
        guide = view.extras.get("service_guides", {}).get(ticket["service"])
        showing = {
            "ticket": ticket["number"],
            "status": ticket["status"],
            "service": ticket["service"],
            "service_name": next(
                (s["name"] for s in view.queue["services"] if s["id"] == ticket["service"]),
                ticket["service"],
            ),
            "key": call["key"] if call is not None and call["ticket"] == ticket["number"] else "",
            "at": call["at"] if call is not None else None,
        }
    return {
        **_common(view, query),
        "window": {
            "id": row["id"],
            "name": row["name"],
            "number": row["number"],
            "state": row["state"],
            "paused": row["state"] == WindowState.PAUSED,
            "closed": row["state"] == WindowState.CLOSED,
        },
        "current": showing,
        # The service guide of the ticket at the window (办事指南: what to check it has).
        "guide": guide,
        **_serving(view, row),
    }


def _serving(view: HallView, row: JSON) -> JSON:
    """Who serves at a window (the staff member of its ticket, else the first signed in),
    and who else is signed in there (two staff at one window)."""
    ticket = row.get("ticket") or {}
    everyone = [{"staff": row.get("staff"), "staff_name": row.get("staff_name")}] + [
        {"staff": o["staff"], "staff_name": o.get("name")} for o in row.get("others") or []
    ]
    serving = ticket.get("staff") if ticket.get("status") in ("called", "serving") else None
    first = next((p for p in everyone if p["staff"] == serving), everyone[0])
    cards = [_staff_card(view, p) for p in [first, *(p for p in everyone if p is not first)]]
    return {"staff": cards[0], "with_staff": [c for c in cards[1:] if c is not None]}


def kiosk_view(view: HallView, query: Mapping[str, str]) -> JSON:
    """The kiosk: a button per service, with why it cannot issue when it cannot."""
    issuing = view.issuing
    # Citizen words only (agent/core/wording.py): the printer's problem is for staff.
    citizen = None
    if not issuing["enabled"]:
        citizen = issuing.get("citizen") or wording.PRINTER_UNAVAILABLE
    services = []
    config_names = view.extras.get("service_names", {})
    all_hours = view.extras.get("service_hours", {})
    # The whole hall closed today: one banner says why and when it opens; each button
    # only 今日休息 (not the same sentence on every button).
    closed_day: str | None = view.extras.get("closed_day")
    for s in view.queue["services"]:
        hours = all_hours.get(s["id"], "")
        reason = None
        if not s["open"] and closed_day is not None:
            reason = wording.DAY_OFF_BUTTON
        elif not s["open"]:
            # Why (holiday, weekend, lunch break...) and when it next opens; the hours as
            # a fallback for a snapshot without the reason.
            reason = s.get("closed_reason") or wording.service_closed(s["name"], hours)
        elif s["daily_cap"] is not None and s["issued_today"] >= s["daily_cap"]:
            reason = wording.daily_cap_reached(s["name"], hours)
        elif citizen is not None:
            reason = citizen
        services.append(
            {
                "id": s["id"],
                "name": s["name"],
                "name_en": config_names.get(s["id"]),
                "prefix": s["prefix"],
                "waiting": s["waiting"],
                "wait_minutes": s["wait_minutes"],
                "hours": hours,
                "enabled": reason is None,
                "reason": reason,
            }
        )
    # The guides, the green channel and the phone (agent/web/kiosk_pages.py).
    kiosk: JSON = view.extras.get("kiosk") or {}
    guides = kiosk.get("guides", {})
    for service in services:
        service["guide"] = guides.get(service["id"])
    return {
        **_common(view, query),
        "issuing": {"enabled": issuing["enabled"], "reason": citizen},
        "closed_day": closed_day,
        "services": services,
        "green_channel": kiosk.get("green_channel"),
        "phone": kiosk.get("phone"),
    }


BUILT_IN_VIEWS: dict[str, View] = {"hall": hall_view, "window": window_view, "kiosk": kiosk_view}


# -- the CJK font ------------------------------------------------------------------------------


class FontUnavailable(HallAgentError):
    """The configured CJK font cannot be served (the pages fall back to local fonts)."""


class FontCache:
    """The CJK font as one TrueType file browsers accept.

    Debian's WenQuanYi Micro Hei is a TrueType *collection* (.ttc), which Chromium's font
    sanitizer refuses (it also trips on the collection's misaligned FFTM table): the first
    font is taken out with fontTools once, and kept beside the state until the source
    changes.
    """

    def __init__(self, source: Path, folder: Path) -> None:
        self.source = source
        self.folder = folder
        self._lock = asyncio.Lock()

    async def get(self) -> Path:
        async with self._lock:
            return await asyncio.to_thread(self._prepare)

    def _prepare(self) -> Path:
        try:
            stat = self.source.stat()
        except OSError as err:
            raise FontUnavailable(
                f"the CJK font {self.source} cannot be read ({err.strerror}); install "
                "fonts-wqy-microhei or set pages.font"
            ) from err
        if self.source.suffix.lower() in (".ttf", ".otf"):
            return self.source
        target = self.folder / f"cjk-{stat.st_size}-{int(stat.st_mtime)}.ttf"
        if target.is_file():
            return target
        from fontTools.ttLib import TTCollection, TTLibError  # type: ignore[import-untyped]

        try:
            font = TTCollection(str(self.source)).fonts[0]
            if "FFTM" in font:  # FontForge's timestamp table; browsers need none of it
                del font["FFTM"]
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            font.save(str(tmp))
            tmp.replace(target)
        except (TTLibError, OSError, IndexError) as err:
            raise FontUnavailable(f"the CJK font {self.source} cannot be converted: {err}") from err
        for old in self.folder.glob("cjk-*.ttf"):
            if old != target:
                old.unlink(missing_ok=True)
        return target


# -- routes -----------------------------------------------------------------------------------


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC / f"{name}.html").read_text(encoding="utf-8"))


def page_routes(feed: PageFeed) -> APIRouter:
    """The pages, their feed and their static files (include in the local API's app)."""
    router = APIRouter(prefix="/pages", include_in_schema=False)
    config = feed.hall.config
    # From the running config: a config central pushes renames services too.
    feed.add_source("service_names", lambda: {s.id: s.name_en for s in feed.hall.config.services})

    @router.get("/hall")
    async def hall_page() -> HTMLResponse:
        return _page("hall")

    @router.get("/window/{window}")
    async def window_page(window: str) -> HTMLResponse:
        try:
            config.window(window)
        except KeyError:
            raise HTTPException(404, f"there is no window {window!r}") from None
        return _page("window")

    @router.get("/kiosk")
    async def kiosk_page() -> HTMLResponse:
        return _page("kiosk")

    router.include_router(kiosk_routes(feed.hall, feed.add_source))
    router.include_router(manager_routes())

    @router.get("/feed/{view}")
    async def stream(view: str, request: Request) -> StreamingResponse:
        query = dict(request.query_params)
        if view not in feed.views:
            raise HTTPException(404, f"there is no page view {view!r}")
        return StreamingResponse(
            _guarded(feed.stream(view, query)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/state/{view}")
    async def state(view: str, request: Request) -> JSON:
        await feed.caught_up()
        try:
            return feed.render(view, dict(request.query_params))
        except ViewNotFound as err:
            raise HTTPException(404, str(err)) from None

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        path = STATIC / name
        kind = _STATIC_TYPES.get(path.suffix)
        if not _STATIC_NAME.match(name) or kind is None or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "no-cache"})

    fonts = FontCache(config.pages.font, config.storage.path / "pages")

    @router.get("/font/cjk")
    async def font() -> Response:
        try:
            path = await fonts.get()
        except FontUnavailable as err:
            raise HTTPException(404, str(err)) from None
        return FileResponse(path, media_type="font/ttf", headers={"Cache-Control": "max-age=86400"})

    @router.get("/staff/{staff}/photo")
    async def photo(staff: str) -> Response:
        path = photo_path(config.pages.staff_photos, staff)
        if path is None:
            raise HTTPException(404, f"no photo of staff {staff!r}")
        return FileResponse(path, media_type=_PHOTO_TYPES[path.suffix.lower()])

    return router


async def _guarded(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for chunk in stream:
            yield chunk
    except ViewNotFound as err:
        yield _sse("error", {"message": str(err)})
