"""Who is on duty at each window now (AB岗 and 轮班): pure, from the config's rota and the
windows' signed-in staff.

On a day the hall is closed (a public holiday, a closed special date) nobody is
scheduled: the board shows only who is signed in. A make-up working day (调休上班) follows
the rota of the weekday ``calendar.make_up_day_hours`` names (Monday by default), as its
hours do.

For each window the shift now (or, between shifts, the next one today, else the last one)
gives its A (主岗) and B (备岗) (``rota.week`` for the weekday and shift, else
``rota.posts``). On duty:

- A, when signed in — or, outside the shift's hours, as scheduled;
- B, when signed in (assisting A), or standing in (顶岗) while the shift runs and A is not
  signed in at the window, signed in or not;
- anyone else signed in at the window (not on its rota), as signed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from agent.config import HallAgentConfig, Post, Shift
from agent.config.hall import WEEKDAYS, Weekday
from agent.core import opening
from agent.core.model import WindowStatus

JSON = dict[str, Any]

# Roles on the board: 主岗, 备岗, and someone signed in who is not on the window's rota.
ROLE_A, ROLE_B, ROLE_OTHER = "A", "B", None


def shift_for(shifts: list[Shift], moment: dt.time) -> tuple[Shift | None, bool]:
    """The shift the board shows at ``moment`` and whether it is running: the one now,
    else the next one today, else the day's last."""
    ordered = sorted(shifts, key=lambda s: s.start)
    for shift in ordered:
        if shift.contains(moment):
            return shift, True
    upcoming = [s for s in ordered if s.start > moment]
    if upcoming:
        return upcoming[0], False
    return (ordered[-1], False) if ordered else (None, False)


def scheduled_weekday(config: HallAgentConfig, day: dt.date) -> Weekday | None:
    """Whose rota ``day`` follows: its own weekday's; on a make-up working day (调休上班)
    the weekday of ``calendar.make_up_day_hours`` (Monday by default); None when the hall
    is closed all day (a public holiday, a closed special date, a day without hours)."""
    hours = opening.hall_day(config, day)
    if not hours.is_open_day:
        return None
    if hours.make_up and not hours.special:
        return config.calendar.make_up_day_hours
    return WEEKDAYS[day.weekday()]


def duty_board(
    config: HallAgentConfig, windows: Mapping[str, WindowStatus], now: dt.datetime
) -> list[JSON]:
    """Per window with anyone on duty: its shift and the people on duty (staff number,
    name, role, signed in, standing in), A first."""
    local = now.astimezone(config.hall.zone)
    weekday = scheduled_weekday(config, local.date())
    rota = config.rota
    shift, running = shift_for(rota.shifts, local.time())
    if weekday is None:  # the hall is closed today: nobody is scheduled
        shift, running = None, False
    names = {m.staff: m.name for m in config.staff}
    shown = (
        None
        if shift is None
        else {
            "id": shift.id,
            "name": shift.name,
            "start": f"{shift.start:%H:%M}",
            "end": f"{shift.end:%H:%M}",
            "running": running,
        }
    )
    board: list[JSON] = []
    for window in config.windows:
        status = windows.get(window.id) or WindowStatus(id=window.id)
        post = None if shift is None or weekday is None else rota.post(window.id, weekday, shift.id)
        people, a_absent = _on_duty(status, post, running, names)
        if not people:
            continue
        board.append(
            {
                "window": window.id,
                "name": window.name,
                "number": window.number,
                "state": status.state.value,
                "shift": None if post is None else dict(shown or {}) or None,
                "a": None if post is None else post.a,
                "b": None if post is None else post.b,
                "a_absent": a_absent,
                "people": people,
            }
        )
    return board


def _on_duty(
    status: WindowStatus, post: Post | None, running: bool, names: Mapping[str, str]
) -> tuple[list[JSON], bool]:
    """Who is on duty at one window, A first, and whether its A is absent."""
    signed = status.signed_in()
    people: list[JSON] = []

    def add(staff: str, role: str | None, *, stands_in: bool = False) -> None:
        people.append(
            {
                "staff": staff,
                "name": status.name_of(staff) or names.get(staff) or "",
                "role": role,
                "signed_in": staff in signed,
                "stands_in": stands_in,
            }
        )

    a_absent = False
    if post is not None:
        a_here = post.a in signed
        a_absent = running and not a_here
        if a_here or not running:
            add(post.a, ROLE_A)
        if post.b is not None and (post.b in signed or a_absent):
            add(post.b, ROLE_B, stands_in=a_absent)
    for staff in signed:
        if post is None or staff not in (post.a, post.b):
            add(staff, ROLE_OTHER)
    return people, a_absent
