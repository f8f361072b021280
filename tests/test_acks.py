"""Central's acks as the hall applies them: capped at the last seq it gave out, and the
ones it cannot apply counted in /metrics next to the acked seq."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker import Broker
from oracle import Central, until
from prometheus_client.parser import text_string_to_metric_families
from support import as_ops, hall_config

from agent.config import validate_config
from agent.core.events import EventClass
from agent.daemon import running_agent
from agent.runtime.store import RawEvent, Store

HALL = "test-hall"
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_an_ack_beyond_the_last_seq_does_not_ack_events_given_out_later(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state")
    try:
        chatter = [RawEvent("device.changed", NOW, {"i": i}, EventClass.CHATTER) for i in range(3)]
        store.append(chatter)
        assert store.mark_acked(store.epoch, 10) == 3
        store.append(chatter[:2])
        assert store.stats().unacked == 2, "seqs 4 and 5 were not acked by the ack of 10"
    finally:
        store.close()


def gauge(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in /metrics")


def refusals(central: Central) -> list[dict[str, Any]]:
    return [e["data"] for e in central.events() if e["type"] == "outbox.ack_refused"]


@pytest.mark.timeout(60)
async def test_acks_the_hall_cannot_apply_are_refused_with_an_event_and_counted(
    broker: Broker, tmp_path: Path
) -> None:
    config = validate_config(
        hall_config(
            tmp_path / "state",
            mqtt={"url": broker.url, "reconnect_spread_s": 0.2, "reconnect_max_s": 1.0,
                  "stable_after_s": 0, "ack_apply_s": 0.05, "metrics_interval_s": 1},
        )
    )  # fmt: skip
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
        Central(broker.url, HALL, ["event/#", "metrics"]) as central,
    ):
        await until(agent.link.connected.is_set, 10, "the link to connect")
        for _ in range(3):
            assert (
                await client.post("/api/v1/tickets", json={"service": "social"})
            ).status_code == 201
        last = agent.hall.last_seq
        epoch = agent.hall.store.epoch
        counters = agent.link.counters
        await central.publish("ack", f'{{"epoch": {epoch}, "seq": 2}}')
        await until(lambda: counters.acked_seq == 2, 10, "the good ack to apply")
        await central.publish("ack", b"{not json")
        await central.publish("ack", b'{"epoch": "x", "seq": 1}')
        await central.publish("ack", f'{{"epoch": {epoch + 1}, "seq": 1}}')
        await central.publish("ack", f'{{"epoch": {epoch}, "seq": {last + 50}}}')
        await until(lambda: len(refusals(central)) == 3, 10, "the three refusals")
        assert counters.acks_malformed == 2
        assert counters.acks_wrong_epoch == 1
        assert counters.acks_beyond_last == 1
        # The ack beyond the last seq is refused whole: nothing past seq 2 is acked by it.
        assert counters.acked_seq == 2
        assert await agent.hall.store_call(lambda s: s.stats().unacked) >= last - 2
        # One event per reason (the second malformed ack within the minute only counts),
        # each saying what the ack was and where the hall stands.
        by_reason = {r["reason"]: r for r in refusals(central)}
        assert sorted(by_reason) == ["beyond_last_seq", "malformed", "wrong_epoch"]
        assert by_reason["malformed"]["acked_seq"] == 2
        assert "epoch" not in by_reason["malformed"]
        assert by_reason["malformed"]["detail"]
        assert by_reason["wrong_epoch"]["epoch"] == epoch + 1
        assert by_reason["wrong_epoch"]["hall_epoch"] == epoch
        assert by_reason["beyond_last_seq"]["seq"] == last + 50
        assert by_reason["beyond_last_seq"]["last_seq"] >= last
        # A good ack still applies; metrics (MQTT and /metrics) carry the acked seq.
        await central.publish("ack", f'{{"epoch": {epoch}, "seq": {last}}}')
        for _ in range(200):  # saved within ack_apply_s, in the writer's next group
            if await agent.hall.store_call(lambda s: s.stats().unacked) == 0:
                break
            await asyncio.sleep(0.05)
        assert counters.acked_seq == last
        await until(
            lambda: (central.latest("metrics") or {}).get("acked_seq") == last,
            10,
            "metrics with the acked seq",
        )
        text = (await client.get("/metrics")).text
    assert gauge(text, "hall_central_acked_seq") == last
    assert gauge(text, "hall_central_acks_refused_total", reason="malformed") == 2
    for reason in ("wrong_epoch", "beyond_last_seq"):
        assert gauge(text, "hall_central_acks_refused_total", reason=reason) == 1
