"""The window's own devices put together: callers and raters on keypads and on pages.

:func:`window_devices` starts the rating desk, the caller desk and the keypads, and knows
the token of every web caller (the staff PC's caller page) and tablet rater. Its routes:

- ``GET /pages/caller/{device}?token=…`` — the web caller page;
- ``GET /pages/rater/{device}?token=…`` — the tablet rater page (亮明身份: the staff
  member's name, photo and number; big buttons, large text);
- their views ``caller`` and ``rater`` on the pages' feed (``device`` and ``token`` in
  the query);
- ``POST /api/v1/callers/{device}/press`` and ``POST /api/v1/raters/{device}/rating``,
  with ``Authorization: Bearer <token>``;
- ``POST /api/v1/windows/{window}/request-rating`` and ``…/rating`` for the local API
  (the window's staff, caller or ops may request a rating; only its rater may give one).

No token, no access: a page device's token comes from the environment variable its
transport names (``token_env``), or else is made once and kept in
``<storage.path>/web-tokens.json`` (mode 0600); or the device is enrolled
(``hall-agent enroll DEVICE --role caller|rater --window W``) and its enrolled token opens
its page. A page token is also the device's credential on the rest of the API
(:meth:`WindowDevices.page_principal`). Listening beyond localhost is the ``web.host``
setting, off by default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.config import CallerDevice, HallAgentConfig, RaterDevice, WebTransport
from agent.core import wording
from agent.core.errors import QueueError
from agent.core.model import RATING_LABELS, RatingLevel
from agent.features.access import HallAccess, Principal, Role
from agent.features.callers import CallerDesk, Capture
from agent.features.keypads import WindowKeypads, device_windows
from agent.features.rating import RatingDesk
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.web.access import Credentials, Gate, caller_of, guard
from agent.web.app import API, OperationResult, answer
from agent.web.errors import ERRORS
from agent.web.pages import STATIC, HallView, PageFeed, ViewNotFound
from protocols.keypad import CallerAction, CallerCommand

log = logging.getLogger(__name__)

TOKENS_FILE = "web-tokens.json"
# A token shorter than this is guessable by anyone on the hall's network.
MIN_TOKEN = 16

JSON = dict[str, Any]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Press(Strict):
    action: CallerAction
    argument: str = Field(default="", max_length=16, description="digits, a number, a code")


class Rating(Strict):
    level: int = Field(
        ge=1, le=5, description="5 非常满意, 4 满意, 3 基本满意, 2 不满意, 1 非常不满意"
    )
    reasons: list[str] = Field(default_factory=list, max_length=16)
    comment: str = Field(default="", max_length=200)
    ticket_id: str | None = Field(default=None, description="the ticket the page showed")


class RequestRating(Strict):
    number: str | None = Field(default=None, pattern=r"^[A-Za-z]{1,2}\d{2,5}$")


@dataclasses.dataclass(slots=True)
class WindowDevices:
    """The callers and raters of every window, and the desks behind them."""

    hall: Hall
    callers: CallerDesk
    ratings: RatingDesk
    keypads: WindowKeypads
    tokens: dict[str, str]  # web device id -> token
    windows: dict[str, str]  # device id -> window id
    access: HallAccess | None = None  # enrolled devices open their pages too

    def page_url(self, base: str, device_id: str) -> str:
        """Where the device's page is, token included."""
        device = self.hall.config.device(device_id)
        kind = "caller" if isinstance(device, CallerDevice) else "rater"
        return f"{base}/pages/{kind}/{device_id}?token={self.tokens[device_id]}"

    def check(self, device_id: str, token: str | None, kind: type[Any]) -> str:
        """The device's window when ``token`` opens it — its page token, or the token it
        was enrolled with — otherwise a 404 (no hint either way whether the device
        exists)."""
        window = self._page_token_window(device_id, token, kind)
        if window is None:
            window = self._enrolled_window(device_id, token, kind)
        if window is None:
            raise ViewNotFound("no such page, or a wrong token; ask for the page's link")
        return window

    def page_principal(self, token: str) -> Principal | None:
        """The web caller or rater whose page token ``token`` is: its credential for the
        rest of the API (its window only)."""
        for device_id, expected in self.tokens.items():
            window = self.windows.get(device_id)
            if window is None or not secrets.compare_digest(expected.encode(), token.encode()):
                continue
            device = self.hall.config.device(device_id)
            role = Role.CALLER if isinstance(device, CallerDevice) else Role.RATER
            return Principal(device_id, role, "device", frozenset([window]))
        return None

    def _page_token_window(self, device_id: str, token: str | None, kind: type[Any]) -> str | None:
        expected = self.tokens.get(device_id)
        try:
            device = self.hall.config.device(device_id)
        except KeyError:
            device = None
        if (
            expected is None
            or token is None
            or not isinstance(device, kind)
            or not secrets.compare_digest(expected.encode(), token.encode())
        ):
            return None
        return self.windows.get(device_id)

    def _enrolled_window(self, device_id: str, token: str | None, kind: type[Any]) -> str | None:
        if self.access is None:
            return None
        role = Role.CALLER if kind is CallerDevice else Role.RATER
        found = self.access.device_for(token, device_id, role)
        if found is None or len(found.windows) != 1:
            return None
        (window,) = found.windows
        configured = self.windows.get(device_id)
        if configured is not None and configured != window:
            return None  # the config puts this device at another window
        if all(w.id != window for w in self.hall.config.windows):
            return None
        return window


def web_devices(config: HallAgentConfig) -> list[CallerDevice | RaterDevice]:
    return [
        d
        for d in config.devices
        if isinstance(d, CallerDevice | RaterDevice) and isinstance(d.transport, WebTransport)
    ]


def load_tokens(config: HallAgentConfig, board: DeviceBoard | None = None) -> dict[str, str]:
    """Each web caller's and rater's token: from its ``token_env``, or made and kept."""
    path = config.storage.path / TOKENS_FILE
    kept: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        kept = {k: str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    tokens: dict[str, str] = {}
    changed = False
    for device in web_devices(config):
        transport = device.transport
        assert isinstance(transport, WebTransport)
        if transport.token_env is not None:
            value = os.environ.get(transport.token_env, "")
            if len(value) < MIN_TOKEN:
                problem = (
                    f"{transport.token_env} is unset or shorter than {MIN_TOKEN} characters; "
                    "the page is closed until it is set"
                )
                log.error("web %s %s: %s", device.kind, device.id, problem)
                if board is not None:
                    board.report(device.id, "error", problem)
                continue
            tokens[device.id] = value
        else:
            if device.id not in kept:
                kept[device.id] = secrets.token_urlsafe(18)
                changed = True
            tokens[device.id] = kept[device.id]
    if changed:
        _write_private(path, json.dumps(kept, indent=1, sort_keys=True))
    return tokens


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


@contextlib.asynccontextmanager
async def window_devices(
    hall: Hall,
    board: DeviceBoard,
    *,
    capture: Capture | None = None,
    access: HallAccess | None = None,
) -> AsyncIterator[WindowDevices]:
    """Start the rating desk, the caller desk and the keypads; know the pages' tokens."""
    tokens = load_tokens(hall.config, board)
    windows = device_windows(hall.config)
    for device in web_devices(hall.config):
        if device.id not in windows:
            board.report(device.id, "error", "not listed in any window's devices")
        elif device.id in tokens:
            board.report(device.id, "ok", "served as a page")
    callers = CallerDesk(hall, capture=capture)
    async with (
        RatingDesk(hall) as ratings,
        WindowKeypads(hall, board, callers, ratings) as keypads,
    ):
        yield WindowDevices(hall, callers, ratings, keypads, tokens, windows, access)


# -- views ------------------------------------------------------------------------------------


def _row(view: HallView, window_id: str) -> JSON:
    return next(w for w in view.queue["windows"] if w["id"] == window_id)


def _staff_card(view: HallView, staff: str | None, fallback_name: str | None) -> JSON | None:
    """Who serves (亮明身份). The photo is only ever the agent's own copy in
    ``pages.staff_photos``: never the roster's ``photo_url`` (central's server: a page must
    not load anything from outside the hall); without one the page shows an initial."""
    if not staff:
        return None
    member = view.staff.get(staff, {})
    photo = f"/pages/staff/{staff}/photo" if staff in view.photos else None
    return {"staff": staff, "name": member.get("name") or fallback_name or "", "photo": photo}


def _serving_now(row: JSON) -> str | None:
    """Who serves at the window now: the staff member of its ticket (two may be signed in
    there), else the first signed in."""
    ticket = row.get("ticket") or {}
    if ticket.get("status") in ("called", "serving") and ticket.get("staff"):
        return str(ticket["staff"])
    staff: str | None = row.get("staff")
    return staff


def _name_at(row: JSON, staff: str | None) -> str | None:
    if staff is not None and staff == row.get("staff"):
        name: str | None = row.get("staff_name")
        return name
    return next((o.get("name") for o in row.get("others") or [] if o["staff"] == staff), None)


def _service_names(view: HallView) -> dict[str, str]:
    return {s["id"]: s["name"] for s in view.queue["services"]}


def caller_view(devices: WindowDevices, view: HallView, query: Mapping[str, str]) -> JSON:
    """The staff PC's caller page: the window's ticket, queue, held tickets, staff."""
    window_id = devices.check(query.get("device", ""), query.get("token"), CallerDevice)
    row = _row(view, window_id)
    names = _service_names(view)
    serves = set(row["services"])
    ticket = row.get("ticket")
    return {
        "hall": view.hall,
        "window": {k: row[k] for k in ("id", "name", "number", "state")},
        "staff": _staff_card(view, row.get("staff"), row.get("staff_name")),
        "current": None
        if ticket is None
        else {
            "ticket": ticket["number"],
            "status": ticket["status"],
            "status_text": wording.status_text(ticket["status"]),
            "service": ticket["service"],
            "service_name": names.get(ticket["service"], ticket["service"]),
            "recalls": ticket["recalls"],
            "called_count": ticket["called_count"],
        },
        # The service guide of the ticket being served (办事指南: check the materials).
        "guide": None
        if ticket is None
        else view.extras.get("service_guides", {}).get(ticket["service"]),
        "held": row["held"],
        "waiting": sum(s["waiting"] for s in view.queue["services"] if s["id"] in serves),
        "rating": None if row.get("rating") is None else {"ticket": row["rating"]["ticket"]},
        "services": [
            {"position": i, "id": s["id"], "name": s["name"]}
            for i, s in enumerate(view.queue["services"], 1)
        ],
    }


def rater_view(devices: WindowDevices, view: HallView, query: Mapping[str, str]) -> JSON:
    """The tablet rater: who served (亮明身份), and the five levels while a rating is open."""
    window_id = devices.check(query.get("device", ""), query.get("token"), RaterDevice)
    row = _row(view, window_id)
    pending = row.get("rating")
    staff = pending.get("staff") if pending else _serving_now(row)
    name = pending.get("staff_name") if pending else _name_at(row, staff)
    config = devices.hall.config
    rating = None
    if pending is not None:
        rating = {
            "ticket_id": pending["ticket_id"],
            "ticket": pending["ticket"],
            "service_name": _service_names(view).get(pending["service"], pending["service"]),
            "requested_at": pending["requested_at"],
        }
    return {
        "hall": view.hall,
        "large_text": True,
        "window": {k: row[k] for k in ("id", "name", "number", "state")},
        "staff": _staff_card(view, staff, name),
        "rating": rating,
        "levels": [
            {"level": lv.value, "label": RATING_LABELS[lv], "bad": lv.is_bad} for lv in RatingLevel
        ],
        "reasons": list(config.rating.reasons),
        "timeout_s": config.rating.timeout_s,
    }


# -- routes -------------------------------------------------------------------------------------


def window_routes(devices: WindowDevices, feed: PageFeed | None, gate: Gate) -> APIRouter:
    """The caller and rater pages, their actions, and rating through the local API."""
    if feed is not None:
        feed.add_view("caller", lambda view, query: caller_view(devices, view, query))
        feed.add_view("rater", lambda view, query: rater_view(devices, view, query))
    router = APIRouter()

    def page(name: str, device: str, token: str | None, kind: type[Any]) -> HTMLResponse:
        try:
            devices.check(device, token, kind)
        except ViewNotFound as err:
            raise HTTPException(404, str(err)) from None
        return HTMLResponse((STATIC / f"{name}.html").read_text(encoding="utf-8"))

    @router.get("/pages/caller/{device}", include_in_schema=False)
    async def caller_page(device: str, token: str | None = None) -> HTMLResponse:
        return page("caller", device, token, CallerDevice)

    @router.get("/pages/rater/{device}", include_in_schema=False)
    async def rater_page(device: str, token: str | None = None) -> HTMLResponse:
        return page("rater", device, token, RaterDevice)

    def opened(kind: type[Any]) -> Any:
        """The page device's own token (page or enrolled) opens its action; anything else
        is a 404, as for its page."""

        async def window_of(device: str, credentials: Credentials = None) -> str:
            token = None if credentials is None else credentials.credentials
            try:
                return devices.check(device, token, kind)
            except ViewNotFound as err:
                raise HTTPException(404, str(err)) from None

        return Depends(window_of)

    @router.post(f"{API}/callers/{{device}}/press", responses=ERRORS)
    async def press(device: str, body: Press, window_id: str = opened(CallerDevice)) -> JSON:
        """A web caller's button: the same operations as a keypad, debounced alike."""
        answer = await devices.callers.act(
            window_id, CallerCommand(body.action, body.argument), source=device
        )
        if not answer.done and not answer.repeat:
            raise QueueErrorAnswer(answer.message)
        return {
            "done": answer.done,
            "repeat": answer.repeat,
            "message": answer.message,
            "current": answer.current,
            "result": answer.result,
        }

    @router.post(f"{API}/raters/{{device}}/rating", responses=ERRORS)
    async def rate(
        device: str, body: Rating, window_id: str = opened(RaterDevice)
    ) -> OperationResult:
        """The tablet's rating of the ticket it showed."""
        outcome = await devices.ratings.submit(
            window_id,
            body.level,
            reasons=body.reasons,
            comment=body.comment,
            channel="tablet",
            device=device,
            ticket_id=body.ticket_id,
        )
        return answer(outcome)

    @router.post(
        f"{API}/windows/{{window}}/request-rating",
        responses=ERRORS,
        dependencies=guard(gate.window("request a rating")),
    )
    async def request_rating(window: str, body: RequestRating | None = None) -> OperationResult:
        """Invite the citizen at the window to rate (current or last finished ticket)."""
        number = body.number if body else None
        return answer(await devices.ratings.request(window, ticket_number=number))

    own_rater = caller_of(gate.rating())

    @router.post(f"{API}/windows/{{window}}/rating", responses=ERRORS)
    async def window_rating(
        window: str, body: Rating, rater: Principal = own_rater
    ) -> OperationResult:
        """Record the rating the window's rater waits for: only that window's rater device
        may (a staff, kiosk or ops credential never can)."""
        outcome = await devices.ratings.submit(
            window,
            body.level,
            reasons=body.reasons,
            comment=body.comment,
            channel="api",
            device=rater.name,
            ticket_id=body.ticket_id,
        )
        return answer(outcome)

    return router


class QueueErrorAnswer(QueueError):
    """A caller's press the hall refused (answered 409 with the reason)."""
