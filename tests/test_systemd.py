"""The systemd unit, the udev rules and sd_notify against a real ``hall-agent run``.

The unit is checked with Debian's own ``systemd-analyze`` (offline: CI has no running
systemd); the notifications are read from a unix datagram socket the test binds, as
systemd's would be.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import hall_config, write_config

from agent.config import HallAgentConfig
from agent.config.system import FD_RESERVE, WebConfig
from agent.daemon import running_agent
from agent.doctor import SERVICE_GROUPS
from agent.runtime.store import Written
from agent.runtime.systemd import Notifier, supervised

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "hall-agent.service"
RULES = REPO / "systemd" / "99-hall-agent.rules"
EXPOSURE_LIMIT = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit as shipped, its ExecStart pointed at this environment's hall-agent (verify
    checks that the program exists; /opt/hall-agent is not installed here)."""
    program = Path(sys.executable).parent / "hall-agent"
    assert program.exists()
    text = (
        UNIT.read_text(encoding="utf-8")
        .replace("/opt/hall-agent/venv/bin/hall-agent", str(program))
        .replace("/opt/hall-agent/venv/bin/python", sys.executable)
    )
    target = tmp_path / "hall-agent.service"
    target.write_text(text, encoding="utf-8")
    return target


@needs_analyze
@pytest.mark.timeout(60)
def test_systemd_analyze_verify_accepts_the_unit(checkable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=checkable_unit.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
@pytest.mark.timeout(60)
def test_security_exposure_is_at_most_2(checkable_unit: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={int(EXPOSURE_LIMIT * 10)}",
            "--no-pager",
            str(checkable_unit),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=checkable_unit.parent,
    )
    found = re.search(r"Overall exposure level for hall-agent\.service: (\d+\.\d)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE_LIMIT, result.stdout
    assert result.returncode == 0, result.stdout


def test_unit_runs_notify_with_watchdog_restart_and_state_directories() -> None:
    v = unit_values()
    assert v["Type"] == ["notify"]
    assert float(v["WatchdogSec"][0]) > 0
    assert v["Restart"] == ["on-failure"]
    assert int(v["StartLimitBurst"][0]) > 0
    assert v["StateDirectory"] == ["hall-agent"]
    assert v["ConfigurationDirectory"] == ["hall-agent"]
    assert v["LogsDirectory"] == ["hall-agent"]
    assert v["User"] == ["hall-agent"]
    assert v["DevicePolicy"] == ["closed"]
    # The doctor judges device access with the same groups the unit gives the service.
    assert tuple(v["SupplementaryGroups"][0].split()) == SERVICE_GROUPS


def test_the_open_file_limit_leaves_room_for_the_connection_limit() -> None:
    # web.max_connections (docs/operations.md, "Limits of the local API") stays FD_RESERVE
    # below LimitNOFILE, so connections never use up the agent's file descriptors.
    v = unit_values()
    assert int(v["LimitNOFILE"][0]) >= WebConfig().max_connections + FD_RESERVE
    example = yaml.safe_load((REPO / "config" / "example.yaml").read_text(encoding="utf-8"))
    assert int(v["LimitNOFILE"][0]) >= example["web"]["max_connections"] + FD_RESERVE


def test_udev_rules_name_every_device_of_the_example_config() -> None:
    rules = [
        line
        for line in RULES.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    links: set[str] = set()
    for rule in rules:
        pairs = re.findall(r'([A-Z]+(?:\{[^}]+\})?)\s*(==|!=|\+=|=)\s*"([^"]*)"', rule)
        assert pairs, rule
        leftover = re.sub(r'[A-Z]+(?:\{[^}]+\})?\s*(==|!=|\+=|=)\s*"[^"]*"\s*,?\s*', "", rule)
        assert leftover.strip() == "", f"unparsed part {leftover!r} in {rule}"
        keys = {key: (op, value) for key, op, value in pairs}
        assert keys["GROUP"][0] == "=", rule
        assert keys["GROUP"][1] in SERVICE_GROUPS, rule
        assert keys["MODE"] == ("=", "0660"), rule
        if "SYMLINK" in keys:
            op, value = keys["SYMLINK"]
            assert op == "+=", rule
            assert value.startswith("hall/"), rule
            links.add("/dev/" + value)
            assert any(k.startswith(("ATTR{idVendor}", "ATTRS{idVendor}")) for k in keys), rule
            assert any(k.startswith(("ATTR{idProduct}", "ATTRS{idProduct}")) for k in keys), rule
    example = yaml.safe_load((REPO / "config" / "example.yaml").read_text(encoding="utf-8"))
    used = {
        str(value)
        for device in example["devices"]
        for value in device.get("transport", {}).values()
        if str(value).startswith("/dev/hall/")
    }
    assert used, "the example config uses /dev/hall/ names"
    assert used <= links, f"no udev rule makes {sorted(used - links)}"


# -- sd_notify --------------------------------------------------------------------------


class NotifySocket:
    """What systemd's notify socket would receive."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(path)
        self.address = path
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode("utf-8")
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key} within {timeout} s; got {self.messages}")
            fields = self.receive(left)
            if key in fields:
                return fields

    def close(self) -> None:
        self.sock.close()


def drain_until_silent(sock: NotifySocket, key: str, quiet_s: float) -> None:
    """Read messages until none with ``key`` came for ``quiet_s`` seconds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            sock.wait_for(key, quiet_s)
        except TimeoutError:
            return
    raise AssertionError(f"{key} never stopped")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    # A short path: unix socket addresses are limited to 108 bytes.
    path = f"/tmp/hall-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(path)
    yield sock
    sock.close()
    Path(path).unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_a_real_agent_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    storage = tmp_path / "state"
    config = write_config(tmp_path / "hall.yaml", hall_config(storage))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HALL_", "WATCHDOG_"))}
    env |= {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = notify_socket.wait_for("READY", timeout=30)
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(proc.pid)
        assert "serving hall test-hall" in ready["STATUS"]
        # The API is up when READY is sent.
        url = (storage / "api-url").read_text(encoding="utf-8").strip()
        assert url in ready["STATUS"]
        # Before READY, the status said the API answers while the rest starts.
        before = [f["STATUS"] for _, f in notify_socket.messages[:-1] if "STATUS" in f]
        assert before == [
            "starting: opening the state database",
            f"starting: the local API answers at {url}; starting the devices",
        ]
        # WatchdogSec=2 s: a ping at least every 0.5 s, so 4 within 3 s.
        pings = [notify_socket.wait_for("WATCHDOG", timeout=3) for _ in range(4)]
        assert all(p["WATCHDOG"] == "1" for p in pings)
        times = [t for t, f in notify_socket.messages if "WATCHDOG" in f]
        # Pinged every 0.5 s, so a loaded machine's late ping still comes well before
        # systemd's 2 s would run out: no gap may reach WatchdogSec.
        longest = max(b - a for a, b in itertools.pairwise(times))
        assert longest < 2.0, f"{longest:.2f} s without a ping: systemd would have killed it"
        proc.send_signal(signal.SIGTERM)
        stopping = notify_socket.wait_for("STOPPING", timeout=10)
        assert stopping["STOPPING"] == "1"
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    assert "stopped; state saved" in (tmp_path / "agent.log").read_text(encoding="utf-8")


def test_abstract_socket_addresses_and_no_socket_at_all(tmp_path: Path) -> None:
    name = f"@hall-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = NotifySocket(name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": name})
        assert notifier.ready("up")
        assert receiver.receive(5)["READY"] == "1"
        notifier.close()
    finally:
        receiver.close()
    outside = Notifier({})
    assert not outside.enabled
    assert outside.ready("up") is False  # a no-op outside systemd
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_s == 30.0


@pytest.mark.timeout(60)
async def test_a_stuck_writer_stops_the_watchdog_pings_until_it_answers(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    release = threading.Event()
    blocked = threading.Event()

    def stuck(store: object, now: object, ok: object) -> Written[None]:
        blocked.set()
        release.wait(30)  # a disk that stopped answering
        return Written([], None)

    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1200000"})
    async with running_agent(config) as agent:
        assert agent.health is not None
        async with supervised(notifier, agent.health.writer_silent_for, "test"):
            await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG", 5)
            writing = asyncio.create_task(agent.hall.write(stuck))
            await asyncio.to_thread(blocked.wait, 10)
            # The next probe waits behind the stuck write; after 0.6 s (half the period)
            # the pings stop. Drain what was sent until then, then expect silence.
            await asyncio.to_thread(drain_until_silent, notify_socket, "WATCHDOG", 6.5)
            silent = agent.health.writer_silent_for()
            assert silent is not None
            assert silent > 0.6
            release.set()
            await writing
            await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG", 10)
    notifier.close()
