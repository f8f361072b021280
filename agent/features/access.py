"""Who may use the hall's local API: roles, device tokens, people's logins (docs/security.md).

Two kinds of credentials open the API, both sent as ``Authorization: Bearer <token>``:

- **Device tokens**: a kiosk, a screen, a window's caller or rater is *enrolled* by the ops
  person (``hall-agent enroll``); its token is 256 random bits, shown once and kept only as
  its SHA-256. The **ops token** opens everything but a citizen's rating: the agent makes
  it at its first start in ``<storage.path>/ops-token`` (mode 0640: root and the service's
  group), and the ``hall-agent`` client verbs send it. The file is that grant (no row, no
  event); deleting it and restarting the agent replaces it.
- **People** (staff, guides, managers) log in with a name and a password (argon2 hash) and
  get a session token that ends after ``access.session_hours``;
  ``access.lockout_failures`` failed logins in a row lock the name out for
  ``access.lockout_minutes``.

Every other grant, revocation, login, logout and failed login is an ``auth.*`` event, saved with
its change in one transaction; no event or log line carries a token, a hash or a password.
Tokens are checked in memory (:meth:`HallAccess.principal`): no store read per request.
What each role may do is decided by the web layer (``agent/web/access.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.client import OPS_TOKEN_FILE
from agent.core import events as ev
from agent.core.errors import LockedOut, NotFound, Refused, Unauthorized
from agent.core.events import Event
from agent.runtime.hall import Hall, wall_clock
from agent.runtime.store import (
    DeviceCredential,
    SessionRecord,
    Store,
    UserCredential,
    Written,
)

if TYPE_CHECKING:
    # argon2 is imported at the first password hashed or checked, not at start.
    from argon2 import PasswordHasher

log = logging.getLogger(__name__)

OPS_TOKEN_NAME = "ops-token"  # noqa: S105 - the name the ops token goes by (a reserved device name)
OPS_TOKEN_MODE = 0o640
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_TRACKED_NAMES = 10_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
NAME_RULE = "1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"


class Role(enum.StrEnum):
    KIOSK = "kiosk"
    SCREEN = "screen"
    CALLER = "caller"
    RATER = "rater"
    STAFF = "staff"
    GUIDE = "guide"
    MANAGER = "manager"
    OPS = "ops"


DEVICE_ROLES = (Role.KIOSK, Role.SCREEN, Role.CALLER, Role.RATER)
USER_ROLES = (Role.STAFF, Role.GUIDE, Role.MANAGER)
# Roles bound to one window (devices) or to the windows they work at (staff).
WINDOW_DEVICE_ROLES = (Role.CALLER, Role.RATER)


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a device (ops included) or a person with a session."""

    name: str
    role: Role
    kind: str  # "device" or "user"
    windows: frozenset[str] = frozenset()
    session: str | None = None  # the session token's hash (a person's logout)

    def __str__(self) -> str:
        return f"{self.role.value} {self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Login:
    """A session just opened; ``token`` is shown to the person once."""

    token: str
    principal: Principal
    expires_at: dt.datetime


@dataclasses.dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: dt.datetime | None = None
    reported: bool = False  # the refusal while locked was recorded (once per lock)


# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 0.1 s on a
# Raspberry Pi 4, and little memory for a device that also runs the hall.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def password_hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
    )


def _now() -> dt.datetime:
    """The wall clock, looked up at each call (tests move it)."""
    return wall_clock()


def token_hash(token: str) -> str:
    """What is kept of a 256-bit random token: its SHA-256 (no slow hash needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def _check_name(what: str, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise Refused(f"{what} {name!r} is not a valid name: {NAME_RULE}")


class HallAccess:
    """The hall's credentials, checked in memory and changed through the hall's writer.

    An async context manager: entering it loads the credentials and makes sure the ops
    token file exists.
    """

    def __init__(
        self,
        hall: Hall,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.hall = hall
        self.settings = hall.config.access
        self.ops_token_file = hall.config.storage.path / OPS_TOKEN_FILE
        self._clock = clock or _now
        self._given_hasher = hasher
        # One password hash at a time: a burst of logins queues instead of taking the Pi's
        # memory (each hash holds ARGON2_MEMORY_KIB) and every core.
        self._hashing = asyncio.Lock()
        self._devices: dict[str, DeviceCredential] = {}  # by token hash
        self._users: dict[str, UserCredential] = {}  # by name
        self._sessions: dict[str, SessionRecord] = {}  # by token hash
        self._failures: dict[str, _Failures] = {}  # by the name typed
        self._dummy_hash: str | None = None
        self._ops: str | None = None  # the ops token's hash

    async def __aenter__(self) -> HallAccess:
        records = await self.hall.store_read(lambda s: s.access_records())
        self._devices = {d.token_sha256: d for d in records.devices}
        self._users = {u.name: u for u in records.users}
        self._sessions = {s.token_sha256: s for s in records.sessions}
        await self._ops_token()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # -- checking a token ------------------------------------------------------------------

    def principal(self, token: str | None) -> Principal | None:
        """Who ``token`` opens the API for, or None (unknown, revoked, expired)."""
        if not token:
            return None
        digest = token_hash(token)
        if self._ops is not None and secrets.compare_digest(digest, self._ops):
            return Principal(OPS_TOKEN_NAME, Role.OPS, "device")
        device = self._devices.get(digest)
        if device is not None:
            windows = frozenset([device.window]) if device.window else frozenset()
            return Principal(device.name, Role(device.role), "device", windows)
        session = self._sessions.get(digest)
        if session is None:
            return None
        user = self._users.get(session.user)
        if user is None or dt.datetime.fromisoformat(session.expires_at) <= self._clock():
            self._sessions.pop(digest, None)  # the row goes at the next login
            return None
        return Principal(user.name, Role(user.role), "user", frozenset(user.windows), digest)

    def device_for(self, token: str | None, device_id: str, role: Role) -> Principal | None:
        """The enrolled device ``device_id`` with ``role`` when ``token`` is its token."""
        found = self.principal(token)
        if found is None or found.kind != "device" or found.name != device_id:
            return None
        return found if found.role is role else None

    # -- devices ---------------------------------------------------------------------------

    async def enroll(self, device: str, role: Role, window: str | None = None) -> str:
        """Enrol a device (again: its old token stops working); returns its new token."""
        _check_name("device", device)
        if device == OPS_TOKEN_NAME or role not in DEVICE_ROLES:
            roles = ", ".join(r.value for r in DEVICE_ROLES)
            raise Refused(
                f"a device is enrolled as one of {roles}; the ops token is the file "
                f"{self.ops_token_file}"
            )
        if role in WINDOW_DEVICE_ROLES:
            if window is None:
                raise Refused(f"a {role.value} belongs to one window: give --window")
            self._check_windows([window])
        elif window is not None:
            raise Refused(f"a {role.value} serves the whole hall; it takes no window")
        token = new_token()
        await self._save_device(device, role, window, token)
        return token

    async def revoke(self, device: str) -> None:
        """Revoke a device's token at once; NotFound when no device has that name."""
        if device == OPS_TOKEN_NAME:
            raise Refused(
                f"the ops token is the file {self.ops_token_file}: delete it and restart the "
                "agent to make a new one"
            )

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[bool]:
            known = next((d for d in self._devices.values() if d.name == device), None)
            role = known.role if known is not None else ""

            def event(sessions: int) -> Event:
                return Event(
                    ev.AuthRevoked(credential="device", name=device, role=role, sessions=0), now
                )

            removed = store.delete_device(device, event, clock_ok=clock_ok)
            return Written(removed.events, removed.found)

        if not await self.hall.write(write):
            raise NotFound(f"no device {device!r} is enrolled")
        self._devices = {h: d for h, d in self._devices.items() if d.name != device}
        log.info("revoked the token of device %s", device)

    async def _save_device(self, device: str, role: Role, window: str | None, token: str) -> None:
        digest = token_hash(token)

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[DeviceCredential]:
            replaced = any(d.name == device for d in self._devices.values())
            record = DeviceCredential(device, role.value, window, digest, _iso(now))
            granted = ev.AuthGranted(
                credential="device",
                name=device,
                role=role.value,
                windows=[window] if window else [],
                replaced=replaced,
            )
            stored = store.save_device(record, Event(granted, now), clock_ok=clock_ok)
            return Written(stored, record)

        record = await self.hall.write(write)
        self._devices = {h: d for h, d in self._devices.items() if d.name != device}
        self._devices[digest] = record
        log.info("enrolled device %s as %s", device, role.value)

    # -- people ----------------------------------------------------------------------------

    async def add_user(self, name: str, role: Role, windows: Sequence[str], password: str) -> None:
        """Create a person's login, or replace it (new password, role, windows; their open
        sessions end)."""
        _check_name("user", name)
        if role not in USER_ROLES:
            roles = ", ".join(r.value for r in USER_ROLES)
            raise Refused(f"a person logs in as one of {roles}")
        if role is Role.STAFF and not windows:
            raise Refused("staff work at windows: give --window (one or more)")
        if role is not Role.STAFF and windows:
            raise Refused(f"a {role.value} is not bound to windows; give no --window")
        self._check_windows(windows)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise Refused(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        hashed = await self._hash(password)
        chosen = tuple(dict.fromkeys(windows))

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[UserCredential]:
            record = UserCredential(name, role.value, chosen, hashed, _iso(now))
            granted = ev.AuthGranted(
                credential="user",
                name=name,
                role=role.value,
                windows=list(chosen),
                replaced=name in self._users,
            )
            _, stored = store.save_user(record, Event(granted, now), clock_ok=clock_ok)
            return Written(stored, record)

        self._users[name] = await self.hall.write(write)
        self._sessions = {h: s for h, s in self._sessions.items() if s.user != name}
        log.info("added user %s as %s", name, role.value)

    async def remove_user(self, name: str) -> None:
        """Remove a person's login; their sessions end. NotFound when there is none."""
        known = self._users.get(name)

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[bool]:
            role = known.role if known is not None else ""

            def event(sessions: int) -> Event:
                revoked = ev.AuthRevoked(credential="user", name=name, role=role, sessions=sessions)
                return Event(revoked, now)

            removed = store.delete_user(name, event, clock_ok=clock_ok)
            return Written(removed.events, removed.found)

        if not await self.hall.write(write):
            raise NotFound(f"no user {name!r}")
        self._users.pop(name, None)
        self._sessions = {h: s for h, s in self._sessions.items() if s.user != name}
        log.info("removed user %s", name)

    async def login(self, name: str, password: str) -> Login:
        """Open a session for ``name``; Unauthorized for a wrong name or password, LockedOut
        after too many failures in a row."""
        now = self._clock()
        if len(self._failures) > MAX_TRACKED_NAMES:  # names typed at random: forget the unlocked
            self._failures = {n: f for n, f in self._failures.items() if f.locked_until is not None}
        failures = self._failures.setdefault(name, _Failures())
        if failures.locked_until is not None:
            if now < failures.locked_until:
                await self._refused_while_locked(name, failures)
            self._failures[name] = failures = _Failures()
        user = self._users.get(name)
        if not await self._verify(user, password) or user is None:
            await self._failed(name, user, failures, now)
            raise Unauthorized("wrong name or password")
        self._failures.pop(name, None)
        token = new_token()
        digest = token_hash(token)
        expires = now + dt.timedelta(hours=self.settings.session_hours)
        record = SessionRecord(digest, user.name, _iso(expires), _iso(now))
        login = ev.AuthLogin(
            name=user.name, role=user.role, windows=list(user.windows), expires_at=_iso(expires)
        )

        def write(store: Store, at: dt.datetime, clock_ok: bool) -> Written[None]:
            stored = store.save_session(
                record, Event(login, at), expired_before=_iso(now), clock_ok=clock_ok
            )
            return Written(stored, None)

        await self.hall.write(write)
        self._sessions = {
            h: s for h, s in self._sessions.items() if dt.datetime.fromisoformat(s.expires_at) > now
        }
        self._sessions[digest] = record
        principal = Principal(user.name, Role(user.role), "user", frozenset(user.windows), digest)
        log.info("user %s logged in as %s", user.name, user.role)
        return Login(token, principal, expires)

    async def logout(self, principal: Principal) -> None:
        """End the session ``principal`` came with."""
        digest = principal.session
        if digest is None:
            raise Refused("only a person's session can log out; a device token is revoked")

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            logout = ev.AuthLogout(name=principal.name, role=principal.role.value)
            return Written(
                store.delete_session(digest, [Event(logout, now)], clock_ok=clock_ok), None
            )

        await self.hall.write(write)
        self._sessions.pop(digest, None)
        log.info("user %s logged out", principal.name)

    async def _verify(self, user: UserCredential | None, password: str) -> bool:
        if len(password) > MAX_PASSWORD:
            return False
        if user is None:
            # As long as a real check: the answer's time says nothing about the name.
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(new_token())
            hashed = self._dummy_hash
        else:
            hashed = user.password_hash

        def verify() -> bool:
            from argon2.exceptions import InvalidHashError, VerificationError

            try:
                return bool(self._hasher.verify(hashed, password))
            except (VerificationError, InvalidHashError):
                return False

        async with self._hashing:
            ok = await asyncio.to_thread(verify)
        return ok and user is not None

    @functools.cached_property
    def _hasher(self) -> PasswordHasher:
        return self._given_hasher or password_hasher()

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def _failed(
        self, name: str, user: UserCredential | None, failures: _Failures, now: dt.datetime
    ) -> None:
        failures.count += 1
        limit = self.settings.lockout_failures
        if failures.count >= limit:
            failures.locked_until = now + dt.timedelta(minutes=self.settings.lockout_minutes)
            log.warning(
                "%d failed logins in a row for %s; locked out until %s",
                failures.count,
                f"user {name}" if user is not None else "a name that is no user",
                failures.locked_until.astimezone(self.hall.config.hall.zone).strftime("%H:%M:%S"),
            )
        failed = ev.AuthFailed(
            name=user.name if user is not None else None,
            reason="password" if user is not None else "unknown_user",
            failures=failures.count,
            locked_until=None if failures.locked_until is None else _iso(failures.locked_until),
        )
        await self._record(failed)

    async def _refused_while_locked(self, name: str, failures: _Failures) -> None:
        assert failures.locked_until is not None
        if not failures.reported:
            # Once per lock: an attacker hammering a locked name must not flood the outbox.
            failures.reported = True
            await self._record(
                ev.AuthFailed(
                    name=name if name in self._users else None,
                    reason="locked",
                    failures=failures.count,
                    locked_until=_iso(failures.locked_until),
                )
            )
        local = failures.locked_until.astimezone(self.hall.config.hall.zone)
        raise LockedOut(f"too many failed logins for {name!r}; try again after {local:%H:%M:%S}")

    async def _record(self, data: ev.EventData) -> None:
        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            return Written(store.record_access_events([Event(data, now)], clock_ok=clock_ok), None)

        await self.hall.write(write)

    def _check_windows(self, windows: Sequence[str]) -> None:
        known = {w.id for w in self.hall.config.windows}
        for window in windows:
            if window not in known:
                raise NotFound(f"there is no window {window!r}; the windows are {sorted(known)}")

    # -- the ops token ---------------------------------------------------------------------

    async def _ops_token(self) -> None:
        """Read the ops token file, or make it. The agent's own credential: kept as its
        hash in memory only, never a row or an event (the file is the grant; replacing
        the file and restarting the agent is its revocation)."""
        try:
            token = await asyncio.to_thread(read_or_make_ops_token, self.ops_token_file)
        except OSError as err:
            log.error(
                "could not create the ops token file %s (%s); the command line cannot "
                "authenticate until the agent can write it",
                self.ops_token_file,
                err.strerror or err,
            )
            return
        self._ops = token_hash(token)


def read_or_make_ops_token(path: Path) -> str:
    """The ops token in ``path``; made (mode 0640) when the file is missing or empty."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = None
    except (UnicodeDecodeError, ValueError):
        token = ""
    if token is not None and len(token) >= 32:
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            os.chmod(path, OPS_TOKEN_MODE)
            log.warning(
                "the ops token file %s was readable by every user (mode %s); made it %s",
                path,
                f"{mode:o}",
                f"{OPS_TOKEN_MODE:o}",
            )
        return token
    if token is not None:
        log.warning("the ops token file %s holds no token; made a new one", path)
    token = new_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OPS_TOKEN_MODE)
    try:
        os.fchmod(fd, OPS_TOKEN_MODE)  # whatever the umask: root and the service's group
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("made the ops token file %s (mode 0640)", path)
    return token
