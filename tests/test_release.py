"""Release bundles (docs/fleet.md): built from the project's real source, signed with a
real Ed25519 key, and refused when the signature, a byte or the version is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import project_copy

from agent.runtime.release import BundleRefused, verify_bundle
from hallctl.cli import run as hallctl


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A bundle of the agent alone, version 0.2.0, signed: (bundle, public key, key)."""
    base = tmp_path_factory.mktemp("release")
    key = base / "keys" / "release.pem"
    project = project_copy(base / "src", "0.2.0")
    bundle = base / "bundle"
    assert _sync(["release", "keygen", str(key)]) == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert (
        _sync(["release", "build", "--project", str(project), "--out", str(bundle), "--no-deps"])
        == 0
    )
    assert _sync(["release", "sign", str(bundle), "--key", str(key)]) == 0
    public = _public_key(key)
    return bundle, public, key


def _sync(argv: list[str]) -> int:
    import asyncio

    return asyncio.run(hallctl(argv))


def _public_key(private: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.runtime.release import public_key_text

    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key_text(raw)


def test_a_signed_bundle_verifies(signed: tuple[Path, str, Path]) -> None:
    bundle, public, _key = signed
    manifest = verify_bundle(bundle, [public], running_version="0.1.0")
    assert manifest.version == "0.2.0"
    assert manifest.agent_wheel().path.startswith("wheels/hall_agent-0.2.0-")
    listed = {f.path for f in manifest.files}
    assert listed == {str(p.relative_to(bundle)) for p in (bundle / "wheels").iterdir()}


def test_a_bundle_signed_with_another_key_is_refused(
    signed: tuple[Path, str, Path], tmp_path: Path
) -> None:
    bundle, _public, _key = signed
    other = tmp_path / "other.pem"
    assert _sync(["release", "keygen", str(other)]) == 0
    with pytest.raises(BundleRefused, match="does not verify with any trusted key"):
        verify_bundle(bundle, [_public_key(other)], running_version="0.1.0")


def test_one_changed_byte_is_refused(signed: tuple[Path, str, Path], tmp_path: Path) -> None:
    bundle, public, _key = signed
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    wheel = next((copy / "wheels").glob("hall_agent-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    with pytest.raises(BundleRefused, match="differs from the signed manifest"):
        verify_bundle(copy, [public], running_version="0.1.0")
    # A changed manifest (one byte of it) breaks the signature instead.
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"0.2.0"', '"0.2.1"'), encoding="utf-8")
    with pytest.raises(BundleRefused, match="does not verify"):
        verify_bundle(copy, [public], running_version="0.1.0")


def test_an_older_or_same_version_is_refused(signed: tuple[Path, str, Path]) -> None:
    bundle, public, _key = signed
    for running in ("0.2.0", "0.3.0"):
        with pytest.raises(BundleRefused, match="not newer than the running"):
            verify_bundle(bundle, [public], running_version=running)


def test_no_key_no_signature_and_a_damaged_manifest(
    signed: tuple[Path, str, Path], tmp_path: Path
) -> None:
    bundle, public, _key = signed
    with pytest.raises(BundleRefused, match="no trusted release keys"):
        verify_bundle(bundle, [], running_version="0.1.0")
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "manifest.sig").unlink()
    with pytest.raises(BundleRefused, match="sign it"):
        verify_bundle(copy, [public], running_version="0.1.0")
    data = json.loads((copy / "manifest.json").read_text())
    data["files"][0]["path"] = "../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleRefused, match="not a valid manifest"):
        verify_bundle(copy, [public], running_version="0.1.0")


def test_the_command_line_says_what_is_wrong(
    signed: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle, public, key = signed
    assert _sync(["release", "verify", str(bundle), "--trusted", public, "--running", "0.1.0"]) == 0
    assert "ok: hall-agent 0.2.0" in capsys.readouterr().out
    assert _sync(["release", "verify", str(bundle), "--trusted", public, "--running", "0.2.0"]) == 1
    assert "not newer than the running 0.2.0" in capsys.readouterr().err
    assert _sync(["release", "keygen", str(key)]) == 1
    assert "exists" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert _sync(["release", "build", "--out", str(tmp_path / "full")]) == 1
    assert "not empty" in capsys.readouterr().err
