"""A TCP proxy that delays every byte by a fixed time in each direction: a slow uplink's
round trip (a 4G or satellite hall) on localhost, without tc/netem (which needs root).

Order is kept: each direction is a queue of (due time, bytes) drained by one writer.
With ``rate_bps`` each direction is also limited to that many bytes per second (a chunk
leaves the "wire" only once the ones before it have, then takes the delay); without it
only the latency is added.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    rate_bps: float | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    wire_free = 0.0  # when the bytes queued so far have passed the bandwidth limit

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            sent = loop.time()
            if rate_bps:
                wire_free = max(wire_free, sent) + len(data) / rate_bps
                sent = wire_free
            queue.put_nowait((sent + delay, data))
    except OSError:
        pass  # the other side closed: end this direction
    finally:
        queue.put_nowait((loop.time() + delay, b""))
        with contextlib.suppress(Exception):
            await sender
        writer.close()


@contextlib.asynccontextmanager
async def slow_link(
    host: str, port: int, round_trip_s: float, rate_bps: float | None = None
) -> AsyncIterator[int]:
    """Listen on a free port of 127.0.0.1 and forward to ``host:port`` with ``round_trip_s``
    added to every round trip (and each direction limited to ``rate_bps`` bytes per second,
    if given); yields the port."""
    open_writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Future[list[BaseException | None]]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        open_writers.update((client_w, server_w))
        half = round_trip_s / 2
        both = asyncio.gather(
            _pipe(client_r, server_w, half, rate_bps),
            _pipe(server_r, client_w, half, rate_bps),
            return_exceptions=True,
        )
        handlers.add(both)
        try:
            await both
        finally:
            handlers.discard(both)
            open_writers.difference_update((client_w, server_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in list(open_writers):
            writer.close()  # both directions see the end and finish by themselves
        if handlers:
            await asyncio.wait(handlers, timeout=5)
