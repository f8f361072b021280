"""Updates from central (docs/fleet.md): download, verify, install beside, switch,
restart; report the outcome once the new version runs (or the old one again).

The work is split between this module (while an agent runs) and the launcher
(:mod:`agent.runtime.launcher`, at every start): this side never touches the running
version until the bundle is verified and installed, and then changes one symlink; the
launcher rolls back a version that does not get healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import agent
from agent.central import contract as c
from agent.config.system import UpdateConfig
from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.events import Event
from agent.errors import HallAgentError
from agent.runtime.hall import Hall
from agent.runtime.launcher import CURRENT, Layout, link_target, point, read_state, write_state
from agent.runtime.release import BundleRefused, Manifest, newer, parse_version, verify_bundle
from agent.runtime.store import Store, Written
from agent.runtime.tasks import BackgroundTasks

log = logging.getLogger(__name__)

# The exit status that asks the supervisor (systemd, the test's) to start the agent again:
# EX_TEMPFAIL; the unit lists it in SuccessExitStatus and RestartForceExitStatus.
RESTART_EXIT = 75
_CHUNK = 256 * 1024
_PIP_TIMEOUT_S = 900.0


class UpdateFailed(HallAgentError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


@dataclasses.dataclass
class _Restart:
    requested: bool = False


class Updates:
    """Central's ``update_agent``, and the outcome of the last update after a start."""

    def __init__(
        self,
        hall: Hall,
        config: UpdateConfig,
        storage: Path,
        tasks: BackgroundTasks,
        *,
        version: str = agent.__version__,
        restart: Callable[[], None] | None = None,
    ) -> None:
        self.hall = hall
        self.config = config
        self.version = version
        self.layout = Layout(config.releases or storage / "releases", config.base)
        self.downloads = self.layout.releases / "downloads"
        self.tasks = tasks
        self._restart = restart or _terminate_self
        self.restart = _Restart()
        self._busy: str | None = None

    # -- the command --------------------------------------------------------------------

    async def command(self, command: c.UpdateAgent) -> dict[str, Any]:
        """Accept the update and run it in the background; the events tell how it goes."""
        if not self.config.trusted_keys:
            raise Refused("no trusted release keys are configured (update.trusted_keys)")
        try:
            parse_version(command.version)
        except BundleRefused as err:
            raise Refused(str(err)) from err
        if not newer(command.version, self.version):
            raise Refused(f"version {command.version} is not newer than the running {self.version}")
        if self._busy is not None:
            raise Refused(f"the update to {self._busy} is still in progress")
        self._busy = command.version
        self.tasks.create_task(self._update(command), name=f"update-{command.version}")
        return {"accepted": command.version, "running": self.version}

    async def _update(self, command: c.UpdateAgent) -> None:
        started = time.monotonic()
        try:
            await self._emit(
                ev.UpdateDownloading(
                    version=command.version, running=self.version, size=command.size
                )
            )
            bundle = await self._fetch(command)
            fetched = time.monotonic()
            manifest, key = await asyncio.to_thread(self._verify, bundle, command.version)
            verified = time.monotonic()
            await asyncio.to_thread(self._install, bundle, manifest)
            installed = time.monotonic()
            await self._emit(
                ev.UpdateInstalled(
                    version=manifest.version,
                    running=self.version,
                    key=key,
                    took_s=round(installed - started, 1),
                    download_s=round(fetched - started, 2),
                    verify_s=round(verified - fetched, 2),
                    install_s=round(installed - verified, 2),
                )
            )
            await asyncio.to_thread(self._switch, manifest.version)
        except UpdateFailed as err:
            log.warning("update to %s failed (%s): %s", command.version, err.stage, err.message)
            await self._emit(
                ev.UpdateFailed(version=command.version, stage=err.stage, error=err.message)
            )
            return
        finally:
            self._busy = None
        log.warning("update to %s installed and switched; restarting", command.version)
        self.restart.requested = True
        self._restart()

    # -- download -----------------------------------------------------------------------

    async def _fetch(self, command: c.UpdateAgent) -> Path:
        """The bundle unpacked in ``downloads/<version>``; resumes a partial download."""
        import httpx

        self.downloads.mkdir(parents=True, exist_ok=True)
        part = self.downloads / f"{command.version}.tar.part"
        have = part.stat().st_size if part.exists() else 0
        if have > command.size:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with (
                httpx.AsyncClient(timeout=self.config.download_timeout_s) as client,
                client.stream("GET", command.url, headers=headers) as response,
            ):
                if response.status_code not in (200, 206):
                    raise UpdateFailed("download", f"{command.url} answered {response.status_code}")
                mode = "ab" if response.status_code == 206 else "wb"
                with part.open(mode) as f:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        f.write(chunk)
                        if f.tell() > command.size:
                            raise UpdateFailed("download", "the bundle is larger than announced")
        except httpx.HTTPError as err:
            raise UpdateFailed("download", f"{command.url}: {err}") from err
        return await asyncio.to_thread(self._unpack, part, command)

    def _unpack(self, part: Path, command: c.UpdateAgent) -> Path:
        size = part.stat().st_size
        if size != command.size:
            raise UpdateFailed("download", f"got {size} bytes of {command.size}; retry")
        digest = hashlib.sha256()
        with part.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != command.sha256:
            part.unlink()
            raise UpdateFailed("download", "the bundle's SHA-256 differs from the command's")
        bundle = self.downloads / command.version
        shutil.rmtree(bundle, ignore_errors=True)
        bundle.mkdir()
        try:
            with tarfile.open(part) as tar:
                tar.extractall(bundle, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise UpdateFailed("download", f"the bundle is not a readable tar file: {err}") from err
        part.unlink()
        return bundle

    # -- verify, install, switch (threads) ----------------------------------------------

    def _verify(self, bundle: Path, version: str) -> tuple[Manifest, str]:
        try:
            manifest = verify_bundle(bundle, self.config.trusted_keys, self.version)
        except BundleRefused as err:
            shutil.rmtree(bundle, ignore_errors=True)
            raise UpdateFailed("verify", str(err)) from err
        if manifest.version != version:
            raise UpdateFailed(
                "verify", f"the bundle holds {manifest.version}, the command said {version}"
            )
        from agent.runtime.release import MANIFEST, SIGNATURE, check_signature

        key = check_signature(
            (bundle / MANIFEST).read_bytes(),
            (bundle / SIGNATURE).read_bytes(),
            self.config.trusted_keys,
        )
        return manifest, key

    def _install(self, bundle: Path, manifest: Manifest) -> None:
        """A new virtual environment for the version, from the bundle's wheels only. It
        is not used until the switch: a half-done install is removed and made again."""
        target = self.layout.version_dir(manifest.version)
        if target.resolve() == _running_prefix():
            raise UpdateFailed("install", f"{manifest.version} is the running version")
        shutil.rmtree(target, ignore_errors=True)
        _run("install", [_base_python(), "-m", "venv", str(target)])
        _run(
            "install",
            [
                str(target / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-index",
                "--find-links",
                str(bundle / "wheels"),
                f"hall-agent=={manifest.version}",
            ],
        )
        shutil.rmtree(bundle, ignore_errors=True)

    def _switch(self, version: str) -> None:
        layout = self.layout
        previous = link_target(layout.current)
        write_state(
            layout,
            {
                "pending": {
                    "version": version,
                    "previous": self.version,
                    "previous_target": previous,
                    "switched_at": time.time(),
                    "deadline": time.time() + self.config.healthy_within_s,
                    "starts": 0,
                    "max_starts": self.config.max_starts,
                    "db": str(self.hall.store.path),
                }
            },
        )
        if previous is not None:
            point(layout.previous, previous)
        point(layout.current, version)
        log.info("switched %s to %s (was %s)", CURRENT, version, previous or "the base install")

    # -- after a start ------------------------------------------------------------------

    async def after_start(self, healthy: Callable[[], bool]) -> None:
        """Report the last update's outcome; confirm this version once healthy."""
        state = await asyncio.to_thread(read_state, self.layout)
        rolled = state.get("rolled_back")
        if rolled and not rolled.get("reported"):
            await self._emit(
                ev.UpdateRolledBack(
                    version=str(rolled.get("version")),
                    to=rolled.get("to"),
                    cause=str(rolled.get("cause")),
                    database=str(rolled.get("database", "kept")),
                )
            )
            rolled["reported"] = True
            await asyncio.to_thread(write_state, self.layout, state)
        pending = state.get("pending")
        if not pending or pending.get("version") != self.version:
            return
        deadline = float(pending.get("deadline", 0))
        while not healthy():
            if time.time() > deadline:
                log.error("this version (%s) did not get healthy in time; restarting", self.version)
                self.restart.requested = True
                self._restart()
                return
            await asyncio.sleep(1)
        await self._emit(
            ev.UpdateActivated(
                version=self.version,
                previous=pending.get("previous"),
                starts=int(pending.get("starts", 1)),
            )
        )
        activated = {"activated": {"version": self.version, "at": time.time()}}
        await asyncio.to_thread(write_state, self.layout, activated)
        copy = pending.get("db_copy")
        if copy:
            await asyncio.to_thread(_remove, Path(copy))
        log.info("update to %s activated", self.version)

    async def _emit(self, data: ev.EventData) -> None:
        event = Event(data, await self._now())

        def write(store: Store, now: Any, clock_ok: bool) -> Written[None]:
            return Written(
                store.append([dataclasses.replace(event, at=now)], clock_ok=clock_ok), None
            )

        await self.hall.write(write)

    async def _now(self) -> Any:
        import datetime as dt

        return dt.datetime.now(dt.UTC)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _running_prefix() -> Path:
    return Path(sys.prefix).resolve()


def _base_python() -> str:
    base = getattr(sys, "_base_executable", None)
    return str(base or sys.executable)


def _run(stage: str, argv: list[str]) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreters
            argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UpdateFailed(stage, f"{argv[0]}: {err}") from err
    if done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise UpdateFailed(stage, tail[-1][:300] if tail else f"exit {done.returncode}")


@contextlib.asynccontextmanager
async def agent_updates(hall: Hall, config: UpdateConfig, storage: Path) -> AsyncIterator[Updates]:
    async with BackgroundTasks() as tasks:
        yield Updates(hall, config, storage, tasks)
        tasks.cancel()
