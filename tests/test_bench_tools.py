"""The benchmarks' own tools work: the fsync-delay shim and the write-amplification count.

Not benchmarks (nothing here is timed against a target): a shim that silently did nothing,
or a WAL reader that counted nothing, would make every "what this means on a Pi" figure a
figure of this machine's disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the shim is skipped")
def test_the_shim_delays_every_fsync_of_the_process_it_is_loaded_into(
    bench_path: None, tmp_path: Path
) -> None:
    import _fsync

    counts = tmp_path / "fsyncs"
    env = {
        **os.environ,
        **_fsync.agent_env(30),
        _fsync.COUNT_ENV: str(counts),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / "raw_commit.py"), "--ops", "5", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    figures = json.loads(done.stdout)
    # A sleep is never shorter than asked: each commit's fdatasync took at least 30 ms.
    assert figures["fsync_delay_ms"] == 30
    assert figures["p50_ms"] >= 30
    _pid, fsyncs, fdatasyncs = (int(x) for x in counts.read_text().split())
    assert fsyncs + fdatasyncs >= 5  # one per commit at least, counted by the shim


def test_without_a_compiler_the_delayed_runs_say_so(
    bench_path: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import _fsync

    monkeypatch.setattr(_fsync, "SHIM_DIR", tmp_path)  # nothing built there yet
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(_fsync.shutil, "which", lambda name: None)
    with pytest.raises(_fsync.NoShim, match="no C compiler"):
        _fsync.agent_env(5)
    assert _fsync.agent_env(None) == {}  # no delay asked: nothing to build


def test_write_amplification_names_every_page_a_take_writes(bench_path: None) -> None:
    import write_amplification

    frames = write_amplification.wal_frames(lives=5)
    take = frames["by_step"]["take"]
    assert frames["page_size"] == 2048
    assert take["frames_per_life"] == pytest.approx(sum(take["frames_by_btree"].values()))
    # A take writes its ticket, the hall row and its event (with their indexes).
    assert {"tickets", "hall", "events"} <= set(take["frames_by_btree"])
    # Marking events acked rewrites event rows, never a ticket.
    assert "tickets" not in frames["by_step"]["acked"]["frames_by_btree"]
