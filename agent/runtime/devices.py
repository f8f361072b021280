"""The hall's device board: the current health of every configured device.

Drivers report here; the central link publishes each device's state retained on
``device/{id}`` (again on every connect), the metrics carry a summary, and every change
is an event of the lowest retention class (device chatter).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Literal

from agent.config import HallAgentConfig

log = logging.getLogger(__name__)

DeviceStatus = Literal["ok", "degraded", "offline", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceHealth:
    device_id: str
    kind: str
    status: DeviceStatus
    detail: str
    since: dt.datetime

    def payload(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "status": self.status,
            "detail": self.detail,
            "since": self.since.isoformat(timespec="seconds"),
        }


class DeviceBoard:
    """Health of every configured device; watchers are told of each change."""

    def __init__(
        self, config: HallAgentConfig, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        now = self._clock()
        self._health: dict[str, DeviceHealth] = {
            d.id: DeviceHealth(d.id, d.kind, "offline", "no driver started", now)
            for d in config.devices
        }
        self._watchers: list[asyncio.Queue[DeviceHealth]] = []

    def all(self) -> list[DeviceHealth]:
        return list(self._health.values())

    def get(self, device_id: str) -> DeviceHealth:
        return self._health[device_id]

    def report(self, device_id: str, status: DeviceStatus, detail: str = "") -> bool:
        """A driver reports its device's health; returns whether anything changed."""
        old = self._health[device_id]
        if old.status == status and old.detail == detail:
            return False
        new = DeviceHealth(device_id, old.kind, status, detail, self._clock())
        self._health[device_id] = new
        if status == "ok":
            log.info("device %s (%s) is ok again", device_id, old.kind)
        elif old.status != status:
            log.warning("device %s (%s) is %s: %s", device_id, old.kind, status, detail)
        for watcher in self._watchers:
            watcher.put_nowait(new)
        return True

    def watch(self) -> asyncio.Queue[DeviceHealth]:
        queue: asyncio.Queue[DeviceHealth] = asyncio.Queue()
        self._watchers.append(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[DeviceHealth]) -> None:
        self._watchers.remove(queue)
