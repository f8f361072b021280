"""Who may use the hall's local API: people's sessions and the login lockout
(docs/security.md). Devices' tokens and the ops token need no settings."""

from __future__ import annotations

from pydantic import Field

from agent.config.base import Model


class AccessConfig(Model):
    session_hours: float = Field(
        default=12.0,
        gt=0,
        le=168,
        description="How long a person's login (staff, guide, manager) lasts, in hours",
    )
    lockout_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failed logins in a row after which the user is locked out for a while",
    )
    lockout_minutes: float = Field(
        default=5.0,
        gt=0,
        le=1440,
        description="How long a user stays locked out after too many failed logins",
    )
