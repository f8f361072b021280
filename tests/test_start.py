"""What keeps ``hall-agent run`` quick to start, checked for what it does (timing is in
bench/start_latency.py): python-escpos's capabilities are parsed once and kept, and a
damaged copy of them never stops a start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a fresh interpreter: python-escpos is imported once per process.
PROGRAM = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from agent.daemon import ESCPOS_PICKLE_VARIABLE, keep_escpos_capabilities\n"
    "keep_escpos_capabilities(Path(sys.argv[1]))\n"
    "import escpos.capabilities as caps\n"
    "print(caps.pickle_path)\n"
    "print(ESCPOS_PICKLE_VARIABLE in os.environ, 'default' in caps.CAPABILITIES['profiles'])\n"
)


def keep(storage: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(storage)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_escpos_capabilities_are_kept_in_the_state_folder(tmp_path: Path) -> None:
    pickle_path, flags = keep(tmp_path)
    # Kept in <storage.path>/cache, and the variable was not left for child processes.
    assert Path(pickle_path).parent == tmp_path / "cache"
    assert Path(pickle_path).stat().st_size > 1000
    assert flags == "False True"
    # The next start reads the pickle (python-escpos parses only when its file is newer).
    made = Path(pickle_path).stat().st_mtime_ns
    assert keep(tmp_path)[0] == pickle_path
    assert Path(pickle_path).stat().st_mtime_ns == made


def test_a_damaged_capabilities_cache_is_made_anew(tmp_path: Path) -> None:
    pickle_path, _ = keep(tmp_path)
    # Cut short, as a power loss while python-escpos wrote it would leave it.
    Path(pickle_path).write_bytes(Path(pickle_path).read_bytes()[:100])
    again, flags = keep(tmp_path)
    assert again == pickle_path
    assert flags == "False True"
    assert Path(pickle_path).stat().st_size > 1000


def test_an_unwritable_state_folder_leaves_escpos_to_its_default(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    pickle_path, flags = keep(blocked)  # <file>/cache cannot be made
    assert not pickle_path.startswith(str(blocked))
    assert flags == "False True"


def test_the_agent_does_not_scan_installed_packages_for_pydantic_plugins() -> None:
    program = (
        "import sys, agent.cli\n"
        "code = agent.cli.main(['check-config', sys.argv[1]])\n"
        "import pydantic.plugin._loader as loader\n"
        "print(code, loader._plugins)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    done = subprocess.run(
        [sys.executable, "-c", program, str(ROOT / "config" / "example.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The config was validated (pydantic ran) without the plugin scan ever happening.
    assert done.stdout.split() == ["ok", "0", "None"]
