"""The access rows: enrolled devices, people's logins and their sessions (docs/security.md).

A device's token and a session's token are kept as their SHA-256 (256-bit random tokens
need no slow hash); a person's password as its argon2 hash, made by
:mod:`agent.features.access`. Every change is saved with its ``auth.*`` event in one
transaction; the events never carry a secret or a hash.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Sequence

from agent.core.events import Event
from agent.runtime.store.core import StoreCore, StoredEvent


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceCredential:
    """An enrolled device: its role, its window (callers and raters), its token's hash."""

    name: str
    role: str
    window: str | None
    token_sha256: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class UserCredential:
    """A person who logs in: role, the windows they work at, their password's argon2 hash."""

    name: str
    role: str
    windows: tuple[str, ...]
    password_hash: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    """A person's login: the hash of its token and when it ends."""

    token_sha256: str
    user: str
    expires_at: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class AccessRecords:
    devices: list[DeviceCredential]
    users: list[UserCredential]
    sessions: list[SessionRecord]


@dataclasses.dataclass(frozen=True, slots=True)
class Removed:
    """What a revocation removed: whether the credential existed, the sessions it ended."""

    found: bool
    sessions: int
    events: list[StoredEvent]


class AccessRows(StoreCore):
    """The access tables (a part of ``Store``)."""

    def access_records(self) -> AccessRecords:
        """Every credential and session, to check tokens in memory."""

        def select(conn: sqlite3.Connection) -> AccessRecords:
            devices = [
                DeviceCredential(*row)
                for row in conn.execute(
                    "SELECT name, role, window, token_sha256, created_at FROM access_devices "
                    "ORDER BY name"
                )
            ]
            users = [
                UserCredential(name, role, tuple(json.loads(windows)), password_hash, created)
                for name, role, windows, password_hash, created in conn.execute(
                    "SELECT name, role, windows, password_hash, created_at FROM access_users "
                    "ORDER BY name"
                )
            ]
            sessions = [
                SessionRecord(*row)
                for row in conn.execute(
                    "SELECT token_sha256, user, expires_at, created_at FROM access_sessions"
                )
            ]
            return AccessRecords(devices, users, sessions)

        return self._read(select)

    def save_device(
        self, device: DeviceCredential, event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Enrol a device, replacing its earlier token if it had one."""

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO access_devices (name, role, window, token_sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                "window = excluded.window, token_sha256 = excluded.token_sha256, "
                "created_at = excluded.created_at",
                dataclasses.astuple(device),
            )

        _, stored = self._transaction(upsert, [event], clock_ok=clock_ok)
        return stored

    def delete_device(
        self, name: str, event: Callable[[int], Event], *, clock_ok: bool = True
    ) -> Removed:
        """Revoke a device's token; ``event(0)`` is saved only when there was one."""
        return self._remove("DELETE FROM access_devices WHERE name = ?", name, event, clock_ok)

    def save_user(
        self, user: UserCredential, event: Event, *, clock_ok: bool = True
    ) -> tuple[int, list[StoredEvent]]:
        """Create a person's login, or replace it (their open sessions end); returns the
        number of sessions ended."""

        def upsert(conn: sqlite3.Connection) -> int:
            ended = conn.execute(
                "DELETE FROM access_sessions WHERE user = ?", (user.name,)
            ).rowcount
            conn.execute(
                "INSERT INTO access_users (name, role, windows, password_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                "windows = excluded.windows, password_hash = excluded.password_hash, "
                "created_at = excluded.created_at",
                (
                    user.name,
                    user.role,
                    json.dumps(list(user.windows)),
                    user.password_hash,
                    user.created_at,
                ),
            )
            return int(ended)

        return self._transaction(upsert, [event], clock_ok=clock_ok)

    def delete_user(
        self, name: str, event: Callable[[int], Event], *, clock_ok: bool = True
    ) -> Removed:
        """Remove a person's login and end their sessions; ``event(sessions ended)`` is saved
        only when the user existed."""
        return self._remove("DELETE FROM access_users WHERE name = ?", name, event, clock_ok)

    def save_session(
        self,
        session: SessionRecord,
        event: Event,
        *,
        expired_before: str,
        clock_ok: bool = True,
    ) -> list[StoredEvent]:
        """Record a login; sessions that ended before ``expired_before`` are dropped."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM access_sessions WHERE expires_at < ?", (expired_before,))
            conn.execute(
                "INSERT INTO access_sessions (token_sha256, user, expires_at, created_at) "
                "VALUES (?, ?, ?, ?)",
                dataclasses.astuple(session),
            )

        _, stored = self._transaction(insert, [event], clock_ok=clock_ok)
        return stored

    def delete_session(
        self, token_sha256: str, events: Sequence[Event] = (), *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """End one session (a logout, or one found expired)."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM access_sessions WHERE token_sha256 = ?", (token_sha256,))

        _, stored = self._transaction(delete, events, clock_ok=clock_ok)
        return stored

    def record_access_events(
        self, events: Sequence[Event], *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Events that change no access row (a failed login)."""
        _, stored = self._transaction(lambda conn: None, events, clock_ok=clock_ok)
        return stored

    def _remove(
        self, statement: str, name: str, event: Callable[[int], Event], clock_ok: bool
    ) -> Removed:
        events: list[Event] = []  # appended by ``delete``, then saved in its transaction

        def delete(conn: sqlite3.Connection) -> tuple[bool, int]:
            sessions = int(
                conn.execute(
                    "SELECT COUNT(*) FROM access_sessions WHERE user = ?", (name,)
                ).fetchone()[0]
            )
            # A user's sessions go with it (ON DELETE CASCADE); a device has none.
            found = conn.execute(statement, (name,)).rowcount > 0
            if found:
                events.append(event(sessions))
            return found, sessions if found else 0

        (found, sessions), stored = self._transaction(delete, events, clock_ok=clock_ok)
        return Removed(found, sessions, stored)
