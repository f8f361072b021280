"""The proxy cases' routes (docs/cases.md), each with its access rule (docs/security.md):

- ``POST /api/v1/windows/{w}/cases`` — register a case at window ``w`` (staff who work at
  ``w``, the manager, ops); answers the case and how its receipt printed;
- ``GET /api/v1/windows/{w}/cases`` — ``w``'s cases (``due=near|overdue|due`` for those
  near or past their promised date): staff of ``w``, ``w``'s caller, the manager, ops;
- ``GET /api/v1/cases`` — every case, with filters: the manager, ops;
- ``GET /api/v1/cases/{number}``, ``POST …/status``, ``POST …/receipt`` — one case (its
  window's staff, the manager, ops);
- ``GET /api/v1/cases/{number}/public`` — anyone with the number: status and promised
  date, nothing personal (the kiosk's 办件查询);
- ``GET /pages/manager/cases`` — the cases page (the manager: every case; staff: their
  windows' cases and registering);
- ``GET /pages/kiosk/case`` — the kiosk's 办件查询.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.core.cases import CaseStatus
from agent.core.errors import Forbidden
from agent.features.access import Principal, Role
from agent.features.cases import CaseDesk, Registration
from agent.web.access import Gate, Rule, caller_of
from agent.web.errors import ERRORS
from agent.web.pages import STATIC

API = "/api/v1"
JSON = dict[str, Any]
CaseNumber = Annotated[str, Path(min_length=1, max_length=32, examples=["DB20260302001"])]


DueQuery = Annotated[
    Literal["near", "overdue", "due"] | None,
    Query(description="near: from the warning day on; overdue: past; due: either"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterCase(Strict):
    service: str = Field(min_length=1, max_length=64, description="the service's id")
    name: str = Field(min_length=1, max_length=64, description="the citizen's name")
    id_number: str = Field(min_length=6, max_length=32, description="the citizen's ID number")
    phone: str | None = Field(default=None, max_length=20)
    materials: list[Annotated[str, Field(max_length=120)]] = Field(
        default_factory=list, max_length=40, description="the guide's materials received"
    )
    other_materials: list[Annotated[str, Field(max_length=120)]] = Field(
        default_factory=list, max_length=10, description="materials received not in the guide"
    )
    promised: dt.date | None = Field(
        default=None, description="the promised date; from the guide's time limit if absent"
    )


class ChangeCase(Strict):
    status: Literal["processing", "done", "returned", "closed"] | None = None
    note: str | None = Field(default=None, max_length=200)
    promised: dt.date | None = None


def _staff_name(principal: Principal) -> str | None:
    return principal.name if principal.role is Role.STAFF else None


def case_routes(desk: CaseDesk, gate: Gate) -> APIRouter:
    router = APIRouter(tags=["cases"])

    async def at_window(principal: Principal, request: Request) -> None:
        if principal.role in (Role.MANAGER, Role.OPS):
            return
        window = request.path_params.get("window", "")
        if window not in principal.windows:
            raise Forbidden(f"{principal} does not work at window {window}")

    def window_rule(action: str, *roles: Role) -> Rule:
        return Rule(
            gate,
            roles,
            action=action,
            check=at_window,
            condition="staff who work at that window, its caller",
        )

    registering = window_rule("register a proxy case", Role.STAFF, Role.MANAGER, Role.OPS)
    window_list = window_rule(
        "list a window's proxy cases", Role.STAFF, Role.CALLER, Role.MANAGER, Role.OPS
    )

    def case_rule(action: str) -> Rule:
        async def own_case(principal: Principal, request: Request) -> None:
            if principal.role in (Role.MANAGER, Role.OPS):
                return
            window = await desk.window_of(request.path_params.get("number", ""))
            if window is not None and window not in principal.windows:
                raise Forbidden(f"{principal} may not {action}: the case is window {window}'s")

        return Rule(
            gate,
            (Role.STAFF, Role.MANAGER, Role.OPS),
            action=action,
            check=own_case,
            condition="staff of the case's window",
        )

    managers = gate.allow(Role.MANAGER, Role.OPS, action="list every proxy case")

    as_registrar = caller_of(registering)
    as_window_reader = caller_of(window_list)
    as_manager = caller_of(managers)
    as_reader = caller_of(case_rule("read a case"))
    as_changer = caller_of(case_rule("change a case"))
    as_reprinter = caller_of(case_rule("reprint a case's receipt"))

    @router.post(f"{API}/windows/{{window}}/cases", status_code=201, responses=ERRORS)
    async def register(
        window: str, body: RegisterCase, principal: Principal = as_registrar
    ) -> JSON:
        """Register a proxy case (代收代办) and print the citizen's receipt."""
        return await desk.register(
            Registration(
                service=body.service,
                window=window,
                name=body.name,
                id_number=body.id_number,
                phone=body.phone,
                materials=body.materials,
                other_materials=body.other_materials,
                promised=body.promised,
                staff=_staff_name(principal),
            )
        )

    @router.get(f"{API}/windows/{{window}}/cases", responses=ERRORS)
    async def window_cases(
        window: str, due: DueQuery = None, _: Principal = as_window_reader
    ) -> JSON:
        """A window's cases, soonest promised date first."""
        return await desk.listing(window=window, due_filter=due)

    @router.get(f"{API}/cases", responses=ERRORS)
    async def all_cases(
        status: Annotated[list[CaseStatus] | None, Query()] = None,
        due: DueQuery = None,
        window: Annotated[str | None, Query(max_length=64)] = None,
        _: Principal = as_manager,
    ) -> JSON:
        """Every case, by status, deadline and window (the manager)."""
        wanted = None if not status else [s.value for s in status]
        return await desk.listing(window=window, status=wanted, due_filter=due)

    @router.get(f"{API}/cases/{{number}}/public", responses=ERRORS)
    async def public(number: CaseNumber) -> JSON:
        """A case's status and promised date for the citizen holding its number: nothing
        personal."""
        return await desk.public(number)

    @router.get(f"{API}/cases/{{number}}", responses=ERRORS)
    async def one_case(number: CaseNumber, _: Principal = as_reader) -> JSON:
        """One case (the citizen masked)."""
        return await desk.view(number)

    @router.post(f"{API}/cases/{{number}}/status", responses=ERRORS)
    async def change(
        number: CaseNumber,
        body: ChangeCase,
        principal: Principal = as_changer,
    ) -> JSON:
        """Move a case (办理中, 办结, 退回, 结案) or its promised date, with a note."""
        by: Literal["window", "manager"] = "window" if principal.role is Role.STAFF else "manager"
        return await desk.update(
            number,
            None if body.status is None else CaseStatus(body.status),
            by=by,
            note=body.note,
            promised=body.promised,
            staff=_staff_name(principal),
        )

    @router.post(f"{API}/cases/{{number}}/receipt", responses=ERRORS)
    async def receipt(number: CaseNumber, _: Principal = as_reprinter) -> JSON:
        """Print a case's receipt again."""
        return await desk.reprint(number)

    @router.get("/pages/manager/cases", include_in_schema=False)
    async def manager_page() -> HTMLResponse:
        return HTMLResponse((STATIC / "manager-cases.html").read_text(encoding="utf-8"))

    @router.get("/pages/kiosk/case", include_in_schema=False)
    async def lookup_page() -> HTMLResponse:
        page = (STATIC / "case-lookup.html").read_text(encoding="utf-8")
        prefix = desk.config.cases.number_prefix  # [A-Z]{1,4}: safe in an attribute
        return HTMLResponse(page.replace("<html ", f'<html data-prefix="{prefix}" ', 1))

    return router
