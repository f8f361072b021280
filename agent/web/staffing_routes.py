"""The hall's own staff board on the local API and its page (docs/pages.md, "The staff
page"; docs/configuration.md, "The hall's own roster and rota"):

- ``GET /api/v1/staffing``: the running roster and rota, and where they came from;
- ``PUT /api/v1/staffing``: replace them (checked as the config file is);
- ``GET /pages/manager/staff``: the manager's editing page.

Who may read and edit is the caller's ``edit_rule`` (the manager and ops).
"""

from __future__ import annotations

import pathlib
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.features.access import Principal
from agent.features.staffing import MemberEdit, StaffingDesk, StaffingRefused
from agent.web.errors import ERRORS, ErrorBody

API = "/api/v1"
STATIC = pathlib.Path(__file__).resolve().parent / "static"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberIn(_Strict):
    """One member of the roster the board shows (checked as ``staff[]`` of the config)."""

    staff: str = Field(max_length=64, description="工号")
    name: str = Field(max_length=64)
    windows: list[str] = Field(
        default_factory=list, max_length=64, description="where they may work (empty: any)"
    )
    photo: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{20}$",
        description="an uploaded image's id (POST /api/v1/content/images); null: none",
    )


class StaffingIn(_Strict):
    """The roster and the rota (the config's ``rota``: ``shifts``, ``posts``, ``week``)."""

    staff: list[MemberIn] = Field(max_length=500)
    rota: dict[str, Any] = Field(description="as the config file's rota section")


STAFFING_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    422: {
        "model": ErrorBody,
        "description": "the roster or rota fails the config's checks; ``problems`` lists them",
    },
}


def staffing_routes(desk: StaffingDesk, *, edit_rule: Any) -> APIRouter:
    router = APIRouter()
    editor = Depends(edit_rule)

    @router.get(f"{API}/staffing", tags=["staffing"], responses=ERRORS, dependencies=[editor])
    async def staffing() -> dict[str, Any]:
        """The roster and rota the big screen's staff board runs on, and their source:
        ``hall`` (本大厅编辑), ``central`` (上级下发) or ``file`` (配置文件)."""
        return await desk.current()

    @router.put(f"{API}/staffing", tags=["staffing"], responses=STAFFING_ERRORS)
    async def edit(body: StaffingIn, who: Principal = editor) -> Any:
        """Replace the hall's roster and rota. Checked exactly as the config file's
        ``staff`` and ``rota``; kept until the next edit or central's push of either."""
        members = [MemberEdit(m.staff, m.name, list(m.windows), m.photo) for m in body.staff]
        try:
            return await desk.save(members, body.rota, who.name)
        except StaffingRefused as err:
            return JSONResponse(
                status_code=422,
                content={
                    "error": err.code,
                    "message": "; ".join(err.problems)[:500],
                    "problems": err.problems[:50],
                },
            )

    @router.get("/pages/manager/staff", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "staff.html").read_text(encoding="utf-8"))

    return router
