"""/healthz and /metrics of a running hall: what the ops person and Prometheus see."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import as_ops, hall_config

from agent.central.state import LinkState
from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.events import Event
from agent.daemon import running_agent
from agent.runtime.store import Written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_with(tmp_path: Path, **sections: Any) -> HallAgentConfig:
    return HallAgentConfig.model_validate(hall_config(tmp_path / "state", **sections))


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.timeout(60)
async def test_a_healthy_offline_hall_is_ready(tmp_path: Path) -> None:
    async with (
        running_agent(config_with(tmp_path)) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert body["hall"] == "test-hall"


@pytest.mark.timeout(60)
async def test_central_down_and_a_device_down_make_it_degraded_with_reasons(
    tmp_path: Path,
) -> None:
    port = free_port()  # nobody listens there
    mqtt = {"url": f"mqtt://127.0.0.1:{port}", "reconnect_max_s": 1, "reconnect_spread_s": 0.2}
    config = config_with(tmp_path, mqtt=mqtt)
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        await until(lambda: agent.link.state is LinkState.WAITING)
        body = (await client.get("/healthz")).json()
        assert body["status"] == "degraded"
        central = next(r for r in body["reasons"] if r["check"] == "central")
        assert "central link down" in central["message"]
        assert "kept in the outbox" in central["message"]
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.timeout(60)
async def test_metrics_count_tickets_outbox_devices_and_ratings(tmp_path: Path) -> None:
    async with (
        running_agent(config_with(tmp_path)) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        for service in ("social", "social", "civil"):
            response = await client.post("/api/v1/tickets", json={"service": service})
            assert response.status_code == 201
        await client.post("/api/v1/windows/w1/sign-in", json={"staff": "s-1"})
        await client.post("/api/v1/windows/w1/next")
        await client.post("/api/v1/windows/w1/no-show")
        now = dt.datetime.now(dt.UTC)
        rating = Event(
            ev.RatingSubmitted(
                ticket="B001",
                ticket_id="20260101-B001",
                day="2026-01-01",
                service="social",
                service_name="社保医保",
                window_name="1号窗口",
                window_number=1,
                level=5,
                label="非常满意",
                bad=False,
                reasons=[],
                comment="",
                channel="api",
                device=None,
                defaulted=False,
                window="w1",
                staff="s-1",
                staff_name=None,
                requested_at=None,
            ),
            now,
        )
        await agent.hall.write(lambda s, n, ok: Written.of_events(s.append([rating], clock_ok=ok)))
        health = agent.health
        assert health is not None
        await until(lambda: health.ratings.total() == 1)
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("hall_tickets_total", (("event", "issued"), ("service", "social")))] == 2
    assert got[("hall_tickets_total", (("event", "issued"), ("service", "civil")))] == 1
    assert got[("hall_tickets_total", (("event", "no_show"), ("service", "social")))] == 1
    assert got[("hall_queue_waiting", (("service", "social"),))] == 1
    assert got[("hall_tickets_issued_today", (("service", "social"),))] == 2
    assert got[("hall_ratings_total", (("label", "非常满意"), ("level", "5")))] == 1
    # Every event is still unsent (no central): the outbox holds them all.
    unpublished = got[("hall_outbox_events", (("state", "unpublished"),))]
    assert unpublished == got[("hall_events_last_seq", ())] >= 8
    assert got[("hall_outbox_oldest_unpublished_age_seconds", ())] >= 0
    assert got[("hall_outbox_evicted_total", ())] == 0
    assert got[("hall_central_reconnects_total", ())] == 0
    assert got[("hall_central_connected", ())] == 0
    assert got[("hall_clock_synchronized", ())] == 1  # clock.trust: system in tests
    assert got[("hall_health", (("status", "ready"),))] == 1
    assert got[("hall_disk_free_bytes", ())] > 0
    assert got[("hall_store_writes_failed_total", ())] == 0
    # The process's own figures (prometheus_client's process collector), memory among them.
    assert got[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert got[("process_open_fds", ())] > 0


@pytest.mark.timeout(60)
async def test_device_states_are_exported_one_series_per_status(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        devices=[
            {
                "id": "speaker",
                "kind": "announcer",
                "transport": {"type": "file", "path": str(tmp_path / "wav")},
            }
        ],
    )
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        # The announcer reports its own first state once its clip pack is loaded (later on
        # a busy machine): wait for it, so it cannot overwrite the error reported below.
        await until(lambda: agent.devices.get("speaker").detail != "no driver started", 30)
        agent.devices.report("speaker", "error", "no sound card")
        body = (await client.get("/healthz")).json()
        got = samples((await client.get("/metrics")).text)
    labels = (("device", "speaker"), ("kind", "announcer"))
    assert got[("hall_device_status", (*labels, ("status", "error")))] == 1
    assert got[("hall_device_status", (*labels, ("status", "ok")))] == 0
    assert body["status"] == "degraded"
    device = next(r for r in body["reasons"] if r["check"] == "device:speaker")
    assert device["message"] == "announcer speaker is error: no sound card"
