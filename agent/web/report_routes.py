"""The reports' route: ``GET /api/v1/reports`` as JSON, CSV or XLSX (docs/reports.md).

Who may call it is decided by the caller's ``read_guard`` (agent/web/access.py: the manager
and ops); the report itself is :class:`agent.features.reports.Reports`'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from agent.core.reports import VIEWS
from agent.features.report_tables import csv_bytes, to_xlsx
from agent.features.reports import Reports
from agent.web.errors import ERRORS

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def report_routes(reports: Reports, *, read_guard: Sequence[Any]) -> APIRouter:
    """``GET /api/v1/reports``: the report as JSON, CSV or XLSX (``read_guard``: who may,
    decided by the web layer, agent/web/access.py — the manager and ops)."""
    router = APIRouter(prefix="/api/v1", tags=["reports"])

    answers: dict[int | str, dict[str, Any]] = {
        **ERRORS,
        200: {
            "description": "the report: JSON, or with format=csv or xlsx the file",
            "content": {
                "application/json": {},
                CSV_TYPE.split(";", maxsplit=1)[0]: {},
                XLSX_TYPE: {},
            },
        },
    }

    @router.get("/reports", dependencies=list(read_guard), responses=answers)
    async def report(
        from_: Annotated[
            str | None,
            Query(
                alias="from",
                description="first business day: YYYY-MM-DD, YYYY-Www, YYYY-MM, today, "
                "yesterday (default today)",
            ),
        ] = None,
        to: Annotated[str | None, Query(description="last business day (default: from's)")] = None,
        by: Annotated[
            Literal["service", "window", "staff", "hour"] | None,
            Query(description="one view; all four when absent"),
        ] = None,
        format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
    ) -> Any:
        """The hall's statistics for a range of business days (docs/reports.md)."""
        first, last = reports.span(from_, to)
        body = await reports.report(first, last, VIEWS if by is None else (by,))
        if format == "json":
            return body
        name = f"report-{first.isoformat()}_{last.isoformat()}"
        if format == "csv":
            content, media, name = csv_bytes(body, by), CSV_TYPE, f"{name}.csv"
        else:
            content = await asyncio.to_thread(to_xlsx, body)
            media, name = XLSX_TYPE, f"{name}.xlsx"
        return Response(
            content,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
