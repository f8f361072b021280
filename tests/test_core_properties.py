"""Properties of the typed core: random operations, applied as data through
``QueueEngine.apply``, only ever emit events that round-trip through their typed class and
validate against the JSON Schema central gets (docs/contract/schemas/events/), and only
ever move a ticket's status along the move table (agent/core/status.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core import operations as op
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError, Refused
from agent.core.model import Priority, Source, Ticket, TicketStatus
from agent.core.status import MOVES, TRANSITIONS, Move, check
from hallctl.asyncapi import EVENT_SCHEMA_DIR, event_data_schema

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI)
CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "contract"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def config(on_timeout: str) -> HallAgentConfig:
    return HallAgentConfig.model_validate(
        {
            "hall": {"id": "hd-prop-002", "name": "事件属性测试", "region_code": "440305"},
            "queue": {"recall_limit": 1},
            "rating": {"start_on": "any_finish", "on_timeout": on_timeout},
            "services": [
                {"id": "general", "name": "综合业务", "prefix": "A"},
                {"id": "social", "name": "社保医保", "prefix": "B"},
            ],
            "windows": [
                {"id": "w1", "name": "1号窗口", "number": 1, "services": ["general", "social"]},
                {
                    "id": "w2",
                    "name": "2号窗口",
                    "number": 2,
                    "services": ["social"],
                    "devices": ["rater-w2"],
                },
            ],
            "devices": [{"id": "rater-w2", "kind": "rater", "transport": {"type": "web"}}],
            "storage": {"path": "/nonexistent/hall-agent-test"},
        }
    )


WINDOW = st.sampled_from(["w1", "w2", "w9"])
SERVICE = st.sampled_from(["general", "social", "nowhere"])
PERSONAL = st.sampled_from(
    [
        {"form": "hash", "card_type": "resident", "id_hash": "h1"},
        {"form": "masked", "card_type": "resident", "id_hash": "h2", "person": {"name": "张*"}},
    ]
)
CARD = st.builds(op.CardRead, device=st.just("idreader-1"), personal=PERSONAL)

OPERATIONS: st.SearchStrategy[op.Operation] = st.one_of(
    st.builds(
        op.Take,
        service=SERVICE,
        source=st.sampled_from(list(Source)),
        priority=st.sampled_from(list(Priority)),
        id_hash=st.sampled_from([None, "h1", "h2"]),
        card=st.one_of(st.none(), CARD),
    ),
    st.builds(op.Cancel, number=st.sampled_from(["A001", "B001", "B002", "X9"])),
    st.builds(op.CallNext, window=WINDOW),
    st.builds(op.CallNumber, window=WINDOW, number=st.sampled_from(["A001", "B001", "B002"])),
    st.builds(op.CallDigits, window=WINDOW, digits=st.sampled_from(["1", "2", "3", "B001"])),
    st.builds(op.CallBack, window=WINDOW),
    st.builds(op.Recall, window=WINDOW),
    st.builds(op.StartServing, window=WINDOW),
    st.builds(op.Finish, window=WINDOW),
    st.builds(op.NoShow, window=WINDOW),
    st.builds(op.Hold, window=WINDOW),
    st.builds(
        op.Transfer, window=WINDOW, service=SERVICE, position=st.sampled_from(["front", "back"])
    ),
    st.builds(op.TransferToPosition, window=WINDOW, position=st.sampled_from(["1", "2", "7"])),
    st.builds(op.Pause, window=WINDOW, reason=st.sampled_from(["", "午休"])),
    st.builds(op.Resume, window=WINDOW),
    st.builds(op.TogglePause, window=WINDOW),
    st.builds(op.SignIn, window=WINDOW, staff=st.sampled_from(["s-1", "s-2", " "])),
    st.builds(op.SignOut, window=WINDOW),
    st.builds(op.RequestRating, window=WINDOW),
    st.builds(
        op.Rate,
        window=WINDOW,
        level=st.integers(0, 6),
        reasons=st.sampled_from([(), ("态度不好",), ("unknown",)]),
        comment=st.sampled_from(["", "等太久"]),
    ),
    st.builds(
        op.RatingTimeout,
        window=WINDOW,
        ticket_id=st.sampled_from(["20260302-B001", "20260302-A001"]),
        pressed_level=st.sampled_from([None, 1, 5]),
    ),
    st.builds(op.CardAtWindow, window=WINDOW, card=CARD),
    st.just(op.Tick()),
)


def _file_schema(event_type: str) -> dict[str, Any]:
    path = CONTRACT / EVENT_SCHEMA_DIR / f"{event_type}.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


SCHEMAS = {event_type: _file_schema(event_type) for event_type in ev.EVENT_TYPES}


def check_event(event: ev.Event) -> None:
    # What the store writes and central reads: plain JSON.
    data = json.loads(json.dumps(event.data, ensure_ascii=False))
    assert ev.parse_event(event.type, data) == event.payload, event.type
    jsonschema.validate(data, SCHEMAS[event.type])
    # The committed schema is the one generated from the class.
    schema = {"$schema": SCHEMAS[event.type]["$schema"], **event_data_schema(type(event.payload))}
    assert schema == SCHEMAS[event.type]


def apply(engine: QueueEngine, operation: op.Operation, now: dt.datetime) -> Outcome:
    try:
        return engine.apply(operation, now)
    except QueueError:
        return engine.pending  # a refusal may leave a change made on the way (a rollover)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(OPERATIONS, st.integers(0, 200)), min_size=1, max_size=60),
    on_timeout=st.sampled_from(["none", "default"]),
)
def test_every_event_round_trips_and_every_status_move_is_in_the_table(
    steps: list[tuple[op.Operation, int]], on_timeout: str
) -> None:
    engine = QueueEngine.fresh(config(on_timeout), START)
    now = START
    for operation, minutes in steps:
        now += dt.timedelta(minutes=minutes)
        before = {t.id: t.status for t in engine.tickets.values()}
        out = apply(engine, operation, now)
        for event in out.events:
            check_event(event)
        for ticket in out.tickets.values():
            was = before.get(ticket.id)
            if was is None:
                assert ticket.status in (TicketStatus.WAITING, TicketStatus.EXPIRED)
            elif was is not ticket.status:
                assert (was, ticket.status) in TRANSITIONS, (ticket.number, was, ticket.status)


def test_a_refused_move_names_the_ticket_its_status_and_the_move() -> None:
    ticket = Ticket(
        id="20260302-A001",
        day=START.date(),
        number="A001",
        service="general",
        issued_service="general",
        priority=Priority.NORMAL,
        source=Source.API,
        issued_at=START,
        rank=1,
        status=TicketStatus.FINISHED,
    )
    for step in Move:
        assert (TicketStatus.FINISHED, step) not in MOVES
        with pytest.raises(Refused, match=r"ticket A001 is finished"):
            check(ticket, step)
    with pytest.raises(Refused, match="only waiting tickets can be cancelled"):
        check(ticket, Move.CANCEL)


def test_every_event_type_has_a_class_and_a_committed_schema() -> None:
    assert set(ev.EVENT_TYPES) == set(SCHEMAS)
    for event_type, schema in SCHEMAS.items():
        assert schema["additionalProperties"] is False, event_type
        assert schema["type"] == "object", event_type


def test_a_stored_event_that_does_not_fit_its_class_is_read_as_unreadable() -> None:
    payload = ev.read_event("ticket.called", {"ticket": "A001"})
    assert isinstance(payload, ev.Unreadable)
    assert "ticket_id" in payload.problem
    assert isinstance(ev.read_event("no.such_type", {}), ev.Unreadable)


def test_an_operation_is_described_as_data_without_personal_data() -> None:
    take = op.Take(
        service="social",
        source=Source.ID_CARD,
        id_hash="abc123",
        birth_date=dt.date(1950, 1, 1),
        card=op.CardRead(device="idreader-1", personal={"form": "masked", "id_hash": "abc123"}),
    )
    described = op.describe(take)
    assert described["op"] == "Take"
    assert described["service"] == "social"
    assert "abc123" not in repr(described)
    assert "1950" not in repr(described)
    assert op.describe(op.CallNext(window="w1")) == {"op": "CallNext", "window": "w1"}
