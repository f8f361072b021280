"""Whether the hall's wall clock can be trusted.

A Raspberry Pi has no battery-backed clock: it boots with the time it saved at shutdown
(fake-hwclock, systemd-timesyncd) or with 1970, and learns the real time only when NTP
answers — which in a mountain village may be hours or days later. Until then every event
carries ``clock_ok: false`` and the business day does not change (``agent/core/queue_state.py``).

The clock is trusted once a synchronisation source confirmed it in this boot, and stays
trusted while it runs on (a Pi's oscillator drifts seconds per day, not hours, so a hall
offline for a week keeps a good clock). A jump of the clock that no source confirms (an
operator's ``date -s``, a bad RTC) withdraws the trust until a source confirms again.

Sources, any of which is enough:

- the kernel's NTP state (``adjtimex``: not ``TIME_ERROR``, ``STA_UNSYNC`` clear), set by
  systemd-timesyncd, chrony and ntpd alike;
- systemd-timesyncd's ``/run/systemd/timesync/synchronized``, touched on each sync;
- a battery-backed RTC that set the clock at boot (``/sys/class/rtc/rtc0/hctosys``);
- systemd-timedated's ``NTPSynchronized`` (``timedatectl``), asked now and then while the
  clock is not trusted: it sees the kernel's state for chrony or ntpd where the agent's
  sandbox (``ProtectClock=``) denies it ``adjtimex``.

Trust survives a restart of the agent within the same boot through a small file in the
service's runtime directory (``/run/hall-agent``, emptied at reboot).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# A date before this release means the clock was never set (1970, or an old saved time).
EARLIEST_PLAUSIBLE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# More change than this between wall and monotonic time is a jump, not NTP slewing
# (slewing moves at most 0.5 ms per second).
JUMP_TOLERANCE_S = 10.0
# How long one look at the sources is reused (the hall asks on every write).
_RECHECK_S = 1.0
# How long an answer noted from outside (timedated) counts as current.
_NOTED_FOR_S = 120.0

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
RTC_HCTOSYS = Path("/sys/class/rtc/rtc0/hctosys")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LATCH_NAME = "clock-synchronized"

Trust = Literal["synchronized", "system"]


def plausible(now: dt.datetime) -> bool:
    return now >= EARLIEST_PLAUSIBLE


@dataclasses.dataclass(frozen=True, slots=True)
class ClockState:
    """What the hall knows about its clock, for logs, /healthz and ``doctor``."""

    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """A source's word that the clock is synchronised.

    ``current``: it says so about now (the kernel's NTP state). Otherwise ``at`` is the
    wall time of the last synchronisation it knows of, or None for a boot-time fact.
    """

    what: str
    current: bool = False
    at: float | None = None


Source = Callable[[], Evidence | None]


class _Timex(ctypes.Structure):
    """``struct timex`` (linux/timex.h) up to ``status``; the rest is room for the kernel."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    )


_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


def kernel_ntp() -> Evidence | None:
    """An NTP daemon disciplines the kernel clock now (adjtimex, read only)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()  # modes = 0: only reads, needs no privilege
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError):
        return None
    if state < 0 or state == _TIME_ERROR or timex.status & _STA_UNSYNC:
        return None  # a seccomp filter that denies adjtimex also lands here (-1)
    return Evidence("the kernel clock is synchronised by NTP", current=True)


def timesyncd(flag: Path = TIMESYNCD_FLAG) -> Source:
    """systemd-timesyncd touches its flag file on every synchronisation."""

    def look() -> Evidence | None:
        try:
            touched = flag.stat().st_mtime
        except OSError:
            return None
        return Evidence("systemd-timesyncd synchronised the clock", at=touched)

    return look


def rtc(hctosys: Path = RTC_HCTOSYS) -> Source:
    """A battery-backed RTC set the system clock at boot."""

    def look() -> Evidence | None:
        try:
            set_at_boot = hctosys.read_text(encoding="ascii").strip() == "1"
        except OSError:
            return None
        return Evidence("a battery-backed RTC set the clock at boot") if set_at_boot else None

    return look


def default_sources() -> list[Source]:
    return [kernel_ntp, timesyncd(), rtc()]


async def timedated() -> Evidence | None:
    """systemd-timedated's view (over D-Bus, through timedatectl); None if it says no or
    cannot be asked (no systemd, no D-Bus)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "timedatectl",
            "show",
            "--property=NTPSynchronized",
            "--value",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(5):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    if proc.returncode == 0 and out.strip() == b"yes":
        return Evidence("systemd-timedated reports the clock synchronised by NTP", current=True)
    return None


def runtime_directory() -> Path | None:
    """systemd's ``RuntimeDirectory`` (``/run/hall-agent``), emptied at every boot."""
    value = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value) if value else None


def read_boot_id() -> str | None:
    try:
        return BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


class SystemClock:
    """Answers "can the wall clock be trusted now?": a ``Hall``'s ``clock_ok`` check.

    ``trust="system"`` trusts any plausible date: for machines whose clock a host or a
    hypervisor keeps (no NTP state inside them), and for tests.
    """

    def __init__(
        self,
        trust: Trust = "synchronized",
        *,
        sources: Sequence[Source] | None = None,
        latch_dir: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        boot_id: Callable[[], str | None] = read_boot_id,
    ) -> None:
        self.trust = trust
        self._sources = list(default_sources() if sources is None else sources)
        self._latch = None if latch_dir is None else latch_dir / LATCH_NAME
        self._monotonic = monotonic
        self._boot_id = boot_id
        self._offset: float | None = None  # wall - monotonic at the last look
        self._latched_offset: float | None = None
        self._synced_by: str | None = None
        self._jumped_at: float | None = None  # wall time of a jump not yet confirmed
        self._looked_at: float | None = None
        self._noted: tuple[Evidence, float] | None = None
        self._state = ClockState(False, "not checked yet")
        self._saved = self._read_latch()

    def __call__(self, now: dt.datetime) -> bool:
        return self.state(now).ok

    def note(self, evidence: Evidence | None) -> None:
        """Evidence found outside the hall's writes (asked asynchronously): counts as a
        source for a while, then is asked again."""
        self._noted = None if evidence is None else (evidence, self._monotonic())
        self._looked_at = None

    @property
    def wants_evidence(self) -> bool:
        """Whether asking an external source (timedated) now could change the answer."""
        return self.trust == "synchronized" and not self._state.ok

    def state(self, now: dt.datetime) -> ClockState:
        mono = self._monotonic()
        wall = now.timestamp()
        offset = wall - mono
        if self._saved is not None:
            self._restore(offset)
        jumped = self._offset is not None and abs(offset - self._offset) > JUMP_TOLERANCE_S
        if jumped and self._offset is not None:
            self._on_jump(wall, offset - self._offset)
        self._offset = offset
        fresh = self._looked_at is not None and mono - self._looked_at < _RECHECK_S
        if fresh and not jumped:
            return self._state
        self._looked_at = mono
        self._state = self._evaluate(now, offset)
        return self._state

    def _evaluate(self, now: dt.datetime, offset: float) -> ClockState:
        when = now.astimezone(dt.UTC).isoformat(timespec="seconds")
        if not plausible(now):
            return ClockState(
                False, f"the clock says {when}, before this agent was built: it was never set"
            )
        if self.trust == "system":
            return ClockState(True, "clock.trust is 'system': the system clock is trusted")
        evidence = self._evidence()
        if evidence is not None:
            if self._synced_by is None:
                log.info("the clock is synchronised: %s", evidence.what)
            elif self._jumped_at is not None:
                log.info("the clock's new time is confirmed: %s", evidence.what)
            self._synced_by = evidence.what
            self._jumped_at = None
            self._write_latch(offset)
            return ClockState(True, evidence.what)
        if self._synced_by is not None and self._jumped_at is None:
            return ClockState(True, f"synchronised earlier in this boot ({self._synced_by})")
        if self._jumped_at is not None:
            return ClockState(
                False,
                "the clock jumped and no time source has confirmed it since; "
                "check `timedatectl timesync-status` and the NTP server",
            )
        return ClockState(
            False,
            f"the clock ({when}) has not been synchronised since boot: no NTP answer yet "
            "and no battery-backed RTC",
        )

    def _evidence(self) -> Evidence | None:
        noted = self._noted
        if noted is not None and self._monotonic() - noted[1] > _NOTED_FOR_S:
            noted = self._noted = None
        candidates = [source() for source in self._sources]
        if noted is not None:
            candidates.append(noted[0])
        for found in candidates:
            if found is None:
                continue
            # After a jump only a synchronisation after it counts.
            stale = found.at is None or found.at < (self._jumped_at or 0) - 1
            if self._jumped_at is not None and not found.current and stale:
                continue
            return found
        return None

    def _on_jump(self, wall: float, by: float) -> None:
        if self._synced_by is not None and self._jumped_at is None:
            log.warning(
                "the clock jumped %s by %.0f s without a time source; events carry "
                "clock_ok=false and the business day holds until one confirms the new time",
                "forward" if by > 0 else "back",
                abs(by),
            )
        self._jumped_at = wall
        self._noted = None
        self._drop_latch()

    # -- the latch in /run: trust survives a restart of the agent within one boot --------

    def _read_latch(self) -> tuple[float, str] | None:
        if self._latch is None:
            return None
        try:
            saved = json.loads(self._latch.read_text(encoding="utf-8"))
            offset, by, boot = float(saved["offset"]), str(saved["by"]), saved.get("boot_id")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        current_boot = self._boot_id()
        if boot is not None and current_boot is not None and boot != current_boot:
            return None
        return offset, by

    def _restore(self, offset: float) -> None:
        assert self._saved is not None
        saved_offset, by = self._saved
        self._saved = None
        if abs(offset - saved_offset) > JUMP_TOLERANCE_S:
            return  # the clock was set while the agent was down: not confirmed
        self._synced_by = by
        self._latched_offset = saved_offset

    def _write_latch(self, offset: float) -> None:
        if self._latch is None or self._synced_by is None:
            return
        if self._latched_offset is not None and abs(offset - self._latched_offset) < 1.0:
            return
        body = json.dumps({"offset": offset, "by": self._synced_by, "boot_id": self._boot_id()})
        tmp = self._latch.with_name(self._latch.name + ".tmp")
        try:
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(self._latch)
        except OSError as err:
            log.debug("could not remember the clock state in %s: %s", self._latch, err)
            return
        self._latched_offset = offset

    def _drop_latch(self) -> None:
        if self._latch is None:
            return
        self._latched_offset = None
        try:
            self._latch.unlink(missing_ok=True)
        except OSError as err:
            log.debug("could not forget the clock state in %s: %s", self._latch, err)
