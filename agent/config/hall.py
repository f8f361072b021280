"""The hall and its queue: opening periods, the hall, queue rules, services and windows;
how window callers are read, the satisfaction rating (好差评) and the printed ticket.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from agent.config.base import (
    HALL_ID_PATTERN,
    PREFIX_PATTERN,
    REGION_CODE_PATTERN,
    Identifier,
    Model,
)
from agent.config.errors import _invalid

# ---------------------------------------------------------------------------------------
# Queue: hall, services, windows

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKDAYS: tuple[Weekday, ...] = WEEKDAYS[:5]

_SHORT_TIME = re.compile(r"^\d:\d\d$")
# JSON Schema's "time" format demands seconds and a UTC offset; the file says 09:00.
TimeOfDay = Annotated[
    dt.time, WithJsonSchema({"type": "string", "pattern": "^[0-2]?[0-9]:[0-5][0-9](:[0-5][0-9])?$"})
]


def time_text(value: object) -> object:
    """A time of day as the file writes it: ``9:00`` is 09:00; a number is refused (pydantic
    would read 9 as seconds after midnight: silently 00:00:09)."""
    if isinstance(value, int | float):
        raise _invalid(
            f"{value!r} is a number, not a time of day", "write the time as HH:MM, e.g. 09:00"
        )
    if isinstance(value, str) and _SHORT_TIME.match(value):
        return "0" + value
    return value


def unique_days(days: list[Weekday]) -> list[Weekday]:
    if len(set(days)) != len(days):
        raise _invalid("a day is listed twice", "list each day once, e.g. [mon, tue, wed]")
    return days


class TimeSpan(Model):
    """A span of a day, e.g. ``09:00-12:00``. The end is exclusive."""

    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="before")
    @classmethod
    def _span_text(cls, value: object) -> object:
        # "09:00-12:00" (as a special date's hours are pasted) is {start, end}.
        if isinstance(value, str) and value.count("-") == 1:
            start, end = (part.strip() for part in value.split("-"))
            return {"start": start, "end": end}
        return value

    _time_text = field_validator("start", "end", mode="before")(time_text)

    @model_validator(mode="after")
    def _ordered(self) -> TimeSpan:
        if self.end <= self.start:
            raise _invalid(
                f"the period ends ({self.end:%H:%M}) before it starts ({self.start:%H:%M})",
                "write start < end; split a period that crosses midnight in two",
                at="end",
            )
        return self

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class Period(TimeSpan):
    """One opening period, e.g. ``09:00-12:00`` on weekdays. The end is exclusive."""

    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS), min_length=1)

    _unique_days = field_validator("days")(unique_days)

    def contains(self, local: dt.datetime) -> bool:
        return WEEKDAYS[local.weekday()] in self.days and self.start <= local.time() < self.end

    def overlaps(self, other: Period) -> bool:
        return bool(set(self.days) & set(other.days)) and (
            self.start < other.end and other.start < self.end
        )

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {','.join(self.days)}"


class SpecialDay(Model):
    """A date whose hours differ from the usual ones: closed (``closed``), or open at the
    hours given (``{hours: ["09:00-12:00"]}``), e.g. New Year's Eve until noon, or a
    holiday on which the hall opens (全年不打烊)."""

    closed: bool = Field(default=False, description="The hall (or the service) is closed")
    hours: list[TimeSpan] = Field(
        default_factory=list, max_length=6, description="The hours that day, in order"
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="Shown to citizens, e.g. 系统升级 or 跨年值班",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if value == "closed":
            return {"closed": True}
        if isinstance(value, list):
            return {"hours": value}
        return value

    @model_validator(mode="after")
    def _hours_or_closed(self) -> SpecialDay:
        if self.closed and self.hours:
            raise _invalid(
                "the date is closed and has hours", "write either closed or hours, not both"
            )
        if not self.closed and not self.hours:
            raise _invalid(
                "the date has neither hours nor closed",
                'write closed, or hours: ["09:00-12:00", "13:30-17:00"]',
            )
        for i, later in enumerate(self.hours[1:], 1):
            earlier = self.hours[i - 1]
            if later.start < earlier.end:
                raise _invalid(
                    f"{later} starts before {earlier} ends",
                    "list the hours in order of the day, each ending before the next starts",
                    at=f"hours[{i}]",
                )
        return self


class HallConfig(Model):
    """The hall itself."""

    id: Annotated[str, Field(pattern=HALL_ID_PATTERN)] = Field(
        description="Unique hall id: MQTT client id and topic segment hall/v1/{id}/"
    )
    name: str = Field(min_length=1, description="Display name, e.g. 中关村街道党群服务中心")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the hall")
    day_start_hour: int = Field(
        default=4, ge=0, le=23, description="Local hour at which the business day rolls over"
    )
    region_code: Annotated[str, Field(pattern=REGION_CODE_PATTERN)] | None = Field(
        default=None, description="Administrative division code (行政区划代码) for ratings"
    )
    phone: str | None = Field(
        default=None,
        min_length=3,
        max_length=30,
        pattern=r"^[0-9+\-() ]+$",
        description="The hall's phone number for citizens, printed on tickets",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise _invalid(
                f"unknown time zone {value!r}", "use an IANA name like Asia/Shanghai"
            ) from err
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class PriorityClass(Model):
    """One class of citizens the green channel (绿色通道) serves first."""

    id: Literal["elderly", "disabled", "veteran", "pregnant"]
    label: str = Field(min_length=1, max_length=20, description="What the kiosk shows, e.g. 老年人")


DEFAULT_PRIORITY_CLASSES = (
    {"id": "elderly", "label": "老年人"},
    {"id": "disabled", "label": "残疾人"},
    {"id": "veteran", "label": "军人、退役军人"},
    {"id": "pregnant", "label": "孕妇"},
)


class GreenChannel(Model):
    """绿色通道: priority tickets chosen by touch at the kiosk or granted at the guide desk."""

    by_touch: bool = Field(
        default=True, description="The kiosk offers the green channel to anyone who asks"
    )
    classes: list[PriorityClass] = Field(
        default_factory=lambda: [PriorityClass.model_validate(c) for c in DEFAULT_PRIORITY_CLASSES],
        min_length=1,
        max_length=4,
    )
    policy: str = Field(
        default="老年人、残疾人、军人及退役军人、孕妇等群体可走绿色通道优先办理，请如实选择。",
        min_length=1,
        max_length=300,
        description="The hall's policy text shown with the choice",
    )

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[PriorityClass]) -> list[PriorityClass]:
        if len({c.id for c in classes}) != len(classes):
            raise _invalid("a class is listed twice", "list each class once")
        return classes


class QueuePolicy(Model):
    """Hall-wide queue rules."""

    recall_limit: int = Field(default=3, ge=0, le=20)
    aging_minutes: int | None = Field(default=None, ge=1)
    green_channel_age: int = Field(default=65, ge=50, le=120)
    one_waiting_ticket_per_id: bool = True
    service_time_window: int = Field(default=20, ge=1, le=500)
    green_channel: GreenChannel = Field(default_factory=GreenChannel)
    turn_near: int | None = Field(
        default=3,
        ge=1,
        le=50,
        description=(
            "A ticket.turn_near event fires when a waiting ticket has this many people "
            "ahead (central may send an SMS or WeChat message); null: never"
        ),
    )
    staff_per_window: int = Field(
        default=2,
        ge=1,
        le=2,
        description=(
            "Staff signed in at one window at once (2: A serving and B assisting, or two "
            "sharing a shift; 1: a second sign-in replaces the first)"
        ),
    )


class ServiceGuide(Model):
    """The service guide (办事指南) of one service: what a citizen is told at once
    (一次性告知) before and after taking a ticket, on the kiosk, the ticket and the
    ticket's status page, and what the window's staff see."""

    summary: str | None = Field(
        default=None, min_length=1, max_length=400, description="What the service is for"
    )
    materials: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(
        default_factory=list,
        max_length=40,
        description="Every material the citizen must bring, one item each (一次性告知)",
    )
    notes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=10, description="Further things to know"
    )
    time_limit_days: int | None = Field(
        default=None,
        ge=0,
        le=365,
        description="Promised completion in working days (承诺时限); 0: done on the spot (即办)",
    )
    fee: str | None = Field(
        default=None, min_length=1, max_length=60, description="The fee, e.g. 不收费"
    )

    @field_validator("materials")
    @classmethod
    def _unique_materials(cls, materials: list[str]) -> list[str]:
        if len(set(materials)) != len(materials):
            raise _invalid("a material is listed twice", "list each material once")
        return materials

    @property
    def time_limit_text(self) -> str | None:
        if self.time_limit_days is None:
            return None
        if self.time_limit_days == 0:
            return "即办（当场办结）"
        return f"{self.time_limit_days}个工作日"


class Service(Model):
    """A service (业务) citizens take tickets for."""

    id: Identifier
    name: str = Field(min_length=1)
    name_en: str | None = None
    prefix: Annotated[str, Field(pattern=PREFIX_PATTERN)]
    width: int = Field(default=3, ge=2, le=5)
    daily_cap: int | None = Field(default=None, ge=1)
    hours: list[Period] = Field(
        default_factory=list,
        description=(
            "When the kiosk issues tickets for the service; empty: the hall's hours "
            "(calendar.hours), and when those are empty too, all day"
        ),
    )
    special_dates: dict[dt.date, SpecialDay] = Field(
        default_factory=dict,
        description="Dates with other hours for this service, or closed (before the hall's)",
    )
    waiting_warning: int | None = Field(default=None, ge=1)
    expected_minutes: float = Field(default=5.0, gt=0, le=480)
    guide: ServiceGuide | None = Field(
        default=None, description="办事指南 / 一次性告知: materials, time limit, fee, notes"
    )

    def open_at(self, local: dt.datetime) -> bool:
        """Within the service's own weekly hours (no calendar: holidays, make-up days and
        special dates are :func:`agent.core.opening.opening`'s)."""
        return not self.hours or any(p.contains(local) for p in self.hours)


class Window(Model):
    """A counter window; ``services`` in calling priority order."""

    id: Identifier
    name: str = Field(min_length=1)
    number: int = Field(ge=1, le=999)
    services: list[Identifier] = Field(min_length=1)
    devices: list[Identifier] = Field(default_factory=list)


# -- window callers and the satisfaction rating (好差评) (issue 6) --------------------------


class CallerPolicy(Model):
    """How window callers (keypads, the web caller page) are read."""

    debounce_s: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description=(
            "The same operation pressed again at a window within this time is one press "
            "(a double press, a keypad repeating a frame it saw no answer to)"
        ),
    )


# Bad-rating options a citizen chooses from (after GB/T 39734-2020 Annex A in spirit;
# provinces publish their own lists: put yours in the config).
DEFAULT_BAD_REASONS = (
    "服务态度不好",
    "办事效率低",
    "业务不熟练",
    "政策解释不清楚",
    "要求提供规定以外的材料",
    "多次跑腿仍未办成",
    "窗口人员不在岗",
    "其他",
)


class RatingPolicy(Model):
    """The satisfaction rating (好差评) at the windows: one rating per ticket."""

    start_on: Literal["finish", "any_finish", "request"] = Field(
        default="any_finish",
        description=(
            "When a window's rater invites the citizen: finish (the finish operation), "
            "any_finish (also when next, a call by number or a sign-out ends the ticket), "
            "request (only when staff or central request a rating)"
        ),
    )
    timeout_s: float = Field(
        default=60.0, ge=5, le=900, description="How long the rater waits for the citizen"
    )
    on_timeout: Literal["none", "default"] = Field(
        default="none",
        description=(
            "none: nothing is recorded when the citizen does not rate; default: "
            "default_level is recorded, marked defaulted (never after a bad key was pressed)"
        ),
    )
    default_level: int = Field(
        default=4,
        ge=3,
        le=5,
        description="Level recorded on timeout with on_timeout: default (5 非常满意, 4 满意, "
        "3 基本满意; a bad rating needs the citizen's reason, so it is never a default)",
    )
    reasons: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=lambda: list(DEFAULT_BAD_REASONS),
        min_length=1,
        max_length=16,
        description=(
            "Reasons a citizen chooses from for 不满意 and 非常不满意 (required for them); "
            "keypad raters choose by key index after the bad key, so list the keypad's first"
        ),
    )

    @field_validator("reasons")
    @classmethod
    def _unique_reasons(cls, reasons: list[str]) -> list[str]:
        if len(set(reasons)) != len(reasons):
            raise _invalid("a reason is listed twice", "list each reason once")
        return reasons


_TICKET_FIELDS = ("hall", "day", "ticket", "ticket_id", "service", "token")
PrintSource = Literal["button", "touch", "qr", "id_card", "api", "central"]
_PRINTED_SOURCES: tuple[PrintSource, ...] = ("button", "touch", "qr", "id_card", "api")


class TicketLayout(Model):
    """What the printed ticket says and which tickets are printed."""

    qr_url: str | None = Field(
        default=None,
        description=(
            "QR code link on the ticket (mobile tracking or rating page); "
            "may use {hall}, {day}, {ticket}, {ticket_id}, {service}, {token} (the status "
            "page's credential); null: the status page on web.public_url, or no QR code"
        ),
    )
    footer: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        default_factory=lambda: ["过号请重新取号"],
        max_length=4,
        description="Lines printed at the bottom, e.g. 过号请重新取号",
    )
    large: bool = Field(
        default=False, description="Elder-friendly layout: larger text, fewer lines"
    )
    show_wait: bool = Field(default=True, description="Print people ahead and estimated wait")
    show_windows: bool = Field(default=True, description="Print the windows that serve it")
    materials: Literal["all", "none"] | Annotated[int, Field(ge=1, le=40)] = Field(
        default="all",
        description=(
            "The service guide's materials printed as a checklist: all, none, or the first N"
        ),
    )
    status_page: bool = Field(
        default=True,
        description=(
            "With no qr_url, the QR opens the ticket's status page on the hall's own network "
            "(web.public_url); qr_url points it at the district's public site instead"
        ),
    )
    print_sources: list[PrintSource] = Field(
        default_factory=lambda: list(_PRINTED_SOURCES),
        description=(
            "Tickets from these sources are printed, and refused while the printer cannot "
            "print; others (central: issued remotely) are only saved"
        ),
    )
    font: Path = Field(
        default=Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
        description="CJK font for raster printing (Debian package fonts-wqy-microhei)",
    )

    @field_validator("qr_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hint = "use only {" + "}, {".join(_TICKET_FIELDS) + "} in the link; write {{ for a brace"
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as err:
            raise _invalid(f"the link template is malformed: {err}", hint) from err
        unknown = sorted({n for n in names if n not in _TICKET_FIELDS})
        if unknown:
            raise _invalid(f"unknown placeholder(s) {', '.join(unknown)} in the link", hint)
        if not urlsplit(value.replace("{", "").replace("}", "")).scheme:
            raise _invalid("the link has no scheme", "start it with https://")
        return value
