"""Devices: one model per kind; ``transport`` lists the transports that make sense for it.

From the ticket printer to the QR code scanner; which devices may share a bus, and which
serve the whole hall rather than one window.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from agent.config.base import LANGUAGE_PATTERN, Identifier, KeyName, Model
from agent.config.errors import _invalid
from agent.config.transports import (
    AlsaTransport,
    EvdevTransport,
    FileTransport,
    IdReaderSerialTransport,
    NetworkTransport,
    SaneTransport,
    SerialTransport,
    TestPatternTransport,
    UsbTransport,
    V4l2Transport,
    WebTransport,
)
from agent.config.walk import _is_model, _models_of_union, _strip, _tag

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
