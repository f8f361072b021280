"""Diagnostics central may ask for (docs/fleet.md): ``run_doctor``, ``get_logs`` and
``get_config``.

A hall nobody visits is looked at from central: the same findings ``hall-agent doctor``
prints on the Pi, the last log lines (already masked: ID and phone numbers never leave the
hall whole) and the applied config without its secrets. Every answer is bounded in size
(it travels in one MQTT reply) and each command is rate-limited, so a script at central
cannot keep a hall busy diagnosing itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.central import contract as c
from agent.config import HallAgentConfig
from agent.core.errors import Refused
from agent.runtime.logs import RecentLog, recent_log

log = logging.getLogger(__name__)

# One reply is one MQTT message; brokers commonly cap those at 256 KiB or 1 MiB.
MAX_RESULT_BYTES = 192 * 1024
# At most one of each diagnostic per this many seconds (a second one is refused, saying
# when to ask again).
MIN_INTERVAL_S = 10.0
REDACTED = "<redacted>"
DOCTOR_TIMEOUT_S = 60.0
# Keys whose values are secrets wherever they appear in the config.
_SECRET_KEY = re.compile(r"password|secret|private|credential", re.IGNORECASE)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class Diagnostics:
    """Answers central's diagnostic commands for one running agent."""

    def __init__(
        self,
        config: HallAgentConfig,
        config_path: Path | None,
        *,
        recent: RecentLog | None = None,
        min_interval_s: float = MIN_INTERVAL_S,
        max_bytes: int = MAX_RESULT_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.recent = recent if recent is not None else recent_log()
        self.min_interval_s = min_interval_s
        self.max_bytes = max_bytes
        self._monotonic = monotonic
        self._last: dict[str, float] = {}

    def _admit(self, name: str) -> None:
        now = self._monotonic()
        last = self._last.get(name)
        if last is not None and now - last < self.min_interval_s:
            wait = self.min_interval_s - (now - last)
            raise Refused(
                f"{name} ran {now - last:.0f} s ago; ask again in {wait:.0f} s "
                f"(at most one per {self.min_interval_s:.0f} s)"
            )
        self._last[name] = now

    async def run_doctor(self, command: c.RunDoctor) -> dict[str, Any]:
        """The findings of ``hall-agent doctor --json`` for the config the agent runs."""
        self._admit("run_doctor")
        if self.config_path is None:
            raise Refused("this agent was started without a config file: nothing to examine")
        path = self.config_path
        started = time.monotonic()
        findings = await asyncio.to_thread(_doctor_findings, path)
        result: dict[str, Any] = {
            "failures": sum(1 for f in findings if f.get("level") == "fail"),
            "warnings": sum(1 for f in findings if f.get("level") == "warn"),
            "findings": findings,
            "took_s": round(time.monotonic() - started, 3),
        }
        return self._bounded(result, "findings")

    async def get_logs(self, command: c.GetLogs) -> dict[str, Any]:
        """The last log lines at ``level`` or above, since ``since``, newest last."""
        self._admit("get_logs")
        since = command.since
        if since is not None and since.tzinfo is None:
            raise Refused("since needs a time zone, e.g. 2026-12-05T08:00:00+08:00")
        lines = self.recent.lines(
            level=_LEVELS[command.level],
            since=None if since is None else since.timestamp(),
            limit=command.lines,
        )
        result: dict[str, Any] = {
            "lines": [
                {
                    "at": dt.datetime.fromtimestamp(line.created, dt.UTC).isoformat(),
                    "level": logging.getLevelName(line.levelno).lower(),
                    "logger": line.logger,
                    "message": line.message,
                }
                for line in lines
            ],
            "kept": self.recent.capacity,
            "dropped_before": self.recent.dropped,
        }
        return self._bounded(result, "lines")

    async def get_config(self, command: c.GetConfig) -> dict[str, Any]:
        """The applied config, every secret replaced by ``<redacted>``."""
        self._admit("get_config")
        applied = self.config.model_dump(mode="json")
        result: dict[str, Any] = {"config": redact(applied)}
        if self.config_path is not None:
            result["path"] = str(self.config_path)
        return self._bounded(result, None)

    def _bounded(self, result: dict[str, Any], trim: str | None) -> dict[str, Any]:
        """``result`` cut to :attr:`max_bytes` of JSON: the oldest entries of the list
        ``trim`` go first; ``truncated`` says how many were left out."""
        size = _size(result)
        if size <= self.max_bytes:
            return result
        if trim is None:
            raise Refused(
                f"the answer is {size} bytes, more than one reply carries ({self.max_bytes})"
            )
        entries: list[Any] = result[trim]
        dropped = 0
        while entries and _size(result) > self.max_bytes:
            cut = max(1, len(entries) // 8)
            del entries[:cut]
            dropped += cut
        result["truncated"] = dropped
        return result


def redact(value: Any, key: str = "") -> Any:
    """``value`` with the values of secret keys (passwords, secrets, private keys)
    replaced, and pydantic's masked secrets (``**********``) named as such."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is None:
        return None
    if _SECRET_KEY.search(key) or value == "**********":
        return REDACTED
    return value


def _size(result: dict[str, Any]) -> int:
    return len(json.dumps(result, ensure_ascii=False).encode("utf-8"))


def _doctor_findings(path: Path) -> list[dict[str, Any]]:
    """``hall-agent doctor --json`` in its own process, as an ops person would run it:
    its checks open files and ports of their own, and its memory goes when it ends."""
    argv = [sys.executable, "-m", "agent.cli", "doctor", "--json", "--config", str(path)]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            argv, capture_output=True, text=True, timeout=DOCTOR_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise Refused(f"doctor did not finish within {DOCTOR_TIMEOUT_S:.0f} s") from err
    try:
        findings: list[dict[str, Any]] = json.loads(done.stdout)
    except json.JSONDecodeError as err:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Refused(f"doctor failed (exit {done.returncode}): {tail[0][:300]}") from err
    return findings
