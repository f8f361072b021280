"""Shared pieces of the benchmarks: machine facts, results files, tables, the agent process.

Benchmarks are not tests: they measure, compare against a baseline taken in the same run
and write what they saw to ``bench/results/<name>.json``. Nothing here asserts on timing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# The tests' hall and config writer: one copy of each, re-exported for the benchmarks.
from support import (  # noqa: E402, F401 (re-exported)
    CHROMIUM,
    CHROMIUM_FLAGS,
    hall_config,
    started,
    wait_started,
    write_config,
)

RESULTS = ROOT / "bench" / "results"
# Scratch space on the repository's own file system, so fsync costs what it costs there.
SCRATCH = ROOT / "bench" / ".tmp"


# -- machine and results -------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _git_commit() -> str | None:
    """HEAD, marked ``+dirty`` when the code being measured has uncommitted changes."""
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return None
    dirty = _git("status", "--porcelain", "--", "agent", "drivers", "protocols")
    return f"{head}+dirty" if dirty else head


def _filesystem(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["df", "--output=fstype", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    return lines[-1] if len(lines) > 1 else None


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "filesystem": _filesystem(ROOT),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }


def write_results(
    name: str, parameters: Mapping[str, Any], figures: Mapping[str, Any], **extra: Any
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "machine": machine_info(),
        "parameters": dict(parameters),
        "figures": dict(figures),
        **extra,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Text left, numbers right, one line per row."""
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# -- scratch directories and the agent process ---------------------------------------------


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under bench/.tmp, removed afterwards."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_hall(storage: Path, port: int = 0, width: int = 3) -> dict[str, Any]:
    """The tests' small hall (4 services open all day, 3 windows, offline), quieter logs."""
    config = hall_config(
        storage,
        port,
        hall={"id": "bench-hall", "name": "基准测试服务大厅"},
        logging={"level": "WARNING", "format": "text"},
    )
    for service in config["services"]:
        service["width"] = width
    return config


def agent_command(config_path: Path) -> list[str]:
    """``hall-agent run`` as systemd starts it: the installed console script."""
    script = Path(sys.executable).parent / "hall-agent"
    if script.exists():
        return [str(script), "run", "--config", str(config_path)]
    return [sys.executable, "-m", "agent.cli", "run", "--config", str(config_path)]


def ops_headers(storage: Path) -> dict[str, str]:
    """The ops token the agent made in its state folder, as a request header."""
    token = (storage / "ops-token").read_text(encoding="ascii").strip()
    return {"Authorization": f"Bearer {token}"}


class AgentProcess:
    """A real ``hall-agent run`` subprocess, found through the API URL it writes."""

    def __init__(
        self,
        config_path: Path,
        storage: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.config_path = config_path
        # Another way to start the same agent (bench/_soak_agent.py); hall-agent run if None.
        self.command = None if command is None else list(command)
        self.storage = storage
        self.log_path = log_path
        self.env = dict(env or {})
        # Put before the command: ``taskset -c 0`` for a one-core run (bench/_fsync.py).
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> str:
        url_file = self.storage / "api-url"
        url_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALL_")}
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *(self.command or agent_command(self.config_path))],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        url = wait_started(self.proc, url_file, timeout, self._log_tail)
        if url is not None:
            self.url = url
            return url
        self.stop()
        raise TimeoutError(f"hall-agent not ready after {timeout}s:\n{self._log_tail()}")

    @property
    def ops(self) -> dict[str, str]:
        """Headers that authorize a request as ops (docs/security.md)."""
        return ops_headers(self.storage)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the orderly stop), SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopThread:
    """An event loop of its own in a thread of this process: an emulator beside a real
    ``hall-agent run``, so that its timing does not wait on the measuring code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the thread's loop and wait for its result (at most 30 s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)
