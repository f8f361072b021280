"""ID cards at work: the kiosk issues tickets with the identity rules, a window reports
identities to central and signs its staff in.

Every configured ``id_reader`` is watched by its driver (``drivers.idreader``). A reader
that a window lists is that window's; any other is a kiosk reader.

- **Kiosk**: a card takes a ticket — for the reader's configured ``service``, for today's
  appointment pushed by central (priority ``appointment``), or, when neither says, for
  the service the citizen then picks on the kiosk page within
  ``personal_data.kiosk_hold_s``. The queue engine applies the rules: one open ticket
  per card per service, green channel from the birth date at ``queue.green_channel_age``.
  The ticket and its ``identity.read`` event (form ``personal_data.send.kiosk``) are one
  transaction.
- **Window**: a staff member's card (central's roster) signs them in, through the
  staff sign-in hook (``agent.features.staff.sign_in_by_identity``); any other card emits
  ``identity.read`` (form ``personal_data.send.window``) with the window's current
  ticket, for central's acceptance form.

Personal data never reaches a log unmasked (see :mod:`agent.runtime.personal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agent.central import contract as c
from agent.config import (
    HallAgentConfig,
    IdReaderDevice,
    personal_data_key,
)
from agent.core import events as ev
from agent.core.engine import Outcome
from agent.core.errors import QueueError, Refused
from agent.core.events import Event
from agent.core.model import Priority, Source
from agent.core.operations import CardAtWindow, CardRead, Take
from agent.features._targets import line_target
from agent.features.issuing import Issuing
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.personal import (
    Form,
    PersonalDataError,
    Vault,
    describe,
    identity_data,
    unseal_event,
)
from agent.runtime.store import Store, StoreError, Written
from agent.runtime.tasks import BackgroundTasks, stop
from drivers.idreader import (
    CardPresented,
    CardProblem,
    CardRemoved,
    IdReader,
    PollSettings,
    ReaderHealth,
    open_reader,
)

if TYPE_CHECKING:
    from agent.central.link import EnvelopeFilter
    from agent.features.documents import DocumentDesk

log = logging.getLogger(__name__)

# A staff member's card at a window: sign them in and return the outcome, or None when
# the card is not a staff member's (the window's citizen flow goes on). Refused when the
# member may not work at that window. Given the window id and the card's ID number.
StaffSignIn = Callable[[Hall, str, str], Awaitable[Outcome | None]]
ReaderFactory = Callable[[IdReaderDevice, Callable[[ReaderHealth], None]], IdReader]


def _open_reader(device: IdReaderDevice, on_health: Callable[[ReaderHealth], None]) -> IdReader:
    settings = PollSettings(
        poll_interval_s=device.poll_interval_s, fingerprint=device.read_fingerprint
    )
    return open_reader(line_target(device.transport), settings, on_health)


@dataclasses.dataclass(slots=True)
class HeldCard:
    """A card read at the kiosk, waiting for the citizen to pick a service."""

    device: str
    presented: CardPresented
    until: float  # monotonic


@dataclasses.dataclass(slots=True)
class LastRead:
    """What the last card at a reader led to, for the kiosk page and the status (masked)."""

    device: str
    at: str
    outcome: str  # ticket, refused, waiting_for_service, identity, staff, problem
    message: str
    ticket: str | None = None


def find_appointment(
    appointments: list[dict[str, Any]], id_hashes: set[str], day: dt.date
) -> dict[str, Any] | None:
    """Today's appointment of a card, matched on any of its hashes."""
    for item in appointments:
        if item.get("id_sha256") in id_hashes and item.get("day") == day.isoformat():
            return item
    return None


class IdentityDesk:
    """The hall's ID card readers at work. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard,
        *,
        issuing: Issuing | None = None,
        vault: Vault | None = None,
        staff_sign_in: StaffSignIn | None = None,
        reader_factory: ReaderFactory = _open_reader,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.staff_sign_in = staff_sign_in
        # Issues the card's ticket (refused while it cannot be printed).
        self.issuing = issuing or Issuing(hall)
        self._vault = vault
        self._factory = reader_factory
        self._windows = {d: w.id for w in hall.config.windows for d in w.devices}
        self.readers: dict[str, IdReader] = {}
        self.held: HeldCard | None = None
        self.last: dict[str, LastRead] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks = BackgroundTasks()
        self._changed = asyncio.Condition()
        self.problem: str | None = None

    @property
    def config(self) -> HallAgentConfig:
        return self.hall.config

    @property
    def loaded_vault(self) -> Vault | None:
        return self._vault

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise Refused(f"ID cards cannot be used: {self.problem}")
        return self._vault

    async def __aenter__(self) -> IdentityDesk:
        pd = self.config.personal_data
        if self._vault is None:
            try:
                self._vault = await asyncio.to_thread(
                    Vault.from_files, personal_data_key(self.config), pd.hash_key_file
                )
            except (PersonalDataError, OSError) as err:
                self.problem = str(err)
                log.error("ID card readers are not started: %s", err)
        async with contextlib.AsyncExitStack() as stack:
            self._tasks = await stack.enter_async_context(BackgroundTasks())
            eraser = self._tasks.create_task(erase_loop(self.hall), name="personal-data-eraser")
            stack.push_async_callback(stop, eraser)
            if self._vault is not None:
                for device in self.config.devices:
                    if isinstance(device, IdReaderDevice):
                        await self._start(stack, device)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack, device: IdReaderDevice) -> None:
        def health(state: ReaderHealth) -> None:
            if state.ok:
                self.devices.report(device.id, "ok", state.detail)
            elif state.connected:
                self.devices.report(device.id, "error", state.detail)
            else:
                self.devices.report(device.id, "offline", state.detail)

        reader = await stack.enter_async_context(self._factory(device, health))
        self.readers[device.id] = reader
        where = self._windows.get(device.id)
        task = self._tasks.create_task(self._follow(device, reader), name=f"idcard-{device.id}")
        stack.push_async_callback(stop, task)  # before its reader closes
        log.info(
            "ID card reader %s on %s (%s)",
            device.id,
            reader.endpoint,
            f"window {where}" if where else "kiosk",
        )

    # -- events ------------------------------------------------------------------------------

    async def _follow(self, device: IdReaderDevice, reader: IdReader) -> None:
        while True:
            event = await reader.next_event()
            try:
                if isinstance(event, CardPresented):
                    await self.card_presented(device, event)
                elif isinstance(event, CardProblem):
                    log.info("ID card at %s cannot be read: %s", device.id, event.message)
                    self._remember(device.id, "problem", event.message)
                elif isinstance(event, CardRemoved) and self.held and self.held.device == device.id:
                    pass  # the card may be taken away while the citizen picks a service
            except (QueueError, ShuttingDown, StoreError) as err:
                log.info("ID card at %s: %s", device.id, err)
            except Exception:  # one bad card must not stop the reader's flow
                log.exception("the ID card at %s could not be handled", device.id)
            finally:
                await self._notify()

    async def card_presented(self, device: IdReaderDevice, presented: CardPresented) -> None:
        window = self._windows.get(device.id)
        log.info(
            "ID card read at %s: %s",
            f"window {window}" if window else "the kiosk",
            describe(presented.card),
        )
        if window is not None:
            await self._at_window(device, window, presented)
        else:
            await self._at_kiosk(device, presented)

    def _remember(
        self, device: str, outcome: str, message: str, ticket: str | None = None
    ) -> LastRead:
        now = dt.datetime.now(self.config.hall.zone).isoformat(timespec="seconds")
        last = LastRead(device, now, outcome, message, ticket)
        self.last[device] = last
        return last

    # -- the window --------------------------------------------------------------------------

    async def _at_window(self, device: IdReaderDevice, window: str, card: CardPresented) -> None:
        if device.sign_in_staff and self.staff_sign_in is not None:
            try:
                signed = await self.staff_sign_in(self.hall, window, card.card.id_number)
            except QueueError as err:
                self._remember(device.id, "refused", err.message)
                raise
            if signed is not None:
                # Who the card signed in (a second staff member joins the first).
                joined = [e.payload for e in signed.events]
                staff = next((p.staff for p in joined if isinstance(p, ev.StaffSignedIn)), None)
                self._remember(device.id, "staff", f"staff {staff} signed in at window {window}")
                return
        form = self.config.personal_data.send.window
        if form == "none":
            self._remember(device.id, "identity", "card read; nothing is sent (send.window: none)")
            return
        personal = identity_data(self.vault, form, card.card, card.photo, card.additional_address)

        read = CardRead(device=device.id, personal=personal)
        outcome = await self.hall.execute(CardAtWindow(window=window, card=read))
        ticket = None if outcome.ticket is None else outcome.ticket.number
        self._remember(device.id, "identity", f"identity sent for window {window}", ticket)

    # -- the kiosk ---------------------------------------------------------------------------

    async def _at_kiosk(self, device: IdReaderDevice, card: CardPresented) -> None:
        appointment = await self._appointment(card)
        service = device.service or (appointment or {}).get("service")
        if service is None:
            hold = self.config.personal_data.kiosk_hold_s
            self.held = HeldCard(device.id, card, time.monotonic() + hold)
            self._remember(device.id, "waiting_for_service", "pick a service on the screen")
            return
        await self.take_with_card(device.id, card, str(service), appointment)

    async def _appointment(self, card: CardPresented) -> dict[str, Any] | None:
        pushed = await self.hall.store_read(lambda s: s.setting("appointments"))
        if not pushed:
            return None
        number = card.card.id_number.strip().upper()
        hashes = {hashlib.sha256(number.encode()).hexdigest(), self.vault.id_hash(number)}
        return find_appointment(list(pushed), hashes, self.hall.business_day())

    async def take_with_card(
        self,
        device_id: str,
        card: CardPresented,
        service: str,
        appointment: dict[str, Any] | None = None,
    ) -> Outcome:
        """Issue a ticket for the card's holder; QueueError (409) with the rule's message."""
        form: Form = self.config.personal_data.send.kiosk
        personal = identity_data(self.vault, form, card.card, card.photo)
        id_hash = self.vault.id_hash(card.card.id_number)
        priority = Priority.APPOINTMENT if appointment else Priority.NORMAL
        birth = card.card.birth_date

        read = None
        if form != "none":
            booked = None if appointment is None else appointment.get("appointment_id")
            read = CardRead(device=device_id, personal=personal, appointment=booked)
        take = Take(
            service=service,
            source=Source.ID_CARD,
            priority=priority,
            id_hash=id_hash,
            birth_date=birth,
            card=read,
        )
        try:
            outcome = await self.issuing.take(take)
        except QueueError as err:
            self._remember(device_id, "refused", err.message)
            log.info("kiosk ID card ticket refused: %s", err.message)
            raise
        if outcome.ticket is not None:
            number = outcome.ticket.number
            name = self.config.service(outcome.ticket.service).name
            self._remember(device_id, "ticket", f"ticket {number} ({name})", number)
        if self.held is not None and self.held.presented is card:
            self.held = None
        return outcome

    async def set_appointments_command(self, command: c.SetAppointments) -> dict[str, Any]:
        """Central's ``set_appointments`` (a command handler of the link)."""
        items = [a.model_dump(mode="json") for a in command.appointments]
        days = sorted({a["day"] for a in items})

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            event = Event(ev.AppointmentsSet(count=len(items), days=days), now)
            stored = store.append([event], clock_ok=clock_ok, settings={"appointments": items})
            return Written(stored, None)

        await self.hall.write(write)
        return {"appointments": len(items), "days": days}

    async def take_held(self, service: str) -> Outcome:
        """The kiosk page: the citizen picked ``service`` after placing their card."""
        self.vault  # noqa: B018 - refuses with the reason when cards cannot be used
        held = self.held
        if held is None or held.until < time.monotonic():
            self.held = None
            raise Refused("no ID card is waiting at the kiosk; place the card on the reader")
        try:
            return await self.take_with_card(held.device, held.presented, service)
        finally:
            await self._notify()

    def kiosk_state(self) -> dict[str, Any]:
        held = self.held
        if held is not None and held.until < time.monotonic():
            self.held = held = None
        card = None
        if held is not None:
            shown = held.presented.card
            card = {
                "card_type": shown.card_type.value,
                "name": shown.name[:1] + "*" * (len(shown.name) - 1),
                "expires_in_s": round(held.until - time.monotonic(), 1),
            }
        return {
            "card": card,
            "last": {k: dataclasses.asdict(v) for k, v in self.last.items()},
            "readers": {k: r.health.detail for k, r in self.readers.items()},
            "problem": self.problem,
        }

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, check: Callable[[], bool], within: float) -> None:
        """Wait until ``check()`` holds after a card was handled (tests, the kiosk page)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(check)


# Sealed personal data is erased this long at most after central acknowledged it.
ERASE_EVERY_S = 30.0


async def erase_personal_data(hall: Hall) -> int:
    """Erase sealed personal data that was delivered (or kept too long); returns how many."""
    max_hours = hall.config.personal_data.erase_after_hours

    def write(store: Store, now: dt.datetime, _: bool) -> Written[int]:
        return Written([], store.erase_personal_data(now, max_hours).count)

    count = await hall.write(write)
    if count:
        log.info("erased the personal data of %d delivered identity events", count)
    return count


async def erase_loop(hall: Hall) -> None:
    failing = False
    while True:
        try:
            await erase_personal_data(hall)
        except (StoreError, ShuttingDown) as err:
            if not failing:
                log.warning("personal data could not be erased now: %s", err)
            failing = True
        else:
            failing = False
        await asyncio.sleep(ERASE_EVERY_S)


@contextlib.asynccontextmanager
async def identity_desk(
    hall: Hall,
    devices: DeviceBoard,
    issuing: Issuing,
    *,
    staff_sign_in: StaffSignIn | None = None,
) -> AsyncIterator[IdentityDesk | None]:
    """The ID card flows, or None when no reader is configured."""
    if not any(isinstance(d, IdReaderDevice) for d in hall.config.devices):
        yield None
        return
    async with IdentityDesk(hall, devices, issuing=issuing, staff_sign_in=staff_sign_in) as desk:
        yield desk


# -- the local API -------------------------------------------------------------------------


class TakeWithCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, description="service id the citizen picked")


def identity_routes(
    desk: IdentityDesk, *, read_guard: Sequence[Any], take_guard: Sequence[Any]
) -> APIRouter:
    """The kiosk's card state (``read_guard``: the dependencies that guard it) and issuing
    for the card waiting there (``take_guard``); who may is decided by the web layer
    (agent/web/access.py)."""
    router = APIRouter(prefix="/api/v1/identity", tags=["identity"])

    @router.get("/kiosk", dependencies=list(read_guard))
    async def kiosk() -> dict[str, Any]:
        """The card waiting at the kiosk (masked) and what each reader's last card did."""
        return desk.kiosk_state()

    @router.post("/kiosk/take", status_code=201, dependencies=list(take_guard))
    async def take(body: TakeWithCard) -> dict[str, Any]:
        """Issue a ticket for the card waiting at the kiosk (409 with the rule's message)."""
        outcome = await desk.take_held(body.service)
        return {
            "result": outcome.result,
            "events": [{"seq": e.seq, "type": e.type} for e in outcome.stored],
        }

    return router


def envelope_filters(
    identity: IdentityDesk | None, documents: DocumentDesk | None
) -> tuple[EnvelopeFilter, ...]:
    """Sealed personal data is opened as events leave for central (never stored opened)."""
    vault = None if identity is None else identity.loaded_vault
    if vault is None and documents is not None:
        vault = documents.loaded_vault
    return () if vault is None else (functools.partial(unseal_event, vault),)
