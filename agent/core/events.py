"""Every event the hall emits: one frozen dataclass per type.

An event is an :class:`Event`: a typed payload (a subclass of :class:`EventData`, whose
``TYPE`` names it on the wire and whose ``RETENTION`` is its outbox class) and the time it
happened. ``EVENT_TYPES``, the JSON Schemas and the AsyncAPI document (``hallctl/asyncapi.py``)
are all derived from :data:`EVENT_CLASSES`, so an event type cannot exist without a precise
schema for its ``data``.

On the wire the envelope is unchanged: ``type`` is the class's ``TYPE`` and ``data`` is
:meth:`EventData.to_data` (fields in declaration order; a field declared with
:func:`omitted` is left out while it is ``None``). :func:`parse_event` turns a stored
``(type, data)`` back into its class (validated by pydantic, unknown keys refused), so
consumers ``match`` on classes, never on type strings or dict keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from agent.core.model import Priority, Source, TicketStatus

JSON = dict[str, Any]


class EventClass(enum.IntEnum):
    """Retention classes of the outbox: higher survives longer when storage is full."""

    CHATTER = 0
    OPERATIONAL = 1
    BUSINESS = 2


_OMIT_NONE = "omit_none"


def omitted() -> Any:
    """A field left out of ``data`` while it is None (and optional when parsed)."""
    return dataclasses.field(default=None, metadata={_OMIT_NONE: True})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventData:
    """The ``data`` of one event type. Subclasses set ``TYPE`` (and ``RETENTION``)."""

    TYPE: ClassVar[str] = ""
    RETENTION: ClassVar[EventClass] = EventClass.BUSINESS
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    def __init_subclass__(cls) -> None:
        # (No super(): the slotted copy dataclass makes of this class breaks its cell.)
        if cls.__doc__ is None:
            # A dataclass without a docstring gets one made from inspect.signature(), about
            # 1 ms a class at every start. This stands in for it; like it, it starts with
            # "Name(", which pydantic's and hallctl's schemas take for "no docstring".
            cls.__doc__ = f"{cls.__name__}(...)"

    def to_data(self) -> JSON:
        """The event's ``data`` as it is stored and sent."""
        out: JSON = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get(_OMIT_NONE):
                continue
            out[f.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (getattr(value, f.name) is None and f.metadata.get(_OMIT_NONE))
        }
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- tickets ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketEvent(EventData):
    """What every queue event about a ticket carries (the ticket as it is after the move).
    ``staff``: who serves it (who called it, or who pressed since); ``with_staff``: who
    else was signed in at its window (two staff at one window, AB岗)."""

    ticket: str
    ticket_id: str
    service: str
    day: str
    status: TicketStatus
    priority: Priority
    window: str | None = omitted()
    staff: str | None = omitted()
    with_staff: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketIssued(TicketEvent):
    """A ticket was issued: its place in line and the estimated wait when it was taken.
    ``granted_by``: who granted its priority (``self``: the citizen chose the green channel
    at the kiosk; a staff number: a guide at the guide desk; ``central``: central's
    ``issue_ticket``; ``ops-token``: the ops credential), absent for a normal ticket and for a
    priority the rules gave (the ID card's age, an appointment by card or QR);
    ``appointment``: the appointment it was checked in for at the guide desk."""

    TYPE: ClassVar[str] = "ticket.issued"
    source: Source
    ahead: int
    wait_minutes: int
    granted_by: str | None = omitted()
    appointment: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketCalled(TicketEvent):
    TYPE: ClassVar[str] = "ticket.called"
    window_name: str
    window_number: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketReturned(TicketEvent):
    """A held ticket called back to its window."""

    TYPE: ClassVar[str] = "ticket.returned"
    window_name: str
    window_number: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketRecalled(TicketEvent):
    TYPE: ClassVar[str] = "ticket.recalled"
    recalls: int
    window_name: str
    window_number: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketServing(TicketEvent):
    TYPE: ClassVar[str] = "ticket.serving"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketFinished(TicketEvent):
    TYPE: ClassVar[str] = "ticket.finished"
    minutes: float
    implicit: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketNoShow(TicketEvent):
    TYPE: ClassVar[str] = "ticket.no_show"
    called_count: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketHeld(TicketEvent):
    TYPE: ClassVar[str] = "ticket.held"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketTransferred(TicketEvent):
    TYPE: ClassVar[str] = "ticket.transferred"
    from_service: str
    from_window: str
    from_staff: str | None = omitted()
    position: Literal["front", "back"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketCancelled(TicketEvent):
    TYPE: ClassVar[str] = "ticket.cancelled"
    reason: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketExpired(TicketEvent):
    TYPE: ClassVar[str] = "ticket.expired"
    reason: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketTurnNear(TicketEvent):
    """A waiting ticket moved up to ``queue.turn_near`` people ahead (or fewer): once per
    ticket, so central can send the citizen an SMS or WeChat message."""

    TYPE: ClassVar[str] = "ticket.turn_near"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    ahead: int
    wait_minutes: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketStatusUpdate(TicketEvent):
    """A ticket's place as its status page shows it, for a district site that serves the page
    (emitted only while ``ticket.qr_url`` is set): on issue, on every status change, and when
    the people ahead of a waiting ticket change. ``token`` is the page's credential."""

    TYPE: ClassVar[str] = "ticket.status"
    RETENTION: ClassVar[EventClass] = EventClass.CHATTER
    token: str
    ahead: int | None = omitted()
    wait_minutes: int | None = omitted()
    window_name: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketPrint(EventData):
    """A ticket's print on one printer."""

    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    ticket: str
    ticket_id: str
    service: str
    day: str
    device: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketPrintFailed(TicketPrint):
    TYPE: ClassVar[str] = "ticket.print_failed"
    reason: str | None
    attempts: int
    reprint: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TicketReprinted(TicketPrint):
    TYPE: ClassVar[str] = "ticket.reprinted"


# -- windows and staff -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowOpened(EventData):
    TYPE: ClassVar[str] = "window.opened"
    window: str
    staff: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowPaused(EventData):
    TYPE: ClassVar[str] = "window.paused"
    window: str
    reason: str
    staff: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowResumed(EventData):
    TYPE: ClassVar[str] = "window.resumed"
    window: str
    staff: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowClosed(EventData):
    TYPE: ClassVar[str] = "window.closed"
    window: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StaffSignedIn(EventData):
    """``with_staff``: who was signed in at the window already (up to two at once)."""

    TYPE: ClassVar[str] = "staff.signed_in"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    window: str
    staff: str
    with_staff: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StaffSignedOut(EventData):
    """``remaining``: who is still signed in at the window (it stays open for them)."""

    TYPE: ClassVar[str] = "staff.signed_out"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    window: str
    staff: str | None
    reason: str
    remaining: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RosterSet(EventData):
    """Central (or the demo) replaced the staff roster."""

    TYPE: ClassVar[str] = "staff.roster_set"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    count: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StaffingEdited(EventData):
    """The hall's manager edited the staff board on ``/pages/manager/staff``
    (docs/configuration.md, "The hall's own roster and rota"): the roster shown on the big
    screen (``count`` members) and the week's rota (``windows``: the windows it schedules).
    The hall's edit takes precedence over the config file until central pushes ``staff``
    or ``rota`` again. ``by`` is the manager's login name, or ``ops-token``."""

    TYPE: ClassVar[str] = "staff.board_edited"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    count: int
    windows: list[str]
    by: str


# -- satisfaction rating (好差评) --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RatingRequested(EventData):
    TYPE: ClassVar[str] = "rating.requested"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    window: str
    ticket: str
    ticket_id: str
    service: str
    staff: str | None
    trigger: str
    with_staff: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RatingSubmitted(EventData):
    """A rating recorded for a ticket (GB/T 39734-2020 levels 1-5)."""

    TYPE: ClassVar[str] = "rating.submitted"
    ticket: str
    ticket_id: str
    day: str
    service: str
    service_name: str
    window_name: str
    window_number: int
    level: int
    label: str
    bad: bool
    reasons: list[str]
    comment: str
    channel: str
    device: str | None
    defaulted: bool
    window: str
    staff: str | None
    staff_name: str | None
    requested_at: str | None
    region_code: str | None = omitted()
    with_staff: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RatingTimedOut(EventData):
    """A rating ended without the citizen's answer (timeout, replaced, ended)."""

    TYPE: ClassVar[str] = "rating.timed_out"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    window: str
    ticket: str
    ticket_id: str
    service: str | None
    staff: str | None
    requested_at: str | None
    reason: str
    recorded: int | None
    pressed_level: int | None = omitted()
    with_staff: list[str] | None = omitted()


# -- identity, appointments, documents -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IdentityRead(EventData):
    """An ID card read at the kiosk or a window. ``person`` is sealed at rest (form
    ``full``) and opened only when the event is published to central."""

    TYPE: ClassVar[str] = "identity.read"
    flow: Literal["kiosk", "window"]
    device: str
    form: Literal["full", "masked", "hash", "none"]
    card_type: str
    id_hash: str
    person: dict[str, Any] | None = omitted()
    window: str | None = omitted()
    ticket: str | None = omitted()
    ticket_id: str | None = omitted()
    staff: str | None = omitted()
    appointment: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AppointmentsSet(EventData):
    TYPE: ClassVar[str] = "appointments.set"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    count: int
    days: list[str]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DocumentPage:
    """One page file of a captured document, uploaded in chunks."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    file: str
    page: int
    content_type: str
    size: int
    sha256: str
    chunks: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DocumentCaptured(EventData):
    """The pages central will receive as files."""

    TYPE: ClassVar[str] = "document.captured"
    document: str
    window: str | None = omitted()
    device: str
    source: Literal["camera", "scanner"]
    ticket: str | None = omitted()
    staff: str | None = omitted()
    cmd_id: str | None = omitted()
    pages: list[DocumentPage]


# -- proxy cases (代收代办, docs/cases.md) -------------------------------------------------------
# A citizen's name and ID number never appear in clear: ``person`` is sealed at rest (form
# ``full``, opened only as the event is published) or masked, as for ID cards.

CaseStatusName = Literal["received", "processing", "done", "returned", "closed"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseRegistered(EventData):
    """A window took a case for handling elsewhere; the citizen holds a printed receipt."""

    TYPE: ClassVar[str] = "case.registered"
    case: str
    service: str
    window: str
    staff: str | None = omitted()
    day: str
    promised: str
    promised_by: Literal["guide", "staff"]
    time_limit_days: int | None = omitted()
    materials: list[str]
    form: Literal["full", "masked", "hash", "none"]
    id_hash: str | None = omitted()
    person: dict[str, Any] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseUpdated(EventData):
    """A case's status or promised date changed (by its window, the manager or central)."""

    TYPE: ClassVar[str] = "case.updated"
    case: str
    service: str
    window: str
    status: CaseStatusName
    previous: CaseStatusName
    promised: str
    by: Literal["window", "manager", "central"]
    staff: str | None = omitted()
    note: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseDeadlineNear(EventData):
    """An open case reached its warning day (``cases.warn_working_days`` before its promised
    date, in working days); raised once per case."""

    TYPE: ClassVar[str] = "case.deadline_near"
    case: str
    service: str
    window: str
    promised: str
    working_days_left: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseOverdue(EventData):
    """An open case passed its promised date without a result; raised once per case."""

    TYPE: ClassVar[str] = "case.overdue"
    case: str
    service: str
    window: str
    promised: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseClosed(EventData):
    """A case ended (the citizen collected the result, or it was withdrawn); the hall's
    sealed copy of the citizen's personal data was erased with it."""

    TYPE: ClassVar[str] = "case.closed"
    case: str
    service: str
    window: str
    previous: CaseStatusName
    by: Literal["window", "manager", "central"]
    staff: str | None = omitted()
    note: str | None = omitted()
    overdue: bool


# -- access: who may do what (docs/security.md) -----------------------------------------------
# Never the token, its hash, a password or its hash: only who, which role, and what happened.


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuthGranted(EventData):
    """A device was enrolled (its token shown once) or a person's login was created."""

    TYPE: ClassVar[str] = "auth.granted"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    credential: Literal["device", "user"]
    name: str
    role: str
    windows: list[str]
    replaced: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuthRevoked(EventData):
    """A device's token or a person's login no longer opens anything (their sessions end)."""

    TYPE: ClassVar[str] = "auth.revoked"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    credential: Literal["device", "user"]
    name: str
    role: str
    sessions: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuthLogin(EventData):
    """A person logged in: a session that ends at ``expires_at``."""

    TYPE: ClassVar[str] = "auth.login"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    name: str
    role: str
    windows: list[str]
    expires_at: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuthLogout(EventData):
    """A person ended their session."""

    TYPE: ClassVar[str] = "auth.logout"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    name: str
    role: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed(EventData):
    """A login refused: a wrong password (``name`` is the user's), an unknown name
    (``name`` is null: what was typed may be a password), or a user locked out after
    repeated failures (``locked_until``)."""

    TYPE: ClassVar[str] = "auth.failed"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    name: str | None
    reason: Literal["password", "unknown_user", "locked"]
    failures: int
    locked_until: str | None


# -- the hall --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NoticeShown(EventData):
    TYPE: ClassVar[str] = "notice.shown"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    id: str
    text: str
    until: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContentChanged(EventData):
    """The hall's own screen content changed (docs/screens.md): a notice, a community news
    item (``news``, 社区动态), a job item (``job``, 招聘信息) or an uploaded ``image`` was
    created, updated or deleted, by ``by`` (the manager's login name, or ``ops-token``).
    ``title`` is the notice's text or the item's title, cut to 60 characters."""

    TYPE: ClassVar[str] = "content.changed"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    kind: Literal["notice", "news", "job", "image"]
    id: str
    action: Literal["created", "updated", "deleted"]
    by: str
    title: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceChanged(EventData):
    TYPE: ClassVar[str] = "device.changed"
    RETENTION: ClassVar[EventClass] = EventClass.CHATTER
    device: str
    kind: str
    status: str
    detail: str
    since: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DayClosed(EventData):
    TYPE: ClassVar[str] = "day.closed"
    day: str
    next_day: str
    issued: dict[str, int]
    served: int
    expired: int
    carried: list[str] | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReportDaily(EventData):
    """A closed business day's figures (docs/reports.md): the hall's, each service's,
    window's and staff member's, and every 差评, sent once after ``day.closed``."""

    TYPE: ClassVar[str] = "report.daily"
    day: str
    hall: dict[str, Any]
    services: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    staff: list[dict[str, Any]]
    bad_ratings: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConfigApplied(EventData):
    TYPE: ClassVar[str] = "config.applied"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    sections: list[str]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRejected(EventData):
    TYPE: ClassVar[str] = "config.rejected"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str | None
    problems: list[str]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEvicted(EventData):
    """Seq ranges the hall dropped for good because storage was full or too old."""

    TYPE: ClassVar[str] = "outbox.evicted"
    count: int
    by_class: dict[str, int]
    ranges: list[list[int]]
    reason: str
    evicted_total: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OutboxAckRefused(EventData):
    """Central's ``ack`` that the hall did not apply, and why: ``malformed`` (not an ack;
    ``detail`` says what is wrong), ``wrong_epoch`` (for another epoch of this hall's
    store), ``beyond_last_seq`` (a seq this hall has not given out). ``epoch`` and ``seq``
    are the ack's (absent when it had none); ``hall_epoch``, ``last_seq`` and ``acked_seq``
    are the hall's (its store's epoch, the last seq it gave out in it, and the highest seq
    central acked that it applied since it started). At
    most one per reason per minute: the ones in between are only counted in ``/metrics``."""

    TYPE: ClassVar[str] = "outbox.ack_refused"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    reason: str
    epoch: int | None = omitted()
    seq: int | None = omitted()
    last_seq: int
    hall_epoch: int
    acked_seq: int
    detail: str | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RowQuarantined(EventData):
    """A stored row the hall could not read (damaged on disk) was set aside, kept whole, in
    its store's ``quarantine`` table; the hall goes on without it. Damaged event rows are
    reported by ``outbox.evicted`` (reason ``damaged``) instead."""

    TYPE: ClassVar[str] = "store.quarantined"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    table: str
    key: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateDownloading(EventData):
    """An update from central is being fetched (docs/fleet.md)."""

    TYPE: ClassVar[str] = "update.downloading"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    running: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateInstalled(EventData):
    """The bundle verified (signature, every file) and its version installed beside the
    running one; the switch and restart follow."""

    TYPE: ClassVar[str] = "update.installed"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    running: str
    key: str
    took_s: float
    # Where the time went: the download (with its SHA-256 check and unpacking), the
    # signature and every file's hash, the new virtual environment from the wheels.
    download_s: float | None = omitted()
    verify_s: float | None = omitted()
    install_s: float | None = omitted()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateActivated(EventData):
    """The new version runs and got healthy; the previous one stays for a rollback."""

    TYPE: ClassVar[str] = "update.activated"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    previous: str | None
    starts: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRolledBack(EventData):
    """The new version did not get healthy; the previous version runs again."""

    TYPE: ClassVar[str] = "update.rolled_back"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    to: str | None
    cause: str
    database: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateFailed(EventData):
    """An update stopped before the switch; the running version was not touched."""

    TYPE: ClassVar[str] = "update.failed"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    version: str
    stage: str
    error: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CertRequested(EventData):
    """The hall's client certificate expires soon: a new key was made on the hall and
    ``csr`` (PEM) asks central to sign it; answered by ``install_certificate``."""

    TYPE: ClassVar[str] = "cert.requested"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    csr: str
    not_after: str
    days_left: float
    serial: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CertRenewed(EventData):
    """Central's certificate passed the checks and replaced the old one (and its key);
    the link uses it from its next connection on."""

    TYPE: ClassVar[str] = "cert.renewed"
    RETENTION: ClassVar[EventClass] = EventClass.OPERATIONAL
    not_after: str
    serial: str
    previous_serial: str | None


EVENT_CLASSES: dict[str, type[EventData]] = {
    c.TYPE: c
    for c in (
        TicketIssued,
        TicketCalled,
        TicketRecalled,
        TicketServing,
        TicketFinished,
        TicketNoShow,
        TicketHeld,
        TicketReturned,
        TicketTransferred,
        TicketCancelled,
        TicketTurnNear,
        TicketStatusUpdate,
        TicketExpired,
        TicketPrintFailed,
        TicketReprinted,
        WindowOpened,
        WindowPaused,
        WindowResumed,
        WindowClosed,
        StaffSignedIn,
        StaffSignedOut,
        RosterSet,
        StaffingEdited,
        RatingRequested,
        RatingSubmitted,
        RatingTimedOut,
        IdentityRead,
        AppointmentsSet,
        DocumentCaptured,
        CaseRegistered,
        CaseUpdated,
        CaseDeadlineNear,
        CaseOverdue,
        CaseClosed,
        NoticeShown,
        ContentChanged,
        DeviceChanged,
        DayClosed,
        ReportDaily,
        ConfigApplied,
        ConfigRejected,
        OutboxEvicted,
        OutboxAckRefused,
        AuthGranted,
        AuthRevoked,
        AuthLogin,
        AuthLogout,
        AuthFailed,
        RowQuarantined,
        UpdateDownloading,
        UpdateInstalled,
        UpdateActivated,
        UpdateRolledBack,
        UpdateFailed,
        CertRequested,
        CertRenewed,
    )
}
# Every event type the hall emits, in the order the contract documents list them.
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CLASSES)

# The calls a screen, an LED strip or the voice announces.
CALLS = (TicketCalled, TicketRecalled, TicketReturned)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event: its typed payload and when it happened (the hall's time at commit)."""

    payload: EventData
    at: dt.datetime

    def __post_init__(self) -> None:
        if EVENT_CLASSES.get(self.payload.TYPE) is not type(self.payload):
            raise ValueError(f"{type(self.payload).__name__} is not in EVENT_CLASSES")

    @property
    def type(self) -> str:
        return self.payload.TYPE

    @property
    def data(self) -> JSON:
        return self.payload.to_data()

    @property
    def cls(self) -> EventClass:
        return self.payload.RETENTION


class EventDataError(ValueError):
    """A stored event whose type is unknown or whose data does not fit its class."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Unreadable(EventData):
    """A stored event that could not be read as its type (never emitted, never stored)."""

    type: str
    data: JSON
    problem: str


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def adapter(cls: type[EventData]) -> TypeAdapter[Any]:
    """The (cached) pydantic adapter that validates and describes one event class."""
    found = _ADAPTERS.get(cls.__qualname__)
    if found is None:
        found = _ADAPTERS[cls.__qualname__] = TypeAdapter(cls)
    return found


def parse_event(type_: str, data: JSON) -> EventData:
    """The typed payload of a stored ``(type, data)``; raises :class:`EventDataError`."""
    cls = EVENT_CLASSES.get(type_)
    if cls is None:
        raise EventDataError(f"unknown event type {type_!r}")
    try:
        parsed: EventData = adapter(cls).validate_python(data)
    except ValidationError as err:
        raise EventDataError(f"{type_} data does not fit its schema: {err}") from err
    return parsed


def read_event(type_: str, data: JSON) -> EventData:
    """Like :func:`parse_event`, but an unreadable event comes back as :class:`Unreadable`
    (consumers ``match`` past it instead of stopping)."""
    try:
        return parse_event(type_, data)
    except EventDataError as err:
        return Unreadable(type=type_, data=data, problem=str(err))


def data_schema(cls: type[EventData]) -> JSON:
    """The JSON Schema of one event type's ``data``."""
    schema: JSON = adapter(cls).json_schema(mode="serialization")
    return schema
