"""The hall-agent command line against a real running agent, and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AgentProcess, hall_config, write_config

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    tmp = tmp_path_factory.mktemp("cli")
    storage = tmp / "state"
    config = write_config(tmp / "hall.yaml", hall_config(storage))
    agent = AgentProcess(config, storage, tmp / "agent.log")
    agent.start()
    yield agent, config
    agent.terminate()


def test_take_window_and_status(running: tuple[AgentProcess, Path]) -> None:
    agent, config = running
    out = cli("take", "--service", "social", "--api", agent.url).stdout
    assert out.startswith("A001  waiting")
    assert "0 ahead" in out
    out = cli("take", "--service", "social", "--config", str(config)).stdout
    assert out.startswith("A002")
    assert cli("window", "w1", "sign-in", "1001", "--api", agent.url).stdout.strip() == (
        "window w1: open, staff 1001"
    )
    out = cli("window", "w1", "next", "--api", agent.url).stdout
    assert out.startswith("A001  called  window w1")
    out = cli("window", "w1", "transfer", "civil", "--back", "--api", agent.url).stdout
    assert out.startswith("A001  waiting")
    out = cli("window", "w2", "call", "A001", "--api", agent.url).stdout
    assert "called" in out
    status = json.loads(cli("status", "--json", "--api", agent.url).stdout)
    assert status["hall"]["id"] == "test-hall"
    assert status["windows"][1]["ticket"]["number"] == "A001"
    text = cli("status", "--api", agent.url).stdout
    assert "测试社区服务站" in text
    assert "w2" in text


def test_refusals_are_readable(running: tuple[AgentProcess, Path]) -> None:
    agent, _ = running
    result = cli("window", "w3", "recall", "--api", agent.url, check=False)
    assert result.returncode == 1
    assert "no called ticket" in result.stderr
    result = cli("take", "--service", "nope", "--api", agent.url, check=False)
    assert "there is no service 'nope'" in result.stderr
    result = cli("window", "w1", "transfer", "--api", agent.url, check=False)
    assert "needs a service id" in result.stderr


def test_no_agent_running_says_so() -> None:
    result = cli("status", "--api", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    assert "no agent answers at http://127.0.0.1:9" in result.stderr


def test_check_config_ok_and_broken(tmp_path: Path) -> None:
    good = cli("check-config", str(REPO / "config" / "example.yaml"))
    assert good.stdout.strip() == "ok"
    broken = hall_config(tmp_path)
    broken["windows"][0]["services"] = ["social", "passport"]
    path = write_config(tmp_path / "broken.yaml", broken)
    result = cli("check-config", str(path), check=False)
    assert result.returncode == 2
    assert "windows[0](w1).services[1]" in result.stderr


def test_run_with_a_broken_config_exits_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = cli("run", "--config", str(path), check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr


def test_demo_runs_and_stops_by_itself(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "demo",
            "--duration",
            "4",
            "--port",
            "0",
            "--state",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "/api/v1/queue" in result.stdout
    assert (tmp_path / "demo" / "hall.db").exists()
