"""Central's commands: validated, deduplicated, executed through the hall's single writer,
answered exactly once per ``cmd_id`` (and again, unchanged, when a ``cmd_id`` repeats).

Reply statuses: ``ok``; ``rejected`` (not JSON, unknown name, invalid parameters — the
message says what to fix); ``failed`` (a valid command the hall's rules refused, e.g. the
window is paused); ``expired`` (its ``expires_at`` or MQTT message expiry passed before
it could run; it was not executed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.central import contract as c
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import Outcome
from agent.core.errors import QueueError
from agent.core.events import Event
from agent.core.model import Priority, Source
from agent.core.operations import Operation
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import CommandRecord, Store, Written
from agent.runtime.tasks import BackgroundTasks

if TYPE_CHECKING:
    # Imported when the link connects (agent/central/link.py): an offline hall never does.
    import aiomqtt
    from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

Replayer = Callable[["aiomqtt.Client", int, int], Awaitable[int]]
# A handler a device feature registers (reprint, request_rating, capture_document):
# it returns the reply's result, or raises QueueError for a refusal.
Handler = Callable[[c.Command], Awaitable[dict[str, Any]]]

# At most this many events are re-sent for one replay_events command.
MAX_REPLAY = 100_000
# No command needs more; a larger payload is a mistake or an attack on a small Pi.
MAX_PAYLOAD = 256 * 1024


def describe_validation(err: ValidationError) -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "payload"
        if problem["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown parameter; remove it")
        elif problem["type"] == "missing":
            parts.append(f"{where}: missing; add it")
        else:
            parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


@dataclasses.dataclass(slots=True)
class _Answer:
    reply: c.Reply
    record: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class CommandHandlers:
    """The commands device features execute, each typed by its command; None: the feature
    is not running here (the reply says so)."""

    reprint: Callable[[c.Reprint], Awaitable[dict[str, Any]]] | None = None
    request_rating: Callable[[c.RequestRating], Awaitable[dict[str, Any]]] | None = None
    set_appointments: Callable[[c.SetAppointments], Awaitable[dict[str, Any]]] | None = None
    capture_document: Callable[[c.CaptureDocument], Awaitable[dict[str, Any]]] | None = None
    get_report: Callable[[c.GetReport], Awaitable[dict[str, Any]]] | None = None
    run_doctor: Callable[[c.RunDoctor], Awaitable[dict[str, Any]]] | None = None
    get_logs: Callable[[c.GetLogs], Awaitable[dict[str, Any]]] | None = None
    get_config: Callable[[c.GetConfig], Awaitable[dict[str, Any]]] | None = None
    update_agent: Callable[[c.UpdateAgent], Awaitable[dict[str, Any]]] | None = None
    install_certificate: Callable[[c.InstallCertificate], Awaitable[dict[str, Any]]] | None = None
    case_result: Callable[[c.CaseResult], Awaitable[dict[str, Any]]] | None = None

    async def run(self, command: c.Command) -> dict[str, Any] | None:
        """The feature's result; None when no feature takes this command here."""
        match command:
            case c.Reprint() if self.reprint is not None:
                return await self.reprint(command)
            case c.RequestRating() if self.request_rating is not None:
                return await self.request_rating(command)
            case c.SetAppointments() if self.set_appointments is not None:
                return await self.set_appointments(command)
            case c.CaptureDocument() if self.capture_document is not None:
                return await self.capture_document(command)
            case c.GetReport() if self.get_report is not None:
                return await self.get_report(command)
            case c.RunDoctor() if self.run_doctor is not None:
                return await self.run_doctor(command)
            case c.GetLogs() if self.get_logs is not None:
                return await self.get_logs(command)
            case c.GetConfig() if self.get_config is not None:
                return await self.get_config(command)
            case c.UpdateAgent() if self.update_agent is not None:
                return await self.update_agent(command)
            case c.InstallCertificate() if self.install_certificate is not None:
                return await self.install_certificate(command)
            case c.CaseResult() if self.case_result is not None:
                return await self.case_result(command)
        return None


class CommandDesk:
    """Turns central's command messages into hall operations and replies."""

    def __init__(
        self,
        hall: Hall,
        topics: c.Topics,
        devices: DeviceBoard,
        handlers: CommandHandlers | None = None,
    ) -> None:
        self.hall = hall
        self.topics = topics
        self.devices = devices
        self.handlers = handlers or CommandHandlers()
        # Where a command's work that outlasts its reply runs (a replay): the link's tasks.
        self.background: BackgroundTasks | None = None

    async def handle(
        self,
        client: aiomqtt.Client,
        name: str,
        payload: bytes,
        properties: Properties | None,
        replay: Replayer,
    ) -> c.Reply:
        received = time.monotonic()
        expiry = getattr(properties, "MessageExpiryInterval", None) if properties else None
        answer = await self._answer(client, name, payload, received, expiry, replay)
        await self._send(client, answer.reply, properties)
        return answer.reply

    async def _answer(
        self,
        client: aiomqtt.Client,
        name: str,
        payload: bytes,
        received: float,
        expiry: int | None,
        replay: Replayer,
    ) -> _Answer:
        if len(payload) > MAX_PAYLOAD:
            return _Answer(
                _rejected("", name, f"the payload is over {MAX_PAYLOAD} bytes; send less"), False
            )
        try:
            raw = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return _Answer(_rejected("", name, f"the payload is not UTF-8 JSON: {err}"), False)
        except RecursionError:
            return _Answer(
                _rejected("", name, "the payload nests arrays or objects too deeply; flatten it"),
                False,
            )
        if not isinstance(raw, dict):
            return _Answer(
                _rejected("", name, "the payload must be a JSON object with a cmd_id"), False
            )
        cmd_id = raw.get("cmd_id")
        if not isinstance(cmd_id, str) or not 0 < len(cmd_id) <= 128 or not _is_text(cmd_id):
            return _Answer(
                _rejected(
                    "", name, "every command needs a cmd_id: a unique string of 1-128 characters"
                ),
                False,
            )
        earlier = await self.hall.store_read(lambda s: s.command_reply(cmd_id))
        if earlier is not None:
            log.info("command %s (%s) repeated: answering again, not executing", cmd_id, name)
            return _Answer(c.Reply.model_validate(earlier), False)
        reply = await self._decide(client, name, raw, cmd_id, received, expiry, replay)
        return _Answer(reply)

    async def _decide(
        self,
        client: aiomqtt.Client,
        name: str,
        raw: dict[str, Any],
        cmd_id: str,
        received: float,
        expiry: int | None,
        replay: Replayer,
    ) -> c.Reply:
        if not _is_text(raw):
            return await self._record(
                _rejected(
                    cmd_id,
                    name,
                    "a string holds half of a character (a \\ud800-style escape); send text",
                )
            )
        model = c.COMMANDS.get(name)
        if model is None:
            known = ", ".join(sorted(c.COMMANDS))
            return await self._record(
                _rejected(cmd_id, name, f"unknown command {name!r}; the commands are {known}")
            )
        try:
            command = c.validate_incoming(model, raw)
        except ValidationError as err:
            return await self._record(_rejected(cmd_id, name, describe_validation(err)))
        if expiry is not None and time.monotonic() - received > expiry:
            return await self._record(_expired(cmd_id, name, "its MQTT message expiry passed"))
        if command.expires_at is not None:
            expires = command.expires_at
            if expires.tzinfo is None:
                return await self._record(
                    _rejected(cmd_id, name, "expires_at needs a time zone, e.g. +08:00 or Z")
                )
            if self.hall.clock_ok() and dt.datetime.now(dt.UTC) >= expires:
                return await self._record(
                    _expired(cmd_id, name, f"it expired at {expires.isoformat()}")
                )
        log.info("command %s from central: %s", cmd_id, name)
        return await self._execute(client, name, command, replay)

    # -- execution -----------------------------------------------------------------------

    async def _execute(
        self, client: aiomqtt.Client, name: str, command: c.Command, replay: Replayer
    ) -> c.Reply:
        operation = _queue_operation(command)
        if operation is not None:
            return await self._run_queue(name, command, operation)
        if isinstance(command, c.ReplayEvents):
            return await self._replay(client, command, replay)
        if isinstance(command, c.GetStatus):
            snapshot = await self.hall.read(lambda e, n: e.snapshot(n))
            result = {
                "day": snapshot["day"],
                "services": snapshot["services"],
                "windows": snapshot["windows"],
                "waiting": len(snapshot["waiting"]),
                "epoch": self.hall.store.epoch,
                "last_seq": self.hall.store.last_seq,
                "devices": {h.device_id: h.status for h in self.devices.all()},
            }
            return await self._record(_ok(command, name, result))
        if isinstance(command, c.ShowNotice):
            return await self._show_notice(name, command)
        if isinstance(command, c.SetStaff):
            return await self._set_staff(name, command)
        try:
            done = await self.handlers.run(command)
        except QueueError as err:
            return await self._record(_failed(command, name, err.message))
        if done is None:
            return await self._record(_failed(command, name, _NOT_AVAILABLE.get(name, "")))
        return await self._record(_ok(command, name, done))

    async def _run_queue(self, name: str, command: c.Command, operation: Operation) -> c.Reply:
        replies: list[c.Reply] = []

        def record(outcome: Outcome | None, error: QueueError | None) -> CommandRecord:
            if error is not None:
                reply = _failed(command, name, error.message)
            else:
                assert outcome is not None
                reply = _ok(command, name, outcome.result)
            replies.append(reply)
            return _to_record(reply)

        with contextlib.suppress(QueueError):  # a refusal is the reply, saved with it
            await self.hall.execute(operation, record=record)
        return replies[-1]

    async def _record(
        self,
        reply: c.Reply,
        events: list[Event] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> c.Reply:
        record = _to_record(reply)

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            stamped = [dataclasses.replace(e, at=now) for e in events or []]
            stored = store.append(stamped, clock_ok=clock_ok, command=record, settings=settings)
            return Written(stored, None)

        await self.hall.write(write)
        return reply

    async def _replay(
        self, client: aiomqtt.Client, command: c.ReplayEvents, replay: Replayer
    ) -> c.Reply:
        name = "replay_events"
        if command.to_seq < command.from_seq:
            return await self._record(
                _rejected(command.cmd_id, name, "to_seq is before from_seq; swap them")
            )
        if command.to_seq - command.from_seq + 1 > MAX_REPLAY:
            return await self._record(
                _rejected(command.cmd_id, name, f"at most {MAX_REPLAY} events per replay; split it")
            )
        last = self.hall.store.last_seq
        to_seq = min(command.to_seq, last)
        seqs: list[int] = []
        if command.from_seq <= to_seq:
            seqs = await self.hall.store_read(lambda s: s.seqs_between(command.from_seq, to_seq))
        missing = _gaps(command.from_seq, to_seq, seqs)
        result = c.ReplayResult(
            from_seq=command.from_seq,
            to_seq=to_seq,
            resending=len(seqs),
            missing=missing,
            last_seq=last,
            epoch=self.hall.store.epoch,
        )
        reply = await self._record(_ok(command, name, result.model_dump(mode="json")))
        if seqs:
            assert self.background is not None, "commands arrive only while the link runs"
            self.background.create_task(
                _resend(replay, client, command.from_seq, to_seq), name="link-replay"
            )
        return reply

    async def _show_notice(self, name: str, command: c.ShowNotice) -> c.Reply:
        notices = await self.hall.store_read(lambda s: s.setting("notices")) or []
        now = dt.datetime.now(dt.UTC)
        notice_id = command.notice_id or command.cmd_id
        kept = [
            n
            for n in notices
            if n["id"] != notice_id
            and (n.get("until") is None or dt.datetime.fromisoformat(n["until"]) > now)
        ]
        shown = ev.NoticeShown(
            id=notice_id,
            text=command.text,
            until=None if command.until is None else command.until.isoformat(),
        )
        notice = shown.to_data()
        kept.append(notice)
        event = Event(shown, now)
        return await self._record(
            _ok(command, name, {"notice": notice, "notices": len(kept)}),
            [event],
            {"notices": kept},
        )

    async def _set_staff(self, name: str, command: c.SetStaff) -> c.Reply:
        roster = [m.model_dump() for m in command.staff]
        numbers = [m["staff"] for m in roster]
        if len(set(numbers)) != len(numbers):
            dupes = sorted({n for n in numbers if numbers.count(n) > 1})
            return await self._record(
                _rejected(command.cmd_id, name, f"staff numbers repeat: {', '.join(dupes)}")
            )
        codes = [m["key_code"] for m in roster if m.get("key_code")]
        if len(set(codes)) != len(codes):
            return await self._record(
                _rejected(
                    command.cmd_id,
                    name,
                    "two staff members share a key_code; sign-in codes must be unique",
                )
            )
        now = dt.datetime.now(dt.UTC)
        event = Event(ev.RosterSet(count=len(roster)), now)
        return await self._record(
            _ok(command, name, {"staff": len(roster)}), [event], {"staff": roster}
        )

    # -- replies ---------------------------------------------------------------------------

    async def _send(
        self, client: aiomqtt.Client, reply: c.Reply, properties: Properties | None
    ) -> None:
        body = reply.model_dump_json(exclude_none=True)
        await client.publish(self.topics.reply, body, qos=1)
        response_topic = getattr(properties, "ResponseTopic", None) if properties else None
        if response_topic:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            correlation = getattr(properties, "CorrelationData", None)
            if correlation is not None:
                props.CorrelationData = correlation
            await client.publish(response_topic, body, qos=1, properties=props)


_NOT_AVAILABLE = {
    "reprint": "this hall has no ticket printer running; reprint is not available",
    "request_rating": "this window has no satisfaction rater running",
    "capture_document": "this window has no document camera running",
    "get_report": "this hall's reports are not running",
    "run_doctor": "diagnostics are not running in this agent",
    "get_logs": "diagnostics are not running in this agent",
    "get_config": "diagnostics are not running in this agent",
    "update_agent": "updates are not running in this agent",
    "install_certificate": "this hall has no client certificate to renew (mqtt.tls.cert_file)",
    "case_result": "this hall's proxy cases are not running",
}


# Central's window commands that need nothing but the window.
_WINDOW_OPERATIONS: dict[type[c.PressCommand], type[op.WindowOperation]] = {
    c.CallNext: op.CallNext,
    c.Recall: op.Recall,
    c.NoShow: op.NoShow,
    c.Hold: op.Hold,
    c.Finish: op.Finish,
    c.ResumeWindow: op.Resume,
}


def _queue_operation(command: c.Command) -> Operation | None:
    """The queue operation a central command asks for (None: not a queue operation)."""
    if isinstance(command, c.PressCommand):
        simple = _WINDOW_OPERATIONS.get(type(command))
        if simple is not None:
            return simple(window=command.window, staff=command.staff)
    match command:
        case c.IssueTicket():
            priority = Priority(command.priority)
            return op.Take(
                service=command.service,
                source=Source.CENTRAL,
                priority=priority,
                granted_by="central" if priority.is_green else None,
            )
        case c.CallNumber():
            return op.CallNumber(window=command.window, number=command.number, staff=command.staff)
        case c.Transfer():
            return op.Transfer(
                window=command.window,
                service=command.service,
                position=command.position,
                staff=command.staff,
            )
        case c.PauseWindow():
            return op.Pause(window=command.window, reason=command.reason, staff=command.staff)
    return None


async def _resend(replay: Replayer, client: aiomqtt.Client, from_seq: int, to_seq: int) -> None:
    import aiomqtt

    try:
        sent = await replay(client, from_seq, to_seq)
    except aiomqtt.MqttError as err:
        log.warning("replay of %d..%d stopped: %s (central may ask again)", from_seq, to_seq, err)
        return
    log.info("replayed %d events (%d..%d) for central", sent, from_seq, to_seq)


def _is_text(value: Any) -> bool:
    """No lone surrogate from a ``\\u`` escape: such a string cannot be stored or sent."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _gaps(start: int, end: int, present: list[int]) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    expected = start
    for seq in present:
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = seq + 1
    if expected <= end:
        gaps.append((expected, end))
    return gaps


def _to_record(reply: c.Reply) -> CommandRecord:
    return CommandRecord(
        cmd_id=reply.cmd_id,
        name=reply.name,
        received_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        reply=reply.model_dump(exclude_none=True),
    )


def _ok(command: c.Command, name: str, result: dict[str, Any]) -> c.Reply:
    return c.Reply(cmd_id=command.cmd_id, name=name, status="ok", result=result)


def _failed(command: c.Command, name: str, error: str) -> c.Reply:
    return c.Reply(cmd_id=command.cmd_id, name=name, status="failed", error=error)


def _rejected(cmd_id: str, name: str, error: str) -> c.Reply:
    return c.Reply(cmd_id=cmd_id, name=name, status="rejected", error=error)


def _expired(cmd_id: str, name: str, why: str) -> c.Reply:
    return c.Reply(cmd_id=cmd_id, name=name, status="expired", error=f"not executed: {why}")
