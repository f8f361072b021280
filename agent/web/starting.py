"""What the local API says while the agent is still starting.

The agent starts in two steps (agent/daemon.py): the local API answers as soon as the
store, the hall, access and (when the hall has one) the ticket printer are up, and the
rest (ID card and document desks, window devices, the central link, LED strips, voice,
inputs, reports, the pages, their routes and the credential routes) comes up right after,
while it answers. Until that second step is done, nothing pretends it is:

- ``/healthz`` is ``degraded`` with the check ``start``;
- a request for a route that is not there yet is answered ``503`` (``error: starting``,
  ``Retry-After: 1``), not ``404``: a page asked for gets a Chinese "starting" page that
  reloads itself;
- a bearer token that is neither an enrolled device, a session nor the ops token may be a
  web caller's or rater's page token, which only the window devices know: ``503
  starting`` too, not ``401``;
- ``/api/v1/status`` shows central's state as ``starting``.

systemd hears ``READY=1`` only once both steps are done (``serve`` in agent/daemon.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.responses import HTMLResponse, JSONResponse, Response

from agent.core.errors import QueueError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

    from agent.central.link import Link
    from agent.features.access import Principal
    from agent.web.access import PageDevice

RETRY_AFTER_S = 1
MESSAGE = "the agent is starting: this part of the local API answers in a moment"
# What a screen, kiosk or caller page shows for the moment (it reloads itself).
STARTING_PAGE = (
    "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
    f"<meta http-equiv='refresh' content='{RETRY_AFTER_S}'><title>正在启动</title></head>"
    "<body style='font-family:sans-serif;text-align:center;padding-top:20vh;font-size:2em'>"
    "系统正在启动，请稍候……</body></html>"
)


class Starting(QueueError):
    """Asked for something the second step of the start has not brought up yet."""

    code = "starting"

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class StartUp:
    """Where the agent's start is: whether its second step is done, and what that step
    hands to the parts that answered before it (the central link, the page tokens)."""

    def __init__(self) -> None:
        self.complete = False
        self.began = time.monotonic()
        self.link: Link | None = None
        self._page_device: PageDevice | None = None

    def finish(self, link: Link, page_device: PageDevice) -> None:
        self.link = link
        self._page_device = page_device
        self.complete = True

    def page_principal(self, token: str) -> Principal | None:
        """A web caller's or rater's page token (agent/web/window_pages.py); while they
        are not up, :class:`Starting` rather than "unknown token"."""
        if self._page_device is None:
            raise Starting()
        return self._page_device(token)


def starting_response(scope: Scope) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    accept = dict(scope.get("headers", ())).get(b"accept", b"")
    if b"text/html" in accept:
        return HTMLResponse(STARTING_PAGE, status_code=503, headers=headers)
    return JSONResponse({"error": Starting.code, "message": MESSAGE}, 503, headers=headers)


def answer_while_starting(app: FastAPI, start: StartUp) -> None:
    """Routes not there yet are ``503 starting`` until the start is complete; then ``404``
    as before (the router's own answer for a path it does not have)."""
    not_found = app.router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        if start.complete or scope["type"] != "http":
            await not_found(scope, receive, send)
            return
        await starting_response(scope)(scope, receive, send)

    app.router.default = default
