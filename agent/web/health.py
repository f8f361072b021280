"""The hall's health for its ops person: ``/healthz``, Prometheus ``/metrics``, and the
liveness the systemd watchdog pings on.

``/healthz`` reads only what is already in memory (no store, no writer round trip), so it
answers even when the store does not, and costs what the HTTP stack costs:

- ``ready``: the hall works as configured;
- ``degraded``: it serves citizens, but something needs the ops person (clock not
  synchronised, central unreachable, a device down, the disk low, events evicted);
- ``failing``: operations are refused (the store takes no writes, the writer is stuck).

HTTP 200 for ready and degraded, 503 for failing, with the reasons in the body.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import agent
from agent.central.state import LinkCounters, LinkState
from agent.core import events as ev
from agent.core.engine import QueueEngine
from agent.runtime.clock import ClockState, SystemClock, timedated
from agent.runtime.devices import DeviceBoard
from agent.runtime.diskspace import SpaceGuard
from agent.runtime.hall import Hall
from agent.runtime.store import DatabaseSpace, OutboxStats, Store, StoredEvent
from agent.runtime.tasks import BackgroundTasks
from agent.web.starting import StartUp

if TYPE_CHECKING:
    # prometheus_client is imported at the first scrape of /metrics, not at start.
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

Status = Literal["ready", "degraded", "failing"]

# The writer is asked to answer this often; it is "stuck" after this long without answer.
PROBE_EVERY_S = 5.0
# Health changes are logged only after this long: devices report as their drivers start.
STARTUP_GRACE_S = 10.0
WRITER_STUCK_S = 15.0
# An eviction keeps the hall degraded this long (central misses those events).
EVICTION_NOTICE_S = 3600.0
# /metrics waits this long for the store before answering without its figures.
STORE_WAIT_S = 2.0
# While the clock is not trusted, systemd-timedated is asked this often.
ASK_TIMEDATED_EVERY_S = 30.0

_DEVICE_STATES = ("ok", "degraded", "offline", "error")


class Reason(BaseModel):
    check: str
    status: Status
    message: str


class HealthReport(BaseModel):
    status: Status
    reasons: list[Reason]
    hall: str
    agent_version: str
    checked_at: str


class HallHealth:
    """Collects what the hall's health and metrics need; an async context manager that
    runs the writer probe and counts committed events while open."""

    def __init__(
        self,
        hall: Hall,
        start: StartUp,
        devices: DeviceBoard,
        disk: SpaceGuard,
        clock: SystemClock | None = None,
    ) -> None:
        self.hall = hall
        self.start = start  # the central link, once the start's second step has it
        self.devices = devices
        self.disk = disk
        self.clock = clock
        self.started = time.monotonic()
        self.tickets: collections.Counter[tuple[str, str]] = collections.Counter()
        self.ratings: collections.Counter[tuple[str, str]] = collections.Counter()
        self.evicted_since_start = 0
        self._last_eviction: float | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks = BackgroundTasks()
        self._status: Status | None = None
        self._probe_since: float | None = None  # a question to the writer not yet answered

    async def __aenter__(self) -> HallHealth:
        self.disk.look()
        tasks = self._tasks = await self._stack.enter_async_context(BackgroundTasks())
        tasks.create_task(self._probe_writer(), name="health-probe")
        tasks.create_task(self._count_events(), name="health-events")
        if self.clock is not None:
            tasks.create_task(self._ask_timedated(self.clock), name="clock")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._tasks.cancel()
        await self._stack.aclose()

    # -- background ---------------------------------------------------------------------

    async def _probe_writer(self) -> None:
        """Ask the writer a question now and then: one it leaves unanswered means stuck."""
        while True:
            self._probe_since = time.monotonic()
            with contextlib.suppress(Exception):  # a refusal or shutdown is still an answer
                await self.hall.ping()
            self._probe_since = None
            self._log_transition()
            await asyncio.sleep(PROBE_EVERY_S)

    @staticmethod
    async def _ask_timedated(clock: SystemClock) -> None:
        while True:
            if clock.wants_evidence:
                clock.note(await timedated())
            await asyncio.sleep(ASK_TIMEDATED_EVERY_S)

    async def _count_events(self) -> None:
        async with self.hall.events() as committed:
            while True:
                self.count(await committed.get())

    def count(self, event: StoredEvent) -> None:
        match event.payload:
            case ev.TicketEvent(service=service) | ev.TicketPrint(service=service):
                self.tickets[(service, event.type.removeprefix("ticket."))] += 1
            case ev.RatingSubmitted(level=level, label=label):
                self.ratings[(str(level), label)] += 1
            case ev.OutboxEvicted(count=count):
                self.evicted_since_start += count
                self._last_eviction = time.monotonic()

    def _log_transition(self) -> None:
        if time.monotonic() - self.started < STARTUP_GRACE_S:
            return  # drivers are still coming up: judge the hall once they had a chance
        report = self.report()
        if report.status == self._status:
            return
        if self._status is not None or report.status != "ready":
            summary = (
                "; ".join(f"{r.check}: {r.message}" for r in report.reasons) or "all checks ok"
            )
            level = logging.INFO if report.status == "ready" else logging.WARNING
            log.log(level, "health is now %s: %s", report.status, summary)
        self._status = report.status

    # -- liveness -------------------------------------------------------------------------

    def writer_silent_for(self) -> float | None:
        """How long the writer has left a question unanswered (None: none is waiting)."""
        since = self._probe_since
        return None if since is None else time.monotonic() - since

    def clock_state(self) -> ClockState:
        now = dt.datetime.now(dt.UTC)
        if self.clock is not None:
            return self.clock.state(now)
        ok = self.hall.clock_ok()
        return ClockState(ok, "the clock is trusted" if ok else "the clock is not trusted")

    # -- /healthz -------------------------------------------------------------------------

    def report(self) -> HealthReport:
        reasons = list(self._reasons())
        status: Status = "ready"
        if any(r.status == "failing" for r in reasons):
            status = "failing"
        elif reasons:
            status = "degraded"
        return HealthReport(
            status=status,
            reasons=reasons,
            hall=self.hall.config.hall.id,
            agent_version=agent.__version__,
            checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def _reasons(self) -> Iterator[Reason]:
        if not self.start.complete:
            yield Reason(
                check="start",
                status="degraded",
                message="starting: the local API answers; the devices, the central link and "
                "the pages are still coming up",
            )
        writes = self.hall.writes
        if writes.failing_since is not None:
            seconds = time.monotonic() - writes.failing_since
            hint = (
                "free space on the state disk (see docs/operations.md, 'disk full')"
                if writes.last_was_disk_full
                else "see the log and run `hall-agent doctor`"
            )
            yield Reason(
                check="store",
                status="failing",
                message=f"the state database has refused writes for {seconds:.0f} s "
                f"({writes.last_error}); tickets cannot be issued; {hint}",
            )
        silent = self.writer_silent_for()
        if silent is not None and silent > WRITER_STUCK_S:
            yield Reason(
                check="writer",
                status="failing",
                message=f"the queue writer has not answered for {silent:.0f} s",
            )
        disk = self.disk.look()  # measured when asked (statvfs is cheap)
        if disk.low:
            yield Reason(
                check="disk",
                status="degraded",
                message=f"{disk.free_bytes // 2**20} MiB free on {self.disk.path}, below the "
                f"reserve of {disk.reserve_bytes // 2**20} MiB: the outbox evicts by policy; "
                "free space on the disk",
            )
        clock = self.clock_state()
        if not clock.ok:
            yield Reason(
                check="clock",
                status="degraded",
                message=f"{clock.detail}; events carry clock_ok=false and the business day "
                "holds until the clock is synchronised",
            )
        link = self.start.link  # None while starting: the "start" reason says so
        if link is not None and (
            link.state is LinkState.MISCONFIGURED
            or (
                link.state in (LinkState.WAITING, LinkState.CONNECTING) and link.counters.last_error
            )
        ):
            yield Reason(
                check="central",
                status="degraded",
                message=f"central link down: {link.counters.last_error}; events are kept in "
                "the outbox until it is back",
            )
        for device in self.devices.all():
            if device.status != "ok":
                yield Reason(
                    check=f"device:{device.device_id}",
                    status="degraded",
                    message=f"{device.kind} {device.device_id} is {device.status}: {device.detail}",
                )
        if self._last_eviction is not None and (
            time.monotonic() - self._last_eviction < EVICTION_NOTICE_S
        ):
            yield Reason(
                check="outbox",
                status="degraded",
                message=f"{self.evicted_since_start} events were evicted before central "
                "acknowledged them (disk or outbox limits); central will miss them",
            )

    # -- /metrics -------------------------------------------------------------------------

    async def metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

        figures = await self._store_figures()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(list(self._families(figures))))
        # process_resident_memory_bytes, CPU seconds, open fds: memory should stay flat.
        ProcessCollector(registry=registry)
        return generate_latest(registry)

    async def _store_figures(self) -> _StoreFigures | None:
        def read(store: Store) -> tuple[OutboxStats, DatabaseSpace]:
            return store.stats(), store.space()

        def queue(engine: QueueEngine, now: dt.datetime) -> dict[str, tuple[int, int]]:
            return {
                s.id: (len(engine.waiting(s.id)), engine.hall.counters.get(s.id, 0))
                for s in engine.config.services
            }

        try:
            async with asyncio.timeout(STORE_WAIT_S):
                stats, space = await self.hall.store_read(read)
            last_seq = self.hall.last_seq
            async with asyncio.timeout(STORE_WAIT_S):
                services = await self.hall.read(queue)
        except Exception as err:  # noqa: BLE001 - metrics answer without the store's figures
            log.debug("metrics without the store's figures: %s", err)
            return None
        return _StoreFigures(stats, space, last_seq, services)

    def _families(self, figures: _StoreFigures | None) -> Iterator[Metric]:
        yield from self._agent_families()
        yield from self._hall_families()
        if figures is not None:
            yield from _store_families(figures)

    def _agent_families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hall = self.hall
        report = self.report()
        info = GaugeMetricFamily(
            "hall_agent_info", "The agent's version and hall", labels=["hall", "version", "epoch"]
        )
        info.add_metric([hall.config.hall.id, agent.__version__, str(hall.store.epoch)], 1)
        yield info
        health = GaugeMetricFamily(
            "hall_health", "1 for the hall's current health status", labels=["status"]
        )
        for status in ("ready", "degraded", "failing"):
            health.add_metric([status], int(report.status == status))
        yield health
        yield GaugeMetricFamily(
            "hall_clock_synchronized",
            "1 when the wall clock is trusted (events carry clock_ok=true)",
            value=int(self.clock_state().ok),
        )
        cert_file = hall.config.mqtt.tls.cert_file
        left = None
        if cert_file is not None:
            from agent.runtime.certs import certificate_days_left

            left = certificate_days_left(cert_file)
        if left is not None:
            yield GaugeMetricFamily(
                "hall_client_cert_days_left",
                "Days until the hall's MQTT client certificate expires (renewed from "
                "mqtt.tls.renew_before_days before; negative: expired)",
                value=round(left, 3),
            )
        yield GaugeMetricFamily(
            "hall_uptime_seconds",
            "Seconds since the agent started",
            time.monotonic() - self.started,
        )

        writes = hall.writes
        yield CounterMetricFamily(
            "hall_store_writes_failed", "Writes the state database refused", writes.failed_total
        )
        yield CounterMetricFamily(
            "hall_store_disk_full",
            "Writes refused because the disk was full",
            writes.disk_full_total,
        )
        yield CounterMetricFamily(
            "hall_store_commits",
            "Transactions the writer committed (each one fsync; group commit puts every "
            "waiting job in one)",
            writes.commits_total,
        )
        yield CounterMetricFamily(
            "hall_store_committed_jobs", "Jobs those transactions carried", writes.jobs_total
        )
        yield GaugeMetricFamily(
            "hall_store_largest_group", "The most jobs one commit carried", writes.largest_group
        )
        silent = self.writer_silent_for()
        yield GaugeMetricFamily(
            "hall_writer_silent_seconds",
            "Seconds since the queue writer last answered",
            0.0 if silent is None else silent,
        )

        disk = self.disk.look()  # measured when asked
        if disk.total_bytes > 0:
            yield GaugeMetricFamily(
                "hall_disk_free_bytes", "Free bytes on the state disk", disk.free_bytes
            )
            yield GaugeMetricFamily(
                "hall_disk_total_bytes", "Size of the state disk", disk.total_bytes
            )
            yield GaugeMetricFamily(
                "hall_disk_reserve_bytes", "storage.reserve_bytes", disk.reserve_bytes
            )
            yield GaugeMetricFamily(
                "hall_disk_reserve_file_bytes",
                "Bytes held in the space reserve file (0: released)",
                disk.reserve_file_bytes,
            )

    def _hall_families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        link = self.start.link  # None while starting: nothing connected or counted yet
        counters = LinkCounters() if link is None else link.counters
        yield GaugeMetricFamily(
            "hall_central_connected",
            "1 while connected to central's broker",
            int(link is not None and link.state is LinkState.CONNECTED),
        )
        yield CounterMetricFamily(
            "hall_central_reconnects", "Reconnections to central", counters.reconnects
        )
        yield CounterMetricFamily(
            "hall_central_published", "Events central's broker confirmed", counters.published
        )
        yield GaugeMetricFamily(
            "hall_central_acked_seq",
            "Highest seq of this epoch central acknowledged (as applied)",
            counters.acked_seq,
        )
        refused = CounterMetricFamily(
            "hall_central_acks_refused",
            "Acks from central the hall could not apply as sent, by reason",
            labels=["reason"],
        )
        refused.add_metric(["malformed"], counters.acks_malformed)
        refused.add_metric(["wrong_epoch"], counters.acks_wrong_epoch)
        refused.add_metric(["beyond_last_seq"], counters.acks_beyond_last)
        yield refused

        devices = GaugeMetricFamily(
            "hall_device_status",
            "1 for each device's current status",
            labels=["device", "kind", "status"],
        )
        for device in self.devices.all():
            for status in _DEVICE_STATES:
                devices.add_metric(
                    [device.device_id, device.kind, status], int(device.status == status)
                )
        yield devices

        tickets = CounterMetricFamily(
            "hall_tickets",
            "Ticket events since the agent started, by service and kind "
            "(issued, called, finished, no_show, expired, ...)",
            labels=["service", "event"],
        )
        for (service, kind), n in sorted(self.tickets.items()):
            tickets.add_metric([service, kind], n)
        yield tickets
        ratings = CounterMetricFamily(
            "hall_ratings",
            "Ratings submitted since the agent started, by level (5 非常满意 ... 1 非常不满意)",
            labels=["level", "label"],
        )
        for (level, label), n in sorted(self.ratings.items()):
            ratings.add_metric([level, label], n)
        yield ratings


def _store_families(figures: _StoreFigures) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    stats = figures.stats
    outbox = GaugeMetricFamily(
        "hall_outbox_events",
        "Events in the outbox: not yet confirmed by the broker, not yet acknowledged by "
        "central, stored",
        labels=["state"],
    )
    outbox.add_metric(["unpublished"], stats.unpublished)
    outbox.add_metric(["unacked"], stats.unacked)
    outbox.add_metric(["stored"], stats.total)
    yield outbox
    yield GaugeMetricFamily("hall_outbox_bytes", "Size of the outbox's events", stats.bytes)
    yield GaugeMetricFamily(
        "hall_outbox_oldest_unpublished_age_seconds",
        "Age of the oldest event not yet confirmed by the broker (0: none)",
        _age_seconds(stats.oldest_unpublished_at),
    )
    yield CounterMetricFamily(
        "hall_outbox_evicted",
        "Events evicted before central acknowledged them (kept across restarts)",
        stats.evicted_total,
    )
    yield GaugeMetricFamily("hall_events_last_seq", "The last event's seq", figures.last_seq)
    yield GaugeMetricFamily(
        "hall_database_bytes", "Size of the state database file", figures.space.file_bytes
    )
    yield GaugeMetricFamily(
        "hall_database_free_bytes",
        "Free pages inside the state database (room for rows without growing)",
        figures.space.free_bytes,
    )
    waiting = GaugeMetricFamily(
        "hall_queue_waiting", "Tickets waiting now, by service", labels=["service"]
    )
    issued = GaugeMetricFamily(
        "hall_tickets_issued_today",
        "Ticket numbers used in the current business day, by service",
        labels=["service"],
    )
    for service, (n_waiting, n_issued) in figures.services.items():
        waiting.add_metric([service], n_waiting)
        issued.add_metric([service], n_issued)
    yield waiting
    yield issued


@dataclasses.dataclass(frozen=True, slots=True)
class _StoreFigures:
    stats: OutboxStats
    space: DatabaseSpace
    last_seq: int
    services: dict[str, tuple[int, int]]


class _Families:
    """A collector for one scrape: the families were computed already."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _age_seconds(at: str | None) -> float:
    if at is None:
        return 0.0
    then = dt.datetime.fromisoformat(at)
    return max(0.0, (dt.datetime.now(dt.UTC) - then).total_seconds())


def health_routes(health: HallHealth, *, metrics: Sequence[Any]) -> APIRouter:
    """``/healthz`` is open to any monitor (the status and its reasons, no personal data);
    ``/metrics`` is guarded by the ``metrics`` dependencies (agent/web/access.py)."""
    router = APIRouter()

    @router.get("/healthz", response_model=HealthReport, responses={503: {"model": HealthReport}})
    async def healthz() -> JSONResponse:
        """ready, degraded (serving, but look at the reasons) or failing (503)."""
        report = health.report()
        code = 503 if report.status == "failing" else 200
        return JSONResponse(status_code=code, content=report.model_dump())

    @router.get("/metrics", response_class=Response, dependencies=list(metrics))
    async def prometheus() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await health.metrics(), media_type=CONTENT_TYPE_LATEST)

    return router
