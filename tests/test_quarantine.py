"""Damage SQLite cannot see: a changed byte inside a row's JSON, bytes that are not UTF-8.

``PRAGMA integrity_check`` passes such a file. The store reads every row as bytes and
decodes it itself; a row that does not decode is moved, whole, to the ``quarantine`` table
in one transaction with its report (``store.quarantined``, or ``outbox.evicted`` with reason
``damaged`` for an event), and the hall goes on with everything else. All on real SQLite
files: a hypothesis test damages random rows of a real store, an end-to-end test damages
the file on disk under a real agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MONDAY, SHANGHAI, ManualClock, queue_hall_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import as_ops, hall_config

from agent.config import HallAgentConfig
from agent.core.engine import QueueEngine
from agent.core.errors import QueueError
from agent.core.events import (
    DocumentCaptured,
    Event,
    EventClass,
    IdentityRead,
    OutboxEvicted,
    RowQuarantined,
)
from agent.core.model import HallCounters
from agent.core.operations import Take
from agent.daemon import running_agent
from agent.runtime.hall import Hall
from agent.runtime.store import DB_NAME, CommandRecord, RawEvent, SpoolFile, Store

NOW = dt.datetime.combine(MONDAY, dt.time(10, 0), SHANGHAI)
API = "/api/v1"

# table → (the column damaged, the column that names the row)
DAMAGEABLE = {
    "tickets": ("data", "id"),
    "windows": ("data", "id"),
    "hall": ("data", "id"),
    "events": ("data", "seq"),
    "settings": ("value", "key"),
    "commands": ("reply", "cmd_id"),
}
NOT_UTF8 = [b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
SETTINGS = {
    "notices": [{"id": "n1", "text": "停水通知"}],
    "staff": [{"staff": "s-1", "name": "王芳", "windows": ["w1"]}],
    "appointments": [{"id_sha256": "ab" * 32, "day": "2026-03-02", "service": "social"}],
    "central_config": {"version": "v7", "sections": {"queue": {"recall_limit": 3}}},
    "printing.concluded": {"epoch": 1, "seq": 3, "device": "kiosk-printer"},
    "config_version": "v7",
}


def hall_config_(storage: Path) -> HallAgentConfig:
    return HallAgentConfig.model_validate(queue_hall_data(storage))


def build_store(directory: Path) -> None:
    """A store as a morning leaves it: tickets in every status, windows, counters, events,
    central's settings and answered commands."""
    config = hall_config_(directory)
    store = Store.open(directory)
    try:
        engine = QueueEngine(config, HallCounters(day=MONDAY))
        now = NOW
        steps: list[Any] = [
            lambda t: engine.sign_in("w1", "s-1", t, staff_name="王芳"),
            lambda t: engine.sign_in("w3", "s-3", t),
            *[lambda t, s=s: engine.take(s, t) for s in ("general", "social", "fund") * 3],
            lambda t: engine.call_next("w1", t),
            lambda t: engine.start_serving("w1", t),
            lambda t: engine.finish("w1", t),
            lambda t: engine.call_next("w1", t),
            lambda t: engine.call_next("w3", t),
            lambda t: engine.pause("w3", t, reason="午休"),
        ]
        for step in steps:
            now += dt.timedelta(minutes=1)
            store.commit(step(now), engine.hall)
        store.append(
            [RawEvent("device.changed", now, {"device": "p1"}, EventClass.CHATTER)],
            settings=SETTINGS,
        )
        for n in range(3):
            reply = {"cmd_id": f"c-{n}", "name": "show_notice", "status": "ok", "result": {}}
            store.append([], command=CommandRecord(f"c-{n}", "show_notice", NOW.isoformat(), reply))
    finally:
        store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("template") / "state"
    build_store(directory)
    return directory


def rows_of(db: Path, table: str) -> dict[str, bytes]:
    column, key = DAMAGEABLE[table]
    conn = sqlite3.connect(db)
    try:
        return {
            str(k): bytes(v)
            for k, v in conn.execute(f"SELECT {key}, CAST({column} AS BLOB) FROM {table}")
        }
    finally:
        conn.close()


def damage(db: Path, table: str, key: str, raw: bytes) -> None:
    """Write ``raw`` into the row as TEXT (what a changed byte on disk looks like)."""
    column, key_column = DAMAGEABLE[table]
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {key_column} = ?", (raw, key)
        )
        conn.commit()
    finally:
        conn.close()


def quarantine_of(db: Path) -> dict[tuple[str, str], tuple[bytes, str]]:
    conn = sqlite3.connect(db)
    try:
        return {
            (source, key): (bytes(raw), reason)
            for source, key, raw, reason in conn.execute(
                "SELECT source, key, raw, reason FROM quarantine"
            )
        }
    finally:
        conn.close()


def surely_unreadable(raw: bytes) -> bool:
    """What no decoder may accept: bytes that are not UTF-8, or text that is not JSON."""
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError:
        return True
    return False


async def open_and_read_everything(
    directory: Path, *, take: bool = False
) -> tuple[set[str], str | None]:
    """Open the store, load the hall and read every row once (as the agent's parts do);
    returns the tickets the hall holds and, with ``take``, the id of a ticket taken then."""
    config = hall_config_(directory)
    store = Store.open(directory)
    try:
        hall = Hall(config, store, clock=ManualClock(NOW + dt.timedelta(hours=1)))
        async with hall:

            def read(s: Store) -> None:
                list(s.iter_events())
                s.unpublished(0, 10_000)
                s.stats()
                s.ticket_history(MONDAY)
                for key in SETTINGS:
                    s.setting(key)
                for n in range(3):
                    s.command_reply(f"c-{n}")

            await hall.store_call(read)
            await hall.read(lambda _e, _n: None)  # the writer has set the damage aside
            held = await hall.read(lambda e, _n: set(e.tickets))
            taken = None
            if take:
                with contextlib.suppress(QueueError):
                    outcome = await hall.execute(Take(service="social"))
                    assert outcome.ticket is not None
                    taken = outcome.ticket.id
            return held, taken
    finally:
        store.close()


def reported(db: Path) -> dict[str, set[str]]:
    """What the reports in the outbox name: table → keys (events: their seqs)."""
    out: dict[str, set[str]] = {}
    conn = sqlite3.connect(db)
    try:
        for kind, data in conn.execute(
            "SELECT type, data FROM events WHERE type IN ('store.quarantined', 'outbox.evicted')"
        ):
            body = json.loads(data)
            if kind == "store.quarantined":
                out.setdefault(body["table"], set()).add(body["key"])
            else:
                assert body["reason"] == "damaged"
                for first, last in body["ranges"]:
                    out.setdefault("events", set()).update(str(s) for s in range(first, last + 1))
    finally:
        conn.close()
    return out


def one_damage() -> st.SearchStrategy[tuple[Any, ...]]:
    position = st.integers(0, 10**6)
    return st.one_of(
        st.tuples(st.just("flip"), position, st.integers(1, 255)),
        # Another printable character: often still JSON, sometimes still a valid row.
        st.tuples(st.just("ascii"), position, st.integers(0x20, 0x7E)),
        st.tuples(st.just("not utf-8"), position, st.sampled_from(NOT_UTF8)),
        st.tuples(st.just("cut"), position),
    )


def mutate(raw: bytes, how: tuple[Any, ...]) -> bytes:
    if not raw:
        return b"\xff"
    at = how[1] % len(raw)
    if how[0] == "flip":
        return raw[:at] + bytes([raw[at] ^ how[2]]) + raw[at + 1 :]
    if how[0] == "ascii":
        return raw[:at] + bytes([how[2]]) + raw[at + 1 :]
    if how[0] == "not utf-8":
        return raw[:at] + how[2] + raw[at:]
    return raw[:at]


FIGURES = {"examples": 0, "damaged": 0, "quarantined": 0, "unreadable": 0}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    damages=st.lists(
        st.tuples(st.sampled_from(sorted(DAMAGEABLE)), st.integers(0, 10**6), one_damage()),
        min_size=1,
        max_size=8,
    )
)
def test_random_damage_is_set_aside_and_everything_else_loads(
    template: Path, damages: list[tuple[str, int, tuple[Any, ...]]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "state"
        shutil.copytree(template, directory)
        db = directory / DB_NAME
        before = {table: rows_of(db, table) for table in DAMAGEABLE}
        damaged: dict[tuple[str, str], bytes] = {}
        for table, pick, how in damages:
            keys = sorted(before[table])
            key = keys[pick % len(keys)]
            raw = mutate(damaged.get((table, key), before[table][key]), how)
            damage(db, table, key, raw)
            damaged[(table, key)] = raw

        held, _ = asyncio.run(open_and_read_everything(directory))

        kept = quarantine_of(db)
        after = {table: rows_of(db, table) for table in DAMAGEABLE}
        # Only damaged rows are set aside, with the bytes they had on disk; and the hall's
        # counters when a ticket that still reads names another service than it did.
        for where, (raw, reason) in kept.items():
            if where == ("hall", "1") and where not in damaged:
                assert reason == "its counters are behind the saved tickets' numbers"
                assert any(table == "tickets" for table, _ in damaged)
                assert raw == before["hall"]["1"]
            else:
                assert raw == damaged[where]
        # Whatever cannot be read is set aside; nothing set aside is left in its table
        # (the hall's counters and a command's reply are replaced, not removed).
        for where, raw in damaged.items():
            if surely_unreadable(raw):
                assert where in kept, f"{where} is unreadable but was not set aside"
        for (table, key), (raw, _) in kept.items():
            if table in ("hall", "commands"):
                assert after[table].get(key) != raw
            else:
                assert key not in after[table]
        # Every other row is still there, as it was (damaged rows that still decode too).
        for table, found in before.items():
            for key, raw in found.items():
                if (table, key) not in kept:
                    assert after[table][key] == damaged.get((table, key), raw)
        # The hall holds every open ticket that was not set aside.
        open_ids = {
            key
            for key, raw in before["tickets"].items()
            if ("tickets", key) not in kept and json.loads(raw)["status"] in ("waiting", "called")
        }
        assert open_ids <= held
        # Each row set aside is reported to central, once.
        named = reported(db)
        assert {(t, k) for t, keys in named.items() for k in keys} == set(kept)

        # A second start finds nothing more to set aside and loads the same hall; the
        # ticket it issues never takes the id (and so the row) of a saved one.
        again, taken = asyncio.run(open_and_read_everything(directory, take=True))
        assert quarantine_of(db) == kept
        assert reported(db) == named
        assert again == held
        assert taken not in before["tickets"]
        assert taken not in {key for table, key in kept if table == "tickets"}
        FIGURES["examples"] += 1
        FIGURES["damaged"] += len(damaged)
        FIGURES["quarantined"] += len(kept)
        FIGURES["unreadable"] += sum(surely_unreadable(raw) for raw in damaged.values())


# -- one kind of damage at a time ---------------------------------------------------------------


@pytest.fixture
def state(template: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    shutil.copytree(template, directory)
    return directory


def test_a_damaged_event_is_left_out_of_every_read_and_reported_as_evicted(state: Path) -> None:
    db = state / DB_NAME
    events = rows_of(db, "events")
    damage(db, "events", "3", events["3"][:10])
    damage(db, "events", "4", events["4"].replace(b'"', b'"\xff', 1))
    store = Store.open(state)
    try:
        last = store.last_seq
        assert [e.seq for e in store.events(1, 5)] == [1, 2, 5, 6, 7]
        assert [e.seq for e in store.unpublished(2, 2)] == [5, 6]
        assert [e.seq for e in store.events_between(3, 4, 10)] == []
        assert store.damage_pending
        stored = store.set_aside(NOW, clock_ok=True)
        (report,) = [e.payload for e in stored]
        assert isinstance(report, OutboxEvicted)
        assert (report.reason, report.ranges, report.count) == ("damaged", [[3, 4]], 2)
        assert sum(report.by_class.values()) == 2
        assert stored[0].seq == last + 1
        assert store.seqs_between(1, 6) == [1, 2, 5, 6]
        assert not store.damage_pending
        assert store.set_aside(NOW) == []
        assert [(q.source, q.key) for q in store.quarantined()] == [
            ("events", "3"),
            ("events", "4"),
        ]
        assert store.quarantined_raw(store.quarantined()[0].id) == events["3"][:10]
    finally:
        store.close()


def test_invalid_utf8_outside_the_data_and_a_damaged_oldest_event_do_not_stop_stats(
    state: Path,
) -> None:
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("UPDATE events SET at = CAST(? AS TEXT) WHERE seq = 1", (b"2026-03-02\xff",))
    conn.execute("UPDATE events SET type = CAST(? AS TEXT) WHERE seq = 2", (b"ticket.\xc3",))
    conn.execute("UPDATE events SET class = 9 WHERE seq = 3")
    conn.commit()
    conn.close()
    store = Store.open(state)
    try:
        stats = store.stats()
        assert stats.oldest_unpublished_at == store.events(4, 1)[0].at
        assert [e.seq for e in store.events(1, 2)] == [4, 5]
        (report,) = store.set_aside(NOW)
        assert isinstance(report.payload, OutboxEvicted)
        assert report.payload.ranges == [[1, 3]]
        assert report.payload.by_class["unknown"] == 1
        assert sum(report.payload.by_class.values()) == 3
        reasons = {q.key: q.reason for q in store.quarantined()}
        assert "at column is not UTF-8" in reasons["1"]
        assert "type column is not UTF-8" in reasons["2"]
        assert "class column" in reasons["3"]
    finally:
        store.close()


def test_damaged_hall_counters_are_rebuilt_so_no_number_is_used_twice(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = state / DB_NAME
    damage(db, "hall", "1", rows_of(db, "hall")["1"].replace(b"{", b"[", 1))
    config = hall_config_(state)
    store = Store.open(state)
    try:
        with caplog.at_level(logging.WARNING, logger="agent.runtime.store"):
            loaded = store.load()
        assert loaded.hall is not None
        assert loaded.hall.day == MONDAY
        assert loaded.hall.counters == {"general": 3, "social": 3, "fund": 3}
        assert any("rebuilt them from the tickets" in r.getMessage() for r in caplog.records)
        engine = QueueEngine(config, loaded.hall, loaded.tickets, loaded.windows)
        ranks = [t.rank for t in loaded.tickets]
        out = engine.take("social", NOW + dt.timedelta(hours=1))
        assert out.ticket is not None
        assert out.ticket.number == "B004"
        assert out.ticket.rank > max(ranks)
        (report,) = store.set_aside(NOW)
        assert report.payload == RowQuarantined(table="hall", key="1", reason=report.payload.reason)
        store.commit(out, engine.hall)
        assert store.load().hall == engine.hall
    finally:
        store.close()


def test_a_damaged_command_reply_is_answered_as_failed_and_never_executed_again(
    state: Path,
) -> None:
    db = state / DB_NAME
    raw = rows_of(db, "commands")["c-1"]
    damage(db, "commands", "c-1", raw.replace(b'"status":"ok"', b'"status":"ko"'))
    store = Store.open(state)
    try:
        reply = store.command_reply("c-1")
        assert reply is not None
        assert reply["status"] == "failed"
        assert "not executed again" in reply["error"]
        assert reply["cmd_id"] == "c-1"
        assert reply["name"] == "show_notice"
        store.set_aside(NOW)
        assert store.command_reply("c-1") == reply  # the replacement is saved
        assert not store.damage_pending
        assert store.command_reply("c-0") is not None
        assert [q.key for q in store.quarantined()] == ["c-1"]
    finally:
        store.close()


def test_a_damaged_setting_is_read_as_absent(state: Path) -> None:
    db = state / DB_NAME
    values = rows_of(db, "settings")
    damage(db, "settings", "staff", values["staff"][:-3])
    damage(db, "settings", "central_config", b'{"version":"v7","sectionz":{}}')
    damage(db, "settings", "printing.concluded", b'{"epoch":1,"seq":"3","device":"p"}')
    store = Store.open(state)
    try:
        assert store.setting("staff") is None
        assert store.setting("central_config") is None
        assert store.setting("printing.concluded") is None
        assert store.setting("notices") == SETTINGS["notices"]
        stored = store.set_aside(NOW)
        assert sorted(e.payload.key for e in stored) == [  # type: ignore[attr-defined]
            "central_config",
            "printing.concluded",
            "staff",
        ]
        assert store.setting("staff") is None
        assert not store.damage_pending
    finally:
        store.close()


def test_a_damaged_document_row_is_set_aside_and_its_spool_file_kept(state: Path) -> None:
    store = Store.open(state)
    files = [
        SpoolFile(
            f"f{n}", "d1", n, "image/jpeg", 10, "ab" * 32, 4, 3, 12, NOW.isoformat(), 0, "spooled"
        )
        for n in (1, 2)
    ]
    captured = DocumentCaptured(document="d1", device="cam1", source="camera", pages=[])
    store.spool_document(files, Event(captured, NOW))
    store.close()
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute(
        "UPDATE document_files SET content_type = CAST(? AS TEXT) WHERE id = 'f2'", (b"im\xffg",)
    )
    conn.commit()
    conn.close()
    store = Store.open(state)
    try:
        assert [f.id for f in store.pending_documents()] == ["f1"]
        store.set_aside(NOW)
        assert store.pending_document_ids() == {"f1", "f2"}
        (kept,) = store.quarantined()
        assert (kept.source, kept.key) == ("document_files", "f2")
        raw = json.loads(store.quarantined_raw(kept.id) or b"")
        assert raw["content_type"].encode("utf-8", "surrogateescape") == b"im\xffg"
    finally:
        store.close()


def test_sealed_data_is_still_erased_beside_a_damaged_identity_event(state: Path) -> None:
    store = Store.open(state)
    sealed = {"sealed": "b64", "key_id": "k1"}
    data = {"flow": "kiosk", "person": sealed}
    store.append([RawEvent(IdentityRead.TYPE, NOW, data), RawEvent(IdentityRead.TYPE, NOW, data)])
    last = store.last_seq
    store.close()
    damage(state / DB_NAME, "events", str(last), b'{"person":{"sealed":"b64"')
    store = Store.open(state)
    try:
        erased = store.erase_personal_data(NOW + dt.timedelta(hours=48), max_hours=24)
        assert erased.count == 1
        assert store.events(last - 1, 1)[0].data["person"] != sealed
    finally:
        store.close()


# -- a real agent ---------------------------------------------------------------------------------


def _flip_on_disk(db: Path, value: bytes, old: bytes, new: bytes) -> None:
    """Change bytes inside one stored value in the file itself (SQLite sees nothing)."""
    data = bytearray(db.read_bytes())
    start = data.find(value)
    assert start >= 0, "the value is not in the main file"
    assert data.find(value, start + 1) < 0, "the value is in the file twice"
    at = value.index(old)
    assert len(old) == len(new)
    data[start + at : start + at + len(old)] = new
    db.write_bytes(bytes(data))


@pytest.mark.timeout(120)
async def test_an_agent_starts_and_serves_beside_a_damaged_ticket_and_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = tmp_path / "state"
    config = HallAgentConfig.model_validate(hall_config(storage))
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        for service in ("social", "civil", "social", "housing"):
            assert (
                await client.post(f"{API}/tickets", json={"service": service})
            ).status_code == 201
        events = (await client.get(f"{API}/events")).json()
    victim = next(
        e for e in events if e["type"] == "ticket.issued" and e["data"]["ticket"] == "B001"
    )
    db = storage / DB_NAME
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ticket_id, ticket_data = conn.execute(
        "SELECT id, CAST(data AS BLOB) FROM tickets WHERE number = 'A002'"
    ).fetchone()
    (event_data,) = conn.execute(
        "SELECT CAST(data AS BLOB) FROM events WHERE seq = ?", (victim["seq"],)
    ).fetchone()
    conn.close()
    # One changed byte in an open ticket's JSON; one byte that is not UTF-8 in an event's.
    _flip_on_disk(db, ticket_data, b'"status":', b'"status";')
    _flip_on_disk(db, event_data, b'"civil"', b'"\xffivil"')
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    with caplog.at_level(logging.INFO):
        async with (
            running_agent(config) as agent,
            httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent), timeout=10) as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            queue = await client.get(f"{API}/queue")
            assert queue.status_code == 200
            waiting = [t["number"] for t in queue.json()["waiting"]]
            assert waiting == ["A001", "B001", "C001"]
            response = await client.get(f"{API}/events", params={"limit": 1000})
            assert response.status_code == 200
            assert victim["seq"] not in [e["seq"] for e in response.json()]
            reports: list[dict[str, Any]] = []
            for _ in range(100):
                reports = [
                    e
                    for e in (await client.get(f"{API}/events", params={"limit": 1000})).json()
                    if e["type"] in ("outbox.evicted", "store.quarantined")
                ]
                if len(reports) == 2:
                    break
                await asyncio.sleep(0.05)
            by_type = {e["type"]: e["data"] for e in reports}
            assert by_type["outbox.evicted"]["reason"] == "damaged"
            assert by_type["outbox.evicted"]["ranges"] == [[victim["seq"], victim["seq"]]]
            assert by_type["store.quarantined"]["table"] == "tickets"
            assert by_type["store.quarantined"]["key"] == ticket_id
            # The hall goes on: the next number follows the damaged ticket's.
            taken = await client.post(f"{API}/tickets", json={"service": "social"})
            assert taken.json()["result"]["ticket"]["number"] == "A003"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("damaged row set aside: table tickets" in m and ticket_id in m for m in errors), (
        errors
    )
    assert any(f"table events, key {victim['seq']} " in m for m in errors), errors
    # Never the row's content.
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "issued_service" not in text
    assert "ivil" not in text.replace("civil", "")


async def test_an_out_of_range_seq_is_a_422_and_errors_do_not_echo_what_was_sent(
    tmp_path: Path,
) -> None:
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as client,
    ):
        for params in (
            {"from_seq": "9223372036854775808"},
            {"from_seq": str(10**40)},
            {"from_seq": "0"},
            {"limit": "1001"},
            {"from_seq": "x" * 5000},
        ):
            response = await client.get(f"{API}/events", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"] == "invalid_request"
            assert len(response.text) < 400
        ok = await client.get(f"{API}/events", params={"from_seq": str(2**63 - 1)})
        assert ok.status_code == 200
        assert ok.json() == []
        long_key = {"k" * 10_000: 1, **{f"x{n}" * 300: n for n in range(20)}, "service": "social"}
        response = await client.post(f"{API}/tickets", json=long_key)
        assert response.status_code == 422
        assert len(response.json()["message"]) < 800
        assert "k" * 100 not in response.text
        unknown = await client.post(f"{API}/tickets", json={"service": "x" * 100_000})
        assert unknown.status_code == 404
        assert len(unknown.json()["message"]) <= 500
