"""A real PostgreSQL for tests and benchmarks: a throw-away cluster (Debian's server
binaries, ``initdb`` + ``pg_ctl``) in a temporary folder, on a free port, trust auth on
127.0.0.1 only.

PostgreSQL refuses to run as root; as root (CI) the cluster belongs to the ``postgres``
user that Debian's package creates (or ``nobody``), through ``runuser``.
Not a test module: ``conftest.py`` exposes it through the ``postgres`` fixture.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from broker import free_port

VERSIONS_DIR = Path("/usr/lib/postgresql")


def server_bin() -> Path | None:
    """The newest installed server's bin folder, or None."""
    env = os.environ.get("HALL_PG_BIN")
    if env:
        return Path(env)
    if not VERSIONS_DIR.is_dir():
        return None
    found = sorted(
        (p for p in VERSIONS_DIR.iterdir() if (p / "bin" / "initdb").is_file()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return found[-1] / "bin" if found else None


MISSING = (
    "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin:"
    " run ./scripts/setup (it installs Debian's postgresql package)"
)


class PostgresError(RuntimeError):
    pass


class Postgres:
    """One cluster; ``url(db)`` for a database in it, ``create_database()`` for a fresh one."""

    host = "127.0.0.1"

    def __init__(self, *, durable: bool = False) -> None:
        found = server_bin()
        if found is None:
            raise PostgresError(MISSING)
        self.bin = found
        self.durable = durable
        self.port = free_port(self.host)
        self.dir = Path(tempfile.mkdtemp(prefix="hall-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.owner: str | None = None
        if os.geteuid() == 0:
            self.owner = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(self.dir, self.owner)
        self.dir.chmod(0o755)

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PostgresError(
                f"{' '.join(argv[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"\n{log[-2000:]}"
            )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = [
            f"-p {self.port}",
            f"-k {self.dir}",
            f"-c listen_addresses={self.host}",
            "-c max_connections=100",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:  # tests: the data is thrown away anyway
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", " ".join(options), "start")  # fmt: skip

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

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


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
