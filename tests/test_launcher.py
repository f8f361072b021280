"""The launcher's decisions (agent/runtime/launcher.py, docs/fleet.md): a new version that
never gets healthy is rolled back after ``max_starts`` starts or its deadline, and a
database it migrated is restored from the copy taken before its first start, the newer
file kept beside it. The whole path with real releases is tests/test_update.py."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.launcher import Layout, decide, point, read_state, write_state


def fake_release(layout: Layout, version: str) -> None:
    """A version folder whose Python imports the agent (this test's interpreter)."""
    bin_dir = layout.version_dir(version) / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    (bin_dir / "hall-agent").write_text("#!/bin/sh\n", encoding="utf-8")


def database(path: Path, version: int, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tickets (id TEXT)")
        conn.executemany("INSERT INTO tickets VALUES (?)", [(str(n),) for n in range(rows)])
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    return path


def rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])
    finally:
        conn.close()


def pending(layout: Layout, db: Path, **extra: Any) -> None:
    now = time.time()
    write_state(
        layout,
        {
            "pending": {
                "version": "0.2.0",
                "previous": "0.1.0",
                "previous_target": None,
                "switched_at": now,
                "deadline": now + 300,
                "starts": 0,
                "max_starts": 3,
                "db": str(db),
                **extra,
            }
        },
    )
    point(layout.current, "0.2.0")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "releases", tmp_path / "base" / "bin" / "hall-agent")
    layout.releases.mkdir()
    fake_release(layout, "0.2.0")
    return layout


def test_each_start_is_counted_and_the_database_copied_once(layout: Layout, tmp_path: Path) -> None:
    db = database(tmp_path / "state" / "hall.db", version=8, rows=5)
    pending(layout, db)
    state = decide(layout, time.time())
    assert state["pending"]["starts"] == 1
    copy = Path(state["pending"]["db_copy"])
    assert rows(copy) == 5
    assert state["pending"]["schema_version"] == 8
    database(db, version=8, rows=2)  # the new version takes two tickets
    assert decide(layout, time.time())["pending"]["starts"] == 2
    assert rows(Path(read_state(layout)["pending"]["db_copy"])) == 5  # not copied again
    assert layout.command() == layout.current / "bin" / "hall-agent"


def test_a_version_that_never_gets_healthy_is_rolled_back_keeping_its_tickets(
    layout: Layout, tmp_path: Path
) -> None:
    db = database(tmp_path / "state" / "hall.db", version=8, rows=5)
    pending(layout, db)
    for _ in range(3):  # it crashes (or hangs until the watchdog) three times
        decide(layout, time.time())
    database(db, version=8, rows=2)
    state = decide(layout, time.time())
    rolled = state["rolled_back"]
    assert "did not get healthy in 3 starts" in rolled["cause"]
    assert rolled["to"] == "0.1.0"
    assert rolled["database"] == "kept"  # same schema: what the new version wrote stays
    assert rows(db) == 7
    assert not layout.current.exists()
    assert layout.command() == layout.base


def test_a_migrated_database_is_restored_and_the_newer_file_kept(
    layout: Layout, tmp_path: Path
) -> None:
    db = database(tmp_path / "state" / "hall.db", version=8, rows=5)
    pending(layout, db)
    decide(layout, time.time())
    database(db, version=9, rows=3)  # the new version migrated, then took 3 tickets
    past_deadline = read_state(layout)["pending"]["deadline"] + 1
    state = decide(layout, past_deadline)
    rolled = state["rolled_back"]
    assert rolled["cause"] == "the new version did not get healthy in time"
    assert rolled["database"].startswith("restored the copy taken before the update")
    assert rows(db) == 5
    kept = [p for p in db.parent.iterdir() if p.name.startswith("hall.db.from-0.2.0-")]
    assert len(kept) == 1
    assert rows(kept[0]) == 8  # nothing deleted: the new version's tickets are there


def test_a_version_that_fails_to_import_is_rolled_back_at_once(
    layout: Layout, tmp_path: Path
) -> None:
    broken = layout.version_dir("0.2.0") / "bin" / "python"
    broken.unlink()
    broken.write_text("#!/bin/sh\necho 'ImportError: no module named agent' >&2\nexit 1\n")
    broken.chmod(0o755)
    pending(layout, database(tmp_path / "state" / "hall.db", version=8, rows=1))
    state = decide(layout, time.time())
    assert state["rolled_back"]["cause"] == (
        "the new version fails to start: ImportError: no module named agent"
    )
    assert layout.command() == layout.base


def test_a_damaged_state_file_is_set_aside_and_nothing_is_rolled_back(layout: Layout) -> None:
    layout.state.write_text("{not json", encoding="utf-8")
    assert decide(layout, time.time()) == {}
    assert any(p.name.startswith("update.damaged-") for p in layout.releases.iterdir())
    assert json.loads(json.dumps(read_state(layout))) == {}
