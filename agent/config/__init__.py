"""The hall's configuration: pydantic v2 models, YAML loading, environment overrides.

One YAML file describes a hall (``/etc/hall-agent/config.yaml`` on a Pi). Every field can
be overridden by an environment variable ``HALL_<SECTION>__<FIELD>``. Every problem found
while loading becomes a :class:`ConfigProblem` naming the field and the fix; all of them
together are raised as one :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import operator
import os
import re
import string
import sys
import types
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKDAYS: tuple[Weekday, ...] = WEEKDAYS[:5]

IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
HALL_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
PREFIX_PATTERN = r"^[A-Z]{1,2}$"
KEY_NAME_PATTERN = r"^(KEY|BTN)_[A-Z0-9_]+$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
REGION_CODE_PATTERN = r"^[0-9]{6}([0-9]{6})?$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
KeyName = Annotated[str, Field(pattern=KEY_NAME_PATTERN)]

ENV_PREFIX = "HALL_"
DOCS_HINT = "see docs/configuration.md"

# What each pattern means, in words, for the person fixing the file.
_PATTERN_HINTS: dict[str, str] = {
    IDENTIFIER_PATTERN: "an id is 1-32 characters: lower-case letters a-z, digits, '-' or '_', "
    "starting with a letter or digit (e.g. social-security)",
    HALL_ID_PATTERN: "a hall id is 2-63 characters: lower-case letters a-z, digits and '-', "
    "starting with a letter or digit (e.g. bj-hd-zgc-001); it is the MQTT client id",
    PREFIX_PATTERN: "a ticket prefix is 1 or 2 capital letters A-Z (e.g. A or GA)",
    KEY_NAME_PATTERN: "use an evdev key name as evtest prints it (e.g. KEY_F1, KEY_KP1, BTN_0)",
    ENV_NAME_PATTERN: "use an environment variable name: capital letters, digits and '_' "
    "(e.g. HALL_CALLER_TOKEN)",
    REGION_CODE_PATTERN: "use the 6-digit administrative division code (行政区划代码), "
    "or its 12-digit form down to the street/community",
    LANGUAGE_PATTERN: "use a language tag naming a clip pack: zh (Mandarin), en, yue, ug, bo ...",
}


def _invalid(message: str, hint: str, at: str | None = None) -> PydanticCustomError:
    """A validation error carrying its fix; ``at`` names a sub-field of the validated model."""
    context: dict[str, str] = {"hint": hint}
    if at is not None:
        context["at"] = at
    return PydanticCustomError("invalid", message, context)


# ---------------------------------------------------------------------------------------
# YAML


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars and no duplicate keys.

    YAML 1.1 (PyYAML's default) reads ``13:30`` as the base-60 number 810, which pydantic
    then takes as 00:13:30; ``on``/``no`` as booleans and ``010`` as octal. Here times stay
    text, only true/false are booleans, and ints are decimal, ``0x..`` or ``0o..``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            first = seen.setdefault(key_node.value, key_node.start_mark)
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key_node.value!r} twice (first on line {first.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    if digits[:2] in ("0o", "0O"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_YamlLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"), list("-+0123456789")
)
_YamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_YamlLoader.add_constructor(_INT_TAG, _construct_int)


def _load_yaml(text: str) -> Any:
    loader = _YamlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------
# Queue: hall, services, windows


class Model(BaseModel):
    """Base for every config model: unknown keys are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_SHORT_TIME = re.compile(r"^\d:\d\d$")
# JSON Schema's "time" format demands seconds and a UTC offset; the file says 09:00.
TimeOfDay = Annotated[
    dt.time, WithJsonSchema({"type": "string", "pattern": "^[0-2]?[0-9]:[0-5][0-9](:[0-5][0-9])?$"})
]


class Period(Model):
    """One opening period, e.g. ``09:00-12:00`` on weekdays. The end is exclusive."""

    start: TimeOfDay
    end: TimeOfDay
    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS), min_length=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_text(cls, value: object) -> object:
        # pydantic reads a number as seconds after midnight: 9 would silently be 00:00:09.
        if isinstance(value, int | float):
            raise _invalid(
                f"{value!r} is a number, not a time of day", "write the time as HH:MM, e.g. 09:00"
            )
        if isinstance(value, str) and _SHORT_TIME.match(value):
            return "0" + value
        return value

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) != len(days):
            raise _invalid("a day is listed twice", "list each day once, e.g. [mon, tue, wed]")
        return days

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise _invalid(
                f"the period ends ({self.end:%H:%M}) before it starts ({self.start:%H:%M})",
                "write start < end; split a period that crosses midnight in two",
                at="end",
            )
        return self

    def contains(self, local: dt.datetime) -> bool:
        return WEEKDAYS[local.weekday()] in self.days and self.start <= local.time() < self.end

    def overlaps(self, other: Period) -> bool:
        return bool(set(self.days) & set(other.days)) and (
            self.start < other.end and other.start < self.end
        )

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {','.join(self.days)}"


class HallConfig(Model):
    """The hall itself."""

    id: Annotated[str, Field(pattern=HALL_ID_PATTERN)] = Field(
        description="Unique hall id: MQTT client id and topic segment hall/v1/{id}/"
    )
    name: str = Field(min_length=1, description="Display name, e.g. 中关村街道党群服务中心")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the hall")
    day_start_hour: int = Field(
        default=4, ge=0, le=23, description="Local hour at which the business day rolls over"
    )
    region_code: Annotated[str, Field(pattern=REGION_CODE_PATTERN)] | None = Field(
        default=None, description="Administrative division code (行政区划代码) for ratings"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise _invalid(
                f"unknown time zone {value!r}", "use an IANA name like Asia/Shanghai"
            ) from err
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class QueuePolicy(Model):
    """Hall-wide queue rules."""

    recall_limit: int = Field(default=3, ge=0, le=20)
    aging_minutes: int | None = Field(default=None, ge=1)
    green_channel_age: int = Field(default=65, ge=50, le=120)
    one_waiting_ticket_per_id: bool = True
    service_time_window: int = Field(default=20, ge=1, le=500)


class Service(Model):
    """A service (业务) citizens take tickets for."""

    id: Identifier
    name: str = Field(min_length=1)
    name_en: str | None = None
    prefix: Annotated[str, Field(pattern=PREFIX_PATTERN)]
    width: int = Field(default=3, ge=2, le=5)
    daily_cap: int | None = Field(default=None, ge=1)
    hours: list[Period] = Field(default_factory=list)
    waiting_warning: int | None = Field(default=None, ge=1)
    expected_minutes: float = Field(default=5.0, gt=0, le=480)

    def open_at(self, local: dt.datetime) -> bool:
        return not self.hours or any(p.contains(local) for p in self.hours)


class Window(Model):
    """A counter window; ``services`` in calling priority order."""

    id: Identifier
    name: str = Field(min_length=1)
    number: int = Field(ge=1, le=999)
    services: list[Identifier] = Field(min_length=1)
    devices: list[Identifier] = Field(default_factory=list)


class StorageConfig(Model):
    path: Path = Path("/var/lib/hall-agent")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    max_days: int = Field(default=30, ge=1)
    prune_interval_s: float = Field(
        default=300.0, ge=1, le=86400, description="How often the outbox limits are enforced"
    )
    reserve_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "Free space kept on the state disk: below it the outbox is trimmed by policy "
            "(acknowledged first, device chatter before business events); a quarter of it, "
            "at most 8 MiB, is held in a reserve file released when the disk fills up"
        ),
    )


class WebConfig(Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8737, ge=0, le=65535)


class PagesConfig(Model):
    """The pages the agent serves to screens and the kiosk (docs/pages.md)."""

    large_text: bool = Field(
        default=False, description="Elder-friendly pages: larger text on every screen"
    )
    recent_calls: int = Field(
        default=8, ge=1, le=30, description="Calls listed on the big screen besides the current"
    )
    highlight_s: float = Field(
        default=12.0, ge=1, le=120, description="How long a new call flashes on the screens"
    )
    staff_photos: Path | None = Field(
        default=None,
        description="Folder of staff photos, <staff number>.jpg/.png, shown on window pages",
    )
    font: Path = Field(
        default=Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
        description="CJK font served to the pages (Debian package fonts-wqy-microhei)",
    )


class LoggingConfig(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "text", "journald"] = "auto"


class ClockConfig(Model):
    trust: Literal["synchronized", "system"] = Field(
        default="synchronized",
        description=(
            "synchronized: the clock is trusted once NTP (timesyncd, chrony, ntpd) or a "
            "battery-backed RTC set it in this boot; system: any plausible system time is "
            "trusted (a VM or container whose host keeps the time)"
        ),
    )


# ---------------------------------------------------------------------------------------
# Transports: how the agent reaches a device. Each knows what two devices must not share.

_SERIAL_PORT = re.compile(r"^(/|[a-z][a-z0-9+]*://)")


class SerialTransport(Model):
    """A serial line (RS-232, or RS-485 through a USB adapter), or a pyserial URL."""

    type: Literal["serial"] = "serial"
    port: str = Field(
        min_length=1, description="Device path (/dev/ttyUSB0, /dev/hall/led) or socket://host:port"
    )
    baudrate: int = Field(default=9600, ge=300, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Annotated[float, WithJsonSchema({"enum": [1, 1.5, 2]})] = 1

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise _invalid(f"{value} stop bits do not exist", "use 1, 1.5 or 2")
        return value

    @field_validator("port")
    @classmethod
    def _port_form(cls, value: str) -> str:
        if not _SERIAL_PORT.match(value):
            raise _invalid(
                f"{value!r} is not a device path",
                "use a full path such as /dev/ttyUSB0, a stable link from /dev/serial/by-id/, "
                "or a pyserial URL such as socket://127.0.0.1:7001",
            )
        return value

    @property
    def framing(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits:g}"

    def endpoint(self) -> str | None:
        return f"serial port {self.port}"


class IdReaderSerialTransport(SerialTransport):
    """Serial line of a GA/T 467 ID card reader: 115200 8N1 unless the reader was re-set."""

    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 115200


def _usb_id(value: object) -> object:
    if isinstance(value, str):
        text = value.strip().lower()
        if not re.fullmatch(r"(0x)?[0-9a-f]{1,4}", text):
            raise _invalid(
                f"{value!r} is not a USB id",
                'write the 4 hex digits lsusb prints, as 0x0416 (or the string "0416")',
            )
        return int(text.removeprefix("0x"), 16)
    return value


UsbId = Annotated[
    int,
    BeforeValidator(_usb_id),
    Field(ge=0, le=0xFFFF),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 0xFFFF},
                {"type": "string", "pattern": "^(0[xX])?[0-9a-fA-F]{1,4}$"},
            ]
        }
    ),
]


class UsbTransport(Model):
    """A USB device found by vendor and product id (as lsusb prints them)."""

    type: Literal["usb"] = "usb"
    vendor_id: UsbId
    product_id: UsbId
    serial: str | None = Field(
        default=None, description="USB serial number, to tell two identical devices apart"
    )

    def endpoint(self) -> str | None:
        serial = f" serial {self.serial}" if self.serial else ""
        return f"USB device {self.vendor_id:04x}:{self.product_id:04x}{serial}"


_HOST_WITH_EXTRAS = re.compile(r"[/\s]|^[^:]+:\d+$")


class NetworkTransport(Model):
    """TCP: a network printer (port 9100), a serial-over-TCP adapter, or an emulator."""

    type: Literal["network"] = "network"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        if _HOST_WITH_EXTRAS.search(value):
            raise _invalid(
                f"{value!r} is not a bare host name or address",
                "write only the host (e.g. 192.168.1.50) and put the port in port:",
            )
        return value

    def endpoint(self) -> str | None:
        return f"network address {self.host.lower()}:{self.port}"


class FileTransport(Model):
    """A file or device node written to (``/dev/usb/lp0``), or a folder for WAV output."""

    type: Literal["file"] = "file"
    path: Path

    def endpoint(self) -> str | None:
        return f"file {self.path}"


class EvdevTransport(Model):
    """A Linux input device: USB keypad, GPIO buttons (gpio-key), scanner keyboard wedge."""

    type: Literal["evdev"] = "evdev"
    path: Path | None = Field(
        default=None, description="Event device, preferably a /dev/input/by-id/ link"
    )
    name: str | None = Field(
        default=None, description="Match the device by (part of) its kernel name instead"
    )
    grab: bool = Field(
        default=True, description="Take the device exclusively so keys do not reach the console"
    )

    @model_validator(mode="after")
    def _one_selector(self) -> EvdevTransport:
        if (self.path is None) == (self.name is None):
            raise _invalid(
                "give exactly one of path and name",
                "set path: /dev/input/by-id/... or name: <part of the name evtest shows>",
            )
        return self

    def endpoint(self) -> str | None:
        return f"input device {self.path}" if self.path else f"input device named {self.name!r}"


class WebTransport(Model):
    """A page served by the agent (screen, caller, rater tablet)."""

    type: Literal["web"] = "web"
    token_env: Annotated[str, Field(pattern=ENV_NAME_PATTERN)] | None = Field(
        default=None, description="Environment variable holding the access token for the page"
    )

    def endpoint(self) -> str | None:
        return None


class AlsaTransport(Model):
    """An ALSA playback device."""

    type: Literal["alsa"] = "alsa"
    device: str = Field(default="default", min_length=1, description="e.g. default, hw:1,0")

    def endpoint(self) -> str | None:
        return f"ALSA device {self.device}"


class V4l2Transport(Model):
    """A UVC camera through V4L2."""

    type: Literal["v4l2"] = "v4l2"
    path: Path = Field(description="e.g. /dev/video0 or a /dev/v4l/by-id/ link")

    def endpoint(self) -> str | None:
        return f"video device {self.path}"


class SaneTransport(Model):
    """A scanner through SANE."""

    type: Literal["sane"] = "sane"
    device_name: str = Field(min_length=1, description="As scanimage -L prints it")

    def endpoint(self) -> str | None:
        return f"SANE device {self.device_name}"


class TestPatternTransport(Model):
    """A stand-in camera: ffmpeg's test pattern (the demo, a hall waiting for its camera)."""

    __test__ = False  # not a pytest class despite its name

    type: Literal["test_pattern"] = "test_pattern"
    pattern: Literal["testsrc2", "smptebars", "rgbtestsrc"] = "testsrc2"

    def endpoint(self) -> str | None:
        return None


Transport = (
    SerialTransport
    | UsbTransport
    | NetworkTransport
    | FileTransport
    | EvdevTransport
    | WebTransport
    | AlsaTransport
    | V4l2Transport
    | SaneTransport
    | TestPatternTransport
)


# ---------------------------------------------------------------------------------------
# Devices: one model per kind; ``transport`` lists the transports that make sense for it.

BusAddress = Annotated[int, Field(ge=1, le=254)]


class _DeviceBase(Model):
    id: Identifier
    name: str | None = Field(default=None, description="Label for operators and status reports")

    @classmethod
    def allowed_transports(cls) -> tuple[str, ...]:
        """The transport types this device kind accepts, from its ``transport`` annotation."""
        tp = _strip(cls.model_fields["transport"].annotation)
        members = _models_of_union(tp) or ([tp] if _is_model(tp) else [])
        return tuple(tag[1] for m in members if (tag := _tag(m)) is not None)

    @field_validator("transport", mode="before", check_fields=False)
    @classmethod
    def _transport_allowed(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        allowed = cls.allowed_transports()
        kind = cls.model_fields["kind"].default
        if "type" not in value:
            if len(allowed) == 1:
                return {**value, "type": allowed[0]}
            raise _invalid(
                "the transport has no type", f"add type: with one of {', '.join(allowed)}"
            )
        if value["type"] not in allowed:
            raise _invalid(
                f"a {kind} cannot use transport type {value['type']!r}",
                f"a {kind} accepts transport type {' or '.join(allowed)}",
                at="type",
            )
        return value


class _BusDevice(_DeviceBase):
    """A keypad on the caller/rater RS-485 bus, or on evdev / a web page."""

    address: BusAddress | None = Field(
        default=None, description="Bus address 1-254 (serial and network transports)"
    )

    @model_validator(mode="after")
    def _address_on_bus(self) -> _BusDevice:
        transport = getattr(self, "transport", None)
        if isinstance(transport, SerialTransport | NetworkTransport) and self.address is None:
            raise _invalid(
                f"a keypad on a {transport.type} bus needs its bus address",
                "set address: 1-254 as configured on the keypad",
                at="address",
            )
        return self


class PrinterDevice(_DeviceBase):
    """ESC/POS ticket printer (取号机)."""

    kind: Literal["printer"] = "printer"
    transport: Annotated[
        UsbTransport | SerialTransport | NetworkTransport | FileTransport,
        Field(discriminator="type"),
    ]
    profile: Literal["gb18030", "raster"] = Field(
        default="gb18030",
        description="gb18030: the printer's Chinese font (FS &); raster: text rendered as image",
    )
    paper_width_mm: Literal[58, 80] = 80
    font_charset: Literal["gb2312", "gbk", "gb18030"] = Field(
        default="gbk",
        description=(
            "Characters the printer's Chinese font has (gb18030 profile); lines with others "
            "(rare name characters) are printed as images"
        ),
    )
    poll_interval_s: float = Field(
        default=2.0,
        ge=0.2,
        le=60,
        description="How often the printer's status (paper, cover, errors) is asked",
    )


class LedStripDevice(_DeviceBase):
    """LED strip above a window (RS-485)."""

    kind: Literal["led_strip"] = "led_strip"
    transport: Annotated[SerialTransport | NetworkTransport, Field(discriminator="type")]
    address: int = Field(default=1, ge=0, le=0xFFFF, description="Controller address on the bus")
    protocol: Literal["text_frame", "number_board"] = Field(
        default="text_frame",
        description=(
            "Frame protocol of the controller (protocols/led.py): text_frame shows GB2312 "
            "text; number_board shows the ticket's digits only"
        ),
    )
    text: str = Field(
        default="请{ticket}号",
        min_length=1,
        max_length=64,
        description="Shown while the window calls or serves a ticket; {ticket}, {window}",
    )
    idle_text: str = Field(
        default="{window}号窗口",
        max_length=64,
        description="Shown while the window has no ticket; {window}; empty: blank",
    )
    paused_text: str = Field(default="暂停服务", max_length=64, description="Window paused")

    @field_validator("text", "idle_text", "paused_text")
    @classmethod
    def _led_template(cls, value: str) -> str:
        hint = "use only {ticket} and {window} in the text; write {{ for a brace"
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(value) if n is not None]
        except ValueError as err:
            raise _invalid(f"the text template is malformed: {err}", hint) from err
        unknown = sorted({n for n in names if n not in ("ticket", "window")})
        if unknown:
            raise _invalid(f"unknown placeholder(s) {', '.join(unknown)}", hint)
        return value

    @model_validator(mode="after")
    def _board_address(self) -> LedStripDevice:
        if self.protocol == "number_board" and self.address > 0xFF:
            raise _invalid(
                f"a number board's address is one byte, not {self.address}",
                "use an address from 0 to 255",
                at="address",
            )
        return self


class ScreenDevice(_DeviceBase):
    """A browser showing the hall's big screen or one window's page."""

    kind: Literal["screen"] = "screen"
    transport: WebTransport = Field(default_factory=WebTransport)
    role: Literal["hall", "window"] = "hall"


class AnnouncerDevice(_DeviceBase):
    """Voice announcer (语音叫号) through ALSA, or WAV files into a folder."""

    kind: Literal["announcer"] = "announcer"
    transport: Annotated[AlsaTransport | FileTransport, Field(discriminator="type")] = Field(
        default_factory=AlsaTransport
    )
    repeat: int = Field(default=2, ge=1, le=3, description="How many times a call is spoken")
    language: list[Annotated[str, Field(pattern=LANGUAGE_PATTERN)]] = Field(
        default_factory=lambda: ["zh"],
        min_length=1,
        max_length=2,
        description="Clip packs spoken in order: zh first, optional second language",
    )
    chime: bool = True
    volume: int = Field(
        default=100,
        ge=0,
        le=100,
        description=(
            "Loudness of the announcements in percent of the clips as recorded (a software "
            "gain on top of the ALSA mixer; 0 is silent)"
        ),
    )
    clips: Path | None = Field(
        default=None,
        description=(
            "Folder holding one clip pack per language (<clips>/zh/pack.json ...); default: "
            "<storage.path>/voice, generated there with espeak-ng when missing"
        ),
    )
    templates: dict[Annotated[str, Field(pattern=LANGUAGE_PATTERN)], str] = Field(
        default_factory=dict,
        description=(
            "Per language, the clips of one call separated by spaces, with {ticket} and "
            "{window}; default zh: '请 {ticket} 号 到 {window} 号窗口 办理'"
        ),
    )
    max_delay_s: float = Field(
        default=120.0,
        ge=5,
        le=3600,
        description="A call still waiting to be spoken after this long is skipped (logged)",
    )


# -- window callers and raters (issue 6) --------------------------------------------------

# Keypad bus protocols (protocols/keypad); devices on one bus speak the same one.
KeypadProtocolName = Literal["ff68"]
# What an evdev caller key does: a function key of the caller, a digit typed before one,
# or clearing the digits typed so far.
CallerKeyName = Literal[
    "next",
    "recall",
    "rate",
    "confirm",
    "pause",
    "transfer",
    "serving",
    "finish",
    "no_show",
    "hold",
    "sign_out",
    "clear",
    "digit0",
    "digit1",
    "digit2",
    "digit3",
    "digit4",
    "digit5",
    "digit6",
    "digit7",
    "digit8",
    "digit9",
]
RatingLevelValue = Annotated[int, Field(ge=1, le=5)]


def _numeric_keypad() -> dict[str, CallerKeyName]:
    """A USB numeric keypad: digits, + next, - recall, * rating, / pause, . transfer."""
    keys: dict[str, CallerKeyName] = {
        "KEY_KPPLUS": "next",
        "KEY_KPMINUS": "recall",
        "KEY_KPASTERISK": "rate",
        "KEY_KPENTER": "confirm",
        "KEY_KPSLASH": "pause",
        "KEY_KPDOT": "transfer",
        "KEY_BACKSPACE": "clear",
    }
    digits: tuple[CallerKeyName, ...] = (
        "digit0",
        "digit1",
        "digit2",
        "digit3",
        "digit4",
        "digit5",
        "digit6",
        "digit7",
        "digit8",
        "digit9",
    )
    for n, name in enumerate(digits):
        keys[f"KEY_KP{n}"] = name
    return keys


def _rater_keypad() -> dict[str, int]:
    """Keys 1-5 (top row or numeric pad) are 非常满意 … 非常不满意."""
    return {
        **{f"KEY_{n}": 6 - n for n in range(1, 6)},
        **{f"KEY_KP{n}": 6 - n for n in range(1, 6)},
    }


class CallerDevice(_BusDevice):
    """Staff keypad at a window (呼叫器): serial bus, evdev keypad or web page."""

    kind: Literal["caller"] = "caller"
    transport: Annotated[
        SerialTransport | NetworkTransport | EvdevTransport | WebTransport,
        Field(discriminator="type"),
    ]
    protocol: KeypadProtocolName = Field(
        default="ff68", description="Keypad bus protocol (serial and network transports)"
    )
    keymap: dict[KeyName, CallerKeyName] = Field(
        default_factory=_numeric_keypad,
        min_length=1,
        description=(
            "evdev keypads: key name -> next, recall, rate, confirm, pause, transfer, "
            "serving, finish, no_show, hold, sign_out, clear or digit0-digit9"
        ),
    )


class RaterDevice(_BusDevice):
    """Satisfaction rater (评价器, 好差评): keypad on the bus, evdev or tablet page."""

    kind: Literal["rater"] = "rater"
    transport: Annotated[
        SerialTransport | NetworkTransport | EvdevTransport | WebTransport,
        Field(discriminator="type"),
    ]
    protocol: KeypadProtocolName = Field(
        default="ff68", description="Keypad bus protocol (serial and network transports)"
    )
    keys: list[RatingLevelValue] = Field(
        default_factory=lambda: [5, 4, 3, 2, 1],
        min_length=2,
        max_length=8,
        description=(
            "Bus raters: the level of each key by its index, leftmost first "
            "(5 非常满意 … 1 非常不满意); a 4-key unit e.g. [5, 4, 3, 1]"
        ),
    )
    keymap: dict[KeyName, RatingLevelValue] = Field(
        default_factory=_rater_keypad,
        min_length=2,
        description="evdev raters: key name -> level 5 (非常满意) … 1 (非常不满意)",
    )


class IdReaderDevice(_DeviceBase):
    """Resident ID card reader (GA/T 467)."""

    kind: Literal["id_reader"] = "id_reader"
    transport: Annotated[IdReaderSerialTransport | NetworkTransport, Field(discriminator="type")]
    poll_interval_s: float = Field(
        default=0.3, ge=0.05, le=5, description="How often the reader is asked for a card"
    )
    service: Identifier | None = Field(
        default=None,
        description=(
            "A kiosk reader (one no window lists): a card issues a ticket for this service at "
            "once; null lets the kiosk page ask which service (or the appointment decides)"
        ),
    )
    read_fingerprint: bool = Field(
        default=False, description="Read the fingerprint block too (30 10); it is never sent"
    )
    sign_in_staff: bool = Field(
        default=True,
        description="A window reader: a staff member's card (in central's roster) signs in",
    )


class CameraDevice(_DeviceBase):
    """High-speed document camera (高拍仪), UVC."""

    kind: Literal["camera"] = "camera"
    transport: Annotated[V4l2Transport | TestPatternTransport, Field(discriminator="type")]

    @model_validator(mode="before")
    @classmethod
    def _v4l2_unless_told(cls, data: object) -> object:
        # A camera is a V4L2 device; the test pattern stand-in must be asked for by type.
        transport = data.get("transport") if isinstance(data, Mapping) else None
        if isinstance(data, Mapping) and isinstance(transport, Mapping) and "type" not in transport:
            return {**data, "transport": {**transport, "type": "v4l2"}}
        return data

    width: int | None = Field(default=None, ge=160, le=10000, description="Capture width")
    height: int | None = Field(default=None, ge=120, le=10000, description="Capture height")
    warmup_frames: int = Field(
        default=5, ge=0, le=60, description="Frames skipped while exposure settles"
    )

    @model_validator(mode="after")
    def _both_sizes(self) -> CameraDevice:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise _invalid(
                "width and height go together",
                "give both (e.g. width: 2592, height: 1944) or neither for the largest size",
                at=missing,
            )
        return self


class DocScannerDevice(_DeviceBase):
    """Sheet-fed document scanner through SANE."""

    kind: Literal["doc_scanner"] = "doc_scanner"
    transport: SaneTransport
    resolution_dpi: int = Field(default=300, ge=75, le=1200)
    mode: Literal["color", "gray", "lineart"] = "color"
    source: str | None = Field(
        default=None, description="SANE source, e.g. 'ADF' or 'ADF Duplex'; null: the default"
    )


class TicketButtonsDevice(_DeviceBase):
    """Physical ticket buttons as evdev keys (USB keypad or GPIO gpio-key)."""

    kind: Literal["ticket_buttons"] = "ticket_buttons"
    transport: EvdevTransport
    keymap: dict[KeyName, Identifier] = Field(
        min_length=1, description="Key name -> service id, e.g. KEY_F1: social"
    )


class CodeScannerDevice(_DeviceBase):
    """QR/barcode scanner acting as a keyboard (evdev wedge, grabbed)."""

    kind: Literal["code_scanner"] = "code_scanner"
    transport: EvdevTransport
    terminator: Literal["KEY_ENTER", "KEY_TAB"] = Field(
        default="KEY_ENTER", description="Key the scanner sends after each code"
    )
    appointment_pattern: str = Field(
        default=r"^HALL-APPT:(?P<service>[a-z0-9][a-z0-9_-]{0,31}):(?P<ref>[A-Za-z0-9-]{1,64})$",
        description=(
            "Regular expression an appointment code matches, with a group 'service' (the "
            "service id); a match issues an appointment ticket for that service"
        ),
    )

    @field_validator("appointment_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as err:
            raise _invalid(f"not a regular expression: {err}", "fix the pattern") from err
        if "service" not in compiled.groupindex:
            raise _invalid(
                "the pattern has no group named 'service'",
                "name the part holding the service id: (?P<service>...)",
            )
        return value


Device = Annotated[
    PrinterDevice
    | LedStripDevice
    | ScreenDevice
    | AnnouncerDevice
    | CallerDevice
    | RaterDevice
    | IdReaderDevice
    | CameraDevice
    | DocScannerDevice
    | TicketButtonsDevice
    | CodeScannerDevice,
    Field(discriminator="kind"),
]
DeviceKind = Literal[
    "printer",
    "led_strip",
    "screen",
    "announcer",
    "caller",
    "rater",
    "id_reader",
    "camera",
    "doc_scanner",
    "ticket_buttons",
    "code_scanner",
]
DEVICE_KINDS: tuple[DeviceKind, ...] = get_args(DeviceKind)

# Devices that may share one serial port / TCP address: several keypads or LED boards on
# one RS-485 bus, told apart by address. Devices of one family speak one protocol.
_BUS_FAMILY: dict[str, str] = {"caller": "keypad", "rater": "keypad", "led_strip": "led"}
# Devices that serve the whole hall and so cannot belong to one window.
_HALL_WIDE_KINDS = frozenset({"announcer", "ticket_buttons"})


# -- window callers and the satisfaction rating (好差评) (issue 6) --------------------------


class CallerPolicy(Model):
    """How window callers (keypads, the web caller page) are read."""

    debounce_s: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description=(
            "The same operation pressed again at a window within this time is one press "
            "(a double press, a keypad repeating a frame it saw no answer to)"
        ),
    )


# Bad-rating options a citizen chooses from (after GB/T 39734-2020 Annex A in spirit;
# provinces publish their own lists: put yours in the config).
DEFAULT_BAD_REASONS = (
    "服务态度不好",
    "办事效率低",
    "业务不熟练",
    "政策解释不清楚",
    "要求提供规定以外的材料",
    "多次跑腿仍未办成",
    "窗口人员不在岗",
    "其他",
)


class RatingPolicy(Model):
    """The satisfaction rating (好差评) at the windows: one rating per ticket."""

    start_on: Literal["finish", "any_finish", "request"] = Field(
        default="any_finish",
        description=(
            "When a window's rater invites the citizen: finish (the finish operation), "
            "any_finish (also when next, a call by number or a sign-out ends the ticket), "
            "request (only when staff or central request a rating)"
        ),
    )
    timeout_s: float = Field(
        default=60.0, ge=5, le=900, description="How long the rater waits for the citizen"
    )
    on_timeout: Literal["none", "default"] = Field(
        default="none",
        description=(
            "none: nothing is recorded when the citizen does not rate; default: "
            "default_level is recorded, marked defaulted (never after a bad key was pressed)"
        ),
    )
    default_level: int = Field(
        default=4,
        ge=3,
        le=5,
        description="Level recorded on timeout with on_timeout: default (5 非常满意, 4 满意, "
        "3 基本满意; a bad rating needs the citizen's reason, so it is never a default)",
    )
    reasons: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=lambda: list(DEFAULT_BAD_REASONS),
        min_length=1,
        max_length=16,
        description=(
            "Reasons a citizen chooses from for 不满意 and 非常不满意 (required for them); "
            "keypad raters choose by key index after the bad key, so list the keypad's first"
        ),
    )

    @field_validator("reasons")
    @classmethod
    def _unique_reasons(cls, reasons: list[str]) -> list[str]:
        if len(set(reasons)) != len(reasons):
            raise _invalid("a reason is listed twice", "list each reason once")
        return reasons


_TICKET_FIELDS = ("hall", "day", "ticket", "ticket_id", "service")
PrintSource = Literal["button", "touch", "qr", "id_card", "api", "central"]
_PRINTED_SOURCES: tuple[PrintSource, ...] = ("button", "touch", "qr", "id_card", "api")


class TicketLayout(Model):
    """What the printed ticket says and which tickets are printed."""

    qr_url: str | None = Field(
        default=None,
        description=(
            "QR code link on the ticket (mobile tracking or rating page); "
            "may use {hall}, {day}, {ticket}, {ticket_id}, {service}; null: no QR code"
        ),
    )
    footer: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        default_factory=lambda: ["过号请重新取号"],
        max_length=4,
        description="Lines printed at the bottom, e.g. 过号请重新取号",
    )
    large: bool = Field(
        default=False, description="Elder-friendly layout: larger text, fewer lines"
    )
    show_wait: bool = Field(default=True, description="Print people ahead and estimated wait")
    print_sources: list[PrintSource] = Field(
        default_factory=lambda: list(_PRINTED_SOURCES),
        description=(
            "Tickets from these sources are printed, and refused while the printer cannot "
            "print; others (central: issued remotely) are only saved"
        ),
    )
    font: Path = Field(
        default=Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
        description="CJK font for raster printing (Debian package fonts-wqy-microhei)",
    )

    @field_validator("qr_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hint = "use only {" + "}, {".join(_TICKET_FIELDS) + "} in the link; write {{ for a brace"
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as err:
            raise _invalid(f"the link template is malformed: {err}", hint) from err
        unknown = sorted({n for n in names if n not in _TICKET_FIELDS})
        if unknown:
            raise _invalid(f"unknown placeholder(s) {', '.join(unknown)} in the link", hint)
        if not urlsplit(value.replace("{", "").replace("}", "")).scheme:
            raise _invalid("the link has no scheme", "start it with https://")
        return value


# ---------------------------------------------------------------------------------------
# MQTT


class MqttTls(Model):
    """TLS files for the broker connection (CA pinning and the hall's client certificate)."""

    ca_file: Path | None = Field(default=None, description="CA certificate(s) to trust (PEM)")
    cert_file: Path | None = Field(default=None, description="The hall's client certificate")
    key_file: Path | None = Field(default=None, description="The client certificate's key")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _invalid(
                "cert_file and key_file go together",
                "give both the client certificate and its key, or neither",
                at=missing,
            )
        return self


_MQTT_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttConfig(Model):
    """The link to the central system. No url: no central link, the hall runs offline."""

    url: str | None = Field(
        default=None, description="mqtts://host:8883 or mqtt://host:1883; null runs offline"
    )
    tls: MqttTls = Field(default_factory=MqttTls)
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(default=45, ge=30, le=60, description="Seconds")
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=60,
        le=30 * 86400,
        description="How long the broker keeps the session (and queued commands) while offline",
    )
    reconnect_max_s: float = Field(
        default=60.0, ge=0.5, le=300, description="Cap of the reconnect backoff"
    )
    drain_rate: float = Field(
        default=200.0, gt=0, le=10_000, description="Events per second cap when catching up"
    )
    inflight: int = Field(
        default=32, ge=1, le=1000, description="Events published but not yet PUBACKed at once"
    )
    reconnect_spread_s: float = Field(
        default=45.0,
        ge=0,
        le=300,
        description=(
            "The first reconnect after a drop waits a random time up to this, so a city's "
            "halls do not all reconnect at once when the broker comes back"
        ),
    )
    stable_after_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="A connection up this long resets the reconnect backoff",
    )
    metrics_interval_s: float = Field(
        default=60.0, ge=1, le=3600, description="How often metrics are published (QoS 0)"
    )

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in _MQTT_DEFAULT_PORTS:
            raise _invalid(
                f"the url scheme must be mqtt or mqtts, not {parts.scheme or 'missing'!r}",
                "write mqtts://broker.example:8883 (TLS) or mqtt://127.0.0.1:1883",
            )
        try:
            port = parts.port
        except ValueError as err:
            raise _invalid(f"bad port in {value!r}", "the port is a number 1-65535") from err
        if not parts.hostname or port == 0:
            raise _invalid(f"{value!r} has no broker host", "write mqtts://HOST:PORT")
        if parts.username or parts.password:
            raise _invalid(
                "credentials do not belong in the url",
                "set mqtt.username and mqtt.password (e.g. HALL_MQTT__PASSWORD) instead",
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _invalid(f"{value!r} has a path or query", "write only scheme://host:port")
        return value

    @model_validator(mode="after")
    def _secure(self) -> MqttConfig:
        if self.url is None:
            return self
        if self.uses_tls and self.tls.ca_file is None:
            raise _invalid(
                "mqtts needs the CA to trust",
                "set tls.ca_file, e.g. /etc/hall-agent/tls/ca.pem",
                at="tls.ca_file",
            )
        if not self.uses_tls and (self.tls.ca_file or self.tls.cert_file):
            raise _invalid(
                "TLS files are set but the url is plaintext mqtt://",
                "use mqtts:// (the agent never sends over plaintext what it was told to encrypt)",
                at="url",
            )
        if self.password is not None and self.username is None:
            raise _invalid("a password without a username", "set username too", at="username")
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def uses_tls(self) -> bool:
        return self.url is not None and urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str | None:
        return None if self.url is None else urlsplit(self.url).hostname

    @property
    def port(self) -> int | None:
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        return parts.port or _MQTT_DEFAULT_PORTS[parts.scheme]


# ---------------------------------------------------------------------------------------
# Identity and documents (agent/features/identity.py, agent/runtime/personal.py,
# agent/features/documents.py)

PersonalDataForm = Literal["full", "masked", "hash", "none"]


class PersonalDataSend(Model):
    """What of an ID card leaves the hall, per flow: full (every field and the photo),
    masked (name and number masked), hash (a keyed hash of the number) or none."""

    kiosk: PersonalDataForm = Field(
        default="hash", description="A card that took a ticket at the kiosk"
    )
    window: PersonalDataForm = Field(
        default="full", description="A card read at a window, for central's acceptance flow"
    )


class PersonalDataConfig(Model):
    """How personal data from ID cards is kept: sealed at rest, erased once delivered."""

    key_file: Path | None = Field(
        default=None,
        description=(
            "32 random bytes, mode 0600 (created at install, or at the first start when "
            "missing); personal data at rest is sealed with it (AES-GCM); "
            "null: <storage.path>/personal-data.key"
        ),
    )
    hash_key_file: Path | None = Field(
        default=None,
        description=(
            "Key of the keyed hash of ID numbers; give every hall of a district the same "
            "file so central can match them; null: derived from key_file (this hall only)"
        ),
    )
    send: PersonalDataSend = Field(default_factory=PersonalDataSend)
    erase_after_hours: float = Field(
        default=72,
        ge=1,
        le=24 * 30,
        description="Sealed data is erased when central acknowledges it, and after this at most",
    )
    kiosk_hold_s: float = Field(
        default=60,
        ge=5,
        le=600,
        description="How long a card read at the kiosk waits for the citizen to pick a service",
    )


def personal_data_key(config: HallAgentConfig) -> Path:
    """Where the hall's personal data key is: the configured file, else beside the state."""
    return config.personal_data.key_file or config.storage.path / "personal-data.key"


class DocumentsConfig(Model):
    """Captured documents: the on-disk spool and the upload to central."""

    spool_path: Path | None = Field(
        default=None, description="Where captured pages wait (sealed); null: <storage.path>/spool"
    )
    spool_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Captures are refused while the pages waiting for central take this much",
    )
    chunk_bytes: int = Field(
        default=48 * 1024,
        ge=4 * 1024,
        le=192 * 1024,
        description="Bytes of a page per upload message (base64 in JSON: a third more)",
    )
    upload_rate: float = Field(default=20.0, gt=0, le=1000, description="Chunks per second at most")
    upload_inflight: int = Field(
        default=8,
        ge=1,
        le=64,
        description=(
            "Chunks sent but not yet confirmed by the broker at once: a slow link's round "
            "trip is paid once per window, not once per chunk"
        ),
    )
    ack_timeout_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="A finished upload central has not confirmed is offered again after this",
    )


# ---------------------------------------------------------------------------------------
# The whole file


class HallAgentConfig(Model):
    """The hall agent's configuration file."""

    hall: HallConfig
    queue: QueuePolicy = Field(default_factory=QueuePolicy)
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

    @model_validator(mode="after")
    def _consistent(self) -> HallAgentConfig:
        problems = [
            *_check_unique(self),
            *_check_hours(self),
            *_check_windows(self),
            *_check_devices(self),
        ]
        if problems:
            raise CrossCheckError(problems)
        return self

    def service(self, service_id: str) -> Service:
        for s in self.services:
            if s.id == service_id:
                return s
        raise KeyError(service_id)

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


# ---------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration: where, what, and how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.hint})"


def format_problems(problems: Sequence[ConfigProblem]) -> str:
    """One line per problem: ``PATH: MESSAGE (fix: HINT)``."""
    return "\n".join(str(p) for p in problems)


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` says everything that is wrong."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


class CrossCheckError(ValueError):
    """Raised inside validation when fields disagree with each other (carries the paths)."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


# ---------------------------------------------------------------------------------------
# Walking the model types alongside raw data (for error paths and env overrides)


def _strip(tp: Any) -> Any:
    """Remove Annotated and ``| None`` wrappers."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_optional(tp: Any) -> bool:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _models_of_union(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        if all(_is_model(a) for a in args):
            return list(args)
    return []


def _tag(model: type[BaseModel]) -> tuple[str, str] | None:
    """The discriminator field and value of a union member (``kind`` or ``type``)."""
    for name in ("kind", "type"):
        info = model.model_fields.get(name)
        if info is not None and get_origin(info.annotation) is Literal:
            return name, str(get_args(info.annotation)[0])
    return None


def _pick_member(members: list[type[BaseModel]], data: object) -> type[BaseModel] | None:
    if isinstance(data, dict):
        for member in members:
            tag = _tag(member)
            if tag is not None and data.get(tag[0]) == tag[1]:
                return member
    return None


def _index_label(index: int, item: object) -> str:
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return f"[{index}]({item['id']})"
    return f"[{index}]"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(frozen=True, slots=True)
class _Place:
    path: str
    keys: tuple[str | int, ...]
    model: type[BaseModel] | None  # the model holding ``field``
    field: str | None
    is_key: bool  # the error is about a mapping key, not its value


def _locate(loc: Sequence[str | int], data: object) -> _Place:
    """Turn a pydantic error location into a path people read, skipping union tags."""
    tp: Any = HallAgentConfig
    path = ""
    keys: list[str | int] = []
    model: type[BaseModel] | None = None
    field: str | None = None
    is_key = False
    for item in loc:
        tp = _strip(tp)
        members = _models_of_union(tp)
        if members:
            chosen = next((m for m in members if (_tag(m) or ("", ""))[1] == item), None)
            if chosen is not None:
                tp = chosen
                continue
            tp = _pick_member(members, data)
        if isinstance(item, int):
            path += _index_label(item, data[item] if isinstance(data, list) else None)
            data = data[item] if isinstance(data, list) and 0 <= item < len(data) else None
            tp = get_args(tp)[0] if get_origin(tp) is list else None
            keys.append(item)
        elif item == "[key]":
            is_key = True
        else:
            if _is_model(tp):
                model, field = tp, item
                info = tp.model_fields.get(item)
                tp = info.annotation if info else None
            else:
                tp = get_args(tp)[1] if get_origin(tp) is dict else None
            path = _join(path, item)
            data = data.get(item) if isinstance(data, dict) else None
            keys.append(item)
    return _Place(path or "config", tuple(keys), model, field, is_key)


# ---------------------------------------------------------------------------------------
# Environment overrides


@dataclass(frozen=True, slots=True)
class _Override:
    variable: str
    keys: tuple[str | int, ...]


class _OverrideError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_NULL_TEXT = frozenset({"", "~", "null", "Null", "NULL"})


def _override_value(raw: str, tp: Any) -> object:
    """Text values for text fields (a password ``123456`` stays text); YAML otherwise."""
    if _is_optional(tp) and raw.strip() in _NULL_TEXT:
        return None
    if _strip(tp) in (str, SecretStr, Path):
        return raw
    try:
        return _load_yaml(raw)
    except yaml.YAMLError:
        return raw


def _empty_for(tp: Any, where: str) -> object:
    tp = _strip(tp)
    if _is_model(tp) or _models_of_union(tp) or get_origin(tp) is dict:
        return {}
    raise _OverrideError(
        f"{where} is not in the file, so there is nothing to set inside it",
        f"write {where} in the YAML file first",
    )


def _set_override(data: dict[str, Any], segments: list[str], raw: str) -> tuple[str | int, ...]:
    tp: Any = HallAgentConfig
    node: Any = data
    where = ""
    keys: list[str | int] = []
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        tp = _strip(tp)
        members = _models_of_union(tp)
        if members:
            chosen = _pick_member(members, node)
            if chosen is None:
                tags = [t[1] for m in members if (t := _tag(m)) is not None]
                raise _OverrideError(
                    f"{where} has no valid type to tell which fields it has",
                    f"set {where} to one of {', '.join(tags)} in the file first",
                )
            tp = chosen
        key: str | int
        if _is_model(tp):
            fields = list(tp.model_fields)
            name = next((f for f in fields if f == segment.lower()), None)
            if name is None:
                close = difflib.get_close_matches(segment.lower(), fields, n=1)
                guess = f"did you mean {close[0].upper()}? " if close else ""
                raise _OverrideError(
                    f"{where or 'the config'} has no field {segment.lower()!r}",
                    f"{guess}fields there: {', '.join(fields)}",
                )
            if not isinstance(node, dict):
                raise _OverrideError(f"{where} is not a mapping in the file", "fix the file first")
            key, child_tp = name, tp.model_fields[name].annotation
            label = _join(where, name)
        elif get_origin(tp) is list:
            if not isinstance(node, list):
                raise _OverrideError(f"{where} is not a list in the file", "fix the file first")
            index = _list_index(node, segment, where)
            key, child_tp = index, get_args(tp)[0]
            label = where + _index_label(index, node[index])
        elif get_origin(tp) is dict:
            if not isinstance(node, dict):
                raise _OverrideError(f"{where} is not a mapping in the file", "fix the file first")
            key = next((k for k in node if str(k).lower() == segment.lower()), segment)
            child_tp = get_args(tp)[1]
            label = _join(where, str(key))
        else:
            raise _OverrideError(
                f"{where} is a single value, it has no {segment!r} inside",
                "end the variable name at " + where,
            )
        if last:
            node[key] = _override_value(raw, child_tp)
        else:
            if isinstance(key, str) and node.get(key) is None:
                node[key] = _empty_for(child_tp, label)
            node = node[key]
        keys.append(key)
        tp, where = child_tp, label
    return tuple(keys)


def _list_index(items: list[Any], segment: str, where: str) -> int:
    if segment.isdigit():
        index = int(segment)
        if index < len(items):
            return index
        raise _OverrideError(
            f"{where} has {len(items)} item(s), there is no index {index}",
            f"use an index from 0 to {len(items) - 1} or an item id",
        )
    ids = [item.get("id") for item in items if isinstance(item, dict)]
    for index, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("id", "")).lower() == segment.lower():
            return index
    raise _OverrideError(
        f"{where} has no item with id {segment.lower()!r}",
        f"use an index or one of the ids: {', '.join(str(i) for i in ids if i is not None)}",
    )


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[list[_Override], list[ConfigProblem]]:
    """Apply ``HALL_<SECTION>__<FIELD>`` variables to the raw data, in name order."""
    sections = list(HallAgentConfig.model_fields)
    overrides: list[_Override] = []
    problems: list[ConfigProblem] = []
    for variable in sorted(environ):
        if variable[: len(ENV_PREFIX)].upper() != ENV_PREFIX:
            continue
        rest = variable[len(ENV_PREFIX) :]
        if "__" not in rest:
            # HALL_MQTT_URL is a typo of HALL_MQTT__URL; HALL_SOMETHING_ELSE is not ours.
            section = next((s for s in sections if rest.lower().startswith(s + "_")), None)
            if section is not None:
                fixed = f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :]}"
                problems.append(
                    ConfigProblem(
                        variable,
                        "looks like a config override but has a single '_' after the section",
                        f"write {fixed}",
                    )
                )
            continue
        segments = rest.split("__")
        if not all(segments):
            problems.append(
                ConfigProblem(
                    variable,
                    "empty part in the variable name",
                    "separate the parts with exactly two underscores: HALL_MQTT__TLS__CA_FILE",
                )
            )
            continue
        try:
            keys = _set_override(data, segments, environ[variable])
        except _OverrideError as err:
            problems.append(ConfigProblem(variable, err.message, err.hint))
        else:
            overrides.append(_Override(variable, keys))
    return overrides, problems


# ---------------------------------------------------------------------------------------
# Translating pydantic errors


def _constraints(annotation: Any, metadata: Sequence[object]) -> Iterator[object]:
    """Constraint objects of a field, including those inside ``Annotated[...] | None``."""
    yield from metadata
    for arg in get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ():
        if get_origin(arg) is Annotated:
            for extra in get_args(arg)[1:]:
                yield from getattr(extra, "metadata", [extra])


def _range_text(place: _Place) -> str:
    """The allowed range of the field, e.g. ``from 30 to 60``; empty when unbounded."""
    info = place.model.model_fields.get(place.field or "") if place.model else None
    if info is None:
        return ""
    low = high = None
    for item in _constraints(info.annotation, info.metadata):
        for name in ("ge", "gt"):
            low = getattr(item, name, None) if getattr(item, name, None) is not None else low
        for name in ("le", "lt"):
            high = getattr(item, name, None) if getattr(item, name, None) is not None else high
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _unquote(value: object) -> str:
    """pydantic quotes names in its error context (``"'kind'"``); people need no quotes."""
    return str(value).replace("'", "")


def _hint(error: ErrorDetails, place: _Place) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return f"add the field {place.field!r}" if place.field else "add the field"
    if kind == "extra_forbidden":
        allowed = list(place.model.model_fields) if place.model else []
        close = difflib.get_close_matches(str(place.field), allowed, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return f"{guess}remove it or check the spelling; allowed keys are {', '.join(allowed)}"
    if kind in ("literal_error", "enum"):
        return f"use one of: {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"use one of: {_unquote(ctx.get('expected_tags'))}"
    if kind == "union_tag_not_found":
        name = _unquote(ctx.get("discriminator"))
        kinds = f": one of {', '.join(DEVICE_KINDS)}" if name == "kind" else ""
        return f"add {name}{kinds}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return _PATTERN_HINTS.get(pattern, f"it must match the pattern {pattern}")
    if kind == "string_type":
        return 'write text; quote it if YAML reads it as a number or true/false (e.g. "2024")'
    if kind == "string_too_short":
        return f"write at least {ctx.get('min_length')} character(s)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"use a value{_range_text(place)}"
    if kind.startswith(("int_", "float_")):
        number = "a whole number" if kind.startswith("int_") else "a number"
        return f"write {number}{_range_text(place)}"
    if kind.startswith("bool_"):
        return "write true or false"
    if kind == "too_short":
        return f"give at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} item(s)"
    if kind == "list_type":
        return "write a list: one '- item' per line, or [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "write a mapping: 'key: value' lines indented under it"
    if kind.startswith("time_"):
        return "write the time as HH:MM, e.g. 09:00 or 17:30"
    if kind.startswith("path_"):
        return "write a file path, e.g. /var/lib/hall-agent"
    return DOCS_HINT


def _message(error: ErrorDetails, place: _Place) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "union_tag_invalid":
        return f"unknown {_unquote(ctx.get('discriminator'))} {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return f"no {_unquote(ctx.get('discriminator'))} given"
    if kind == "string_pattern_mismatch":
        what = "key" if place.is_key else "value"
        return f"{what} {value!r} does not have the required form"
    message = error["msg"].removeprefix("Value error, ")
    secret = place.field is not None and "password" in place.field
    if kind != "invalid" and not secret and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    if place.is_key:
        message = f"key: {message}"
    return message


def _problems_from(
    err: ValidationError, data: object, overrides: Sequence[_Override]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in err.errors():
        ctx: dict[str, Any] = dict(error.get("ctx") or {})
        cause = ctx.get("error")
        if isinstance(cause, CrossCheckError):
            problems.extend(cause.problems)
            continue
        place = _locate(error["loc"], data)
        path = _join(place.path, ctx["at"]) if "at" in ctx else place.path
        message = _message(error, place)
        for override in overrides:
            common = min(len(override.keys), len(place.keys))
            if place.keys and override.keys[:common] == place.keys[:common]:
                message += f" (set by {override.variable})"
                break
        problems.append(ConfigProblem(path, message, str(ctx.get("hint") or _hint(error, place))))
    return problems


# ---------------------------------------------------------------------------------------
# Loading


def _read_text(path: Path) -> str:
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problem = ConfigProblem(
            where,
            "file not found",
            "check the path; on a Pi it is /etc/hall-agent/config.yaml "
            "(start from config/example.yaml)",
        )
    except IsADirectoryError:
        problem = ConfigProblem(where, "is a directory", "give the path of the YAML file")
    except PermissionError:
        problem = ConfigProblem(
            where,
            "cannot read the file: permission denied",
            "make it readable by the user running hall-agent (e.g. group hall-agent, mode 640)",
        )
    except OSError as err:
        problem = ConfigProblem(where, f"cannot read the file: {err.strerror}", "check the path")
    else:
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            problem = ConfigProblem(
                f"{where}:{line}",
                f"the file is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})",
                "save it as UTF-8; editors on Chinese Windows often save GBK: "
                "convert with iconv -f GB18030 -t UTF-8",
            )
    raise ConfigError([problem])


def _yaml_hint(problem: str) -> str:
    if "'\\t'" in problem or "tab" in problem:
        return "indent with spaces; YAML does not allow tabs"
    if "found the key" in problem:
        return "remove one of the two keys, or merge their contents"
    if "mapping values are not allowed" in problem:
        return "quote a value containing ': ', or check this line's indentation"
    if "expected ':'" in problem or "simple key" in problem:
        return "write 'key: value' with a space after ':'; check this line's indentation"
    return "check the indentation (spaces only) and the quoting at that place"


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(
            [ConfigProblem(where, f"YAML syntax error: {what}", _yaml_hint(err.problem or ""))]
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(
            [ConfigProblem(str(path), f"YAML error: {err}", _yaml_hint(str(err)))]
        ) from err
    if data is None:
        raise ConfigError(
            [ConfigProblem(str(path), "the file is empty", "start from config/example.yaml")]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    f"the top level is a {type(data).__name__}, not a mapping of sections",
                    "the file starts with sections: hall:, services:, windows:, devices: ...",
                )
            ]
        )
    return data


def _validate(data: dict[str, Any], overrides: Sequence[_Override]) -> HallAgentConfig:
    try:
        return HallAgentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems_from(err, data, overrides)) from err


def validate_config(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> HallAgentConfig:
    """Validate already-parsed config data (e.g. pushed by central).

    ``environ`` overrides are applied when given; ``None`` applies none (unlike
    :func:`load_config`, whose ``None`` means ``os.environ``).
    """
    copy: dict[str, Any] = deepcopy(dict(data))
    overrides: list[_Override] = []
    if environ is not None:
        overrides, problems = _apply_overrides(copy, environ)
        if problems:
            raise ConfigError(problems)
    return _validate(copy, overrides)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> HallAgentConfig:
    """Read the YAML file, apply ``HALL_*`` overrides from ``environ`` (default
    ``os.environ``) and validate. Raises :class:`ConfigError` naming every problem."""
    data = _parse_yaml(_read_text(path), path)
    overrides, problems = _apply_overrides(data, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems)
    return _validate(data, overrides)


def check_config_file(path: Path, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``hall-agent check-config FILE``: ``(0, "ok")`` or ``(2, one line per problem)``."""
    try:
        load_config(path, environ)
    except ConfigError as err:
        return 2, format_problems(err.problems)
    return 0, "ok"


# ---------------------------------------------------------------------------------------
# JSON Schema


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file (for editors and for central's config pushes)."""
    return HallAgentConfig.model_json_schema()


def schema_text() -> str:
    """The committed form of ``config/schema.json``."""
    return json.dumps(config_schema(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.config", description="Config schema and checks for hall-agent."
    )
    parser.add_argument("--write-schema", type=Path, metavar="FILE", help="write the JSON Schema")
    parser.add_argument("--check", type=Path, metavar="FILE", help="check a config file")
    args = parser.parse_args(argv)
    if args.write_schema is not None:
        args.write_schema.write_text(schema_text(), encoding="utf-8")
    if args.check is not None:
        code, text = check_config_file(args.check)
        sys.stdout.write(text + "\n")
        return code
    if args.write_schema is None:
        sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
