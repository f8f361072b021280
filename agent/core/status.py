"""The one table of ticket status moves (h11's ``_state.py`` is the model).

Every change of a ticket's status in the engine goes through :func:`move`, which checks
it against :data:`MOVES`; a move the table does not allow is refused with a message that
names the ticket, its status and the move.
"""

from __future__ import annotations

import enum

from agent.core.errors import Refused
from agent.core.model import Ticket, TicketStatus

W, C, S, H = TicketStatus.WAITING, TicketStatus.CALLED, TicketStatus.SERVING, TicketStatus.HELD


class Move(enum.StrEnum):
    CALL = "call"  # to a window (a waiting ticket, a no-show that came back, a held one)
    RECALL = "recall"  # call again, same window
    SERVE = "serve"
    FINISH = "finish"
    NO_SHOW = "no_show"
    HOLD = "hold"  # parked at its window; called back by number
    TRANSFER = "transfer"  # back to waiting, in another service's queue
    CANCEL = "cancel"
    EXPIRE = "expire"  # the business day closed


# (status, move) -> the status after the move. Nothing else is allowed.
MOVES: dict[tuple[TicketStatus, Move], TicketStatus] = {
    (W, Move.CALL): C,
    (TicketStatus.NO_SHOW, Move.CALL): C,
    (H, Move.CALL): C,
    (C, Move.RECALL): C,
    (C, Move.SERVE): S,
    (C, Move.FINISH): TicketStatus.FINISHED,
    (S, Move.FINISH): TicketStatus.FINISHED,
    (C, Move.NO_SHOW): TicketStatus.NO_SHOW,
    (C, Move.HOLD): H,
    (S, Move.HOLD): H,
    (C, Move.TRANSFER): W,
    (S, Move.TRANSFER): W,
    (W, Move.CANCEL): TicketStatus.CANCELLED,
    **{(status, Move.EXPIRE): TicketStatus.EXPIRED for status in (W, C, S, H)},
}

# Every (from, to) pair a move can make.
TRANSITIONS: frozenset[tuple[TicketStatus, TicketStatus]] = frozenset(
    (before, after) for (before, _), after in MOVES.items()
)

# What a person is told when the table refuses a move ({number} is {status} ...).
_REFUSALS: dict[Move, str] = {
    Move.CALL: "ticket {number} is {status} and cannot be called",
    Move.RECALL: "ticket {number} is {status}; only a called ticket can be recalled",
    Move.SERVE: "ticket {number} is {status}, not called",
    Move.FINISH: "ticket {number} is {status}; nothing to finish",
    Move.NO_SHOW: "ticket {number} is {status}; only a called ticket can be a no-show",
    Move.HOLD: "ticket {number} is {status} and cannot be held",
    Move.TRANSFER: "ticket {number} is {status} and cannot be transferred",
    Move.CANCEL: "ticket {number} is {status}; only waiting tickets can be cancelled",
    Move.EXPIRE: "ticket {number} is {status} and cannot expire",
}


def allowed(ticket: Ticket, step: Move) -> bool:
    return (ticket.status, step) in MOVES


def check(ticket: Ticket, step: Move) -> TicketStatus:
    """The status ``step`` leads to; refused (naming ticket, status and move) if none."""
    after = MOVES.get((ticket.status, step))
    if after is None:
        raise Refused(_REFUSALS[step].format(number=ticket.number, status=ticket.status.value))
    return after


def move(ticket: Ticket, step: Move) -> None:
    """Apply ``step`` to ``ticket``'s status, as the table allows."""
    ticket.status = check(ticket, step)
