"""The agent's own running: the state disk, the web server and its pages, logging and
the clock it trusts.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import Model
from agent.config.errors import _invalid

# File descriptors the agent keeps for itself besides the local API's connections: the
# database, devices, the central link, subprocesses, logs (docs/operations.md, "Limits").
FD_RESERVE = 512


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
            "(acknowledged first, device chatter before business events); never more than "
            "half the disk; a quarter of it, at most 8 MiB, is held in a reserve file "
            "released when the disk fills up"
        ),
    )


class WebConfig(Model):
    """The local pages and API, and the limits that keep them up under a flood of
    connections or requests (docs/operations.md, "Limits of the local API")."""

    host: str = "127.0.0.1"
    port: int = Field(default=8737, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description=(
            "How phones on the hall's Wi-Fi reach this agent, e.g. http://192.168.1.20:8737; "
            "the ticket's QR opens {public_url}/t/{token}. null: no QR unless ticket.qr_url"
        ),
    )
    max_connections: int = Field(
        default=1024,
        ge=16,
        le=65536,
        description=(
            "Open connections the local API keeps at most; above it the oldest idle one is "
            f"closed. Keep it at least {FD_RESERVE} below the open-file limit (LimitNOFILE)"
        ),
    )
    header_timeout_s: float = Field(
        default=5.0,
        ge=0.5,
        le=120,
        description="A connection that has not sent a whole request head within this is closed",
    )
    body_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="A request whose body has not fully arrived within this is closed",
    )
    keepalive_timeout_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="An idle kept-alive connection is closed after this",
    )
    max_header_bytes: int = Field(
        default=16384,
        ge=1024,
        le=1048576,
        description="Largest request head (request line and headers) accepted",
    )
    rate_limit_per_s: float = Field(
        default=5.0,
        gt=0,
        le=10000,
        description="State-changing requests (POST, PUT, PATCH, DELETE) per second per client",
    )
    rate_limit_burst: int = Field(
        default=30,
        ge=1,
        le=100000,
        description="State-changing requests a client may send at once before the rate applies",
    )
    rate_limit_exempt: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description=(
            "Client addresses or networks without a rate limit (the Pi itself: its CLI and "
            "kiosk browser)"
        ),
    )

    @field_validator("rate_limit_exempt")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as err:
                raise _invalid(
                    f"{item!r} is not an IP address or network",
                    "write an address (192.168.1.20) or a network (192.168.1.0/24, ::1/128)",
                ) from err
        return value

    @model_validator(mode="after")
    def _body_after_head(self) -> WebConfig:
        if self.body_timeout_s < self.header_timeout_s:
            raise _invalid(
                f"body_timeout_s ({self.body_timeout_s:g}) is shorter than header_timeout_s "
                f"({self.header_timeout_s:g})",
                "give the body at least as long as the head",
            )
        return self

    def exempt_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.rate_limit_exempt]


class ScreenContentConfig(Model):
    """What the hall edits itself for the big screen: notices, community news and job
    information with images (docs/screens.md, "The hall's own content")."""

    rotation_s: float = Field(
        default=12.0,
        ge=3,
        le=300,
        description="The big screen shows each news or job item (社区动态, 招聘信息) this long",
    )
    image_max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=64 * 1024,
        le=32 * 1024 * 1024,
        description="The largest image file a manager may upload",
    )
    image_max_side: int = Field(
        default=4096,
        ge=256,
        le=10000,
        description="The widest or tallest image, in pixels, a manager may upload",
    )
    images_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "All stored content images together (after re-encoding for the screen); an "
            "upload past it is refused and names the images to delete"
        ),
    )


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
    guide_rotation_s: float | None = Field(
        default=15.0,
        ge=5,
        le=300,
        description=(
            "The big screen shows the service guide (办事指南: materials, time limit) of each "
            "service people wait for, one at a time for this long; null: not shown"
        ),
    )
    font: Path = Field(
        default=Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
        description="CJK font served to the pages (Debian package fonts-wqy-microhei)",
    )
    content: ScreenContentConfig = Field(
        default_factory=ScreenContentConfig,
        description="Notices, news and jobs the hall edits on /pages/manager/content",
    )


class LoggingConfig(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "text", "journald"] = "auto"
    repeat_window_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description=(
            "A warning or error repeated within this is written once, then counted: one "
            "'repeated N times' line per window"
        ),
    )
    max_lines_per_s: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Log lines written per second at most; the rest are counted as dropped",
    )
    max_bytes_per_hour: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Log bytes written per hour at most (an eighth of it may come at once)",
    )


class ClockConfig(Model):
    trust: Literal["synchronized", "system"] = Field(
        default="synchronized",
        description=(
            "synchronized: the clock is trusted once NTP (timesyncd, chrony, ntpd) or a "
            "battery-backed RTC set it in this boot; system: any plausible system time is "
            "trusted (a VM or container whose host keeps the time)"
        ),
    )


KEY_PREFIX = "ed25519:"


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of ``ed25519:BASE64``; ValueError saying what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a trusted key starts with {KEY_PREFIX!r} (hallctl release keygen)")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except binascii.Error as err:
        raise ValueError("a trusted key's base64 is damaged; copy it again") from err
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


class UpdateConfig(Model):
    """Signed updates from central (docs/fleet.md)."""

    trusted_keys: list[str] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Public keys (ed25519:BASE64, from hallctl release keygen) whose signed "
            "bundles this hall installs; empty: updates are refused"
        ),
    )
    releases: Path | None = Field(
        default=None,
        description="Where versions are installed and switched; default <storage.path>/releases",
    )
    base: Path = Field(
        default=Path("/opt/hall-agent/venv/bin/hall-agent"),
        description="The base install's hall-agent command (what runs without an update)",
    )
    healthy_within_s: float = Field(
        default=300, ge=10, le=3600, description="A new version must get healthy within this"
    )
    max_starts: int = Field(
        default=3, ge=1, le=10, description="Starts of a new version before it is rolled back"
    )
    download_timeout_s: float = Field(default=60, gt=0, le=600)

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                parse_public_key(key)
            except ValueError as err:
                raise _invalid(str(err), "paste the line hallctl release keygen printed") from err
        return keys
