"""A full disk: the hall keeps issuing tickets or refuses with a clear message, never
crashes, never corrupts the store, evicts by policy, and recovers when space returns.

Two ways to fill a disk: SQLite's ``max_page_count`` (runs everywhere: SQLite answers
exactly as for a full disk, "database or disk is full"), and a real small tmpfs, mounted
when the test may mount (root in CI); skipped cleanly otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import as_ops, hall_config, small_tmpfs

from agent.config import HallAgentConfig, StorageConfig
from agent.core.events import Event, EventClass
from agent.daemon import Running, running_agent
from agent.runtime.diskspace import DiskState, RoomNeeded, SpaceGuard, make_room
from agent.runtime.store import RawEvent, Store, StoreError, StoreFull, Written
from agent.runtime.systemd import Notifier

MIB = 2**20


def chatter(n: int, size: int = 400) -> list[Event]:
    now = dt.datetime.now(dt.UTC)
    return [RawEvent("device.changed", now, {"pad": "x" * size}, EventClass.CHATTER)] * n


# -- SQLite says "full" ----------------------------------------------------------------


def cap_pages(store: Store, extra: int = 0) -> None:
    """Let the database file grow by ``extra`` pages at most (a disk that is full)."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + extra}")


def test_a_full_database_is_a_store_full_error_and_nothing_half_written(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.append(chatter(3))
        cap_pages(store)
        with pytest.raises(StoreFull, match="the state disk is full"):
            store.append(chatter(200))
        assert store.last_seq == 3
        assert [e.seq for e in store.events()] == [1, 2, 3]
        store._conn.execute("PRAGMA max_page_count = 1000000")
        assert [e.seq for e in store.append(chatter(1))] == [4]
        assert store._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        store.close()


def test_only_a_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    # A database the service user cannot open is not damaged: no new epoch.
    store = Store.open(tmp_path)
    store.close()
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "hall.db").mkdir()  # SQLite cannot open a directory: CANTOPEN, not damage
    with pytest.raises(StoreError, match="cannot open the state database") as caught:
        Store.open(locked)
    assert not isinstance(caught.value, StoreFull)
    assert list(locked.glob("hall.db.damaged-*")) == []
    # A file that is not a database is damage: moved aside, new epoch.
    (tmp_path / "hall.db").write_bytes(b"not a database, garbage " * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"hall.db{suffix}").unlink(missing_ok=True)
    again = Store.open(tmp_path)
    assert again.epoch == 2
    again.close()
    assert len(list(tmp_path.glob("hall.db.damaged-*"))) == 1


def state(free: int, reserve: int = 64 * MIB, held: int = 8 * MIB) -> DiskState:
    return DiskState(free, 1000 * MIB, reserve, held)


def test_room_is_made_only_while_the_disk_is_short(tmp_path: Path) -> None:
    storage = StorageConfig(path=tmp_path, reserve_bytes=64 * MIB)
    guard = SpaceGuard(storage)
    assert guard.reserve_file_size == 8 * MIB
    assert guard.room_needed(state(500 * MIB), disk_full=False) is None
    assert guard.room_needed(state(10 * MIB), disk_full=False) == RoomNeeded(8 * MIB, False)
    # SQLite said "full" though statvfs shows room (a quota, max_page_count).
    # Then the pass gives back the reserve first, in the writer's turn.
    full = RoomNeeded(8 * MIB, True, release=guard.release_reserve)
    assert guard.room_needed(state(500 * MIB), disk_full=True) == full


def test_making_room_evicts_acked_then_chatter_and_business_only_as_a_last_resort(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    now = dt.datetime.now(dt.UTC)
    try:
        business = [RawEvent("ticket.issued", now, {"pad": "b" * 400})] * 20
        store.append(business)  # seq 1-20
        store.append(chatter(20))  # seq 21-40
        store.mark_acked(store.epoch, 5)  # central has 1-5
        evicted = make_room(store, RoomNeeded(5000, business=False), now, True)
        assert [e.by_class for e in evicted] == [{"chatter": 4}]  # the 5 acked went first
        assert store.seqs_between(1, 40)[:2] == [6, 7]
        assert store.seqs_between(21, 40)[0] == 25
        # No room wanted (enough free pages): nothing goes.
        assert make_room(store, RoomNeeded(0, business=True), now, True) == []
        # Writes fail and only business events are left: the oldest go, and are reported.
        store.make_room(10**9, now)  # all chatter gone
        last = make_room(store, RoomNeeded(10**9, business=True), now, True)
        assert last[0].by_class == {"business": last[0].count}
        assert last[0].ranges[0][0] == 6
        report = [e for e in store.iter_events() if e.type == "outbox.evicted"][-1]
        assert report.data["reason"] == "disk"
        assert store.counter("evicted_total") == 20 + last[0].count
        assert report.data["evicted_total"] == 20 + last[0].count
    finally:
        store.close()


def test_the_reserve_file_is_taken_with_room_and_released_once(tmp_path: Path) -> None:
    storage = StorageConfig(path=tmp_path, reserve_bytes=4 * MIB)
    plenty = SpaceGuard(storage, usage=lambda _: (100 * MIB, 200 * MIB))
    assert plenty.hold_reserve(plenty.look())
    assert plenty.reserve_file.stat().st_size == MIB
    assert not plenty.hold_reserve(plenty.look())  # already held
    assert plenty.release_reserve() == MIB
    assert plenty.release_reserve() == 0
    short = SpaceGuard(storage, usage=lambda _: (3 * MIB, 200 * MIB))
    assert not short.hold_reserve(short.look())  # no room: not taken
    assert short.look().low


# -- the running hall with a database that cannot grow ----------------------------------


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., HallAgentConfig]:
    def make(storage: Path | None = None, **storage_options: Any) -> HallAgentConfig:
        data = hall_config(storage or tmp_path / "state")
        data["storage"] |= storage_options
        return HallAgentConfig.model_validate(data)

    return make


async def take(client: httpx.AsyncClient, service: str = "social") -> httpx.Response:
    return await client.post("/api/v1/tickets", json={"service": service})


async def wait_until(check: Callable[[], Any], within: float = 20.0) -> Any:
    """Poll a condition (not a fixed sleep): returns its first truthy value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"condition not met within {within} s")


async def fill_outbox_with_chatter(agent: Running, n: int) -> None:
    events = chatter(n)
    await agent.hall.write(
        lambda store, now, ok: Written.of_events(store.append(events, clock_ok=ok))
    )


async def integrity(agent: Running) -> tuple[str, list[int]]:
    def read(store: Store) -> tuple[str, list[int]]:
        check = store._conn.execute("PRAGMA quick_check").fetchone()[0]
        return check, [e.seq for e in store.iter_events()]

    return await agent.hall.store_call(read)


@pytest.mark.timeout(60)
async def test_a_full_database_refuses_clearly_then_evicts_chatter_and_issues_again(
    config_factory: Callable[..., HallAgentConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.runtime.diskspace.CHECK_EVERY_S", 0.2)
    config = config_factory(reserve_bytes=4 * MIB)  # a 1 MiB reserve file
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        assert (await take(client)).status_code == 201
        await fill_outbox_with_chatter(agent, 2000)  # about 1 MiB of device chatter
        await agent.hall.store_call(cap_pages)
        async with agent.hall.events() as committed:
            answers = [await take(client) for _ in range(3)]
            while answers[-1].status_code == 201 and len(answers) < 1000:
                answers.append(await take(client))  # until the last partly free page is used
            refused = answers[-1]
            assert refused.status_code == 503
            issued = len(answers) - 1
            body = refused.json()
            assert body["error"] == "disk_full"
            assert "the state disk is full" in body["message"]
            assert "the operation was not done" in body["message"]
            assert body["citizen_message"] == "系统暂时无法保存新的号票，请到服务台咨询"
            health = (await client.get("/healthz")).json()
            assert health["status"] == "failing"
            assert health["reasons"][0]["check"] == "store"
            # The disk guard evicts chatter, oldest first, and says so in an event.
            evicted = await wait_until(
                lambda: next((e for e in _drain(committed) if e.type == "outbox.evicted"), None)
            )
        assert evicted.data["by_class"] == {"chatter": evicted.data["count"]}
        assert (await take(client)).status_code == 201
        health = (await client.get("/healthz")).json()
        assert health["status"] == "degraded"
        assert "outbox" in [r["check"] for r in health["reasons"]]
        metrics = (await client.get("/metrics")).text
        # The refused take, or a write of the agent's own that found the disk full first
        # (the take was then refused by the issuing gate, with the same answer).
        full = re.search(r"^hall_store_disk_full_total (\S+)$", metrics, re.MULTILINE)
        assert full is not None
        assert float(full.group(1)) >= 1
        check, seqs = await integrity(agent)
        assert check == "ok"
        assert seqs == sorted(seqs)
        history = await agent.hall.store_call(lambda s: s.ticket_history(s_day(agent)))
        assert [t.number for t in history] == [f"A{n:03d}" for n in range(1, issued + 3)]


@pytest.mark.timeout(60)
async def test_a_take_after_device_chatter_filled_the_disk_is_refused_as_disk_full(
    config_factory: Callable[..., HallAgentConfig],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The agent's own writes (device chatter here) can be the first to find the disk full:
    # the next take is refused by the issuing gate and names that cause, not a vague one.
    monkeypatch.setattr("agent.daemon.SpaceGuard.wait", _wait_forever)  # no eviction yet
    async with (
        running_agent(config_factory()) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        assert (await take(client)).status_code == 201
        await agent.hall.store_call(cap_pages)
        assert isinstance(await chatter_until_refused(agent), StoreFull)
        # The log says what could not be saved: not a queue change (none was asked for).
        assert any(
            r.getMessage().startswith("a write could not be saved (could not save")
            for r in caplog.records
        )
        refused = await take(client)
        assert refused.status_code == 503
        body = refused.json()
        assert body["error"] == "disk_full"
        assert "the state disk is full" in body["message"]
        assert "the operation was not done" in body["message"]
        assert body["citizen_message"] == "系统暂时无法保存新的号票，请到服务台咨询"
        issuing = (await client.get("/api/v1/issuing")).json()["issuing"]
        assert issuing["enabled"] is False
        assert issuing["reason"].startswith("the state disk is full")


async def chatter_until_refused(agent: Running) -> StoreError | None:
    """Write device chatter until the store refuses it: the error it refused with."""
    for _ in range(1000):
        try:
            await fill_outbox_with_chatter(agent, 50)
        except StoreError as err:
            return err
    return None


async def _wait_forever(*_: object) -> None:
    await asyncio.Event().wait()


def _drain(queue: asyncio.Queue[Any]) -> Iterator[Any]:
    while not queue.empty():
        yield queue.get_nowait()


def s_day(agent: Running) -> dt.date:
    return agent.hall.engine.hall.day


# -- a real small file system -------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "24m") as where:
        yield where


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


@pytest.mark.timeout(90)
async def test_a_real_full_disk_releases_the_reserve_keeps_issuing_and_recovers(
    small_disk: Path,
    config_factory: Callable[..., HallAgentConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agent.runtime.diskspace.CHECK_EVERY_S", 0.2)
    config = config_factory(storage=small_disk / "state", reserve_bytes=8 * MIB)
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        guard_file = small_disk / "state" / ".space-reserve"
        await wait_until(guard_file.exists)
        assert guard_file.stat().st_size == 2 * MIB
        for _ in range(3):
            assert (await take(client)).status_code == 201
        await fill_outbox_with_chatter(agent, 3000)
        filler = fill(small_disk)
        # Keep taking tickets: each is either issued or refused with a clear 503; the
        # hall never stops answering and, once the reserve is released and chatter
        # evicted, issues again.
        answers = []
        async with agent.hall.events() as committed:
            for _ in range(200):
                response = await take(client)
                answers.append(response.status_code)
                if response.status_code == 503:
                    assert response.json()["error"] == "disk_full"
                    break
            assert 503 in answers, "the disk never filled up"
            await wait_until(lambda: not guard_file.exists())
            await wait_until(
                lambda: any(e.type == "outbox.evicted" for e in _drain(committed)), within=30
            )
        issued = await take(client)
        assert issued.status_code == 201, issued.text
        health = (await client.get("/healthz")).json()
        assert "disk" in [r["check"] for r in health["reasons"]]
        assert health["status"] == "degraded"
        check, seqs = await integrity(agent)
        assert check == "ok"
        assert seqs == sorted(seqs)
        # Only device chatter was evicted: every ticket event is still in the outbox.
        kept = await agent.hall.store_call(
            lambda s: [e.data["ticket"] for e in s.iter_events() if e.type == "ticket.issued"]
        )
        assert kept == [f"A{n:03d}" for n in range(1, len(kept) + 1)]
        assert len(kept) == answers.count(201) + 4
        # Space returns: the reserve is taken again and the disk reason goes away.
        filler.unlink()
        await wait_until(guard_file.exists)
        await wait_until(lambda: agent.health is not None and not agent.health.disk.last.low)
        health = (await client.get("/healthz")).json()
        assert "disk" not in [r["check"] for r in health["reasons"]]
        assert (await take(client)).status_code == 201


@pytest.mark.timeout(90)
async def test_takes_that_keep_coming_on_a_full_disk_leave_the_reserve_to_the_eviction(
    small_disk: Path,
    config_factory: Callable[..., HallAgentConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kiosks do not stop when the disk fills. The reserve given back for the eviction
    must go to the eviction: released outside the writer's turn (as it was, when a write
    failed), the takes still being issued could fill it first (seen: about 80 takes,
    2 MiB of log, after the retention pass itself had found the disk full) and leave the
    eviction no room, so the hall stayed full. It is released in the writer's turn, just
    before the eviction's own write."""
    monkeypatch.setattr("agent.runtime.diskspace.CHECK_EVERY_S", 0.2)
    config = config_factory(storage=small_disk / "state", reserve_bytes=8 * MIB)
    released_in: list[str] = []
    release = SpaceGuard.release_reserve

    def recorded(guard: SpaceGuard) -> int:
        released_in.append(threading.current_thread().name)
        return release(guard)

    monkeypatch.setattr(SpaceGuard, "release_reserve", recorded)
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        guard_file = small_disk / "state" / ".space-reserve"
        await wait_until(guard_file.exists)
        await fill_outbox_with_chatter(agent, 3000)
        fill(small_disk)
        answers: list[int] = []
        evicted = False
        async with agent.hall.events() as committed:
            deadline = time.monotonic() + 45
            while not evicted and time.monotonic() < deadline:
                answers.append((await take(client)).status_code)  # never stopping at a 503
                evicted = any(e.type == "outbox.evicted" for e in _drain(committed))
        assert 503 in answers, "the disk never filled up"
        assert evicted, f"no eviction after {len(answers)} takes: {answers[-5:]}"
        assert released_in, "the reserve was never given back"
        assert all(n.startswith("store-writer") for n in released_in), released_in
        assert not guard_file.exists()
        # The eviction left room: tickets are issued again.
        issued = await take(client)
        assert issued.status_code == 201, issued.text
        check, seqs = await integrity(agent)
        assert check == "ok"
        assert seqs == sorted(seqs)


@pytest.mark.timeout(60)
async def test_starting_on_a_full_disk_waits_for_room_instead_of_exiting(
    small_disk: Path, tmp_path: Path
) -> None:
    storage = StorageConfig(path=small_disk / "state", reserve_bytes=8 * MIB)
    store = Store.open(storage.path)
    store.append(chatter(10))
    store.close()
    filler = fill(small_disk)
    notify_path = f"/tmp/hall-notify-{os.getpid()}-{time.monotonic_ns()}"
    import socket

    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)
    receiver.settimeout(20)
    notifier = Notifier({"NOTIFY_SOCKET": notify_path})
    try:
        opening = asyncio.create_task(SpaceGuard(storage).open_store(notifier, retry_s=0.2))
        message = await asyncio.to_thread(receiver.recv, 4096)
        assert b"STATUS=waiting for free space" in message
        assert not opening.done()
        filler.unlink()
        opened = await asyncio.wait_for(opening, timeout=20)
        assert opened.last_seq == 10
        assert opened.epoch == 1  # the same store: nothing was moved aside
        opened.close()
        assert list(storage.path.glob("hall.db.damaged-*")) == []
    finally:
        notifier.close()
        receiver.close()
        os.unlink(notify_path)


@pytest.mark.timeout(60)
async def test_starting_on_a_full_disk_with_the_reserve_held_starts_at_once(
    small_disk: Path,
) -> None:
    storage = StorageConfig(path=small_disk / "state", reserve_bytes=8 * MIB)
    Store.open(storage.path).close()
    guard = SpaceGuard(storage)
    assert guard.hold_reserve(guard.look())
    fill(small_disk)
    store = await asyncio.wait_for(guard.open_store(Notifier({}), retry_s=60), timeout=20)
    try:
        assert not guard.reserve_file.exists()
        assert store.epoch == 1
        conn = sqlite3.connect(storage.path / "hall.db")
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        conn.close()
    finally:
        store.close()
