"""kill -9 at random moments while tickets are taken: nothing answered is lost.

A real ``hall-agent run`` subprocess is SIGKILLed while a client takes tickets in a loop.
After each restart every ticket whose ``take`` was answered must exist, no number is
reused, and the event log's ``seq`` is gapless.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import AgentProcess, hall_config, slow_fsync_shim, write_config

ROUNDS = 8


def _take_until_killed(
    url: str, answered: list[str], stop: threading.Event, headers: dict[str, str]
) -> None:
    services = ["social", "civil", "housing", "general"]
    with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
        i = 0
        while not stop.is_set():
            try:
                r = client.post("/api/v1/tickets", json={"service": services[i % 4]})
            except httpx.HTTPError:
                return  # the agent died mid-request: that take was never answered
            assert r.status_code == 201, r.text
            answered.append(r.json()["result"]["ticket"]["id"])
            i += 1


def _check_store(db: Path, answered: list[str]) -> int:
    conn = sqlite3.connect(db)
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM tickets")}
        missing = [t for t in answered if t not in ids]
        assert not missing, f"answered tickets lost after kill -9: {missing[:5]}"
        dupes = conn.execute(
            "SELECT day, number, COUNT(*) FROM tickets GROUP BY day, number HAVING COUNT(*) > 1"
        ).fetchall()
        assert not dupes, f"numbers reused: {dupes}"
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap"
        issued = conn.execute("SELECT COUNT(*) FROM events WHERE type='ticket.issued'").fetchone()
        assert issued[0] == len(ids), "a ticket exists without its event, or the reverse"
        return len(ids)
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_kill_minus_nine_loses_no_answered_ticket(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    config = write_config(tmp_path / "hall.yaml", hall_config(storage))
    agent = AgentProcess(config, storage, tmp_path / "agent.log")
    rng = random.Random(20261123)
    answered: list[str] = []
    epochs = set()
    for _ in range(ROUNDS):
        url = agent.start()
        stop = threading.Event()
        before = len(answered)
        worker = threading.Thread(
            target=_take_until_killed, args=(url, answered, stop, agent.ops), daemon=True
        )
        worker.start()
        # Kill once the loop is under way, at a random point of it.
        deadline_hits = before + rng.randint(5, 60)
        while len(answered) < deadline_hits and worker.is_alive():
            worker.join(0.005)
        agent.kill()
        stop.set()
        worker.join(10)
        assert len(answered) > before, "no take was answered before the kill"
        total = _check_store(storage / "hall.db", answered)
        assert total >= len(answered)
        conn = sqlite3.connect(storage / "hall.db")
        epochs.add(conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
        conn.close()
    # The store was never recreated: one epoch across every crash.
    assert epochs == {"1"}
    url = agent.start()
    status = httpx.get(f"{url}/api/v1/status", headers=agent.ops, timeout=5).json()
    assert status["last_seq"] >= len(answered)
    took = agent.terminate()
    assert agent.proc is not None
    assert agent.proc.returncode == 0
    # Well inside the unit's TimeoutStopSec (20 s), after which systemd would kill it.
    assert took < 15, f"SIGTERM took {took:.1f}s to stop the agent"


def _fill(fd: int) -> int:
    """Write to a pipe until it is full; returns how many bytes it holds."""
    held = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            held += os.write(fd, b"\0" * 4096)
    return held


def _drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        into += chunk


@pytest.mark.timeout(120)
def test_a_ticket_killed_before_its_print_prints_at_the_next_start(tmp_path: Path) -> None:
    """kill -9 while a ticket's print is stuck: the next start prints it (docs/printing.md)."""
    lp = tmp_path / "lp0"
    os.mkfifo(lp)
    # The test holds both ends of a printer device file: a full pipe blocks the agent's write
    # for as long as the test wants, like a printer holding the line.
    reader = os.open(lp, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(lp, os.O_WRONLY | os.O_NONBLOCK)
    storage = tmp_path / "state"
    printer = {
        "id": "kiosk-printer",
        "kind": "printer",
        "transport": {"type": "file", "path": str(lp)},
    }
    config = write_config(tmp_path / "hall.yaml", hall_config(storage, devices=[printer]))
    agent = AgentProcess(config, storage, tmp_path / "agent.log")
    received = bytearray()
    stop = threading.Event()
    drainer = threading.Thread(target=_drain, args=(reader, received, stop), daemon=True)
    try:
        held = _fill(filler)
        url = agent.start()
        r = httpx.post(
            f"{url}/api/v1/tickets", json={"service": "social"}, headers=agent.ops, timeout=30
        )
        assert r.status_code == 201, r.text
        result = r.json()["result"]
        assert result["ticket"]["number"] == "A001"
        assert result["print"] == {"state": "pending"}  # the write is stuck in the full pipe
        agent.kill()

        conn = sqlite3.connect(storage / "hall.db")
        failed = conn.execute("SELECT COUNT(*) FROM events WHERE type = 'ticket.print_failed'")
        assert failed.fetchone()[0] == 0
        (mark,) = conn.execute(
            "SELECT value FROM settings WHERE key = 'printing.concluded'"
        ).fetchone()
        (issued,) = conn.execute("SELECT seq FROM events WHERE type = 'ticket.issued'").fetchone()
        conn.close()
        assert json.loads(mark)["seq"] < issued, "the stuck print counted as concluded"

        url = agent.start()
        drainer.start()  # the printer takes data again
        deadline = time.monotonic() + 60
        while b"A001" not in received[held:]:
            assert time.monotonic() < deadline, "the cut-off ticket was not printed"
            time.sleep(0.05)
        assert bytes(received[:held]) == b"\0" * held  # nothing of the first run came out
        status = httpx.get(f"{url}/api/v1/status", headers=agent.ops, timeout=10).json()
        assert status["printing"]["printer"]["failed"] == 0
        assert "printing it now" in (tmp_path / "agent.log").read_text()
        agent.terminate()
    finally:
        agent.kill()
        stop.set()
        if drainer.is_alive():
            drainer.join(5)
        os.close(filler)
        os.close(reader)


def _take_in_parallel(
    url: str, answered: list[str], stop: threading.Event, headers: dict[str, str], service: str
) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post("/api/v1/tickets", json={"service": service})
            except httpx.HTTPError:
                return  # the agent died mid-request: that take was never answered
            if r.status_code == 201:
                answered.append(r.json()["result"]["ticket"]["id"])


def _largest_group(url: str, headers: dict[str, str]) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    for line in text.splitlines():
        if line.startswith("hall_store_largest_group "):
            return float(line.split()[1])
    raise AssertionError("no hall_store_largest_group in /metrics")


@pytest.mark.timeout(300)
def test_kill_minus_nine_while_a_group_of_takes_commits(tmp_path: Path) -> None:
    """Sixteen clients take tickets at once against a disk whose fsync takes 100 ms, so the
    writer commits them in groups; kill -9 once a group of at least 10 was committed: every
    answered take is there, nothing unanswered is half there, seq is gapless."""
    shim = slow_fsync_shim(tmp_path)
    storage = tmp_path / "state"
    hall = hall_config(storage)
    for service in hall["services"]:
        # 4-digit numbers: a loaded machine may take thousands before a big group forms, and
        # a service out of numbers refuses every take (409) and forms no group at all.
        service["width"] = 4
    config = write_config(tmp_path / "hall.yaml", hall)
    agent = AgentProcess(
        config,
        storage,
        tmp_path / "agent.log",
        env={"LD_PRELOAD": str(shim), "HALL_BENCH_FSYNC_MS": "100"},
    )
    rng = random.Random(20261205)
    answered: list[str] = []
    services = ["social", "civil", "housing", "general"]
    stop = threading.Event()
    workers: list[threading.Thread] = []
    try:
        for _ in range(3):
            url = agent.start()
            before = len(answered)
            stop = threading.Event()
            workers = [
                threading.Thread(
                    target=_take_in_parallel,
                    args=(url, answered, stop, agent.ops, services[i % 4]),
                    daemon=True,
                )
                for i in range(16)
            ]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 150
            while (largest := _largest_group(url, agent.ops)) < 10:
                assert time.monotonic() < deadline, (
                    f"the writer never committed a group of 10 (largest {largest:.0f}, "
                    f"{len(answered) - before} takes answered)"
                )
                time.sleep(0.05)
            # A random moment later: the writer is committing the next group, or about to.
            stop.wait(rng.uniform(0.0, 0.3))
            agent.kill()
            stop.set()
            for worker in workers:
                worker.join(30)
            assert len(answered) > before + 10
            total = _check_store(storage / "hall.db", answered)
            assert total >= len(answered)
        agent.start()
        agent.terminate()
    finally:
        stop.set()
        agent.kill()
        for worker in workers:
            worker.join(30)
