"""The start's second step (agent/daemon.py): what comes up once the local API answers.

The ID card and document desks, the window devices (callers, raters, keypads), reports,
updates, proxy cases, the central link with what those features add to it, LED strips,
voice, ticket inputs, the screens' content, the staff board, the pages, and the routes
of all of these. :func:`import_device_features` loads this module's code and the device
features the config uses on a worker thread, so that the event loop answers the API
meanwhile; :func:`compose_features` then builds them into the daemon's exit stack, in the
order they depend on each other (they stop in the reverse order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from agent.central.commands import CommandHandlers
from agent.central.contract import Topics
from agent.central.diagnostics import Diagnostics
from agent.central.link import EnvelopeFilter, Link
from agent.config import (
    AnnouncerDevice,
    CameraDevice,
    CodeScannerDevice,
    Device,
    DocScannerDevice,
    HallAgentConfig,
    IdReaderDevice,
    LedStripDevice,
    TicketButtonsDevice,
)
from agent.features.access import HallAccess, Role
from agent.features.cases import CaseDesk, case_desk
from agent.features.certificates import Certificates
from agent.features.content import ScreenContent
from agent.features.issuing import Issuing
from agent.features.reports import Reports, hall_reports
from agent.features.staffing import StaffingDesk
from agent.features.updates import Updates, agent_updates
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.web.access import Gate, access_routes, guard
from agent.web.case_routes import case_routes
from agent.web.content_routes import content_routes
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


@dataclasses.dataclass(frozen=True, slots=True)
class Features:
    """What the second step brought up (``pages`` is entered by the daemon: its streams
    end before the web server stops)."""

    link: Link
    windows: WindowDevices
    reports: Reports
    updates: Updates
    cases: CaseDesk
    certificates: Certificates
    pages: PageFeed
    identity: IdentityDesk | None
    documents: DocumentDesk | None
    leds: LedStrips | None
    voice: VoiceCalling | None
    inputs: TicketInputs | None


def import_device_features(config: HallAgentConfig) -> None:
    """Load the code of the device features the config uses (the daemon calls this on a
    worker thread; building them stays on the event loop)."""
    if _uses(config, IdReaderDevice):
        import agent.features.identity
        import agent.features.staff
    if _uses(config, CameraDevice, DocScannerDevice):
        import agent.features.documents
    if _uses(config, LedStripDevice):
        import agent.features.led
    if _uses(config, AnnouncerDevice):
        import agent.features.voice
    if _uses(config, TicketButtonsDevice, CodeScannerDevice):
        import agent.features.inputs  # noqa: F401


async def compose_features(
    stack: AsyncExitStack,
    hall: Hall,
    devices: DeviceBoard,
    printing: TicketPrinting | None,
    access: HallAccess,
    issuing: Issuing,
    gate: Gate,
    app: FastAPI,
    config_path: Path | None,
) -> Features:
    """Build the second step into ``stack``, and its routes into ``app``."""
    config = hall.config
    enter = stack.enter_async_context
    identity = await enter(_identity(hall, devices, issuing))
    documents = await enter(_documents(hall, devices))
    capture = None if documents is None else documents.capture
    windows = await enter(window_devices(hall, devices, capture=capture, access=access))
    reports = await enter(hall_reports(hall))
    updates = await enter(agent_updates(hall, config.update, config.storage.path))
    cases = await enter(case_desk(hall, printing))
    certificates = Certificates(hall, config.mqtt)
    link = await enter(
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
            certificates,
        )
    )
    leds = await enter(_leds(hall, devices))
    voice = await enter(_voice(hall, devices))
    inputs = await enter(_inputs(hall, devices, issuing))
    await asyncio.sleep(0)  # the API answers between the steps of building routes
    _feature_routes(app, gate, identity, documents, reports)
    content = ScreenContent(hall)
    await content.tidy()
    editors = gate.allow(Role.MANAGER, Role.OPS, action="edit the screens' content")
    app.include_router(content_routes(content, edit_rule=editors))
    staffing = StaffingDesk(hall)
    await staffing.load()  # the hall's own staff board, over central's push
    board_editors = gate.allow(Role.MANAGER, Role.OPS, action="edit the staff board")
    app.include_router(staffing_routes(staffing, edit_rule=board_editors))
    app.include_router(case_routes(cases, gate))
    await asyncio.sleep(0)
    pages = PageFeed(hall, devices, printing, issuing)
    app.include_router(page_routes(pages))
    app.include_router(ticket_routes(pages))
    app.include_router(window_routes(windows, pages, gate))
    return Features(
        link,
        windows,
        reports,
        updates,
        cases,
        certificates,
        pages,
        identity,
        documents,
        leds,
        voice,
        inputs,
    )


# -- the device features, each imported only when the config has its devices ----------


def _uses(config: HallAgentConfig, *kinds: type[Device]) -> bool:
    return any(isinstance(d, kinds) for d in config.devices)


def _none() -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext(None)


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
    identity: IdentityDesk | None,
    documents: DocumentDesk | None,
    reports: Reports,
) -> None:
    """The features' routes, each guarded by its rule (docs/security.md), and the
    credential routes (logins, enrolments: /api/v1/auth/...)."""
    app.include_router(access_routes(gate))
    managers = gate.allow(Role.MANAGER, Role.OPS, action="read the hall's reports")
    app.include_router(report_routes(reports, read_guard=guard(managers)))
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
