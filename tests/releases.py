"""What an update's tests and benchmark play around the agent (docs/fleet.md): a plain HTTP
server for release bundles, and a supervisor that starts the launcher again whenever the
agent exits, as systemd's ``Restart=`` does.

Not a test module: tests/test_update.py and bench/update_time.py use it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[int]:
    """Serves ``folder`` on 127.0.0.1; yields the port."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class Supervisor:
    """Starts the launcher again whenever the agent exits, as systemd's Restart= does."""

    def __init__(self, releases: Path, config: Path, storage: Path, log: Path) -> None:
        self.argv = [
            sys.executable, "-m", "agent.runtime.launcher",
            "--releases", str(releases),
            "--base", str(Path(sys.executable).parent / "hall-agent"),
            "--", "run", "--config", str(config),
        ]  # fmt: skip
        self.storage = storage
        self.log = log
        self.exits: list[int] = []
        self.starts = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()
        self._thread.join(30)

    def _loop(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALL_")}
        while not self._stop.is_set():
            (self.storage / "api-url").unlink(missing_ok=True)
            with self.log.open("ab") as out:
                self._proc = subprocess.Popen(self.argv, stdout=out, stderr=out, env=env)
                self.starts += 1
                code = self._proc.wait()
            self.exits.append(code)
            if not self._stop.is_set():
                self._stop.wait(0.5)  # RestartSec=

    def url(self, timeout: float = 120) -> str:
        """The running agent's API, once it answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url_file = self.storage / "api-url"
            if url_file.exists():
                url = url_file.read_text().strip()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        return url
            time.sleep(0.2)
        raise TimeoutError(f"the agent did not answer: {self.log.read_text()[-3000:]}")
