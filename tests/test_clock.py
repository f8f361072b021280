"""The clock: when it is trusted, and what the business day does when it jumps.

A Pi has no battery clock: it boots with a saved or a wrong date and learns the real one
when NTP answers, maybe hours later. Until then events carry ``clock_ok: false`` and the
day does not change; when the clock is set the day closes once, and the tickets issued
meanwhile (their citizens are in the hall) move into the new day instead of expiring.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ManualClock

from agent.config import HallAgentConfig
from agent.core.engine import QueueEngine
from agent.core.errors import Refused
from agent.core.model import TicketStatus
from agent.core.operations import Take
from agent.runtime.clock import (
    JUMP_TOLERANCE_S,
    LATCH_NAME,
    Evidence,
    SystemClock,
    kernel_ntp,
    rtc,
    timedated,
    timesyncd,
)
from agent.runtime.hall import Hall
from agent.runtime.store import Store

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = dt.date(2026, 3, 2)
TUESDAY = MONDAY + dt.timedelta(days=1)
WEDNESDAY = MONDAY + dt.timedelta(days=2)


def at(hhmm: str, day: dt.date = MONDAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), SHANGHAI)


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    def __init__(self, evidence: Evidence | None = None) -> None:
        self.evidence = evidence

    def __call__(self) -> Evidence | None:
        return self.evidence


KERNEL = Evidence("the kernel clock is synchronised by NTP", current=True)


def make_clock(
    source: FakeSource, mono: Mono, latch: Path | None = None, boot: str = "boot-1"
) -> SystemClock:
    return SystemClock(sources=[source], latch_dir=latch, monotonic=mono, boot_id=lambda: boot)


# -- when the clock is trusted -------------------------------------------------------


def test_a_date_before_the_release_is_never_trusted() -> None:
    mono = Mono()
    clock = make_clock(FakeSource(KERNEL), mono)
    state = clock.state(dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    assert not state.ok
    assert "never set" in state.detail
    assert not SystemClock("system", sources=[])(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert SystemClock("system", sources=[])(at("10:00"))


def test_trusted_once_a_source_confirms_and_then_while_it_runs_on() -> None:
    source, mono = FakeSource(), Mono()
    clock = make_clock(source, mono)
    first = clock.state(at("10:00"))
    assert not first.ok
    assert "not been synchronised since boot" in first.detail
    source.evidence = KERNEL
    mono.now += 2
    assert clock(at("10:00") + dt.timedelta(seconds=2))
    # Offline for days: the kernel stops calling the clock synchronised, the clock runs on.
    source.evidence = None
    mono.now += 3 * 86400
    later = clock.state(at("10:00") + dt.timedelta(days=3, seconds=2))
    assert later.ok
    assert "synchronised earlier in this boot" in later.detail


def test_a_jump_no_source_confirms_withdraws_the_trust_until_one_does(
    tmp_path: Path,
) -> None:
    now = at("10:00")
    flag = tmp_path / "synchronized"
    flag.touch()
    os.utime(flag, (now.timestamp() - 60, now.timestamp() - 60))  # synchronised at 09:59
    source, mono = FakeSource(KERNEL), Mono()
    clock = SystemClock(sources=[source, timesyncd(flag)], monotonic=mono)
    assert clock(now)
    source.evidence = None
    mono.now += 1
    jumped = now + dt.timedelta(hours=5, seconds=1)  # somebody ran date -s
    state = clock.state(jumped)
    assert not state.ok
    assert "jumped" in state.detail
    # timesyncd's flag from before the jump does not confirm the new time...
    mono.now += 2
    assert not clock(jumped + dt.timedelta(seconds=2))
    # ...a synchronisation after it does.
    stamp = (jumped + dt.timedelta(seconds=3)).timestamp()
    os.utime(flag, (stamp, stamp))
    mono.now += 2
    assert clock(jumped + dt.timedelta(seconds=4))


def test_slewing_is_not_a_jump() -> None:
    source, mono = FakeSource(KERNEL), Mono()
    clock = make_clock(source, mono)
    now = at("10:00")
    assert clock(now)
    source.evidence = None
    mono.now += 3600
    assert clock(now + dt.timedelta(seconds=3600 + JUMP_TOLERANCE_S / 2))


def test_trust_survives_a_restart_of_the_agent_in_the_same_boot(tmp_path: Path) -> None:
    source, mono = FakeSource(KERNEL), Mono()
    assert make_clock(source, mono, tmp_path)(at("10:00"))
    assert (tmp_path / LATCH_NAME).exists()
    # The agent restarts a minute later; NTP is gone meanwhile.
    mono.now += 60
    restarted = make_clock(FakeSource(), mono, tmp_path)
    assert restarted(at("10:01"))
    # The clock was set while the agent was down: not confirmed.
    mono.now += 60
    assert not make_clock(FakeSource(), mono, tmp_path)(at("15:02"))
    # Another boot: /run is empty on a Pi, and a stale file names another boot anyway.
    (tmp_path / LATCH_NAME).write_text(
        json.dumps({"offset": at("10:03").timestamp() - mono.now, "by": "x", "boot_id": "old"})
    )
    assert not make_clock(FakeSource(), mono, tmp_path, boot="boot-2")(at("10:03"))


def test_evidence_noted_from_timedated_counts_for_a_while() -> None:
    mono = Mono()
    clock = make_clock(FakeSource(), mono)
    assert not clock(at("10:00"))
    assert clock.wants_evidence
    clock.note(Evidence("systemd-timedated reports the clock synchronised by NTP", current=True))
    assert clock(at("10:00"))
    assert not clock.wants_evidence


def test_rtc_source_reads_hctosys(tmp_path: Path) -> None:
    hctosys = tmp_path / "hctosys"
    assert rtc(hctosys)() is None
    hctosys.write_text("1\n")
    found = rtc(hctosys)()
    assert found is not None
    assert "RTC" in found.what
    hctosys.write_text("0\n")
    assert rtc(hctosys)() is None


@pytest.mark.timeout(30)
async def test_the_real_sources_answer_without_raising() -> None:
    # Whatever this machine's state is, each answers None or current evidence.
    for found in (kernel_ntp(), await timedated()):
        assert found is None or (found.current and "synchronised" in found.what)


# -- the business day and clock jumps (the queue engine) -----------------------------------


def day_closings(engine_events: list[tuple[str, dict[str, object]]]) -> list[tuple[str, str]]:
    return [(str(d["day"]), str(d["next_day"])) for t, d in engine_events if t == "day.closed"]


class Recorder:
    """Runs operations on an engine and keeps every event."""

    def __init__(self, engine: QueueEngine) -> None:
        self.engine = engine
        self.events: list[tuple[str, dict[str, object]]] = []

    def take(self, service: str, now: dt.datetime, *, trusted: bool = True) -> str:
        self.engine.clock_trusted = trusted
        out = self.engine.take(service, now)
        self.events += [(e.type, e.data) for e in out.events]
        return str(out.result["ticket"]["number"])

    def tick(self, now: dt.datetime, *, trusted: bool = True) -> None:
        self.engine.clock_trusted = trusted
        self.events += [(e.type, e.data) for e in self.engine.tick(now).events]


def test_a_trusted_clock_jumping_forward_and_back_across_the_day_boundary(
    config: HallAgentConfig,
) -> None:
    hall = Recorder(QueueEngine.fresh(config, at("10:00")))
    assert [hall.take("social", at("10:00")) for _ in range(2)] == ["B001", "B002"]
    # Forward into Tuesday: Monday closes, its open tickets expire, numbers restart.
    assert hall.take("social", at("10:00", TUESDAY)) == "B001"
    expired = [d["ticket"] for t, d in hall.events if t == "ticket.expired"]
    assert expired == ["B001", "B002"]
    # Back to Monday evening: the hall stays on Tuesday; no second reset, no reused number.
    assert hall.take("social", at("23:00")) == "B002"
    hall.tick(at("23:30"))
    # Forward again within Tuesday: nothing closes twice.
    assert hall.take("social", at("11:00", TUESDAY)) == "B003"
    assert day_closings(hall.events) == [("2026-03-02", "2026-03-03")]
    # Wednesday still comes: no day is skipped.
    hall.tick(at("04:00", WEDNESDAY))
    assert hall.take("social", at("09:00", WEDNESDAY)) == "B001"
    assert day_closings(hall.events) == [
        ("2026-03-02", "2026-03-03"),
        ("2026-03-03", "2026-03-04"),
    ]


def test_an_untrusted_clock_never_moves_the_day(config: HallAgentConfig) -> None:
    hall = Recorder(QueueEngine.fresh(config, at("10:00")))
    assert hall.take("social", at("10:00")) == "B001"
    # A bad RTC says 2030: the hall keeps counting Monday's numbers.
    future = at("10:00", dt.date(2030, 6, 1))
    assert hall.take("social", future, trusted=False) == "B002"
    hall.tick(future + dt.timedelta(days=1), trusted=False)
    assert day_closings(hall.events) == []
    assert hall.engine.hall.day == MONDAY
    # Corrected to the real Tuesday: Monday closes once...
    hall.tick(at("09:00", TUESDAY))
    assert day_closings(hall.events) == [("2026-03-02", "2026-03-03")]
    # ...and Wednesday is not skipped (the hall did not run ahead to 2030).
    hall.tick(at("04:00", WEDNESDAY))
    assert day_closings(hall.events)[-1] == ("2026-03-03", "2026-03-04")


def test_a_wrong_boot_date_corrected_keeps_the_tickets_taken_meanwhile(
    config: HallAgentConfig,
) -> None:
    """The helper's finding: setting the clock must not expire the morning's tickets."""
    hall = Recorder(QueueEngine.fresh(config, at("10:00")))
    assert hall.take("social", at("16:00")) == "B001"  # Monday, left open at closing
    # Tuesday: the Pi boots offline with Monday 18:00 restored; the hall opens anyway.
    restored = at("18:00")
    morning = [hall.take("social", restored, trusted=False) for _ in range(3)]
    assert morning == ["B002", "B003", "B004"]
    hall.engine.clock_trusted = False
    hall.engine.sign_in("w1", "s-001", restored)
    called = hall.engine.call_next("w1", restored).result["ticket"]["number"]
    assert called == "B001"
    called = hall.engine.call_next("w1", restored).result["ticket"]["number"]
    assert called == "B002"
    # NTP answers at 09:05: Monday closes once. Monday's own open ticket expires; the
    # tickets taken this morning move into Tuesday, still waiting or called.
    hall.tick(at("09:05", TUESDAY))
    closed = [d for t, d in hall.events if t == "day.closed"]
    assert len(closed) == 1
    assert closed[0]["carried"] == ["B002", "B003", "B004"]
    assert [d["ticket"] for t, d in hall.events if t == "ticket.expired"] == []
    engine = hall.engine
    by_number = {t.number: t for t in engine.tickets.values()}
    assert by_number["B002"].status is TicketStatus.CALLED
    assert by_number["B002"].day == TUESDAY
    assert engine.windows["w1"].current == by_number["B002"].id
    assert {by_number[n].status for n in ("B003", "B004")} == {TicketStatus.WAITING}
    # Numbers continue after the carried ones: no number is shown twice today.
    assert hall.take("social", at("09:06", TUESDAY)) == "B005"
    # A carried ticket can be called by number, and expires normally tomorrow.
    assert engine.call_number("w1", "B004", at("09:07", TUESDAY)).result["ticket"]
    hall.tick(at("04:00", WEDNESDAY))
    expired = [d["ticket"] for t, d in hall.events if t == "ticket.expired"]
    assert sorted(expired) == ["B003", "B004", "B005"]


def test_a_ticket_issued_on_a_trusted_clock_still_expires_when_the_clock_is_set(
    config: HallAgentConfig,
) -> None:
    # Monday's ticket left open (issued with a trusted clock) expires as before.
    hall = Recorder(QueueEngine.fresh(config, at("10:00")))
    hall.take("social", at("16:00"))
    hall.take("social", at("18:00"), trusted=False)
    hall.tick(at("09:05", TUESDAY))
    assert [d["ticket"] for t, d in hall.events if t == "ticket.expired"] == ["B001"]


def test_office_hours_are_not_enforced_while_the_clock_is_untrusted(
    config: HallAgentConfig,
) -> None:
    engine = QueueEngine.fresh(config, at("10:00"))
    night = at("22:00")
    with pytest.raises(Refused, match="not issuing tickets now"):
        engine.take("general", night)
    engine.clock_trusted = False
    assert engine.take("general", night).result["ticket"]["number"] == "A001"


@pytest.mark.timeout(30)
async def test_carried_tickets_are_saved_in_their_new_day(
    config: HallAgentConfig, tmp_path: Path
) -> None:
    clock = ManualClock(at("16:00"))
    trusted = {"now": True}
    store = Store.open(tmp_path / "carry")
    try:
        async with Hall(config, store, clock=clock, clock_ok=lambda now: trusted["now"]) as hall:
            await hall.execute(Take(service="social"))
            trusted["now"] = False
            clock.now = at("18:00")
            await hall.execute(Take(service="social"))
            trusted["now"] = True
            clock.now = at("09:05", TUESDAY)
            out = await hall.tick()
            assert [e.type for e in out.stored] == ["ticket.expired", "day.closed"]
            assert [e.clock_ok for e in out.stored] == [True, True]
        async with Hall(config, store, clock=clock, clock_ok=lambda now: True) as again:
            numbers = await again.read(lambda e, n: sorted(t.number for t in e.open_tickets()))
            assert numbers == ["B002"]
            out = await again.execute(Take(service="social"))
            assert out.result["ticket"]["number"] == "B003"
        assert [t.number for t in store.ticket_history(TUESDAY)] == ["B002", "B003"]
    finally:
        store.close()
