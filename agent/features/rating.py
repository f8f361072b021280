"""The satisfaction rating (好差评) at the windows: raters invited, timed out, recorded.

The queue engine decides (agent/core/ratings.py): a rating opens when a ticket is finished or
staff (or central) request one, it is recorded once per ticket with its reasons, and the
timeout policy says what happens when the citizen does not rate. This desk does what
takes time and devices: it follows the committed ``rating.requested`` events, tells the
window's raters to invite the citizen (listeners), and closes a rating nobody gave after
``rating.timeout_s`` on the monotonic clock (again after a restart, for the ratings the
store says are still open).

Keypad raters have no text: a bad key (不满意, 非常不满意) makes the rater wait for a
second key, whose index picks the reason from ``rating.reasons``. If none comes in time,
nothing is recorded over the bad key — the timeout event says which key was pressed, so
central can follow it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from agent.central import contract as c
from agent.core import events as ev
from agent.core.engine import Outcome
from agent.core.errors import QueueError
from agent.core.model import RatingLevel
from agent.core.operations import Rate, RatingTimeout, RequestRating
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import StoredEvent, StoreError
from agent.runtime.tasks import BackgroundTasks

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RaterAnswer:
    """What a keypad rater's key did: recorded, waiting for a reason key, or refused."""

    recorded: bool
    needs_reason: bool = False
    message: str = ""
    rating: dict[str, Any] | None = None


class RatingDesk:
    """Times open ratings out and records what raters send. An async context manager."""

    def __init__(self, hall: Hall, *, timeout_s: float | None = None) -> None:
        self.hall = hall
        self.timeout_s = hall.config.rating.timeout_s if timeout_s is None else timeout_s
        self._timers: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        # A bad key pressed on a keypad rater, waiting for its reason key: window ->
        # (ticket id, level).
        self._pressed_bad: dict[str, tuple[str, int]] = {}
        self._tasks = BackgroundTasks()
        self._stack = contextlib.AsyncExitStack()
        self.timed_out = 0

    async def __aenter__(self) -> RatingDesk:
        events = await self._stack.enter_async_context(self.hall.events())
        open_ratings = await self.hall.read(
            lambda e, _: {w.id: str(w.rating["ticket_id"]) for w in e.windows.values() if w.rating}
        )
        self._tasks = await self._stack.enter_async_context(BackgroundTasks())
        for window_id, ticket_id in open_ratings.items():
            self._arm(window_id, ticket_id)  # a fresh full timeout after a restart
        self._tasks.create_task(self._follow(events), name="rating-events")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._tasks.cancel()  # the follower, and the timeouts being recorded
        await self._stack.aclose()

    # -- operations --------------------------------------------------------------------------

    async def request(
        self, window_id: str, *, ticket_number: str | None = None, trigger: str = "request"
    ) -> Outcome:
        operation = RequestRating(window=window_id, ticket_number=ticket_number, trigger=trigger)
        return await self.hall.execute(operation)

    async def request_command(self, command: c.RequestRating) -> dict[str, Any]:
        """Central's ``request_rating``: the window's current or last finished ticket."""
        outcome = await self.request(command.window, trigger="central")
        return outcome.result

    async def submit(
        self,
        window_id: str,
        level: int,
        *,
        reasons: Iterable[str] = (),
        comment: str = "",
        channel: str,
        device: str | None = None,
        ticket_id: str | None = None,
    ) -> Outcome:
        operation = Rate(
            window=window_id,
            level=level,
            reasons=tuple(reasons),
            comment=comment,
            channel=channel,
            device=device,
            ticket_id=ticket_id,
        )
        return await self.hall.execute(operation)

    async def keypad_key(
        self, window_id: str, device_id: str, level: int, index: int, *, channel: str
    ) -> RaterAnswer:
        """A keypad rater's key: its level, or after a bad key, the reason at ``index``."""
        open_rating = await self.hall.read(lambda e, _: e.windows[window_id].rating)
        if open_rating is None:
            return RaterAnswer(False, message=f"no rating is open at window {window_id}")
        ticket_id = str(open_rating["ticket_id"])
        bad = self._pressed_bad.get(window_id)
        if bad is not None and bad[0] == ticket_id:
            reasons = self.hall.config.rating.reasons
            if index >= len(reasons):
                return RaterAnswer(False, needs_reason=True, message="no reason on that key")
            level, chosen = bad[1], [reasons[index]]
        elif RatingLevel(level).is_bad:
            self._pressed_bad[window_id] = (ticket_id, level)
            return RaterAnswer(False, needs_reason=True, message="press the key of the reason")
        else:
            chosen = []
        try:
            outcome = await self.submit(
                window_id,
                level,
                reasons=chosen,
                channel=channel,
                device=device_id,
                ticket_id=ticket_id,
            )
        except QueueError as err:
            return RaterAnswer(False, message=err.message)
        self._pressed_bad.pop(window_id, None)
        return RaterAnswer(True, rating=outcome.result.get("rating"))

    # -- timers ------------------------------------------------------------------------------

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        while True:
            event = await events.get()
            match event.payload:
                case ev.RatingRequested(window=window_id, ticket_id=ticket_id):
                    self._arm(window_id, ticket_id)
                case (
                    ev.RatingSubmitted(window=window_id, ticket_id=ticket_id)
                    | ev.RatingTimedOut(window=window_id, ticket_id=ticket_id)
                ):
                    self._disarm(window_id, ticket_id)
                    bad = self._pressed_bad.get(window_id)
                    if bad is not None and bad[0] == ticket_id:
                        del self._pressed_bad[window_id]

    def _arm(self, window_id: str, ticket_id: str) -> None:
        self._disarm(window_id, None)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self.timeout_s, self._spawn_expiry, window_id, ticket_id)
        self._timers[window_id] = (ticket_id, handle)

    def _disarm(self, window_id: str, ticket_id: str | None) -> None:
        timer = self._timers.get(window_id)
        if timer is not None and (ticket_id is None or timer[0] == ticket_id):
            timer[1].cancel()
            del self._timers[window_id]

    def _spawn_expiry(self, window_id: str, ticket_id: str) -> None:
        self._timers.pop(window_id, None)
        self._tasks.create_task(self._expire(window_id, ticket_id), name="rating-timeout")

    async def _expire(self, window_id: str, ticket_id: str) -> None:
        bad = self._pressed_bad.get(window_id)
        pressed = bad[1] if bad is not None and bad[0] == ticket_id else None
        try:
            await self.hall.execute(
                RatingTimeout(window=window_id, ticket_id=ticket_id, pressed_level=pressed)
            )
        except (QueueError, ShuttingDown, StoreError) as err:
            log.warning("the rating at window %s could not be closed: %s", window_id, err)
            return
        self.timed_out += 1
