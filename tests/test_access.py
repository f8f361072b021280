"""Who may call what on the local API (docs/security.md), against a real running agent.

The table below is the specification. ``test_every_route_has_a_rule_and_the_table_holds``
walks the app's own routes: a route missing from the table, or one without a rule, fails
it; every guarded route is then called without a credential (401), with a bad token (401),
with every role that may not (403) and with every role that may (neither 401 nor 403).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from support import bearer, hall_config, ops_token

from agent.config import HallAgentConfig
from agent.daemon import Running, running_agent
from agent.features import access as access_module
from agent.features.access import OPS_TOKEN_FILE, Role, token_hash
from agent.web.access import Rule

pytestmark = pytest.mark.timeout(120)

API = "/api/v1"
PASSWORD = "correct horse 1"

KIOSK, SCREEN, CALLER, RATER = "kiosk", "screen", "caller", "rater"
STAFF, GUIDE, MANAGER, OPS = "staff", "guide", "manager", "ops"
ROLES = (KIOSK, SCREEN, CALLER, RATER, STAFF, GUIDE, MANAGER, OPS)
# The same roles bound to another window (w2): refused on w1's routes.
OTHER_CALLER, OTHER_RATER, OTHER_STAFF = "caller@w2", "rater@w2", "staff@w2"

READERS = {SCREEN, STAFF, GUIDE, MANAGER, OPS}
WINDOW = {STAFF, CALLER, OPS}  # staff signed in at that window, its caller, ops
PAGE_DEVICE = "page device"  # its own page token or enrolled token; anything else: 404

# (method, path) -> who may; the specification of docs/security.md.
TABLE: dict[tuple[str, str], set[str] | str] = {
    ("GET", f"{API}/status"): READERS,
    ("GET", f"{API}/queue"): READERS,
    ("GET", f"{API}/issuing"): {KIOSK} | READERS,
    ("GET", f"{API}/events"): {MANAGER, OPS},
    ("GET", f"{API}/documents"): {MANAGER, OPS},
    ("GET", f"{API}/reports"): {MANAGER, OPS},
    ("GET", f"{API}/identity/kiosk"): {KIOSK, OPS},
    ("GET", "/metrics"): {SCREEN, MANAGER, OPS},
    ("POST", f"{API}/tickets"): {KIOSK, GUIDE, STAFF, OPS},
    ("POST", f"{API}/tickets/{{number}}/reprint"): {STAFF, GUIDE, OPS},
    ("POST", f"{API}/tickets/{{number}}/cancel"): {STAFF, GUIDE, OPS},
    ("POST", f"{API}/appointments/{{appointment}}/check-in"): {GUIDE, OPS},
    ("POST", f"{API}/identity/kiosk/take"): {KIOSK, OPS},
    **{
        ("POST", f"{API}/windows/{{window}}/{op}"): WINDOW
        for op in (
            "next",
            "recall",
            "serving",
            "finish",
            "no-show",
            "hold",
            "resume",
            "sign-out",
            "call",
            "transfer",
            "pause",
            "request-rating",
            "capture",
        )
    },
    ("POST", f"{API}/windows/{{window}}/sign-in"): {STAFF, OPS},
    ("POST", f"{API}/windows/{{window}}/rating"): {RATER},
    ("POST", f"{API}/callers/{{device}}/press"): PAGE_DEVICE,
    ("POST", f"{API}/raters/{{device}}/rating"): PAGE_DEVICE,
    ("POST", f"{API}/windows/{{window}}/cases"): {STAFF, MANAGER, OPS},
    ("GET", f"{API}/windows/{{window}}/cases"): {STAFF, CALLER, MANAGER, OPS},
    ("GET", f"{API}/cases"): {MANAGER, OPS},
    ("GET", f"{API}/cases/{{number}}"): {STAFF, MANAGER, OPS},
    ("POST", f"{API}/cases/{{number}}/status"): {STAFF, MANAGER, OPS},
    ("POST", f"{API}/cases/{{number}}/receipt"): {STAFF, MANAGER, OPS},
    ("POST", f"{API}/auth/logout"): {STAFF, GUIDE, MANAGER},
    ("POST", f"{API}/auth/devices"): {OPS},
    ("DELETE", f"{API}/auth/devices/{{device}}"): {OPS},
    ("POST", f"{API}/auth/users"): {OPS},
    ("DELETE", f"{API}/auth/users/{{name}}"): {OPS},
    # The hall's screen content (docs/screens.md): the manager and ops.
    **{
        (method, f"{API}/{path}"): {MANAGER, OPS}
        for path in ("notices", "content/news", "content/jobs")
        for method in ("GET", "POST")
    },
    **{
        (method, f"{API}/{path}/{{item}}"): {MANAGER, OPS}
        for path in ("notices", "content/news", "content/jobs")
        for method in ("PUT", "DELETE")
    },
    ("GET", f"{API}/content/images"): {MANAGER, OPS},
    ("POST", f"{API}/content/images"): {MANAGER, OPS},
    ("DELETE", f"{API}/content/images/{{image}}"): {MANAGER, OPS},
    # The hall's own staff board (docs/configuration.md): the manager and ops.
    ("GET", f"{API}/staffing"): {MANAGER, OPS},
    ("PUT", f"{API}/staffing"): {MANAGER, OPS},
}
# Open to anyone on purpose: logging in, the health check, the API's description.
PUBLIC = {
    ("POST", f"{API}/auth/login"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    # A ticket's status page: its token is the credential (docs/pages.md).
    ("GET", "/t/{token}"),
    # A proxy case's status and promised date for whoever holds its number (docs/cases.md).
    ("GET", f"{API}/cases/{{number}}/public"),
}
# The path and body each route is called with.
CALLS: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", f"{API}/tickets"): (f"{API}/tickets", {"service": "social"}),
    ("POST", f"{API}/identity/kiosk/take"): (f"{API}/identity/kiosk/take", {"service": "social"}),
    ("POST", f"{API}/windows/{{window}}/call"): (f"{API}/windows/w1/call", {"number": "A001"}),
    ("POST", f"{API}/windows/{{window}}/transfer"): (
        f"{API}/windows/w1/transfer",
        {"service": "general"},
    ),
    ("POST", f"{API}/windows/{{window}}/sign-in"): (f"{API}/windows/w1/sign-in", {"staff": "1001"}),
    ("POST", f"{API}/windows/{{window}}/rating"): (f"{API}/windows/w1/rating", {"level": 5}),
    ("POST", f"{API}/windows/{{window}}/capture"): (f"{API}/windows/w1/capture", {"pages": 1}),
    ("POST", f"{API}/callers/{{device}}/press"): (
        f"{API}/callers/caller-w1/press",
        {"action": "recall"},
    ),
    ("POST", f"{API}/raters/{{device}}/rating"): (f"{API}/raters/rater-w1/rating", {"level": 5}),
    ("POST", f"{API}/auth/devices"): (f"{API}/auth/devices", {"device": "extra", "role": "screen"}),
    ("DELETE", f"{API}/auth/devices/{{device}}"): (f"{API}/auth/devices/nobody", None),
    ("POST", f"{API}/auth/users"): (
        f"{API}/auth/users",
        {"name": "extra", "role": "guide", "password": PASSWORD},
    ),
    ("DELETE", f"{API}/auth/users/{{name}}"): (f"{API}/auth/users/nobody", None),
    ("POST", f"{API}/notices"): (f"{API}/notices", {"text": "通知"}),
    ("PUT", f"{API}/notices/{{item}}"): (f"{API}/notices/nosuch", {"text": "通知"}),
    ("DELETE", f"{API}/notices/{{item}}"): (f"{API}/notices/nosuch", None),
    **{
        key: value
        for path in ("news", "jobs")
        for key, value in (
            (
                ("POST", f"{API}/content/{path}"),
                (f"{API}/content/{path}", {"title": "t", "text": "x"}),
            ),
            (
                ("PUT", f"{API}/content/{path}/{{item}}"),
                (f"{API}/content/{path}/nosuch", {"title": "t", "text": "x"}),
            ),
            (("DELETE", f"{API}/content/{path}/{{item}}"), (f"{API}/content/{path}/nosuch", None)),
        )
    },
    ("DELETE", f"{API}/content/images/{{image}}"): (f"{API}/content/images/nosuch", None),
}


def config_for(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    """A hall with every kind of route: web caller and rater at w1 and w2, a camera at w1
    (ffmpeg's test pattern), ID card readers (nothing listens: they retry), no printer."""
    data = hall_config(tmp_path / "state", **sections)
    data["devices"] = [
        {"id": "caller-w1", "kind": "caller", "transport": {"type": "web"}},
        {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
        {"id": "rater-w2", "kind": "rater", "transport": {"type": "web"}},
        {
            "id": "cam-w1",
            "kind": "camera",
            "transport": {"type": "test_pattern"},
            "width": 320,
            "height": 240,
            "warmup_frames": 1,
        },
        {
            "id": "idr-kiosk",
            "kind": "id_reader",
            "transport": {"type": "network", "host": "127.0.0.1", "port": 9},
            "service": "social",
        },
    ]
    data["windows"][0]["devices"] = ["caller-w1", "rater-w1", "cam-w1"]
    data["windows"][1]["devices"] = ["rater-w2"]
    data["personal_data"] = {"key_file": str(tmp_path / "personal.key")}
    data.setdefault("rating", {"start_on": "finish"})
    return HallAgentConfig.model_validate(data)


class Rig:
    """A running agent, an HTTP client, and a credential for every role."""

    def __init__(self, running: Running, client: httpx.AsyncClient, storage: Path) -> None:
        self.running = running
        self.client = client
        self.storage = storage
        self.tokens: dict[str, str] = {OPS: ops_token(storage)}

    async def setup(self) -> Rig:
        access = self.running.access
        assert access is not None
        self.tokens[KIOSK] = await access.enroll("kiosk-1", Role.KIOSK)
        self.tokens[SCREEN] = await access.enroll("screen-1", Role.SCREEN)
        self.tokens[CALLER] = await access.enroll("caller-w1", Role.CALLER, "w1")
        self.tokens[RATER] = await access.enroll("rater-w1", Role.RATER, "w1")
        self.tokens[OTHER_CALLER] = await access.enroll("caller-w2", Role.CALLER, "w2")
        self.tokens[OTHER_RATER] = await access.enroll("rater-w2", Role.RATER, "w2")
        await access.add_user("1001", Role.STAFF, ["w1"], PASSWORD)
        await access.add_user("2002", Role.STAFF, ["w2"], PASSWORD)
        await access.add_user("guide-1", Role.GUIDE, [], PASSWORD)
        await access.add_user("manager-1", Role.MANAGER, [], PASSWORD)
        for role, name in (
            (STAFF, "1001"),
            (OTHER_STAFF, "2002"),
            (GUIDE, "guide-1"),
            (MANAGER, "manager-1"),
        ):
            await self.login(role, name)
        await self.staff_at_w1()
        return self

    async def login(self, role: str, name: str) -> None:
        r = await self.client.post(f"{API}/auth/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.tokens[role] = r.json()["token"]

    def as_(self, role: str) -> dict[str, str]:
        return bearer(self.tokens[role])

    async def staff_at_w1(self) -> None:
        """Staff 1001 signed in at w1 (another call may have signed them out)."""
        status = (await self.client.get(f"{API}/status", headers=self.as_(OPS))).json()
        w1 = next(w for w in status["windows"] if w["id"] == "w1")
        if w1.get("staff") != "1001":
            r = await self.client.post(
                f"{API}/windows/w1/sign-in", json={"staff": "1001"}, headers=self.as_(OPS)
            )
            assert r.status_code == 200, r.text

    async def call(self, key: tuple[str, str], headers: dict[str, str]) -> httpx.Response:
        method, template = key
        path, body = CALLS.get(key, (template.replace("{window}", "w1"), None))
        path = path.replace("{number}", "A001")
        if method == "GET":
            return await self.client.get(path, headers=headers)
        return await self.client.request(method, path, json=body, headers=headers)


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Rig]:
    config = config_for(tmp_path)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        yield await Rig(running, client, config.storage.path).setup()


def routes(running: Running) -> list[tuple[tuple[str, str], Any]]:
    """Every (method, path) the agent serves, with its route."""
    assert running.app is not None
    found = []
    for path, route in _flat(running.app.routes):
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                found.append(((method, path), route))
    return found


def _flat(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    """(path, route) of every route, through included routers: newer FastAPI keeps an
    included router as one entry whose routes it resolves when asked."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            yield route.path, route
        else:
            for context in contexts():
                yield context.path, context.original_route


def rule_of(route: Any) -> Rule | None:
    """The access rule among a route's dependencies, however it was declared."""
    if not isinstance(route, APIRoute):
        return None
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if isinstance(dependency.call, Rule):
            return dependency.call
        pending.extend(dependency.dependencies)
    return None


async def test_every_route_has_a_rule_and_the_table_holds(hall: Rig) -> None:
    found = routes(hall.running)
    unruled = [
        f"{method} {path}"
        for (method, path), _ in found
        if (method, path) not in TABLE
        and (method, path) not in PUBLIC
        and not (method == "GET" and path.startswith("/pages/"))
    ]
    assert not unruled, f"routes without a rule (add them to TABLE and docs/security.md): {unruled}"
    missing = set(TABLE) - {key for key, _ in found}
    assert not missing, f"TABLE names routes the app does not have: {missing}"
    for key, route in found:
        expected = TABLE.get(key)
        if expected is None or expected == PAGE_DEVICE:
            continue
        rule = rule_of(route)
        assert rule is not None, f"{key}: no access rule among its dependencies"
        assert {r.value for r in rule.roles} == expected, key

    names = {STAFF: "1001", OTHER_STAFF: "2002", GUIDE: "guide-1", MANAGER: "manager-1"}
    for key, expected in TABLE.items():
        _, path = key
        if expected == PAGE_DEVICE:
            allowed: set[str] = {CALLER if "/callers/" in path else RATER}
            refusal, error, unauthenticated = 404, "not_found", 404
        else:
            assert isinstance(expected, set)
            allowed, refusal, error, unauthenticated = expected, 403, "forbidden", 401
        r = await hall.call(key, {})
        assert r.status_code == unauthenticated, (key, r.text)
        r = await hall.call(key, bearer("not-a-token-" + "x" * 40))
        assert r.status_code == unauthenticated, (key, r.text)
        if unauthenticated == 401:
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"] == "unauthorized"
        for role in [*ROLES, OTHER_CALLER, OTHER_RATER, OTHER_STAFF]:
            base, _, elsewhere = role.partition("@")
            # A role bound to w2 may do at w1 nothing that is bound to a window or device.
            bound = "{window}" in path or ("{device}" in path and expected == PAGE_DEVICE)
            may = base in allowed and not (elsewhere and bound)
            if may:
                await hall.staff_at_w1()
            r = await hall.call(key, hall.as_(role))
            if not may:
                assert r.status_code == refusal, (key, role, r.status_code, r.text)
                assert r.json()["error"] == error
                continue
            assert r.status_code not in {401, 403, unauthenticated}, (key, role, r.text)
            if key == ("POST", f"{API}/auth/logout"):
                await hall.login(role, names[role])


async def test_the_openapi_document_declares_the_bearer_scheme(hall: Rig) -> None:
    document = (await hall.client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["token"]["description"],
    }
    for method, path in TABLE:
        operation = document["paths"][path][method.lower()]
        assert operation.get("security") == [{"token": []}], (method, path)
    assert "security" not in document["paths"][f"{API}/auth/login"]["post"]


async def test_priority_tickets_need_a_guide_or_ops_or_the_kiosks_green_channel(
    hall: Rig,
) -> None:
    body = {"service": "social", "priority": "elderly"}
    r = await hall.client.post(f"{API}/tickets", json=body, headers=hall.as_(STAFF))
    assert r.status_code == 403, r.text
    assert "priority" in r.json()["message"]
    # The kiosk: the green channel's classes by touch (granted by the citizen: "self"),
    # never an appointment (that comes from the ID card or the guide desk).
    r = await hall.client.post(f"{API}/tickets", json=body, headers=hall.as_(KIOSK))
    assert r.status_code == 201, r.text
    assert r.json()["result"]["ticket"]["granted_by"] == "self"
    appointment = {"service": "social", "priority": "appointment"}
    r = await hall.client.post(f"{API}/tickets", json=appointment, headers=hall.as_(KIOSK))
    assert r.status_code == 403, r.text
    assert "green channel" in r.json()["message"]
    for role in (GUIDE, OPS):
        r = await hall.client.post(f"{API}/tickets", json=body, headers=hall.as_(role))
        assert r.status_code == 201, r.text
        assert r.json()["result"]["ticket"]["priority"] == "elderly"
    assert r.json()["result"]["ticket"]["granted_by"] == "ops-token"
    r = await hall.client.post(
        f"{API}/tickets", json={"service": "social"}, headers=hall.as_(KIOSK)
    )
    assert r.status_code == 201


async def test_staff_sign_in_only_as_themselves_and_operate_only_where_signed_in(
    hall: Rig,
) -> None:
    client, staff = hall.client, hall.as_(STAFF)
    r = await client.post(f"{API}/windows/w1/sign-in", json={"staff": "9999"}, headers=staff)
    assert r.status_code == 403
    assert "themself" in r.json()["message"]
    r = await client.post(f"{API}/windows/w2/sign-in", json={"staff": "1001"}, headers=staff)
    assert r.status_code == 403
    # Signed out by their caller: no more operations at w1 until they sign in again.
    r = await client.post(f"{API}/windows/w1/sign-out", headers=hall.as_(CALLER))
    assert r.status_code == 200
    r = await client.post(f"{API}/windows/w1/pause", headers=staff)
    assert r.status_code == 403
    assert "sign in there first" in r.json()["message"]
    r = await client.post(f"{API}/windows/w1/sign-in", json={"staff": "1001"}, headers=staff)
    assert r.status_code == 200
    assert r.json()["result"]["window"]["staff"] == "1001"
    assert (await client.post(f"{API}/windows/w1/pause", headers=staff)).status_code == 200


async def test_a_rating_cannot_be_forged_by_staff_kiosk_or_ops(hall: Rig) -> None:
    client, ops = hall.client, hall.as_(OPS)
    await client.post(f"{API}/tickets", json={"service": "social"}, headers=hall.as_(KIOSK))
    await client.post(f"{API}/windows/w1/next", headers=hall.as_(STAFF))
    r = await client.post(f"{API}/windows/w1/finish", headers=hall.as_(STAFF))
    assert r.status_code == 200
    pending = await hall.running.hall.read(lambda e, _: e.windows["w1"].rating)
    assert pending is not None
    forged = {"level": 5, "ticket_id": pending["ticket_id"]}
    for role in (STAFF, KIOSK, OPS, CALLER, GUIDE, MANAGER, OTHER_RATER):
        r = await client.post(f"{API}/windows/w1/rating", json=forged, headers=hall.as_(role))
        assert r.status_code == 403, (role, r.text)
        r = await client.post(f"{API}/raters/rater-w1/rating", json=forged, headers=hall.as_(role))
        assert r.status_code == 404, (role, r.text)
    events = (await client.get(f"{API}/events", params={"limit": 1000}, headers=ops)).json()
    assert "rating.submitted" not in [e["type"] for e in events]
    # The window's own rater (its enrolled token, or its page's token) can.
    r = await client.post(f"{API}/windows/w1/rating", json=forged, headers=hall.as_(RATER))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["rating"]["device"] == "rater-w1"


async def test_page_tokens_are_window_device_credentials(hall: Rig) -> None:
    windows = hall.running.windows
    assert windows is not None
    caller = bearer(windows.tokens["caller-w1"])
    await hall.client.post(f"{API}/tickets", json={"service": "social"}, headers=hall.as_(OPS))
    r = await hall.client.post(f"{API}/windows/w1/next", headers=caller)
    assert r.status_code == 200, r.text
    r = await hall.client.post(f"{API}/windows/w2/next", headers=caller)
    assert r.status_code == 403
    r = await hall.client.post(f"{API}/tickets", json={"service": "social"}, headers=caller)
    assert r.status_code == 403
    # The enrolled token opens the caller's page as its page token does.
    page = await hall.client.get(f"/pages/caller/caller-w1?token={hall.tokens[CALLER]}")
    assert page.status_code == 200
    other = await hall.client.get(f"/pages/caller/caller-w1?token={hall.tokens[OTHER_CALLER]}")
    assert other.status_code == 404


async def test_a_revoked_token_and_a_removed_user_are_refused(hall: Rig) -> None:
    client, ops = hall.client, hall.as_(OPS)
    assert (await client.get(f"{API}/status", headers=hall.as_(SCREEN))).status_code == 200
    r = await client.delete(f"{API}/auth/devices/screen-1", headers=ops)
    assert r.status_code == 200
    r = await client.get(f"{API}/status", headers=hall.as_(SCREEN))
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]
    assert (await client.delete(f"{API}/auth/devices/screen-1", headers=ops)).status_code == 404
    # Enrolling again makes a new token; the old one stays refused.
    again = await client.post(
        f"{API}/auth/devices", json={"device": "kiosk-1", "role": "kiosk"}, headers=ops
    )
    assert again.status_code == 201
    r = await client.post(f"{API}/tickets", json={"service": "social"}, headers=hall.as_(KIOSK))
    assert r.status_code == 401
    new = bearer(again.json()["token"])
    assert (await client.post(f"{API}/tickets", json={"service": "social"}, headers=new)).is_success
    r = await client.delete(f"{API}/auth/users/guide-1", headers=ops)
    assert r.status_code == 200
    assert (await client.get(f"{API}/status", headers=hall.as_(GUIDE))).status_code == 401
    r = await client.post(f"{API}/auth/login", json={"name": "guide-1", "password": PASSWORD})
    assert r.status_code == 401
    r = await client.post(f"{API}/auth/logout", headers=hall.as_(STAFF))
    assert r.status_code == 200
    assert (await client.get(f"{API}/status", headers=hall.as_(STAFF))).status_code == 401
    events = (await client.get(f"{API}/events", params={"limit": 1000}, headers=ops)).json()
    revoked = [e["data"] for e in events if e["type"] == "auth.revoked"]
    assert revoked == [
        {"credential": "device", "name": "screen-1", "role": "screen", "sessions": 0},
        {"credential": "user", "name": "guide-1", "role": "guide", "sessions": 1},
    ]
    assert [e["data"]["name"] for e in events if e["type"] == "auth.logout"] == ["1001"]


async def test_the_ops_token_file_cannot_be_revoked_or_enrolled_over(hall: Rig) -> None:
    ops = hall.as_(OPS)
    r = await hall.client.delete(f"{API}/auth/devices/ops-token", headers=ops)
    assert r.status_code == 409
    assert "ops-token" in r.json()["message"]
    body = {"device": "ops-token", "role": "kiosk"}
    assert (
        await hall.client.post(f"{API}/auth/devices", json=body, headers=ops)
    ).status_code == 409
    body = {"device": "t-1", "role": "caller"}  # a caller needs its window
    r = await hall.client.post(f"{API}/auth/devices", json=body, headers=ops)
    assert r.status_code == 409
    assert "--window" in r.json()["message"]
    body = {"name": "s-9", "role": "staff", "windows": ["w9"], "password": PASSWORD}
    assert (await hall.client.post(f"{API}/auth/users", json=body, headers=ops)).status_code == 404
    body = {"name": "s-9", "role": "staff", "windows": ["w1"], "password": "short"}
    assert (await hall.client.post(f"{API}/auth/users", json=body, headers=ops)).status_code == 409


class MovedClock:
    """The wall clock the access rules read, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    clock = MovedClock()
    monkeypatch.setattr(access_module, "wall_clock", clock)
    return clock


async def test_lockout_after_repeated_failures_then_open_again(
    tmp_path: Path, moved: MovedClock
) -> None:
    config = config_for(tmp_path, access={"lockout_failures": 5, "lockout_minutes": 5})
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        assert running.access is not None
        await running.access.add_user("1001", Role.STAFF, ["w1"], PASSWORD)
        login = f"{API}/auth/login"
        wrong = {"name": "1001", "password": "not the password"}
        for _ in range(5):
            r = await client.post(login, json=wrong)
            assert r.status_code == 401
            assert r.json() == {"error": "unauthorized", "message": "wrong name or password"}
        right = {"name": "1001", "password": PASSWORD}
        for _ in range(3):
            r = await client.post(login, json=right)
            assert r.status_code == 429
            assert r.json()["error"] == "locked_out"
        # An unknown name is answered like a wrong password.
        r = await client.post(login, json={"name": "nobody", "password": PASSWORD})
        assert r.status_code == 401
        moved.offset = dt.timedelta(minutes=4)
        assert (await client.post(login, json=right)).status_code == 429
        moved.offset = dt.timedelta(minutes=5, seconds=1)
        r = await client.post(login, json=right)
        assert r.status_code == 200, r.text
        ops = bearer(ops_token(config.storage.path))
        events = (await client.get(f"{API}/events", params={"limit": 1000}, headers=ops)).json()
        failed = [e["data"] for e in events if e["type"] == "auth.failed"]
        assert [(f["reason"], f["failures"]) for f in failed] == [
            ("password", 1),
            ("password", 2),
            ("password", 3),
            ("password", 4),
            ("password", 5),
            ("locked", 5),  # once per lock, however often it is tried
            ("unknown_user", 1),
        ]
        assert failed[4]["locked_until"] is not None
        assert failed[6]["name"] is None  # what was typed as a name may be a password
        assert [e["data"]["name"] for e in events if e["type"] == "auth.login"] == ["1001"]


async def test_a_session_expires(tmp_path: Path, moved: MovedClock) -> None:
    config = config_for(tmp_path)  # 12 hours
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        assert running.access is not None
        await running.access.add_user("m-1", Role.MANAGER, [], PASSWORD)
        r = await client.post(f"{API}/auth/login", json={"name": "m-1", "password": PASSWORD})
        session = bearer(r.json()["token"])
        assert (await client.get(f"{API}/events", headers=session)).status_code == 200
        moved.offset = dt.timedelta(hours=11, minutes=59)
        assert (await client.get(f"{API}/events", headers=session)).status_code == 200
        moved.offset = dt.timedelta(hours=12, seconds=1)
        r = await client.get(f"{API}/events", headers=session)
        assert r.status_code == 401
        assert "expired" in r.json()["message"]


async def test_credentials_survive_a_restart_and_the_ops_token_file_is_private(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    path = config.storage.path / OPS_TOKEN_FILE
    async with running_agent(config) as running:
        assert running.access is not None
        kiosk = await running.access.enroll("kiosk-1", Role.KIOSK)
        await running.access.add_user("g-1", Role.GUIDE, [], PASSWORD)
        async with httpx.AsyncClient(base_url=running.url) as client:
            r = await client.post(f"{API}/auth/login", json={"name": "g-1", "password": PASSWORD})
            session = r.json()["token"]
    first = path.read_text().strip()
    assert path.stat().st_mode & 0o777 == 0o640
    assert len(first) >= 40
    path.chmod(0o644)
    async with running_agent(config) as running:
        assert path.read_text().strip() == first  # kept, made private again
        assert path.stat().st_mode & 0o777 == 0o640
        async with httpx.AsyncClient(base_url=running.url) as client:
            for token in (first, kiosk, session):
                r = await client.get(f"{API}/issuing", headers=bearer(token))
                assert r.status_code == 200, r.text
    path.unlink()  # a new ops token: the old one is refused
    async with running_agent(config) as running:
        second = path.read_text().strip()
        assert second != first
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.get(f"{API}/status", headers=bearer(first))).status_code == 401
            assert (await client.get(f"{API}/status", headers=bearer(second))).status_code == 200


async def test_no_token_password_or_hash_in_logs_or_events(
    hall: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, ops = hall.client, hall.as_(OPS)
    r = await client.post(
        f"{API}/auth/devices",
        json={"device": "tab-1", "role": "rater", "window": "w1"},
        headers=ops,
    )
    hall.tokens["tab-1"] = r.json()["token"]
    secret = "a secret password 42"
    body = {"name": "g-2", "role": "guide", "password": secret}
    assert (await client.post(f"{API}/auth/users", json=body, headers=ops)).status_code == 201
    r = await client.post(f"{API}/auth/login", json={"name": "g-2", "password": secret})
    hall.tokens["g-2"] = r.json()["token"]
    await client.post(f"{API}/auth/login", json={"name": "g-2", "password": "wrong " + secret})
    await client.post(f"{API}/auth/login", json={"name": secret, "password": secret})
    await client.post(f"{API}/auth/logout", headers=bearer(hall.tokens["g-2"]))
    await client.delete(f"{API}/auth/devices/tab-1", headers=ops)

    records = await hall.running.hall.store_call(lambda s: s.access_records())
    secrets_ = [secret, *hall.tokens.values()]
    secrets_ += [token_hash(t) for t in hall.tokens.values()]
    secrets_ += [u.password_hash for u in records.users]
    secrets_ += [d.token_sha256 for d in records.devices]
    secrets_ += [s.token_sha256 for s in records.sessions]
    events = (await client.get(f"{API}/events", params={"limit": 1000}, headers=ops)).json()
    types = {e["type"] for e in events}
    assert {"auth.granted", "auth.revoked", "auth.login", "auth.logout", "auth.failed"} <= types
    dumped = json.dumps(events, ensure_ascii=False)
    logged = caplog.text
    for value in secrets_:
        assert value not in dumped
        assert value not in logged
    with (hall.storage / "hall.db").open("rb") as db:
        content = db.read()
    assert secret.encode() not in content
