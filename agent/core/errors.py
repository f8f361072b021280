"""What the hall's rules refuse. The message is written for the person who asked.

A refusal a citizen can meet (taking a ticket) also carries ``citizen_message``: plain
Chinese without device addresses or technical causes (``agent/core/wording.py``); the
``message`` keeps the cause for staff, the log and the API.

Which HTTP status a refusal gets is decided in ``agent/web/`` only; ``code`` is the stable
machine-readable name of the refusal (the API's ``error`` field, central's replies).
"""

from __future__ import annotations

from agent.errors import HallAgentError

__all__ = ["HallAgentError", "NotFound", "QueueError", "Refused"]


class QueueError(HallAgentError):
    """An operation the hall's rules refuse. The message is for the person who asked."""

    code = "refused"

    def __init__(self, message: str, *, citizen: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # What a citizen is shown (the kiosk); None: a refusal only staff meet.
        self.citizen_message = citizen


class NotFound(QueueError):
    """The window, service or ticket asked for does not exist."""

    code = "not_found"


class Refused(QueueError):
    """A rule of the hall says no (closed, cap reached, wrong state, ...)."""


class Unauthorized(QueueError):
    """No credential, or one that opens nothing (unknown, revoked, expired)."""

    code = "unauthorized"


class Forbidden(QueueError):
    """A valid credential whose role (or window) may not do this."""

    code = "forbidden"


class LockedOut(QueueError):
    """A login refused because of repeated failures; it opens again after a while."""

    code = "locked_out"
