"""The agent process: store, hall, local API and background loops, stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from agent.config import HallAgentConfig
from agent.hall import Hall
from agent.store import Store
from agent.web import WebServer, create_app

log = logging.getLogger(__name__)

TICK_SECONDS = 20.0
API_URL_FILE = "api-url"


@dataclasses.dataclass(frozen=True, slots=True)
class Running:
    """What a started agent offers to the code that started it."""

    hall: Hall
    url: str


def api_url_file(config: HallAgentConfig) -> Path:
    return config.storage.path / API_URL_FILE


@contextlib.asynccontextmanager
async def running_agent(config: HallAgentConfig) -> AsyncIterator[Running]:
    """Start everything; on exit stop intake, finish the write in progress, close."""
    store = await asyncio.to_thread(Store.open, config.storage.path)
    try:
        async with Hall(config, store) as hall:
            app = create_app(hall)
            async with WebServer(app, config.web.host, config.web.port) as web:
                url = f"http://{config.web.host}:{web.port}"
                _write_atomically(api_url_file(config), url + "\n")
                async with asyncio.TaskGroup() as tasks:
                    ticker = tasks.create_task(_tick_loop(hall), name="day-rollover")
                    try:
                        yield Running(hall, url)
                    finally:
                        ticker.cancel()
                log.info("stopping: local API closed to new requests")
            log.info("stopping: queued writes finished")
    finally:
        store.close()
        log.info("stopped; state saved in %s", store.path)


async def _tick_loop(hall: Hall) -> None:
    """Drive time-based rules (the business-day rollover) even when nobody acts."""
    failing = False
    while True:
        try:
            await hall.tick()
        except Exception:
            if not failing:
                log.exception(
                    "the periodic queue check failed; retrying every %.0f s", TICK_SECONDS
                )
            failing = True
        else:
            if failing:
                log.info("the periodic queue check works again")
            failing = False
        await asyncio.sleep(TICK_SECONDS)


async def serve(
    config: HallAgentConfig,
    *,
    on_ready: Callable[[Running], Awaitable[None] | None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_agent(config) as agent_:
        log.info(
            "hall %s (%s) running; local API at %s",
            config.hall.id,
            config.hall.name,
            agent_.url,
        )
        if on_ready is not None:
            maybe = on_ready(agent_)
            if maybe is not None:
                await maybe
        await stop.wait()
        log.info("stop requested")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
