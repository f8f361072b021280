"""Identity and documents: how personal data from ID cards is kept and what of it leaves
the hall; the spool and upload of captured documents. (Where the personal data key lives
by default is :func:`agent.config.root.personal_data_key`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.config.base import Model

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
