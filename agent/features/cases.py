"""Proxy cases (代收代办): a window takes a case for handling elsewhere, the citizen gets a
printed receipt, central sends the result, staff are warned before the promised date.

- **Registering** (:meth:`CaseDesk.register`): the service, the citizen (name, ID number,
  phone: sealed at rest with the hall's personal data key, masked everywhere they show,
  erased when the case closes), the materials received (ticked from the service guide's
  ``materials``), the promised date (the guide's ``time_limit_days`` counted in working
  days, or entered by staff). The row and its ``case.registered`` event are one write of
  the hall's writer; the receipt is printed after, on the ticket printer.
- **Changes** (:meth:`CaseDesk.update`): by the case's window or the manager (local API),
  by central (``case_result``); each a ``case.updated`` (or ``case.closed``) with the row.
- **Deadlines** (:meth:`CaseDesk.check_deadlines`, every ``cases.check_interval_s``): an
  open case raises ``case.deadline_near`` once on its warning day (``cases.warn_working_days``
  working days before its promised date, holidays not counted) and ``case.overdue`` once
  after its promised date. Only with a trusted clock.

docs/cases.md describes the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agent.central import contract as c
from agent.config import HallAgentConfig, PrinterDevice, personal_data_key
from agent.core import events as ev
from agent.core.cases import (
    CASE_NUMBER,
    MOVES,
    STAFF_STATUS,
    Case,
    CaseStatus,
    case_number,
    chinese_date,
    due,
    last_near_promise,
    promised_date,
)
from agent.core.errors import NotFound, Refused
from agent.core.events import Event
from agent.core.model import business_day
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.personal import Vault, citizen_data, mask_citizen, unseal_event
from agent.runtime.store import Store, StoredEvent, StoreError, Written
from agent.runtime.tasks import BackgroundTasks, stop
from agent.workdays import WorkingDays
from protocols.escpos_model import Align, Block, Feed, QrCode, Rule, TextLine, TicketDocument
from protocols.idcard import id_number_valid

if TYPE_CHECKING:
    from agent.central.link import EnvelopeFilter
    from agent.features.printing import TicketPrinting

log = logging.getLogger(__name__)

JSON = dict[str, Any]
By = Literal["window", "manager", "central"]
DueFilter = Literal["near", "overdue", "due"]

# At most this many extra materials (not in the guide) on one case.
MAX_OTHER_MATERIALS = 10
# Blank lines of 24 dots around the receipt's QR code: at least 4 modules of quiet zone.
_QUIET_MODULES = 4


def working_days(config: HallAgentConfig) -> WorkingDays:
    """The hall's working days for promised dates and warnings: weekends, and the
    holidays and make-up days (调休) of the config's calendar (central may push it)."""
    return config.working_days()


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """What the window enters for a new case."""

    service: str
    window: str
    name: str
    id_number: str
    phone: str | None = None
    materials: Sequence[str] = ()
    other_materials: Sequence[str] = ()
    promised: dt.date | None = None
    staff: str | None = None


def _status_name(status: CaseStatus) -> ev.CaseStatusName:
    return status.value


def _checked_id_number(raw: str) -> str:
    number = raw.strip().upper()
    if len(number) == 18:
        if not number[:17].isdigit() or not id_number_valid(number):
            raise Refused(
                "the ID number's check digit does not match (GB 11643); read it again from the card"
            )
        return number
    if not (6 <= len(number) <= 32) or not number.isalnum():
        raise Refused(
            "the ID number must be 18 characters (居民身份证) or the 6-32 letters and digits "
            "of another document"
        )
    return number


def receipt_document(
    config: HallAgentConfig, printer: PrinterDevice, case: Case, *, reprint: bool = False
) -> TicketDocument:
    """The citizen's receipt (代收代办回执): case number, service, materials received, the
    promised date in Chinese, the hall's phone and a QR code of the case number."""
    layout = config.ticket
    narrow = printer.paper_width_mm == 58
    big = 2 if layout.large else 1
    try:
        service_name = config.service(case.service).name
    except KeyError:
        service_name = case.service
    try:
        window_name = config.window(case.window).name
    except KeyError:
        window_name = case.window
    blocks: list[Block] = []
    if reprint:
        blocks.append(TextLine("【补打 REPRINT】", bold=True))
    blocks += [
        TextLine(config.hall.name, scale=big, bold=True),
        TextLine("代收代办回执", scale=2, bold=True),
        Feed(),
        TextLine("办件号", scale=big),
        TextLine(case.number, scale=2, bold=True),
        TextLine(f"事项：{service_name}", scale=big, align=Align.LEFT),
        TextLine(f"受理窗口：{window_name}", align=Align.LEFT),
        TextLine(f"受理时间：{case.registered_at[:16].replace('T', ' ')}", align=Align.LEFT),
        TextLine(f"申请人：{case.citizen.get('name', '')}", align=Align.LEFT),
        Rule(),
        TextLine("承诺办结日期", scale=big, bold=True),
        TextLine(chinese_date(case.promised), scale=big, bold=True),
    ]
    if case.time_limit_days is not None and case.promised_by == "guide":
        blocks.append(TextLine(f"（承诺时限 {case.time_limit_days} 个工作日）"))
    if case.materials:
        blocks += [Rule(), TextLine("已收材料：", bold=True, align=Align.LEFT)]
        blocks += [TextLine(f"√ {item}", scale=big, align=Align.LEFT) for item in case.materials]
    blocks.append(Rule())
    if config.hall.phone:
        blocks.append(TextLine(f"咨询电话 {config.hall.phone}", scale=big))
    module = 4 if narrow else 6
    quiet = Feed(-(-_QUIET_MODULES * module // 24))
    blocks += [quiet, QrCode(case.number, module=module), quiet]
    blocks += [
        TextLine("凭本回执查询和领取办理结果", scale=big),
        TextLine("可在自助机「办件查询」输入办件号查询进度"),
    ]
    return TicketDocument(tuple(blocks))


class CaseDesk:
    """The hall's proxy cases. An async context manager (the deadline watcher runs while
    it is open)."""

    def __init__(
        self,
        hall: Hall,
        printing: TicketPrinting | None = None,
        *,
        days: WorkingDays | None = None,
        vault: Vault | None = None,
    ) -> None:
        self.hall = hall
        self.printing = printing
        self._days = days
        self._vault = vault
        self._stack = contextlib.AsyncExitStack()

    @property
    def days(self) -> WorkingDays:
        """The working days now: the given ones, or the config's calendar as it is now
        (a calendar central pushes applies at once)."""
        return self._days if self._days is not None else working_days(self.hall.config)

    @property
    def config(self) -> HallAgentConfig:
        return self.hall.config

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault.from_files(
                personal_data_key(self.config), self.config.personal_data.hash_key_file
            )
        return self._vault

    def envelope_filter(self) -> EnvelopeFilter:
        """Opens a sealed citizen as ``case.registered`` leaves for central (the key is read
        at the first such event)."""

        def opened(envelope: JSON) -> JSON:
            if envelope.get("type") != ev.CaseRegistered.TYPE:
                return envelope
            return unseal_event(self.vault, envelope)

        return opened

    async def __aenter__(self) -> CaseDesk:
        async with contextlib.AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(BackgroundTasks())
            watcher = tasks.create_task(self._watch(), name="case-deadlines")
            stack.push_async_callback(stop, watcher)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # -- registering -----------------------------------------------------------------------

    def _materials(self, service: str, ticked: Sequence[str], other: Sequence[str]) -> list[str]:
        guide = self.config.service(service).guide
        listed = list(guide.materials) if guide is not None else []
        unknown = [m for m in ticked if m not in listed]
        if unknown:
            raise Refused(
                f"not in the guide's materials of {service}: {', '.join(unknown)}; tick the "
                "guide's items, and enter anything else as other_materials"
            )
        if len(other) > MAX_OTHER_MATERIALS:
            raise Refused(f"at most {MAX_OTHER_MATERIALS} other materials; combine them")
        extra = [m.strip() for m in other if m.strip()]
        return [m for m in listed if m in ticked] + extra

    def _promised(
        self, service: str, day: dt.date, entered: dt.date | None
    ) -> tuple[dt.date, Literal["guide", "staff"], int | None]:
        guide = self.config.service(service).guide
        limit = None if guide is None else guide.time_limit_days
        if entered is not None:
            if entered < day:
                raise Refused(
                    f"the promised date {entered.isoformat()} is before today "
                    f"({day.isoformat()}); enter a later date"
                )
            return entered, "staff", limit
        if limit is None:
            raise Refused(
                f"the service guide of {service} has no time_limit_days; enter the promised "
                "date (promised)"
            )
        return promised_date(day, limit, self.days), "guide", limit

    async def register(self, entry: Registration) -> JSON:
        """Take a case: saved with its ``case.registered`` event, then its receipt printed.
        Refused (with what to fix) for an unknown service or window, a bad ID number,
        materials not in the guide, or no promised date."""
        config = self.config
        try:
            config.service(entry.service)
        except KeyError:
            raise NotFound(f"there is no service {entry.service!r}") from None
        try:
            window = config.window(entry.window)
        except KeyError:
            raise NotFound(f"there is no window {entry.window!r}") from None
        if entry.service not in window.services:
            log.info(
                "window %s takes a case of %s, a service it does not call", window.id, entry.service
            )
        name = entry.name.strip()
        if not name:
            raise Refused("the citizen's name is empty; enter it as on their ID card")
        number_id = _checked_id_number(entry.id_number)
        phone = (entry.phone or "").strip() or None
        if phone is not None and not (phone.replace("-", "").isdigit() and 5 <= len(phone) <= 20):
            raise Refused("the phone number must be 5-20 digits (a dash allowed)")
        materials = self._materials(entry.service, entry.materials, entry.other_materials)
        form = config.personal_data.send.window
        personal, sealed = await asyncio.to_thread(
            citizen_data, self.vault, form, name, number_id, phone
        )
        masked = mask_citizen(name, number_id, phone)
        prefix = config.cases.number_prefix

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[Case]:
            day = business_day(now, config)
            promised, by, limit = self._promised(entry.service, day, entry.promised)
            number = case_number(prefix, day, store.case_counter(prefix, day) + 1)
            case = Case(
                number=number,
                day=day,
                service=entry.service,
                window=entry.window,
                staff=entry.staff,
                registered_at=now.isoformat(timespec="seconds"),
                promised=promised,
                promised_by=by,
                time_limit_days=limit,
                materials=materials,
                citizen=masked,
            )
            event = ev.CaseRegistered(
                case=number,
                service=case.service,
                window=case.window,
                staff=case.staff,
                day=day.isoformat(),
                promised=promised.isoformat(),
                promised_by=by,
                time_limit_days=limit,
                materials=materials,
                form=personal["form"],
                id_hash=personal.get("id_hash"),
                person=personal.get("person"),
            )
            stored = store.save_case(
                case.to_json(), [Event(event, now)], person=sealed, clock_ok=clock_ok
            )
            return Written(stored, case)

        case = await self.hall.write(write)
        log.info(
            "case %s of %s taken at %s for %s %s, promised %s",
            case.number,
            case.service,
            case.window,
            masked["name"],
            masked["id_number"],
            case.promised.isoformat(),
        )
        receipt = await self.print_receipt(case)
        return {"case": self._staff_view(case, await self._today()), "receipt": receipt}

    # -- the receipt -----------------------------------------------------------------------

    async def print_receipt(self, case: Case, *, reprint: bool = False) -> JSON:
        """Print the case's receipt on the ticket printer: ``printed``, ``failed`` with the
        reason (staff reprint it), or ``no_printer``."""
        printing = self.printing
        if printing is None:
            return {"state": "no_printer", "reason": "this hall has no ticket printer running"}
        doc = receipt_document(self.config, printing.device, case, reprint=reprint)
        key = f"case/{case.number}" + ("/reprint" if reprint else "")
        result = await printing.print_document(key, case.number, doc)
        if result.printed:
            return {"state": "printed"}
        log.warning("the receipt of case %s was not printed: %s", case.number, result.reason)
        return {"state": "failed", "reason": result.reason}

    async def reprint(self, number: str) -> JSON:
        case = await self.case(number)
        return {"case": case.number, "receipt": await self.print_receipt(case, reprint=True)}

    # -- reading ---------------------------------------------------------------------------

    async def _today(self) -> dt.date:
        today: dt.date = await self.hall.read(lambda engine, now: business_day(now, self.config))
        return today

    def _staff_view(self, case: Case, today: dt.date) -> JSON:
        view = case.staff_view(today, self.config.cases.warn_working_days, self.days)
        try:
            view["service_name"] = self.config.service(case.service).name
        except KeyError:
            view["service_name"] = case.service
        try:
            view["window_name"] = self.config.window(case.window).name
        except KeyError:
            view["window_name"] = case.window
        return view

    async def case(self, number: str) -> Case:
        wanted = number.strip().upper()
        if not CASE_NUMBER.match(wanted):
            raise NotFound(f"{number!r} is not a case number (like DB20260302001)")
        found = await self.hall.store_read(lambda s: s.case_record(wanted))
        if found is None:
            raise NotFound(f"there is no case {wanted}")
        return Case.from_json(found[0])

    async def window_of(self, number: str) -> str | None:
        """The window a case belongs to; None when there is no such case."""
        try:
            return (await self.case(number)).window
        except NotFound:
            return None

    async def view(self, number: str) -> JSON:
        return self._staff_view(await self.case(number), await self._today())

    async def public(self, number: str) -> JSON:
        """What the kiosk and the public look-up show: status and promised date, in plain
        Chinese, nothing personal."""
        case = await self.case(number)
        try:
            name = self.config.service(case.service).name
        except KeyError:
            name = case.service
        return case.public_view(name)

    async def listing(
        self,
        *,
        window: str | None = None,
        status: Sequence[str] | None = None,
        due_filter: DueFilter | None = None,
    ) -> JSON:
        """Cases with their deadline state (``due``: near, overdue, or null), soonest first.
        ``due_filter``: only those near their deadline, overdue, or either (``due``)."""
        today = await self._today()
        statuses = list(status) if status else None
        if due_filter is not None:
            open_ = [s.value for s in CaseStatus if s.waiting_for_result]
            statuses = [s for s in (statuses or open_) if s in open_]
        rows = await self.hall.store_read(lambda s: s.case_list(window=window, statuses=statuses))
        views = [self._staff_view(Case.from_json(r), today) for r in rows]
        if due_filter == "due":
            views = [v for v in views if v["due"] is not None]
        elif due_filter is not None:
            views = [v for v in views if v["due"] == due_filter]
        return {
            "hall": self.config.hall.name,
            "day": today.isoformat(),
            "warn_working_days": self.config.cases.warn_working_days,
            "statuses": {s.value: STAFF_STATUS[s] for s in CaseStatus},
            "services": self._services(),
            "windows": [
                {"id": w.id, "name": w.name}
                for w in self.config.windows
                if window is None or w.id == window
            ],
            "cases": views,
        }

    def _services(self) -> list[JSON]:
        """The services with what registering needs: the guide's materials and limit."""
        out = []
        for service in self.config.services:
            guide = service.guide
            out.append(
                {
                    "id": service.id,
                    "name": service.name,
                    "materials": [] if guide is None else list(guide.materials),
                    "time_limit_days": None if guide is None else guide.time_limit_days,
                }
            )
        return out

    # -- changes ---------------------------------------------------------------------------

    async def update(
        self,
        number: str,
        status: CaseStatus | None,
        *,
        by: By,
        note: str | None = None,
        promised: dt.date | None = None,
        staff: str | None = None,
    ) -> JSON:
        """Move a case to ``status`` (and/or a new promised date), with its event; closing
        erases the sealed personal data. The same status again with nothing else new is
        answered as it stands (``unchanged``), without an event."""
        wanted = number.strip().upper()
        config = self.config

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[tuple[Case, bool]]:
            found = store.case_record(wanted)
            if found is None:
                raise NotFound(f"there is no case {wanted}")
            case = Case.from_json(found[0])
            previous = case.status
            target = status or previous
            if target is not previous and target not in MOVES[previous]:
                raise Refused(
                    f"case {wanted} is {previous.value}; it cannot become {target.value}"
                    + ("" if MOVES[previous] else " (it is closed)")
                )
            new_promised = promised if promised is not None else case.promised
            if new_promised != case.promised:
                if not target.waiting_for_result:
                    raise Refused("a case with its result has no promised date to move")
                if new_promised < business_day(now, config):
                    raise Refused(
                        f"the promised date {new_promised.isoformat()} is in the past; enter "
                        "today or later"
                    )
            if (
                target is previous
                and new_promised == case.promised
                and (note is None or note == case.note)
            ):
                return Written([], (case, False))
            if previous is CaseStatus.CLOSED:
                raise Refused(f"case {wanted} is closed; it cannot change")
            case.status = target
            case.note = note if note is not None else case.note
            case.updated_at = now.isoformat(timespec="seconds")
            if new_promised != case.promised:
                case.promised = new_promised
                case.warned = ""  # a new date: warned again on its own day
            payload: ev.EventData
            if target is CaseStatus.CLOSED:
                case.closed_at = case.updated_at
                payload = ev.CaseClosed(
                    case=wanted,
                    service=case.service,
                    window=case.window,
                    previous=_status_name(previous),
                    by=by,
                    staff=staff,
                    note=note,
                    overdue=case.overdue,
                )
            else:
                payload = ev.CaseUpdated(
                    case=wanted,
                    service=case.service,
                    window=case.window,
                    status=_status_name(target),
                    previous=_status_name(previous),
                    promised=case.promised.isoformat(),
                    by=by,
                    staff=staff,
                    note=note,
                )
            stored = store.save_case(
                case.to_json(),
                [Event(payload, now)],
                erase_person=target is CaseStatus.CLOSED,
                clock_ok=clock_ok,
            )
            return Written(stored, (case, True))

        case, changed = await self.hall.write(write)
        if changed:
            log.info("case %s is %s (by %s)", case.number, case.status.value, by)
        view = self._staff_view(case, await self._today())
        return {"case": view, "unchanged": not changed}

    async def result_command(self, command: c.CaseResult) -> JSON:
        """Central's ``case_result``: the case's new status, a note, a new promised date."""
        answer = await self.update(
            command.case,
            CaseStatus(command.status),
            by="central",
            note=command.note,
            promised=command.promised,
        )
        view = answer["case"]
        return {
            "case": view["number"],
            "status": view["status"],
            "promised": view["promised"],
            "unchanged": answer["unchanged"],
        }

    # -- deadlines -------------------------------------------------------------------------

    async def check_deadlines(self) -> list[StoredEvent]:
        """Raise ``case.deadline_near`` and ``case.overdue`` for the open cases that reached
        them on today's business day, each once, with the rows that remember it."""
        config = self.config
        warn = config.cases.warn_working_days
        days = self.days

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[list[StoredEvent]]:
            if not clock_ok:  # a Pi that booted with a wrong date warns about nothing
                return Written.of_events([])
            today = business_day(now, config)
            stored: list[StoredEvent] = []
            for row in store.deadline_candidates(today, last_near_promise(today, warn, days)):
                case = Case.from_json(row)
                state = due(case.promised, today, warn, days)
                payload: ev.EventData
                if state == "overdue" and case.warned != "overdue":
                    case.warned, case.overdue = "overdue", True
                    payload = ev.CaseOverdue(
                        case=case.number,
                        service=case.service,
                        window=case.window,
                        promised=case.promised.isoformat(),
                    )
                elif state == "near" and case.warned == "":
                    case.warned = "near"
                    payload = ev.CaseDeadlineNear(
                        case=case.number,
                        service=case.service,
                        window=case.window,
                        promised=case.promised.isoformat(),
                        working_days_left=days.working_days_between(today, case.promised),
                    )
                else:
                    continue
                stored += store.save_case(case.to_json(), [Event(payload, now)], clock_ok=clock_ok)
            return Written.of_events(stored)

        stored: list[StoredEvent] = await self.hall.write(write)
        for event in stored:
            match event.payload:
                case ev.CaseOverdue(case=number, window=window, promised=promised):
                    log.warning(
                        "case %s of window %s is overdue (promised %s)", number, window, promised
                    )
                case ev.CaseDeadlineNear(case=number, window=window, promised=promised):
                    log.info("case %s of window %s is due %s", number, window, promised)
        return stored

    async def _watch(self) -> None:
        """Look at the open cases now and then; erase sealed citizens central has or that
        were kept as long as allowed (as for ID cards)."""
        hours = self.config.personal_data.erase_after_hours
        while True:
            try:
                await self.check_deadlines()
                await self.hall.write(
                    lambda store, now, _ok: Written([], store.erase_personal_data(now, hours))
                )
            except (StoreError, ShuttingDown) as err:
                log.warning("could not look at the proxy cases' deadlines: %s", err)
            await asyncio.sleep(self.config.cases.check_interval_s)


@contextlib.asynccontextmanager
async def case_desk(
    hall: Hall, printing: TicketPrinting | None, *, days: WorkingDays | None = None
) -> AsyncIterator[CaseDesk]:
    """The hall's proxy cases, the deadline watcher running. ``days``: the working days
    (default :func:`working_days` of the hall's config)."""
    async with CaseDesk(hall, printing, days=days) as desk:
        yield desk
