"""The staff roster central pushes (``set_staff``) and signing staff in at a window.

The roster is kept in the store (setting ``staff``); each member has a staff number, a
name, optionally a photo, the windows they may work at, a sign-in ``key_code`` typed on a
window caller, and the SHA-256 of their ID card number so reading their card at a
window's ID reader signs them in.

Once a roster exists, only its members sign in: a staff number the roster does not know is
refused (:func:`sign_in_by_number`, the API's sign-in and ``hall-agent window W sign-in``),
and the name shown on the screens is the roster's. Without any roster (a hall that has
never heard from central, the demo before its roster) a staff number is taken as typed,
with a warning in the log, so a new hall can open its windows; keypad codes and ID cards
need the roster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

from agent.core.engine import Outcome
from agent.core.errors import Refused
from agent.core.operations import SignIn
from agent.runtime.hall import Hall

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class StaffMember:
    staff: str
    name: str
    photo_url: str | None = None
    windows: tuple[str, ...] = ()
    key_code: str | None = None
    id_sha256: str | None = None

    def may_work_at(self, window_id: str) -> bool:
        return not self.windows or window_id in self.windows

    def public(self) -> dict[str, Any]:
        """What pages show (亮明身份): number, name, photo. Never the ID hash or the code."""
        return {"staff": self.staff, "name": self.name, "photo_url": self.photo_url}


@dataclasses.dataclass(frozen=True, slots=True)
class Roster:
    members: tuple[StaffMember, ...] = ()

    @classmethod
    def from_setting(cls, raw: Any) -> Roster:
        members = []
        for item in raw or []:
            members.append(
                StaffMember(
                    staff=str(item["staff"]),
                    name=str(item["name"]),
                    photo_url=item.get("photo_url"),
                    windows=tuple(item.get("windows") or ()),
                    key_code=item.get("key_code"),
                    id_sha256=item.get("id_sha256"),
                )
            )
        return cls(tuple(members))

    def by_number(self, staff: str | None) -> StaffMember | None:
        return next((m for m in self.members if m.staff == staff), None)

    def by_key_code(self, code: str) -> StaffMember | None:
        """The member whose key code this is; a staff number typed as the code works too."""
        found = next((m for m in self.members if m.key_code == code), None)
        return found or next((m for m in self.members if m.staff == code), None)

    def by_id_number(self, id_number: str) -> StaffMember | None:
        digest = id_sha256(id_number)
        return next((m for m in self.members if m.id_sha256 == digest), None)


def id_sha256(id_number: str) -> str:
    """How the roster refers to an ID card number (central computes the same)."""
    return hashlib.sha256(id_number.strip().upper().encode("ascii")).hexdigest()


async def load_roster(hall: Hall) -> Roster:
    """Central's roster (``set_staff``, or ``staff`` in its config push); before any, the
    config file's ``staff``."""
    saved = await hall.store_read(lambda s: s.setting("staff"))
    if saved is None:
        saved = [m.model_dump() for m in hall.config.staff]
    return Roster.from_setting(saved)


def _sign_in(window_id: str, member: StaffMember) -> SignIn:
    if not member.may_work_at(window_id):
        allowed = ", ".join(member.windows)
        raise Refused(f"staff {member.staff} works at window {allowed}, not {window_id}")
    return SignIn(window=window_id, staff=member.staff, name=member.name)


class NotOnRoster(Refused):
    """A staff number the hall's roster does not know."""

    code = "not_on_roster"


async def sign_in_by_number(
    hall: Hall, window_id: str, staff: str, name: str | None = None
) -> Outcome:
    """Sign in by staff number (the API, the CLI): only a member of the roster once there
    is one, with the roster's name; without a roster, the number as typed."""
    roster = await load_roster(hall)
    number = staff.strip()
    if not roster.members:
        log.warning(
            "staff %s signs in at window %s without a roster to check them against "
            "(central's set_staff sends one)",
            number,
            window_id,
        )
        outcome: Outcome = await hall.execute(SignIn(window=window_id, staff=number, name=name))
        return outcome
    member = roster.by_number(number)
    if member is None:
        raise NotOnRoster(
            f"工号 {number} 不在本厅人员名单中: staff number {number!r} is not on the hall's "
            f"roster ({len(roster.members)} members, from central's set_staff); check the "
            "number, or have central add the member"
        )
    return await hall.execute(_sign_in(window_id, member))


async def sign_in_by_key_code(hall: Hall, window_id: str, code: str) -> Outcome:
    """Staff typed their code then confirm on the window's caller."""
    member = (await load_roster(hall)).by_key_code(code)
    if member is None:
        raise Refused(
            f"no staff member has the sign-in code {code}; central's roster (set_staff) "
            "gives each member a key_code"
        )
    outcome: Outcome = await hall.execute(_sign_in(window_id, member))
    return outcome


async def sign_in_by_identity(hall: Hall, window_id: str, id_number: str) -> Outcome | None:
    """For the ID-card flow: a card read at a window's reader. Signs its holder in when the
    card is a staff member's in the roster and returns the outcome; returns None when it
    is not (the card is a citizen's: the caller goes on with its own flow). Refused when
    the member may not work at this window."""
    member = (await load_roster(hall)).by_id_number(id_number)
    if member is None:
        return None
    log.info("staff %s signs in at window %s by ID card", member.staff, window_id)
    outcome: Outcome = await hall.execute(_sign_in(window_id, member))
    return outcome
