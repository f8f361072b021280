"""The hall's staff: the roster (工号, name, photo), each window's A and B post (主岗 and
备岗, AB岗) and the weekly rota (轮班) by weekday and shift.

``staff`` is the same roster central's ``set_staff`` sends (that one, once received, is
what signing in checks against; this one is what the config's rota is checked against).
``rota.posts`` gives each window its A and B for every shift of every day; ``rota.week``
says who is on a window on given weekdays and shifts instead. Who is on duty at a window
now, and whether its B stands in, is :func:`agent.core.rota.duty_board`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from agent.config.base import Identifier, Model
from agent.config.errors import _invalid
from agent.config.hall import WEEKDAYS, TimeOfDay, Weekday, time_text, unique_days

StaffNumber = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[^\s]+$", description="工号")
]


class StaffEntry(Model):
    """One member of the hall's roster (the fields of central's ``set_staff``)."""

    staff: StaffNumber
    name: str = Field(min_length=1, max_length=32)
    photo_url: str | None = Field(default=None, max_length=500)
    windows: list[Identifier] = Field(
        default_factory=list, description="where they may sign in (empty: any window)"
    )
    key_code: Annotated[str, Field(pattern=r"^\d{2,8}$")] | None = Field(
        default=None, description="digits typed then confirm on a window caller to sign in"
    )
    id_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="SHA-256 (lower-case hex) of their ID card number (upper-case X)",
    )

    def may_work_at(self, window: str) -> bool:
        return not self.windows or window in self.windows


class Shift(Model):
    """A part of the working day a rota entry covers, e.g. 上午 09:00-12:00."""

    id: Identifier
    name: str = Field(min_length=1, max_length=16, description="as the big screen shows it")
    start: TimeOfDay
    end: TimeOfDay

    _time_text = field_validator("start", "end", mode="before")(time_text)

    @model_validator(mode="after")
    def _ordered(self) -> Shift:
        if self.end <= self.start:
            raise _invalid(
                f"the shift ends ({self.end:%H:%M}) before it starts ({self.start:%H:%M})",
                "write start < end",
                at="end",
            )
        return self

    def contains(self, moment: dt.time) -> bool:
        return self.start <= moment < self.end


def _default_shifts() -> list[Shift]:
    return [
        Shift(id="morning", name="上午", start=dt.time(9), end=dt.time(12)),
        Shift(id="afternoon", name="下午", start=dt.time(13, 30), end=dt.time(17, 30)),
    ]


class Post(Model):
    """A window's A (主岗: serves) and B (备岗: stands in when A is absent)."""

    window: Identifier
    a: StaffNumber = Field(description="主岗: the staff member who serves at the window")
    b: StaffNumber | None = Field(
        default=None, description="备岗 (AB岗): stands in when A is not signed in"
    )

    @model_validator(mode="after")
    def _two_people(self) -> Post:
        if self.b is not None and self.a == self.b:
            raise _invalid(
                f"staff {self.a} is both A and B of window {self.window}",
                "name another staff member as B (备岗), or leave b out",
                at="b",
            )
        return self


class RotaEntry(Post):
    """Who is on a window on some weekdays and shifts (轮班), instead of its post."""

    days: list[Weekday] = Field(min_length=1)
    shifts: list[Identifier] = Field(
        default_factory=list, description="the shifts of rota.shifts it covers (empty: all)"
    )

    _unique_days = field_validator("days")(unique_days)


class Rota(Model):
    """AB岗 and 轮班: each window's A and B post, and who is on it by weekday and shift."""

    shifts: list[Shift] = Field(
        default_factory=_default_shifts,
        min_length=1,
        description="the shifts of a day (default: 上午 09:00-12:00, 下午 13:30-17:30)",
    )
    posts: list[Post] = Field(
        default_factory=list, description="each window's A and B, every day and shift"
    )
    week: list[RotaEntry] = Field(
        default_factory=list, description="who is on a window on given weekdays and shifts"
    )

    def shift_at(self, moment: dt.time) -> Shift | None:
        return next((s for s in self.shifts if s.contains(moment)), None)

    def post(self, window: str, weekday: Weekday, shift: str) -> Post | None:
        """Who is on ``window`` on that weekday and shift: the rota's entry, else the post."""
        for entry in self.week:
            covers = not entry.shifts or shift in entry.shifts
            if entry.window == window and weekday in entry.days and covers:
                return entry
        return next((p for p in self.posts if p.window == window), None)

    def staff_numbers(self) -> set[str]:
        named: set[str] = set()
        for post in [*self.posts, *self.week]:
            named.add(post.a)
            if post.b is not None:
                named.add(post.b)
        return named


__all__ = ["WEEKDAYS", "Post", "Rota", "RotaEntry", "Shift", "StaffEntry", "StaffNumber"]
