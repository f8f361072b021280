"""The manager's page (统计报表): ``GET /pages/manager`` (included under ``/pages``).

The page itself is public, like the guide desk's: it shows and does nothing until a manager
logs in (or the ops person opens it with the ops token), and every figure on it comes from
``GET /api/v1/reports``, which only the manager and ops may read (agent/web/access.py,
docs/security.md). Its script is ``static/manager.js``; docs/pages.md describes it.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from agent.web.kiosk_pages import STATIC


def manager_routes() -> APIRouter:
    """``/manager``: the statistics page of the hall's manager."""
    router = APIRouter(include_in_schema=False)

    @router.get("/manager")
    async def manager_page() -> HTMLResponse:
        return HTMLResponse(
            (STATIC / "manager.html").read_text(encoding="utf-8"),
            headers={"Cache-Control": "no-cache"},
        )

    return router
