"""``hallctl release``: make, sign and check release bundles (docs/fleet.md).

``keygen`` makes the district's Ed25519 key pair (the private key stays at central, the
public key goes into every hall's ``update.trusted_keys``); ``build`` puts the agent's
wheel and the wheels it needs into a bundle with a manifest of sizes and SHA-256s;
``sign`` signs the manifest; ``verify`` checks a bundle as a hall would.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.runtime.release import (
    MANIFEST,
    SIGNATURE,
    BundleFile,
    BundleRefused,
    Manifest,
    public_key_text,
    read_manifest,
    sha256_file,
    verify_bundle,
)

# Each platform as pip names it when downloading wheels for another machine.
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux2014_aarch64", "linux_aarch64"],
}


class ReleaseError(Exception):
    """What went wrong, for a person; hallctl prints it and exits non-zero."""


def keygen(private: Path) -> str:
    """Write a new private key (PEM, mode 0600); the public key line for the config."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if private.exists():
        raise ReleaseError(f"{private} exists: keep it, or remove it first to make a new key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key_text(raw)


def _pip(*args: str) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ReleaseError(f"pip {args[0]} failed:\n{tail}")


def build(
    project: Path,
    out: Path,
    *,
    platforms: Sequence[str] = (),
    wheelhouse: Path | None = None,
    with_dependencies: bool = True,
) -> Manifest:
    """A bundle in ``out`` (new or empty): the agent's wheel from ``project`` and,
    unless told otherwise, every dependency's wheel — built for this machine, and
    downloaded for each of ``platforms`` (``x86_64``, ``aarch64``); ``wheelhouse``
    (wheels prepared elsewhere, e.g. built on a Pi) is searched first."""
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out} is not empty: give a new folder for the bundle")
    for name in platforms:
        if name not in PLATFORMS:
            raise ReleaseError(f"unknown platform {name!r}; use {', '.join(PLATFORMS)}")
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(project))
    agent = next(wheels.glob("hall_agent-*.whl"), None)
    if agent is None:
        raise ReleaseError(f"{project} did not build a hall_agent wheel")
    version = agent.name.split("-")[1]
    find = [] if wheelhouse is None else ["--find-links", str(wheelhouse)]
    if with_dependencies:
        _pip("wheel", "--wheel-dir", str(wheels), *find, str(agent))
        for name in platforms:
            tags = [arg for tag in PLATFORMS[name] for arg in ("--platform", tag)]
            _pip(
                "download",
                "--only-binary=:all:",
                *tags,
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--dest",
                str(wheels),
                *find,
                str(agent),
            )
    files = [
        BundleFile(path=str(p.relative_to(out)), size=p.stat().st_size, sha256=sha256_file(p))
        for p in sorted(wheels.iterdir())
        if p.is_file()
    ]
    manifest = Manifest(
        version=version,
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        platforms=sorted({_this_platform(), *(f"linux_{p}" for p in platforms)}),
        files=files,
    )
    (out / MANIFEST).write_text(
        json.dumps(manifest.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8",
    )
    return manifest


def _this_platform() -> str:
    return f"linux_{os.uname().machine}"


def sign(bundle: Path, private: Path) -> str:
    """Sign ``bundle``'s manifest with the private key; the public key that verifies it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data, _manifest = read_manifest(bundle)
    try:
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise ReleaseError(f"cannot read the private key {private}: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{private} is not an Ed25519 key (hallctl release keygen makes one)")
    signature = base64.b64encode(key.sign(data))
    (bundle / SIGNATURE).write_bytes(signature + b"\n")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key_text(raw)


def pack(bundle: Path, out: Path) -> tuple[str, int]:
    """The bundle as one tar file for halls to download: (SHA-256, size)."""
    import tarfile

    read_manifest(bundle)
    if not (bundle / SIGNATURE).exists():
        raise ReleaseError(f"{bundle} is not signed yet: hallctl release sign {bundle} --key KEY")
    with tarfile.open(out, "w") as tar:
        for name in (MANIFEST, SIGNATURE, "wheels"):
            tar.add(bundle / name, arcname=name)
    return sha256_file(out), out.stat().st_size


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("release", help="make, sign and check release bundles (docs/fleet.md)")
    verbs = p.add_subparsers(dest="verb", required=True)
    k = verbs.add_parser("keygen", help="a new Ed25519 key pair; prints the public key")
    k.add_argument("private", type=Path, help="where to write the private key (PEM, 0600)")
    b = verbs.add_parser("build", help="the agent's wheel and its dependencies, with a manifest")
    b.add_argument("--project", type=Path, default=Path(), help="the agent's source (default .)")
    b.add_argument("--out", type=Path, required=True, help="a new folder for the bundle")
    b.add_argument(
        "--platform",
        action="append",
        default=[],
        choices=sorted(PLATFORMS),
        help="also download wheels for this platform (repeat)",
    )
    b.add_argument("--wheelhouse", type=Path, help="a folder of wheels to use first")
    b.add_argument("--no-deps", action="store_true", help="the agent's wheel alone (tests)")
    s = verbs.add_parser("sign", help="sign a bundle's manifest")
    s.add_argument("bundle", type=Path)
    s.add_argument("--key", type=Path, required=True, help="the private key (PEM)")
    t = verbs.add_parser("pack", help="a signed bundle as one file to serve to the halls")
    t.add_argument("bundle", type=Path)
    t.add_argument("--out", type=Path, required=True, help="the tar file to write")
    v = verbs.add_parser("verify", help="check a bundle as a hall would")
    v.add_argument("bundle", type=Path)
    v.add_argument("--trusted", action="append", required=True, help="ed25519:… (repeat)")
    v.add_argument("--running", default="0", help="the version it must be newer than")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    try:
        if args.verb == "keygen":
            print(keygen(args.private))
        elif args.verb == "build":
            manifest = build(
                args.project,
                args.out,
                platforms=args.platform,
                wheelhouse=args.wheelhouse,
                with_dependencies=not args.no_deps,
            )
            print(
                f"{args.out}: hall-agent {manifest.version}, {len(manifest.files)} files, "
                f"{manifest.size / 1e6:.1f} MB; now sign it: hallctl release sign {args.out} "
                "--key KEY"
            )
        elif args.verb == "pack":
            digest, size = pack(args.bundle, args.out)
            _data, manifest = read_manifest(args.bundle)
            print(
                f"{args.out}: {size} bytes, sha256 {digest}\nserve it over HTTPS, then: "
                f"hallctl cmd HALL update_agent version={manifest.version} url=URL "
                f"sha256={digest} size={size}"
            )
        elif args.verb == "sign":
            print(f"signed; halls trusting {sign(args.bundle, args.key)} will install it")
        else:
            manifest = verify_bundle(args.bundle, args.trusted, args.running)
            print(f"ok: hall-agent {manifest.version}, {len(manifest.files)} files verified")
    except (ReleaseError, BundleRefused) as err:
        print(f"hallctl release: {err}", file=sys.stderr)
        return 1
    return 0
