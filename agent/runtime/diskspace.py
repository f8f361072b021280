"""Room on the state disk: the hall keeps running when the SD card fills up.

SQLite answers "database or disk is full" and rolls the transaction back, so a full disk
never corrupts the store; the operation is refused (503) and nothing is lost that was
answered. This module keeps that from happening for long:

- While free space is below ``storage.reserve_bytes`` the database stops growing: each
  retention pass evicts outbox events by policy (acknowledged first, then device chatter,
  operational, business last) until the database holds enough free pages for new rows,
  so the outbox becomes a ring buffer and tickets keep being issued.
- A reserve file (a quarter of the reserve, at most 8 MiB) is held in the state folder
  and released once a write found the disk full: the room SQLite needs for its
  write-ahead log and for the eviction itself. It is released in the writer's turn, just
  before the eviction, so that no other write can take that room first (a hall that kept
  issuing on it would be left with a full disk and no room to evict in). It is taken
  again once the disk has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import StorageConfig
from agent.runtime.hall import Hall
from agent.runtime.store import Eviction, Store, StoreFull
from agent.runtime.systemd import Notifier

log = logging.getLogger(__name__)

RESERVE_FILE = ".space-reserve"
MAX_RESERVE_FILE_BYTES = 8 * 1024 * 1024
# How often free space is looked at between retention passes (statvfs is cheap).
CHECK_EVERY_S = 30.0
# At start on a full disk: how often opening the store is tried again.
OPEN_RETRY_S = 15.0
# When writes fail and only business events are left: how much of them goes per pass.
LAST_RESORT_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class RoomNeeded:
    free_bytes: int  # free pages wanted inside the database
    business: bool  # writes fail: business events may go too, if nothing else is left
    # Writes found the disk full: give back the reserve file first, in the writer's turn
    # (the retention pass's own write), so that the eviction gets its room.
    release: Callable[[], int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DiskState:
    free_bytes: int
    total_bytes: int
    reserve_bytes: int
    reserve_file_bytes: int  # held in the reserve file now (0: released or never taken)

    @property
    def low(self) -> bool:
        return self.free_bytes < self.reserve_bytes


Usage = Callable[[Path], tuple[int, int]]  # (free, total) bytes


def disk_usage(path: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


class SpaceGuard:
    """Watches the state disk, holds the reserve file, and sets the outbox's limit."""

    def __init__(
        self, storage: StorageConfig, *, usage: Usage = disk_usage, min_gap_s: float = 2.0
    ) -> None:
        self.storage = storage
        self.min_gap_s = min_gap_s
        self.path = storage.path
        self._usage = usage
        self.reserve_file = storage.path / RESERVE_FILE
        self.reserve_file_size = min(MAX_RESERVE_FILE_BYTES, storage.reserve_bytes // 4)
        self.released_total = 0
        self.last: DiskState | None = None
        self._low_reported = False

    def reserve_for(self, total: int) -> int:
        """The reserve on a disk of ``total`` bytes: ``storage.reserve_bytes``, but never
        more than half the disk (a reserve larger than a small disk would keep it "low"
        forever and trim the outbox for nothing)."""
        configured = self.storage.reserve_bytes
        return configured if total <= 0 else min(configured, total // 2)

    def look(self) -> DiskState:
        try:
            free, total = self._usage(self.path)
        except OSError as err:
            log.warning("cannot read the free space of %s: %s", self.path, err)
            free, total = 0, 0
        try:
            held = self.reserve_file.stat().st_size
        except OSError:
            held = 0
        state = DiskState(free, total, self.reserve_for(total), held)
        self.last = state
        self._report(state)
        return state

    def _report(self, state: DiskState) -> None:
        if state.low and not self._low_reported:
            log.warning(
                "the state disk is low on space: %d MiB free of %d MiB, below the reserve of "
                "%d MiB; the outbox stops growing and evicts by policy. Free space on %s",
                state.free_bytes // 2**20,
                state.total_bytes // 2**20,
                state.reserve_bytes // 2**20,
                self.path,
            )
            self._low_reported = True
        elif not state.low and self._low_reported:
            log.info("the state disk has room again (%d MiB free)", state.free_bytes // 2**20)
            self._low_reported = False

    # -- the reserve file ---------------------------------------------------------------

    def hold_reserve(self, state: DiskState) -> bool:
        """Take the reserve file if it is missing and the disk has room for it."""
        if state.reserve_file_bytes >= self.reserve_file_size:
            return False
        if state.free_bytes < state.reserve_bytes + self.reserve_file_size:
            return False
        try:
            fd = os.open(self.reserve_file, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_file_size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            log.debug("could not take the space reserve %s: %s", self.reserve_file, err)
            with contextlib.suppress(OSError):
                self.reserve_file.unlink()
            return False
        log.info(
            "holding %d MiB of disk in %s, released if the disk fills up",
            self.reserve_file_size // 2**20,
            self.reserve_file,
        )
        return True

    def release_reserve(self) -> int:
        """Give the reserve back to the file system; returns how many bytes that freed."""
        try:
            size = self.reserve_file.stat().st_size
            self.reserve_file.unlink()
        except FileNotFoundError:
            return 0
        except OSError as err:
            log.error("could not release the space reserve %s: %s", self.reserve_file, err)
            return 0
        self.released_total += 1
        log.warning(
            "the state disk is full: released the %d MiB space reserve so the hall can keep "
            "saving; evicting outbox events by policy. Free space on %s",
            size // 2**20,
            self.path,
        )
        return size

    # -- room inside the database ---------------------------------------------------------

    def room_needed(self, state: DiskState, *, disk_full: bool) -> RoomNeeded | None:
        """What the next retention pass must free inside the database, if anything.

        Below the reserve, or once SQLite found the disk full, the database must not grow:
        eviction keeps a reserve file's worth of free pages in it for new rows. (Freed
        pages stay in the file, so the disk's own free space does not rise: not the aim.)
        """
        if not (state.low or disk_full):
            return None
        release = self.release_reserve if disk_full else None
        return RoomNeeded(self.reserve_file_size, business=disk_full, release=release)

    async def wait(self, hall: Hall, prune_interval_s: float) -> None:
        """Until the next retention pass is due.

        That is after ``prune_interval_s``; sooner when a write failed or the disk is below
        its reserve. (The pass after a full disk releases the reserve: ``room_needed``.)
        """
        due = time.monotonic() + prune_interval_s
        failed = hall.writes.failed
        while True:
            left = due - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(min(left, CHECK_EVERY_S)):
                    await failed.wait()
            except TimeoutError:
                state = self.look()
                if state.low:
                    return
                self.hold_reserve(state)
                continue
            failed.clear()
            # A pass that fails again wakes this at once: never spin.
            await asyncio.sleep(self.min_gap_s)
            return

    async def open_store(
        self, notifier: Notifier | None = None, *, retry_s: float = OPEN_RETRY_S
    ) -> Store:
        """Open the store; on a full disk release the reserve, and wait for room (telling
        systemd, which would otherwise time the start out) rather than exit."""
        notifier = notifier or Notifier()
        waiting = False
        while True:
            try:
                store = await asyncio.to_thread(Store.open, self.path)
            except StoreFull as err:
                if self.release_reserve():
                    continue
                if not waiting:
                    log.error(
                        "cannot start: %s; free space on %s (docs/operations.md, 'disk "
                        "full'); trying again every %.0f s",
                        err,
                        self.path,
                        retry_s,
                    )
                waiting = True
                notifier.status(f"waiting for free space on {self.path}")
                notifier.extend_start(retry_s * 2)
                await asyncio.sleep(retry_s)
                continue
            if waiting:
                log.info("the state disk has room again; starting")
            return store


def make_room(store: Store, room: RoomNeeded, now: dt.datetime, clock_ok: bool) -> list[Eviction]:
    """Free pages inside the database as ``room`` asks; on the store's thread."""
    missing = room.free_bytes - store.space().free_bytes
    if missing <= 0:
        return []
    evicted = store.make_room(missing, now, clock_ok=clock_ok)
    if evicted is None and room.business:
        # Writes fail and nothing but business events is left: the oldest go, a little
        # at a time (DESIGN §5: business events last, every eviction reported).
        evicted = store.make_room(LAST_RESORT_BYTES, now, clock_ok=clock_ok, business=True)
    return [] if evicted is None else [evicted]
