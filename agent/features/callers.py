"""Window callers: what staff press, on any keypad or page, becomes one queue operation.

Every caller — a keypad on the bus, an evdev keypad, the web caller page — hands its
command to the :class:`CallerDesk`. The desk drops a repeat of the same command at the
same window within ``callers.debounce_s`` (a double press, a keypad that sent its frame
again because it missed the acknowledgement): a double "next" must not skip a citizen.
It then runs the operation through the hall's single writer, so two windows pressing
"next" at the same instant never get the same ticket.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from agent.core import operations as op
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError
from agent.core.operations import Operation
from agent.features.staff import sign_in_by_key_code
from agent.runtime.hall import Hall
from protocols.keypad import CallerAction, CallerCommand

log = logging.getLogger(__name__)

# The window's document capture (agent/features/documents.py): window, pages -> result.
Capture = Callable[[str, int], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True, slots=True)
class CallerAnswer:
    """What a press did, for the device that sent it (show a number, or beep)."""

    command: CallerCommand
    done: bool  # the operation ran (False: refused, or a repeat that was dropped)
    repeat: bool = False  # dropped as a double press
    message: str = ""
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    current: str | None = None  # the ticket the window now has, for its display


class Debouncer:
    """A press that repeats the one just before it, at the same window (or rater), within
    ``window_s`` of it, is that press again. Another press in between ends the repeat:
    next, recall, next is three presses however quick."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: dict[Hashable, tuple[Hashable, float]] = {}

    def accept(self, scope: Hashable, press: Hashable) -> bool:
        """True for a press, False for a repeat of the last one in ``scope``."""
        now = self._clock()
        last = self._last.get(scope)
        if last is not None and last[0] == press and now - last[1] < self.window_s:
            return False
        self._last[scope] = (press, now)
        return True


class CallerDesk:
    """Runs callers' commands at the windows."""

    def __init__(
        self,
        hall: Hall,
        *,
        debounce_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        capture: Capture | None = None,
    ) -> None:
        self.hall = hall
        window_s = hall.config.callers.debounce_s if debounce_s is None else debounce_s
        self.debouncer = Debouncer(window_s, clock)
        self.repeats = 0
        # The window's document capture, when the hall has cameras.
        self.capture = capture

    async def act(self, window_id: str, command: CallerCommand, *, source: str) -> CallerAnswer:
        """Run one press; refusals are answers (the device beeps), not exceptions."""
        if not self.debouncer.accept(window_id, command):
            self.repeats += 1
            log.info(
                "window %s: %s from %s again within %.1f s: one press",
                window_id,
                command.action.value,
                source,
                self.debouncer.window_s,
            )
            return CallerAnswer(command, done=False, repeat=True, message="repeated press")
        if command.action is CallerAction.CAPTURE:
            return await self._capture(window_id, command)
        try:
            outcome = await self._run(window_id, command)
        except QueueError as err:
            log.info("window %s: %s refused: %s", window_id, command.action.value, err.message)
            current = await self.current(window_id)
            return CallerAnswer(command, done=False, message=err.message, current=current)
        current = await self.current(window_id)
        message = str(outcome.result.get("message", ""))
        return CallerAnswer(command, True, message=message, result=outcome.result, current=current)

    async def _capture(self, window_id: str, command: CallerCommand) -> CallerAnswer:
        current = await self.current(window_id)
        if self.capture is None:
            message = "this hall has no document camera"
            return CallerAnswer(command, done=False, message=message, current=current)
        try:
            result = await self.capture(window_id, 1)
        except QueueError as err:
            log.info("window %s: capture refused: %s", window_id, err.message)
            return CallerAnswer(command, done=False, message=err.message, current=current)
        return CallerAnswer(command, True, message="captured", result=result, current=current)

    async def current(self, window_id: str) -> str | None:
        """The number of the ticket the window has now (None when it has none)."""

        def read(engine: QueueEngine, _: dt.datetime) -> str | None:
            status = engine.windows.get(window_id)
            ticket = None if status is None or status.current is None else status.current
            return None if ticket is None else engine.tickets[ticket].number

        try:
            return await self.hall.read(read)
        except QueueError:
            return None

    async def _run(self, window_id: str, command: CallerCommand) -> Outcome:
        if command.action is CallerAction.SIGN_IN:
            return await sign_in_by_key_code(self.hall, window_id, command.argument)
        return await self.hall.execute(operation(window_id, command))


# The keys that name an operation on the window alone.
_WINDOW_OPERATIONS: dict[CallerAction, type[op.WindowOperation]] = {
    CallerAction.NEXT: op.CallNext,
    CallerAction.RECALL: op.Recall,
    CallerAction.SERVING: op.StartServing,
    CallerAction.FINISH: op.Finish,
    CallerAction.NO_SHOW: op.NoShow,
    CallerAction.HOLD: op.Hold,
    CallerAction.CALL_BACK: op.CallBack,
    CallerAction.SIGN_OUT: op.SignOut,
}


def operation(window_id: str, command: CallerCommand) -> Operation:
    """The queue operation a caller command asks for (sign-in aside: it needs the roster)."""
    simple = _WINDOW_OPERATIONS.get(command.action)
    if simple is not None:
        return simple(window=window_id)
    match command.action:
        case CallerAction.CALL_NUMBER:
            return op.CallDigits(window=window_id, digits=command.argument)
        case CallerAction.TRANSFER:
            return op.TransferToPosition(window=window_id, position=command.argument)
        case CallerAction.PAUSE:
            return op.TogglePause(window=window_id, reason="caller")
        case CallerAction.REQUEST_RATING:
            return op.RequestRating(window=window_id, trigger="caller")
    raise ValueError(f"{command.action.value} is not a queue operation: use CallerDesk.act")
