"""systemd integration: readiness, status, watchdog and stopping, over ``$NOTIFY_SOCKET``.

The protocol is a few ``KEY=value`` lines in one datagram to a unix socket (see
sd_notify(3)); written here in a few lines rather than pulling in a library for it. Outside
systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the agent runs the same by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable

from agent.runtime.tasks import BackgroundTasks

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to the service manager, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._failed = False
        self.watchdog_s = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when there is nobody to tell."""
        if not self._address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.connect(self._address)
            self._socket.sendall("\n".join(fields).encode("utf-8"))
        except OSError as err:
            self.close()
            if not self._failed:
                # Once per failure: the watchdog calls this every few seconds.
                log.warning(
                    "cannot notify systemd at %s (%s); if the unit has WatchdogSec it will "
                    "restart the agent",
                    self._address.replace("\0", "@"),
                    err,
                )
            self._failed = True
            return False
        if self._failed:
            log.info("notifying systemd works again")
            self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def extend_start(self, seconds: float) -> bool:
        """Ask for more start-up time (while waiting for something, e.g. disk space)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_seconds(env: dict[str, str] | os._Environ[str]) -> float | None:
    """The watchdog period systemd expects pings within, if it is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog_loop(
    notifier: Notifier,
    alive: Callable[[], float | None],
    *,
    period_s: float,
) -> None:
    """Ping the watchdog while the agent is alive.

    Runs on the event loop, so a blocked loop stops the pings. ``alive()`` returns how
    long the hall's writer has left a question unanswered (None: none is waiting); once
    that is half the watchdog period the pings stop too, and systemd restarts an agent
    whose writer is stuck.
    """
    interval = period_s / 4
    stuck = False
    while True:
        silent_for = alive()
        if silent_for is None or silent_for < period_s / 2:
            notifier.watchdog()
            if stuck:
                log.info("the queue writer answers again; watchdog pings resumed")
            stuck = False
        elif not stuck:
            log.error(
                "the queue writer has not answered for %.0f s; watchdog pings stopped, so "
                "systemd restarts the agent unless it recovers within %.0f s",
                silent_for,
                period_s,
            )
            stuck = True
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def supervised(
    notifier: Notifier, alive: Callable[[], float | None], ready_status: str
) -> AsyncIterator[None]:
    """READY=1 on entry, watchdog pings while inside, STOPPING=1 on exit."""
    notifier.ready(ready_status)
    async with BackgroundTasks() as tasks:
        if notifier.enabled and notifier.watchdog_s is not None:
            log.info("systemd watchdog: pinging every %.1f s", notifier.watchdog_s / 4)
            tasks.create_task(
                watchdog_loop(notifier, alive, period_s=notifier.watchdog_s), name="watchdog"
            )
        try:
            yield
        finally:
            notifier.stopping()
            tasks.cancel()
