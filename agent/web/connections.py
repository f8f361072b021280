"""The local API's connections, bounded: a deadline for each request to arrive, and a
limit on how many are open, below the process's open-file limit.

uvicorn has an idle timeout between requests (``timeout_keep_alive``) and a limit on the
size of a request head (``h11_max_incomplete_event_size``), but nothing that closes a
connection that never finishes sending its request, and ``limit_concurrency`` counts idle
connections too: with it, a flood of idle connections gets the hall's own screens answered
503. So the agent serves HTTP with :class:`GuardedH11Protocol`, uvicorn's h11 protocol
with:

- a **header deadline**: a connection that has not sent a whole request head within
  ``web.header_timeout_s`` of opening (or of the first byte of its next request) is closed,
  with a 408 if it had sent part of one;
- a **body deadline**: a request whose body has not arrived within ``web.body_timeout_s`` of
  its head is closed;
- a **connection limit**: at ``web.max_connections`` open connections, a new one makes the
  agent close the oldest connection that is not in the middle of a request (one that has
  sent nothing yet, or is idle between requests); when every one is busy with a request,
  the new one is closed at once. Connections serving a request (the screens' event streams
  included) are never closed to make room.

The limit is kept :data:`~agent.config.system.FD_RESERVE` below the open-file limit, so the
agent never runs out of file descriptors because of connections (that is what filled the
log with asyncio's "socket.accept() out of system resource" tracebacks).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from agent.config.system import FD_RESERVE

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 32\r\n\r\nthe request took too long to come"
)
# Connections closed for want of a request, per minute, before a warning says so.
SLOW_CLIENTS_PER_MINUTE = 50
ACCEPT_FAILED = "socket.accept() out of system resource"
# asyncio accepts up to ``backlog`` connections in one turn of the loop, before any of them
# reaches the guard, and the guard's closing frees their descriptors a few turns later: a
# small backlog keeps that overshoot well inside FD_RESERVE (it is also the kernel's queue
# of connections waiting to be accepted, plenty for a hall's screens and tablets).
ACCEPT_BACKLOG = FD_RESERVE // 8


def connection_limit(wanted: int) -> int:
    """The connection limit this process can keep: ``wanted``, when the open-file limit
    leaves :data:`FD_RESERVE` descriptors besides; the soft limit is raised towards the
    hard one as needed (no privilege needed), and the connection limit lowered if even the
    hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError) as err:
                log.debug("could not raise the open-file limit to %d: %s", raised, err)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    limit = max(soft - FD_RESERVE, soft // 2)
    log.warning(
        "the open-file limit is %d (LimitNOFILE), too low for web.max_connections=%d and "
        "%d files besides; the local API keeps at most %d connections",
        soft,
        wanted,
        FD_RESERVE,
        limit,
    )
    return limit


class ConnectionGuard:
    """The open connections of one server, oldest first, and which of them wait for a
    request (those may be closed to make room)."""

    def __init__(
        self,
        limit: int,
        header_timeout_s: float,
        body_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._clock = clock
        self._open: dict[GuardedH11Protocol, None] = {}
        self._waiting: dict[GuardedH11Protocol, None] = {}
        # Since the limit was reached (reset when it is over):
        self._crowded = False
        self._refusing = False
        self.made_room = 0
        self.refused = 0
        # Connections closed by a deadline, this minute:
        self._slow_since = clock()
        self._slow = 0
        self._slow_warned = False
        self.timed_out_total = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def protocol_class(self) -> type[GuardedH11Protocol]:
        """The protocol class uvicorn builds each connection with, bound to this guard."""
        return type("HallHttpProtocol", (GuardedH11Protocol,), {"guard": self})

    def opened(self, conn: GuardedH11Protocol) -> bool:
        """A new connection; False when it must be closed at once (no room)."""
        if len(self._open) >= self.limit:
            self._crowd()
            victim = next(iter(self._waiting), None)
            if victim is None:
                self.refused += 1
                if not self._refusing:
                    self._refusing = True
                    log.warning(
                        "the local API refuses new connections: all %d connections are busy "
                        "with requests (web.max_connections)",
                        self.limit,
                    )
                return False
            self._forget(victim)
            victim.close_idle()
            self.made_room += 1
        self._open[conn] = None
        self._waiting[conn] = None
        return True

    def busy(self, conn: GuardedH11Protocol) -> None:
        self._waiting.pop(conn, None)

    def waiting(self, conn: GuardedH11Protocol) -> None:
        if conn in self._open and conn not in self._waiting:
            self._waiting[conn] = None  # the newest waiting one: closed last

    def closed(self, conn: GuardedH11Protocol) -> None:
        self._forget(conn)

    def timed_out(self, peer: str) -> None:
        """A connection closed by its deadline: a warning when it is many a minute."""
        self.timed_out_total += 1
        now = self._clock()
        if now - self._slow_since >= 60:
            self._slow_since, self._slow, self._slow_warned = now, 0, False
        self._slow += 1
        if self._slow >= SLOW_CLIENTS_PER_MINUTE and not self._slow_warned:
            self._slow_warned = True
            log.warning(
                "the local API closed %d connections within a minute that did not send their "
                "request in time (web.header_timeout_s, web.body_timeout_s); the last from %s",
                self._slow,
                peer,
            )

    def _forget(self, conn: GuardedH11Protocol) -> None:
        self._open.pop(conn, None)
        self._waiting.pop(conn, None)
        if self._crowded and len(self._open) <= self.limit // 2:
            log.info(
                "the local API is below its connection limit again: %d idle connections were "
                "closed to make room and %d new ones refused",
                self.made_room,
                self.refused,
            )
            self._crowded = self._refusing = False
            self.made_room = self.refused = 0

    def _crowd(self) -> None:
        if not self._crowded:
            self._crowded = True
            log.warning(
                "the local API reached its limit of %d open connections (web.max_connections); "
                "the oldest idle ones are closed to let new ones in",
                self.limit,
            )


class CorkedTransport:
    """A transport whose writes of one turn of the event loop go out as one ``send``.

    uvicorn writes an answer's head, its body and (with a length) an empty end, each with
    its own ``transport.write``: the head and the body each cost a system call and a packet
    (on loopback, the client's wake-up too), the largest part of a small answer's CPU. Here
    they are joined and written once, at the end of the turn they were written in, in the
    order they were written; ``close`` writes what is waiting first, ``abort`` drops it (as
    the transport itself would). Everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._waiting: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._waiting:
            self._loop.call_soon(self.flush)
        self._waiting.append(bytes(data))

    def flush(self) -> None:
        """Write what is waiting now (``close`` and the end of the turn do)."""
        if self._waiting:
            data = b"".join(self._waiting)
            self._waiting.clear()
            self._transport.write(data)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._waiting.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the request deadlines and the connection limit of its
    class's :class:`ConnectionGuard` (see :meth:`ConnectionGuard.protocol_class`), writing
    through a :class:`CorkedTransport` (an answer is one ``send``, not two or three)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for = ""  # "head" or "body"
        self._partial_head = False  # bytes of a request head arrived, not all of it

    # -- the protocol's events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # (uvicorn's flow control keeps the transport itself: pausing is not a write)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        if not self.guard.opened(self):
            transport.abort()
            return
        self._arm("head")

    def data_received(self, data: bytes) -> None:
        if not self._in_request():
            self._partial_head = True
            if self._deadline_for != "head":
                self._arm("head")  # the first byte of a kept-alive connection's next request
        super().data_received(data)
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.closed(self)
        super().connection_lost(exc)

    # -- the guard's side

    def close_idle(self) -> None:
        """Closed to make room for a new connection."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.abort()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _settle(self) -> None:
        """After the protocol read or answered: which deadline applies now, if any."""
        if self.transport.is_closing():
            self._disarm()
        elif self._in_request():
            self._partial_head = False
            self.guard.busy(self)
            if self.cycle.more_body:
                if self._deadline_for != "body":
                    self._arm("body")
            else:
                self._disarm()
        else:
            self.guard.waiting(self)
            if not self._partial_head and self._deadline_for == "head" and self.cycle is not None:
                # Answered and kept alive: uvicorn's keep-alive timeout takes over.
                self._disarm()

    def _arm(self, what: str) -> None:
        self._disarm()
        timeout = self.guard.header_timeout_s if what == "head" else self.guard.body_timeout_s
        self._deadline = self.loop.call_later(timeout, self._expired)
        self._deadline_for = what

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_for = None, ""

    def _expired(self) -> None:
        what, self._deadline, self._deadline_for = self._deadline_for, None, ""
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:
            self._arm("body")  # the agent, not the client, stopped reading: not its fault
            return
        peer = self.client[0] if self.client else "?"
        log.debug("closing a connection from %s: its request %s did not arrive in time", peer, what)
        self.guard.timed_out(peer)
        if what == "head" and self._partial_head:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def accept_errors(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler that writes asyncio's failed accept (out of file
    descriptors) as one line without a traceback; everything else goes on as before."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_FAILED:
            log.error(
                "the local API cannot accept connections: %s; the agent is out of file "
                "descriptors (LimitNOFILE) or memory, new connections wait",
                context.get("exception"),
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle
