"""The queue engine, one rule at a time: issuing, routing, window operations, the day."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import NotFound, Refused
from agent.core.model import (
    PRIVATE_TICKET_FIELDS,
    Priority,
    Source,
    Ticket,
    TicketStatus,
    WindowState,
    WindowStatus,
    business_day,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = dt.date(2026, 3, 2)
TUESDAY = MONDAY + dt.timedelta(days=1)
SATURDAY = MONDAY + dt.timedelta(days=5)


def at(hhmm: str, day: dt.date = MONDAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), SHANGHAI)


NOW = at("10:00")


@pytest.fixture
def engine(config: HallAgentConfig) -> QueueEngine:
    return QueueEngine.fresh(config, NOW)


def take(engine: QueueEngine, service: str, now: dt.datetime = NOW, **kwargs: object) -> Ticket:
    out = engine.take(service, now, **kwargs)  # type: ignore[arg-type]
    return engine.tickets[out.result["ticket"]["id"]]


def types(out: Outcome) -> list[str]:
    return [e.type for e in out.events]


def called(out: Outcome) -> str | None:
    ticket = out.result["ticket"]
    return None if ticket is None else ticket["number"]


# -- issuing ---------------------------------------------------------------------------


def test_take_numbers_each_service_from_one_with_its_prefix_and_width(engine: QueueEngine) -> None:
    numbers = [take(engine, s).number for s in ("general", "general", "social", "fund")]

    assert numbers == ["A001", "A002", "B001", "C01"]
    assert engine.hall.counters == {"general": 2, "social": 1, "fund": 1}


def test_take_reports_the_ticket_and_an_issued_event(engine: QueueEngine) -> None:
    take(engine, "general")

    out = engine.take("general", NOW, source=Source.ID_CARD)

    assert out.result["ticket"]["number"] == "A002"
    assert out.result["ticket"]["status"] == "waiting"
    assert "id_hash" not in out.result["ticket"]
    assert out.result["ahead"] == 1
    # 1 ahead, but two windows serve it (neither open: both assumed to open now)
    assert out.result["wait_minutes"] == 0
    assert out.hall_changed
    (event,) = out.events
    assert event.type == "ticket.issued"
    assert event.at == NOW
    assert event.data["ticket"] == "A002"
    assert event.data["service"] == "general"
    assert event.data["day"] == "2026-03-02"
    assert event.data["source"] == "id_card"
    assert event.data["ahead"] == 1
    assert set(out.tickets) == {"20260302-A002"}


def test_take_needs_a_time_zone_aware_time(engine: QueueEngine) -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        engine.take("general", dt.datetime(2026, 3, 2, 10, 0))


def test_take_for_an_unknown_service_names_the_services(engine: QueueEngine) -> None:
    with pytest.raises(NotFound, match=r"no service 'passport'.*general \(综合业务\)"):
        engine.take("passport", NOW)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (at("08:59"), False),
        (at("09:00"), True),
        (at("11:59"), True),
        (at("12:00"), False),  # lunch break
        (at("13:00"), False),
        (at("13:30"), True),
        (at("16:59"), True),
        (at("17:00"), False),
        (at("10:00", SATURDAY), False),
        (at("10:00", SATURDAY + dt.timedelta(days=1)), False),
        (at("10:00", MONDAY + dt.timedelta(days=4)), True),  # Friday
    ],
)
def test_take_follows_service_hours_with_lunch_break_and_weekdays(
    config: HallAgentConfig, when: dt.datetime, open_: bool
) -> None:
    engine = QueueEngine.fresh(config, when)
    if open_:
        assert take(engine, "general", when).number == "A001"
    else:
        with pytest.raises(Refused, match=r"综合业务 is not issuing tickets now.*09:00-12:00"):
            engine.take("general", when)
        assert engine.hall.counters == {}
        assert engine.tickets == {}


def test_hours_are_the_halls_local_time(config: HallAgentConfig) -> None:
    utc_0230 = dt.datetime(2026, 3, 2, 2, 30, tzinfo=dt.UTC)  # 10:30 in Shanghai
    utc_1230 = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)  # 20:30 in Shanghai
    engine = QueueEngine.fresh(config, utc_0230)

    assert take(engine, "general", utc_0230).number == "A001"
    with pytest.raises(Refused, match="not issuing"):
        engine.take("general", utc_1230)


def test_a_service_without_hours_issues_around_the_clock(engine: QueueEngine) -> None:
    assert take(engine, "social", at("23:30")).number == "B001"


def test_daily_cap_refuses_and_restarts_the_next_business_day(make_config) -> None:
    engine = QueueEngine.fresh(make_config(services={"social": {"daily_cap": 2}}), NOW)
    take(engine, "social")
    take(engine, "social")

    with pytest.raises(Refused, match="社保医保 has reached today's limit of 2 tickets"):
        engine.take("social", NOW)
    assert engine.hall.counters["social"] == 2
    assert take(engine, "general").number == "A001"  # other services are not capped

    assert take(engine, "social", at("10:00", TUESDAY)).number == "B001"


def test_number_width_exhausted_is_refused(engine: QueueEngine) -> None:
    numbers = [take(engine, "fund").number for _ in range(99)]

    assert numbers[0] == "C01"
    assert numbers[-1] == "C99"
    with pytest.raises(Refused, match="公积金 has used every 2-digit number today"):
        engine.take("fund", NOW)
    assert len(set(numbers)) == 99


def test_one_open_ticket_per_id_card_per_service(engine: QueueEngine) -> None:
    first = take(engine, "general", id_hash="id-1")

    with pytest.raises(Refused, match="this ID card already holds ticket A001 for 综合业务"):
        engine.take("general", NOW, id_hash="id-1")
    assert take(engine, "social", id_hash="id-1").number == "B001"
    assert take(engine, "general", id_hash="id-2").number == "A002"
    assert take(engine, "general").number == "A003"  # no ID card, no rule

    engine.call_next("w1", NOW)  # the holder is called: still open
    assert first.status is TicketStatus.CALLED
    with pytest.raises(Refused, match="already holds ticket A001"):
        engine.take("general", NOW, id_hash="id-1")
    engine.finish("w1", NOW)

    assert take(engine, "general", id_hash="id-1").number == "A004"


def test_one_ticket_per_id_card_can_be_switched_off(make_config) -> None:
    engine = QueueEngine.fresh(make_config(queue={"one_waiting_ticket_per_id": False}), NOW)
    take(engine, "general", id_hash="id-1")

    assert take(engine, "general", id_hash="id-1").number == "A002"


@pytest.mark.parametrize(
    ("birth", "priority"),
    [
        (dt.date(1961, 3, 2), Priority.ELDERLY),  # 65 today
        (dt.date(1950, 1, 1), Priority.ELDERLY),
        (dt.date(1961, 3, 3), Priority.NORMAL),  # 65 tomorrow
        (dt.date(1990, 6, 1), Priority.NORMAL),
    ],
)
def test_green_channel_from_birth_date(
    engine: QueueEngine, birth: dt.date, priority: Priority
) -> None:
    ticket = take(engine, "general", birth_date=birth)

    assert ticket.priority is priority


def test_green_channel_age_is_configured(make_config) -> None:
    engine = QueueEngine.fresh(make_config(queue={"green_channel_age": 70}), NOW)

    assert take(engine, "general", birth_date=dt.date(1960, 1, 1)).priority is Priority.NORMAL
    assert take(engine, "general", birth_date=dt.date(1956, 3, 2)).priority is Priority.ELDERLY


def test_an_explicit_priority_is_kept_whatever_the_age(engine: QueueEngine) -> None:
    ticket = take(engine, "general", priority=Priority.DISABLED, birth_date=dt.date(1950, 1, 1))

    assert ticket.priority is Priority.DISABLED


def test_waiting_warning_when_the_queue_is_long(make_config) -> None:
    engine = QueueEngine.fresh(make_config(services={"social": {"waiting_warning": 3}}), NOW)
    first = engine.take("social", NOW)
    second = engine.take("social", NOW)
    third = engine.take("social", NOW)

    assert "warning" not in first.result
    assert "warning" not in second.result
    assert third.result["warning"] == "3 people are waiting for 社保医保; the wait will be long"
    assert "warning" not in engine.take("general", NOW).result


# -- routing ---------------------------------------------------------------------------


def test_next_follows_the_windows_service_order(engine: QueueEngine) -> None:
    take(engine, "social")
    take(engine, "general")

    assert called(engine.call_next("w1", NOW)) == "A001"  # w1 serves general first
    assert called(engine.call_next("w2", NOW)) == "B001"  # w2 serves social first


def test_a_window_only_calls_the_services_it_serves(engine: QueueEngine) -> None:
    take(engine, "fund")

    out = engine.call_next("w1", NOW)

    assert out.result == {"ticket": None, "message": "no one is waiting for window w1"}
    assert called(engine.call_next("w3", NOW)) == "C01"


def test_green_channel_and_appointments_go_before_normal_in_arrival_order(
    engine: QueueEngine,
) -> None:
    take(engine, "general")  # A001 normal
    take(engine, "general", priority=Priority.APPOINTMENT)  # A002
    take(engine, "general", birth_date=dt.date(1940, 5, 5))  # A003 elderly
    take(engine, "general")  # A004 normal
    take(engine, "general", priority=Priority.VETERAN)  # A005

    order = [called(engine.call_next("w1", NOW)) for _ in range(5)]

    assert order == ["A002", "A003", "A005", "A001", "A004"]


def test_green_channel_beats_the_windows_service_order(engine: QueueEngine) -> None:
    take(engine, "general")
    take(engine, "social", priority=Priority.DISABLED)

    assert called(engine.call_next("w1", NOW)) == "B001"


def test_fifo_within_a_class(engine: QueueEngine) -> None:
    for _ in range(4):
        take(engine, "social")

    order = [called(engine.call_next(w, NOW)) for w in ("w2", "w1", "w2", "w1")]

    assert order == ["B001", "B002", "B003", "B004"]


def test_aging_lets_a_long_wait_jump_the_service_order(make_config) -> None:
    engine = QueueEngine.fresh(make_config(queue={"aging_minutes": 30}), at("09:00"))
    take(engine, "social", at("09:00"))
    take(engine, "general", at("09:20"))
    take(engine, "general", at("09:21"))

    assert engine.next_for("w1", at("09:29")).number == "A001"  # B001 waited 29 minutes
    assert called(engine.call_next("w1", at("09:30"))) == "B001"  # now 30: it jumps ahead
    assert called(engine.call_next("w1", at("09:31"))) == "A001"


def test_aging_among_aged_tickets_is_by_arrival_and_green_still_goes_first(make_config) -> None:
    engine = QueueEngine.fresh(make_config(queue={"aging_minutes": 30}), at("09:00"))
    take(engine, "general", at("09:05"))  # A001
    take(engine, "social", at("09:00"))  # B001: earlier clock reading, but issued later
    take(engine, "general", at("10:00"), priority=Priority.APPOINTMENT)  # A002

    order = [called(engine.call_next("w1", at("10:00"))) for _ in range(3)]

    assert order == ["A002", "A001", "B001"]


def test_without_aging_a_long_wait_does_not_jump(engine: QueueEngine) -> None:
    take(engine, "social", at("09:00"))
    take(engine, "general", at("11:00"))

    assert called(engine.call_next("w1", at("11:30"))) == "A001"


def test_next_for_only_looks(engine: QueueEngine) -> None:
    ticket = take(engine, "general")

    assert engine.next_for("w1", NOW) is ticket
    assert ticket.status is TicketStatus.WAITING
    assert engine.windows["w1"].current is None


# -- calling, recalling, serving, finishing --------------------------------------------


def test_call_next_opens_the_window_and_calls(engine: QueueEngine) -> None:
    engine.sign_in("w1", "s-007", NOW, staff_name="王芳")
    engine.pause("w1", NOW)
    engine.resume("w1", NOW)
    ticket = take(engine, "general")

    out = engine.call_next("w1", NOW)

    assert types(out) == ["ticket.called"]
    assert ticket.status is TicketStatus.CALLED
    assert ticket.window == "w1"
    assert ticket.staff == "s-007"
    assert ticket.called_count == 1
    assert ticket.called_at == NOW
    assert engine.windows["w1"].current == ticket.id
    data = out.events[0].data
    assert data["window"] == "w1"
    assert data["window_name"] == "1号窗口"
    assert data["window_number"] == 1
    assert data["staff"] == "s-007"


def test_call_next_on_a_closed_window_opens_it(engine: QueueEngine) -> None:
    take(engine, "general")

    out = engine.call_next("w1", NOW)

    assert types(out) == ["window.opened", "ticket.called"]
    assert engine.windows["w1"].state is WindowState.OPEN


def test_call_next_at_an_unknown_window_names_the_windows(engine: QueueEngine) -> None:
    with pytest.raises(NotFound, match="there is no window 'w9'; the windows are w1, w2, w3"):
        engine.call_next("w9", NOW)


def test_call_next_finishes_the_current_ticket_implicitly(engine: QueueEngine) -> None:
    first = take(engine, "general")
    second = take(engine, "general")
    engine.call_next("w1", NOW)

    out = engine.call_next("w1", NOW + dt.timedelta(minutes=8))

    assert types(out) == ["ticket.finished", "ticket.called"]
    assert out.events[0].data["implicit"] is True
    assert out.events[0].data["minutes"] == 8
    assert first.status is TicketStatus.FINISHED
    assert second.status is TicketStatus.CALLED
    assert engine.hall.durations["general"] == [8.0]


def test_call_next_with_nobody_waiting_still_finishes_the_current(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)

    out = engine.call_next("w1", NOW)

    assert called(out) is None
    assert ticket.status is TicketStatus.FINISHED
    assert engine.windows["w1"].current is None


def test_recall_up_to_the_limit(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)

    first = engine.recall("w1", NOW)
    second = engine.recall("w1", NOW)

    assert types(first) == types(second) == ["ticket.recalled"]
    assert second.events[0].data["recalls"] == 2
    assert second.events[0].data["window_number"] == 1
    assert ticket.recalls == 2
    with pytest.raises(Refused, match="A001 was recalled 2 times already; mark it no-show"):
        engine.recall("w1", NOW)
    assert ticket.recalls == 2


def test_recall_needs_a_called_ticket(engine: QueueEngine) -> None:
    with pytest.raises(Refused, match="window w1 has no called ticket; call one first"):
        engine.recall("w1", NOW)
    take(engine, "general")
    engine.call_next("w1", NOW)
    engine.start_serving("w1", NOW)

    with pytest.raises(Refused, match="A001 is serving; only a called ticket can be recalled"):
        engine.recall("w1", NOW)


def test_start_serving_and_finish(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)

    serving = engine.start_serving("w1", NOW + dt.timedelta(minutes=1))
    with pytest.raises(Refused, match="A001 is serving, not called"):
        engine.start_serving("w1", NOW)
    finished = engine.finish("w1", NOW + dt.timedelta(minutes=4))

    assert types(serving) == ["ticket.serving"]
    assert types(finished) == ["ticket.finished"]
    assert finished.events[0].data["implicit"] is False
    assert finished.events[0].data["minutes"] == 3  # counted from the start of service
    assert ticket.status is TicketStatus.FINISHED
    assert ticket.ended_at == NOW + dt.timedelta(minutes=4)
    assert engine.windows["w1"].current is None
    assert engine.average_minutes("general") == 3
    with pytest.raises(Refused, match="window w1 has no called ticket"):
        engine.finish("w1", NOW)


def test_finish_a_called_ticket_counts_from_the_call(engine: QueueEngine) -> None:
    take(engine, "general")
    engine.call_next("w1", NOW)

    out = engine.finish("w1", NOW + dt.timedelta(minutes=2, seconds=30))

    assert out.events[0].data["minutes"] == 2.5


# -- calling a number ------------------------------------------------------------------


def test_call_a_waiting_number_out_of_turn(engine: QueueEngine) -> None:
    take(engine, "general")
    take(engine, "general")
    third = take(engine, "general")

    out = engine.call_number("w1", " a003 ", NOW)

    assert called(out) == "A003"
    assert types(out) == ["window.opened", "ticket.called"]
    assert third.status is TicketStatus.CALLED
    assert called(engine.call_next("w1", NOW)) == "A001"


def test_call_number_calls_back_a_no_show_from_any_window(engine: QueueEngine) -> None:
    ticket = take(engine, "social")
    engine.call_next("w1", NOW)
    engine.no_show("w1", NOW)

    out = engine.call_number("w2", "B001", NOW)

    assert types(out)[-1] == "ticket.called"
    assert ticket.status is TicketStatus.CALLED
    assert ticket.window == "w2"
    assert ticket.called_count == 2
    assert engine.windows["w2"].current == ticket.id
    assert engine.windows["w1"].current is None


def test_a_ticket_called_back_may_be_recalled_again(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)
    engine.recall("w1", NOW)
    engine.recall("w1", NOW)
    engine.no_show("w1", NOW)

    engine.call_number("w1", "A001", NOW)

    assert ticket.recalls == 0
    assert engine.recall("w1", NOW).events[0].data["recalls"] == 1


def test_call_number_finishes_the_windows_current_ticket(engine: QueueEngine) -> None:
    first = take(engine, "general")
    take(engine, "general")
    engine.call_next("w1", NOW)

    out = engine.call_number("w1", "A002", NOW)

    assert types(out) == ["ticket.finished", "ticket.called"]
    assert first.status is TicketStatus.FINISHED


def test_call_number_refusals(engine: QueueEngine) -> None:
    take(engine, "general")  # A001
    take(engine, "fund")  # C01
    take(engine, "general")  # A002
    take(engine, "general")  # A003
    engine.call_next("w2", NOW)  # A001 at w2

    with pytest.raises(NotFound, match=r"no ticket A099 was issued today \(2026-03-02\)"):
        engine.call_number("w1", "A099", NOW)
    with pytest.raises(Refused, match=r"window w1 does not serve 公积金 \(ticket C01\)"):
        engine.call_number("w1", "C01", NOW)
    with pytest.raises(Refused, match="ticket A001 is called and cannot be called"):
        engine.call_number("w1", "A001", NOW)
    engine.cancel("A002", NOW)
    with pytest.raises(Refused, match="ticket A002 is cancelled and cannot be called"):
        engine.call_number("w1", "A002", NOW)
    engine.finish("w2", NOW)
    with pytest.raises(Refused, match="ticket A001 is finished and cannot be called"):
        engine.call_number("w2", "A001", NOW)
    engine.pause("w3", NOW)
    with pytest.raises(Refused, match="window w3 is paused"):
        engine.call_number("w3", "C01", NOW)


# -- no-show, hold and call back ---------------------------------------------------------


def test_no_show(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)

    out = engine.no_show("w1", NOW)

    assert types(out) == ["ticket.no_show"]
    assert out.events[0].data["called_count"] == 1
    assert ticket.status is TicketStatus.NO_SHOW
    assert ticket.ended_at == NOW
    assert engine.windows["w1"].current is None
    assert engine.next_for("w1", NOW) is None


def test_no_show_needs_a_called_ticket(engine: QueueEngine) -> None:
    with pytest.raises(Refused, match="window w1 has no called ticket"):
        engine.no_show("w1", NOW)
    take(engine, "general")
    engine.call_next("w1", NOW)
    engine.start_serving("w1", NOW)

    with pytest.raises(Refused, match="A001 is serving; only a called ticket can be a no-show"):
        engine.no_show("w1", NOW)


def test_hold_parks_the_ticket_and_call_back_returns_it(engine: QueueEngine) -> None:
    held = take(engine, "general")
    take(engine, "general")
    engine.call_next("w1", NOW)
    engine.start_serving("w1", NOW)

    out = engine.hold("w1", NOW)

    assert types(out) == ["ticket.held"]
    assert held.status is TicketStatus.HELD
    assert held.window == "w1"
    assert engine.windows["w1"].current is None
    assert engine.held("w1") == [held]
    assert engine.snapshot(NOW)["windows"][0]["held"] == ["A001"]
    assert called(engine.call_next("w1", NOW)) == "A002"  # a held ticket is not "next"

    back = engine.call_number("w1", "A001", NOW)

    assert types(back) == ["ticket.finished", "ticket.returned"]
    assert held.status is TicketStatus.CALLED
    assert held.called_count == 2
    assert engine.windows["w1"].current == held.id
    assert engine.held("w1") == []


def test_a_held_ticket_belongs_to_its_window(engine: QueueEngine) -> None:
    take(engine, "general")
    engine.call_next("w1", NOW)
    engine.hold("w1", NOW)

    with pytest.raises(Refused, match="ticket A001 is held by window w1"):
        engine.call_number("w2", "A001", NOW)
    with pytest.raises(Refused, match="window w1 has no called ticket"):
        engine.hold("w1", NOW)


# -- transfer --------------------------------------------------------------------------


def test_transfer_to_the_front_of_another_service(engine: QueueEngine) -> None:
    moved = take(engine, "general")
    take(engine, "social")
    take(engine, "social")
    engine.call_next("w1", NOW)
    engine.start_serving("w1", NOW)

    out = engine.transfer("w1", "social", NOW, front=True)

    assert types(out) == ["ticket.transferred"]
    data = out.events[0].data
    assert data["from_service"] == "general"
    assert data["from_window"] == "w1"
    assert data["position"] == "front"
    assert data["service"] == "social"
    assert moved.status is TicketStatus.WAITING
    assert moved.service == "social"
    assert moved.issued_service == "general"
    assert moved.number == "A001"
    assert moved.window is None
    assert moved.serving_at is None
    assert engine.windows["w1"].current is None
    order = [called(engine.call_next("w2", NOW)) for _ in range(3)]
    assert order == ["A001", "B001", "B002"]


def test_transfer_to_the_back_of_another_service(engine: QueueEngine) -> None:
    take(engine, "general")
    take(engine, "social")
    engine.call_next("w1", NOW)

    out = engine.transfer("w1", "social", NOW, front=False)
    take(engine, "social")

    assert out.events[0].data["position"] == "back"
    order = [called(engine.call_next("w2", NOW)) for _ in range(3)]
    assert order == ["B001", "A001", "B002"]


def test_transfer_to_the_front_of_an_empty_queue(engine: QueueEngine) -> None:
    take(engine, "general")
    engine.call_next("w1", NOW)

    engine.transfer("w1", "fund", NOW)

    assert called(engine.call_next("w3", NOW)) == "A001"


def test_transfer_resets_recalls(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.call_next("w1", NOW)
    engine.recall("w1", NOW)
    engine.recall("w1", NOW)
    engine.transfer("w1", "social", NOW)
    engine.call_next("w2", NOW)

    assert engine.recall("w2", NOW).events[0].data["recalls"] == 1
    assert ticket.recalls == 1


def test_transfer_refusals(engine: QueueEngine) -> None:
    with pytest.raises(Refused, match="window w1 has no called ticket"):
        engine.transfer("w1", "social", NOW)
    take(engine, "general")
    engine.call_next("w1", NOW)

    with pytest.raises(Refused, match="ticket A001 is already for 综合业务"):
        engine.transfer("w1", "general", NOW)
    with pytest.raises(NotFound, match="there is no service 'passport'"):
        engine.transfer("w1", "passport", NOW)
    assert engine.windows["w1"].current is not None


# -- cancel ------------------------------------------------------------------------------


def test_cancel_a_waiting_ticket(engine: QueueEngine) -> None:
    ticket = take(engine, "general")

    out = engine.cancel("A001", NOW, reason="left the hall")

    assert types(out) == ["ticket.cancelled"]
    assert out.events[0].data["reason"] == "left the hall"
    assert ticket.status is TicketStatus.CANCELLED
    assert engine.next_for("w1", NOW) is None
    with pytest.raises(Refused, match="A001 is cancelled; only waiting tickets can be cancelled"):
        engine.cancel("A001", NOW)


# -- pause and resume ------------------------------------------------------------------


def test_a_paused_window_cannot_call(engine: QueueEngine) -> None:
    take(engine, "general")
    engine.call_next("w1", NOW)
    take(engine, "general")

    paused = engine.pause("w1", NOW, reason="lunch")

    assert types(paused) == ["window.paused"]
    assert paused.events[0].data == {"window": "w1", "reason": "lunch"}
    assert engine.windows["w1"].state is WindowState.PAUSED
    with pytest.raises(Refused, match="window w1 is paused; resume it before calling"):
        engine.call_next("w1", NOW)
    with pytest.raises(Refused, match="window w1 is paused"):
        engine.call_number("w1", "A002", NOW)
    with pytest.raises(Refused, match="window w1 is already paused"):
        engine.pause("w1", NOW)
    assert types(engine.finish("w1", NOW)) == ["ticket.finished"]  # the current one ends

    resumed = engine.resume("w1", NOW)

    assert types(resumed) == ["window.resumed"]
    assert engine.windows["w1"].state is WindowState.OPEN
    assert called(engine.call_next("w1", NOW)) == "A002"
    with pytest.raises(Refused, match="window w1 is not paused"):
        engine.resume("w1", NOW)


# -- staff ---------------------------------------------------------------------------------


def test_sign_in_opens_the_window(engine: QueueEngine) -> None:
    out = engine.sign_in("w1", " s-007 ", NOW, staff_name="王芳")

    assert types(out) == ["staff.signed_in", "window.opened"]
    assert out.events[0].data == {"window": "w1", "staff": "s-007"}
    window = engine.windows["w1"]
    assert (window.state, window.staff, window.staff_name) == (WindowState.OPEN, "s-007", "王芳")


def test_sign_in_needs_a_staff_number(engine: QueueEngine) -> None:
    with pytest.raises(Refused, match="a staff number is needed to sign in"):
        engine.sign_in("w1", "  ", NOW)
    assert engine.windows["w1"].state is WindowState.CLOSED


def test_staff_moving_windows_signs_out_of_the_old_one(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.sign_in("w1", "s-007", NOW)
    engine.call_next("w1", NOW)

    out = engine.sign_in("w2", "s-007", NOW + dt.timedelta(minutes=5))

    assert types(out) == [
        "ticket.finished",
        "staff.signed_out",
        "window.closed",
        "staff.signed_in",
        "window.opened",
    ]
    assert out.events[1].data["reason"] == "signed in at window w2"
    assert ticket.status is TicketStatus.FINISHED
    assert engine.windows["w1"].staff is None
    assert engine.windows["w1"].state is WindowState.CLOSED
    assert engine.windows["w1"].current is None
    assert engine.windows["w2"].staff == "s-007"


def test_with_one_staff_per_window_a_new_one_replaces_the_first(
    config: HallAgentConfig,
) -> None:
    queue = config.queue.model_copy(update={"staff_per_window": 1})
    engine = QueueEngine.fresh(config.model_copy(update={"queue": queue}), NOW)
    engine.sign_in("w1", "s-007", NOW)

    out = engine.sign_in("w1", "s-008", NOW)

    assert types(out) == ["staff.signed_out", "window.closed", "staff.signed_in", "window.opened"]
    assert out.events[0].data["reason"] == "replaced by s-008"
    assert engine.windows["w1"].staff == "s-008"


def test_sign_out_closes_the_window_and_finishes_its_ticket(engine: QueueEngine) -> None:
    ticket = take(engine, "general")
    engine.sign_in("w1", "s-007", NOW)
    engine.call_next("w1", NOW)

    out = engine.sign_out("w1", NOW)

    assert types(out) == ["ticket.finished", "staff.signed_out", "window.closed"]
    assert ticket.status is TicketStatus.FINISHED
    assert engine.windows["w1"].state is WindowState.CLOSED
    with pytest.raises(Refused, match="window w1 is already closed"):
        engine.sign_out("w1", NOW)


# -- the business day ------------------------------------------------------------------


def test_business_day_starts_at_the_configured_hour_in_the_halls_zone(
    config: HallAgentConfig,
) -> None:
    assert business_day(at("03:59", TUESDAY), config) == MONDAY
    assert business_day(at("04:00", TUESDAY), config) == TUESDAY
    # 19:59 and 20:00 UTC on Monday are 03:59 and 04:00 on Tuesday in Shanghai.
    assert business_day(dt.datetime(2026, 3, 2, 19, 59, tzinfo=dt.UTC), config) == MONDAY
    assert business_day(dt.datetime(2026, 3, 2, 20, 0, tzinfo=dt.UTC), config) == TUESDAY


def test_rollover_expires_open_tickets_and_restarts_counters(engine: QueueEngine) -> None:
    b1, b2 = take(engine, "social"), take(engine, "social")
    a1, a2 = take(engine, "general"), take(engine, "general")
    c1, c2 = take(engine, "fund"), take(engine, "fund")
    engine.call_next("w2", NOW)  # B001
    engine.call_next("w2", NOW)  # B001 finished, B002 called
    engine.start_serving("w2", NOW)  # B002 serving
    engine.call_next("w1", NOW)  # A001
    engine.hold("w1", NOW)  # A001 held
    engine.call_next("w1", NOW)  # A002
    engine.finish("w1", NOW)  # A002 finished
    engine.call_next("w3", NOW)  # C01
    engine.no_show("w3", NOW)  # C01 no-show
    engine.call_next("w3", NOW)  # C02 called
    b3 = take(engine, "social")  # B003 waiting
    assert engine.tick(at("03:59", TUESDAY)).events == []

    out = engine.tick(at("04:00", TUESDAY))

    assert types(out) == ["ticket.expired"] * 4 + ["day.closed"]
    expired = {e.data["ticket"]: e.data for e in out.events[:4]}
    assert set(expired) == {"B002", "A001", "C02", "B003"}
    assert expired["B003"]["reason"] == "business day closed"
    assert expired["B003"]["day"] == "2026-03-02"
    assert expired["B003"]["status"] == "expired"
    assert out.events[-1].data == {
        "day": "2026-03-02",
        "next_day": "2026-03-03",
        "issued": {"social": 3, "general": 2, "fund": 2},
        "served": 2,
        "expired": 4,
    }
    for ticket in (b2, a1, c2, b3):
        assert ticket.status is TicketStatus.EXPIRED
        assert ticket.ended_at == at("04:00", TUESDAY)
    assert b1.status is a2.status is TicketStatus.FINISHED
    assert c1.status is TicketStatus.NO_SHOW
    assert set(out.tickets) == {b2.id, a1.id, c2.id, b3.id}
    assert engine.windows["w2"].current is None
    assert engine.windows["w3"].current is None
    assert {"w2", "w3"} <= set(out.windows)
    assert out.hall_changed
    assert engine.hall.day == TUESDAY
    assert engine.hall.counters == {}
    assert engine.tickets == {}
    assert engine.snapshot(at("09:00", TUESDAY))["waiting"] == []

    fresh = take(engine, "social", at("09:00", TUESDAY))
    assert fresh.number == "B001"
    assert fresh.id == "20260303-B001"


def test_rollover_happens_once_and_the_day_never_goes_back(engine: QueueEngine) -> None:
    take(engine, "social")

    first = engine.tick(at("05:00", TUESDAY))
    again = engine.tick(at("06:00", TUESDAY))
    back = engine.take("social", at("23:00"))  # the clock jumped back to Monday

    assert types(first)[-1] == "day.closed"
    assert again.events == []
    assert types(back) == ["ticket.issued"]
    assert back.result["ticket"]["number"] == "B001"
    assert back.result["ticket"]["day"] == "2026-03-03"
    assert engine.hall.day == TUESDAY
    assert types(engine.tick(at("05:00", TUESDAY))) == []


def test_a_jump_over_several_days_closes_the_last_day_seen_once(engine: QueueEngine) -> None:
    take(engine, "social")

    out = engine.tick(at("10:00", MONDAY + dt.timedelta(days=7)))

    assert types(out) == ["ticket.expired", "day.closed"]
    assert out.events[-1].data["day"] == "2026-03-02"
    assert out.events[-1].data["next_day"] == "2026-03-09"


def test_a_refused_operation_still_rolls_the_day_over(engine: QueueEngine) -> None:
    take(engine, "social")

    with pytest.raises(Refused, match="has no called ticket"):
        engine.recall("w1", at("10:00", TUESDAY))

    assert types(engine.pending) == ["ticket.expired", "day.closed"]
    assert engine.pending.hall_changed
    assert engine.hall.day == TUESDAY


# -- figures -----------------------------------------------------------------------------


def test_people_ahead_counts_who_routing_calls_first(engine: QueueEngine) -> None:
    a1 = take(engine, "general")
    a2 = take(engine, "general")
    take(engine, "social")
    green = take(engine, "general", priority=Priority.APPOINTMENT)
    a4 = take(engine, "general")

    assert engine.people_ahead(a1, NOW) == 1  # the appointment goes first
    assert engine.people_ahead(a2, NOW) == 2
    assert engine.people_ahead(green, NOW) == 0
    assert engine.people_ahead(a4, NOW) == 3
    engine.call_next("w1", NOW)
    assert engine.people_ahead(green, NOW) == 0  # no longer waiting
    assert engine.people_ahead(a4, NOW) == 2


def test_estimated_wait_uses_open_windows_and_measured_service_time(
    engine: QueueEngine,
) -> None:
    # general: expected 6 minutes, served by w1 and w2 (w2 serves social first).
    tickets = [take(engine, "general") for _ in range(5)]
    last = tickets[-1]
    assert engine.wait_minutes(last, NOW) == 12  # nobody open: both as if open now
    engine.sign_in("w1", "s-1", NOW)
    assert engine.wait_minutes(last, NOW) == 24  # one open window
    engine.sign_in("w2", "s-2", NOW)
    assert engine.wait_minutes(last, NOW) == 12

    for minutes in (2, 4):
        engine.call_next("w1", NOW)
        engine.finish("w1", NOW + dt.timedelta(minutes=minutes))

    assert engine.average_minutes("general") == 3
    assert engine.wait_minutes(last, NOW) == 3  # 2 ahead over the 2 windows, 3 min each
    assert engine.average_minutes("social") == 4  # nothing measured: the configured guess


def test_service_time_average_is_a_moving_window(make_config) -> None:
    engine = QueueEngine.fresh(make_config(queue={"service_time_window": 2}), NOW)
    for minutes in (30, 2, 4):
        take(engine, "social")
        engine.call_next("w2", NOW)
        engine.finish("w2", NOW + dt.timedelta(minutes=minutes))

    assert engine.hall.durations["social"] == [2.0, 4.0]
    assert engine.average_minutes("social") == 3


def test_snapshot_shows_services_windows_and_the_queue(engine: QueueEngine) -> None:
    take(engine, "general")
    take(engine, "general")
    take(engine, "social")
    engine.sign_in("w1", "s-007", NOW, staff_name="王芳")
    engine.call_next("w1", NOW)

    snap = engine.snapshot(NOW)

    assert snap["day"] == "2026-03-02"
    general = snap["services"][0]
    assert general == {
        "id": "general",
        "name": "综合业务",
        "prefix": "A",
        "waiting": 1,
        "issued_today": 2,
        "daily_cap": None,
        "open": True,
        "closed_reason": None,
        "next_open": None,
        # A newcomer waits for A001 at w1 (just called, 6 min) and A002 after it: w2 is closed.
        "wait_minutes": 12,
    }
    assert snap["services"][0]["open"] is True
    assert engine.snapshot(at("12:30"))["services"][0]["open"] is False
    w1 = snap["windows"][0]
    assert w1["id"] == "w1"
    assert w1["state"] == "open"
    assert w1["staff"] == "s-007"
    assert w1["number"] == 1
    assert w1["services"] == ["general", "social"]
    assert w1["ticket"]["number"] == "A001"
    assert [t["number"] for t in snap["waiting"]] == ["A002", "B001"]


def test_a_ticket_to_json_names_every_field_and_public_leaves_out_the_private_ones(
    engine: QueueEngine,
) -> None:
    ticket = take(engine, "general")
    engine.sign_in("w1", "s-1", NOW)
    engine.call_next("w1", NOW)
    engine.start_serving("w1", NOW)
    engine.finish("w1", NOW + dt.timedelta(minutes=3))
    whole = ticket.to_json()
    assert list(whole) == [f.name for f in dataclasses.fields(Ticket)]
    for f in dataclasses.fields(Ticket):
        value = getattr(ticket, f.name)
        shown = value.isoformat() if isinstance(value, dt.date) else value
        assert whole[f.name] == shown, f.name
    assert Ticket.from_json(whole) == ticket
    assert ticket.public() == {k: v for k, v in whole.items() if k not in PRIVATE_TICKET_FIELDS}
    window = engine.windows["w1"]
    window.rating = {"ticket": ticket.number, "reasons": ["slow"]}
    shown_window = window.to_json()
    assert shown_window == dataclasses.asdict(window)
    shown_window["rating"]["reasons"].append("changed")  # a copy, not the window's own
    assert window.rating["reasons"] == ["slow"]
    assert WindowStatus.from_json(window.to_json()) == window


def test_a_snapshot_is_kept_until_the_queue_its_estimates_or_an_opening_change(
    engine: QueueEngine,
) -> None:
    first = engine.snapshot(NOW)
    assert engine.snapshot(NOW) is first  # every read of the same state shares it
    take(engine, "general")
    taken = engine.snapshot(NOW)
    assert [t["number"] for t in taken["waiting"]] == ["A001"]
    assert first["waiting"] == []  # what was handed out before is left as it was
    engine.sign_in("w1", "s-1", NOW)
    engine.call_next("w1", NOW)
    called = engine.snapshot(NOW)
    assert called["waiting"] == []
    assert called["windows"][0]["ticket"]["number"] == "A001"
    later = NOW + dt.timedelta(minutes=5)  # a new play of the estimates: made afresh
    assert engine.snapshot(later) is not called
    assert engine.snapshot(at("12:30"))["services"][0]["open"] is False
