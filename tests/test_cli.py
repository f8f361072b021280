"""The hall-agent command line against a real running agent, and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import AgentProcess, hall_config, write_config

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
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


def token(agent: AgentProcess) -> tuple[str, str]:
    """The CLI's ops token file, as an option (the config would name it too)."""
    return ("--token-file", str(agent.storage / "ops-token"))


def test_take_window_and_status(running: tuple[AgentProcess, Path]) -> None:
    agent, config = running
    out = cli("take", "--service", "social", "--api", agent.url, *token(agent)).stdout
    assert out.startswith("A001  waiting")
    assert "0 ahead" in out
    out = cli("take", "--service", "social", "--config", str(config)).stdout
    assert out.startswith("A002")
    assert cli(
        "window", "w1", "sign-in", "1001", "--api", agent.url, *token(agent)
    ).stdout.strip() == ("window w1: open, staff 1001")
    out = cli("window", "w1", "next", "--api", agent.url, *token(agent)).stdout
    assert out.startswith("A001  called  window w1")
    out = cli(
        "window", "w1", "transfer", "civil", "--back", "--api", agent.url, *token(agent)
    ).stdout
    assert out.startswith("A001  waiting")
    out = cli("window", "w2", "call", "A001", "--api", agent.url, *token(agent)).stdout
    assert "called" in out
    status = json.loads(cli("status", "--json", "--api", agent.url, *token(agent)).stdout)
    assert status["hall"]["id"] == "test-hall"
    assert status["windows"][1]["ticket"]["number"] == "A001"
    text = cli("status", "--api", agent.url, *token(agent)).stdout
    assert "测试社区服务站" in text
    assert "w2" in text


def test_refusals_are_readable(running: tuple[AgentProcess, Path]) -> None:
    agent, _ = running
    result = cli("window", "w3", "recall", "--api", agent.url, *token(agent), check=False)
    assert result.returncode == 1
    assert "no called ticket" in result.stderr
    result = cli("take", "--service", "nope", "--api", agent.url, *token(agent), check=False)
    assert "there is no service 'nope'" in result.stderr
    result = cli("window", "w1", "transfer", "--api", agent.url, *token(agent), check=False)
    assert "needs a service id" in result.stderr


def test_credentials_through_the_ops_token_file(running: tuple[AgentProcess, Path]) -> None:
    agent, config = running
    token_file = agent.storage / "ops-token"
    assert token_file.stat().st_mode & 0o777 == 0o640
    api = ("--api", agent.url)
    # Without the token file the API refuses, and the CLI says where the token is.
    refused = cli("status", *api, "--token-file", str(agent.storage / "none"), check=False)
    assert refused.returncode == 1
    assert "send a credential" in refused.stderr
    assert "--token-file" in refused.stderr

    enrolled = cli("enroll", "kiosk-9", "--role", "kiosk", "--config", str(config))
    lines = enrolled.stdout.splitlines()
    assert lines[0] == "enrolled kiosk-9 as kiosk; its token, shown only now:"
    kiosk = lines[1]
    assert lines[2] == f"its page: {agent.url}/pages/kiosk?token={kiosk}"
    headers = {"Authorization": f"Bearer {kiosk}"}
    body = {"service": "social"}
    taken = httpx.post(f"{agent.url}/api/v1/tickets", json=body, headers=headers)
    assert taken.status_code == 201
    out = cli("revoke", "kiosk-9", *api, *token(agent)).stdout
    assert out.strip() == "revoked kiosk-9: its token is refused from now on"
    assert httpx.post(f"{agent.url}/api/v1/tickets", json=body, headers=headers).status_code == 401
    again = cli("revoke", "kiosk-9", *api, *token(agent), check=False)
    assert "no device 'kiosk-9' is enrolled" in again.stderr

    caller = cli("enroll", "caller-9", "--role", "caller", *api, *token(agent), check=False)
    assert "give --window" in caller.stderr
    as_json = cli(
        "enroll", "caller-9", "--role", "caller", "--window", "w1", "--json", *api, *token(agent)
    )
    assert json.loads(as_json.stdout)["window"] == "w1"

    # A password is read from stdin (never an argument).
    added = cli(
        "user",
        "add",
        "1009",
        "--role",
        "staff",
        "--window",
        "w1",
        *api,
        *token(agent),
        stdin="a long password\n",
    )
    assert added.stdout.strip() == "user 1009 can log in as staff at w1"
    login = {"name": "1009", "password": "a long password"}
    assert httpx.post(f"{agent.url}/api/v1/auth/login", json=login).status_code == 200
    removed = cli("user", "remove", "1009", *api, *token(agent))
    assert removed.stdout.strip() == "removed user 1009; their sessions ended"
    assert httpx.post(f"{agent.url}/api/v1/auth/login", json=login).status_code == 401
    empty = cli("user", "add", "g-9", "--role", "guide", *api, *token(agent), check=False)
    assert "no password on stdin" in empty.stderr
    assert "a long password" not in agent.log_path.read_text(encoding="utf-8")
    assert kiosk not in agent.log_path.read_text(encoding="utf-8")


# What a client verb must not load: it talks to the running agent with the standard library.
HEAVY = ("pydantic", "fastapi", "starlette", "uvicorn", "httpx", "agent.config", "agent.daemon")


def loaded_modules(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI with ``-X importtime``: its result and every module it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return result, modules


@pytest.mark.parametrize(
    "verb",
    [
        ("status",),
        ("take", "--service", "general"),
        ("window", "w3", "sign-in", "1003"),
        ("window", "w3", "next"),
        ("reprint", "D001"),
    ],
)
def test_client_verbs_load_neither_pydantic_nor_fastapi(
    running: tuple[AgentProcess, Path], verb: tuple[str, ...]
) -> None:
    """Found through --config, as on a Pi: the config is read without the models."""
    _, config = running
    result, modules = loaded_modules(*verb, "--config", str(config))
    assert "agent.client" in modules  # the check does see the CLI's own imports
    if verb[0] == "reprint":  # the test hall has no printer: refused, by the agent
        assert "no ticket printer" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert not heavy, f"hall-agent {' '.join(verb)} imported {heavy}"


def test_a_config_the_light_read_cannot_use_gets_the_full_loaders_error(
    running: tuple[AgentProcess, Path], tmp_path: Path
) -> None:
    _, config = running
    missing = tmp_path / "missing.yaml"
    result = cli("status", "--config", str(missing), check=False)
    assert result.returncode == 1
    assert f"the config {missing} has problems" in result.stderr
    assert "file not found" in result.stderr
    # A key written twice: the light read steps aside, the full load names the line.
    text = config.read_text(encoding="utf-8")
    twice = write_text(tmp_path / "twice.yaml", text + "web:\n  port: 1\n")
    result = cli("status", "--config", str(twice), check=False)
    assert result.returncode == 1
    assert "found the key 'web' twice" in result.stderr
    # A quoted port is unusual but valid: the full load reads it, the verb works.
    quoted = text.replace("port: 0", "port: '0'")
    assert quoted != text
    out = cli("status", "--config", str(write_text(tmp_path / "quoted.yaml", quoted))).stdout
    assert "测试社区服务站" in out


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


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
    # The demo's log goes to a file: a demo that does not stop is shown by where it stopped.
    log_path = tmp_path / "demo.log"
    with log_path.open("w", encoding="utf-8") as log:
        try:
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
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            lines = log_path.read_text(encoding="utf-8").splitlines()
            pytest.fail(
                "the demo did not stop within 60 s; its log ends:\n" + "\n".join(lines[-40:])
            )
    assert result.returncode == 0, log_path.read_text(encoding="utf-8")[-4000:]
    assert "/api/v1/queue" in result.stdout
    assert "/pages/guide-desk" in result.stdout
    # The manager's page, its login and the simulated month behind it.
    assert "/pages/manager  (log in as manager-demo, password " in result.stdout
    assert "30 simulated days from" in result.stdout
    assert (tmp_path / "demo" / "hall.db").exists()
