"""The drain pacer on a clock the test moves: the rate cap holds exactly, whatever the timing.

The process test (test_link_process) proves that nothing is lost while a paced backlog drains;
how fast the broker hands messages on to a subscriber is no measure of how fast the agent
sent them, so the cap itself is proven here, and the real throughput is measured in bench/.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.central.link import Pacer


class FakeTime:
    """A clock that moves only when the pacer sleeps or the consumer 'works'."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the pacer never sleeps for nothing"
        self.now += seconds
        self.slept += seconds


def take_times(rate: float, burst: int, gaps: list[float]) -> tuple[list[float], FakeTime]:
    """Take once per gap (the consumer's own work between takes); return when each take returned."""
    time = FakeTime()
    pacer = Pacer(rate, burst, clock=time.clock, sleep=time.sleep)

    async def run() -> list[float]:
        times = []
        for gap in gaps:
            time.now += gap
            await pacer.take()
            times.append(time.now)
        return times

    return asyncio.run(run()), time


rates = st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False)
bursts = st.integers(min_value=1, max_value=64)
gap_lists = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.05, allow_nan=False)),
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(rate=rates, burst=bursts, gaps=gap_lists)
def test_no_stretch_of_time_sees_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    times, _ = take_times(rate, burst, gaps)
    # For every pair of takes i <= j: j - i + 1 takes happened within times[j] - times[i].
    slack = 1e-6
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = burst + rate * (times[j] - times[i])
            assert j - i + 1 <= allowed + slack, (
                f"{j - i + 1} takes in {times[j] - times[i]:.6f} s, cap {rate}/s, burst {burst}"
            )


@settings(max_examples=100, deadline=None)
@given(rate=rates, burst=bursts, n=st.integers(min_value=1, max_value=2000))
def test_a_consumer_that_never_waits_gets_the_full_rate(rate: float, burst: int, n: int) -> None:
    """The pacer holds back no more than the cap requires: n takes cost (n - burst) / rate."""
    times, time = take_times(rate, burst, [0.0] * n)
    needed = max(0, n - burst) / rate
    assert time.slept == pytest.approx(needed, rel=1e-6, abs=1e-9)
    assert times[-1] - times[0] == pytest.approx(needed, rel=1e-6, abs=1e-9)


def test_an_idle_pause_refills_the_burst_but_no_more() -> None:
    rate, burst = 100.0, 8
    # 8 at once, then a long pause: the next 8 are free again, the 9th waits 1/rate.
    times, time = take_times(rate, burst, [0.0] * 8 + [60.0] + [0.0] * 8)
    assert times[:8] == [times[0]] * 8
    assert times[8:16] == [times[8]] * 8
    assert times[16] - times[8] == pytest.approx(1 / rate)
    assert time.slept == pytest.approx(1 / rate)


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(0, 4)
