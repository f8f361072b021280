"""The error answers of the local API: one body, and the statuses every route declares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str
    message: str = Field(description="what is wrong and how to fix it, for staff and tools")
    citizen_message: str | None = Field(
        default=None,
        description=(
            "for a refusal a citizen can meet (taking a ticket): what a kiosk shows, in plain "
            "Chinese, without device addresses or technical causes"
        ),
    )


# Declared on every route, so the OpenAPI lists what a client may be answered.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no credential, or one that is not valid"},
    403: {"model": ErrorBody, "description": "the credential's role may not do this"},
    404: {"model": ErrorBody, "description": "unknown window, service or ticket"},
    409: {"model": ErrorBody, "description": "refused by the hall's rules"},
    422: {"model": ErrorBody, "description": "malformed request"},
    429: {"model": ErrorBody, "description": "locked out after failed logins, or too many changes"},
    503: {"model": ErrorBody, "description": "store unavailable or agent shutting down"},
}
