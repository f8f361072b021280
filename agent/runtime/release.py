"""Release bundles: what an update is made of, and the checks before it is installed
(docs/fleet.md).

A bundle is a folder (or the same folder downloaded from central)::

    manifest.json    what is in it: name, version, every file with its size and SHA-256
    manifest.sig     an Ed25519 signature of manifest.json's exact bytes, base64
    wheels/…         the agent's wheel and the wheels of everything it needs

``hallctl release build`` makes one, ``hallctl release sign`` signs it with the
district's private key; the agent trusts only the public keys in its config
(``update.trusted_keys``). :func:`verify_bundle` refuses a bundle whose signature does not
verify with one of them, whose files differ from the manifest by a single byte, or whose
version is not newer than the running one; nothing is installed before it passes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config.system import KEY_PREFIX, parse_public_key
from agent.errors import HallAgentError

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
NAME = "hall-agent"
# A file path inside a bundle: relative, plain characters (no "..": see _safe_path).
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+/-]{0,199}$")
_CHUNK = 1 << 20


class BundleRefused(HallAgentError):
    """The bundle must not be installed; the message says why and what to do."""


class BundleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, Field(pattern=_SAFE_PATH.pattern)]
    size: int = Field(ge=0)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        if ".." in path.split("/"):
            raise ValueError("a bundle's file path may not climb out of the bundle (..)")
        return path


class Manifest(BaseModel):
    """``manifest.json``: the signed description of one release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: Literal["hall-agent"] = "hall-agent"
    version: Annotated[str, Field(min_length=1, max_length=64)]
    created_at: dt.datetime
    platforms: list[str] = Field(default_factory=list, description="e.g. linux_aarch64")
    python: str = Field(default=">=3.11")
    files: list[BundleFile] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _pep440(cls, version: str) -> str:
        parse_version(version)
        return version

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def agent_wheel(self) -> BundleFile:
        for f in self.files:
            name = Path(f.path).name
            if name.startswith("hall_agent-") and name.endswith(".whl"):
                return f
        raise BundleRefused("the bundle has no hall_agent wheel; build it with hallctl release")


def parse_version(text: str) -> object:
    """A PEP 440 version, comparable; BundleRefused for text that is none."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion as err:
        raise BundleRefused(f"{text!r} is not a version (e.g. 0.2.0)") from err


def newer(candidate: str, running: str) -> bool:
    from packaging.version import Version

    return Version(candidate) > Version(running)


def public_key_text(raw: bytes) -> str:
    """How a public key is written in the config: ``ed25519:`` and base64 of 32 bytes."""
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> tuple[bytes, Manifest]:
    path = bundle / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise BundleRefused(f"{path} is missing: this is not a release bundle") from err
    try:
        return data, Manifest.model_validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleRefused(f"{path} is not a valid manifest: {where}: {first['msg']}") from err


def check_signature(data: bytes, signature_text: bytes, trusted_keys: Iterable[str]) -> str:
    """The trusted key (as configured) that signed ``data``; BundleRefused otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = list(trusted_keys)
    if not keys:
        raise BundleRefused(
            "no trusted release keys are configured (update.trusted_keys): updates are off"
        )
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
    except binascii.Error as err:
        raise BundleRefused(f"{SIGNATURE} is not base64; sign the bundle again") from err
    for text in keys:
        key = Ed25519PublicKey.from_public_bytes(parse_public_key(text))
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return text
    raise BundleRefused(
        "the manifest's signature does not verify with any trusted key: "
        "the bundle was changed or signed with another key; do not install it"
    )


def verify_bundle(bundle: Path, trusted_keys: Iterable[str], running_version: str) -> Manifest:
    """The bundle's manifest once the signature, every file and the version pass."""
    data, manifest = read_manifest(bundle)
    try:
        signature = (bundle / SIGNATURE).read_bytes()
    except FileNotFoundError as err:
        raise BundleRefused(
            f"{bundle / SIGNATURE} is missing: sign it (hallctl release sign)"
        ) from err
    check_signature(data, signature, trusted_keys)
    if not newer(manifest.version, running_version):
        raise BundleRefused(
            f"version {manifest.version} is not newer than the running {running_version}: "
            "to go back, roll back (docs/fleet.md), do not install an older bundle"
        )
    for f in manifest.files:
        path = bundle / f.path
        if not path.is_file():
            raise BundleRefused(f"{f.path} is in the manifest but not in the bundle")
        size = path.stat().st_size
        if size != f.size:
            raise BundleRefused(f"{f.path} has {size} bytes, the manifest says {f.size}")
        if sha256_file(path) != f.sha256:
            raise BundleRefused(f"{f.path} differs from the signed manifest (SHA-256)")
    manifest.agent_wheel()
    return manifest
