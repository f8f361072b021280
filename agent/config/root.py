"""The whole file: :class:`HallAgentConfig`, and the checks across its sections (unique
ids, overlapping hours, windows' services and devices, devices sharing a port or bus).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import Field, model_validator

from agent.config.access import AccessConfig
from agent.config.base import Model
from agent.config.calendar import CalendarConfig
from agent.config.cases import CasesConfig
from agent.config.devices import (
    _BUS_FAMILY,
    _HALL_WIDE_KINDS,
    Device,
    IdReaderDevice,
    ScreenDevice,
    TicketButtonsDevice,
)
from agent.config.errors import ConfigProblem, CrossCheckError
from agent.config.hall import (
    WEEKDAYS,
    CallerPolicy,
    HallConfig,
    Period,
    QueuePolicy,
    RatingPolicy,
    Service,
    TicketLayout,
    Window,
)
from agent.config.identity import DocumentsConfig, PersonalDataConfig
from agent.config.mqtt import MqttConfig
from agent.config.staffing import Post, Rota, StaffEntry
from agent.config.system import (
    ClockConfig,
    LoggingConfig,
    PagesConfig,
    StorageConfig,
    UpdateConfig,
    WebConfig,
)
from agent.config.transports import SerialTransport
from agent.workdays import WorkingDays


class HallAgentConfig(Model):
    """The hall agent's configuration file."""

    hall: HallConfig
    queue: QueuePolicy = Field(default_factory=QueuePolicy)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    services: list[Service] = Field(min_length=1)
    windows: list[Window] = Field(min_length=1)
    devices: list[Device] = Field(default_factory=list)
    ticket: TicketLayout = Field(default_factory=TicketLayout)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    pages: PagesConfig = Field(default_factory=PagesConfig)
    callers: CallerPolicy = Field(default_factory=CallerPolicy)
    rating: RatingPolicy = Field(default_factory=RatingPolicy)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    personal_data: PersonalDataConfig = Field(default_factory=PersonalDataConfig)
    documents: DocumentsConfig = Field(default_factory=DocumentsConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    cases: CasesConfig = Field(default_factory=CasesConfig)
    staff: list[StaffEntry] = Field(
        default_factory=list,
        max_length=500,
        description="The hall's roster (工号, name, photo); central may push it",
    )
    rota: Rota = Field(
        default_factory=Rota,
        description="AB岗 and 轮班: each window's A and B by weekday and shift",
    )

    @model_validator(mode="after")
    def _consistent(self) -> HallAgentConfig:
        problems = [
            *_check_unique(self),
            *_check_hours(self),
            *_check_windows(self),
            *_check_devices(self),
            *_check_staffing(self),
        ]
        if problems:
            raise CrossCheckError(problems)
        return self

    def service(self, service_id: str) -> Service:
        for s in self.services:
            if s.id == service_id:
                return s
        raise KeyError(service_id)

    def weekly_hours(self, service: Service) -> list[Period]:
        """A service's usual hours: its own, else the hall's (``calendar.hours``); empty:
        all day."""
        return service.hours or self.calendar.hours

    def working_days(self) -> WorkingDays:
        """The hall's working days: weekends, holidays and make-up days (调休) of every
        configured year (promised dates and deadlines count in these)."""
        return self.calendar.working_days()

    def window(self, window_id: str) -> Window:
        for w in self.windows:
            if w.id == window_id:
                return w
        raise KeyError(window_id)

    def device(self, device_id: str) -> Device:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def window_devices(self, window_id: str) -> list[Device]:
        return [self.device(d) for d in self.window(window_id).devices]


def personal_data_key(config: HallAgentConfig) -> Path:
    """Where the hall's personal data key is: the configured file, else beside the state."""
    return config.personal_data.key_file or config.storage.path / "personal-data.key"


_T = TypeVar("_T")


def _item(section: str, index: int, item_id: str) -> str:
    return f"{section}[{index}]({item_id})"


def _first_use(items: Sequence[_T], key: Callable[[_T], Hashable]) -> Iterator[tuple[int, _T, int]]:
    """Yield (index, item, index of the first item with the same key) for each repeat."""
    first: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        j = first.setdefault(key(item), i)
        if j != i:
            yield i, item, j


def _check_unique(cfg: HallAgentConfig) -> Iterator[ConfigProblem]:
    for section, items, field in (
        ("services", cfg.services, "id"),
        ("services", cfg.services, "prefix"),
        ("windows", cfg.windows, "id"),
        ("windows", cfg.windows, "number"),
        ("devices", cfg.devices, "id"),
    ):
        seq: Sequence[Service | Window | Device] = items
        for i, item, j in _first_use(seq, operator.attrgetter(field)):
            value = getattr(item, field)
            yield ConfigProblem(
                f"{_item(section, i, item.id)}.{field}",
                f"{field} {value!r} is already used by {_item(section, j, seq[j].id)}",
                f"give every item in {section} its own {field}",
            )


def _check_hours(cfg: HallAgentConfig) -> Iterator[ConfigProblem]:
    for i, service in enumerate(cfg.services):
        for b, later in enumerate(service.hours):
            for a, earlier in enumerate(service.hours[:b]):
                if later.overlaps(earlier):
                    days = ", ".join(d for d in WEEKDAYS if d in earlier.days and d in later.days)
                    yield ConfigProblem(
                        f"{_item('services', i, service.id)}.hours[{b}]",
                        f"{later.start:%H:%M}-{later.end:%H:%M} overlaps hours[{a}] "
                        f"({earlier.start:%H:%M}-{earlier.end:%H:%M}) on {days}",
                        "make one period end at or before the other starts, or merge them",
                    )


def _check_windows(cfg: HallAgentConfig) -> Iterator[ConfigProblem]:
    service_ids = [s.id for s in cfg.services]
    devices = {d.id: d for d in cfg.devices}
    owner: dict[str, int] = {}
    served: set[str] = set()
    for i, window in enumerate(cfg.windows):
        at = _item("windows", i, window.id)
        for j, sid in enumerate(window.services):
            if sid not in service_ids:
                yield ConfigProblem(
                    f"{at}.services[{j}]",
                    f"unknown service {sid!r}",
                    f"use one of the services: {', '.join(service_ids)}",
                )
            elif sid in window.services[:j]:
                yield ConfigProblem(
                    f"{at}.services[{j}]",
                    f"service {sid!r} is listed twice",
                    "list each service once; the order is the calling priority",
                )
            served.add(sid)
        for j, did in enumerate(window.devices):
            device = devices.get(did)
            if device is None:
                known = ", ".join(devices) or "none are configured"
                yield ConfigProblem(
                    f"{at}.devices[{j}]",
                    f"unknown device {did!r}",
                    f"add it under devices, or use a known device id ({known})",
                )
                continue
            k = owner.setdefault(did, i)
            if k != i or did in window.devices[:j]:
                yield ConfigProblem(
                    f"{at}.devices[{j}]",
                    f"device {did!r} is already used by {_item('windows', k, cfg.windows[k].id)}",
                    "a device belongs to one window; give this window its own device",
                )
            elif device.kind in _HALL_WIDE_KINDS or (
                isinstance(device, ScreenDevice) and device.role == "hall"
            ):
                fix = " (or set role: window on the screen)" if device.kind == "screen" else ""
                yield ConfigProblem(
                    f"{at}.devices[{j}]",
                    f"{did!r} is a hall-wide {device.kind} and cannot belong to a window",
                    f"remove it from this window's devices{fix}",
                )
    for i, service in enumerate(cfg.services):
        if service.id not in served:
            yield ConfigProblem(
                _item("services", i, service.id),
                "no window serves this service, so its tickets could never be called",
                f"add {service.id!r} to the services of a window, or remove the service",
            )
    for i, device in enumerate(cfg.devices):
        if isinstance(device, ScreenDevice) and device.role == "window" and device.id not in owner:
            yield ConfigProblem(
                f"{_item('devices', i, device.id)}.role",
                "a window screen is not listed by any window",
                f"add {device.id!r} to a window's devices, or set role: hall",
            )


def _check_devices(cfg: HallAgentConfig) -> Iterator[ConfigProblem]:
    service_ids = [s.id for s in cfg.services]
    users: dict[str, list[int]] = {}
    for i, device in enumerate(cfg.devices):
        at = _item("devices", i, device.id)
        if isinstance(device, IdReaderDevice) and device.service not in (None, *service_ids):
            yield ConfigProblem(
                f"{at}.service",
                f"unknown service {device.service!r}",
                f"use one of the services: {', '.join(service_ids)}, or null",
            )
        if isinstance(device, TicketButtonsDevice):
            for key, sid in device.keymap.items():
                if sid not in service_ids:
                    yield ConfigProblem(
                        f"{at}.keymap.{key}",
                        f"unknown service {sid!r}",
                        f"use one of the services: {', '.join(service_ids)}",
                    )
        endpoint = device.transport.endpoint()
        if endpoint is not None:
            users.setdefault(endpoint, []).append(i)
    for endpoint, indices in users.items():
        yield from _check_shared(cfg, endpoint, indices)


def _check_shared(
    cfg: HallAgentConfig, endpoint: str, indices: list[int]
) -> Iterator[ConfigProblem]:
    first = cfg.devices[indices[0]]
    first_at = _item("devices", indices[0], first.id)
    addresses: dict[int | None, str] = {}
    for i in indices:
        device = cfg.devices[i]
        at = _item("devices", i, device.id)
        family = _BUS_FAMILY.get(device.kind)
        if i != indices[0] and (family is None or family != _BUS_FAMILY.get(first.kind)):
            hint = (
                "keypads and LED strips speak different protocols; put them on separate buses"
                if family is not None and first.kind in _BUS_FAMILY
                else "only one device can use it; check the path or port"
            )
            yield ConfigProblem(
                f"{at}.transport", f"{endpoint} is already used by {first_at}", hint
            )
            continue
        transport, first_transport = device.transport, first.transport
        if (
            isinstance(transport, SerialTransport)
            and isinstance(first_transport, SerialTransport)
            and transport.framing != first_transport.framing
        ):
            yield ConfigProblem(
                f"{at}.transport",
                f"shares {endpoint} with {first_at} but runs at {transport.framing}, "
                f"not {first_transport.framing}",
                "devices on one RS-485 bus use the same baud rate and framing",
            )
        address = getattr(device, "address", None)
        if address in addresses:
            yield ConfigProblem(
                f"{at}.address",
                f"address {address} on {endpoint} is already used by {addresses[address]}",
                "give every device on one bus its own address (set on the device itself)",
            )
        addresses.setdefault(address, at)


def _check_staffing(cfg: HallAgentConfig) -> Iterator[ConfigProblem]:
    """The roster, the shifts and the rota: known windows, shifts and staff, nobody twice."""
    window_ids = [w.id for w in cfg.windows]
    windows_hint = f"use one of the windows: {', '.join(window_ids)}"
    roster = {m.staff: m for m in cfg.staff}
    for i, member, j in _first_use(cfg.staff, operator.attrgetter("staff")):
        yield ConfigProblem(
            f"staff[{i}].staff",
            f"staff number {member.staff!r} is already used by staff[{j}]",
            "give every member their own staff number (工号)",
        )
    coded = [m for m in cfg.staff if m.key_code is not None]
    for _, member, j in _first_use(coded, operator.attrgetter("key_code")):
        yield ConfigProblem(
            f"staff[{cfg.staff.index(member)}].key_code",
            f"sign-in code {member.key_code} is already used by staff {coded[j].staff}",
            "give every member their own key_code",
        )
    for i, member in enumerate(cfg.staff):
        for k, wid in enumerate(member.windows):
            if wid not in window_ids:
                yield ConfigProblem(
                    f"staff[{i}].windows[{k}]", f"unknown window {wid!r}", windows_hint
                )
    rota = cfg.rota
    for i, shift, j in _first_use(rota.shifts, operator.attrgetter("id")):
        yield ConfigProblem(
            f"rota.shifts[{i}].id",
            f"shift id {shift.id!r} is already used by rota.shifts[{j}]",
            "give every shift its own id",
        )
    for b, later in enumerate(rota.shifts):
        for a, earlier in enumerate(rota.shifts[:b]):
            if later.start < earlier.end and earlier.start < later.end:
                yield ConfigProblem(
                    f"rota.shifts[{b}]",
                    f"{later.name} {later.start:%H:%M}-{later.end:%H:%M} overlaps "
                    f"rota.shifts[{a}] ({earlier.name} {earlier.start:%H:%M}-"
                    f"{earlier.end:%H:%M})",
                    "make one shift end at or before the next starts",
                )
    shift_ids = [s.id for s in rota.shifts]

    def people(at: str, post: Post) -> Iterator[ConfigProblem]:
        if post.window not in window_ids:
            yield ConfigProblem(f"{at}.window", f"unknown window {post.window!r}", windows_hint)
        for role, number in (("a", post.a), ("b", post.b)):
            if number is None:
                continue
            member = roster.get(number)
            if member is None:
                hint = (
                    f"use a staff number of the roster ({', '.join(roster)}), or add them "
                    "under staff"
                    if roster
                    else "list the hall's staff under staff (工号, name); central pushes "
                    "staff with the rota"
                )
                yield ConfigProblem(f"{at}.{role}", f"unknown staff {number!r}", hint)
            elif not member.may_work_at(post.window):
                yield ConfigProblem(
                    f"{at}.{role}",
                    f"staff {number} ({member.name}) works at window "
                    f"{', '.join(member.windows)}, not {post.window}",
                    f"add {post.window!r} to their windows, or put someone else here",
                )

    for i, post, j in _first_use(rota.posts, operator.attrgetter("window")):
        yield ConfigProblem(
            f"rota.posts[{i}].window",
            f"window {post.window!r} already has its post in rota.posts[{j}]",
            "give each window one post (its A and B); use rota.week for changes by day",
        )
    for i, post in enumerate(rota.posts):
        yield from people(f"rota.posts[{i}]", post)
    covered: dict[tuple[str, str, str], int] = {}
    for i, entry in enumerate(rota.week):
        at = f"rota.week[{i}]"
        yield from people(at, entry)
        for k, sid in enumerate(entry.shifts):
            if sid not in shift_ids:
                yield ConfigProblem(
                    f"{at}.shifts[{k}]",
                    f"unknown shift {sid!r}",
                    f"use one of the shifts: {', '.join(shift_ids)}",
                )
        for day in entry.days:
            for sid in entry.shifts or shift_ids:
                j = covered.setdefault((entry.window, day, sid), i)
                if j != i:
                    yield ConfigProblem(
                        at,
                        f"window {entry.window} on {day} ({sid}) is already given by "
                        f"rota.week[{j}]",
                        "give each window, day and shift one entry",
                    )
    yield from _check_double_duty(rota, window_ids)


def _check_double_duty(rota: Rota, window_ids: list[str]) -> Iterator[ConfigProblem]:
    """Nobody is A (主岗) at two windows in the same shift."""
    told: set[tuple[str, str, str]] = set()
    for day in WEEKDAYS:
        for shift in rota.shifts:
            seen: dict[str, str] = {}
            for wid in window_ids:
                post = rota.post(wid, day, shift.id)
                if post is None:
                    continue
                other = seen.setdefault(post.a, wid)
                if other != wid and (post.a, other, wid) not in told:
                    told.add((post.a, other, wid))
                    yield ConfigProblem(
                        "rota",
                        f"staff {post.a} is A (主岗) at windows {other} and {wid} on {day} "
                        f"({shift.name})",
                        "one person serves at one window at a time: change one of them",
                    )
