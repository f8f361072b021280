"""``hall-agent run`` with the hall's clock read from a file: the soak benchmark's agent.

Started by ``soak_memory.py`` (never run by hand) as ``python _soak_agent.py CONFIG CLOCK``.
It is the daemon's own ``serve(config)`` with one change: the hall's wall clock (the
time its operations and events carry, and by which the business day rolls over) is the
8-byte float (POSIX seconds) in the file ``CLOCK``, which the benchmark moves forward hour
by hour, so a week passes in minutes. Everything else (timers, the link, devices) runs
on real time.

With ``SOAK_TRACEMALLOC=<frames>`` it traces allocations and writes a snapshot to
``<storage>/tracemalloc-<n>.snap`` on each SIGUSR1; without it SIGUSR1 writes the count of
objects the garbage collector tracks, by type, to ``<storage>/objects-<n>.json``; either
way the names of the modules loaded go to ``<storage>/modules-<n>.json``. On
SIGUSR2 it asks glibc to give freed heap memory back (``malloc_trim(0)``) and writes its
VmRSS before and after (kB) to ``<storage>/trim-probe``: how much of the RSS is memory the
allocator keeps, not objects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import datetime as dt
import gc
import json
import mmap
import os
import signal
import struct
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's agent

from agent import daemon
from agent.config import load_config
from agent.runtime.hall import Hall
from agent.runtime.logs import setup_logging


class FileClock:
    """The time the benchmark wrote into ``path`` (a float of POSIX seconds)."""

    def __init__(self, path: Path) -> None:
        with path.open("r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), 8)

    def __call__(self) -> dt.datetime:
        (seconds,) = struct.unpack_from("d", self._map)
        return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    config_path, clock_path = Path(sys.argv[1]), Path(sys.argv[2])
    frames = int(os.environ.get("SOAK_TRACEMALLOC") or 0)
    if frames:
        tracemalloc.start(frames)
    clock = FileClock(clock_path)

    class SimulatedHall(Hall):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["clock"] = clock  # in place of the daemon's wall clock
            super().__init__(*args, **kwargs)

    daemon.Hall = SimulatedHall  # type: ignore[misc]
    config = load_config(config_path)
    snapshots = [0]

    def dump(_signum: int, _frame: object) -> None:
        snapshots[0] += 1
        if tracemalloc.is_tracing():
            target = config.storage.path / f"tracemalloc-{snapshots[0]}.snap"
            tracemalloc.take_snapshot().dump(str(target))
        else:  # objects the collector tracks, by type: cheap, no tracing
            counts = collections.Counter(
                f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
            )
            target = config.storage.path / f"objects-{snapshots[0]}.json"
            target.write_text(json.dumps(counts), encoding="utf-8")
        modules = config.storage.path / f"modules-{snapshots[0]}.json"
        modules.write_text(json.dumps(sorted(sys.modules)), encoding="utf-8")
        (config.storage.path / "tracemalloc-done").write_text(str(snapshots[0]))

    def trim(_signum: int, _frame: object) -> None:
        before = _rss_kb()
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(None).malloc_trim(0)
        (config.storage.path / "trim-probe").write_text(f"{before} {_rss_kb()}")

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, trim)
    setup_logging(
        config.logging.level,
        config.logging.format,
        repeat_window_s=config.logging.repeat_window_s,
        max_lines_per_s=config.logging.max_lines_per_s,
        max_bytes_per_hour=config.logging.max_bytes_per_hour,
    )
    asyncio.run(daemon.serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
