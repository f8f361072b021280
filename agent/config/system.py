"""The agent's own running: the state disk, the web server and its pages, logging and
the clock it trusts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.config.base import Model


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
