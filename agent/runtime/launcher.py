"""The launcher systemd runs (docs/fleet.md): it picks the agent version to start, and
rolls an update back when the new version cannot get healthy.

Releases live beside the state database, where the service may write::

    /var/lib/hall-agent/releases/
        0.2.0/                 a virtual environment per installed version
        current -> 0.2.0       what starts; replaced in one atomic rename
        previous -> 0.1.0      what a rollback goes back to (absent: the base install)
        update.json            the update in progress, or the last one's outcome
        db-before-0.2.0.sqlite the database as it was before 0.2.0 first started

Without ``current`` the base install (``/opt/hall-agent/venv``) starts. The launcher runs
from the base install, so an update can never break the way back.

At every start, while an update is pending:

1. the first start copies the database (nothing writes it then);
2. the new version is tried in a separate process first (``import agent.daemon`` and the
   rest of its start's code): an update that fails at import is rolled back at once, its
   error as the cause;
3. after ``max_starts`` starts without the agent confirming it got healthy, or once the
   deadline passed, ``current`` goes back to ``previous``; if the new version had
   migrated the database, the copy is restored and the newer file kept beside it.

The agent reports the outcome (``update.activated`` or ``update.rolled_back``) from
``update.json`` once it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATE = "update.json"
CURRENT = "current"
PREVIOUS = "previous"
PREFLIGHT_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """Where releases, the switch and the update's state are."""

    releases: Path
    base: Path  # the base install's hall-agent command

    @property
    def state(self) -> Path:
        return self.releases / STATE

    @property
    def current(self) -> Path:
        return self.releases / CURRENT

    @property
    def previous(self) -> Path:
        return self.releases / PREVIOUS

    def version_dir(self, version: str) -> Path:
        return self.releases / version

    def command(self) -> Path:
        """The hall-agent command that starts now."""
        if self.current.is_symlink() or self.current.exists():
            return self.current / "bin" / "hall-agent"
        return self.base

    def python(self) -> Path:
        command = self.command()
        return command.parent / "python"

    def db_copy(self, version: str) -> Path:
        return self.releases / f"db-before-{version}.sqlite"


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        data = json.loads(layout.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # A damaged state file: keep it for a person, start as if no update were pending.
        with contextlib.suppress(OSError):
            layout.state.replace(layout.state.with_suffix(f".damaged-{int(time.time())}"))
        return {}
    return data if isinstance(data, dict) else {}


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    """Written whole and renamed into place, fsynced: a power cut leaves old or new."""
    layout.releases.mkdir(parents=True, exist_ok=True)
    tmp = layout.state.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(state, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(layout.state)
    _fsync_dir(layout.releases)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def point(link: Path, target: str | None) -> None:
    """Make ``link`` a symlink to ``target`` (relative) in one atomic rename; None
    removes it."""
    if target is None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        _fsync_dir(link.parent)
        return
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)
    _fsync_dir(link.parent)


def link_target(link: Path) -> str | None:
    return os.readlink(link) if link.is_symlink() else None


def release_env(layout: Layout) -> dict[str, str]:
    """The environment a version starts with: a release runs its own code only, so a
    PYTHONPATH (a developer's checkout) is dropped for it."""
    env = dict(os.environ)
    if layout.command() != layout.base:
        env.pop("PYTHONPATH", None)
    return env


# What the preflight imports: the daemon and its command, and the code of the start's
# second step (agent/daemon_features.py, imported after the API answers) where the version
# has one (older versions do not).
PREFLIGHT = (
    "import importlib.util, agent.daemon, agent.cli\n"
    "if importlib.util.find_spec('agent.daemon_features'):\n"
    "    import agent.daemon_features\n"
)


def preflight(layout: Layout) -> str | None:
    """None when the version's Python imports the agent; else the error's last line."""
    python = layout.python()
    try:
        done = subprocess.run(  # noqa: S603 - a version's own interpreter
            # -I: isolated, as systemd starts it (no current folder or PYTHON* on the path).
            [str(python), "-I", "-c", PREFLIGHT],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=PREFLIGHT_TIMEOUT_S,
            check=False,
            env=release_env(layout),
        )
    except subprocess.TimeoutExpired:
        return f"importing the agent took over {PREFLIGHT_TIMEOUT_S:.0f} s"
    except OSError as err:
        return f"cannot run {python}: {err.strerror}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit status {done.returncode}"


def rollback(layout: Layout, state: dict[str, Any], cause: str, now: float) -> dict[str, Any]:
    """``current`` back to ``previous``; the database restored when it was migrated."""
    pending = state.get("pending") or {}
    version = str(pending.get("version", "?"))
    point(layout.current, pending.get("previous_target"))
    point(layout.previous, None)
    restored = _restore_database(layout, pending, now)
    outcome = {
        "version": version,
        "to": pending.get("previous"),
        "cause": cause,
        "at": now,
        "starts": pending.get("starts", 0),
        "database": restored,
        "reported": False,
    }
    new_state = {"rolled_back": outcome}
    write_state(layout, new_state)
    print(f"hall-agent-launch: update to {version} rolled back: {cause}", file=sys.stderr)
    return new_state


def _restore_database(layout: Layout, pending: dict[str, Any], now: float) -> str:
    """What happened to the database: kept, or restored from the copy."""
    from agent.runtime.store.core import StoreError
    from agent.runtime.store.schema import file_version

    db = pending.get("db")
    copy = pending.get("db_copy")
    before = pending.get("schema_version")
    if not db or not copy or before is None or not Path(copy).exists():
        return "kept"
    db_path = Path(db)
    try:
        now_version = file_version(db_path) if db_path.exists() else before
    except StoreError:
        now_version = before + 1  # unreadable by the old version either way
    if now_version <= before:
        return "kept"
    kept = db_path.with_name(f"{db_path.name}.from-{pending.get('version')}-{int(now)}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{db_path}{suffix}")
        if part.exists():
            part.replace(Path(f"{kept}{suffix}"))
    Path(copy).replace(db_path)
    _fsync_dir(db_path.parent)
    return f"restored the copy taken before the update; the migrated file is kept as {kept}"


def decide(layout: Layout, now: float) -> dict[str, Any]:
    """What to start: updates the state (counts the start, or rolls back)."""
    state = read_state(layout)
    pending = state.get("pending")
    if not pending:
        return state
    starts = int(pending.get("starts", 0))
    if starts >= int(pending.get("max_starts", 3)):
        return rollback(
            layout,
            state,
            f"the new version did not get healthy in {starts} starts (it crashed or stopped)",
            now,
        )
    if now > float(pending.get("deadline", now + 1)):
        return rollback(layout, state, "the new version did not get healthy in time", now)
    if starts == 0:
        _copy_database(layout, pending)
    error = preflight(layout)
    if error is not None:
        return rollback(layout, state, f"the new version fails to start: {error}", now)
    pending["starts"] = starts + 1
    write_state(layout, state)
    return state


def _copy_database(layout: Layout, pending: dict[str, Any]) -> None:
    from agent.runtime.store.schema import copy_file

    db = pending.get("db")
    if not db or not Path(db).exists():
        return
    copy = layout.db_copy(str(pending.get("version")))
    with contextlib.suppress(FileNotFoundError):
        copy.unlink()
    pending["schema_version"] = copy_file(Path(db), copy)
    pending["db_copy"] = str(copy)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hall-agent-launch", description="start the current hall-agent version"
    )
    parser.add_argument("--releases", type=Path, default=Path("/var/lib/hall-agent/releases"))
    parser.add_argument(
        "--base",
        type=Path,
        default=Path("/opt/hall-agent/venv/bin/hall-agent"),
        help="the base install's hall-agent command",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="hall-agent's arguments")
    options = parser.parse_args(argv)
    layout = Layout(options.releases, options.base)
    args = [a for a in options.args if a != "--"] or ["run"]
    decide(layout, time.time())
    command = layout.command()
    # The agent replaces the launcher: systemd's notifications and signals reach it.
    os.execve(command, [str(command), *args], release_env(layout))  # noqa: S606
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
