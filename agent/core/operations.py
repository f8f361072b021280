"""Every operation on the hall's queue, as data: one frozen dataclass per operation.

The local API, central commands, keypads, evdev buttons, the kiosk and the web caller only
build an operation and hand it to the hall's writer (``Hall.execute``); the engine applies
it in one ``match`` (:meth:`agent.core.engine.QueueEngine.apply`). Operations can be
logged and stored as data (:func:`describe`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from agent.core.model import Priority, Source


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CardRead:
    """An ID card read, as its ``identity.read`` event carries it: ``personal`` is the
    personal part already in its stored form (sealed, masked or a hash: agent.runtime.personal).
    """

    device: str
    personal: dict[str, Any]
    appointment: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Take:
    """Issue a ticket for a service (with ``card``, the card's ``identity.read`` is saved in
    the same transaction). ``granted_by`` says who granted a priority: ``"self"`` (the
    citizen at the kiosk, 绿色通道 by touch) or the guide's staff number; ``appointment``
    is the appointment checked in at the guide desk (one ticket per appointment a day)."""

    service: str
    source: Source = Source.API
    priority: Priority = Priority.NORMAL
    granted_by: str | None = None
    appointment: str | None = None
    id_hash: str | None = None
    birth_date: dt.date | None = None
    card: CardRead | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CardAtWindow:
    """An ID card read at a window: its ``identity.read`` names the window's ticket and staff."""

    window: str
    card: CardRead


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    number: str
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallNext:
    """Finish the window's current ticket, if any, and call the next one."""

    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallNumber:
    """Call a ticket by its number (a waiting one, a missed one, one held here)."""

    window: str
    number: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallDigits:
    """A keypad's call by number: the digits without the service prefix (a full number,
    as a page can type it, is taken as it is)."""

    window: str
    digits: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallBack:
    """Call back the oldest ticket held at the window."""

    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recall:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StartServing:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NoShow:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """Send the window's current ticket to another service's queue."""

    window: str
    service: str
    position: Literal["front", "back"] = "front"
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TransferToPosition:
    """A keypad's transfer: the service by its place in the config's list (1, 2, ...)."""

    window: str
    position: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    window: str
    reason: str = ""
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    window: str
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TogglePause:
    """A caller's pause key: pause an open window, resume a paused one."""

    window: str
    reason: str = "caller"
    # Who pressed: staff signed in at the window (None: the one serving there).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SignIn:
    window: str
    staff: str
    name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SignOut:
    window: str
    # Who signs out (None: everyone signed in there; the window closes).
    staff: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RequestRating:
    """Invite the citizen at the window to rate (好差评)."""

    window: str
    ticket_number: str | None = None
    trigger: str = "request"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """The citizen's rating of the ticket the window's rater waits for."""

    window: str
    level: int
    reasons: tuple[str, ...] = ()
    comment: str = ""
    channel: str = "api"
    device: str | None = None
    ticket_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RatingTimeout:
    """The citizen did not rate in time (``pressed_level``: a bad key without a reason)."""

    window: str
    ticket_id: str
    pressed_level: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Run the time-driven rules (the business-day rollover)."""


# The operations that need nothing but the window.
WindowOperation = (
    CallNext | CallBack | Recall | StartServing | Finish | NoShow | Hold | Resume | SignOut
)

Operation = (
    Take
    | Cancel
    | CallNext
    | CallNumber
    | CallDigits
    | CallBack
    | Recall
    | StartServing
    | Finish
    | NoShow
    | Hold
    | Transfer
    | TransferToPosition
    | Pause
    | Resume
    | TogglePause
    | SignIn
    | SignOut
    | RequestRating
    | Rate
    | RatingTimeout
    | CardAtWindow
    | Tick
)


# Fields that carry personal data from an ID card: never in a log line.
PERSONAL_FIELDS = frozenset({"card", "id_hash", "birth_date"})


def describe(op: Operation) -> dict[str, object]:
    """The operation as data, for a log line or a record; personal fields are masked."""
    fields: dict[str, object] = {}
    for f in dataclasses.fields(op):
        value = getattr(op, f.name)
        if value is None:
            continue
        fields[f.name] = "***" if f.name in PERSONAL_FIELDS else value
    return {"op": type(op).__name__, **fields}
