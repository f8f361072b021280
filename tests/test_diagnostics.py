"""Diagnostics from central (docs/fleet.md): ``run_doctor``, ``get_logs`` and
``get_config`` over a real mosquitto, against an agent started from a config file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker
from oracle import Central, wait_event
from support import hall_config, write_config

from agent.central import contract as c
from agent.central.diagnostics import REDACTED, Diagnostics, redact
from agent.config import load_config
from agent.core.errors import Refused
from agent.daemon import running_agent
from agent.runtime.logs import RecentLog, recent_log

HALL = "test-hall"
ID_NUMBER = "110101199003071234"
PASSWORD = "s3cret-Pass-42"


@pytest.fixture
def recent() -> Iterator[RecentLog]:
    """The process's recent-lines log, installed on the root logger for the test."""
    handler = recent_log()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _config_file(tmp_path: Path, broker: Broker) -> Path:
    mqtt = {
        "url": broker.url,
        "username": "hall-user",
        "password": PASSWORD,
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
        "stable_after_s": 0,
    }
    return write_config(tmp_path / "config.yaml", hall_config(tmp_path / "state", mqtt=mqtt))


async def _ask(central: Central, name: str, cmd_id: str, **params: Any) -> dict[str, Any]:
    await central.command(name, {"cmd_id": cmd_id, **params})
    return await central.reply_to(cmd_id, 30)


@pytest.mark.timeout(90)
async def test_central_reads_doctor_logs_and_config(
    tmp_path: Path, broker: Broker, recent: RecentLog
) -> None:
    path = _config_file(tmp_path, broker)
    config = load_config(path)
    async with (
        Central(broker.url, HALL, ["reply"], client_id="central") as central,
        running_agent(config, path) as agent,
    ):
        await wait_event(agent.link.connected, 10, "the hall's link to connect")
        logging.getLogger("agent.test").warning("card %s read at window w1", ID_NUMBER)

        doctor = await _ask(central, "run_doctor", "d-1")
        assert doctor["status"] == "ok", doctor
        checks = {f["check"] for f in doctor["result"]["findings"]}
        assert {"config", "disk", "database"} <= checks, checks
        assert doctor["result"]["failures"] == sum(
            1 for f in doctor["result"]["findings"] if f["level"] == "fail"
        )

        logs = await _ask(central, "get_logs", "l-1", level="warning", lines=50)
        assert logs["status"] == "ok", logs
        messages = [line["message"] for line in logs["result"]["lines"]]
        assert any("110101********1234" in m for m in messages), messages
        assert all(ID_NUMBER not in m for m in messages)
        assert all(line["level"] in ("warning", "error") for line in logs["result"]["lines"])

        shown = await _ask(central, "get_config", "g-1")
        assert shown["status"] == "ok", shown
        applied = shown["result"]["config"]
        assert applied["hall"]["id"] == HALL
        assert applied["mqtt"]["password"] == REDACTED
        assert applied["mqtt"]["username"] == "hall-user"
        everything = json.dumps(shown, ensure_ascii=False)
        assert PASSWORD not in everything

        # A second get_logs at once is refused with when to ask again; nothing else is.
        again = await _ask(central, "get_logs", "l-2")
        assert again["status"] == "failed", again
        assert "ask again in" in again["error"]
        assert agent.link.connected.is_set()


def test_redact_hides_every_secret_key() -> None:
    config = {
        "mqtt": {"password": "x", "username": "u", "tls": {"key_password": "k"}},
        "web": {"secret": None, "nested": [{"private_key": "-----BEGIN"}]},
        "shown": "**********",
    }
    assert redact(config) == {
        "mqtt": {"password": REDACTED, "username": "u", "tls": {"key_password": REDACTED}},
        "web": {"secret": None, "nested": [{"private_key": REDACTED}]},
        "shown": REDACTED,
    }


async def test_logs_are_bounded_to_one_reply(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", hall_config(tmp_path / "s")))
    log = RecentLog(capacity=500)
    for n in range(600):
        log.handle(logging.makeLogRecord({"msg": f"line {n} " + "x" * 200, "levelno": 30}))
    assert log.dropped == 100
    diagnostics = Diagnostics(config, None, recent=log, max_bytes=20_000)
    answer = await diagnostics.get_logs(c.GetLogs(cmd_id="b-1", lines=1000))
    assert len(json.dumps(answer, ensure_ascii=False).encode()) <= 20_000
    assert answer["truncated"] > 0
    # The newest lines are the ones kept.
    assert answer["lines"][-1]["message"].startswith("line 599 ")
    assert answer["dropped_before"] == 100
    with pytest.raises(Refused, match="without a config file"):
        await diagnostics.run_doctor(c.RunDoctor(cmd_id="b-2"))
