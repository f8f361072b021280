"""Ticket printing: every ticket the kiosk issues is printed once it is saved.

The ticket exists before it is printed: this component follows the hall's committed
``ticket.issued`` events and prints those whose source prints (kiosk buttons, touch
screen, QR, ID card, the local API), so a ticket from any input is printed the same way
and a printer failure can never lose one. A failed print is recorded as a
``ticket.print_failed`` event; the kiosk shows the number on screen and staff reprint it
(CLI, local API, central command) once the printer is fixed.

A print is concluded when it came out or its failure was recorded. Which issued tickets
were concluded is saved (the setting ``printing.concluded``: every ``ticket.issued`` up to a
seq), so a ticket saved just before the agent was killed is not forgotten: on the next start
one issued in the last minute is printed (the citizen is likely still at the kiosk; a
print that had come out just before the kill comes out twice), an older one of the day is
recorded as ``ticket.print_failed``.

The printer's health is polled; while it cannot print (paper out, cover open,
unreachable) issuing from printing sources is refused with the reason, and the device's
state (``ok``, ``degraded`` for paper near end, ``error``, ``offline``) goes to the device
board, from which central gets it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import (
    FileTransport,
    HallAgentConfig,
    PrinterDevice,
    UsbTransport,
)
from agent.core import events as ev
from agent.core import wording
from agent.core.engine import QueueEngine
from agent.core.errors import NotFound, Refused
from agent.core.events import Event
from agent.core.model import Priority, TicketStatus
from agent.features._targets import line_target
from agent.features.ticket_text import (
    TicketFacts,
    checklist,
    status_url,
    wait_lines,
    window_names,
)
from agent.runtime.devices import DeviceBoard, DeviceStatus
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.store import Store, StoredEvent, StoreError, Written
from agent.runtime.tasks import BackgroundTasks, stop
from drivers.printer import (
    FileTarget,
    Printer,
    PrinterHealth,
    PrinterTarget,
    PrintJob,
    PrintQueue,
    PrintResult,
    UsbTarget,
    open_printer,
)
from protocols.escpos import commands_loaded, encode_gb18030, encode_raster
from protocols.escpos_model import (
    LINE_DOTS,
    Align,
    Block,
    Feed,
    Paper,
    QrCode,
    Rule,
    TextLine,
    TicketDocument,
)
from protocols.escpos_raster import FALLBACK_FONTS, Typesetter

if TYPE_CHECKING:
    # The contract's command models: only this module's types (the link builds them).
    from agent.central import contract as c

log = logging.getLogger(__name__)

# Tickets issued but not concluded when the agent stopped, with their issue events.
_Owed = list[tuple[StoredEvent, ev.TicketIssued]]

# How long the kiosk's take waits for its ticket to come out before answering "pending".
PRINT_WAIT_S = 5.0
# A reprint is answered once printed; the queue gives up on a job well before this.
REPRINT_WAIT_S = 15.0
# Print outcomes kept for callers that ask after the fact (the take that is still waiting).
_KEPT_OUTCOMES = 256
# The setting that says up to which seq every issued ticket's print was concluded.
PRINT_MARK = "printing.concluded"
# A ticket whose print was cut off by a stop is printed on the next start if it was issued
# this recently (the citizen is likely still at the kiosk); an older one is recorded as
# not printed.
RESUME_WITHIN_S = 60.0

_PRIORITY_LABELS = {
    Priority.ELDERLY: "绿色通道 · 老年人",
    Priority.DISABLED: "绿色通道 · 残疾人",
    Priority.VETERAN: "绿色通道 · 军人",
    Priority.PREGNANT: "绿色通道 · 孕妇",
    Priority.APPOINTMENT: "预约",
}


# Blank lines of LINE_DOTS above and below a QR code: its quiet zone (ISO/IEC 18004 asks for
# 4 modules; a printer's native QR has none of its own).
def _quiet_lines(module: int) -> int:
    return -(-QUIET_MODULES * module // LINE_DOTS)


QUIET_MODULES = 4


def ticket_document(
    config: HallAgentConfig, printer: PrinterDevice, facts: TicketFacts, *, reprint: bool = False
) -> TicketDocument:
    """The ticket's layout: hall, service, the number very large, the wait, time, QR, footer."""
    layout = config.ticket
    narrow = printer.paper_width_mm == 58
    big = 2 if layout.large else 1
    number_scale = (5 if narrow else 7) if layout.large else (4 if narrow else 6)
    try:
        service_name = config.service(facts.service).name
    except KeyError:
        service_name = facts.service
    blocks: list[Block] = []
    if reprint:
        blocks.append(TextLine("【补打 REPRINT】", bold=True))
    blocks += [
        TextLine(config.hall.name, scale=big if layout.large else 1, bold=True),
        Feed(),
        TextLine(service_name, scale=2),
        TextLine(facts.number, scale=number_scale, bold=True),
    ]
    label = _PRIORITY_LABELS.get(facts.priority)
    if label:
        blocks.append(TextLine(label, scale=big, bold=True))
    if layout.show_windows and (names := window_names(config, facts.service)):
        blocks.append(TextLine(f"请到 {'、'.join(names)} 办理", scale=big, bold=True))
    if layout.show_wait and facts.ahead is not None:
        blocks += [
            TextLine(text, scale=big) for text in wait_lines(facts.ahead, facts.wait_minutes)
        ]
    if facts.issued_at is not None:
        local = facts.issued_at.astimezone(config.hall.zone)
        blocks.append(TextLine(f"取号时间 {local:%Y-%m-%d %H:%M}"))
    if config.hall.phone:
        blocks.append(TextLine(f"咨询电话 {config.hall.phone}", scale=big))
    materials, more = checklist(config, facts.service)
    if materials:
        blocks += [Rule(), TextLine("请备齐以下材料（一次性告知）：", bold=True, align=Align.LEFT)]
        blocks += [TextLine(f"□ {item}", scale=big, align=Align.LEFT) for item in materials]
        if more:
            blocks.append(TextLine(f"另有 {more} 项，请扫码或到引导台查看", align=Align.LEFT))
    url = status_url(config, facts)
    if url:
        module = 4 if narrow else 6
        quiet = Feed(_quiet_lines(module))
        blocks += [quiet, QrCode(url, module=module), quiet]
        blocks.append(TextLine("扫码查看排队进度" if facts.token else "扫码查看"))
    if layout.footer:
        blocks.append(Rule())
        blocks += [TextLine(line, scale=big, align=Align.CENTER) for line in layout.footer]
    return TicketDocument(tuple(blocks))


class IssuingRefused(Refused):
    """A ticket that would be printed is refused: the printer cannot print now. The
    message names the printer's problem (staff, the log); the citizen is told to go to
    the guide desk (:data:`agent.core.wording.PRINTER_UNAVAILABLE`)."""

    code = "printer_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, citizen=wording.PRINTER_UNAVAILABLE)


def printer_target(device: PrinterDevice) -> PrinterTarget:
    """The driver's view of the configured transport."""
    transport = device.transport
    match transport:
        case UsbTransport():
            return UsbTarget(transport.vendor_id, transport.product_id, transport.serial)
        case FileTransport():
            return FileTarget(transport.path)
        case _:
            return line_target(transport)


async def installed_fallbacks() -> list[Path]:
    """The fallback fonts for rare characters that are installed (fonts-hanazono)."""
    found = await asyncio.to_thread(lambda: [p for p in map(Path, FALLBACK_FONTS) if p.is_file()])
    if not found:
        log.info(
            "no font for rare characters (install fonts-hanazono): a character outside "
            "the ticket font, e.g. in a name, prints as an empty box"
        )
    return found


def _font_head(path: Path) -> bytes:
    """The font file's first bytes: it can be read and is not empty."""
    with path.open("rb") as fh:
        return fh.read(4)


def _device_state(health: PrinterHealth) -> tuple[DeviceStatus, str]:
    if not health.connected:
        return "offline", health.reason()
    if health.problems:
        return "error", health.reason()
    if health.warnings:
        return "degraded", health.reason()
    return "ok", health.detail


def _find_ticket(number: str, engine: QueueEngine, now: dt.datetime) -> TicketFacts:
    wanted = number.strip().upper()
    for ticket in engine.tickets.values():
        if ticket.day == engine.hall.day and ticket.number == wanted:
            waiting = ticket.status is TicketStatus.WAITING
            ahead = engine.people_ahead(ticket, now) if waiting else None
            wait = engine.wait_minutes(ticket, now) if waiting else None
            return TicketFacts.of_ticket(ticket, ahead=ahead, wait_minutes=wait)
    raise NotFound(f"no ticket {wanted} was issued today ({engine.hall.day.isoformat()})")


class TicketPrinting:
    """The hall's ticket printer at work. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard,
        device: PrinterDevice,
        *,
        printer: Printer | None = None,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.device = device
        self.paper = Paper.for_width(device.paper_width_mm)
        self._printer = printer or open_printer(printer_target(device))
        self.queue = PrintQueue(
            self._printer, poll_interval_s=device.poll_interval_s, on_health=self._health
        )
        self._typesetter: Typesetter | None = None
        self._font_problem = ""
        # The first tickets are encoded off the event loop, in turn (python-escpos loads).
        self._first_encodes = asyncio.Lock()
        self._outcomes: collections.OrderedDict[str, asyncio.Future[PrintResult]] = (
            collections.OrderedDict()
        )
        self._tasks = BackgroundTasks()
        self._stack = contextlib.AsyncExitStack()
        # Issued tickets whose print is under way, the highest issued seq seen, and the seq
        # up to which every print is concluded (as saved).
        self._in_flight: set[int] = set()
        self._highest = 0
        self._mark = 0

    @property
    def config(self) -> HallAgentConfig:
        return self.hall.config

    async def __aenter__(self) -> TicketPrinting:
        await self._load_font()
        async with contextlib.AsyncExitStack() as stack:
            issued = await stack.enter_async_context(self.hall.events())
            # Left after the queue: the prints under way end once it has closed.
            self._tasks = await stack.enter_async_context(BackgroundTasks())
            await stack.enter_async_context(self.queue)
            unfinished = await self._unfinished()
            listener = self._tasks.create_task(self._follow_issued(issued), name="printer-tickets")
            stack.push_async_callback(stop, listener)
            self._stack = stack.pop_all()
        await self._resume(unfinished)
        self._health(self.queue.health)
        log.info(
            "printing tickets on %s (%s profile, %d mm): %s",
            self._printer.endpoint,
            self.device.profile,
            self.device.paper_width_mm,
            self.queue.health.reason() or "ready",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _load_font(self) -> None:
        path: Path = self.config.ticket.font
        problem: str | None
        try:
            head = await asyncio.to_thread(_font_head, path)
        except OSError as err:
            problem = f"cannot be read ({err.strerror})"
        else:
            problem = None if head else "is empty"
        if problem is not None:
            self._font_problem = (
                f"the CJK font {path} {problem}; install fonts-wqy-microhei or set ticket.font"
            )
            if self.device.profile == "raster":
                log.error(
                    "printer %s: %s; tickets cannot be printed", self.device.id, self._font_problem
                )
            else:
                log.warning(
                    "printer %s: %s; characters outside the printer's font will not print",
                    self.device.id,
                    self._font_problem,
                )
            return
        # By path: FreeType maps the file (shared page cache), no private 5 MB copy.
        self._typesetter = Typesetter(path, self.paper.width_dots, await installed_fallbacks())

    # -- health and the kiosk ---------------------------------------------------------------

    def _health(self, health: PrinterHealth) -> None:
        status, detail = _device_state(health)
        if self.device.profile == "raster" and self._typesetter is None:
            status, detail = "error", self._font_problem
        self.devices.report(self.device.id, status, detail)

    def can_print(self) -> tuple[bool, str]:
        if self.device.profile == "raster" and self._typesetter is None:
            return False, self._font_problem
        health = self.queue.health
        return health.can_print, health.reason() if not health.can_print else ""

    def prints(self, source: str) -> bool:
        return source in self.config.ticket.print_sources

    def issuing_refusal(self, source: str) -> str | None:
        """Why a ticket from ``source`` cannot be issued now, or None."""
        if not self.prints(source):
            return None
        ok, reason = self.can_print()
        return None if ok else f"tickets cannot be printed now: {reason}"

    def check_issuing(self, source: str) -> None:
        """Raise :class:`IssuingRefused` when a ticket from ``source`` cannot be printed."""
        refusal = self.issuing_refusal(source)
        if refusal is not None:
            raise IssuingRefused(refusal)

    def state(self) -> dict[str, Any]:
        """For the kiosk and the status page."""
        ok, reason = self.can_print()
        health = self.queue.health
        status, detail = _device_state(health)
        return {
            # reason: the printer's problem (staff); citizen: what the kiosk says instead.
            "issuing": {
                "enabled": ok,
                "reason": None if ok else reason,
                "citizen": None if ok else wording.PRINTER_UNAVAILABLE,
            },
            "printer": {
                "device": self.device.id,
                "endpoint": self._printer.endpoint,
                "status": status,
                "detail": detail,
                "problems": list(health.problems),
                "warnings": list(health.warnings),
                "printed": self.queue.printed,
                "failed": self.queue.failed,
                "queued": self.queue.waiting,
            },
            "print_sources": list(self.config.ticket.print_sources),
        }

    # -- printing -----------------------------------------------------------------------------

    def encode(self, facts: TicketFacts, *, reprint: bool = False) -> bytes:
        return self.encode_document(
            ticket_document(self.config, self.device, facts, reprint=reprint)
        )

    def encode_document(self, doc: TicketDocument) -> bytes:
        """Any layout in this printer's profile (a ticket, a proxy case's receipt)."""
        if self.device.profile == "raster":
            assert self._typesetter is not None
            return encode_raster(doc, self.paper, self._typesetter)
        return encode_gb18030(
            doc, self.paper, font_charset=self.device.font_charset, typesetter=self._typesetter
        )

    def _outcome(self, key: str) -> asyncio.Future[PrintResult]:
        future = self._outcomes.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._outcomes[key] = future
            while len(self._outcomes) > _KEPT_OUTCOMES:
                self._outcomes.popitem(last=False)
        return future

    async def outcome(self, ticket_id: str, within: float = PRINT_WAIT_S) -> dict[str, Any]:
        """How the ticket's print went, waiting at most ``within`` s: for the kiosk."""
        try:
            async with asyncio.timeout(within):
                result = await asyncio.shield(self._outcome(ticket_id))
        except TimeoutError:
            return {"state": "pending"}
        if result.printed:
            return {"state": "printed"}
        return {"state": "failed", "reason": result.reason}

    async def _follow_issued(self, issued: asyncio.Queue[StoredEvent]) -> None:
        while True:
            event = await issued.get()
            payload = event.payload
            if not isinstance(payload, ev.TicketIssued) or event.seq <= self._highest:
                continue  # not a ticket, or one the start already took care of
            self._highest = event.seq
            if self.prints(payload.source):
                self._start_print(event, payload)

    def _start_print(self, event: StoredEvent, issued: ev.TicketIssued) -> None:
        facts = TicketFacts.from_event(event, issued)
        self._in_flight.add(event.seq)
        # One task per ticket, ended when its print is concluded.
        self._tasks.create_task(self._print(facts, seq=event.seq), name=f"print-{facts.number}")

    # -- prints cut off by a stop ---------------------------------------------------------------

    async def _unfinished(self) -> list[tuple[StoredEvent, ev.TicketIssued]]:
        """The printed sources' tickets issued after the saved mark (their print was cut off)."""
        device = self.device.id

        def read(store: Store, _now: dt.datetime, _ok: bool) -> Written[tuple[int, int, _Owed]]:
            last = store.last_seq
            mark = store.setting(PRINT_MARK)
            fresh = {PRINT_MARK: {"epoch": store.epoch, "seq": last, "device": device}}
            if not isinstance(mark, dict) or (mark.get("epoch"), mark.get("device")) != (
                store.epoch,
                device,
            ):
                # First start with this printer (or a new store): nothing can be owed yet.
                return Written(store.append([], settings=fresh), (last, last, []))
            cut_off: _Owed = []
            seq = int(mark.get("seq", last)) + 1
            while seq <= last and (chunk := store.events(seq, 1000)):
                for e in chunk:
                    match e.payload:
                        case ev.TicketIssued(source=source) as issued if (
                            e.seq <= last and self.prints(source)
                        ):
                            cut_off.append((e, issued))
                seq = chunk[-1].seq + 1
            return Written([], (last, int(mark.get("seq", last)), cut_off))

        last, mark, cut_off = await self.hall.write(read)
        self._highest, self._mark = last, mark
        return cut_off

    async def _resume(self, cut_off: list[tuple[StoredEvent, ev.TicketIssued]]) -> None:
        """Print the tickets a stop cut off, or record them as not printed (see the module)."""
        now = dt.datetime.now(dt.UTC)
        today = self.hall.business_day().isoformat()
        # All owed at once: concluding one must not move the mark past another still owed.
        self._in_flight.update(event.seq for event, _ in cut_off)
        for event, issued in cut_off:
            facts = TicketFacts.from_event(event, issued)
            age = (now - dt.datetime.fromisoformat(event.at)).total_seconds()
            if facts.day == today and -RESUME_WITHIN_S <= age <= RESUME_WITHIN_S:
                log.warning(
                    "ticket %s was saved %.0f s before the agent stopped and its print was not "
                    "confirmed; printing it now",
                    facts.number,
                    age,
                )
                self._start_print(event, issued)
                continue
            reason = "the agent stopped before the ticket was printed (打印前程序已停止)"
            if facts.day == today:
                log.warning(
                    "ticket %s was saved before the agent stopped and its print was not "
                    "confirmed; recorded as not printed",
                    facts.number,
                )
                result = PrintResult(PrintJob(facts.ticket_id, facts.number, b""), False, 0, reason)
                await self._record_failure(facts, result, reprint=False, seq=event.seq)
            else:  # a day that is over: nobody waits for it, and it cannot be reprinted
                await self._save_mark(self._concluded(event.seq))
        if self._in_flight:
            return
        await self._save_mark(self._concluded(None))

    def _concluded(self, seq: int | None) -> dict[str, Any] | None:
        """Take ``seq`` out of the prints under way; the mark setting to save if it moved."""
        if seq is not None:
            self._in_flight.discard(seq)
        mark = min(self._in_flight) - 1 if self._in_flight else self._highest
        if mark <= self._mark:
            return None
        self._mark = mark
        epoch = self.hall.store.epoch
        return {PRINT_MARK: {"epoch": epoch, "seq": mark, "device": self.device.id}}

    async def _save_mark(self, settings: dict[str, Any] | None) -> None:
        if settings is None:
            return
        try:
            await self.hall.write(
                lambda store, _now, _ok: Written(store.append([], settings=settings), None)
            )
        except ShuttingDown:
            log.info("stopping before saving which tickets were printed; they may print again")
        except StoreError as err:  # the disk: the tickets may print again after a restart
            log.warning(
                "could not save which tickets were printed (%s); after a restart they may "
                "print again",
                err,
            )

    # -- printing -------------------------------------------------------------------------------

    async def _print(
        self, facts: TicketFacts, *, reprint: bool = False, seq: int | None = None
    ) -> PrintResult:
        key = facts.ticket_id if not reprint else f"{facts.ticket_id}/reprint"
        job = PrintJob(key, facts.number, b"")
        facts = await self._with_token(facts)
        ok, reason = self.can_print()
        if ok:
            try:
                data = await self._encoded(functools.partial(self.encode, facts, reprint=reprint))
                job = dataclasses.replace(job, data=data)
            except ValueError as err:  # e.g. a QR link longer than a ticket's QR code holds
                log.exception("ticket %s cannot be laid out", facts.number)
                ok, reason = False, f"the ticket cannot be laid out: {err}; check ticket:"
        result = await self.queue.submit(job) if ok else PrintResult(job, False, 0, reason)
        if not result.printed:  # recorded before anyone is told
            await self._record_failure(facts, result, reprint=reprint, seq=seq)
        if not reprint:  # the kiosk's take waits for this one
            future = self._outcome(key)
            if not future.done():
                future.set_result(result)
        if result.printed and seq is not None:  # bookkeeping: the ticket is in the citizen's hand
            await self._save_mark(self._concluded(seq))
        return result

    async def _encoded(self, encode: Callable[[], bytes]) -> bytes:
        """``encode()``; the first encodings after a start import python-escpos (~0.3 s here,
        more on a Pi: protocols/escpos.py), so they run on a worker thread, one after the
        other, and the tickets keep their order."""
        if commands_loaded() and not self._first_encodes.locked():
            return encode()
        async with self._first_encodes:
            return await asyncio.to_thread(encode)

    async def print_document(self, key: str, label: str, doc: TicketDocument) -> PrintResult:
        """Print a layout that is not a ticket (a proxy case's receipt) on the ticket
        printer, through the same queue; its failure is the caller's to record."""
        await self.queue.check()  # a person waits at the window: look now
        job = PrintJob(key, label, b"")
        ok, reason = self.can_print()
        if ok:
            try:
                data = await self._encoded(functools.partial(self.encode_document, doc))
                job = dataclasses.replace(job, data=data)
            except ValueError as err:
                ok, reason = False, f"the receipt cannot be laid out: {err}"
        if not ok:
            return PrintResult(job, False, 0, reason)
        return await self.queue.submit(job)

    async def _with_token(self, facts: TicketFacts) -> TicketFacts:
        """The facts with the ticket's status-page token, read from the queue (the token is
        not in ``ticket.issued``: it leaves the agent only on the printed QR code and, for a
        district site, in ``ticket.status``)."""
        if facts.token is not None:
            return facts

        def read(engine: QueueEngine, _now: dt.datetime) -> str | None:
            ticket = engine.tickets.get(facts.ticket_id)
            return None if ticket is None else ticket.token

        try:
            token = await self.hall.read(read)
        except ShuttingDown:  # printed without the status page's QR code
            return facts
        return dataclasses.replace(facts, token=token)

    def _ticket_event(self, kind: type[ev.TicketPrint], facts: TicketFacts, **more: Any) -> Event:
        """An event about one ticket's print on this printer (its time is set on commit)."""
        payload = kind(
            ticket=facts.number,
            ticket_id=facts.ticket_id,
            service=facts.service,
            day=facts.day,
            device=self.device.id,
            **more,
        )
        return Event(payload, dt.datetime.now(dt.UTC))

    async def _record_failure(
        self, facts: TicketFacts, result: PrintResult, *, reprint: bool, seq: int | None = None
    ) -> None:
        """Record ``ticket.print_failed``; with the print's ``seq``, concluded in the same
        transaction."""
        event = self._ticket_event(
            ev.TicketPrintFailed,
            facts,
            reason=result.reason,
            attempts=result.attempts,
            reprint=reprint,
        )
        settings = self._concluded(seq) if seq is not None else None
        try:
            await self.hall.write(functools.partial(_append, event, settings=settings))
        except Exception:  # the failure is logged by the queue; the event is what we lose
            log.exception("could not record that ticket %s was not printed", facts.number)

    # -- reprint ------------------------------------------------------------------------------

    async def reprint(self, number: str, day: dt.date | None = None) -> dict[str, Any]:
        """Print a ticket of today again. Raises NotFound or Refused (the printer cannot)."""
        today = self.hall.business_day()
        if day is not None and day != today:
            raise Refused(
                f"only today's tickets ({today.isoformat()}) can be reprinted, "
                f"not {day.isoformat()}"
            )
        facts = await self.hall.read(functools.partial(_find_ticket, number))
        await self.queue.check()  # a person asked: look now, not at the last poll
        ok, reason = self.can_print()
        if not ok:
            raise Refused(f"ticket {facts.number} cannot be reprinted now: {reason}")
        try:
            async with asyncio.timeout(REPRINT_WAIT_S):
                result = await self._print(facts, reprint=True)
        except TimeoutError:
            raise Refused(
                f"ticket {facts.number} was not reprinted within {REPRINT_WAIT_S:g} s; "
                "check the printer"
            ) from None
        if not result.printed:
            raise Refused(f"ticket {facts.number} was not reprinted: {result.reason}")
        event = self._ticket_event(ev.TicketReprinted, facts)
        stored = await self.hall.write(functools.partial(_append, event))
        return {
            "result": {"ticket": facts.number, "ticket_id": facts.ticket_id, "printed": True},
            "events": [{"seq": e.seq, "type": e.type} for e in stored],
        }

    async def reprint_command(self, command: c.Reprint) -> dict[str, Any]:
        """The central ``reprint`` command (a command handler of the link)."""
        answer = await self.reprint(command.number, command.day)
        result: dict[str, Any] = answer["result"]
        return result


def _append(
    event: Event,
    store: Store,
    now: dt.datetime,
    clock_ok: bool,
    *,
    settings: dict[str, Any] | None = None,
) -> Written[list[StoredEvent]]:
    stored = store.append(
        [dataclasses.replace(event, at=now)], clock_ok=clock_ok, settings=settings
    )
    return Written.of_events(stored)


@contextlib.asynccontextmanager
async def ticket_printing(hall: Hall, devices: DeviceBoard) -> AsyncIterator[TicketPrinting | None]:
    """The hall's ticket printer at work, or None when no printer is configured."""
    printers = [d for d in hall.config.devices if isinstance(d, PrinterDevice)]
    if not printers:
        yield None
        return
    if len(printers) > 1:
        log.warning(
            "%d printers are configured; tickets are printed on the first, %s",
            len(printers),
            printers[0].id,
        )
    async with TicketPrinting(hall, devices, printers[0]) as printing:
        yield printing
