"""A long-lived component's background tasks, in an :class:`asyncio.TaskGroup` it owns.

A component (an async context manager) enters its :class:`BackgroundTasks` in
``__aenter__``, usually on its :class:`contextlib.AsyncExitStack`, starts its loops in it,
and in ``__aexit__`` asks them to stop (or cancels them) before leaving it. Leaving waits
for every task, so nothing outlives the component. As in any task group, a task that raises
cancels the others and the task that entered the group, and its error is raised when the
group is left: a crashed loop stops the agent (systemd starts it again) instead of being
lost. A loop therefore handles the errors it expects (a device gone, a full disk) itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """An :class:`asyncio.TaskGroup` for one component's loops and jobs.

    Leaving waits for every task, as a task group does; call :meth:`cancel` first for the
    tasks that do not end by themselves. Unlike ``async with asyncio.TaskGroup()``, an
    exception that leaves through the group (a start-up step that failed after it was
    entered, or whatever ended the component's ``async with``) cancels the tasks and goes
    on unchanged, not wrapped in an exception group.
    """

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()
        self._running: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.cancel()
        # The group is not handed ``exc``: it would wrap it in an exception group. It
        # raises only what its own tasks raised.
        await self._group.__aexit__(None, None, None)

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task of the group."""
        task = self._group.create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def cancel(self) -> None:
        """Cancel every task still running (leaving the group then waits for them)."""
        for task in list(self._running):
            task.cancel()

    async def stop_all(self) -> None:
        """Cancel every task still running and wait until they have ended. What they
        raised is reported when the group is left."""
        self.cancel()
        if self._running:
            await asyncio.wait(list(self._running))


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel one task of a group and wait until it has ended. What it raised is left for
    its group to report when the group is left."""
    if task is not None:
        task.cancel()
        await asyncio.wait([task])
