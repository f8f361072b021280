"""The satisfaction rating (好差评) in the queue engine: requests, levels, reasons, timeouts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import Refused
from agent.core.events import EventClass
from agent.core.model import RATING_LABELS, RatingLevel, Ticket, TicketStatus

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI)

RATERS = [
    {"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}},
    {"id": "rater-w2", "kind": "rater", "transport": {"type": "web"}},
]


def hall(make_config: Callable[..., HallAgentConfig], **rating: Any) -> QueueEngine:
    config = make_config(devices=RATERS, rating=rating)
    windows = [w.model_dump() for w in config.windows]
    windows[0]["devices"] = ["rater-w1"]
    windows[1]["devices"] = ["rater-w2"]
    config = make_config(devices=RATERS, windows=windows, rating=rating)
    engine = QueueEngine.fresh(config, NOW)
    engine.sign_in("w1", "s-001", NOW, staff_name="王芳")
    engine.sign_in("w2", "s-002", NOW, staff_name="李明")
    return engine


@pytest.fixture
def engine(make_config: Callable[..., HallAgentConfig]) -> QueueEngine:
    return hall(make_config, start_on="request")


def served(engine: QueueEngine, window: str = "w1", service: str = "social") -> Ticket:
    out = engine.take(service, NOW)
    ticket = engine.tickets[out.result["ticket"]["id"]]
    engine.call_next(window, NOW)
    assert engine.windows[window].current == ticket.id
    return ticket


def types(out: Outcome) -> list[str]:
    return [e.type for e in out.events]


def event(out: Outcome, kind: str) -> dict[str, Any]:
    (found,) = [e for e in out.events if e.type == kind]
    return found.data


def test_the_five_levels_are_named_exactly_as_the_national_scheme() -> None:
    assert [(lv.value, lv.label) for lv in RatingLevel] == [
        (5, "非常满意"),
        (4, "满意"),
        (3, "基本满意"),
        (2, "不满意"),
        (1, "非常不满意"),
    ]
    assert [lv for lv in RatingLevel if lv.is_bad] == [2, 1]
    assert set(RATING_LABELS) == set(RatingLevel)


@pytest.mark.parametrize("level", [5, 4, 3, 2, 1])
def test_each_level_is_recorded_bound_to_ticket_window_staff_service_and_time(
    engine: QueueEngine, level: int
) -> None:
    ticket = served(engine)
    requested = engine.request_rating("w1", NOW)
    assert types(requested) == ["rating.requested"]
    later = NOW + dt.timedelta(seconds=20)
    reasons = ["办事效率低"] if level <= 2 else []
    out = engine.rate("w1", level, later, reasons=reasons, channel="tablet", device="rater-w1")
    data = event(out, "rating.submitted")
    assert data["ticket"] == ticket.number
    assert data["ticket_id"] == ticket.id
    assert (data["window"], data["window_number"]) == ("w1", 1)
    assert (data["staff"], data["staff_name"]) == ("s-001", "王芳")
    assert (data["service"], data["service_name"]) == ("social", "社保医保")
    assert (data["level"], data["label"]) == (level, RATING_LABELS[RatingLevel(level)])
    assert data["bad"] is (level <= 2)
    assert data["reasons"] == reasons
    assert data["defaulted"] is False
    assert (data["channel"], data["device"]) == ("tablet", "rater-w1")
    assert data["requested_at"] == NOW.isoformat()
    assert out.events[0].at == later
    assert out.events[0].cls is EventClass.BUSINESS
    assert ticket.rating is not None
    assert ticket.rating["level"] == level
    assert engine.windows["w1"].rating is None
    assert out.tickets[ticket.id] is ticket  # saved with the ticket record


@pytest.mark.parametrize("level", [2, 1])
def test_a_bad_rating_without_a_reason_is_refused_with_a_message(
    engine: QueueEngine, level: int
) -> None:
    served(engine)
    engine.request_rating("w1", NOW)
    with pytest.raises(Refused, match=f"a {RATING_LABELS[RatingLevel(level)]} rating needs"):
        engine.rate("w1", level, NOW)
    with pytest.raises(Refused, match="needs a reason"):
        engine.rate("w1", level, NOW, comment="   ")
    assert engine.windows["w1"].rating is not None  # still open: the citizen can add one
    out = engine.rate("w1", level, NOW, comment="等了很久没人理")
    assert event(out, "rating.submitted")["comment"] == "等了很久没人理"


def test_reasons_come_from_the_configured_list(engine: QueueEngine) -> None:
    served(engine)
    engine.request_rating("w1", NOW)
    with pytest.raises(Refused, match="unknown reason '太冷了'"):
        engine.rate("w1", 1, NOW, reasons=["太冷了"])
    with pytest.raises(Refused, match="not for 满意"):
        engine.rate("w1", 4, NOW, reasons=["办事效率低"])
    with pytest.raises(Refused, match="over 200 characters"):
        engine.rate("w1", 1, NOW, comment="慢" * 201)
    out = engine.rate("w1", 1, NOW, reasons=["业务不熟练", "业务不熟练", "其他"], comment="x")
    assert event(out, "rating.submitted")["reasons"] == ["业务不熟练", "其他"]


def test_a_level_outside_one_to_five_is_refused(engine: QueueEngine) -> None:
    served(engine)
    engine.request_rating("w1", NOW)
    for level in (0, 6, -1):
        with pytest.raises(Refused, match="not a rating level; the levels are 5 非常满意"):
            engine.rate("w1", level, NOW)


def test_a_second_rating_for_the_same_ticket_is_refused(engine: QueueEngine) -> None:
    ticket = served(engine)
    engine.request_rating("w1", NOW)
    engine.rate("w1", 5, NOW)
    with pytest.raises(Refused, match="no rating is open at window w1"):
        engine.rate("w1", 4, NOW)
    with pytest.raises(Refused, match=f"ticket {ticket.number} was rated already"):
        engine.request_rating("w1", NOW)
    engine.finish("w1", NOW)
    with pytest.raises(Refused, match="rated already"):
        engine.request_rating("w1", NOW, ticket_number=ticket.number)
    assert ticket.rating is not None
    assert ticket.rating["level"] == 5


def test_a_rating_for_a_ticket_no_longer_rated_is_refused(engine: QueueEngine) -> None:
    first = served(engine)
    engine.request_rating("w1", NOW)
    engine.rating_timed_out("w1", first.id, NOW)
    second = served(engine)
    engine.request_rating("w1", NOW)
    with pytest.raises(Refused, match=f"now rates ticket {second.number}"):
        engine.rate("w1", 5, NOW, ticket_id=first.id)


def test_a_window_without_a_rater_cannot_request_one(engine: QueueEngine) -> None:
    engine.sign_in("w3", "s-003", NOW)
    engine.take("fund", NOW)
    engine.call_next("w3", NOW)
    with pytest.raises(Refused, match="window w3 has no satisfaction rater"):
        engine.request_rating("w3", NOW)


def test_nothing_to_rate_is_refused(engine: QueueEngine) -> None:
    with pytest.raises(Refused, match="window w1 has no ticket to rate"):
        engine.request_rating("w1", NOW)


def test_the_last_finished_ticket_is_rated_when_none_is_current(engine: QueueEngine) -> None:
    first = served(engine)
    engine.finish("w1", NOW)
    out = engine.request_rating("w1", NOW)
    assert out.result["rating"]["ticket"] == first.number


def test_requesting_twice_waits_for_the_same_ticket_once(engine: QueueEngine) -> None:
    served(engine)
    engine.request_rating("w1", NOW)
    again = engine.request_rating("w1", NOW)
    assert types(again) == []


# -- the timeout policy -----------------------------------------------------------------------


def test_timeout_none_records_nothing(make_config: Callable[..., HallAgentConfig]) -> None:
    engine = hall(make_config, start_on="request", on_timeout="none")
    ticket = served(engine)
    engine.request_rating("w1", NOW)
    out = engine.rating_timed_out("w1", ticket.id, NOW + dt.timedelta(minutes=1))
    assert types(out) == ["rating.timed_out"]
    assert event(out, "rating.timed_out")["recorded"] is None
    assert ticket.rating is None
    assert engine.windows["w1"].rating is None


def test_timeout_default_records_the_default_marked_as_such(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    engine = hall(make_config, start_on="request", on_timeout="default", default_level=5)
    ticket = served(engine)
    engine.request_rating("w1", NOW)
    out = engine.rating_timed_out("w1", ticket.id, NOW + dt.timedelta(minutes=1))
    assert types(out) == ["rating.timed_out", "rating.submitted"]
    submitted = event(out, "rating.submitted")
    assert (submitted["level"], submitted["label"], submitted["defaulted"]) == (5, "非常满意", True)
    assert submitted["channel"] == "timeout"
    assert submitted["staff"] == "s-001"
    assert ticket.rating is not None
    assert ticket.rating["defaulted"] is True


def test_no_default_is_recorded_over_a_bad_key_the_citizen_pressed(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    engine = hall(make_config, start_on="request", on_timeout="default")
    ticket = served(engine)
    engine.request_rating("w1", NOW)
    out = engine.rating_timed_out("w1", ticket.id, NOW, pressed_level=1)
    assert types(out) == ["rating.timed_out"]
    assert event(out, "rating.timed_out")["pressed_level"] == 1
    assert ticket.rating is None


def test_a_timeout_after_the_rating_changes_nothing(engine: QueueEngine) -> None:
    ticket = served(engine)
    engine.request_rating("w1", NOW)
    engine.rate("w1", 4, NOW)
    out = engine.rating_timed_out("w1", ticket.id, NOW)
    assert types(out) == []


def test_a_default_level_can_never_be_bad(make_config: Callable[..., HallAgentConfig]) -> None:
    with pytest.raises(ValueError, match="default_level"):
        make_config(rating={"default_level": 2})


# -- when the rater starts ----------------------------------------------------------------------


def test_finish_starts_the_rating(make_config: Callable[..., HallAgentConfig]) -> None:
    engine = hall(make_config, start_on="finish")
    ticket = served(engine)
    out = engine.finish("w1", NOW)
    assert types(out) == ["ticket.finished", "rating.requested"]
    assert event(out, "rating.requested")["trigger"] == "finish"
    assert engine.windows["w1"].rating is not None
    assert engine.windows["w1"].rating["ticket_id"] == ticket.id
    served(engine)  # "next" ends nothing here, so it starts nothing
    out = engine.call_next("w1", NOW)
    assert "rating.requested" not in types(out)


def test_any_finish_starts_it_on_next_too(make_config: Callable[..., HallAgentConfig]) -> None:
    engine = hall(make_config, start_on="any_finish")
    first = served(engine)
    engine.take("social", NOW)
    out = engine.call_next("w1", NOW)
    assert types(out)[:2] == ["ticket.finished", "rating.requested"]
    assert engine.windows["w1"].rating is not None
    assert engine.windows["w1"].rating["ticket_id"] == first.id
    assert event(out, "rating.requested")["trigger"] == "next"


def test_a_new_finish_replaces_a_rating_nobody_gave(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    engine = hall(make_config, start_on="finish", on_timeout="none")
    first = served(engine)
    engine.finish("w1", NOW)
    second = served(engine)
    out = engine.finish("w1", NOW)
    assert types(out) == ["ticket.finished", "rating.timed_out", "rating.requested"]
    assert event(out, "rating.timed_out")["reason"] == "replaced"
    assert event(out, "rating.timed_out")["ticket"] == first.number
    assert engine.windows["w1"].rating is not None
    assert engine.windows["w1"].rating["ticket_id"] == second.id


def test_the_open_rating_survives_a_save_and_load(engine: QueueEngine) -> None:
    from agent.core.model import WindowStatus

    ticket = served(engine)
    engine.request_rating("w1", NOW)
    window = WindowStatus.from_json(engine.windows["w1"].to_json())
    assert window.rating == engine.windows["w1"].rating
    engine.rate("w1", 3, NOW)
    again = Ticket.from_json(ticket.to_json())
    assert again.rating == ticket.rating
    assert again.status is TicketStatus.CALLED


def test_a_recall_is_never_a_new_call(engine: QueueEngine) -> None:
    ticket = served(engine)
    engine.recall("w1", NOW)
    engine.recall("w1", NOW)
    assert ticket.called_count == 1
    assert ticket.recalls == 2
