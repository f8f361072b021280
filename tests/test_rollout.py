"""``hallctl rollout`` against halls played over a real mosquitto: batches go out one
after the other, and the first failure stops the rollout before the next batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from broker import Broker

from hallctl.broker import UsageError
from hallctl.cli import run as hallctl
from hallctl.rollout import batches

HALLS = [f"h{n:02d}" for n in range(1, 11)]


def test_batches_start_with_a_canary_then_the_share() -> None:
    assert batches(HALLS, "3") == [["h01"], HALLS[1:4], HALLS[4:7], HALLS[7:10]]
    assert batches(HALLS, "10%", canary=0) == [[h] for h in HALLS]
    assert batches(HALLS, "50%", canary=2) == [HALLS[:2], HALLS[2:7], HALLS[7:]]
    with pytest.raises(UsageError, match="a share"):
        batches(HALLS, "0%")
    with pytest.raises(UsageError, match="a share"):
        batches(HALLS, "five")


@contextlib.asynccontextmanager
async def played_halls(
    broker: Broker, outcomes: dict[str, str], received: list[str]
) -> AsyncIterator[None]:
    """One MQTT client answering for every hall: each ``update_agent`` gets an ``ok``
    reply, then the hall's outcome event (``outcomes``, default ``update.activated``)."""
    seq: dict[str, int] = {}

    async def serve(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            hall = message.topic.value.split("/")[2]
            command = json.loads(message.payload)
            received.append(hall)
            reply = {"cmd_id": command["cmd_id"], "name": "update_agent", "status": "ok"}
            await client.publish(f"hall/v1/{hall}/reply", json.dumps(reply), qos=1)
            kind = outcomes.get(hall, "update.activated")
            seq[hall] = seq.get(hall, 0) + 1
            data = {"version": command["version"]}
            if kind == "update.rolled_back":
                data.update(to="0.1.0", cause="the new version fails to start: ImportError")
            envelope = {
                "v": 1, "hall": hall, "epoch": 1, "seq": seq[hall], "id": f"{hall}-{seq[hall]}",
                "type": kind, "at": "2026-12-05T10:00:00+08:00", "clock_ok": True, "data": data,
            }  # fmt: skip
            await client.publish(f"hall/v1/{hall}/event/{kind}", json.dumps(envelope), qos=1)

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="played-halls") as client:
        await client.subscribe("hall/v1/+/cmd/update_agent", qos=1)
        task = asyncio.create_task(serve(client))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


ARGS = ["--url", "https://updates.example/hall-agent-0.2.0.tar", "--sha256", "a" * 64]


@pytest.mark.timeout(60)
async def test_a_rollout_stops_at_the_first_failing_batch(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[str] = []
    async with played_halls(broker, {"h03": "update.rolled_back"}, received):
        code = await hallctl(
            ["--broker", broker.url, "rollout", "0.2.0", "--halls", ",".join(HALLS),
             *ARGS, "--size", "1000", "--batch", "3", "--batch-timeout", "20"]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    assert sorted(received) == ["h01", "h02", "h03", "h04"], received
    assert "FAIL h03: update.rolled_back: the new version fails to start" in out
    assert "3 updated, 1 failed, 6 not sent" in out
    assert "the halls not sent: h05,h06,h07,h08,h09,h10" in out


@pytest.mark.timeout(60)
async def test_a_rollout_reaches_every_hall_when_all_succeed(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[str] = []
    async with played_halls(broker, {}, received):
        code = await hallctl(
            ["--broker", broker.url, "rollout", "0.2.0", "--halls", "h01,h02", "--halls", "h03",
             *ARGS, "--size", "1000", "--batch", "50%", "--batch-timeout", "20"]
        )  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert sorted(received) == ["h01", "h02", "h03"]


@pytest.mark.timeout(60)
async def test_a_silent_hall_is_a_failure(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await hallctl(
        ["--broker", broker.url, "rollout", "0.2.0", "--halls", "nobody", *ARGS,
         "--size", "1000", "--batch-timeout", "1"]
    )  # fmt: skip
    assert code == 1
    assert "FAIL nobody: no outcome within 1 s" in capsys.readouterr().out
