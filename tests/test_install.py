"""scripts/install-pi and uninstall-pi, staged under a temporary root (no apt, no users,
no systemctl): what they write, that a second run changes nothing, and what uninstall
keeps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.timeout(300)
def test_install_is_idempotent_and_uninstall_keeps_the_halls_data(tmp_path: Path) -> None:
    root = tmp_path / "root"
    staged = ("--root", str(root), "--skip-venv", "--python", sys.executable)
    first = run("install-pi", *staged)
    assert "wrote /etc/hall-agent/config.yaml from the example" in first

    unit = root / "etc/systemd/system/hall-agent.service"
    assert unit.read_bytes() == (REPO / "systemd/hall-agent.service").read_bytes()
    rules = root / "etc/udev/rules.d/99-hall-agent.rules"
    assert rules.read_bytes() == (REPO / "systemd/99-hall-agent.rules").read_bytes()
    config = root / "etc/hall-agent/config.yaml"
    assert config.read_bytes() == (REPO / "config/example.yaml").read_bytes()
    assert config.stat().st_mode & 0o777 == 0o640
    key = root / "var/lib/hall-agent/personal-data.key"
    assert len(key.read_bytes()) == 32
    assert key.stat().st_mode & 0o777 == 0o600
    assert (root / "opt/hall-agent/docs/operations.md").exists()
    if shutil.which("espeak-ng"):
        assert (root / "var/lib/hall-agent/voice/pack.json").exists()

    # The ops person edits the config; a second run changes nothing at all.
    config.write_text(config.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    key_before = key.read_bytes()
    before = snapshot(root)
    second = run("install-pi", *staged)
    assert "wrote" not in second
    assert "made" not in second
    assert snapshot(root) == before
    assert key.read_bytes() == key_before

    # A changed unit is written again, nothing else.
    unit.write_text("stale\n", encoding="utf-8")
    third = run("install-pi", *staged)
    assert [line for line in third.splitlines() if "wrote" in line] == [
        "install-pi: wrote /etc/systemd/system/hall-agent.service"
    ]

    out = run("uninstall-pi", "--root", str(root))
    assert not unit.exists()
    assert not rules.exists()
    assert not (root / "opt/hall-agent").exists()
    assert config.read_text(encoding="utf-8").endswith("# edited\n")
    assert key.read_bytes() == key_before
    assert "kept /var/lib/hall-agent" in out
    assert "removed" not in run("uninstall-pi", "--root", str(root))  # nothing left to do

    run("uninstall-pi", "--root", str(root), "--purge")
    assert not (root / "etc/hall-agent").exists()
    assert not (root / "var/lib/hall-agent").exists()


def test_the_installer_refuses_unknown_options_and_needs_root_for_the_real_thing() -> None:
    result = subprocess.run(
        [str(REPO / "scripts/install-pi"), "--frobnicate"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr
    if os.getuid() != 0:
        result = subprocess.run(
            [str(REPO / "scripts/install-pi")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert "run it as root" in result.stderr
