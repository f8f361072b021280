"""Transports: how the agent reaches a device. Each knows what two devices must not share.

Serial lines, USB, the network, files, evdev input devices, pages served by the agent,
ALSA, V4L2, SANE, and the camera's test pattern stand-in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from agent.config.base import ENV_NAME_PATTERN, Model
from agent.config.errors import _invalid

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
