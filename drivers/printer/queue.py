"""The print queue: one job at a time, status checked before and after, health polled.

Jobs are printed in the order given. Before each job the printer is asked for its status:
a printer that cannot print (paper out, cover open) fails the job at once with the reason,
because a ticket that comes out minutes later at an unattended kiosk would be taken by
the wrong citizen. A lost connection is retried (reconnecting each time) a few times
within about a second and a half. After the bytes are sent the status is asked again, so
a roll that ran out in the middle of a ticket fails the job too.

Between jobs the status is polled every ``poll_interval_s``; every change of what the
printer can do is handed to ``on_health`` (the agent turns it into the device's state).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from drivers.printer.base import Printer, PrinterHealth, PrinterNotReady, PrinterUnavailable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class PrintJob:
    key: str  # what the caller waits on, e.g. the ticket id
    label: str  # for logs, e.g. "A012"
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class PrintResult:
    job: PrintJob
    printed: bool
    attempts: int
    reason: str = ""


class PrintQueue:
    """Prints jobs on one printer and watches its health. An async context manager."""

    def __init__(
        self,
        printer: Printer,
        *,
        poll_interval_s: float = 2.0,
        attempts: int = 3,
        retry_delay_s: float = 0.5,
        on_health: Callable[[PrinterHealth], None] | None = None,
    ) -> None:
        self.printer = printer
        self.poll_interval_s = poll_interval_s
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self._on_health = on_health
        self.health = PrinterHealth(connected=False, detail="not checked yet")
        self._jobs: asyncio.Queue[tuple[PrintJob, asyncio.Future[PrintResult]]] = asyncio.Queue()
        self._poll_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.printed = 0
        self.failed = 0

    async def __aenter__(self) -> PrintQueue:
        await self.check()
        self._tasks = [
            asyncio.create_task(self._work(), name="printer-jobs"),
            asyncio.create_task(self._poll(), name="printer-status"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._jobs.empty():
            job, done = self._jobs.get_nowait()
            if not done.done():
                done.set_result(PrintResult(job, False, 0, "the agent is stopping"))
        await self.printer.close()

    def submit(self, job: PrintJob) -> asyncio.Future[PrintResult]:
        """Queue a job; the future resolves once it is printed or has failed."""
        done: asyncio.Future[PrintResult] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, done))
        return done

    def poll_now(self) -> None:
        self._poll_now.set()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    # -- health ----------------------------------------------------------------------------

    async def check(self) -> PrinterHealth:
        """Ask the printer now and record the answer."""
        try:
            status = await self.printer.status()
        except PrinterUnavailable as err:
            self._set_health(PrinterHealth(connected=False, detail=str(err)))
        else:
            detail = "" if self.printer.reads_status else "status cannot be read on this transport"
            self._set_health(PrinterHealth(connected=True, status=status, detail=detail))
        return self.health

    def _set_health(self, health: PrinterHealth) -> None:
        old, self.health = self.health, health
        same = (old.connected, old.problems, old.warnings) == (
            health.connected,
            health.problems,
            health.warnings,
        )
        if same and old.detail == health.detail:
            return
        if health.can_print != old.can_print or not same:
            if health.can_print and not health.warnings:
                log.info("printer %s is ready", self.printer.endpoint)
            else:
                log.warning("printer %s: %s", self.printer.endpoint, health.reason())
        if self._on_health is not None and (not same or health.connected != old.connected):
            self._on_health(health)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._poll_now.wait()
            self._poll_now.clear()
            await self.check()

    # -- jobs --------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job, done = await self._jobs.get()
            result = await self._print(job)
            if result.printed:
                self.printed += 1
            else:
                self.failed += 1
                log.warning("ticket %s was not printed: %s", job.label, result.reason)
            if not done.done():
                done.set_result(result)

    async def _print(self, job: PrintJob) -> PrintResult:
        reason = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.retry_delay_s)
            try:
                await self._ready()
                await self.printer.send(job.data)
                await self._ready()
            except PrinterNotReady as err:
                return PrintResult(job, False, attempt, str(err))
            except PrinterUnavailable as err:
                self._set_health(PrinterHealth(connected=False, detail=str(err)))
                reason = f"the ticket printer cannot be reached (打印机未连接): {err}"
                continue
            return PrintResult(job, True, attempt)
        return PrintResult(job, False, self.attempts, reason)

    async def _ready(self) -> None:
        health = await self.check()
        if not health.connected:
            raise PrinterUnavailable(health.detail)
        if health.status is not None and not health.status.can_print:
            raise PrinterNotReady(health.status)
