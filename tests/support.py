"""Shared helpers for tests that start a real agent (in-process or as a subprocess)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Open all day: to the last second, so that a test running at 23:59 in the hall's time
# zone (16:00 UTC) is not told the service has closed for the day.
ALWAYS = [{"start": "00:00", "end": "23:59:59", "days": ALL_DAYS}]


def hall_config(storage: Path, port: int = 0, **sections: Any) -> dict[str, Any]:
    """A small valid hall: 4 services open all day, 3 windows, offline."""
    config: dict[str, Any] = {
        "hall": {"id": "test-hall", "name": "测试社区服务站"},
        "services": [
            {"id": "social", "name": "社保医保", "prefix": "A", "hours": ALWAYS},
            {"id": "civil", "name": "民政救助", "prefix": "B", "hours": ALWAYS},
            {"id": "housing", "name": "户籍证明", "prefix": "C", "hours": ALWAYS},
            {"id": "general", "name": "综合咨询", "prefix": "D", "hours": ALWAYS},
        ],
        "windows": [
            {"id": "w1", "name": "1号窗口", "number": 1, "services": ["social", "general"]},
            {"id": "w2", "name": "2号窗口", "number": 2, "services": ["civil", "housing"]},
            {
                "id": "w3",
                "name": "3号窗口",
                "number": 3,
                "services": ["general", "social", "civil", "housing"],
            },
        ],
        "storage": {"path": str(storage)},
        "web": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "INFO", "format": "text"},
        # A test machine's clock is kept by its host (no NTP state inside a container).
        "clock": {"trust": "system"},
    }
    config.update(sections)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# ``python -c`` that sets the open-file limit, then runs ``agent.cli`` as ``-m`` would.
_WITH_OPEN_FILES = (
    "import resource, runpy, sys; n = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "runpy.run_module('agent.cli', run_name='__main__', alter_sys=True)"
)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real small file system (tmpfs of ``size``, e.g. ``24m``) mounted at ``where``, for
    a disk that fills up; the test is skipped where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=20)


def started(health: httpx.Response) -> bool:
    """Whether ``/healthz`` says the whole start is done: answering, and no longer naming
    the check ``start`` (the devices, the link and the pages come up after the API:
    docs/operations.md, "Starting")."""
    if health.status_code != 200:
        return False
    reasons = health.json().get("reasons", [])
    return not any(r.get("check") == "start" for r in reasons)


def wait_started(
    proc: subprocess.Popen[bytes], url_file: Path, timeout: float, log: Callable[[], str]
) -> str | None:
    """The API URL of a starting ``hall-agent run`` once its whole start is done (the URL
    file written and ``/healthz`` says ``started``); None after ``timeout`` seconds. An
    agent that exits meanwhile raises RuntimeError with ``log()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hall-agent exited with {proc.returncode}:\n{log()}")
        if url_file.exists():
            url = url_file.read_text(encoding="utf-8").strip()
            try:
                if started(httpx.get(f"{url}/healthz", timeout=2)):
                    return url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    return None


class AgentProcess:
    """``hall-agent run`` as a real subprocess, found through the API URL it writes.

    ``open_files`` starts it with that open-file limit, soft and hard (as systemd's
    LimitNOFILE= would); by default it inherits the test's.
    """

    def __init__(
        self,
        config_path: Path,
        storage: Path,
        log_path: Path,
        open_files: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.storage = storage
        self.log_path = log_path
        self.open_files = open_files
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> str:
        url_file = self.storage / "api-url"
        url_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALL_")}
        env.update(self.extra_env)
        command = ["run", "--config", str(self.config_path)]
        if self.open_files is None:
            launch = [sys.executable, "-m", "agent.cli"]
        else:
            launch = [sys.executable, "-c", _WITH_OPEN_FILES, str(self.open_files)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*launch, *command], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        url = wait_started(self.proc, url_file, timeout, self.log_path.read_text)
        if url is not None:
            self.url = url
            return url
        self.kill()
        raise TimeoutError(f"agent not ready after {timeout}s: {self.log_path.read_text()}")

    @property
    def ops(self) -> dict[str, str]:
        """Headers that authorize a request as ops (the token the agent made at start)."""
        return ops_headers(self.storage)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns how long the agent took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started


# -- headless Chromium (the pages' tests) ---------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's probe starts it: without the background-networking flags Chromium tries
# Google's hosts at every start, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed (Debian package chromium)"
)


@contextlib.asynccontextmanager
async def chromium(profile: Path, *extra_flags: str) -> AsyncIterator[Any]:
    """A headless Chromium context with its own profile folder, 1920x1080."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=[*CHROMIUM_FLAGS, *extra_flags],
            headless=True,
            viewport={"width": 1920, "height": 1080},
        )
        try:
            yield context
        finally:
            await context.close()


def slow_fsync_shim(directory: Path) -> Path:
    """bench/fsync_delay.c built into ``directory``: with LD_PRELOAD, every fsync of the
    process sleeps HALL_BENCH_FSYNC_MS first (an SD card's fsync on a fast disk). Skips the
    test when the machine has no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the slow-fsync shim (apt install gcc)")
    source = Path(__file__).resolve().parent.parent / "bench" / "fsync_delay.c"
    target = directory / "fsync_delay.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(target), str(source), "-ldl"],
        check=True,
        capture_output=True,
    )
    return target


# -- credentials (docs/security.md) ------------------------------------------------------------


def ops_token(storage: Path) -> str:
    """The ops token the agent made in its state folder (what the CLI sends)."""
    return (storage / "ops-token").read_text(encoding="ascii").strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ops_headers(storage: Path) -> dict[str, str]:
    """Headers that authorize a request as ops (everything but a citizen's rating)."""
    return bearer(ops_token(storage))


async def enroll(running: Any, device: str, role: str, window: str | None = None) -> str:
    """Enrol a device in a running agent; its token."""
    from agent.features.access import Role

    token: str = await running.access.enroll(device, Role(role), window)
    return token


def rater_headers(running: Any, window: str = "w1") -> dict[str, str]:
    """The page token of ``window``'s web rater: the only credential that gives a rating."""
    devices = running.windows
    for device_id, token in devices.tokens.items():
        if devices.windows.get(device_id) == window and device_id.startswith("rater"):
            return bearer(token)
    raise LookupError(f"no web rater at {window}")


def as_ops(running: Any) -> dict[str, str]:
    """Ops headers for an in-process running agent (``agent.daemon.Running``)."""
    return ops_headers(running.hall.config.storage.path)


# -- the project's own source, as a release is built from it (docs/fleet.md) ---------------

PROJECT = Path(__file__).resolve().parent.parent
# What a wheel of the agent is built from (the rest of a checkout is not in the wheel).
_WHEEL_SOURCE = ("agent", "drivers", "protocols", "hallctl", "pyproject.toml", "README.md")


def project_copy(dest: Path, version: str) -> Path:
    """The project's source in ``dest`` with its version set to ``version``."""
    dest.mkdir(parents=True)
    for name in _WHEEL_SOURCE:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    for path, old, new in (
        (dest / "pyproject.toml", 'version = "0.1.0"', f'version = "{version}"'),
        (dest / "agent" / "__init__.py", '__version__ = "0.1.0"', f'__version__ = "{version}"'),
    ):
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{path.name} no longer says {old}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return dest
