"""Shared pieces of the central-link benchmarks: broker, backlogs, the counting subscriber.

The broker is the real mosquitto of the tests (``tests/broker.py``: a free port, stop and
start on the same port, persistence optional). Backlogs are real events (the queue
engine's own ``ticket.*`` and ``window.*`` events, cycled) appended to a fresh store in
large transactions, so building 100 000 takes seconds, not the minutes one transaction per
event would. The subscriber runs in its own process (``_subscriber.py``) so that counting
does not take CPU from the process being measured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, bench_hall

sys.path.insert(0, str(ROOT / "tests"))
from broker import MOSQUITTO, Broker, free_port  # type: ignore[import-not-found]

from agent.config import HallAgentConfig, validate_config
from agent.core.engine import QueueEngine
from agent.core.errors import QueueError
from agent.core.events import Event
from agent.runtime.store import DB_NAME, EPOCH_FILE, Store, StoredEvent

__all__ = [
    "MOSQUITTO",
    "Broker",
    "Subscriber",
    "broker_version",
    "build_backlog",
    "copy_store",
    "cpu_seconds",
    "event_templates",
    "free_port",
    "hall_data",
    "link_config",
    "read_vm",
]

BENCH = Path(__file__).resolve().parent
SERVICES = ("social", "civil", "housing", "general")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def broker_version() -> str:
    import subprocess

    try:
        out = subprocess.run(
            [MOSQUITTO, "-h"], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def hall_data(storage: Path, hall_id: str, url: str | None, **mqtt: Any) -> dict[str, Any]:
    """The bench hall with its id and (when ``url`` is given) a central link, as a dict."""
    data = bench_hall(storage)
    data["hall"]["id"] = hall_id
    if url is not None:
        data["mqtt"] = {"url": url, **mqtt}
    return data


def link_config(storage: Path, hall_id: str, url: str | None, **mqtt: Any) -> HallAgentConfig:
    """``hall_data`` validated, as the agent loads it."""
    return validate_config(hall_data(storage, hall_id, url, **mqtt))


# -- backlogs ------------------------------------------------------------------------------


def event_templates(storage: Path, tickets: int = 300) -> list[Event]:
    """A morning of real events: takes, calls and finishes as the queue engine makes them."""
    config = link_config(storage, "bench-templates", None)
    start = dt.datetime.now(config.hall.zone).replace(hour=9, minute=0, second=0, microsecond=0)
    engine = QueueEngine.fresh(config, start)
    windows = [w.id for w in config.windows]
    events: list[Event] = []
    for i in range(tickets):
        now = start + dt.timedelta(seconds=20 * i)
        events += engine.take(SERVICES[i % len(SERVICES)], now).events
        if i % 3 == 2:
            for window in windows:
                for op in (engine.call_next, engine.finish):
                    try:
                        events += op(window, now).events
                    except QueueError:
                        continue  # nothing to call or finish at that window now
    return events


def build_backlog(
    directory: Path, count: int, templates: list[Event], batch: int = 1000
) -> dict[str, Any]:
    """A fresh store in ``directory`` holding ``count`` unpublished events."""
    started = time.monotonic()
    store = Store.open(directory)
    now = dt.datetime.now(dt.UTC)
    try:
        done = 0
        while done < count:
            n = min(batch, count - done)
            store.append(
                [
                    dataclasses.replace(templates[(done + k) % len(templates)], at=now)
                    for k in range(n)
                ]
            )
            done += n
        stats = store.stats()
        last_seq = store.last_seq
    finally:
        store.close()
    return {
        "events": count,
        "last_seq": last_seq,
        "unpublished": stats.unpublished,
        "outbox_bytes": stats.bytes,
        "db_bytes": (directory / DB_NAME).stat().st_size,
        "build_s": time.monotonic() - started,
    }


def copy_store(source: Path, target: Path) -> None:
    """A copy of a closed store (its WAL was checkpointed when it was closed)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (DB_NAME, EPOCH_FILE):
        shutil.copy2(source / name, target / name)


def stored_events(directory: Path) -> list[StoredEvent]:
    store = Store.open(directory)
    try:
        return list(store.iter_events(batch=5000))
    finally:
        store.close()


def envelope_json(event: StoredEvent, hall_id: str) -> str:
    """The payload exactly as the link serialises it."""
    return json.dumps(event.envelope(hall_id), ensure_ascii=False)


# -- process memory --------------------------------------------------------------------------


def read_vm(pid: int | str = "self") -> dict[str, int]:
    """kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile) and Threads."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process so far (clock-tick resolution, 10 ms here)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the counting subscriber ---------------------------------------------------------------


class Subscriber:
    """``_subscriber.py`` as a child process, driven over its stdin and stdout."""

    def __init__(self, broker: Broker, client_id: str, *, persistent: bool = False) -> None:
        self.broker = broker
        self.client_id = client_id
        self.persistent = persistent
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_at: float | None = None

    async def __aenter__(self) -> Subscriber:
        command = [
            sys.executable,
            str(BENCH / "_subscriber.py"),
            "--host",
            self.broker.host,
            "--port",
            str(self.broker.port),
            "--client-id",
            self.client_id,
        ]
        if self.persistent:
            command.append("--persistent")
        self.proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26
        )
        ready = await self._read(30)
        self.ready_at = ready["at"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _send(self, request: dict[str, Any]) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        await self.proc.stdin.drain()

    async def _read(self, limit_s: float) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), limit_s)
        if not line:
            raise RuntimeError("the counting subscriber exited")
        document: dict[str, Any] = json.loads(line)
        return document

    async def expect(
        self,
        expected: dict[str, int],
        *,
        limit_s: float = 120,
        grace: float = 0.3,
        forget: bool = True,
    ) -> asyncio.Task[dict[str, Any]]:
        """Ask for a report once every hall's seqs 1..last_seq arrived; await the task."""
        await self._send({"expect": expected, "timeout": limit_s, "grace": grace, "forget": forget})
        return asyncio.create_task(self._read(limit_s + grace + 30))

    async def births(self) -> dict[str, Any]:
        await self._send({"births": True})
        return await self._read(30)
