"""Config pushed by central on the retained ``config`` topic.

Central manages the hall's services, windows, queue rules, business calendar (holidays,
make-up days, hours, special dates), notices, staff and the rota (AB岗 and 轮班, checked
against the windows and the staff); the rest of
the config (hall identity, devices, broker, storage, web) stays in the local file. A push
is validated as a whole config (the file's sections merged with central's), checked
against the live queue (no service with waiting tickets may vanish), then applied
atomically: the new sections, notices and roster, and a ``config.applied`` event, in one
transaction, and only then in memory. A push that fails any check changes nothing and is
answered by a ``config.rejected`` event with the reasons. The applied push is kept in the
store and applied again at start, so it survives restarts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from agent.central.contract import ConfigPush
from agent.config import (
    HALL_STAFFING,
    ConfigError,
    HallAgentConfig,
    validate_config,
    with_staffing,
)
from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.events import Event
from agent.runtime.hall import Hall
from agent.runtime.store import Store, Written

log = logging.getLogger(__name__)

# Config sections central may replace; ``calendar`` is the business calendar (holidays and
# make-up days per year, the hall's hours, special dates: agent/config/calendar.py).
QUEUE_SECTIONS = ("services", "windows", "queue", "calendar")
# Merged into the config and checked with it: the roster and the rota (AB岗, 轮班) name
# windows and staff the config must know.
CONFIG_SECTIONS = (*QUEUE_SECTIONS, "staff", "rota")
SETTING_SECTIONS = ("notices", "staff")
CENTRAL_SECTIONS = tuple(dict.fromkeys(CONFIG_SECTIONS + SETTING_SECTIONS))


def merge(base: HallAgentConfig, sections: dict[str, Any]) -> HallAgentConfig:
    """The file config with central's sections in place of the file's."""
    data = base.model_dump(mode="json")
    for key in CONFIG_SECTIONS:
        if key in sections:
            data[key] = sections[key]
    return validate_config(data)


class ConfigDesk:
    """Validates and applies central's config pushes; remembers the applied version."""

    def __init__(
        self, hall: Hall, on_config: Callable[[HallAgentConfig], None] | None = None
    ) -> None:
        self.hall = hall
        self.base = hall.config
        self.applied_version: str | None = None
        self._rejected_version: str | None = None
        self._on_config = on_config

    async def load_applied(self) -> None:
        """Apply the push saved by an earlier run (before the link connects)."""
        saved = await self.hall.store_read(lambda s: s.setting("central_config"))
        if not saved:
            return
        try:
            config = merge(self.base, saved["sections"])
        except (ConfigError, ValidationError) as err:
            log.warning(
                "the config central pushed earlier (version %s) no longer fits this hall's "
                "config file (%s); running on the file until central pushes again",
                saved.get("version"),
                _reasons(err)[0],
            )
            return
        await self.hall.reconfigure(config)
        self.applied_version = str(saved["version"])
        if self._on_config is not None:
            self._on_config(config)
        log.info("running with central's config version %s", self.applied_version)

    async def on_push(self, payload: bytes) -> bool:
        """Handle one message on ``config``; returns whether a new version was applied."""
        if not payload:
            return False  # central cleared the retained config: keep what runs
        try:
            push = ConfigPush.model_validate_json(payload)
        except ValidationError as err:
            await self._reject(None, _reasons(err))
            return False
        if push.version in (self.applied_version, self._rejected_version):
            return False
        unknown = sorted(set(push.config) - set(CENTRAL_SECTIONS))
        if unknown:
            allowed = ", ".join(CENTRAL_SECTIONS)
            await self._reject(
                push.version,
                [
                    f"config.{k}: central may not set this section; it may set {allowed}"
                    for k in unknown
                ],
            )
            return False
        # The staff board the hall edited (agent/features/staffing.py) stays over a push
        # without staff or rota; a push with either replaces it.
        replaces_board = "staff" in push.config or "rota" in push.config
        edited = (
            None
            if replaces_board
            else await self.hall.store_read(lambda s: s.setting(HALL_STAFFING))
        )
        try:
            config = merge(self.base, push.config)
        except (ConfigError, ValidationError) as err:
            await self._reject(push.version, _reasons(err))
            return False
        try:
            config = with_staffing(config, edited)
        except (ConfigError, ValidationError):
            log.warning(
                "the staff board edited in the hall does not fit central's config version %s; "
                "showing central's roster and rota",
                push.version,
            )
            replaces_board = True
        settings: dict[str, Any] = {
            "central_config": {"version": push.version, "sections": push.config},
            "config_version": push.version,
        }
        if replaces_board:
            settings[HALL_STAFFING] = None
        for key in SETTING_SECTIONS:
            if key in push.config:
                settings[key] = push.config[key]
        event = Event(
            ev.ConfigApplied(version=push.version, sections=sorted(push.config)),
            dt.datetime.now(dt.UTC),
        )
        try:
            await self.hall.reconfigure(config, settings=settings, event=event)
        except Refused as err:
            await self._reject(push.version, err.message.split("; "))
            return False
        self.applied_version = push.version
        log.info("applied central's config version %s", push.version)
        if self._on_config is not None:
            self._on_config(config)
        return True

    async def _reject(self, version: str | None, reasons: list[str]) -> None:
        log.warning(
            "rejected central's config %s: %s; the running config stays",
            version or "(unreadable)",
            "; ".join(reasons),
        )
        self._rejected_version = version
        rejected = ev.ConfigRejected(version=version, problems=reasons)

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            return Written(store.append([Event(rejected, now)], clock_ok=clock_ok), None)

        await self.hall.write(write)


def _reasons(err: ConfigError | ValidationError) -> list[str]:
    if isinstance(err, ConfigError):
        return [f"{p.path}: {p.message} (fix: {p.hint})" for p in err.problems]
    return [f"{'.'.join(str(x) for x in e['loc']) or 'payload'}: {e['msg']}" for e in err.errors()]
