"""Shifts and AB岗: two staff at one window (every event and the rating carry who served),
the statistics count service by who served, the rota's A and B on the board with B
standing in while A is absent, and the config's roster and rota checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SHANGHAI, ManualClock
from support import bearer, hall_config, ops_token

from agent.central.pushed import merge
from agent.config import ConfigError, HallAgentConfig, validate_config
from agent.core import operations as op
from agent.core.engine import QueueEngine
from agent.core.errors import Refused
from agent.core.events import EVENT_CLASSES
from agent.core.model import WindowState
from agent.core.rota import duty_board
from agent.daemon import running_agent
from agent.features.access import Role
from agent.features.reports import Reports
from agent.runtime.hall import Hall
from agent.runtime.store import Store

MONDAY = dt.date(2026, 3, 2)
SATURDAY = MONDAY + dt.timedelta(days=5)
RATER = [{"id": "rater-w1", "kind": "rater", "transport": {"type": "web"}}]
STAFF = [
    {"staff": "s-1", "name": "王芳"},
    {"staff": "s-2", "name": "李明"},
    {"staff": "s-3", "name": "张伟"},
    {"staff": "s-4", "name": "赵敏"},
]
ROTA = {
    "shifts": [
        {"id": "morning", "name": "上午", "start": "09:00", "end": "12:00"},
        {"id": "afternoon", "name": "下午", "start": "13:30", "end": "17:30"},
    ],
    "posts": [{"window": "w1", "a": "s-1", "b": "s-2"}, {"window": "w2", "a": "s-3", "b": "s-4"}],
    "week": [{"window": "w1", "days": ["sat"], "shifts": ["morning"], "a": "s-2", "b": "s-1"}],
}


def at(hour: int, minute: int = 0, day: dt.date = MONDAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), SHANGHAI)


@pytest.fixture
def shift_config(make_config: Callable[..., HallAgentConfig]) -> HallAgentConfig:
    config = make_config(devices=RATER, rating={"start_on": "finish"}, staff=STAFF, rota=ROTA)
    windows = [w.model_dump() for w in config.windows]
    windows[0]["devices"] = ["rater-w1"]
    return make_config(
        devices=RATER, windows=windows, rating={"start_on": "finish"}, staff=STAFF, rota=ROTA
    )


def data_of(out: Any, kind: str) -> dict[str, Any]:
    (found,) = [e.data for e in out.events if e.type == kind]
    return dict(found)


# -- two staff at one window -----------------------------------------------------------------


def test_a_second_staff_member_joins_the_first(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9), staff_name="王芳")

    out = engine.sign_in("w1", "s-2", at(9, 1), staff_name="李明")

    assert [e.type for e in out.events] == ["staff.signed_in"]
    assert data_of(out, "staff.signed_in") == {
        "window": "w1",
        "staff": "s-2",
        "with_staff": ["s-1"],
    }
    window = engine.windows["w1"]
    assert window.signed_in() == ["s-1", "s-2"]
    assert (window.staff, window.name_of("s-2")) == ("s-1", "李明")


def test_a_third_is_refused_and_nothing_changes(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9))
    engine.sign_in("w1", "s-2", at(9))
    engine.sign_in("w2", "s-3", at(9))

    with pytest.raises(Refused, match=r"window w1 already has 2 staff signed in \(s-1, s-2\)"):
        engine.sign_in("w1", "s-3", at(9, 5))

    assert engine.windows["w1"].signed_in() == ["s-1", "s-2"]
    assert engine.windows["w2"].signed_in() == ["s-3"]


def test_events_and_the_rating_carry_who_served(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9), staff_name="王芳")
    engine.sign_in("w1", "s-2", at(9), staff_name="李明")
    engine.take("general", at(9, 2))
    engine.take("general", at(9, 3))

    # A keypad names nobody: the first signed in serves. B presses for the next one.
    first = engine.apply(op.CallNext(window="w1"), at(9, 5))
    called = data_of(first, "ticket.called")
    assert (called["staff"], called["with_staff"]) == ("s-1", ["s-2"])
    second = engine.apply(op.CallNext(window="w1", staff="s-2"), at(9, 10))
    finished = data_of(second, "ticket.finished")  # the first, finished by B's "next"
    assert (finished["ticket"], finished["staff"], finished["with_staff"]) == (
        "A001",
        "s-2",
        ["s-1"],
    )
    called = data_of(second, "ticket.called")
    assert (called["ticket"], called["staff"], called["with_staff"]) == ("A002", "s-2", ["s-1"])
    served = engine.apply(op.StartServing(window="w1"), at(9, 11))
    assert data_of(served, "ticket.serving")["staff"] == "s-2"

    done = engine.apply(op.Finish(window="w1"), at(9, 20))
    assert data_of(done, "ticket.finished")["staff"] == "s-2"
    requested = data_of(done, "rating.requested")
    assert (requested["staff"], requested["with_staff"]) == ("s-2", ["s-1"])
    rated = engine.apply(op.Rate(window="w1", level=5), at(9, 21))
    rating = data_of(rated, "rating.submitted")
    assert (rating["staff"], rating["staff_name"], rating["with_staff"]) == (
        "s-2",
        "李明",
        ["s-1"],
    )
    assert engine.tickets["20260302-A002"].rating is not None
    assert engine.tickets["20260302-A002"].rating["staff"] == "s-2"


def test_pressing_as_someone_not_signed_in_is_refused(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9))
    engine.take("general", at(9))

    with pytest.raises(
        Refused, match=r"staff s-3 is not signed in at window w1 \(signed in: s-1\)"
    ):
        engine.apply(op.CallNext(window="w1", staff="s-3"), at(9, 1))

    assert engine.windows["w1"].current is None


def test_a_transfer_names_who_sent_it(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9))
    engine.sign_in("w1", "s-2", at(9))
    engine.take("general", at(9))
    engine.apply(op.CallNext(window="w1"), at(9, 1))

    out = engine.apply(op.Transfer(window="w1", service="fund", staff="s-2"), at(9, 5))

    moved = data_of(out, "ticket.transferred")
    assert (moved["from_staff"], moved["with_staff"]) == ("s-2", ["s-1"])
    assert "staff" not in moved  # the ticket waits again, served by nobody


def test_a_card_read_at_the_window_names_who_serves(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9))
    engine.sign_in("w1", "s-2", at(9))
    engine.take("general", at(9))
    engine.apply(op.CallNext(window="w1", staff="s-2"), at(9, 1))
    card = op.CardRead(
        device="idr-w1", personal={"form": "hash", "card_type": "resident", "id_hash": "ab12"}
    )

    out = engine.apply(op.CardAtWindow(window="w1", card=card), at(9, 2))

    read = data_of(out, "identity.read")
    assert (read["ticket"], read["staff"]) == ("A001", "s-2")


def test_signing_one_out_leaves_the_other_with_the_ticket(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(9))
    engine.sign_in("w1", "s-1", at(9), staff_name="王芳")
    engine.sign_in("w1", "s-2", at(9), staff_name="李明")
    engine.take("general", at(9))
    engine.apply(op.CallNext(window="w1"), at(9, 1))

    out = engine.apply(op.SignOut(window="w1", staff="s-1"), at(9, 30))

    assert [e.type for e in out.events] == ["staff.signed_out"]
    assert data_of(out, "staff.signed_out")["remaining"] == ["s-2"]
    window = engine.windows["w1"]
    assert (window.state, window.staff, window.staff_name, window.others) == (
        WindowState.OPEN,
        "s-2",
        "李明",
        [],
    )
    assert engine.tickets["20260302-A001"].staff == "s-2"
    done = engine.apply(op.Finish(window="w1"), at(9, 40))
    assert data_of(done, "ticket.finished")["staff"] == "s-2"
    assert "with_staff" not in data_of(done, "ticket.finished")
    # Without a name, everyone signs out and the window closes.
    engine.sign_in("w1", "s-1", at(9, 45))
    closed = engine.apply(op.SignOut(window="w1"), at(10))
    assert [e.type for e in closed.events] == [
        "staff.signed_out",
        "staff.signed_out",
        "window.closed",
    ]
    assert [e.data["staff"] for e in closed.events[:2]] == ["s-2", "s-1"]


def test_the_contract_documents_who_served() -> None:
    for kind in ("ticket.called", "ticket.finished", "rating.submitted", "staff.signed_in"):
        assert "with_staff" in EVENT_CLASSES[kind].__dataclass_fields__


async def test_statistics_count_service_by_who_served(
    shift_config: HallAgentConfig, tmp_path: Path
) -> None:
    clock = ManualClock(at(9))
    store = Store.open(tmp_path / "state")
    script: list[tuple[dt.datetime, op.Operation]] = [
        (at(9), op.SignIn(window="w1", staff="s-1", name="王芳")),
        (at(9), op.SignIn(window="w1", staff="s-2", name="李明")),
        (at(9), op.Take(service="general")),
        (at(9), op.Take(service="general")),
        (at(9), op.Take(service="general")),
        (at(9, 10), op.CallNext(window="w1")),  # A001 by s-1
        (at(9, 20), op.Finish(window="w1")),  # served 10, s-1
        (at(9, 20), op.Rate(window="w1", level=5)),
        (at(9, 30), op.CallNext(window="w1", staff="s-2")),  # A002 by s-2
        (at(9, 50), op.Finish(window="w1", staff="s-2")),  # served 20, s-2
        (at(9, 50), op.Rate(window="w1", level=2, comment="态度不好")),
        (at(10), op.CallNext(window="w1")),  # A003 by s-1 ...
        (at(10, 5), op.StartServing(window="w1", staff="s-2")),  # ... served by s-2
        (at(10, 15), op.Finish(window="w1")),  # served 10, s-2
        (at(10, 15), op.Rate(window="w1", level=4)),
        (at(11), op.SignOut(window="w1", staff="s-2")),  # on duty 120
        (at(12), op.SignOut(window="w1")),  # s-1 on duty 180
    ]
    try:
        async with Hall(shift_config, store, clock=clock) as hall:
            for when, operation in script:
                clock.now = when
                await hall.execute(operation)
            report = await Reports(hall).report(MONDAY, MONDAY)
    finally:
        store.close()
    staff = {g["key"]: g for g in report["views"]["staff"]}
    assert set(staff) == {"s-1", "s-2"}
    assert (staff["s-1"]["served"], staff["s-2"]["served"]) == (1, 2)
    assert staff["s-1"]["service_minutes"]["mean"] == 10.0
    assert staff["s-2"]["service_minutes"]["max"] == 20.0
    assert staff["s-1"]["ratings"]["levels"] == {"5": 1, "4": 0, "3": 0, "2": 0, "1": 0}
    assert staff["s-2"]["ratings"]["levels"] == {"5": 0, "4": 1, "3": 0, "2": 1, "1": 0}
    assert (staff["s-1"]["on_duty_minutes"], staff["s-2"]["on_duty_minutes"]) == (180.0, 120.0)
    (window,) = report["views"]["window"]
    assert (window["served"], window["on_duty_minutes"]) == (3, 300.0)
    (bad,) = report["bad_ratings"]
    assert (bad["ticket"], bad["staff"]) == ("A002", "s-2")


# -- the rota: A and B on duty ------------------------------------------------------------------


def board_of(engine: QueueEngine, now: dt.datetime) -> dict[str, dict[str, Any]]:
    return {row["window"]: row for row in duty_board(engine.config, engine.windows, now)}


def people(row: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    return [(p["staff"], p["role"], p["stands_in"]) for p in row["people"]]


def test_b_stands_in_while_a_is_absent_in_the_shift(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(8))
    # Before the morning shift: the rota's A of each window, as scheduled.
    before = board_of(engine, at(8))
    assert people(before["w1"]) == [("s-1", "A", False)]
    assert before["w1"]["shift"]["name"] == "上午"
    assert before["w1"]["shift"]["running"] is False
    # In the shift, A of w1 signed in, A of w2 absent: w2 shows its B standing in (顶岗).
    engine.sign_in("w1", "s-1", at(9))
    board = board_of(engine, at(9, 30))
    assert people(board["w1"]) == [("s-1", "A", False)]
    assert people(board["w2"]) == [("s-4", "B", True)]
    assert board["w2"]["a_absent"] is True
    assert board["w2"]["people"][0]["name"] == "赵敏"
    # B signs in to help A at w1: both on duty, nobody standing in.
    engine.sign_in("w1", "s-2", at(9, 40))
    assert people(board_of(engine, at(9, 45))["w1"]) == [("s-1", "A", False), ("s-2", "B", False)]
    # Someone not on w3's rota signs in there: shown as signed in, without a role.
    engine.sign_in("w3", "s-3", at(9, 50))
    board = board_of(engine, at(9, 55))
    assert people(board["w3"]) == [("s-3", None, False)]
    assert people(board["w2"]) == [("s-4", "B", True)]  # s-3, w2's A, works at w3


def test_the_week_changes_who_is_a_and_b(shift_config: HallAgentConfig) -> None:
    engine = QueueEngine.fresh(shift_config, at(8, day=SATURDAY))
    morning = board_of(engine, at(10, day=SATURDAY))
    assert (morning["w1"]["a"], morning["w1"]["b"]) == ("s-2", "s-1")
    assert people(morning["w1"]) == [("s-1", "B", True)]
    afternoon = board_of(engine, at(14, day=SATURDAY))
    assert (afternoon["w1"]["a"], afternoon["w1"]["b"]) == ("s-1", "s-2")


# The national-day week of 2026, and its make-up Saturday (调休上班).
GOLDEN_WEEK = {
    "years": {
        2026: {
            "holidays": [{"name": "国庆节", "dates": "2026-10-01..2026-10-07"}],
            "make_up_days": ["2026-10-10"],
        }
    }
}
NATIONAL_DAY = dt.date(2026, 10, 1)  # a Thursday
MAKE_UP_SATURDAY = dt.date(2026, 10, 10)
PLAIN_SATURDAY = dt.date(2026, 10, 17)


def calendar_config(
    make_config: Callable[..., HallAgentConfig], **calendar: Any
) -> HallAgentConfig:
    rota = {
        **ROTA,
        "week": [
            *ROTA["week"],
            {"window": "w2", "days": ["fri"], "a": "s-4", "b": "s-3"},
        ],
    }
    return make_config(staff=STAFF, rota=rota, calendar={**GOLDEN_WEEK, **calendar})


def test_on_a_holiday_nobody_is_scheduled(make_config: Callable[..., HallAgentConfig]) -> None:
    config = calendar_config(make_config)
    engine = QueueEngine.fresh(config, at(8, day=NATIONAL_DAY))
    # Before and in the shift: no A, no B standing in, at any window.
    assert board_of(engine, at(8, day=NATIONAL_DAY)) == {}
    assert board_of(engine, at(10, day=NATIONAL_DAY)) == {}
    # Someone who comes in anyway is shown as signed in, without a post.
    engine.sign_in("w1", "s-2", at(10, day=NATIONAL_DAY))
    board = board_of(engine, at(10, 5, day=NATIONAL_DAY))
    assert list(board) == ["w1"]
    assert people(board["w1"]) == [("s-2", None, False)]
    assert (board["w1"]["a"], board["w1"]["shift"]) == (None, None)
    # The day after the holiday week the rota is back.
    after = dt.date(2026, 10, 8)
    assert people(board_of(engine, at(8, day=after))["w2"]) == [("s-3", "A", False)]


def test_a_make_up_day_follows_the_rota_of_the_day_it_replaces(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    config = calendar_config(make_config)
    engine = QueueEngine.fresh(config, at(8, day=MAKE_UP_SATURDAY))
    # The make-up Saturday works as a Monday (calendar.make_up_day_hours): w1's post, not
    # the Saturday morning's entry.
    make_up = board_of(engine, at(8, day=MAKE_UP_SATURDAY))
    assert (make_up["w1"]["a"], make_up["w1"]["b"]) == ("s-1", "s-2")
    assert (make_up["w2"]["a"], make_up["w2"]["b"]) == ("s-3", "s-4")
    # A plain Saturday keeps its own rota.
    plain = board_of(engine, at(8, day=PLAIN_SATURDAY))
    assert (plain["w1"]["a"], plain["w1"]["b"]) == ("s-2", "s-1")

    # A calendar whose make-up days keep Friday's hours: Friday's rota, too.
    friday = calendar_config(make_config, make_up_day_hours="fri")
    engine = QueueEngine.fresh(friday, at(8, day=MAKE_UP_SATURDAY))
    board = board_of(engine, at(8, day=MAKE_UP_SATURDAY))
    assert (board["w2"]["a"], board["w2"]["b"]) == ("s-4", "s-3")
    assert (board["w1"]["a"], board["w1"]["b"]) == ("s-1", "s-2")


# -- the config: roster and rota ----------------------------------------------------------------


def problems(make_config: Callable[..., HallAgentConfig], **sections: Any) -> list[str]:
    """What ``check-config`` says about the test hall with these sections."""
    data = make_config().model_dump(mode="json")
    data.update(sections)
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    return [f"{p.path}: {p.message} (fix: {p.hint})" for p in caught.value.problems]


def test_unknown_staff_and_windows_are_named(make_config: Callable[..., HallAgentConfig]) -> None:
    rota = {
        "posts": [{"window": "w9", "a": "s-1"}, {"window": "w2", "a": "s-9", "b": "s-1"}],
        "week": [{"window": "w1", "days": ["mon"], "shifts": ["night"], "a": "s-1"}],
    }
    found = problems(make_config, staff=STAFF, rota=rota)
    assert any(
        p.startswith("rota.posts[0].window: unknown window 'w9'") and "w1, w2, w3" in p
        for p in found
    ), found
    assert any(
        p.startswith("rota.posts[1].a: unknown staff 's-9'") and "s-1, s-2, s-3, s-4" in p
        for p in found
    ), found
    assert any(
        p.startswith("rota.week[0].shifts[0]: unknown shift 'night'") and "morning" in p
        for p in found
    ), found


def test_a_rota_without_a_roster_says_where_the_staff_go(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    found = problems(make_config, rota={"posts": [{"window": "w1", "a": "s-1"}]})
    assert found == [
        "rota.posts[0].a: unknown staff 's-1' (fix: list the hall's staff under staff (工号, "
        "name); central pushes staff with the rota)"
    ]


def test_overlaps_repeats_and_double_duty_are_refused(
    make_config: Callable[..., HallAgentConfig],
) -> None:
    rota = {
        "shifts": [
            {"id": "morning", "name": "上午", "start": "09:00", "end": "12:30"},
            {"id": "afternoon", "name": "下午", "start": "12:00", "end": "17:00"},
        ],
        "posts": [{"window": "w1", "a": "s-1"}, {"window": "w2", "a": "s-1"}],
        "week": [
            {"window": "w3", "days": ["mon"], "a": "s-2"},
            {"window": "w3", "days": ["mon", "tue"], "shifts": ["morning"], "a": "s-3"},
        ],
    }
    staff = [*STAFF, {"staff": "s-1", "name": "重名"}]
    found = problems(make_config, staff=staff, rota=rota)
    text = "\n".join(found)
    assert "staff[4].staff: staff number 's-1' is already used by staff[0]" in text
    assert "rota.shifts[1]: 下午 12:00-17:00 overlaps rota.shifts[0]" in text
    assert "rota.week[1]: window w3 on mon (morning) is already given by rota.week[0]" in text
    assert "staff s-1 is A (主岗) at windows w1 and w2 on mon (上午)" in text


def test_a_and_b_are_two_people(make_config: Callable[..., HallAgentConfig]) -> None:
    found = problems(
        make_config, staff=STAFF, rota={"posts": [{"window": "w1", "a": "s-1", "b": "s-1"}]}
    )
    assert any("staff s-1 is both A and B of window w1" in p for p in found), found


def test_central_pushes_the_rota_checked_with_the_config(shift_config: HallAgentConfig) -> None:
    pushed = merge(shift_config, {"rota": {"posts": [{"window": "w3", "a": "s-4"}]}})
    assert [p.window for p in pushed.rota.posts] == ["w3"]
    with pytest.raises(ConfigError) as caught:
        merge(shift_config, {"staff": STAFF[:1], "rota": ROTA})
    paths = [p.path for p in caught.value.problems]
    assert "rota.posts[0].b" in paths  # s-2 is not on the pushed roster


# -- the local API: each staff member's own session ------------------------------------------


async def test_each_staff_session_presses_as_themself(tmp_path: Path) -> None:
    data = hall_config(tmp_path / "state", staff=STAFF[:3])
    config = HallAgentConfig.model_validate(data)
    password = "correct horse 1"
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        assert running.access is not None
        ops = bearer(ops_token(config.storage.path))
        session: dict[str, dict[str, str]] = {}
        for name in ("s-1", "s-2", "s-3"):
            await running.access.add_user(name, Role.STAFF, ["w1"], password)
            r = await client.post("/api/v1/auth/login", json={"name": name, "password": password})
            session[name] = bearer(r.json()["token"])
        for name in ("s-1", "s-2"):
            r = await client.post(
                "/api/v1/windows/w1/sign-in", json={"staff": name}, headers=session[name]
            )
            assert r.status_code == 200, r.text
        r = await client.post(
            "/api/v1/windows/w1/sign-in", json={"staff": "s-3"}, headers=session["s-3"]
        )
        assert r.status_code == 409
        assert "already has 2 staff signed in (s-1, s-2)" in r.json()["message"]
        await client.post("/api/v1/tickets", json={"service": "social"}, headers=ops)

        r = await client.post("/api/v1/windows/w1/next", headers=session["s-2"])
        assert r.status_code == 200, r.text
        assert r.json()["result"]["ticket"]["staff"] == "s-2"
        # s-1 may not sign s-2 out; s-2 signs out themself and s-1 keeps the window.
        r = await client.post(
            "/api/v1/windows/w1/sign-out", json={"staff": "s-2"}, headers=session["s-1"]
        )
        assert r.status_code == 409
        assert "signs out only themself" in r.json()["message"]
        r = await client.post("/api/v1/windows/w1/sign-out", headers=session["s-2"])
        assert r.status_code == 200, r.text
        window = r.json()["result"]["window"]
        assert (window["state"], window["staff"], window["others"]) == ("open", "s-1", [])
        r = await client.post("/api/v1/windows/w1/next", headers=session["s-2"])
        assert r.status_code == 403
        events = (await client.get("/api/v1/events?limit=1000", headers=ops)).json()
    called = [e["data"] for e in events if e["type"] == "ticket.called"]
    assert [(c["staff"], c["with_staff"]) for c in called] == [("s-2", ["s-1"])]
    (out,) = [e["data"] for e in events if e["type"] == "staff.signed_out"]
    assert (out["staff"], out["remaining"]) == ("s-2", ["s-1"])
