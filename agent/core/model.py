"""The hall's records: tickets, windows, hall counters, and the enums they are made of."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
from typing import Any

from agent.config import HallAgentConfig

JSON = dict[str, Any]


class TicketStatus(enum.StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    SERVING = "serving"
    HELD = "held"
    FINISHED = "finished"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in OPEN_STATUSES


OPEN_STATUSES = frozenset(
    {TicketStatus.WAITING, TicketStatus.CALLED, TicketStatus.SERVING, TicketStatus.HELD}
)


class Priority(enum.StrEnum):
    """Priority classes. Everything but ``normal`` is served before normal tickets."""

    NORMAL = "normal"
    ELDERLY = "elderly"
    DISABLED = "disabled"
    VETERAN = "veteran"
    PREGNANT = "pregnant"
    APPOINTMENT = "appointment"

    @property
    def is_green(self) -> bool:
        return self is not Priority.NORMAL


# Who granted a priority: the citizen themself at the kiosk (绿色通道 by touch); otherwise
# the staff number (login name) of the guide or the ops credential that issued it.
GRANTED_BY_SELF = "self"


class Source(enum.StrEnum):
    BUTTON = "button"
    TOUCH = "touch"
    QR = "qr"
    ID_CARD = "id_card"
    CENTRAL = "central"
    API = "api"


class WindowState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    PAUSED = "paused"


class EventClass(enum.IntEnum):
    """Retention classes of the outbox: higher survives longer when storage is full."""

    CHATTER = 0
    OPERATIONAL = 1
    BUSINESS = 2


class RatingLevel(enum.IntEnum):
    """The five levels of the national 好差评 scheme (GB/T 39734-2020 §7.3)."""

    VERY_SATISFIED = 5
    SATISFIED = 4
    FAIRLY_SATISFIED = 3
    DISSATISFIED = 2
    VERY_DISSATISFIED = 1

    @property
    def label(self) -> str:
        return RATING_LABELS[self]

    @property
    def is_bad(self) -> bool:
        """差评: a reason is required and central follows it up."""
        return self <= RatingLevel.DISSATISFIED


RATING_LABELS: dict[RatingLevel, str] = {
    RatingLevel.VERY_SATISFIED: "非常满意",
    RatingLevel.SATISFIED: "满意",
    RatingLevel.FAIRLY_SATISFIED: "基本满意",
    RatingLevel.DISSATISFIED: "不满意",
    RatingLevel.VERY_DISSATISFIED: "非常不满意",
}
# A citizen's free-text reason on the tablet.
MAX_RATING_COMMENT = 200


@dataclasses.dataclass(slots=True)
class Ticket:
    id: str
    day: dt.date
    number: str
    service: str
    issued_service: str
    priority: Priority
    source: Source
    issued_at: dt.datetime
    rank: int
    status: TicketStatus = TicketStatus.WAITING
    window: str | None = None
    staff: str | None = None
    id_hash: str | None = None
    called_count: int = 0
    recalls: int = 0
    called_at: dt.datetime | None = None
    serving_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    # Issued while the clock was not trusted: which business day it belongs to is unknown
    # until the clock is set (see QueueEngine._roll).
    undated: bool = False
    # The citizen's satisfaction rating (好差评), at most one per ticket.
    rating: JSON | None = None
    # Who granted its priority ("self" at the kiosk, a guide's staff number), and the
    # appointment it was checked in for at the guide desk.
    granted_by: str | None = None
    appointment: str | None = None
    # The ticket's status page credential (/t/{token}): unguessable, never in public().
    token: str | None = None
    # ticket.turn_near was emitted for it (it fires once per ticket).
    turn_near: bool = False

    def to_json(self) -> JSON:
        """Every field, in declaration order, dates as ISO text (what the store keeps).

        Written out field by field: it runs for every ticket a commit saves and every
        ticket a queue read shows, and a loop over ``dataclasses.fields`` cost ten times as
        much (``tests/test_domain.py`` checks it names every field)."""
        return {
            "id": self.id,
            "day": self.day.isoformat(),
            "number": self.number,
            "service": self.service,
            "issued_service": self.issued_service,
            "priority": self.priority,
            "source": self.source,
            "issued_at": self.issued_at.isoformat(),
            "rank": self.rank,
            "status": self.status,
            "window": self.window,
            "staff": self.staff,
            "id_hash": self.id_hash,
            "called_count": self.called_count,
            "recalls": self.recalls,
            "called_at": _iso(self.called_at),
            "serving_at": _iso(self.serving_at),
            "ended_at": _iso(self.ended_at),
            "undated": self.undated,
            "rating": self.rating,
            "granted_by": self.granted_by,
            "appointment": self.appointment,
            "token": self.token,
            "turn_near": self.turn_near,
        }

    @classmethod
    def from_json(cls, data: JSON) -> Ticket:
        def when(key: str) -> dt.datetime | None:
            raw = data.get(key)
            return None if raw is None else dt.datetime.fromisoformat(raw)

        issued = when("issued_at")
        assert issued is not None
        return cls(
            id=data["id"],
            day=dt.date.fromisoformat(data["day"]),
            number=data["number"],
            service=data["service"],
            issued_service=data["issued_service"],
            priority=Priority(data["priority"]),
            source=Source(data["source"]),
            issued_at=issued,
            rank=int(data["rank"]),
            status=TicketStatus(data["status"]),
            window=data.get("window"),
            staff=data.get("staff"),
            id_hash=data.get("id_hash"),
            called_count=int(data.get("called_count", 0)),
            recalls=int(data.get("recalls", 0)),
            called_at=when("called_at"),
            serving_at=when("serving_at"),
            ended_at=when("ended_at"),
            undated=bool(data.get("undated", False)),
            rating=data.get("rating"),
            granted_by=data.get("granted_by"),
            appointment=data.get("appointment"),
            token=data.get("token"),
            turn_near=bool(data.get("turn_near", False)),
        )

    def public(self) -> JSON:
        """The ticket as shown to screens, the API and central: ``to_json`` without the
        identity hash, the rank, ``undated``, the status-page token and ``turn_near``."""
        return {
            "id": self.id,
            "day": self.day.isoformat(),
            "number": self.number,
            "service": self.service,
            "issued_service": self.issued_service,
            "priority": self.priority,
            "source": self.source,
            "issued_at": self.issued_at.isoformat(),
            "status": self.status,
            "window": self.window,
            "staff": self.staff,
            "called_count": self.called_count,
            "recalls": self.recalls,
            "called_at": _iso(self.called_at),
            "serving_at": _iso(self.serving_at),
            "ended_at": _iso(self.ended_at),
            "rating": self.rating,
            "granted_by": self.granted_by,
            "appointment": self.appointment,
        }


# What Ticket.public() leaves out of Ticket.to_json().
PRIVATE_TICKET_FIELDS = frozenset({"id_hash", "rank", "undated", "token", "turn_near"})


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# Staff signed in at one window at once (A serving and B assisting, two sharing a shift).
MAX_STAFF_PER_WINDOW = 2


@dataclasses.dataclass(slots=True)
class WindowStatus:
    id: str
    state: WindowState = WindowState.CLOSED
    # Who serves: the first staff member signed in; a press without a name is theirs.
    staff: str | None = None
    staff_name: str | None = None
    current: str | None = None
    # The rating the window's rater waits for: ticket, staff, when it was asked.
    rating: JSON | None = None
    # Who else is signed in here ({"staff", "name"}), in the order they signed in.
    others: list[JSON] = dataclasses.field(default_factory=list)

    def signed_in(self) -> list[str]:
        """Every staff number signed in here, the one who serves first."""
        first = [] if self.staff is None else [self.staff]
        return first + [str(o["staff"]) for o in self.others]

    def name_of(self, staff: str | None) -> str | None:
        if staff is not None and staff == self.staff:
            return self.staff_name
        found = next((o for o in self.others if o["staff"] == staff), None)
        return None if found is None else found.get("name")

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "state": self.state,
            "staff": self.staff,
            "staff_name": self.staff_name,
            "current": self.current,
            "rating": None if self.rating is None else copy.deepcopy(self.rating),
            "others": [dict(o) for o in self.others],
        }

    @classmethod
    def from_json(cls, data: JSON) -> WindowStatus:
        return cls(
            id=data["id"],
            state=WindowState(data["state"]),
            staff=data.get("staff"),
            staff_name=data.get("staff_name"),
            current=data.get("current"),
            rating=data.get("rating"),
            others=[
                {"staff": str(o["staff"]), "name": o.get("name")} for o in data.get("others") or []
            ],
        )


@dataclasses.dataclass(slots=True)
class HallCounters:
    """Hall-wide state that is not a ticket or a window."""

    day: dt.date
    next_rank: int = 1
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    durations: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> JSON:
        return {
            "day": self.day.isoformat(),
            "next_rank": self.next_rank,
            "counters": dict(self.counters),
            "durations": {k: list(v) for k, v in self.durations.items()},
        }

    @classmethod
    def from_json(cls, data: JSON) -> HallCounters:
        return cls(
            day=dt.date.fromisoformat(data["day"]),
            next_rank=int(data["next_rank"]),
            counters={k: int(v) for k, v in data["counters"].items()},
            durations={k: [float(x) for x in v] for k, v in data["durations"].items()},
        )


# Every event type the hall emits: the contract documents (hallctl/asyncapi.py) are
# generated from this list, and an event of another type cannot be made.
def business_day(now: dt.datetime, config: HallAgentConfig) -> dt.date:
    """The business day ``now`` belongs to, in the hall's zone, starting at its start hour."""
    local = now.astimezone(config.hall.zone)
    return (local - dt.timedelta(hours=config.hall.day_start_hour)).date()
