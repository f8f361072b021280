"""Proxy cases (代收代办, docs/cases.md): registering, the printed receipt, deadline warnings
on the right working day with a holiday in between (the hall's clock moved by hand), the
citizen sealed at rest and masked in logs, events and lists, and who may do what.

The receipt is printed through the agent, its driver and the virtual printer on TCP and
read back as the printer drew it (text lines and the QR code, as tests/test_ticket_print.py
reads a ticket)."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ManualClock
from qr_paper import paper_image, read_qr
from support import as_ops, bearer, hall_config

from agent.config import HallAgentConfig
from agent.core import events as ev
from agent.core.cases import chinese_date, due, last_near_promise, promised_date, warning_day
from agent.core.errors import NotFound, Refused
from agent.daemon import running_agent
from agent.demo.emulators.printer import VirtualPrinter
from agent.features.cases import CaseDesk, Registration
from agent.runtime.hall import Hall
from agent.runtime.personal import Vault
from agent.runtime.store import Store, Written
from agent.workdays import WorkingDays
from protocols.escpos_model import Bitmap, Paper
from protocols.escpos_raster import CJK_FONT
from protocols.idcard import check_digit

API = "/api/v1"
ARTIFACTS = Path(__file__).parent / "artifacts"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MATERIALS = ["本人有效身份证件", "社会保障卡", "近期一寸免冠照片 1 张", "户口簿（首页及本人页）"]
# 2026-03-04 is a Wednesday; the Friday after it is made a holiday.
TAKEN = dt.date(2026, 3, 4)
HOLIDAY = dt.date(2026, 3, 6)
DAYS = WorkingDays.of(holidays=[HOLIDAY])
# A fictional citizen; the ID number has a valid GB 11643 check digit.
NAME = "欧阳娜娜"
ID_NUMBER = "11010819900307246" + check_digit("11010819900307246")
PHONE = "13812345678"

needs_font = pytest.mark.skipif(
    not Path(CJK_FONT).exists(), reason="fonts-wqy-microhei is not installed (scripts/setup)"
)


def at(day: dt.date, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), SHANGHAI)


def case_config(storage: Path, **sections: Any) -> HallAgentConfig:
    data = hall_config(storage, **sections)
    data["hall"]["phone"] = "0571-8888 1234"
    data["services"][0]["guide"] = {"materials": MATERIALS, "time_limit_days": 3}
    return HallAgentConfig.model_validate(data)


def registration(**changes: Any) -> Registration:
    values: dict[str, Any] = {
        "service": "social",
        "window": "w1",
        "name": NAME,
        "id_number": ID_NUMBER,
        "phone": PHONE,
        "materials": MATERIALS[:2],
        "other_materials": ["委托书"],
        "staff": "1001",
    }
    values.update(changes)
    return Registration(**values)


# -- working days --------------------------------------------------------------------------


def test_the_promised_date_and_the_warning_day_skip_the_holiday() -> None:
    # Thu 5 (1), Fri 6 holiday, Mon 9 (2), Tue 10 (3).
    assert promised_date(TAKEN, 3, DAYS) == dt.date(2026, 3, 10)
    assert promised_date(TAKEN, 3, WorkingDays()) == dt.date(2026, 3, 9)
    # One working day before Tue 10 is Mon 9; before Mon 9 it would be Fri 6, a holiday,
    # so Thu 5.
    assert warning_day(dt.date(2026, 3, 10), 1, DAYS) == dt.date(2026, 3, 9)
    assert warning_day(dt.date(2026, 3, 9), 1, DAYS) == dt.date(2026, 3, 5)
    assert warning_day(dt.date(2026, 3, 9), 1, WorkingDays()) == dt.date(2026, 3, 6)
    assert due(dt.date(2026, 3, 10), dt.date(2026, 3, 8), 1, DAYS) is None
    assert due(dt.date(2026, 3, 10), dt.date(2026, 3, 9), 1, DAYS) == "near"
    assert due(dt.date(2026, 3, 10), dt.date(2026, 3, 11), 1, DAYS) == "overdue"
    assert chinese_date(dt.date(2026, 3, 10)) == "2026年3月10日（星期二）"


@pytest.mark.parametrize("warn", [0, 1, 2, 5])
def test_the_watcher_reads_exactly_the_promised_dates_that_can_be_near(warn: int) -> None:
    # Every (today, promised) pair of two months around a holiday and a make-up Sunday: a
    # case near its deadline is never promised after the bound the store reads up to, and
    # every date up to the bound is near or overdue.
    days = WorkingDays.of(holidays=[HOLIDAY], make_up_days=[dt.date(2026, 3, 15)])
    span = [dt.date(2026, 2, 20) + dt.timedelta(days=n) for n in range(60)]
    for today in span:
        bound = last_near_promise(today, warn, days)
        for promised in span:
            state = due(promised, today, warn, days)
            assert (state is not None) == (promised <= bound), (today, promised, state)


# -- the hall, its clock moved by hand -------------------------------------------------------


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[tuple[CaseDesk, ManualClock, Store]]:
    config = case_config(tmp_path / "state")
    store = Store.open(config.storage.path)
    clock = ManualClock(at(TAKEN))
    try:
        async with Hall(config, store, clock=clock) as hall:
            yield (
                CaseDesk(hall, None, days=DAYS, vault=Vault(secrets.token_bytes(32))),
                clock,
                store,
            )
    finally:
        store.close()


async def case_events(desk: CaseDesk, kind: type[ev.EventData]) -> list[Any]:
    rows = await desk.hall.store_call(lambda s: list(s.iter_events()))
    return [r.payload for r in rows if isinstance(r.payload, kind)]


async def test_a_case_is_registered_with_its_event_and_promised_date(desk) -> None:
    cases, _clock, _ = desk
    answer = await cases.register(registration())

    case = answer["case"]
    assert case["number"] == "DB20260304001"
    assert case["promised"] == "2026-03-10"  # 3 working days, the Friday a holiday
    assert case["promised_by"] == "guide"
    assert case["promised_text"] == "2026年3月10日（星期二）"
    assert case["materials"] == [*MATERIALS[:2], "委托书"]
    assert case["citizen"] == {
        "name": "欧***",
        "id_number": "110108********" + ID_NUMBER[-4:],
        "phone": "138****5678",
    }
    assert case["status"] == "received"
    assert answer["receipt"]["state"] == "no_printer"
    (registered,) = await case_events(cases, ev.CaseRegistered)
    assert registered.case == "DB20260304001"
    assert registered.promised == "2026-03-10"
    assert registered.time_limit_days == 3
    assert registered.form == "full"
    assert set(registered.person) == {"sealed", "key"}  # opened only as it is published
    second = await cases.register(registration(promised=dt.date(2026, 3, 20)))
    assert second["case"]["number"] == "DB20260304002"
    assert second["case"]["promised_by"] == "staff"


async def test_the_deadline_warning_comes_once_on_the_right_working_day(desk) -> None:
    cases, clock, _ = desk
    number = (await cases.register(registration()))["case"]["number"]
    raised: dict[dt.date, list[str]] = {}
    # Thursday to the Thursday after, twice a day.
    for offset in range(1, 9):
        day = TAKEN + dt.timedelta(days=offset)
        for hour in (9, 16):
            clock.now = at(day, hour)
            stored = await cases.check_deadlines()
            raised.setdefault(day, []).extend(e.type for e in stored)
    assert {d: t for d, t in raised.items() if t} == {
        dt.date(2026, 3, 9): ["case.deadline_near"],  # Monday: not the holiday Friday
        dt.date(2026, 3, 11): ["case.overdue"],  # the day after the promised Tuesday
    }
    (near,) = await case_events(cases, ev.CaseDeadlineNear)
    assert (near.case, near.promised, near.working_days_left) == (number, "2026-03-10", 1)
    listed = await cases.listing(window="w1", due_filter="overdue")
    assert [c["number"] for c in listed["cases"]] == [number]
    assert (await cases.listing(window="w2", due_filter="due"))["cases"] == []


async def test_a_result_stops_the_clock_and_closing_erases_the_citizen(desk) -> None:
    cases, clock, _store = desk
    number = (await cases.register(registration()))["case"]["number"]
    done = await cases.update(number, cases_status("done"), by="central", note="已出证")
    assert done["case"]["status_text"] == "已办结待领取"
    again = await cases.update(number, cases_status("done"), by="central", note="已出证")
    assert again["unchanged"] is True  # central sent it twice: one event
    clock.now = at(dt.date(2026, 3, 12))
    assert await cases.check_deadlines() == []  # a result is back: nothing is overdue
    public = await cases.public(number)
    assert public == {
        "case": number,
        "service": "社保医保",
        "status": "done",
        "status_text": "已办结，请携带回执到大厅领取",
        "promised": "2026-03-10",
        "promised_text": "2026年3月10日（星期二）",
    }
    record = await cases.hall.store_call(lambda s: s.case_record(number))
    assert record is not None
    assert record[1] is not None
    await cases.update(number, cases_status("closed"), by="window", staff="1001")
    record = await cases.hall.store_call(lambda s: s.case_record(number))
    assert record is not None
    assert record[1] is None
    (closed,) = await case_events(cases, ev.CaseClosed)
    assert (closed.previous, closed.by, closed.overdue) == ("done", "window", False)
    with pytest.raises(Refused, match="closed"):
        await cases.update(number, cases_status("processing"), by="manager")
    assert len(await case_events(cases, ev.CaseUpdated)) == 1


def cases_status(name: str) -> Any:
    from agent.core.cases import CaseStatus

    return CaseStatus(name)


async def test_bad_input_is_refused_with_what_to_fix(desk) -> None:
    cases, _, _ = desk
    with pytest.raises(Refused, match="check digit"):
        await cases.register(registration(id_number=ID_NUMBER[:17] + "0"))
    with pytest.raises(Refused, match="not in the guide's materials"):
        await cases.register(registration(materials=["户口本原件"]))
    with pytest.raises(Refused, match="enter the promised date"):
        await cases.register(registration(service="civil", materials=[]))  # no time limit
    with pytest.raises(Refused, match="before today"):
        await cases.register(registration(promised=dt.date(2026, 3, 1)))
    with pytest.raises(NotFound, match="no service"):
        await cases.register(registration(service="passports"))
    with pytest.raises(NotFound, match="not a case number"):
        await cases.public("A001")
    with pytest.raises(NotFound, match="no case"):
        await cases.public("DB20260304999")
    assert await case_events(cases, ev.CaseRegistered) == []


async def test_the_citizen_is_sealed_at_rest_and_masked_in_logs_and_events(
    desk, caplog: pytest.LogCaptureFixture
) -> None:
    cases, clock, store = desk
    caplog.set_level(logging.DEBUG)
    number = (await cases.register(registration()))["case"]["number"]
    clear = [NAME, ID_NUMBER, PHONE]

    assert "欧***" in caplog.text
    for value in clear:
        assert value not in caplog.text
    rows = await cases.hall.store_call(lambda s: list(s.iter_events()))
    for row in rows:
        for value in clear:
            assert value not in str(row.payload), row.type
    # At rest: neither the database nor its WAL holds them, in UTF-8 or UTF-16.
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    held = b"".join(p.read_bytes() for p in files if p.exists())
    for value in clear:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert value.encode(encoding) not in held, (value, encoding)
    # The hall's copy opens with its key (the receipt desk knows whom to hand it to).
    record = await cases.hall.store_call(lambda s: s.case_record(number))
    assert record is not None
    assert record[1] is not None
    assert cases.vault.unseal(record[1], b"case")["name"] == NAME

    # The event's sealed copy is erased after personal_data.erase_after_hours anyway.
    clock.now = at(TAKEN) + dt.timedelta(hours=73)

    def erase(s: Store, now: dt.datetime, _ok: bool) -> Written[Any]:
        return Written([], s.erase_personal_data(now, 72))

    erased = await cases.hall.write(erase)
    assert erased.expired == 1
    (registered,) = await case_events(cases, ev.CaseRegistered)
    assert registered.person == {"erased": "kept no longer than 72 hours"}
    with sqlite3.connect(store.path) as conn:
        (person,) = conn.execute("SELECT person FROM cases WHERE number = ?", (number,)).fetchone()
    assert person is not None  # the case is open: its own sealed copy stays until it closes


# -- the running agent: receipt on the virtual printer, access ---------------------------------


async def add_user(
    client: httpx.AsyncClient, ops: dict[str, str], name: str, role: str, windows: list[str]
) -> dict[str, str]:
    password = "correct horse 1"
    r = await client.post(
        f"{API}/auth/users",
        json={"name": name, "role": role, "windows": windows, "password": password},
        headers=ops,
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"{API}/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return bearer(r.json()["token"])


@needs_font
@pytest.mark.parametrize("profile", ["gb18030", "raster"])
async def test_the_receipt_is_printed_and_reads_back(tmp_path: Path, profile: str) -> None:
    async with VirtualPrinter(tmp_path / "printed") as vp:
        port = await vp.start_tcp(port=0)
        printer = {
            "id": "kiosk-printer",
            "kind": "printer",
            "transport": {"type": "network", "host": "127.0.0.1", "port": port, "timeout_s": 2},
            "font_charset": "gb18030",
            "profile": profile,
            "poll_interval_s": 0.5,
        }
        config = case_config(tmp_path / "state", devices=[printer])
        async with (
            running_agent(config) as running,
            httpx.AsyncClient(base_url=running.url, timeout=20) as client,
        ):
            staff = await add_user(client, as_ops(running), "1001", "staff", ["w1"])
            r = await client.post(
                f"{API}/windows/w1/cases",
                json={
                    "service": "social",
                    "name": NAME,
                    "id_number": ID_NUMBER,
                    "phone": PHONE,
                    "materials": MATERIALS[:3],
                },
                headers=staff,
            )
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["receipt"] == {"state": "printed"}
            case = body["case"]
            assert case["staff"] == "1001"
            day = running.hall.business_day()
            assert case["promised"] == WorkingDays().add_working_days(day, 3).isoformat()
            (printed,) = await vp.wait_for_tickets(1, within=10)

    # The QR code a phone (or the kiosk's scanner) reads is the case number, with its quiet
    # zone of 4 modules on every side.
    found = read_qr(paper_image(printed.ticket, Paper.for_width(80)))
    assert found.text == case["number"]
    assert min(found.quiet) >= 4 * found.module, found.quiet
    if profile == "raster":  # the whole receipt is an image, as wide as the paper
        assert printed.lines == []
        images = [b for b in printed.ticket.blocks if isinstance(b, Bitmap)]
        assert images
        assert all(i.width == 576 for i in images)
        image = paper_image(printed.ticket, Paper.for_width(80))
        ink = sum(image.histogram()[:128])
        assert 0.03 < ink / (image.width * image.height) < 0.5  # text and QR, not blank
        ARTIFACTS.mkdir(exist_ok=True)
        image.save(ARTIFACTS / "case-receipt.png")  # kept for a person to look at
        return
    lines = printed.lines
    assert lines[:2] == ["测试社区服务站", "代收代办回执"]
    assert case["number"] in lines
    assert "事项：社保医保" in lines
    assert "受理窗口：1号窗口" in lines
    assert "申请人：欧***" in lines
    promised = dt.date.fromisoformat(case["promised"])
    at_ = lines.index("承诺办结日期")
    assert lines[at_ + 1] == chinese_date(promised)
    assert "（承诺时限 3 个工作日）" in lines
    start = lines.index("已收材料：")
    assert lines[start + 1 : start + 4] == [f"√ {m}" for m in MATERIALS[:3]]
    assert "咨询电话 0571-8888 1234" in lines
    assert "凭本回执查询和领取办理结果" in lines
    for value in (NAME, ID_NUMBER, PHONE):
        assert not any(value in line for line in lines)


async def test_who_may_register_list_and_change_cases(tmp_path: Path) -> None:
    config = case_config(tmp_path / "state")
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=20) as client,
    ):
        ops = as_ops(running)
        staff_w1 = await add_user(client, ops, "1001", "staff", ["w1"])
        staff_w2 = await add_user(client, ops, "2002", "staff", ["w2"])
        guide = await add_user(client, ops, "guide-1", "guide", [])
        manager = await add_user(client, ops, "manager-1", "manager", [])
        entry = {"service": "social", "name": NAME, "id_number": ID_NUMBER}

        r = await client.post(f"{API}/windows/w1/cases", json=entry)
        assert r.status_code == 401, r.text
        for who in (staff_w2, guide):
            r = await client.post(f"{API}/windows/w1/cases", json=entry, headers=who)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "forbidden"
        r = await client.post(f"{API}/windows/w1/cases", json=entry, headers=staff_w1)
        assert r.status_code == 201, r.text
        number = r.json()["case"]["number"]
        r = await client.post(f"{API}/windows/w2/cases", json=entry, headers=manager)
        assert r.status_code == 201, r.text

        # Listing every case: the manager (and ops) only.
        for who in (staff_w1, guide):
            r = await client.get(f"{API}/cases", headers=who)
            assert r.status_code == 403, r.text
        r = await client.get(f"{API}/cases", headers=manager)
        assert r.status_code == 200, r.text
        listed = r.json()["cases"]
        assert [c["window"] for c in listed] == ["w1", "w2"]
        assert all(c["citizen"]["name"] == "欧***" for c in listed)
        r = await client.get(f"{API}/windows/w1/cases", headers=staff_w2)
        assert r.status_code == 403, r.text
        r = await client.get(f"{API}/windows/w1/cases", headers=staff_w1)
        assert [c["number"] for c in r.json()["cases"]] == [number]

        # Changing a case: its window's staff, the manager.
        r = await client.post(
            f"{API}/cases/{number}/status", json={"status": "done"}, headers=staff_w2
        )
        assert r.status_code == 403, r.text
        assert "w1" in r.json()["message"]
        r = await client.post(
            f"{API}/cases/{number}/status", json={"status": "done"}, headers=staff_w1
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            f"{API}/cases/{number}/status", json={"status": "received"}, headers=manager
        )
        assert r.status_code == 422, r.text  # not a status anyone sets

        # Anyone with the number: status and date, nothing personal.
        r = await client.get(f"{API}/cases/{number}/public")
        assert r.status_code == 200, r.text
        shown = r.text
        assert r.json()["status_text"] == "已办结，请携带回执到大厅领取"
        for value in (NAME, "欧***", ID_NUMBER, ID_NUMBER[-4:], "w1", "1001"):
            assert value not in shown
        r = await client.get(f"{API}/cases/DB20990101001/public")
        assert r.status_code == 404, r.text


async def test_the_demo_has_a_case_near_its_date_one_overdue_and_one_done(
    tmp_path: Path,
) -> None:
    from agent.config import validate_config
    from agent.demo.cases import demo_cases
    from agent.demo.simulated_hall import demo_config

    data = demo_config(tmp_path / "demo", 0).model_dump(mode="json")
    data["devices"] = []  # the demo's cases need no device
    for window in data["windows"]:
        window["devices"] = []
    config = validate_config(data)
    async with running_agent(config) as running:
        desk = running.cases
        assert desk is not None
        numbers = await demo_cases(running.hall, desk)
        assert len(numbers) == 3
        listing = await desk.listing()
        by_number = {c["number"]: c for c in listing["cases"]}
        near, overdue, done = (by_number[n] for n in numbers)
        assert (near["status"], near["due"]) == ("processing", "near")
        assert (overdue["status"], overdue["due"]) == ("processing", "overdue")
        assert (done["status"], done["due"]) == ("done", None)
        today = dt.date.fromisoformat(listing["day"])
        days = desk.days
        assert near["promised"] == days.add_working_days(today, 1).isoformat()
        assert overdue["promised"] == days.subtract_working_days(today, 2).isoformat()
        # Registered on their own past days, through the desk (sealed, with events).
        assert all(c["day"] < today.isoformat() for c in (near, overdue, done))
        assert near["citizen"]["name"] == "陈**"  # masked, as at a window
        # The deadline watcher warns of the near one and the overdue one.
        raised = {e.type: e.data["case"] for e in await desk.check_deadlines()}
        assert raised == {"case.deadline_near": numbers[0], "case.overdue": numbers[1]}
        # Started again: the cases stay, none added.
        assert await demo_cases(running.hall, desk) == []
    store = Store.open(config.storage.path)
    try:
        kinds = [e.type for e in store.iter_events() if e.type.startswith("case.")]
    finally:
        store.close()
    assert kinds.count("case.registered") == 3
    assert kinds.count("case.updated") == 4
