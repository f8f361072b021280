"""The durable store on real SQLite files: the outbox log, atomic commits, damage, epochs."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import HallAgentConfig
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import QueueError
from agent.core.events import EventClass
from agent.core.model import HallCounters, TicketStatus
from agent.runtime.store import DB_NAME, EPOCH_FILE, MIGRATIONS, RawEvent, Store, StoreError

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = dt.date(2026, 3, 2)
TUESDAY = MONDAY + dt.timedelta(days=1)
NOW = dt.datetime.combine(MONDAY, dt.time(10, 0), SHANGHAI)
ENVELOPE_KEYS = {"v", "hall", "epoch", "seq", "id", "type", "at", "clock_ok", "data"}
GARBAGE = b"this is not an SQLite file \x00\xff" * 200


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path):
    store = Store.open(state_dir)
    yield store
    store.close()


def engine_from(store: Store, config: HallAgentConfig, now: dt.datetime = NOW) -> QueueEngine:
    loaded = store.load()
    if loaded.hall is None:
        return QueueEngine(config, HallCounters(day=MONDAY), windows=loaded.windows)
    return QueueEngine(config, loaded.hall, loaded.tickets, loaded.windows)


def run(store: Store, engine: QueueEngine, op) -> Outcome:
    """Apply an engine operation and commit it, the partial outcome of a refusal too."""
    try:
        outcome = op()
    except QueueError:
        outcome = engine.pending
    store.commit(outcome, engine.hall)
    return outcome


def peek(state_dir: Path, sql: str, *args: object) -> list[tuple]:
    """Read the file through a second connection: it sees only what was committed."""
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# -- the log -----------------------------------------------------------------------------


def test_seq_is_gapless_and_increasing_across_commits_and_reopenings(
    state_dir: Path, config: HallAgentConfig
) -> None:
    handed_out: list[int] = []
    for session in range(3):
        store = Store.open(state_dir)
        assert store.last_seq == len(handed_out)
        engine = engine_from(store, config)
        for i in range(12):
            now = NOW + dt.timedelta(minutes=session * 30 + i)
            out = engine.take("social", now) if i % 3 else engine.call_next("w2", now)
            stored = store.commit(out, engine.hall)
            handed_out += [e.seq for e in stored]
            assert len(stored) == len(out.events)
        store.append([RawEvent("device.changed", NOW, {"device": "printer"}, EventClass.CHATTER)])
        handed_out.append(store.last_seq)
        store.close()

    store = Store.open(state_dir)
    try:
        events = list(store.iter_events(batch=7))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert handed_out == list(range(1, len(events) + 1))
        assert store.last_seq == len(events)
        assert len({e.id for e in events}) == len(events)
        assert all(e.epoch == store.epoch == 1 for e in events)
    finally:
        store.close()


def test_a_commit_writes_records_and_events_together(
    store: Store, state_dir: Path, config: HallAgentConfig
) -> None:
    engine = engine_from(store, config)

    stored = store.commit(engine.take("social", NOW), engine.hall)

    assert [e.type for e in stored] == ["ticket.issued"]
    assert peek(state_dir, "SELECT number, status FROM tickets") == [("B001", "waiting")]
    assert peek(state_dir, "SELECT seq, type FROM events") == [(1, "ticket.issued")]
    assert len(peek(state_dir, "SELECT data FROM hall")) == 1
    assert store.outbox_depth() == 1


def test_a_failed_events_insert_leaves_nothing_half_written(
    store: Store, state_dir: Path, config: HallAgentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_from(store, config)
    store.commit(engine.take("social", NOW), engine.hall)
    calling = engine.call_next("w2", NOW)  # window.opened + ticket.called, ticket, window
    assert len(calling.events) == 2
    same = uuid.UUID(int=7)
    monkeypatch.setattr(
        "agent.runtime.store.core.uuid.uuid4", lambda: same
    )  # the 2nd event id clashes

    with pytest.raises(StoreError, match=r"could not save to .*hall\.db: UNIQUE constraint"):
        store.commit(calling, engine.hall)

    assert store.last_seq == 1
    assert peek(state_dir, "SELECT status FROM tickets") == [("waiting",)]
    assert peek(state_dir, "SELECT COUNT(*) FROM windows") == [(0,)]
    assert peek(state_dir, "SELECT seq FROM events") == [(1,)]
    monkeypatch.undo()
    stored = store.commit(calling, engine.hall)
    assert [e.seq for e in stored] == [2, 3]
    assert peek(state_dir, "SELECT status FROM tickets") == [("called",)]


def test_a_value_that_is_not_json_rolls_back_and_the_store_stays_usable(
    store: Store, state_dir: Path, config: HallAgentConfig
) -> None:
    engine = engine_from(store, config)
    store.commit(engine.take("social", NOW), engine.hall)
    hall_before = peek(state_dir, "SELECT data FROM hall")
    bad = engine.take("social", NOW)
    bad.events.append(RawEvent("document.captured", NOW, {"image": object()}))

    with pytest.raises(TypeError, match="not JSON serializable"):
        store.commit(bad, engine.hall)

    assert peek(state_dir, "SELECT number FROM tickets") == [("B001",)]
    assert peek(state_dir, "SELECT data FROM hall") == hall_before
    assert store.last_seq == 1
    bad.events.pop()
    assert [e.seq for e in store.commit(bad, engine.hall)] == [2]
    assert peek(state_dir, "SELECT number FROM tickets ORDER BY number") == [("B001",), ("B002",)]


def test_a_commit_to_a_closed_store_is_a_store_error(
    state_dir: Path, config: HallAgentConfig
) -> None:
    store = Store.open(state_dir)
    engine = engine_from(store, config)
    store.close()

    with pytest.raises(StoreError, match=r"could not save to .*hall\.db"):
        store.commit(engine.take("social", NOW), engine.hall)


def test_history_stays_in_the_store_after_the_rollover(
    store: Store, config: HallAgentConfig
) -> None:
    engine = engine_from(store, config)
    for _ in range(3):
        run(store, engine, lambda: engine.take("social", NOW))
    run(store, engine, lambda: engine.call_next("w2", NOW))
    run(store, engine, lambda: engine.finish("w2", NOW))

    rollover = run(store, engine, lambda: engine.tick(NOW + dt.timedelta(days=1)))
    run(store, engine, lambda: engine.take("social", NOW + dt.timedelta(days=1)))

    assert [e.type for e in rollover.events][-1] == "day.closed"
    monday = store.ticket_history(MONDAY)
    assert [(t.number, t.status) for t in monday] == [
        ("B001", TicketStatus.FINISHED),
        ("B002", TicketStatus.EXPIRED),
        ("B003", TicketStatus.EXPIRED),
    ]
    loaded = store.load()
    assert loaded.hall is not None
    assert loaded.hall.day == TUESDAY
    assert [t.id for t in loaded.tickets] == ["20260303-B001"]


def test_the_engine_rebuilt_from_the_store_is_the_live_one(store: Store, make_config) -> None:
    config = make_config(queue={"aging_minutes": 30})
    engine = engine_from(store, config)
    steps = [
        lambda: engine.sign_in("w1", "s-007", NOW, staff_name="王芳"),
        lambda: engine.take("social", NOW),  # B001
        lambda: engine.take("general", NOW),  # A001
        lambda: engine.take("fund", NOW),  # C01
        lambda: engine.call_next("w1", NOW),  # A001
        lambda: engine.hold("w1", NOW),
        lambda: engine.call_next("w1", NOW),  # B001
        lambda: engine.hold("w1", NOW),  # two held at w1: listed in arrival order
        lambda: engine.take("general", NOW),  # A002
        lambda: engine.call_next("w3", NOW),  # C01
        lambda: engine.transfer("w3", "social", NOW, front=True),  # shares a rank with A002
        lambda: engine.pause("w2", NOW),
        lambda: engine.recall("w2", NOW),  # refused, nothing to commit
    ]
    for step in steps:
        run(store, engine, step)
    later = NOW + dt.timedelta(minutes=45)  # everyone waiting has aged

    replayed = engine_from(store, config)

    assert replayed.snapshot(later) == engine.snapshot(later)
    assert replayed.snapshot(later)["windows"][0]["held"] == ["B001", "A001"]
    assert replayed.next_for("w2", later).number == engine.next_for("w2", later).number
    assert replayed.hall.to_json() == engine.hall.to_json()


def test_a_ticket_carried_into_a_new_day_is_found_under_that_day(
    store: Store, config: HallAgentConfig
) -> None:
    engine = engine_from(store, config)
    engine.clock_trusted = False  # a Pi that booted with a wrong date: the ticket is undated
    run(store, engine, lambda: engine.take("social", NOW))
    engine.clock_trusted = True
    run(store, engine, lambda: engine.tick(NOW + dt.timedelta(days=1)))

    assert peek(store.path.parent, "SELECT id, day FROM tickets") == [
        ("20260302-B001", TUESDAY.isoformat())
    ]
    assert [t.number for t in store.ticket_history(TUESDAY)] == ["B001"]
    assert store.ticket_history(MONDAY) == []
    assert [t.id for t in store.load().tickets] == ["20260302-B001"]


# -- the file's page size ------------------------------------------------------------------


def _old_file(state_dir: Path, config: HallAgentConfig, page_size: int = 4096) -> list[tuple]:
    """A store as an agent before 2 KiB pages made it (4 KiB pages), with queue state and
    events; returns every row of every table, to compare after the conversion."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agent.runtime.store.schema.PAGE_SIZE", page_size)
        store = Store.open(state_dir)
        engine = engine_from(store, config)
        for _ in range(40):
            run(store, engine, lambda: engine.take("social", NOW))
        run(store, engine, lambda: engine.call_next("w2", NOW))
        store.append([RawEvent("device.status", NOW, {"text": "码" * 3000})])  # overflow
        store.close()
    return _everything(state_dir)


def _everything(state_dir: Path) -> list[tuple]:
    tables = [r[0] for r in peek(state_dir, "SELECT name FROM sqlite_schema WHERE type='table'")]
    return [(t, peek(state_dir, f"SELECT * FROM {t} ORDER BY rowid")) for t in sorted(tables)]


def test_a_file_with_4k_pages_is_converted_once_and_keeps_every_row(
    state_dir: Path, config: HallAgentConfig
) -> None:
    before = _old_file(state_dir, config)
    assert peek(state_dir, "PRAGMA page_size") == [(4096,)]

    store = Store.open(state_dir)
    try:
        assert store.last_seq == len(dict(before)["events"]) > 40
        assert len(store.load().tickets) == 40
    finally:
        store.close()

    assert peek(state_dir, "PRAGMA page_size") == [(2048,)]
    assert peek(state_dir, "PRAGMA journal_mode") == [("wal",)]
    assert peek(state_dir, "PRAGMA integrity_check") == [("ok",)]
    assert _everything(state_dir) == before
    assert not (state_dir / f"{DB_NAME}-journal").exists()


def test_a_file_that_cannot_be_converted_now_is_opened_as_it_is(
    state_dir: Path, config: HallAgentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    before = _old_file(state_dir, config)
    reader = sqlite3.connect(state_dir / DB_NAME)  # another process reading the file
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()
    try:
        with caplog.at_level(logging.WARNING):
            store = Store.open(state_dir)
        store.close()
    finally:
        reader.close()

    assert "keeps its 4096-byte pages for now" in caplog.text
    assert peek(state_dir, "PRAGMA page_size") == [(4096,)]
    assert peek(state_dir, "PRAGMA journal_mode") == [("wal",)]
    assert _everything(state_dir) == before

    Store.open(state_dir).close()  # the next start converts it
    assert peek(state_dir, "PRAGMA page_size") == [(2048,)]
    assert _everything(state_dir) == before


def test_a_new_file_has_2k_pages(store: Store, state_dir: Path) -> None:
    assert peek(state_dir, "PRAGMA page_size") == [(2048,)]


# -- damage and epochs ---------------------------------------------------------------------


def test_a_new_store_is_at_the_newest_schema_in_epoch_one(store: Store, state_dir: Path) -> None:
    assert store.epoch == 1
    assert store.last_seq == 0
    assert (state_dir / EPOCH_FILE).read_text() == "1\n"
    assert peek(state_dir, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert peek(state_dir, "PRAGMA journal_mode") == [("wal",)]


def test_the_epoch_survives_reopening(state_dir: Path, config: HallAgentConfig) -> None:
    store = Store.open(state_dir)
    engine = engine_from(store, config)
    store.commit(engine.take("social", NOW), engine.hall)
    store.close()

    store = Store.open(state_dir)
    try:
        assert store.epoch == 1
        assert store.last_seq == 1
        assert store.events()[0].epoch == 1
    finally:
        store.close()


def test_a_higher_number_in_the_epoch_file_is_respected(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / EPOCH_FILE).write_text("7\n")

    store = Store.open(state_dir)
    try:
        assert store.epoch == 8
        assert (state_dir / EPOCH_FILE).read_text() == "8\n"
        assert peek(state_dir, "SELECT value FROM meta WHERE key = 'epoch'") == [("8",)]
    finally:
        store.close()


def test_a_garbage_file_is_moved_aside_and_a_new_epoch_begins(
    state_dir: Path, config: HallAgentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(state_dir)
    engine = engine_from(store, config)
    store.commit(engine.take("social", NOW), engine.hall)
    store.close()
    (state_dir / DB_NAME).write_bytes(GARBAGE)

    with caplog.at_level(logging.ERROR, logger="agent.runtime.store"):
        store = Store.open(state_dir)
    try:
        (aside,) = state_dir.glob(f"{DB_NAME}.damaged-*")
        assert aside.read_bytes() == GARBAGE
        assert store.epoch == 2
        assert (state_dir / EPOCH_FILE).read_text() == "2\n"
        assert store.last_seq == 0
        assert store.load().hall is None
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "was damaged" in record.getMessage()
        assert str(aside) in record.getMessage()
        assert "new epoch" in record.getMessage()
        engine = engine_from(store, config)
        assert [e.seq for e in store.commit(engine.take("social", NOW), engine.hall)] == [1]
    finally:
        store.close()


def test_a_corrupted_page_is_found_and_moved_aside(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(state_dir)
    pad = "x" * 400
    for i in range(100):
        store.append([RawEvent("device.changed", NOW, {"i": i, "pad": pad}, EventClass.CHATTER)])
    store.close()
    path = state_dir / DB_NAME
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = b"\xa5" * (4096 * 3)
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.ERROR, logger="agent.runtime.store"):
        store = Store.open(state_dir)
    try:
        (aside,) = state_dir.glob(f"{DB_NAME}.damaged-*[!lm]")
        assert aside.read_bytes() == bytes(data)
        assert store.epoch == 2
        assert store.last_seq == 0
        assert any("damaged" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_damaged_twice_in_a_row_keeps_both_files(state_dir: Path) -> None:
    Store.open(state_dir).close()
    for round_ in (1, 2):
        (state_dir / DB_NAME).write_bytes(GARBAGE + bytes([round_]))
        store = Store.open(state_dir)
        assert store.epoch == 1 + round_
        store.close()

    kept = sorted(p.read_bytes() for p in state_dir.glob(f"{DB_NAME}.damaged-*[!lm]"))
    assert kept == [GARBAGE + b"\x01", GARBAGE + b"\x02"]


def test_a_newer_schema_is_refused_and_left_alone(state_dir: Path) -> None:
    Store.open(state_dir).close()
    conn = sqlite3.connect(state_dir / DB_NAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()

    with pytest.raises(StoreError, match=r"newer than this agent knows.*install the newer agent"):
        Store.open(state_dir)

    assert list(state_dir.glob(f"{DB_NAME}.damaged-*")) == []
    assert peek(state_dir, "PRAGMA user_version") == [(len(MIGRATIONS) + 5,)]
    assert (state_dir / EPOCH_FILE).read_text() == "1\n"


# -- the envelope ----------------------------------------------------------------------------


def test_the_envelope_has_the_fields_central_expects(store: Store, config: HallAgentConfig) -> None:
    engine = engine_from(store, config)
    store.commit(engine.take("social", NOW), engine.hall)

    (stored,) = store.commit(engine.take("social", NOW), engine.hall, clock_ok=False)
    envelope = stored.envelope("hd-test-001")

    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["v"] == 1
    assert envelope["hall"] == "hd-test-001"
    assert envelope["epoch"] == store.epoch == 1
    assert envelope["seq"] == 2
    assert uuid.UUID(envelope["id"]).version == 4
    assert envelope["type"] == "ticket.issued"
    assert envelope["at"] == "2026-03-02T10:00:00.000+08:00"
    assert envelope["clock_ok"] is False
    assert envelope["data"]["ticket"] == "B002"
    assert envelope["data"]["service"] == "social"
    assert store.events(2)[0].envelope("hd-test-001") == envelope
    assert store.events(1)[0].clock_ok is True
