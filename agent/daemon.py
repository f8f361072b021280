"""The agent process: store, hall, local API and background loops, stopped in order.

This is the composition root. It starts in two steps, so that the local API answers as
soon as the hall can serve it:

1. here: the store, the hall, the ticket printer (every ticket is gated on it), access,
   issuing, health, the queue's API routes and ``/healthz``, and the web server listening;
2. :mod:`agent.daemon_features`, whose code is imported on a worker thread while the API
   already answers: the ID card and document desks, the window devices, reports,
   updates, proxy cases, the central link, LED strips, voice, inputs, the screens'
   content, the staff board, the pages, and their routes and the credential routes.

Until the second step is done the API says so rather than pretend (``503 starting`` for
what is not there yet, ``/healthz`` degraded with the check ``start``:
agent/web/starting.py), and systemd hears READY=1 only after it. On the way out the local
API closes first, then the second step's features, then the first's, as before.

Each step imports a feature only when the config uses it: the ticket printer's feature
only with a printer (python-escpos, Pillow and qrcode only at its first ticket), the
document desk only with a camera or a scanner, the ID card desk only with a reader, and so
on. The types of those features come in under ``TYPE_CHECKING``; start-up pays for what
the hall has (docs/benchmarks.md, "Start and client commands"). A second after READY the
start's garbage is collected and its freed memory given back (:func:`settle_start_up_objects`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import datetime as dt
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.client import API_URL_FILE
from agent.config import HallAgentConfig, PrinterDevice, StorageConfig
from agent.core import events as ev
from agent.core.events import Event
from agent.features.access import HallAccess, Role
from agent.features.issuing import Issuing
from agent.runtime.clock import SystemClock, runtime_directory
from agent.runtime.devices import DeviceBoard, DeviceHealth
from agent.runtime.diskspace import RoomNeeded, SpaceGuard, make_room
from agent.runtime.hall import Hall, wall_clock
from agent.runtime.store import Eviction, Store, StoreError, Written
from agent.runtime.systemd import Notifier, supervised
from agent.web.access import Gate, guard
from agent.web.app import WebServer, create_app
from agent.web.health import HallHealth, health_routes
from agent.web.starting import StartUp, answer_while_starting

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agent.central.link import Link
    from agent.features.cases import CaseDesk
    from agent.features.certificates import Certificates
    from agent.features.documents import DocumentDesk
    from agent.features.identity import IdentityDesk
    from agent.features.inputs import TicketInputs
    from agent.features.led import LedStrips
    from agent.features.printing import TicketPrinting
    from agent.features.updates import Updates
    from agent.features.voice import VoiceCalling
    from agent.web.pages import PageFeed
    from agent.web.window_pages import WindowDevices

log = logging.getLogger(__name__)

TICK_SECONDS = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class Running:
    """What a started agent offers to the code that started it."""

    hall: Hall
    url: str
    link: Link
    devices: DeviceBoard
    issuing: Issuing
    printing: TicketPrinting | None = None
    health: HallHealth | None = None
    pages: PageFeed | None = None
    leds: LedStrips | None = None
    voice: VoiceCalling | None = None
    inputs: TicketInputs | None = None
    windows: WindowDevices | None = None  # callers, raters and their desks
    identity: IdentityDesk | None = None  # ID card readers
    documents: DocumentDesk | None = None  # document cameras and scanners, uploads
    access: HallAccess | None = None  # who may use the local API (docs/security.md)
    cases: CaseDesk | None = None  # proxy cases (docs/cases.md)
    app: FastAPI | None = None  # the local API, every route with its access rule
    updates: Updates | None = None  # central's signed updates (docs/fleet.md)
    certificates: Certificates | None = None  # the client certificate's renewal


def api_url_file(config: HallAgentConfig) -> Path:
    return config.storage.path / API_URL_FILE


@contextlib.asynccontextmanager
async def running_agent(
    config: HallAgentConfig,
    config_path: Path | None = None,
    *,
    wall: Callable[[], dt.datetime] = wall_clock,
    progress: Callable[[str], object] | None = None,
) -> AsyncIterator[Running]:
    """Start everything; on exit stop intake, finish the write in progress, close.

    ``wall`` is the hall's wall clock (tests pass one they move by hand: a holiday, a
    make-up Saturday, the lunch break); ``progress`` hears where the start is (systemd's
    STATUS line)."""
    disk = SpaceGuard(config.storage)
    store = await disk.open_store()
    devices = DeviceBoard(config)
    # Watch from the start, so the first states drivers report become events too.
    device_changes = devices.watch()
    clock = SystemClock(config.clock.trust, latch_dir=runtime_directory())
    start = StartUp()
    try:
        # The composition root: each component gets what it needs when it is built, in
        # the order they depend on each other; the stack stops them in the reverse order,
        # but for the local API, which closes first (its callback below). The log lines
        # are callbacks too, so that each comes where the stop has got to.
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(log.info, "stopping: queued writes finished")
            # Step 1: what the local API needs, and the API itself.
            hall = await stack.enter_async_context(Hall(config, store, clock=wall, clock_ok=clock))
            printing = await stack.enter_async_context(_printing(hall, devices))
            access = await stack.enter_async_context(HallAccess(hall))
            stack.callback(log.info, "stopping: device features stopped")
            issuing = Issuing(hall, printing)
            gate = Gate(hall, access, start.page_principal)
            health = await stack.enter_async_context(HallHealth(hall, start, devices, disk, clock))
            app = _api(hall, gate, health, start, printing, issuing)
            web = await stack.enter_async_context(WebServer(app, config.web))
            url = f"http://{config.web.host}:{web.port}"
            _write_api_url(api_url_file(config), url)
            if progress is not None:
                progress(f"starting: the local API answers at {url}; starting the devices")

            # Step 2, while the API answers: its code is imported off the event loop.
            await asyncio.to_thread(_import_second_step, config)
            from agent.daemon_features import compose_features

            features = await compose_features(
                stack, hall, devices, printing, access, issuing, gate, app, config_path
            )
            stack.callback(log.info, "stopping: central link closed")
            stack.push_async_callback(web.close)  # before the features behind it stop
            # The pages' streams end before the web server stops (it waits for open ones).
            pages = await stack.enter_async_context(features.pages)
            stack.callback(log.info, "stopping: local API closed to new requests")
            link, updates, certificates = features.link, features.updates, features.certificates
            app.openapi_schema = None  # one asked for while starting lacked step 2's routes
            start.finish(link, features.windows.page_principal)

            async with asyncio.TaskGroup() as tasks:
                background = [
                    tasks.create_task(_tick_loop(hall), name="day-rollover"),
                    tasks.create_task(retention_loop(hall, disk), name="outbox-retention"),
                    tasks.create_task(
                        _record_device_changes(hall, devices, device_changes),
                        name="devices",
                    ),
                    tasks.create_task(
                        updates.after_start(
                            lambda: config.mqtt.url is None or link.connected.is_set()
                        ),
                        name="update-outcome",
                    ),
                    tasks.create_task(certificates.watch(), name="client-certificate"),
                ]
                try:
                    yield Running(
                        hall,
                        url,
                        link,
                        devices,
                        issuing,
                        printing,
                        health,
                        pages,
                        features.leds,
                        features.voice,
                        features.inputs,
                        features.windows,
                        features.identity,
                        features.documents,
                        access,
                        cases=features.cases,
                        app=app,
                        updates=updates,
                        certificates=certificates,
                    )
                finally:
                    for task in background:
                        task.cancel()
    finally:
        store.close()
        log.info("stopped; state saved in %s", store.path)


def _api(
    hall: Hall,
    gate: Gate,
    health: HallHealth,
    start: StartUp,
    printing: TicketPrinting | None,
    issuing: Issuing,
) -> FastAPI:
    """The local API of the start's first step: the queue's own routes, ``/healthz`` and
    ``/metrics``; the features (and the credential routes) add theirs in the second."""
    app = create_app(
        hall,
        gate,
        status_extra=lambda: _central_status(hall.config, start),
        printing=printing,
        issuing=issuing,
    )
    monitors = gate.allow(Role.SCREEN, Role.MANAGER, Role.OPS, action="read the metrics")
    app.include_router(health_routes(health, metrics=guard(monitors)))
    answer_while_starting(app, start)
    return app


def _import_second_step(config: HallAgentConfig) -> None:
    """The second step's code and the device features the config uses (on a worker
    thread: the event loop answers the API meanwhile)."""
    from agent.daemon_features import import_device_features

    import_device_features(config)


# -- the ticket printer, imported only when the config has one ------------------------


def _printing(
    hall: Hall, devices: DeviceBoard
) -> AbstractAsyncContextManager[TicketPrinting | None]:
    if not any(isinstance(d, PrinterDevice) for d in hall.config.devices):
        return contextlib.nullcontext(None)
    from agent.features.printing import ticket_printing
    from protocols.escpos import before_escpos_import

    # python-escpos itself comes at the first ticket (protocols/escpos.py).
    before_escpos_import(functools.partial(keep_escpos_capabilities, hall.config.storage.path))

    return ticket_printing(hall, devices)


ESCPOS_CACHE_DIR = "cache"
ESCPOS_PICKLE_VARIABLE = "ESCPOS_CAPABILITIES_PICKLE_DIR"


def keep_escpos_capabilities(storage: Path) -> None:
    """Import python-escpos with a lasting place for the pickle of its capabilities (at
    the first ticket: :func:`_printing` hands this to ``protocols.escpos``).

    On import it reads its printer capabilities (~100 KB of YAML: about 0.15 s on this
    machine, several times that on a Pi) unless a pickle of them is in the directory
    ``ESCPOS_CAPABILITIES_PICKLE_DIR`` names; by default that is a new temporary directory
    at every import, so every start paid the parse. Here the variable names
    ``<storage.path>/cache`` while python-escpos is imported (it reads it only then), and
    is removed again so no child process inherits it. python-escpos parses again when its
    own file is newer (an upgrade). A variable set by the operator wins; a cache
    directory that cannot be made or written leaves python-escpos to its default.
    """
    if "escpos.capabilities" in sys.modules or ESCPOS_PICKLE_VARIABLE in os.environ:
        return
    cache = storage / ESCPOS_CACHE_DIR
    try:
        cache.mkdir(mode=0o750, exist_ok=True)
    except OSError as err:
        log.debug("no cache directory for python-escpos at %s: %s", cache, err)
        return
    if not os.access(cache, os.W_OK):
        return
    os.environ[ESCPOS_PICKLE_VARIABLE] = str(cache)
    try:
        try:
            import escpos.capabilities  # type: ignore[import-untyped]
        except Exception as err:  # noqa: BLE001 - e.g. a pickle cut short by a power loss
            log.warning("python-escpos's capabilities cache was unreadable (%s); made anew", err)
            for damaged in cache.glob("*.capabilities.pickle"):
                damaged.unlink(missing_ok=True)
            import escpos.capabilities  # noqa: F401 - parses its file and pickles it again
    finally:
        os.environ.pop(ESCPOS_PICKLE_VARIABLE, None)


def _central_status(config: HallAgentConfig, start: StartUp) -> dict[str, Any]:
    link = start.link
    if link is None:  # the start's second step builds it
        return {
            "central": {
                "state": "starting",
                "url": config.mqtt.url,
                "session": None,
                "reconnects": 0,
                "published": 0,
                "last_error": None,
                "config_version": None,
            }
        }
    return {
        "central": {
            "state": link.state.value,
            "url": link.mqtt.url,
            "session": link.session,
            "reconnects": link.counters.reconnects,
            "published": link.counters.published,
            "last_error": link.counters.last_error,
            "config_version": link.configs.applied_version,
        }
    }


async def retention_loop(hall: Hall, disk: SpaceGuard | None = None) -> None:
    """Keep the outbox within its byte and age limits, online or offline; with ``disk``,
    also within what the state disk has room for (agent/runtime/diskspace.py)."""
    storage = hall.config.storage
    failing = False
    while True:
        room = None
        if disk is not None:
            state = disk.look()
            disk.hold_reserve(state)
            room = disk.room_needed(state, disk_full=hall.writes.last_was_disk_full)
        try:
            evictions = await hall.write(functools.partial(_enforce_retention, storage, room))
        except StoreError as err:
            if not failing:  # once per run of failures
                log.warning("could not enforce the outbox limits: %s", err)
            failing = True
        else:
            failing = False
            for eviction in evictions:
                log.warning(
                    "outbox over its limit (%s): evicted %d unacknowledged events %s",
                    eviction.reason,
                    eviction.count,
                    eviction.by_class,
                )
        if disk is None:
            await asyncio.sleep(storage.prune_interval_s)
        else:
            await disk.wait(hall, storage.prune_interval_s)


def _enforce_retention(
    storage: StorageConfig,
    room: RoomNeeded | None,
    store: Store,
    now: dt.datetime,
    clock_ok: bool,
) -> Written[list[Eviction]]:
    """Returns the ``outbox.evicted`` reports as the events written, so the outbox
    publishes them at once. With ``room``, also frees pages inside the database for a disk
    short of space (after giving back the space reserve, when writes found the disk full:
    in this, the writer's turn, so no other write takes that room first)."""
    if room is not None and room.release is not None:
        room.release()
    before = store.last_seq
    eviction = store.enforce_retention(storage.max_bytes, storage.max_days, now, clock_ok=clock_ok)
    evictions = [] if eviction is None else [eviction]
    if room is not None:
        evictions += make_room(store, room, now, clock_ok)
    return Written(store.events(before + 1) if evictions else [], evictions)


def _append_one(event: Event, store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
    return Written(store.append([event], clock_ok=clock_ok), None)


async def _record_device_changes(
    hall: Hall, devices: DeviceBoard, changes: asyncio.Queue[DeviceHealth]
) -> None:
    """Every device health change becomes an event of the lowest retention class."""
    try:
        while True:
            health = await changes.get()
            # In the hall's offset like every other event (the board's clock is UTC).
            at = health.since.astimezone(hall.config.hall.zone)
            event = Event(ev.DeviceChanged(device=health.device_id, **health.payload()), at)
            try:
                await hall.write(functools.partial(_append_one, event))
            except StoreError as err:
                # Chatter is the first thing dropped when the disk is full; never the loop.
                log.debug("device change of %s not recorded: %s", health.device_id, err)
    finally:
        devices.unwatch(changes)


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
    config_path: Path | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then stop in order; the exit status (RESTART_EXIT
    when an update asks to be started again)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A start that waits (a full disk: agent/runtime/diskspace.py) does not wait with the
    # collector off (agent/cli.py turns it off for the start).
    loop.call_later(START_WITHOUT_GC_S, gc.enable)
    notifier = Notifier()
    notifier.status("starting: opening the state database")
    async with running_agent(config, config_path, progress=notifier.status) as agent_:
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
        health = agent_.health
        alive = (lambda: None) if health is None else health.writer_silent_for
        # READY=1 once config, store, link and local API are up; STOPPING=1 on the way out.
        async with supervised(notifier, alive, f"serving hall {config.hall.id} at {agent_.url}"):
            loop.call_later(SETTLE_S, settle_start_up_objects)
            await stop.wait()
            log.info("stop requested")
        restart = agent_.updates is not None and agent_.updates.restart.requested
    notifier.close()
    if restart:
        from agent.features.updates import RESTART_EXIT  # loaded by the start's second step

        log.info("exiting with status %d: start me again (an update)", RESTART_EXIT)
        return RESTART_EXIT
    return 0


# How long after READY the start's objects are settled (the first requests come first).
SETTLE_S = 1.0
# The collector is back on after this long even if the agent is not READY by then.
START_WITHOUT_GC_S = 30.0


def settle_start_up_objects() -> None:
    """Collect the start's garbage once, then move every object alive now (modules,
    classes, models, routes: they live as long as the process) to the collector's
    permanent generation, so later collections never walk them again; and switch the
    collector on (``hall-agent run`` starts with it off: agent/cli.py). Then give the
    memory the start freed back to the system (:func:`release_free_memory`)."""
    gc.collect()
    gc.freeze()
    gc.enable()
    release_free_memory()


def release_free_memory() -> None:
    """Ask glibc's allocator to return the free memory it keeps (``malloc_trim(0)``).

    The start allocates and frees a lot (the config's YAML and models, the routes, the
    imports on the second step's thread, whose malloc arena is its own); glibc keeps
    freed pages for later, and they count in the RSS for the life of the process. Once,
    a second after READY: a few milliseconds. Not glibc (musl, macOS): nothing to do.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)


def _write_api_url(path: Path, url: str) -> None:
    """Tell the CLI where the API listens; a full disk must not stop the hall for it."""
    try:
        _write_atomically(path, url + "\n")
    except OSError as err:
        log.warning(
            "could not write the API address to %s (%s); the CLI falls back to web.port",
            path,
            err,
        )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
