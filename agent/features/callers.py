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

from agent.core.engine import Outcome, QueueEngine, QueueError, Refused, TicketStatus, WindowState
from agent.features.staff import sign_in_by_key_code
from agent.runtime.hall import Hall
from protocols.keypad import CallerAction, CallerCommand

log = logging.getLogger(__name__)

Op = Callable[[QueueEngine, dt.datetime], Outcome]


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
    ) -> None:
        self.hall = hall
        window_s = hall.config.callers.debounce_s if debounce_s is None else debounce_s
        self.debouncer = Debouncer(window_s, clock)
        self.repeats = 0
        # The window's document capture (agent/features/documents.py), when the hall has cameras.
        self.capture: Callable[[str, int], Awaitable[dict[str, Any]]] | None = None

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
        op = operation(window_id, command)
        outcome: Outcome = await self.hall.execute(op)
        return outcome


def operation(window_id: str, command: CallerCommand) -> Op:
    """The queue operation a caller command asks for (sign-in aside: it needs the roster)."""
    arg = command.argument
    match command.action:
        case CallerAction.NEXT:
            return lambda e, n: e.call_next(window_id, n)
        case CallerAction.CALL_NUMBER:
            return lambda e, n: e.call_number(window_id, _number_for_digits(e, window_id, arg), n)
        case CallerAction.RECALL:
            return lambda e, n: e.recall(window_id, n)
        case CallerAction.SERVING:
            return lambda e, n: e.start_serving(window_id, n)
        case CallerAction.FINISH:
            return lambda e, n: e.finish(window_id, n)
        case CallerAction.NO_SHOW:
            return lambda e, n: e.no_show(window_id, n)
        case CallerAction.HOLD:
            return lambda e, n: e.hold(window_id, n)
        case CallerAction.CALL_BACK:
            return lambda e, n: e.call_number(window_id, _held_ticket(e, window_id), n)
        case CallerAction.TRANSFER:
            return lambda e, n: e.transfer(window_id, _service_by_position(e, arg), n)
        case CallerAction.PAUSE:
            return lambda e, n: _toggle_pause(e, window_id, n)
        case CallerAction.REQUEST_RATING:
            return lambda e, n: e.request_rating(window_id, n, trigger="caller")
        case CallerAction.SIGN_OUT:
            return lambda e, n: e.sign_out(window_id, n)
        case CallerAction.SIGN_IN:
            raise ValueError("sign-in needs the roster: use CallerDesk.act")
        case CallerAction.CAPTURE:
            raise ValueError("a capture is not a queue operation: use CallerDesk.act")


def _toggle_pause(engine: QueueEngine, window_id: str, now: dt.datetime) -> Outcome:
    status = engine.windows.get(window_id)
    if status is not None and status.state is WindowState.PAUSED:
        return engine.resume(window_id, now)
    return engine.pause(window_id, now, reason="caller")


def _held_ticket(engine: QueueEngine, window_id: str) -> str:
    held = engine.held(window_id)
    if not held:
        raise Refused(f"window {window_id} holds no ticket to call back")
    return held[0].number


def _service_by_position(engine: QueueEngine, digits: str) -> str:
    services = engine.config.services
    position = int(digits) if digits.isdigit() else 0
    if not 1 <= position <= len(services):
        listed = ", ".join(f"{i} {s.name}" for i, s in enumerate(services, 1))
        raise Refused(f"no service {digits} to transfer to; the services are {listed}")
    return services[position - 1].id


def _number_for_digits(engine: QueueEngine, window_id: str, digits: str) -> str:
    """The ticket a keypad means by its digits: today's callable ticket of a service this
    window serves whose number is those digits (a keypad cannot type the prefix). A full
    number (a page can type it) is taken as it is."""
    if not digits.isdigit():
        return digits.strip().upper()
    wanted = int(digits)
    config = engine.config.window(window_id)
    callable_states = (TicketStatus.WAITING, TicketStatus.NO_SHOW, TicketStatus.HELD)
    matches = sorted(
        t.number
        for t in engine.tickets.values()
        if t.day == engine.hall.day
        and t.service in config.services
        and t.status in callable_states
        and int("".join(ch for ch in t.number if ch.isdigit()) or -1) == wanted
    )
    if not matches:
        raise Refused(f"no ticket numbered {digits} waits for window {window_id}")
    if len(matches) > 1:
        raise Refused(
            f"{digits} could be {', '.join(matches)}; call it by its full number from the "
            "web caller page"
        )
    return matches[0]
