"""A whole update in a sandbox (docs/fleet.md): real release bundles built from the
project's source, signed, served over HTTP, ordered by central over a real mosquitto;
the agent runs under the launcher and a supervisor this test plays (as systemd would).

- A broken release (it fails at import) is rolled back by the launcher; the hall keeps
  issuing on the old version and ``update.rolled_back`` names the cause.
- A good release is installed beside the running one, switched to and restarted; the
  birth message names the new version; every ticket answered before, during and after
  the update is in the store.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker import Broker
from oracle import Central, until
from releases import Supervisor, file_server
from support import ALWAYS, ops_headers, project_copy, write_config

from hallctl.release import build, keygen, pack, sign

pytestmark = pytest.mark.timeout(900)
HALL = "test-hall"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of everything the agent needs, built once (pip's cache makes it quick)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    source = project_copy(tmp_path_factory.mktemp("src") / "agent", "0.1.0")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--wheel-dir", str(house), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return house


@pytest.fixture(scope="module")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    private = tmp_path_factory.mktemp("keys") / "release.pem"
    return private, keygen(private)


def release(
    base: Path, version: str, wheelhouse: Path, key: Path, *, broken: bool = False
) -> tuple[str, int]:
    """A signed, packed bundle of ``version`` in ``base/served``: (sha256, size)."""
    project = project_copy(base / f"src-{version}", version)
    if broken:
        daemon = project / "agent" / "daemon.py"
        daemon.write_text(
            daemon.read_text(encoding="utf-8")
            + "\nraise ImportError('this build of the agent is broken on purpose')\n",
            encoding="utf-8",
        )
    bundle = base / f"bundle-{version}"
    build(project, bundle, wheelhouse=wheelhouse)
    sign(bundle, key)
    served = base / "served"
    served.mkdir(exist_ok=True)
    return pack(bundle, served / f"hall-agent-{version}.tar")


class Taker:
    """Takes tickets all along; remembers every one the agent answered."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Taker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                url = self.supervisor.url(timeout=5)
                headers = ops_headers(self.supervisor.storage)
                r = httpx.post(
                    f"{url}/api/v1/tickets", json={"service": "social"}, headers=headers, timeout=5
                )
            except (httpx.HTTPError, TimeoutError, OSError):
                time.sleep(0.2)  # restarting: a take that got no answer was not answered
                continue
            if r.status_code == 201:
                self.answered.append(r.json()["result"]["ticket"]["id"])
            time.sleep(0.3)

    def count_at_least(self, n: int) -> bool:
        return len(self.answered) >= n


def _stored_tickets(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM tickets")}
    finally:
        conn.close()


async def _event(central: Central, kind: str, seconds: float, **match: Any) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in central.events()
            if e["type"] == kind and all(e["data"].get(k) == v for k, v in match.items())
        ]

    await until(
        found, seconds, f"event {kind} {match}; got {[e['type'] for e in central.events()][-20:]}"
    )
    return found()[0]


async def _birth_version(central: Central, version: str, seconds: float) -> None:
    def born() -> bool:
        births = [m.json() for m in central.on("state") if m.payload]
        return any(b.get("online") and b.get("agent_version") == version for b in births)

    await until(born, seconds, f"a birth message of version {version}")


async def test_update_rolls_back_a_broken_release_and_installs_a_good_one(
    tmp_path: Path,
    broker: Broker,
    wheelhouse: Path,
    release_key: tuple[Path, str],
) -> None:
    key, public = release_key
    broken = await asyncio.to_thread(release, tmp_path, "0.3.0", wheelhouse, key, broken=True)
    good = await asyncio.to_thread(release, tmp_path, "0.4.0", wheelhouse, key)
    storage = tmp_path / "state"
    releases = tmp_path / "releases"
    config = write_config(
        tmp_path / "config.yaml",
        {
            "hall": {"id": HALL, "name": "测试社区服务站"},
            "services": [{"id": "social", "name": "社保医保", "prefix": "A", "hours": ALWAYS}],
            "windows": [{"id": "w1", "name": "1号窗口", "number": 1, "services": ["social"]}],
            "storage": {"path": str(storage)},
            "web": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "INFO", "format": "text"},
            "clock": {"trust": "system"},
            "mqtt": {"url": broker.url, "reconnect_spread_s": 0.2, "reconnect_max_s": 1.0,
                     "stable_after_s": 0},
            "update": {"trusted_keys": [public], "releases": str(releases),
                       "healthy_within_s": 300, "max_starts": 3},
        },
    )  # fmt: skip
    with (
        file_server(tmp_path / "served") as served_port,
        Supervisor(releases, config, storage, tmp_path / "agent.log") as supervisor,
    ):
        served = f"http://127.0.0.1:{served_port}"
        await asyncio.to_thread(supervisor.url)
        async with Central(broker.url, HALL, ["event/#", "state", "reply"]) as central:
            await _birth_version(central, "0.1.0", 60)
            with Taker(supervisor) as taker:
                await until(lambda: taker.count_at_least(3), 60, "tickets before the update")

                # A bundle whose bytes differ from what central announced: refused, nothing
                # switched.
                sha, size = good
                await central.command(
                    "update_agent",
                    {"cmd_id": "u-0", "version": "0.4.0", "url": f"{served}/hall-agent-0.4.0.tar",
                     "sha256": "0" * 64, "size": size},
                )  # fmt: skip
                assert (await central.reply_to("u-0", 30))["status"] == "ok"
                failed = await _event(central, "update.failed", 60, version="0.4.0")
                assert "SHA-256" in failed["data"]["error"]
                assert not (releases / "current").exists()

                # The broken release: installed, switched, refused by the launcher, rolled back.
                sha3, size3 = broken
                await central.command(
                    "update_agent",
                    {"cmd_id": "u-1", "version": "0.3.0", "url": f"{served}/hall-agent-0.3.0.tar",
                     "sha256": sha3, "size": size3},
                )  # fmt: skip
                assert (await central.reply_to("u-1", 30))["status"] == "ok"
                await _event(central, "update.installed", 400, version="0.3.0")
                rolled = await _event(central, "update.rolled_back", 200, version="0.3.0")
                assert "broken on purpose" in rolled["data"]["cause"], rolled
                assert rolled["data"]["to"] == "0.1.0"
                assert not (releases / "current").exists()
                before = len(taker.answered)
                await until(lambda: taker.count_at_least(before + 3), 60, "tickets on 0.1.0")

                # The good release.
                await central.command(
                    "update_agent",
                    {"cmd_id": "u-2", "version": "0.4.0", "url": f"{served}/hall-agent-0.4.0.tar",
                     "sha256": sha, "size": size},
                )  # fmt: skip
                assert (await central.reply_to("u-2", 30))["status"] == "ok"
                await _event(central, "update.installed", 400, version="0.4.0")
                await _birth_version(central, "0.4.0", 200)
                activated = await _event(central, "update.activated", 120, version="0.4.0")
                assert activated["data"]["previous"] == "0.1.0"
                assert os.readlink(releases / "current") == "0.4.0"
                before = len(taker.answered)
                await until(lambda: taker.count_at_least(before + 3), 60, "tickets on 0.4.0")
            answered = list(taker.answered)
    assert 75 in supervisor.exits, supervisor.exits  # the restarts asked for
    stored = _stored_tickets(storage / "hall.db")
    missing = [t for t in answered if t not in stored]
    assert not missing, f"{len(missing)} answered tickets are not stored: {missing[:5]}"
