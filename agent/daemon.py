"""The agent process: store, hall, local API and background loops, stopped in order.

This is the composition root, and it imports a feature only when the config uses it: the
ticket printer's stack (python-escpos, Pillow, qrcode) only with a printer, the document
desk only with a camera or a scanner, the ID card desk only with a reader, and so on
(``_printing``, ``_documents``, ... below). The types of those features come in under
``TYPE_CHECKING``; start-up pays for what the hall has (docs/benchmarks.md, "Start and
client commands").
"""

from __future__ import annotations

import asyncio
import contextlib
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

from agent.central.commands import CommandHandlers
from agent.central.contract import Topics
from agent.central.diagnostics import Diagnostics
from agent.central.link import EnvelopeFilter, Link
from agent.client import API_URL_FILE
from agent.config import (
    AnnouncerDevice,
    CameraDevice,
    CodeScannerDevice,
    Device,
    DocScannerDevice,
    HallAgentConfig,
    IdReaderDevice,
    LedStripDevice,
    PrinterDevice,
    StorageConfig,
    TicketButtonsDevice,
)
from agent.core import events as ev
from agent.core.events import Event
from agent.features.access import HallAccess, Role
from agent.features.cases import CaseDesk, case_desk
from agent.features.certificates import Certificates
from agent.features.content import ScreenContent
from agent.features.issuing import Issuing
from agent.features.reports import Reports, hall_reports
from agent.features.staffing import StaffingDesk
from agent.features.updates import RESTART_EXIT, Updates, agent_updates
from agent.runtime.clock import SystemClock, runtime_directory
from agent.runtime.devices import DeviceBoard, DeviceHealth
from agent.runtime.diskspace import RoomNeeded, SpaceGuard, make_room
from agent.runtime.hall import Hall, wall_clock
from agent.runtime.store import Eviction, Store, StoreError, Written
from agent.runtime.systemd import Notifier, supervised
from agent.web.access import Gate, access_routes, guard
from agent.web.app import WebServer, create_app
from agent.web.case_routes import case_routes
from agent.web.content_routes import content_routes
from agent.web.health import HallHealth, health_routes
from agent.web.pages import PageFeed, page_routes
from agent.web.report_routes import report_routes
from agent.web.staffing_routes import staffing_routes
from agent.web.ticket_page import ticket_routes
from agent.web.window_pages import WindowDevices, window_devices, window_routes

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agent.features.documents import DocumentDesk
    from agent.features.identity import IdentityDesk
    from agent.features.inputs import TicketInputs
    from agent.features.led import LedStrips
    from agent.features.printing import TicketPrinting
    from agent.features.voice import VoiceCalling

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
) -> AsyncIterator[Running]:
    """Start everything; on exit stop intake, finish the write in progress, close.

    ``wall`` is the hall's wall clock (tests pass one they move by hand: a holiday, a
    make-up Saturday, the lunch break)."""
    disk = SpaceGuard(config.storage)
    store = await disk.open_store()
    devices = DeviceBoard(config)
    # Watch from the start, so the first states drivers report become events too.
    device_changes = devices.watch()
    clock = SystemClock(config.clock.trust, latch_dir=runtime_directory())
    try:
        # The composition root: each component gets what it needs when it is built, in
        # the order they depend on each other; they stop in the reverse order.
        async with (
            Hall(config, store, clock=wall, clock_ok=clock) as hall,
            _printing(hall, devices) as printing,
            HallAccess(hall) as access,
        ):
            issuing = Issuing(hall, printing)
            async with (
                _identity(hall, devices, issuing) as identity,
                _documents(hall, devices) as documents,
                window_devices(
                    hall,
                    devices,
                    capture=None if documents is None else documents.capture,
                    access=access,
                ) as windows,
                hall_reports(hall) as reports,
                agent_updates(hall, config.update, config.storage.path) as updates,
                case_desk(hall, printing) as cases,
                _link(
                    hall,
                    devices,
                    printing,
                    identity,
                    documents,
                    windows,
                    reports,
                    Diagnostics(config, config_path),
                    updates,
                    cases,
                    certificates := Certificates(hall, config.mqtt),
                ) as link,
                HallHealth(hall, link, devices, disk, clock) as health,
                _leds(hall, devices) as leds,
                _voice(hall, devices) as voice,
                _inputs(hall, devices, issuing) as inputs,
            ):
                gate = Gate(hall, access, windows.page_principal)
                app = create_app(
                    hall,
                    gate,
                    status_extra=lambda: _link_status(link),
                    printing=printing,
                    issuing=issuing,
                )
                _feature_routes(app, gate, health, identity, documents, reports)
                content = ScreenContent(hall)
                await content.tidy()
                editors = gate.allow(Role.MANAGER, Role.OPS, action="edit the screens' content")
                app.include_router(content_routes(content, edit_rule=editors))
                staffing = StaffingDesk(hall)
                await staffing.load()  # the hall's own staff board, over central's push
                board_editors = gate.allow(Role.MANAGER, Role.OPS, action="edit the staff board")
                app.include_router(staffing_routes(staffing, edit_rule=board_editors))
                app.include_router(case_routes(cases, gate))
                pages = PageFeed(hall, devices, printing, issuing)
                app.include_router(page_routes(pages))
                app.include_router(ticket_routes(pages))
                app.include_router(window_routes(windows, pages, gate))
                # The pages' streams end before the web server stops (it waits for open ones).
                async with WebServer(app, config.web) as web, pages:
                    url = f"http://{config.web.host}:{web.port}"
                    _write_api_url(api_url_file(config), url)
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
                                leds,
                                voice,
                                inputs,
                                windows,
                                identity,
                                documents,
                                access,
                                cases=cases,
                                app=app,
                                updates=updates,
                                certificates=certificates,
                            )
                        finally:
                            for task in background:
                                task.cancel()
                    log.info("stopping: local API closed to new requests")
                log.info("stopping: central link closed")
            log.info("stopping: device features stopped")
        log.info("stopping: queued writes finished")
    finally:
        store.close()
        log.info("stopped; state saved in %s", store.path)


# -- the device features, each imported only when the config has its devices ----------


def _uses(config: HallAgentConfig, *kinds: type[Device]) -> bool:
    return any(isinstance(d, kinds) for d in config.devices)


def _none() -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext(None)


def _printing(
    hall: Hall, devices: DeviceBoard
) -> AbstractAsyncContextManager[TicketPrinting | None]:
    if not _uses(hall.config, PrinterDevice):
        return _none()
    keep_escpos_capabilities(hall.config.storage.path)
    from agent.features.printing import ticket_printing

    return ticket_printing(hall, devices)


ESCPOS_CACHE_DIR = "cache"
ESCPOS_PICKLE_VARIABLE = "ESCPOS_CAPABILITIES_PICKLE_DIR"


def keep_escpos_capabilities(storage: Path) -> None:
    """Import python-escpos with a lasting place for the pickle of its capabilities.

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


def _identity(
    hall: Hall, devices: DeviceBoard, issuing: Issuing
) -> AbstractAsyncContextManager[IdentityDesk | None]:
    if not _uses(hall.config, IdReaderDevice):
        return _none()
    from agent.features.identity import identity_desk
    from agent.features.staff import sign_in_by_identity

    return identity_desk(hall, devices, issuing, staff_sign_in=sign_in_by_identity)


def _documents(
    hall: Hall, devices: DeviceBoard
) -> AbstractAsyncContextManager[DocumentDesk | None]:
    if not _uses(hall.config, CameraDevice, DocScannerDevice):
        return _none()
    from agent.features.documents import document_desk

    return document_desk(hall, devices)


def _leds(hall: Hall, devices: DeviceBoard) -> AbstractAsyncContextManager[LedStrips | None]:
    if not _uses(hall.config, LedStripDevice):
        return _none()
    from agent.features.led import led_strips

    return led_strips(hall, devices)


def _voice(hall: Hall, devices: DeviceBoard) -> AbstractAsyncContextManager[VoiceCalling | None]:
    if not _uses(hall.config, AnnouncerDevice):
        return _none()
    from agent.features.voice import voice_calling

    return voice_calling(hall, devices)


def _inputs(
    hall: Hall, devices: DeviceBoard, issuing: Issuing
) -> AbstractAsyncContextManager[TicketInputs | None]:
    if not _uses(hall.config, TicketButtonsDevice, CodeScannerDevice):
        return _none()
    from agent.features.inputs import ticket_inputs

    return ticket_inputs(hall, devices, issuing)


def _feature_routes(
    app: FastAPI,
    gate: Gate,
    health: HallHealth,
    identity: IdentityDesk | None,
    documents: DocumentDesk | None,
    reports: Reports,
) -> None:
    """The features' routes, each guarded by its rule (docs/security.md)."""
    app.include_router(access_routes(gate))
    managers = gate.allow(Role.MANAGER, Role.OPS, action="read the hall's reports")
    app.include_router(report_routes(reports, read_guard=guard(managers)))
    monitors = gate.allow(Role.SCREEN, Role.MANAGER, Role.OPS, action="read the metrics")
    app.include_router(health_routes(health, metrics=guard(monitors)))
    if identity is not None:
        from agent.features.identity import identity_routes

        kiosk = gate.allow(Role.KIOSK, Role.OPS, action="use the kiosk's ID card reader")
        app.include_router(
            identity_routes(identity, read_guard=guard(kiosk), take_guard=guard(kiosk))
        )
    if documents is not None:
        from agent.features.documents import document_routes

        spool = gate.allow(Role.MANAGER, Role.OPS, action="read the document spool")
        app.include_router(
            document_routes(
                documents,
                capture_guard=guard(gate.window("capture a document")),
                read_guard=guard(spool),
            )
        )


def _link(
    hall: Hall,
    devices: DeviceBoard,
    printing: TicketPrinting | None,
    identity: IdentityDesk | None,
    documents: DocumentDesk | None,
    windows: WindowDevices,
    reports: Reports,
    diagnostics: Diagnostics,
    updates: Updates,
    cases: CaseDesk,
    certificates: Certificates,
) -> Link:
    """The central link with what the device features add to it."""
    handlers = CommandHandlers(
        reprint=None if printing is None else printing.reprint_command,
        request_rating=windows.ratings.request_command,
        set_appointments=None if identity is None else identity.set_appointments_command,
        capture_document=None if documents is None else documents.capture_command,
        get_report=reports.command,
        run_doctor=diagnostics.run_doctor,
        get_logs=diagnostics.get_logs,
        get_config=diagnostics.get_config,
        update_agent=updates.command,
        install_certificate=certificates.install if certificates.enabled else None,
        case_result=cases.result_command,
    )
    topics = Topics(hall.config.hall.id)
    filters: tuple[EnvelopeFilter, ...] = (cases.envelope_filter(),)
    if identity is not None or documents is not None:
        from agent.features.identity import envelope_filters

        filters += envelope_filters(identity, documents)
    return Link(
        hall,
        devices,
        handlers=handlers,
        envelope_filters=filters,
        while_connected=() if documents is None else (documents.upload,),
        routes={} if documents is None else {topics.file_ack: documents.on_file_ack},
    )


def _link_status(link: Link) -> dict[str, Any]:
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
    short of space."""
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
    async with running_agent(config, config_path) as agent_:
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
    collector on (``hall-agent run`` starts with it off: agent/cli.py)."""
    gc.collect()
    gc.freeze()
    gc.enable()


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
