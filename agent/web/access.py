"""Who may call what on the local API: one rule per route, as a FastAPI dependency.

The API trusts no peer address (not even 127.0.0.1): every request that changes the hall,
and every read of operational or personal data, carries ``Authorization: Bearer <token>``
— a device's enrolled token, a web caller's or rater's page token, a person's session, or
the ops token (:mod:`agent.features.access`). A route declares its :class:`Rule` in its
``dependencies``; the rule answers 401 ``unauthorized`` without a valid credential and 403
``forbidden`` for a role (or window) that may not, before the route's own code runs. The
OpenAPI document declares the bearer scheme on every guarded route. docs/security.md has
the table of roles; tests/test_access.py checks every route against it.

Also here: the routes that manage credentials (``/api/v1/auth/…``: login and logout, and
for ops, enrolling and revoking devices, adding and removing users).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from agent.core.errors import Forbidden, Unauthorized
from agent.core.model import Priority
from agent.features.access import (
    MAX_PASSWORD,
    USER_ROLES,
    HallAccess,
    Principal,
    Role,
)
from agent.runtime.hall import Hall
from agent.web.errors import ERRORS

log = logging.getLogger(__name__)

API = "/api/v1"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description=(
        "A device's enrolled token, a web caller's or rater's page token, a person's session "
        "token (POST /api/v1/auth/login) or the ops token (<storage.path>/ops-token)"
    ),
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]

# Roles that may read the hall's state (status, queue): screens and people, and ops.
READERS = (Role.SCREEN, Role.STAFF, Role.GUIDE, Role.MANAGER, Role.OPS)

Check = Callable[[Principal, Request], Awaitable[None]]
PageDevice = Callable[[str], Principal | None]


class Gate:
    """Finds who sent a request: enrolled devices, sessions and the ops token
    (:class:`HallAccess`), then the web callers' and raters' page tokens."""

    def __init__(
        self, hall: Hall, access: HallAccess, page_device: PageDevice | None = None
    ) -> None:
        self.hall = hall
        self.access = access
        self._page_device = page_device

    def principal(self, token: str | None) -> Principal | None:
        if not token:
            return None
        found = self.access.principal(token)
        if found is None and self._page_device is not None:
            found = self._page_device(token)
        return found

    # -- the rules -------------------------------------------------------------------------

    def allow(self, *roles: Role, action: str) -> Rule:
        """Any of ``roles``."""
        return Rule(self, roles, action=action)

    def take(self) -> Rule:
        """Issuing: kiosk, guide, staff, ops. A priority ticket: guide or ops; the kiosk only
        the green channel's classes of the config while ``queue.green_channel.by_touch``
        (the citizen chooses and confirms on the touch screen; its other priority tickets
        come from the ID card, POST /identity/kiosk/take)."""

        async def priority(principal: Principal, request: Request) -> None:
            body = await _body(request)
            wanted = body.get("priority", Priority.NORMAL.value)
            if wanted == Priority.NORMAL.value or principal.role in (Role.GUIDE, Role.OPS):
                return
            green = self.hall.config.queue.green_channel
            if principal.role is Role.KIOSK and green.by_touch:
                if wanted in {c.id for c in green.classes}:
                    return
                raise Forbidden(
                    f"{principal} may not issue a priority ticket ({wanted}): the green "
                    f"channel here serves {', '.join(c.id for c in green.classes)}"
                )
            raise Forbidden(
                f"{principal} may not issue a priority ticket ({wanted}): a guide or ops "
                "issues those, or the kiosk by the green channel (queue.green_channel) or "
                "from the citizen's ID card"
            )

        return Rule(
            self,
            (Role.KIOSK, Role.GUIDE, Role.STAFF, Role.OPS),
            action="issue tickets",
            check=priority,
        )

    def window(self, action: str) -> Rule:
        """A window's operation: staff signed in at that window, its caller, or ops."""

        async def at_window(principal: Principal, request: Request) -> None:
            window = request.path_params.get("window", "")
            if principal.role is Role.OPS:
                return
            if window not in principal.windows:
                raise Forbidden(f"{principal} may not {action} at window {window}: not its window")
            if principal.role is Role.STAFF:
                status = await self.hall.read(lambda e, _: e.windows.get(window))
                if status is None or principal.name not in status.signed_in():
                    raise Forbidden(
                        f"{principal} may not {action} at window {window}: sign in there first"
                    )

        return Rule(
            self,
            (Role.STAFF, Role.CALLER, Role.OPS),
            action=action,
            check=at_window,
            condition="staff signed in at that window, that window's caller",
        )

    def sign_in(self) -> Rule:
        """Signing in: the staff member themself (their session) at one of their windows."""

        async def themself(principal: Principal, request: Request) -> None:
            if principal.role is Role.OPS:
                return
            window = request.path_params.get("window", "")
            staff = (await _body(request)).get("staff")
            if window not in principal.windows:
                raise Forbidden(f"{principal} does not work at window {window}")
            if isinstance(staff, str) and staff != principal.name:
                raise Forbidden(f"{principal} may sign in only as themself, not as {staff}")

        return Rule(
            self,
            (Role.STAFF, Role.OPS),
            action="sign in",
            check=themself,
            condition="the staff member themself, at one of their windows",
        )

    def rating(self) -> Rule:
        """A citizen's rating: only the window's own rater (nobody else, ops neither)."""

        async def own_rater(principal: Principal, request: Request) -> None:
            window = request.path_params.get("window", "")
            if window not in principal.windows:
                raise Forbidden(f"{principal} is not the rater of window {window}")

        return Rule(
            self,
            (Role.RATER,),
            action="submit a rating",
            check=own_rater,
            condition="the rater of that window",
        )


class Rule:
    """A route's access rule (a FastAPI dependency): which roles may call it, and a check
    of the request for the roles bound to windows or to themselves."""

    def __init__(
        self,
        gate: Gate,
        roles: Iterable[Role],
        *,
        action: str,
        check: Check | None = None,
        condition: str = "",
    ) -> None:
        self.gate = gate
        self.roles = frozenset(roles)
        self.action = action
        self.condition = condition
        self._check = check

    def describe(self) -> str:
        """Who may, in words: ``staff, caller (staff signed in …), ops``."""
        names = ", ".join(r.value for r in Role if r in self.roles)
        return f"{names} ({self.condition})" if self.condition else names

    async def __call__(self, request: Request, credentials: Credentials = None) -> Principal:
        token = None if credentials is None else credentials.credentials
        principal = self.gate.principal(token)
        if principal is None:
            if token is None:
                raise Unauthorized(
                    f"to {self.action} send a credential: 'Authorization: Bearer <token>' "
                    "(a device's token, a login session or the ops token; docs/security.md)"
                )
            raise Unauthorized(
                "the token is not valid: unknown, revoked or expired; log in again or ask "
                "for a new one"
            )
        if principal.role not in self.roles:
            raise Forbidden(f"{principal} may not {self.action}; that takes {self.describe()}")
        if self._check is not None:
            await self._check(principal, request)
        request.state.principal = principal
        return principal


def guard(rule: Rule) -> list[Any]:
    """A route's ``dependencies=`` for ``rule``."""
    return [Depends(rule)]


def caller_of(rule: Rule) -> Any:
    """A route parameter's default: ``rule``, giving the route who called it."""
    return Depends(rule)


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (FastAPI has read it already), or {} when it is not one:
    the route's own validation then answers 422."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


# -- managing credentials ---------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


DeviceRole = Literal["kiosk", "screen", "caller", "rater"]
UserRole = Literal["staff", "guide", "manager"]


class LoginBody(Strict):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class Enroll(Strict):
    device: str = Field(min_length=1, max_length=64, description="the device's id")
    role: DeviceRole
    window: str | None = Field(default=None, description="callers and raters: their window")


class AddUser(Strict):
    name: str = Field(min_length=1, max_length=64, description="staff: the staff number")
    role: UserRole
    windows: list[str] = Field(default_factory=list, description="staff: where they work")
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


def access_routes(gate: Gate) -> APIRouter:
    """``/api/v1/auth/…``: log in and out; ops enrols and revokes devices, adds and removes
    people. A token is in an answer once, never in a log line or an event."""
    access = gate.access
    router = APIRouter(prefix=f"{API}/auth", tags=["access"], responses=ERRORS)
    ops = gate.allow(Role.OPS, action="manage credentials")
    person = caller_of(gate.allow(*USER_ROLES, action="log out"))

    @router.post("/login")
    async def login(body: LoginBody) -> dict[str, Any]:
        """A person's login: a session token for ``Authorization: Bearer``, until
        ``expires_at``. Refused 401 for a wrong name or password, 429 while locked out."""
        done = await access.login(body.name, body.password)
        return {
            "token": done.token,
            "name": done.principal.name,
            "role": done.principal.role.value,
            "windows": sorted(done.principal.windows),
            "expires_at": done.expires_at.isoformat(timespec="seconds"),
        }

    @router.post("/logout")
    async def logout(principal: Principal = person) -> dict[str, Any]:
        """End the session this request came with."""
        await access.logout(principal)
        return {"logged_out": principal.name}

    @router.post("/devices", status_code=201, dependencies=guard(ops))
    async def enroll(body: Enroll) -> dict[str, Any]:
        """Enrol a device (again: its earlier token stops working). The token is in this
        answer only; the hall keeps its SHA-256."""
        token = await access.enroll(body.device, Role(body.role), body.window)
        return {"device": body.device, "role": body.role, "window": body.window, "token": token}

    @router.delete("/devices/{device}", dependencies=guard(ops))
    async def revoke(device: str) -> dict[str, Any]:
        """Revoke a device's token: refused from now on."""
        await access.revoke(device)
        return {"revoked": device}

    @router.post("/users", status_code=201, dependencies=guard(ops))
    async def add_user(body: AddUser) -> dict[str, Any]:
        """Create a person's login, or replace it (their open sessions end)."""
        await access.add_user(body.name, Role(body.role), body.windows, body.password)
        return {"user": body.name, "role": body.role, "windows": body.windows}

    @router.delete("/users/{name}", dependencies=guard(ops))
    async def remove_user(name: str) -> dict[str, Any]:
        """Remove a person's login; their sessions end."""
        await access.remove_user(name)
        return {"removed": name}

    return router
