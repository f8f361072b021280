"""The one path a ticket is issued by: gate on the printer → take → the print's outcome.

The local API (and so the kiosk page), buttons and the QR scanner, the ID card at the
kiosk, central's ``issue_ticket`` and the demo all issue through :class:`Issuing`, so a
ticket that would be printed is refused while the printer cannot print, whoever asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.core.engine import Outcome
from agent.core.operations import Take
from agent.runtime.hall import Hall, Recorder

if TYPE_CHECKING:
    from agent.features.printing import TicketPrinting


class Issuing:
    """Issues tickets through the hall's writer, gated by the ticket printer (if any)."""

    def __init__(self, hall: Hall, printing: TicketPrinting | None = None) -> None:
        self.hall = hall
        self.printing = printing

    def check(self, source: str) -> None:
        """Refuse (IssuingRefused) a ticket from ``source`` the printer cannot print."""
        if self.printing is not None:
            self.printing.check_issuing(source)

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
        return outcome
