"""The central link of a real ``hall-agent run`` process: SIGKILL while draining, the will.

The broker is a real mosquitto (persistence on), central is ``tests/oracle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker import Broker
from oracle import Central, tally, until
from support import AgentProcess, hall_config, write_config

from agent.config import validate_config
from agent.core.errors import QueueError
from agent.core.operations import CallNext, Finish, Take
from agent.runtime.hall import Hall
from agent.runtime.store import Store

HALL = "test-hall"
SERVICES = ["social", "civil", "housing", "general"]


def mqtt_section(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "url": url,
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
        "stable_after_s": 0,
        **overrides,
    }


async def work_offline(storage: Path, events: int, rng: random.Random) -> int:
    """The hall worked without the agent's link (same store): returns the last seq."""
    config = validate_config(hall_config(storage))
    store = await asyncio.to_thread(Store.open, storage)
    try:
        async with Hall(config, store) as hall:
            while store.last_seq < events:
                window = rng.choice(["w1", "w2", "w3"])
                await hall.execute(_take(rng.choice(SERVICES)))
                await hall.execute(_take(rng.choice(SERVICES)))
                await hall.execute(_call_next(window))
                with contextlib.suppress(QueueError):  # nobody was waiting for it
                    await hall.execute(_finish(window))
            return store.last_seq
    finally:
        store.close()


def _take(service: str) -> Take:
    return Take(service=service)


def _call_next(window: str) -> CallNext:
    return CallNext(window=window)


def _finish(window: str) -> Finish:
    return Finish(window=window)


async def take_tickets(url: str, count: int, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        for i in range(count):
            r = await http.post("/api/v1/tickets", json={"service": SERVICES[i % 4]})
            assert r.status_code == 201, r.text
            if i % 3 == 2:
                r = await http.post(f"/api/v1/windows/w{i % 3 + 1}/next")
                assert r.status_code == 200, r.text


async def status(url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        r = await http.get("/api/v1/status")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.mark.timeout(150)
async def test_sigkill_while_draining_a_backlog_loses_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    rng = random.Random(11)
    storage = tmp_path / "state"
    await work_offline(storage, 2000, rng)
    # A low rate cap keeps the drain going long enough to be killed in the middle of it,
    # also on a loaded machine (2,500 events take over 6 s at this cap).
    cap, inflight = 400, 32
    mqtt = mqtt_section(broker.url, drain_rate=cap, inflight=inflight)
    config = write_config(tmp_path / "hall.yaml", hall_config(storage, mqtt=mqtt))
    agent = AgentProcess(config, storage, tmp_path / "agent.log")

    async with Central(broker.url, HALL, ["event/#"], client_id="oracle") as oracle:
        broker.stop()  # the oracle's session (subscribed) is saved with the broker's state
        try:
            url = await asyncio.to_thread(agent.start)
            await take_tickets(
                url, 300, agent.ops
            )  # the backlog grows while central is unreachable
            backlog = (await status(url, agent.ops))["last_seq"]
            assert backlog >= 2400
            assert (await status(url, agent.ops))["outbox_depth"] == backlog
            broker.start()

            for fraction in (0.25, 0.6):
                await until(
                    lambda f=fraction: len(set(oracle.event_seqs())) >= backlog * f,
                    30,
                    lambda: f"draining: {len(set(oracle.event_seqs()))} of {backlog} at central",
                )
                await asyncio.to_thread(agent.kill)
                assert len(set(oracle.event_seqs())) < backlog, "the drain was already done"
                url = await asyncio.to_thread(agent.start)
            # The cap itself is proven on a moved clock in test_pacer: arrival times at a
            # subscriber measure the broker's delivery as much as the agent's pacing.

            await take_tickets(url, 30, agent.ops)
            last = (await status(url, agent.ops))["last_seq"]
            expected = range(1, last + 1)
            await until(
                lambda: not tally(oracle.event_seqs(), expected).missing,
                60,
                lambda: f"every event at central: {tally(oracle.event_seqs(), expected)}",
            )
            report = tally(oracle.event_seqs(), expected)
            assert report.missing == [], report
            assert report.unexpected == [], report
            # After a crash the un-marked tail is sent again: duplicates, never a gap, and
            # the store was never recreated.
            assert {e["epoch"] for e in oracle.events()} == {1}
            await until(lambda: _depth_zero(url, agent.ops), 10, "the outbox marked published")
        finally:
            await asyncio.to_thread(agent.kill)


async def _depth_zero(url: str, headers: dict[str, str]) -> bool:
    return bool((await status(url, headers))["outbox_depth"] == 0)


@pytest.mark.timeout(60)
async def test_the_will_after_sigkill_and_a_new_birth_after_restart(
    tmp_path: Path, broker: Broker
) -> None:
    storage = tmp_path / "state"
    config = write_config(
        tmp_path / "hall.yaml", hall_config(storage, mqtt=mqtt_section(broker.url))
    )
    agent = AgentProcess(config, storage, tmp_path / "agent.log")

    def state() -> dict[str, Any]:
        return central.latest("state") or {}

    async with Central(broker.url, HALL, ["state"], persistent=False) as central:
        try:
            await asyncio.to_thread(agent.start)
            await until(lambda: state().get("online") is True, 10, "the birth")
            first = state()
            await asyncio.to_thread(agent.kill)
            await until(lambda: state().get("online") is False, 10, "the will")
            assert state() == {
                "online": False,
                "boot_id": first["boot_id"],
                "session": 1,
                "clean": False,
            }
            assert central.on("state")[-1].retain is False  # live delivery of the will

            async with Central(broker.url, HALL, ["state"], persistent=False) as fresh:
                await until(lambda: fresh.on("state"), 10, "the retained will")
                assert fresh.on("state")[0].retain is True
                assert fresh.latest("state") == state()

            await asyncio.to_thread(agent.start)
            await until(lambda: state().get("online") is True, 10, "the next birth")
            second = state()
            assert second["boot_id"] != first["boot_id"]
            assert second["session"] == 1
            await asyncio.to_thread(agent.terminate)
            await until(lambda: state().get("online") is False, 10, "the clean goodbye")
            assert state() == {
                "online": False,
                "boot_id": second["boot_id"],
                "session": 1,
                "clean": True,
            }
        finally:
            await asyncio.to_thread(agent.kill)
