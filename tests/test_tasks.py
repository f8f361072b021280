"""A component's background tasks (agent/runtime/tasks.py): leaving waits for them, a crash
is raised instead of lost, and what ends the component's ``async with`` goes on unwrapped."""

from __future__ import annotations

import asyncio

import pytest

from agent.runtime.tasks import BackgroundTasks, stop


class Crash(Exception):
    pass


async def test_leaving_waits_for_every_task() -> None:
    done: list[str] = []

    async def job(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        done.append(name)

    async with BackgroundTasks() as tasks:
        tasks.create_task(job("slow", 0.05), name="slow")
        tasks.create_task(job("fast", 0.0), name="fast")
    assert sorted(done) == ["fast", "slow"]


async def test_cancel_and_stop_all_end_the_loops() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async with BackgroundTasks() as tasks:
        loops = [tasks.create_task(forever(), name=f"loop-{i}") for i in range(3)]
        await asyncio.sleep(0)
        await tasks.stop_all()
        assert all(loop.cancelled() for loop in loops)
        again = tasks.create_task(forever(), name="again")
        tasks.cancel()
    assert again.cancelled()


async def test_a_crashed_task_cancels_the_others_and_is_raised_on_leaving() -> None:
    sibling_cancelled = asyncio.Event()

    async def sibling() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    async def crash() -> None:
        await asyncio.sleep(0.01)
        raise Crash("the loop broke")

    with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012 - the body is what is cancelled
        async with BackgroundTasks() as tasks:
            tasks.create_task(sibling(), name="sibling")
            tasks.create_task(crash(), name="crash")
            await asyncio.sleep(10)  # the task that entered the group is cancelled
    assert [type(e) for e in caught.value.exceptions] == [Crash]
    assert sibling_cancelled.is_set()


async def test_what_ends_the_body_goes_on_unwrapped_and_cancels_the_tasks() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Crash, match="from the body"):  # noqa: PT012
        async with BackgroundTasks() as tasks:
            loop = tasks.create_task(forever(), name="loop")
            await asyncio.sleep(0)
            raise Crash("from the body")
    assert loop.cancelled()


async def test_an_outside_cancellation_goes_on_as_one() -> None:
    entered = asyncio.Event()

    async def component() -> None:
        async with BackgroundTasks() as tasks:
            tasks.create_task(asyncio.Event().wait(), name="loop")
            entered.set()
            await asyncio.Event().wait()

    runner = asyncio.create_task(component())
    await entered.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_stop_ends_one_task_and_leaves_its_error_to_the_group() -> None:
    async def crash_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise Crash("while stopping") from None

    task = asyncio.create_task(crash_on_cancel(), name="crashes")
    await asyncio.sleep(0)
    await stop(task)  # ended, and its error not raised here
    assert task.done()
    assert isinstance(task.exception(), Crash)
    await stop(None)
