"""The one path a ticket is issued by: gate on the printer → take → the print's outcome.

The local API (and so the kiosk page), buttons and the QR scanner, the ID card at the
kiosk, central's ``issue_ticket`` and the demo all issue through :class:`Issuing`, so a
ticket that would be printed is refused while the printer cannot print, whoever asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.core import wording
from agent.core.engine import Outcome
from agent.core.errors import Refused
from agent.core.operations import Take
from agent.features.ticket_text import ticket_status_url
from agent.runtime.hall import Hall, Recorder

if TYPE_CHECKING:
    from agent.features.printing import TicketPrinting


# What the kiosk shows while the state database refuses writes (the disk is full or failing).
STORE_FAILING = wording.STORE_UNAVAILABLE
# What staff read about it (the API's message, /api/v1/issuing's reason).
STORE_FAILING_DETAIL = (
    "the state database refuses writes (the disk is full or failing); no ticket is issued "
    "until a write succeeds again: see /healthz and the log"
)
# The same when the last refused write found the disk full (whichever write found it).
DISK_FULL_DETAIL = (
    "the state disk is full; the operation was not done; no ticket is issued until a write "
    "succeeds again: the agent evicts outbox events to make room (see /healthz and "
    "docs/operations.md, 'disk full')"
)
# After a failed write, issuing stays off this long; then one take is let through as a
# probe (it succeeds once the disk has room again, and that re-enables issuing).
STORE_RETRY_S = 10.0


class StoreUnavailable(Refused):
    """No ticket is issued while the hall cannot save one: the kiosk says so at once."""

    code = "store_unavailable"

    def __init__(self, message: str = STORE_FAILING_DETAIL) -> None:
        super().__init__(message, citizen=STORE_FAILING)


class DiskFull(StoreUnavailable):
    """The same refusal, when the last write the store refused found the disk full: staff
    read the cause in the answer itself (503 ``disk_full``, like the write that found it)."""

    code = "disk_full"

    def __init__(self, message: str = DISK_FULL_DETAIL) -> None:
        super().__init__(message)


class Issuing:
    """Issues tickets through the hall's writer, gated by the store and the ticket printer."""

    def __init__(
        self,
        hall: Hall,
        printing: TicketPrinting | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hall = hall
        self.printing = printing
        self._clock = clock

    def _store_failing(self) -> bool:
        writes = self.hall.writes
        if writes.failing_since is None or writes.last_failed_at is None:
            return False
        return self._clock() - writes.last_failed_at < STORE_RETRY_S

    def check(self, source: str) -> None:
        """Refuse a ticket from ``source`` while writes fail (StoreUnavailable) or the
        printer cannot print it (IssuingRefused)."""
        if self._store_failing():
            # The kiosk shows the citizen text; the cause is in /healthz and the log.
            raise DiskFull() if self.hall.writes.last_was_disk_full else StoreUnavailable()
        if self.printing is not None:
            self.printing.check_issuing(source)

    def state(self) -> dict[str, Any]:
        """Whether the kiosk may issue now: ``reason`` says why not for staff, ``citizen``
        what the kiosk shows."""
        if self.printing is None:
            state: dict[str, Any] = {
                "issuing": {"enabled": True, "reason": None, "citizen": None},
                "printer": None,
            }
        else:
            state = self.printing.state()
        if self._store_failing():
            full = self.hall.writes.last_was_disk_full
            state["issuing"] = {
                "enabled": False,
                "reason": DISK_FULL_DETAIL if full else STORE_FAILING_DETAIL,
                "citizen": STORE_FAILING,
            }
        return state

    async def take(
        self,
        operation: Take,
        *,
        wait_for_print: bool = False,
        record: Recorder | None = None,
    ) -> Outcome:
        """Issue one ticket; with ``wait_for_print``, ``result.print`` says how its print
        went (printed, failed: show the number on screen, or pending)."""
        self.check(operation.source)
        outcome = await self.hall.execute(operation, record=record)
        printing = self.printing
        if (
            wait_for_print
            and printing is not None
            and printing.prints(operation.source)
            and outcome.ticket is not None
        ):
            outcome.result["print"] = await printing.outcome(outcome.ticket.id)
        if outcome.ticket is not None:  # the kiosk can show it when the print failed
            link = ticket_status_url(self.hall.config, outcome.ticket)
            if link is not None:
                outcome.result["status_url"] = link
        return outcome
