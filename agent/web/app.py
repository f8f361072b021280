"""The local HTTP API (FastAPI), served by uvicorn inside the agent's event loop.

It is what the CLI, the pages and local tools talk to. Client mistakes get a 4xx with
``{"error": code, "message": ...}`` naming the problem; a refusal by the hall's rules is
409, an unknown window, service or ticket is 404, a malformed request is 422, and a
store that cannot write (or an agent shutting down) is 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import uvicorn
from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import agent
from agent.config.system import WebConfig
from agent.core import operations as op
from agent.core import wording
from agent.core.engine import Outcome
from agent.core.errors import NotFound, QueueError, Refused
from agent.core.model import GRANTED_BY_SELF, Priority, Source
from agent.core.operations import Operation, Take
from agent.errors import HallAgentError
from agent.features.access import Principal, Role
from agent.features.issuing import Issuing
from agent.features.staff import sign_in_by_number
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import StoreError, StoreFull
from agent.runtime.tasks import BackgroundTasks
from agent.web.access import READERS, Gate, Rule, guard
from agent.web.connections import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    accept_errors,
    connection_limit,
)
from agent.web.errors import ERRORS
from agent.web.ratelimit import RateLimit

if TYPE_CHECKING:
    from agent.features.printing import TicketPrinting

log = logging.getLogger(__name__)

API = "/api/v1"


class Strict(BaseModel):
    """A request body: unknown fields are mistakes and are refused."""

    model_config = ConfigDict(extra="forbid")


class TakeTicket(Strict):
    service: str = Field(min_length=1, description="service id, e.g. 'social'")
    source: Source = Source.API
    priority: Priority = Priority.NORMAL


class CallNumber(Strict):
    number: Annotated[str, Field(pattern=r"^[A-Za-z]{1,2}\d{2,5}$", examples=["A012"])]


class Transfer(Strict):
    service: str = Field(min_length=1)
    position: Literal["front", "back"] = "front"


class SignIn(Strict):
    staff: str = Field(min_length=1, max_length=32, description="staff number")
    name: str | None = Field(default=None, max_length=32)


class Pause(Strict):
    reason: str = Field(default="", max_length=200)


class SignOut(Strict):
    staff: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="who signs out (the other stays); absent: everyone, the window closes",
    )


class Cancel(Strict):
    reason: str = Field(default="", max_length=200)


class Reprint(Strict):
    day: dt.date | None = Field(default=None, description="the business day; today if absent")


class EventRef(BaseModel):
    seq: int
    type: str


class OperationResult(BaseModel):
    """What an operation did; ``result`` holds the ticket or window it acted on."""

    result: dict[str, Any]
    events: list[EventRef]


# The HTTP status of each refusal, chosen here only (the engine names refusals by code).
STATUS_OF: dict[str, int] = {
    "not_found": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "locked_out": 429,
    "store_unavailable": 503,
    "disk_full": 503,
    "starting": 503,  # asked for before the start's second step is done (agent/web/starting.py)
    # The hall's screen content (agent/features/content.py): uploads and time windows.
    "image_too_large": 413,
    "not_an_image": 415,
    "image_damaged": 422,
    "image_too_many_pixels": 422,
    "invalid_window": 422,
}

# What a refusal's answer adds for the client: how to authenticate; when to ask again.
HEADERS_OF: dict[str, dict[str, str]] = {
    "unauthorized": {"WWW-Authenticate": "Bearer"},
    "starting": {"Retry-After": "1"},
}


def answer(outcome: Outcome) -> OperationResult:
    """An operation's answer: its result and the events it committed."""
    return OperationResult(
        result=outcome.result,
        events=[EventRef(seq=e.seq, type=e.type) for e in outcome.stored],
    )


# SQLite's largest integer: a seq beyond it is a malformed request, not a server error.
MAX_SEQ = 2**63 - 1
# An error answer names the problem, never repeats what was sent at length: a field name
# (it may be anything a client sent as a key) and a message are cut to a short prefix.
_SHOWN_NAME = 40
_SHOWN_MESSAGE = 200
_SHOWN_PROBLEMS = 5
_SHOWN_ANSWER = 500


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(status: int, code: str, message: str, citizen: str | None = None) -> JSONResponse:
    message = _short(message, _SHOWN_ANSWER)  # a refusal may quote a path or body value
    content = {"error": code, "message": message}
    if citizen is not None:  # a refusal a citizen can meet: what the kiosk shows
        content["citizen_message"] = citizen
    return JSONResponse(status_code=status, content=content)


def _citizen(request: Request, text: str | None) -> str | None:
    """A refused ticket always has words for the citizen (never the cause)."""
    if text is None and request.method == "POST" and request.url.path == f"{API}/tickets":
        return wording.GENERIC
    return text


def _store_citizen(request: Request) -> str | None:
    """A ticket refused because the store cannot write: the citizen's words."""
    return None if _citizen(request, None) is None else wording.STORE_UNAVAILABLE


def _describe_validation(err: RequestValidationError) -> str:
    parts = []
    problems = err.errors()
    for problem in problems[:_SHOWN_PROBLEMS]:
        loc = ".".join(_short(str(p), _SHOWN_NAME) for p in problem.get("loc", ()) if p != "body")
        msg = _short(str(problem.get("msg", "invalid")), _SHOWN_MESSAGE)
        parts.append(f"{loc}: {msg}" if loc else msg)
    if len(problems) > _SHOWN_PROBLEMS:
        parts.append(f"and {len(problems) - _SHOWN_PROBLEMS} more problems")
    return "; ".join(parts) or "the request is not valid"


def create_app(
    hall: Hall,
    gate: Gate,
    status_extra: Callable[[], dict[str, Any]] | None = None,
    printing: TicketPrinting | None = None,
    issuing: Issuing | None = None,
) -> FastAPI:
    issuing = issuing or Issuing(hall, printing)
    app = FastAPI(
        title="hall-agent local API",
        version=agent.__version__,
        description="The hall's queue: take tickets, operate windows, read the state.",
    )

    @app.exception_handler(QueueError)
    async def _queue_error(request: Request, err: QueueError) -> JSONResponse:
        status = STATUS_OF.get(err.code, 409)
        response = _error(status, err.code, err.message, _citizen(request, err.citizen_message))
        response.headers.update(HEADERS_OF.get(err.code, {}))
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _describe_validation(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else "http_error"
        return _error(err.status_code, code, str(err.detail))

    @app.exception_handler(ShuttingDown)
    async def _stopping(_: Request, err: ShuttingDown) -> JSONResponse:
        return _error(503, "shutting_down", str(err))

    @app.exception_handler(StoreError)
    async def _store(request: Request, err: StoreError) -> JSONResponse:
        code = "disk_full" if isinstance(err, StoreFull) else "store_unavailable"
        return _error(503, code, f"{err}; the operation was not done", _store_citizen(request))

    async def run(operation: Operation) -> OperationResult:
        return answer(await hall.execute(operation))

    # Who may call what: each route's rule (agent/web/access.py; docs/security.md).
    @app.get(f"{API}/status", dependencies=guard(readers(gate)))
    async def status() -> dict[str, Any]:
        """The hall at a glance: business day, windows, waiting counts, outbox."""
        snap = await hall.read(lambda e, n: e.snapshot(n, waiting_list=False))
        depth = await hall.store_read(lambda s: s.outbox_depth())
        body = {
            "hall": {"id": hall.config.hall.id, "name": hall.config.hall.name},
            "agent_version": agent.__version__,
            "day": snap["day"],
            "services": snap["services"],
            "windows": snap["windows"],
            "waiting": sum(s["waiting"] for s in snap["services"]),
            "epoch": hall.store.epoch,
            "last_seq": hall.last_seq,
            "outbox_depth": depth,
        }
        if status_extra is not None:
            body.update(status_extra())
        if printing is not None:
            body["printing"] = printing.state()
        return body

    @app.get(f"{API}/queue", dependencies=guard(readers(gate)), response_model=dict[str, Any])
    async def queue() -> Response:
        """Every waiting ticket, every window's current ticket, per-service figures."""
        # Encoded once per committed state, not once per read (Hall.queue_json).
        return Response(await hall.queue_json(), media_type="application/json")

    @app.get(
        f"{API}/events",
        dependencies=guard(gate.allow(Role.MANAGER, Role.OPS, action="read the event log")),
    )
    async def events(
        from_seq: Annotated[int, Query(ge=1, le=MAX_SEQ)] = 1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The hall's event log (the outbox), as central receives it."""
        rows = await hall.store_read(lambda s: s.events(from_seq, limit))
        return [r.envelope(hall.config.hall.id) for r in rows]

    @app.post(f"{API}/tickets", status_code=201, responses=ERRORS, dependencies=guard(gate.take()))
    async def take(body: TakeTicket, request: Request) -> OperationResult:
        """Issue a ticket as the kiosk would; a printed ticket's ``result.print`` says how
        its print went (printed, failed: show the number on screen, or pending). Refused
        (409 ``printer_unavailable``) while the printer cannot print. A priority ticket
        records who granted it (``granted_by``: ``self`` from the kiosk's green channel,
        else the guide's staff number)."""
        take = Take(
            service=body.service,
            source=body.source,
            priority=body.priority,
            granted_by=_granted_by(request.state.principal) if body.priority.is_green else None,
        )
        return answer(await issuing.take(take, wait_for_print=True))

    _guide_desk_routes(app, hall, issuing, gate)
    _printing_routes(app, printing, issuing, gate)

    @app.post(
        f"{API}/tickets/{{number}}/cancel",
        responses=ERRORS,
        dependencies=guard(gate.allow(Role.STAFF, Role.GUIDE, Role.OPS, action="cancel a ticket")),
    )
    async def cancel(number: str, body: Annotated[Cancel | None, Body()] = None) -> OperationResult:
        return await run(op.Cancel(number=number, reason=body.reason if body else ""))

    def window_op(path: str, summary: str, make: type[op.WindowOperation]) -> None:
        async def handler(window: str, request: Request) -> OperationResult:
            return await run(make(window=window, staff=_presser(request.state.principal)))

        app.post(
            f"{API}/windows/{{window}}/{path}",
            summary=summary,
            responses=ERRORS,
            dependencies=guard(gate.window(summary.lower())),
        )(handler)

    window_op("next", "Call next", op.CallNext)
    window_op("recall", "Recall the current ticket", op.Recall)
    window_op("serving", "Start serving", op.StartServing)
    window_op("finish", "Finish the current ticket", op.Finish)
    window_op("no-show", "Mark the current ticket no-show", op.NoShow)
    window_op("hold", "Hold the current ticket", op.Hold)
    window_op("resume", "Resume a paused window", op.Resume)

    _sign_out_route(app, hall, gate)

    @app.post(
        f"{API}/windows/{{window}}/call",
        responses=ERRORS,
        dependencies=guard(gate.window("call a number")),
    )
    async def call_number(window: str, body: CallNumber, request: Request) -> OperationResult:
        """Call a specific number (a waiting ticket, a missed one, or one held here)."""
        return await run(
            op.CallNumber(
                window=window, number=body.number, staff=_presser(request.state.principal)
            )
        )

    @app.post(
        f"{API}/windows/{{window}}/transfer",
        responses=ERRORS,
        dependencies=guard(gate.window("transfer a ticket")),
    )
    async def transfer(window: str, body: Transfer, request: Request) -> OperationResult:
        return await run(
            op.Transfer(
                window=window,
                service=body.service,
                position=body.position,
                staff=_presser(request.state.principal),
            )
        )

    @app.post(
        f"{API}/windows/{{window}}/pause",
        responses=ERRORS,
        dependencies=guard(gate.window("pause the window")),
    )
    async def pause(
        window: str, request: Request, body: Annotated[Pause | None, Body()] = None
    ) -> OperationResult:
        return await run(
            op.Pause(
                window=window,
                reason=body.reason if body else "",
                staff=_presser(request.state.principal),
            )
        )

    @app.post(
        f"{API}/windows/{{window}}/sign-in", responses=ERRORS, dependencies=guard(gate.sign_in())
    )
    async def sign_in(window: str, body: SignIn) -> OperationResult:
        # Once the hall has a roster, only its members (409 not_on_roster), by its name.
        return answer(await sign_in_by_number(hall, window, body.staff, body.name))

    return app


def _sign_out_route(app: FastAPI, hall: Hall, gate: Gate) -> None:
    @app.post(
        f"{API}/windows/{{window}}/sign-out",
        summary="Sign the staff out",
        responses=ERRORS,
        dependencies=guard(gate.window("sign the staff out")),
    )
    async def sign_out(
        window: str, request: Request, body: Annotated[SignOut | None, Body()] = None
    ) -> OperationResult:
        """A staff member signs themself out (the other staff member at the window stays);
        a caller or ops names who (``staff``), or signs everyone out and closes it."""
        presser = _presser(request.state.principal)
        named = body.staff if body is not None else None
        if presser is not None and named not in (None, presser):
            raise Refused(f"staff {presser} signs out only themself, not {named}")
        return answer(await hall.execute(op.SignOut(window=window, staff=presser or named)))


def _presser(principal: Principal) -> str | None:
    """Who pressed, for the ticket's record: a staff member's own session names them (two
    may be signed in at one window); a caller device or ops does not."""
    return principal.name if principal.role is Role.STAFF else None


def _granted_by(principal: Principal) -> str:
    """Who granted a priority: the citizen themself at a kiosk, else the person's name
    (a guide's staff number) or the ops credential's."""
    return GRANTED_BY_SELF if principal.role is Role.KIOSK else principal.name


def readers(gate: Gate) -> Rule:
    """Who may read the hall's state (status, queue): screens, people, ops."""
    return gate.allow(*READERS, action="read the hall's state")


def _guide_desk_routes(app: FastAPI, hall: Hall, issuing: Issuing, gate: Gate) -> None:
    """The guide desk's appointment check-in (the guide desk page, docs/pages.md)."""

    @app.post(
        f"{API}/appointments/{{appointment}}/check-in",
        status_code=201,
        responses=ERRORS,
        dependencies=guard(gate.allow(Role.GUIDE, Role.OPS, action="check an appointment in")),
    )
    async def check_in(
        appointment: Annotated[str, Path(min_length=1, max_length=64)], request: Request
    ) -> OperationResult:
        """The guide desk checks a citizen's appointment in by its number (central's
        ``set_appointments``): a ticket of its service with priority ``appointment``, once
        per appointment and day."""
        pushed = await hall.store_read(lambda s: s.setting("appointments"))
        day = hall.business_day().isoformat()
        found = [a for a in pushed or [] if a.get("appointment_id") == appointment]
        today = next((a for a in found if a.get("day") == day), None)
        if today is None:
            if found:
                days = ", ".join(sorted(str(a.get("day")) for a in found))
                raise Refused(f"appointment {appointment} is for {days}, not today ({day})")
            raise NotFound(
                f"there is no appointment {appointment!r} in the appointments central sent; "
                "check the number, or let the citizen use their ID card at the kiosk"
            )
        take = Take(
            service=str(today.get("service")),
            source=Source.API,
            priority=Priority.APPOINTMENT,
            granted_by=_granted_by(request.state.principal),
            appointment=appointment,
        )
        return answer(await issuing.take(take, wait_for_print=True))


def _printing_routes(
    app: FastAPI, printing: TicketPrinting | None, issuing: Issuing, gate: Gate
) -> None:
    """The kiosk's issuing state and reprint."""
    looking = gate.allow(Role.KIOSK, *READERS, action="read the issuing state")
    reprinting = gate.allow(Role.STAFF, Role.GUIDE, Role.OPS, action="reprint a ticket")

    @app.get(f"{API}/issuing", dependencies=guard(looking))
    async def issuing_state() -> dict[str, Any]:
        """Whether the kiosk may issue tickets now, and why not (the store's and the
        printer's state)."""
        return issuing.state()

    @app.post(f"{API}/tickets/{{number}}/reprint", responses=ERRORS, dependencies=guard(reprinting))
    async def reprint(
        number: str, body: Annotated[Reprint | None, Body()] = None
    ) -> OperationResult:
        """Print a ticket of today again (the citizen lost it, or its print failed)."""
        if printing is None:
            raise Refused("this hall has no ticket printer running; reprint is not available")
        answer = await printing.reprint(number, body.day if body else None)
        return OperationResult.model_validate(answer)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the agent's loop: the agent, not uvicorn, owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebStartError(HallAgentError, OSError):
    """The local API could not start listening."""


class WebServer:
    """uvicorn in the agent's own event loop; an async context manager.

    Bounded under floods (docs/operations.md, "Limits of the local API"): request deadlines
    and a connection limit below the open-file limit (:mod:`agent.web.connections`), and a
    rate limit per client on state-changing requests (:mod:`agent.web.ratelimit`).
    """

    def __init__(self, app: FastAPI, web: WebConfig) -> None:
        self.guard = ConnectionGuard(web.max_connections, web.header_timeout_s, web.body_timeout_s)
        self.rate_limit = RateLimit(
            app, web.rate_limit_per_s, web.rate_limit_burst, web.exempt_networks()
        )
        self._server = _EmbeddedServer(
            uvicorn.Config(
                self.rate_limit,
                host=web.host,
                port=web.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
                http=self.guard.protocol_class(),
                ws="none",
                timeout_keep_alive=web.keepalive_timeout_s,
                h11_max_incomplete_event_size=web.max_header_bytes,
                backlog=ACCEPT_BACKLOG,
                # No proxy in front: the client address is the TCP peer's, never a header's.
                proxy_headers=False,
            )
        )
        self._stack = contextlib.AsyncExitStack()
        self._host = web.host
        self._wanted_connections = web.max_connections
        self._loop_handler: Any = None
        self._closed = False
        self.port = web.port

    async def __aenter__(self) -> WebServer:
        self.guard.limit = connection_limit(self._wanted_connections)
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(accept_errors(self._loop_handler))
        try:
            async with contextlib.AsyncExitStack() as stack:
                tasks = await stack.enter_async_context(BackgroundTasks())
                task = tasks.create_task(self._serve(), name="web")
                while not self._server.started:
                    if task.done():
                        raise WebStartError(
                            f"the local API cannot listen on {self._host}:{self.port} (is "
                            "another agent running, or the port taken?); set web.port or "
                            "HALL_WEB__PORT"
                        )
                    await asyncio.sleep(0.002)  # the API's first answer waits for this
                self._stack = stack.pop_all()
        except BaseException:
            loop.set_exception_handler(self._loop_handler)
            raise
        sockets = self._server.servers[0].sockets if self._server.servers else []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop answering, let the requests in progress finish; once (the daemon closes the
        API before the features behind it stop, ahead of this context's own exit)."""
        if self._closed:
            return
        self._closed = True
        self._server.should_exit = True
        try:
            await self._stack.aclose()
        finally:
            asyncio.get_running_loop().set_exception_handler(self._loop_handler)

    async def _serve(self) -> None:
        # uvicorn logs the cause and exits when it cannot bind: __aenter__ says so.
        with contextlib.suppress(SystemExit):
            await self._server.serve()
