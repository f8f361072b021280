"""Proxy cases (代收代办): cases a window takes for handling elsewhere (docs/cases.md)."""

from __future__ import annotations

from pydantic import Field

from agent.config.base import Model


class CasesConfig(Model):
    """Proxy cases: their numbers, and when staff are warned before a promised date."""

    number_prefix: str = Field(
        default="DB",
        pattern=r"^[A-Z]{1,4}$",
        description="Case numbers are this prefix, the day (YYYYMMDD) and a 3-digit counter",
    )
    warn_working_days: int = Field(
        default=1,
        ge=0,
        le=30,
        description=(
            "case.deadline_near is raised this many working days before the promised date "
            "(0: on the promised date itself); weekends and holidays are not counted"
        ),
    )
    check_interval_s: float = Field(
        default=60,
        ge=1,
        le=3600,
        description="How often open cases are looked at for a deadline near or passed",
    )
