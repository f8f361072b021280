"""The MQTT contract with central (DESIGN §5) as pydantic models.

These models are the single source of the contract: the link validates with them, the
AsyncAPI document and JSON Schemas under ``docs/contract/`` are generated from them, and
``hallctl`` (central's console) builds its messages with them.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

CONTRACT_VERSION = 1
ROOT = "hall/v1"

Status = Literal["ok", "degraded", "offline", "error"]
ReplyStatus = Literal["ok", "rejected", "failed", "expired"]


# Every model of the contract is built on its first use (``defer_build``), not when this
# module is imported: an offline hall never uses most of them, and a connected one builds
# each once, at its first message (docs/benchmarks.md, "Start and client commands").


class Message(BaseModel):
    """A payload central receives: extra fields are allowed so the hall may add some."""

    model_config = ConfigDict(extra="allow", defer_build=True)


class Incoming(BaseModel):
    """A payload the hall receives: unknown fields are refused, they are usually mistakes,
    and so are values of another JSON type (``"3"`` or ``true`` for a number of pages).

    Strict: validate with ``model_validate_json`` (dates and times are ISO 8601 strings in
    JSON; :func:`validate_incoming` does it for an already parsed payload)."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


_M = TypeVar("_M", bound=Incoming)


def validate_incoming(model: type[_M], payload: Any) -> _M:
    """``model`` from a payload already parsed from JSON, by JSON's rules (strict types)."""
    return model.model_validate_json(json.dumps(payload, ensure_ascii=False))


class Topics:
    """Every topic of one hall, under ``hall/v1/{hall_id}/``."""

    def __init__(self, hall_id: str) -> None:
        self.hall_id = hall_id
        self.base = f"{ROOT}/{hall_id}"
        self.state = f"{self.base}/state"
        self.reply = f"{self.base}/reply"
        self.metrics = f"{self.base}/metrics"
        self.config = f"{self.base}/config"
        self.ack = f"{self.base}/ack"
        self.commands = f"{self.base}/cmd/+"
        self.command_prefix = f"{self.base}/cmd/"
        # A hall whose certificate expired asks here, over the renewal-only listener.
        self.renewal_request = f"{self.base}/renewal/request"

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{kind}"

    def device(self, device_id: str) -> str:
        return f"{self.base}/device/{device_id}"

    def command(self, name: str) -> str:
        return f"{self.command_prefix}{name}"

    # Captured documents (agent/features/documents.py): each page a file, uploaded in chunks.
    def file_chunk(self, file_id: str) -> str:
        return f"{self.base}/file/{file_id}/chunk"

    def file_complete(self, file_id: str) -> str:
        return f"{self.base}/file/{file_id}/complete"

    @property
    def file_ack(self) -> str:
        return f"{self.base}/file-ack"


# -- hall → central -------------------------------------------------------------------


class Birth(Message):
    """Retained on ``state`` at every connect."""

    online: Literal[True] = True
    boot_id: str
    session: int = Field(description="connection number since boot, starting at 1")
    agent_version: str
    config_version: str | None = Field(description="the config version central pushed last")
    started_at: str
    clock_ok: bool


class Will(Message):
    """Retained on ``state`` by the broker when the hall disappears, or by a clean stop."""

    online: Literal[False] = False
    boot_id: str
    session: int
    clean: bool = Field(default=False, description="true when the hall stopped on purpose")


class DeviceState(Message):
    """Retained on ``device/{device_id}``."""

    kind: str
    status: Status
    detail: str = ""
    since: str


class EventEnvelope(Message):
    """Every event, on ``event/{type}``."""

    v: Literal[1] = 1
    hall: str
    epoch: int = Field(ge=1)
    seq: int = Field(ge=1, description="gapless and strictly increasing per (hall, epoch)")
    id: str
    type: str
    at: str
    clock_ok: bool
    data: dict[str, Any]


class Reply(Message):
    """Exactly one per ``cmd_id``, on ``reply`` (and the MQTT 5 response topic if given)."""

    cmd_id: str
    name: str
    status: ReplyStatus
    error: str | None = None
    result: dict[str, Any] | None = None


class RenewalRequest(Message):
    """On ``renewal/request`` from the renewal-only listener (docs/fleet.md): a hall whose
    client certificate expired asks with its bootstrap certificate. The same fields as the
    ``cert.requested`` event; answered by ``install_certificate``."""

    csr: str
    not_after: str
    days_left: float
    serial: str


class Metrics(Message):
    """QoS 0 on ``metrics``, every ``mqtt.metrics_interval_s``."""

    at: str
    outbox_depth: int
    outbox_bytes: int
    oldest_pending_age_s: float | None
    evicted_total: int
    reconnects: int
    published_total: int
    last_seq: int
    epoch: int
    acked_seq: int = Field(
        0,
        description="the highest seq of this epoch central acked that the hall applied "
        "since it started (0: none yet)",
    )
    devices: dict[str, Status]


class EvictedData(Message):
    """``data`` of an ``outbox.evicted`` event: seq ranges the hall dropped for good."""

    count: int = 0
    by_class: dict[str, int] = Field(default_factory=dict)
    ranges: list[tuple[int, int]] = Field(
        default_factory=list, description="[first, last] seq ranges, both included"
    )
    reason: str = ""
    evicted_total: int = 0


class ReplayResult(Message):
    """``result`` of a ``replay_events`` reply: what is re-sent and what is gone."""

    from_seq: int | None = None
    to_seq: int | None = None
    resending: int = 0
    missing: list[tuple[int, int]] = Field(
        default_factory=list, description="ranges the hall no longer has (evicted)"
    )
    last_seq: int | None = None
    epoch: int | None = None


class FileChunk(Message):
    """One chunk of a captured page, on ``file/{file_id}/chunk``: store it at ``offset``."""

    file: str = Field(description="the page file's id, also in the topic")
    document: str = Field(description="the document (capture) it belongs to")
    index: int = Field(ge=0, description="0-based; every chunk but the last is chunk_bytes")
    chunks: int = Field(ge=1)
    offset: int = Field(ge=0)
    size: int = Field(ge=0, description="bytes of this chunk (decoded)")
    sha256: str = Field(description="SHA-256 (hex) of this chunk's bytes")
    data: str = Field(description="the chunk's bytes, base64")


class FileComplete(Message):
    """All chunks of a page were sent, on ``file/{file_id}/complete``; also re-sent to ask
    central what it lacks. Answer with ``file-ack``."""

    file: str
    document: str
    page: int = Field(ge=1)
    content_type: str
    size: int = Field(ge=0)
    sha256: str = Field(description="SHA-256 (hex) of the whole file")
    chunks: int = Field(ge=1)
    chunk_bytes: int = Field(ge=1)


# -- central → hall -------------------------------------------------------------------


class FileAck(Incoming):
    """Central's answer to ``complete`` on ``file-ack``: it stored the file whole and its
    sha256 matched (``complete``: the hall deletes its copy), or which chunks it lacks."""

    file: str = Field(min_length=1, max_length=128)
    status: Literal["complete", "missing"]
    missing: list[tuple[int, int]] = Field(
        default_factory=list, description="[first, last] chunk index ranges to send again"
    )


class Ack(Incoming):
    """Central has durably stored every event up to ``seq`` of ``epoch``."""

    epoch: int = Field(ge=1)
    seq: int = Field(ge=0)


class ConfigPush(Incoming):
    """Retained on ``config``: the desired central-managed part of the hall's config."""

    version: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]


class Command(Incoming):
    cmd_id: Annotated[str, Field(min_length=1, max_length=128)]
    expires_at: dt.datetime | None = Field(
        default=None, description="not executed after this instant (answered 'expired')"
    )


class IssueTicket(Command):
    service: str
    priority: Literal["normal", "elderly", "disabled", "veteran", "pregnant", "appointment"] = (
        "normal"
    )


class WindowCommand(Command):
    window: str


class PressCommand(WindowCommand):
    """A window operation central does on behalf of someone at the window."""

    staff: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description=(
            "who pressed: a staff member signed in at the window (two may be); recorded "
            "as who served. Absent: the first signed in there"
        ),
    )


class CallNext(PressCommand):
    pass


class Recall(PressCommand):
    pass


class CallNumber(PressCommand):
    number: Annotated[str, Field(pattern=r"^[A-Za-z]{1,2}\d{2,5}$")]


class NoShow(PressCommand):
    pass


class Hold(PressCommand):
    pass


class Transfer(PressCommand):
    service: str
    position: Literal["front", "back"] = "front"


class Finish(PressCommand):
    pass


class PauseWindow(PressCommand):
    reason: str = Field(default="", max_length=200)


class ResumeWindow(PressCommand):
    pass


class RequestRating(WindowCommand):
    pass


class Reprint(Command):
    number: Annotated[str, Field(pattern=r"^[A-Za-z]{1,2}\d{2,5}$")]
    day: dt.date | None = Field(default=None, description="the business day; today if absent")


class ShowNotice(Command):
    text: Annotated[str, Field(min_length=1, max_length=500)]
    until: dt.datetime | None = Field(default=None, description="hidden after this instant")
    notice_id: str | None = Field(default=None, max_length=64, description="replaces one")


class StaffMember(Incoming):
    staff: Annotated[str, Field(min_length=1, max_length=32, description="staff number")]
    name: Annotated[str, Field(min_length=1, max_length=32)]
    photo_url: str | None = Field(default=None, max_length=500)
    windows: list[str] = Field(default_factory=list)
    key_code: Annotated[str, Field(pattern=r"^\d{2,8}$")] | None = Field(
        default=None, description="digits typed then confirm on a window caller to sign in"
    )
    id_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description=(
            "SHA-256 (lower-case hex) of the staff member's ID card number (upper-case X): "
            "reading their card at a window's ID reader signs them in"
        ),
    )


class SetStaff(Command):
    staff: list[StaffMember] = Field(max_length=500)


class CaptureDocument(WindowCommand):
    pages: int = Field(default=1, ge=1, le=50)


class Appointment(Incoming):
    appointment_id: Annotated[str, Field(min_length=1, max_length=64)]
    id_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 (lower-case hex) of the citizen's ID number (upper-case X)"
    )
    service: str
    day: dt.date = Field(description="the business day of the appointment")


class SetAppointments(Command):
    """Replace the hall's appointments: a card of one at the kiosk on its day takes a
    ticket of that service with priority ``appointment``."""

    appointments: list[Appointment] = Field(max_length=5000)


class ReplayEvents(Command):
    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)


class GetStatus(Command):
    pass


class GetReport(Command):
    """The hall's statistics for business days ``from``..``to`` (docs/reports.md): the
    hall's figures, and each group of the view ``by`` (every view when absent)."""

    # ``from`` is a Python keyword: the field is ``from_``, sent and read as ``from``.
    model_config = ConfigDict(
        extra="forbid", strict=True, serialize_by_alias=True, defer_build=True
    )

    from_: dt.date = Field(alias="from", description="the first business day")
    to: dt.date | None = Field(default=None, description="the last business day; from if absent")
    by: Literal["service", "window", "staff", "hour"] | None = Field(
        default=None, description="one view; all four when absent"
    )


class RunDoctor(Command):
    """The findings of ``hall-agent doctor --json`` (docs/fleet.md); rate-limited."""


class GetLogs(Command):
    """The hall's last log lines (masked: no ID or phone number whole), newest last;
    rate-limited, bounded to one reply."""

    since: dt.datetime | None = Field(default=None, description="only lines at or after this")
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="this level and above"
    )
    lines: int = Field(default=200, ge=1, le=1000, description="at most this many lines")


class GetConfig(Command):
    """The applied config with every secret replaced by ``<redacted>``; rate-limited."""


class UpdateAgent(Command):
    """Install a signed release (docs/fleet.md): fetched from ``url``, checked against
    ``sha256`` and ``size`` and the signature, installed beside the running version, then
    switched to and restarted; rolled back if it does not get healthy."""

    version: Annotated[str, Field(min_length=1, max_length=64)]
    url: Annotated[str, Field(pattern=r"^https?://", max_length=2000)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 (hex) of the bundle file"
    )
    size: int = Field(ge=1, le=2 << 30, description="bytes of the bundle file")


class CaseResult(Command):
    """Central's result for a proxy case (docs/cases.md): its new status, a note for staff
    and the citizen's receipt desk, and optionally a new promised date."""

    case: str = Field(min_length=1, max_length=32, description="the case number")
    status: Literal["processing", "done", "returned", "closed"]
    note: str | None = Field(default=None, max_length=200)
    promised: dt.date | None = Field(default=None, description="a new promised date")


class InstallCertificate(Command):
    """Central's answer to ``cert.requested`` (docs/fleet.md): the hall's new client
    certificate. Installed only if its public key is the pending key's, it chains to
    ``mqtt.tls.ca_file``, it is valid and names this hall; otherwise refused, nothing
    replaced. Used from the next connection on."""

    certificate: Annotated[str, Field(min_length=1, max_length=64 * 1024)] = Field(
        description="PEM: the hall's certificate (intermediates may follow it)"
    )
    chain: Annotated[str, Field(max_length=64 * 1024)] | None = Field(
        default=None, description="PEM: intermediate CA certificates, if any"
    )


COMMANDS: dict[str, type[Command]] = {
    "issue_ticket": IssueTicket,
    "call_next": CallNext,
    "recall": Recall,
    "call_number": CallNumber,
    "no_show": NoShow,
    "hold": Hold,
    "transfer": Transfer,
    "finish": Finish,
    "pause_window": PauseWindow,
    "resume_window": ResumeWindow,
    "request_rating": RequestRating,
    "reprint": Reprint,
    "show_notice": ShowNotice,
    "set_staff": SetStaff,
    "capture_document": CaptureDocument,
    "set_appointments": SetAppointments,
    "replay_events": ReplayEvents,
    "get_status": GetStatus,
    "get_report": GetReport,
    "run_doctor": RunDoctor,
    "get_logs": GetLogs,
    "get_config": GetConfig,
    "update_agent": UpdateAgent,
    "case_result": CaseResult,
    "install_certificate": InstallCertificate,
}
