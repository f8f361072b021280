"""A real mosquitto for tests: started on a free port, stopped, killed, restarted.

Not a test module: ``conftest.py`` exposes it through the ``broker`` and
``broker_factory`` fixtures, and benchmarks may use it directly.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from pki import Pki

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Generous for a loaded 2-core CI machine; a healthy mosquitto listens within ~50 ms.
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """mosquitto did not start, or did not stop, as asked."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(host: str, port: int, timeout: float) -> bool:
    """True once a TCP connect to ``host:port`` succeeds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


class Broker:
    """One mosquitto process with its own config, log and persistence in ``workdir``.

    The port is chosen once and kept across ``restart()``, so clients reconnect to the
    same URL. With ``tls`` the only listener requires a client certificate signed by the
    PKI's CA, and ``url`` is ``mqtts://localhost:PORT`` (the server certificate names
    ``localhost``); ``plain_listener=True`` adds a plaintext listener on ``plain_port``
    so a test can prove a client never falls back to it.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        tls: Pki | None = None,
        plain_listener: bool = False,
        max_queued_messages: int = 0,
        extra_config: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.persistence = persistence
        self.tls = tls
        self.port = port or free_port(self.host)
        self.plain_port = free_port(self.host) if tls is not None and plain_listener else None
        self.max_queued_messages = max_queued_messages
        self.extra_config = list(extra_config or [])
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.output_path = workdir / "mosquitto.out"
        self.persistence_dir = workdir / "persistence"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"mqtts://localhost:{self.port}"
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _config(self) -> str:
        lines = [
            "# written by tests/broker.py",
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to 'mosquitto'
            "per_listener_settings false",
            "allow_anonymous true",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # 0 = unlimited: a persistent session offline through a long test keeps all.
            f"max_queued_messages {self.max_queued_messages}",
            "set_tcp_nodelay true",
        ]
        if self.persistence:
            self.persistence_dir.mkdir(parents=True, exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
        else:
            lines.append("persistence false")
        lines.append(f"listener {self.port} {self.host}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
            if self.plain_port is not None:
                lines.append(f"listener {self.plain_port} {self.host}")
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        if self.running:
            raise BrokerError("mosquitto is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        with self.output_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not wait_listening(self.host, self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                self.kill()
                raise BrokerError(
                    f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s;"
                    f" output:\n{self._tail(self.output_path)}\nlog:\n{self._tail(self.log_path)}"
                )
        self.starts += 1

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait: mosquitto saves its persistence file on the way out."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired as err:
                self.proc.kill()
                self.proc.wait()
                raise BrokerError(f"mosquitto ignored SIGTERM for {timeout}s") from err
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: anything not yet saved to the persistence file is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill, ``hard=True``) and start again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def wipe_persistence(self) -> None:
        """Delete the saved state; the broker must be stopped."""
        if self.running:
            raise BrokerError("stop mosquitto before wiping its persistence")
        shutil.rmtree(self.persistence_dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(none)"
        return os.linesep.join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
