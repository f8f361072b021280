"""Fixtures shared by the queue engine, store and hall tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from event_contract import ContractCheck, install
from hypothesis import settings

from agent.config import HallAgentConfig

SHANGHAI = ZoneInfo("Asia/Shanghai")

# Property tests judge results, never time: hypothesis's default 200 ms deadline per example
# fails a correct test on a loaded machine (CI's), so it is off for the whole suite.
settings.register_profile("hall", deadline=None)
settings.load_profile("hall")

# Every event the agent emits in the suite is validated against its type's schema.
CONTRACT = ContractCheck()


@pytest.fixture(scope="session", autouse=True)
def contract_check() -> Iterator[ContractCheck]:
    uninstall = install(CONTRACT)
    yield CONTRACT
    uninstall()


# -- nothing outlives the run ---------------------------------------------------------------
# A test that fails half-way can leave an agent, a broker or a client thread running. A process
# that keeps the run's output open, or a thread the interpreter waits for at exit, would hold the
# run open until CI's time limit; so every process the suite starts carries this mark in its
# environment, and whatever still runs at the end is killed and named.
RUN_MARK = "HALLTESTS_RUN"
_exit_status: list[int] = [0]  # the session's own exit status


_OUTERMOST = "HALLTESTS_PYTEST"  # set inside a run: a pytest started by a test is not outermost


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(RUN_MARK, f"pytest-{os.getpid()}")  # scripts/check sets its own
    os.environ.setdefault(_OUTERMOST, str(os.getpid()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status[0] = int(exitstatus)


def _ancestors() -> set[int]:
    """This process and those above it (scripts/check, its ``timeout``): they carry the mark
    too, and are not leftovers."""
    chain = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: ppid
    return chain


def _marked_processes(mark: str) -> list[tuple[int, str]]:
    found = []
    needle = f"{RUN_MARK}={mark}".encode()
    ours = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        found.append((int(entry.name), command.strip()[:120]))
    return found


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get(_OUTERMOST) != str(os.getpid()):
        return  # a pytest run inside a test: the outer run cleans up
    stray = _marked_processes(os.environ[RUN_MARK])
    for pid, _ in stray:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if stray:
        print(f"\nkilled {len(stray)} process(es) the tests left running:", file=sys.stderr)
        for pid, command in stray:
            print(f"  {pid} {command}", file=sys.stderr)
    threads = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if threads:
        names = ", ".join(t.name for t in threads)
        print(f"\n{len(threads)} thread(s) the tests left running: {names}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])  # the interpreter would wait for them forever


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"event contract: {CONTRACT.checked} events validated against their schema "
        f"in {CONTRACT.seconds:.2f} s"
    )


@pytest.fixture(autouse=True)
def _events_fit_their_schema(contract_check: ContractCheck) -> Iterator[None]:
    """Fails the test during which the agent emitted an event its schema refuses."""
    contract_check.take()
    yield
    misfits = contract_check.take()
    if misfits:
        lines = "\n".join(f"  {m}" for m in dict.fromkeys(misfits))
        pytest.fail(
            "events that do not validate against their schema in docs/contract/schemas/events/ "
            f"(fix the event or the schema generation in hallctl/asyncapi.py):\n{lines}",
            pytrace=False,
        )


# A Monday: the weekday hours in the test hall apply.
MONDAY = dt.date(2026, 3, 2)


def queue_hall_data(storage: Path) -> dict[str, Any]:
    """A small hall: 综合 keeps office hours with a lunch break, the others are always open."""
    return {
        "hall": {
            "id": "hd-test-001",
            "name": "测试政务服务大厅",
            "timezone": "Asia/Shanghai",
            "day_start_hour": 4,
        },
        "queue": {"recall_limit": 2, "green_channel_age": 65},
        "services": [
            {
                "id": "general",
                "name": "综合业务",
                "prefix": "A",
                "width": 3,
                "hours": [
                    {"start": "09:00", "end": "12:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
                    {"start": "13:30", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
                ],
                "expected_minutes": 6,
            },
            {"id": "social", "name": "社保医保", "prefix": "B", "width": 3, "expected_minutes": 4},
            {"id": "fund", "name": "公积金", "prefix": "C", "width": 2, "expected_minutes": 10},
        ],
        "windows": [
            {"id": "w1", "name": "1号窗口", "number": 1, "services": ["general", "social"]},
            {"id": "w2", "name": "2号窗口", "number": 2, "services": ["social", "general"]},
            {"id": "w3", "name": "3号窗口", "number": 3, "services": ["fund"]},
        ],
        "storage": {"path": str(storage)},
    }


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., HallAgentConfig]:
    """Build the test hall's config; keyword arguments replace or patch its sections.

    ``queue={...}`` is merged into the queue policy; ``services={"general": {...}}`` patches
    services by id; any other keyword replaces that section.
    """

    def make(**changes: Any) -> HallAgentConfig:
        data = queue_hall_data(tmp_path / "state")
        data["queue"] = {**data["queue"], **changes.pop("queue", {})}
        patches = changes.pop("services", {})
        data["services"] = [{**s, **patches.get(s["id"], {})} for s in data["services"]]
        data["hall"] = {**data["hall"], **changes.pop("hall", {})}
        data.update(changes)
        return HallAgentConfig.model_validate(data)

    return make


@pytest.fixture
def config(make_config: Callable[..., HallAgentConfig]) -> HallAgentConfig:
    return make_config()


class ManualClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime.combine(MONDAY, dt.time(10, 0), SHANGHAI))


# -- a real mosquitto (tests/broker.py) and a test PKI (tests/pki.py) -----------------

from broker import Broker  # noqa: E402
from pki import Pki, make_pki  # noqa: E402


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers with ``Broker`` keyword arguments; all are stopped after the test."""
    started: list[Broker] = []

    def start(**options: Any) -> Broker:
        broker = Broker(tmp_path / f"mosquitto-{len(started)}", **options)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A plain mosquitto with persistence on, on a free 127.0.0.1 port."""
    return broker_factory(persistence=True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")
