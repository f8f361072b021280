"""Wait estimates (agent/core/estimate.py and the engine's use of it), ticket.turn_near and
ticket.status: pure, with a controlled clock."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from conftest import queue_hall_data
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import QueueEngine
from agent.core.errors import QueueError
from agent.core.estimate import Demand, Lane, Simulation, Waiter, estimate_queue, simulate
from agent.core.model import HallCounters, Priority, Ticket, WindowStatus

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def waiters(service: str, count: int, *, green: bool = False, first_rank: int = 1) -> list[Waiter]:
    return [Waiter(f"{service}{i}", service, green, first_rank + i, 0.0) for i in range(count)]


# What the properties of the simulation draw: windows (the services each serves, in its
# order, and the minutes until it is free: below 0, already late), waiting tickets
# (service, green channel, minutes waited), each service's mean minutes and newcomers per
# minute, and the aging rule.
def drawn_lanes(earliest_free: float) -> st.SearchStrategy[list[tuple[list[str], float]]]:
    services = st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True)
    return st.lists(
        st.tuples(services, st.floats(earliest_free, 30, allow_nan=False)), min_size=1, max_size=4
    )


def drawn_queue(
    *, min_size: int = 0, max_size: int
) -> st.SearchStrategy[list[tuple[str, bool, float]]]:
    waiting = st.tuples(st.sampled_from("abc"), st.booleans(), st.floats(0, 120, allow_nan=False))
    return st.lists(waiting, min_size=min_size, max_size=max_size)


MEANS = st.tuples(*[st.floats(0, 30, allow_nan=False)] * 3)
RATES = st.tuples(*[st.floats(0, 0.5, allow_nan=False)] * 3)
AGING = st.one_of(st.none(), st.floats(1, 60, allow_nan=False))


# -- the simulation ----------------------------------------------------------------------------


@given(
    ahead=st.integers(0, 60),
    mean=st.floats(0.5, 60, allow_nan=False),
    busy=st.floats(0, 30, allow_nan=False),
)
def test_one_service_one_window_waits_ahead_times_the_mean(ahead, mean, busy):
    queue = waiters("s", ahead + 1)
    found = simulate([Lane("w", ("s",), busy)], queue, {"s": mean}, newcomers=["s"])
    mine = queue[-1].id
    assert found.tickets[mine] == pytest.approx(busy + ahead * mean)
    # A newcomer is behind everyone, this ticket too.
    assert found.newcomers["s"] == pytest.approx(busy + (ahead + 1) * mean)


def test_shared_windows_count_everyone_queued_there():
    # One 全科 window serves 社保 before 综合: a 综合 newcomer waits for all four 社保
    # citizens (the old formula said 0: nobody waits for 综合).
    lane = Lane("w1", ("social", "general"), 0.0)
    found = simulate(
        [lane], waiters("social", 4), {"social": 8.0, "general": 3.0}, newcomers=["general"]
    )
    assert found.newcomer_minutes("general") == 32


def test_the_green_channel_goes_first_and_windows_in_their_own_order():
    lanes = [Lane("w1", ("a", "b"), 0.0), Lane("w2", ("b", "a"), 5.0)]
    normal = waiters("a", 3)
    green = waiters("b", 1, green=True, first_rank=10)
    found = simulate(lanes, [*normal, *green], {"a": 10.0, "b": 4.0})
    assert found.tickets["b0"] == 0  # w1 is free first and takes the green ticket
    assert found.tickets["a0"] == 4  # then w1 again (w2 is busy until 5)
    assert found.tickets["a1"] == 5  # w2 takes the next (no b waiting)
    assert found.tickets["a2"] == 14


def test_expected_arrivals_are_served_in_their_turn():
    lane = Lane("w1", ("a", "b"), 0.0)
    # One 'a' expected every 10 minutes; 'a' goes first at this window.
    found = simulate(
        [lane], waiters("b", 2), {"a": 6.0, "b": 5.0}, demand={"a": Demand(normal=0.1)}, horizon=60
    )
    # b0 at 0 (nobody else there), then the first 'a' arrives at 5 and goes first: b1 at 11.
    assert found.tickets["b0"] == 0
    assert found.tickets["b1"] == 11


def test_a_service_no_window_serves_has_no_estimate():
    found = simulate(
        [Lane("w1", ("a",), 0.0)], waiters("b", 2), {"a": 5.0, "b": 5.0}, newcomers=["b"]
    )
    assert found.ticket_minutes("b0") is None
    assert found.newcomer_minutes("b") is None


@settings(max_examples=200)
@given(
    lanes=drawn_lanes(-5),
    tickets=drawn_queue(max_size=40),
    means=MEANS,
    rates=RATES,
    aging=AGING,
)
def test_estimates_are_never_negative_and_everyone_served_is_estimated(
    lanes, tickets, means, rates, aging
):
    served = {s for services, _ in lanes for s in services}
    queue = [Waiter(f"t{i}", s, g, i, waited) for i, (s, g, waited) in enumerate(tickets)]
    found = simulate(
        [Lane(f"w{i}", tuple(services), free) for i, (services, free) in enumerate(lanes)],
        queue,
        dict(zip("abc", means, strict=True)),
        aging=aging,
        newcomers="abc",
        demand={s: Demand(r, r / 4) for s, r in zip("abc", rates, strict=True)},
    )
    for t in queue:
        minutes = found.ticket_minutes(t.id)
        assert (minutes is not None) is (t.service in served)
        assert minutes is None or minutes >= 0
    for service in "abc":
        minutes = found.newcomer_minutes(service)
        assert (minutes is not None) is (service in served)
        assert minutes is None or minutes >= 0


@settings(max_examples=300)
@given(
    lanes=drawn_lanes(0),
    tickets=drawn_queue(max_size=30),
    added=st.lists(st.sampled_from("abc"), min_size=1, max_size=6),
    means=MEANS,
    rates=RATES,
    aging=AGING,
)
def test_a_ticket_added_at_the_back_is_estimated_as_if_the_queue_were_played_again(
    lanes, tickets, added, means, rates, aging
):
    """Simulation.append (a take reusing the last play) gives every ticket and newcomer the
    same estimate as a play of the whole queue with the new tickets in it."""
    played = [Lane(f"w{i}", tuple(services), free) for i, (services, free) in enumerate(lanes)]
    queue = [Waiter(f"t{i}", s, g, i, waited) for i, (s, g, waited) in enumerate(tickets)]
    minutes = dict(zip("abc", means, strict=True))
    demand = {s: Demand(r, r / 4) for s, r in zip("abc", rates, strict=True)}
    options = {"aging": aging, "newcomers": "abc", "horizon": 60.0}
    kept = Simulation(played, queue, minutes, demand=demand, **options)
    before = kept.estimates()
    frozen = (dict(before.tickets), dict(before.newcomers))
    for k, service in enumerate(added):
        ticket = Waiter(f"n{k}", service, False, len(tickets) + k, 0.0)
        queue.append(ticket)
        more = demand[service]
        demand[service] = Demand(more.normal + 1 / 60, more.green)
        mine = kept.append(ticket, demand[service])
        again = simulate(played, queue, minutes, demand=demand, **options)
        assert mine == again.tickets.get(ticket.id)
        after = kept.estimates()
        assert after.tickets == again.tickets
        assert after.newcomers == again.newcomers
    # What was handed out before stays as it was.
    assert (before.tickets, before.newcomers) == frozen


@settings(max_examples=300)
@given(
    lanes=drawn_lanes(0),
    tickets=drawn_queue(max_size=30),
    added=st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=10),
    means=MEANS,
    rates=RATES,
    aging=AGING,
)
def test_tickets_added_one_after_another_without_a_read_get_a_whole_play_s_estimates(
    lanes, tickets, added, means, rates, aging
):
    """Several takes in a row (a group of the hall's writer): each append plays only until
    its ticket is called and leaves the rest paused; each still gets the estimate a play of
    the whole queue gives it, and a read (``estimates``) after any of them, or only after
    the last, gives every ticket and newcomer the whole play's estimates."""
    played = [Lane(f"w{i}", tuple(services), free) for i, (services, free) in enumerate(lanes)]
    queue = [Waiter(f"t{i}", s, g, i, waited) for i, (s, g, waited) in enumerate(tickets)]
    minutes = dict(zip("abc", means, strict=True))
    demand = {s: Demand(r, r / 4) for s, r in zip("abc", rates, strict=True)}
    options = {"aging": aging, "newcomers": "abc", "horizon": 60.0}
    kept = Simulation(played, queue, minutes, demand=demand, **options)
    for k, (service, read) in enumerate(added):
        ticket = Waiter(f"n{k}", service, False, len(tickets) + k, 0.0)
        queue.append(ticket)
        more = demand[service]
        demand[service] = Demand(more.normal + 1 / 60, more.green)
        mine = kept.append(ticket, demand[service])
        again = simulate(played, queue, minutes, demand=demand, **options)
        assert mine == again.tickets.get(ticket.id)
        if read or k == len(added) - 1:
            after = kept.estimates()
            assert after.tickets == again.tickets
            assert after.newcomers == again.newcomers


@settings(max_examples=300)
@given(
    lanes=drawn_lanes(-5),
    tickets=drawn_queue(min_size=1, max_size=40),
    asked=st.lists(st.integers(0, 39), min_size=1, max_size=4),
    means=MEANS,
    rates=RATES,
    aging=AGING,
)
def test_a_play_stopped_once_the_asked_tickets_are_called_gives_them_the_same_estimate(
    lanes, tickets, asked, means, rates, aging
):
    """``until`` (the waits of ``ticket.turn_near`` after a call): the tickets asked for get
    exactly what the whole play gives them, and a stopped play takes no more tickets."""
    played = [Lane(f"w{i}", tuple(services), free) for i, (services, free) in enumerate(lanes)]
    queue = [Waiter(f"t{i}", s, g, i, waited) for i, (s, g, waited) in enumerate(tickets)]
    options = {
        "aging": aging,
        "newcomers": "abc",
        "demand": {s: Demand(r, r / 4) for s, r in zip("abc", rates, strict=True)},
    }
    minutes = dict(zip("abc", means, strict=True))
    ids = {f"t{i % len(tickets)}" for i in asked}
    whole = simulate(played, queue, minutes, **options)
    stopped = Simulation(played, queue, minutes, until=ids, **options)
    part = stopped.estimates()
    for tid in ids:
        assert part.tickets.get(tid) == whole.tickets.get(tid)
    with pytest.raises(ValueError, match="stopped early"):
        stopped.append(Waiter("new", "a", False, 10_000, 0.0))


def test_turn_near_after_a_call_shows_the_wait_a_whole_play_shows(make_config):
    """A call gives ``ticket.turn_near`` its wait from a play stopped early: the same number
    a play of the whole queue gives, and nothing about a partial play is kept."""
    engine = engine_for(make_config(queue={"turn_near": 2}))
    for window in ("w1", "w2", "w3"):
        engine.apply(op.SignIn(window=window, staff=f"s-{window}"), NOW)
    for k in range(30):
        take(engine, ("general", "social", "fund")[k % 3])
    later = NOW + dt.timedelta(seconds=5)  # past ESTIMATE_REUSE: no kept play to use
    fired = []
    for window in ("w1", "w2", "w3", "w1", "w3"):
        out = engine.apply(op.CallNext(window=window), later)
        services = [s.id for s in engine.config.services]
        whole = estimate_queue(engine, later, services)
        for event in out.events:
            if isinstance(event.payload, ev.TicketTurnNear):
                fired.append(event.payload.ticket)
                tid = next(
                    t.id for t in engine.tickets.values() if t.number == event.payload.ticket
                )
                assert event.payload.wait_minutes == whole.ticket_minutes(tid)
        assert not engine.has_estimates(later)  # the stopped play is not kept
        assert engine.estimates(later) == whole
        later += dt.timedelta(seconds=5)
    assert fired  # the calls moved someone to their turn


def test_only_a_normal_ticket_behind_everyone_joins_a_kept_play():
    kept = Simulation([Lane("w1", ("a",), 0.0)], waiters("a", 3), {"a": 5.0}, newcomers="a")
    with pytest.raises(ValueError, match="normal"):
        kept.append(Waiter("g", "a", True, 10, 0.0))
    with pytest.raises(ValueError, match="behind"):
        kept.append(Waiter("early", "a", False, 0, 0.0))
    assert kept.append(Waiter("late", "a", False, 10, 0.0)) == 15.0


# -- the engine -------------------------------------------------------------------------------


def tokens() -> itertools.count[int]:
    return itertools.count(1)


def engine_for(config: HallAgentConfig) -> QueueEngine:
    counter = tokens()
    engine = QueueEngine.fresh(config, NOW)
    engine._token_source = lambda: f"tok{next(counter):019d}"
    return engine


def take(engine: QueueEngine, service: str, now: dt.datetime = NOW, **kw: object) -> Ticket:
    out = engine.apply(op.Take(service=service, **kw), now)  # type: ignore[arg-type]
    assert out.ticket is not None
    return out.ticket


def test_when_service_times_are_the_mean_the_estimate_is_the_real_wait(make_config):
    # general (6 min) and social (4 min) share w1 and w2, in opposite orders; fund is alone.
    engine = engine_for(make_config())
    for w in ("w1", "w2", "w3"):
        engine.apply(op.SignIn(window=w, staff=f"s-{w}"), NOW)
    services = ["general", "social", "general", "fund", "social", "general", "social", "fund"]
    tickets = [take(engine, s) for s in services]
    tickets.append(take(engine, "general", priority=Priority.ELDERLY))
    # An hour later: no one else is expected (the last hour brought no one).
    start = NOW + dt.timedelta(minutes=61)
    estimates = engine.estimates(start)
    shown = {t.id: estimates.tickets[t.id] for t in tickets}

    # Play it out: each window calls next exactly its citizen's mean after calling them.
    means = {"general": 6.0, "social": 4.0, "fund": 10.0}
    free = {"w1": start, "w2": start, "w3": start}
    real: dict[str, float] = {}
    while len(real) < len(tickets):
        window = min(free, key=lambda w: (free[w], w))
        out = engine.apply(op.CallNext(window=window), free[window])
        if out.ticket is None:
            free[window] = start + dt.timedelta(hours=5)
            continue
        real[out.ticket.id] = (free[window] - start).total_seconds() / 60
        free[window] += dt.timedelta(minutes=means[out.ticket.service])
    assert real == shown


def test_turn_near_fires_once_per_ticket(make_config):
    engine = engine_for(make_config(queue={"turn_near": 2}))
    engine.apply(op.SignIn(window="w3", staff="s-3"), NOW)
    fund = [take(engine, "fund") for _ in range(5)]  # only w3 serves fund
    mine = fund[-1]

    def near(out) -> list[tuple[str, int]]:
        return [
            (e.payload.ticket, e.payload.ahead)
            for e in out.events
            if isinstance(e.payload, ev.TicketTurnNear)
        ]

    fired = []
    for _ in range(2):  # C04: 3 ahead -> 2, then C05 (this one): 3 -> 2
        fired += near(engine.apply(op.CallNext(window="w3"), NOW))
    assert fired == [("C04", 2), (mine.number, 2)]
    assert engine.tickets[mine.id].turn_near
    # Two green-channel citizens push it back to 4 ahead; moving up to 2 again says nothing.
    for _ in range(2):
        fired += near(engine.apply(op.Take(service="fund", priority=Priority.DISABLED), NOW))
    for _ in range(3):
        fired += near(engine.apply(op.CallNext(window="w3"), NOW))
    assert fired == [("C04", 2), (mine.number, 2)]


def test_a_ticket_taken_near_its_turn_does_not_fire(make_config):
    engine = engine_for(make_config(queue={"turn_near": 3}))
    out = engine.apply(op.Take(service="fund"), NOW)
    assert not [e for e in out.events if isinstance(e.payload, ev.TicketTurnNear)]


def test_ticket_status_only_with_a_district_qr_url_and_only_for_what_moved(make_config):
    quiet = engine_for(make_config())
    take(quiet, "general")
    assert not [
        e for e in quiet.apply(op.CallNext(window="w1"), NOW).events if e.type == "ticket.status"
    ]

    engine = engine_for(make_config(ticket={"qr_url": "https://zwfw.example.gov.cn/q/{token}"}))
    issued = engine.apply(op.Take(service="general"), NOW)
    (status,) = [e.payload for e in issued.events if isinstance(e.payload, ev.TicketStatusUpdate)]
    assert (status.ticket, status.status, status.ahead, status.token) == (
        "A001",
        "waiting",
        0,
        "tok0000000000000000001",
    )
    for _ in range(2):
        take(engine, "general")
    take(engine, "fund")  # another service: its place does not move when general's does

    out = engine.apply(op.CallNext(window="w1"), NOW)

    updates = {
        e.payload.ticket: e.payload
        for e in out.events
        if isinstance(e.payload, ev.TicketStatusUpdate)
    }
    assert set(updates) == {"A001", "A002", "A003"}
    assert (updates["A001"].status, updates["A001"].window_name) == ("called", "1号窗口")
    assert (updates["A002"].ahead, updates["A003"].ahead) == (0, 1)
    assert "token" not in engine.snapshot(NOW)["waiting"][0]  # never in the public view


# What the engine keeps between operations: the play and the places.

OPERATIONS = st.one_of(
    st.builds(
        op.Take,
        service=st.sampled_from(["general", "social", "fund"]),
        priority=st.sampled_from([Priority.NORMAL] * 4 + [Priority.ELDERLY]),
    ),
    st.builds(op.CallNext, window=st.sampled_from(["w1", "w2", "w3"])),
    st.builds(op.Finish, window=st.sampled_from(["w1", "w2", "w3"])),
    st.builds(op.NoShow, window=st.sampled_from(["w1", "w2", "w3"])),
    st.builds(
        op.Transfer,
        window=st.sampled_from(["w1", "w2", "w3"]),
        service=st.sampled_from(["general", "social", "fund"]),
        position=st.sampled_from(["front", "back"]),
    ),
    st.builds(op.Pause, window=st.sampled_from(["w1", "w2", "w3"])),
    st.builds(op.Resume, window=st.sampled_from(["w1", "w2", "w3"])),
    st.builds(op.Cancel, number=st.sampled_from(["A001", "A002", "B001", "B003", "C002"])),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.tuples(OPERATIONS, st.sampled_from([0, 0, 0, 1, 30, 90, 600])), max_size=40),
    aging=st.sampled_from([None, 5]),
)
def test_what_the_engine_keeps_equals_counting_and_playing_again(tmp_path_factory, steps, aging):
    """Takes join the kept play and every operation updates the kept places; after each
    operation both must equal a recount and a new play of the same queue (at the play's
    time), and a take shows what the new play says."""
    data = queue_hall_data(tmp_path_factory.mktemp("state"))
    data["services"][2]["daily_cap"] = 6  # the last ticket of the day expects no one after
    config = HallAgentConfig.model_validate(
        {
            **data,
            "queue": {"recall_limit": 2, "aging_minutes": aging, "turn_near": 2},
            "ticket": {"qr_url": "https://zwfw.example.gov.cn/q/{token}"},
        }
    )
    engine = engine_for(config)
    now = NOW
    engine.apply(op.SignIn(window="w1", staff="s-1"), now)
    services = [s.id for s in config.services]
    for operation, seconds in steps:
        now += dt.timedelta(seconds=seconds)
        try:
            out = engine.apply(operation, now)
        except QueueError:
            continue
        copy = QueueEngine(
            config,
            HallCounters.from_json(engine.hall.to_json()),
            [Ticket.from_json(t.to_json()) for t in engine.tickets.values()],
            [WindowStatus.from_json(w.to_json()) for w in engine.windows.values()],
        )
        assert engine._aheads() == copy._aheads()
        kept = engine.estimates(now)
        at = engine._kept.at if engine._kept is not None else now
        again = estimate_queue(copy, at, services)
        assert (kept.tickets, kept.newcomers) == (again.tickets, again.newcomers)
        assert engine.places(now) == {
            t.id: (copy.people_ahead(t, at), copy.wait_minutes(t, at, again))
            for t in copy.waiting()
        }
        if isinstance(operation, op.Take) and out.ticket is not None:
            assert out.result["wait_minutes"] == copy.wait_minutes(out.ticket, at, again)
            assert out.result["ahead"] == copy.people_ahead(out.ticket, at)


# -- the play against a plain reference ---------------------------------------------------------


def reference_simulate(lanes, waiting, minutes, *, aging, newcomers, demand, horizon=60.0):
    """The routing played forward step by step in the plainest way (no marks, no unpacked
    lines, nothing kept): what :class:`Simulation`'s fast loop must give, estimate for
    estimate (the module's rules, written out once more)."""
    import heapq

    last = (1 << 62, "~")
    lines = {}  # (service, green) -> [entries]; an entry: (rank, id or None, waited or -arrival)
    for w in sorted(waiting, key=lambda w: (w.rank, w.id)):
        lines.setdefault((w.service, w.green), []).append(((w.rank, w.id), w.id, w.waited))
    phantoms = set(newcomers)
    for service in phantoms:
        lines.setdefault((service, False), []).append((last, None, 0.0))
    for service, rate in demand.items():
        for green, per_minute in ((False, rate.normal), (True, rate.green)):
            count = int(per_minute * horizon + 0.5) if per_minute > 0 else 0
            line = lines.setdefault((service, green), [])
            line.extend(((last[0] + 1 + k, ""), "", -(k + 0.5) / per_minute) for k in range(count))
    total = sum(1 for line in lines.values() for _, who, _ in line if who != "")
    heap = [(max(0.0, lane.free_in), i) for i, lane in enumerate(lanes)]
    heapq.heapify(heap)
    called, newcomer_at, done = {}, {}, 0
    while heap and done < total:
        at, i = heapq.heappop(heap)
        best, source, soonest = None, None, None
        for order, service in enumerate(lanes[i].services):
            for green in (True, False):
                line = lines.get((service, green))
                if not line:
                    continue
                rank, who, waited = line[0]
                if waited < 0 and -waited > at:
                    soonest = -waited if soonest is None else min(soonest, -waited)
                    continue
                if green:
                    key = (0, order, rank)
                elif aging is not None and who is not None and waited + at >= aging:
                    key = (1, 0, rank)
                else:
                    key = (2, order, rank)
                if best is None or key < best:
                    best, source = key, (service, green)
        if source is None:
            if soonest is not None:
                heapq.heappush(heap, (soonest, i))
            continue
        _, who, _ = lines[source].pop(0)
        if who is None:
            newcomer_at[source[0]] = at
            heapq.heappush(heap, (at, i))
            done += 1
            continue
        heapq.heappush(heap, (at + max(0.0, minutes.get(source[0], 0.0)), i))
        if who:
            called[who] = at
            done += 1
    return called, newcomer_at


@settings(max_examples=300, deadline=None)
@given(
    lanes=st.lists(
        st.tuples(
            st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True),
            st.floats(-5, 30, allow_nan=False),
        ),
        min_size=1,
        max_size=5,
    ),
    tickets=st.lists(
        st.tuples(st.sampled_from("abcd"), st.booleans(), st.floats(0, 120, allow_nan=False)),
        max_size=50,
    ),
    added=st.lists(st.sampled_from("abcd"), max_size=8),
    means=st.tuples(*[st.floats(0, 30, allow_nan=False)] * 4),
    rates=st.tuples(*[st.floats(0, 0.5, allow_nan=False)] * 4),
    aging=AGING,
)
def test_the_play_and_its_appends_equal_a_plain_step_by_step_play(
    lanes, tickets, added, means, rates, aging
):
    """The play's loop (lines unpacked once, empty lines skipped, marks kept) and every
    take that joins it give each ticket and newcomer exactly what the plain reference
    play gives the same queue."""
    played = [Lane(f"w{i}", tuple(services), free) for i, (services, free) in enumerate(lanes)]
    queue = [Waiter(f"t{i}", s, g, i, waited) for i, (s, g, waited) in enumerate(tickets)]
    minutes = dict(zip("abcd", means, strict=True))
    demand = {s: Demand(r, r / 4) for s, r in zip("abcd", rates, strict=True)}
    options = {"aging": aging, "newcomers": "abcd", "horizon": 60.0}
    kept = Simulation(played, queue, minutes, demand=demand, **options)
    found = kept.estimates()
    assert (found.tickets, found.newcomers) == reference_simulate(
        played, queue, minutes, demand=demand, **options
    )
    for k, service in enumerate(added):
        ticket = Waiter(f"n{k}", service, False, len(tickets) + k, 0.0)
        queue.append(ticket)
        more = demand[service]
        demand[service] = Demand(more.normal + 1 / 60, more.green)
        mine = kept.append(ticket, demand[service])
        called, newcomers = reference_simulate(played, queue, minutes, demand=demand, **options)
        assert mine == called.get(ticket.id)
        if k % 2 or k == len(added) - 1:
            found = kept.estimates()
            assert (found.tickets, found.newcomers) == (called, newcomers)
