"""The fsync-delay mode of the benchmarks: a disk that answers like a Pi's SD card.

A development machine's disk answers an fsync in well under a millisecond; a Raspberry
Pi's SD card takes 2-30 ms. ``bench/fsync_delay.c``, loaded with ``LD_PRELOAD``, makes
every ``fsync``/``fdatasync`` of a process sleep ``HALL_BENCH_FSYNC_MS`` first. It is built
here with the system's C compiler into ``bench/.tmp/shim/`` (not committed), once per
version of the source; without a compiler the delayed runs say so and are skipped.

The agent's SQLite runs inside its own process, so the shim goes into the process that
holds the store: the ``hall-agent run`` subprocess (:func:`agent_env`), or, for the
benchmarks that run the store in their own process, the benchmark itself, which starts
itself again with the shim (:func:`reexec`). ``--one-core`` pins that process to CPU 0
with ``taskset -c 0`` (a slower machine's CPU, roughly: the clients keep the other core).

The baseline under the same delay is :func:`raw_baseline`: ``bench/raw_commit.py``, one
``INSERT`` and ``COMMIT`` per operation with the store's pragmas, in its own process with
the same shim and the same pinning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SOURCE = BENCH / "fsync_delay.c"
SHIM_DIR = BENCH / ".tmp" / "shim"
DELAY_ENV = "HALL_BENCH_FSYNC_MS"
COUNT_ENV = "HALL_BENCH_FSYNC_COUNT"
# Set in a benchmark that started itself again under the shim: do not start it a third time.
MARK_ENV = "HALL_BENCH_UNDER_SHIM"


class NoShim(RuntimeError):
    """The shim cannot be built here (no C compiler, or it failed); the reason says which."""


def build_shim() -> Path:
    """``bench/.tmp/shim/fsync_delay-<hash>.so``, compiled with ``cc`` if it is not there."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = SHIM_DIR / f"fsync_delay-{digest}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise NoShim(
            "no C compiler (cc) on this machine: the fsync-delay runs are skipped "
            "(install one: apt-get install gcc)"
        )
    SHIM_DIR.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".so.part")
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise NoShim(f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()}")
    partial.replace(target)
    return target


def taskset_prefix(one_core: bool) -> list[str]:
    """``taskset -c 0`` when asked for one core (an error if taskset is missing)."""
    if not one_core:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise NoShim("--one-core needs taskset (util-linux), which is not on this machine")
    return [taskset, "-c", "0"]


def agent_env(fsync_ms: float | None) -> dict[str, str]:
    """What the process holding the store needs in its environment for ``fsync_ms``.
    Nothing for None (no shim at all, the machine as it is); 0 loads the shim without a
    delay (its own cost, a call through ``dlsym``, is nanoseconds)."""
    if fsync_ms is None:
        return {}
    shim = build_shim()
    preload = " ".join(p for p in (str(shim), os.environ.get("LD_PRELOAD", "")) if p)
    return {"LD_PRELOAD": preload, DELAY_ENV: f"{fsync_ms:g}"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fsync-ms",
        type=float,
        default=None,
        help="make every fsync of the agent's process sleep this long first "
        "(bench/fsync_delay.c via LD_PRELOAD; an SD card: 5-20)",
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="pin the agent's process to CPU 0 (taskset -c 0)",
    )


def suffix(fsync_ms: float | None, one_core: bool) -> str:
    """What the results file's name gets: ``@fsync20ms``, ``@1core``, both or nothing."""
    out = "" if fsync_ms is None else f"@fsync{fsync_ms:g}ms"
    return out + ("@1core" if one_core else "")


def mode(fsync_ms: float | None, one_core: bool) -> dict[str, Any]:
    """The run's disk and CPU mode, as results files record it."""
    return {
        "fsync_delay_ms": fsync_ms,
        "one_core": one_core,
        "shim": None if fsync_ms is None else SOURCE.name,
    }


def reexec(fsync_ms: float | None, one_core: bool) -> None:
    """Start this benchmark again under the shim (and taskset), unless it already is.

    For the benchmarks whose store is in their own process (store_append, keypad_latency).
    Without a compiler it prints why and exits 0: the run is skipped, not failed."""
    if (fsync_ms is None and not one_core) or os.environ.get(MARK_ENV):
        return
    try:
        env = {**os.environ, **agent_env(fsync_ms), MARK_ENV: "1"}
        prefix = taskset_prefix(one_core)
    except NoShim as err:
        print(f"skipped: {err}", file=sys.stderr)
        sys.exit(0)
    command = [*prefix, sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def raw_baseline(fsync_ms: float | None, one_core: bool, ops: int = 300) -> dict[str, Any]:
    """``bench/raw_commit.py`` under the same delay and pinning: what one durable commit of
    one row costs, with the store's pragmas."""
    env = {**os.environ, **agent_env(fsync_ms)}
    env.pop(MARK_ENV, None)
    command = [
        *taskset_prefix(one_core),
        sys.executable,
        str(BENCH / "raw_commit.py"),
        "--ops",
        str(ops),
        "--json",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures
