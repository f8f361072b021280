"""Logging for journald and terminals: one line per fact, levels, no personal data."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import ClassVar, Literal

# Resident ID numbers (18 characters, last may be X) and mainland mobile numbers.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def mask_id_number(value: str) -> str:
    """``110101199003071234`` → ``110101********1234``: region and check digits only."""
    return _ID_NUMBER.sub(lambda m: f"{m.group(1)}{'*' * 8}{m.group(2)}", value)


def mask_name(name: str) -> str:
    """``张三丰`` → ``张**``: enough for staff to recognise a case, not to identify."""
    return name[:1] + "*" * (len(name) - 1) if name else name


class PersonalDataFilter(logging.Filter):
    """A safety net: masks ID and phone numbers in any record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _MOBILE.sub(r"\1****\2", mask_id_number(message))
        if masked != message:
            record.msg = masked
            record.args = None
        return True


class JournaldFormatter(logging.Formatter):
    """``<N>`` syslog priority prefixes, which journald reads from a service's stderr."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prefix = self.PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", " | ")
        return f"<{prefix}>{text}"


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(level: str = "INFO", fmt: Literal["auto", "text", "journald"] = "auto") -> None:
    journald = fmt == "journald" or (fmt == "auto" and under_systemd())
    handler = logging.StreamHandler(sys.stderr)
    if journald:
        handler.setFormatter(JournaldFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(PersonalDataFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
