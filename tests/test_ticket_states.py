"""The status pages' rows, made again only for the tickets a commit changed
(``agent.web.ticket_page.TicketStates``), against every row made again from the committed
state (``ticket_states``) after each commit of a busy day and across the day's end."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path

from agent.config import HallAgentConfig
from agent.core.errors import QueueError
from agent.core.operations import CallNext, Cancel, Finish, NoShow, Operation, SignIn, Take
from agent.runtime.hall import Hall
from agent.runtime.store import Store
from agent.web.ticket_page import TicketBoard, TicketStates, ticket_states


def _same(a: TicketBoard, b: TicketBoard) -> bool:
    return dict(a.rows) == dict(b.rows) and dict(a.places) == dict(b.places)


async def test_rows_kept_between_commits_equal_rows_made_again(
    config: HallAgentConfig, tmp_path: Path, clock: Callable[[], dt.datetime]
) -> None:
    states = TicketStates()
    store = Store.open(tmp_path / "state")
    services = [s.id for s in config.services]
    windows = [w.id for w in config.windows]
    operations: list[Operation] = [SignIn(window=w, staff=f"s-{w}") for w in windows]
    for k in range(40):
        operations.append(Take(service=services[k % len(services)]))
        if k % 3 == 2:
            operations.append(CallNext(window=windows[k % len(windows)]))
        if k % 5 == 4:
            operations.append(Finish(window=windows[(k + 1) % len(windows)]))
        if k % 7 == 6:
            operations.append(NoShow(window=windows[(k + 2) % len(windows)]))
    try:
        async with Hall(config, store, clock=clock) as hall:
            boards = []
            for operation in operations:
                with contextlib.suppress(QueueError):  # nothing to call, nobody at a window
                    outcome = await hall.execute(operation)
                    if isinstance(operation, Take) and operation.service == services[0]:
                        number = outcome.result["ticket"]["number"]
                        with contextlib.suppress(QueueError):
                            await hall.execute(Cancel(number=number))
                kept, made = await hall.read(states), await hall.read(ticket_states)
                assert _same(kept, made)
                boards.append((kept, dict(kept.rows)))
            assert len(kept.rows) == 40
            assert any(r.status.value == "waiting" for r in kept.rows.values())
            # A board handed out before is not changed by the rebuilds after it.
            assert all(dict(board.rows) == rows for board, rows in boards)
            # The next business day: the closed tickets leave, the rows follow.
            clock.now += dt.timedelta(days=1)  # type: ignore[attr-defined]
            await hall.tick()
            kept, made = await hall.read(states), await hall.read(ticket_states)
            assert _same(kept, made)
            assert len(kept.rows) < len(boards[-1][1])
    finally:
        store.close()
