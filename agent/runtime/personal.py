"""Personal data from ID cards: sealed at rest, masked in logs, erased once delivered.

- **At rest** a card's contents are sealed with AES-GCM (``cryptography``) under a key
  derived from the hall's key file (32 random bytes, mode 0600, created at install or on
  the first start). The outbox only ever holds the sealed form; the link unseals it at
  the moment it publishes over TLS.
- **What leaves the hall** is chosen per flow (``personal_data.send``): ``full`` (every
  field and the raw WLT photo), ``masked`` (name and number masked as in logs), ``hash``
  (only a keyed hash of the ID number) or ``none``.
- **Erased** from the outbox once central acknowledged the event, and at the latest after
  ``personal_data.erase_after_hours`` even if it never did: the sealed part is replaced by
  ``{"erased": ...}``; the rest of the event (flow, window, ticket, hash) stays (the
  store does it: ``Store.erase_personal_data``, :mod:`agent.runtime.store.personal`).
- **Logs** only ever see :func:`masked` values.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# cryptography is imported on first use (the first card read), not at start: it is ~6 MB
# of an idle agent's memory on a Pi that may see no card for hours.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.errors import HallAgentError
from agent.runtime.logs import mask_id_number, mask_name
from protocols.idcard import IdCard

log = logging.getLogger(__name__)

Form = Literal["full", "masked", "hash", "none"]

KEY_BYTES = 32
_NONCE = 12
_SEAL_AAD = b"hall-agent/personal-data/v1"


class PersonalDataError(HallAgentError):
    """The personal data key cannot be used; the message says how to fix it."""


def create_key_file(path: Path) -> bool:
    """Create a new random key file (mode 0600) unless one exists; True when created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def read_key_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as err:
        raise PersonalDataError(
            f"cannot read the personal data key {path} ({err.strerror}); create it with "
            "`hall-agent` (it creates a missing key at start) or check its owner"
        ) from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PersonalDataError(
            f"the personal data key {path} can be read by others (mode {stat.filemode(mode)}); "
            f"run: chmod 600 {path}"
        )
    if len(data) < KEY_BYTES:
        raise PersonalDataError(
            f"the personal data key {path} holds {len(data)} bytes, not {KEY_BYTES}; "
            "move it aside so a new one is created (data sealed with it is then lost)"
        )
    return data


def _derive(master: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class Vault:
    """Seals and unseals personal data, and hashes ID numbers with a key."""

    def __init__(self, master: bytes, hash_key: bytes | None = None) -> None:
        self._master = master
        self._given_hash_key = hash_key

    @functools.cached_property
    def _aead(self) -> AESGCM:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(_derive(self._master, b"hall-agent/seal/v1"))

    @functools.cached_property
    def _hash_key(self) -> bytes:
        return self._given_hash_key or _derive(self._master, b"hall-agent/id-hash/v1")

    @functools.cached_property
    def key_id(self) -> str:
        return hashlib.sha256(_derive(self._master, b"hall-agent/key-id/v1")).hexdigest()[:8]

    @classmethod
    def from_files(cls, key_file: Path, hash_key_file: Path | None = None) -> Vault:
        """The hall's vault; a missing key file is created (the first start)."""
        if create_key_file(key_file):
            log.warning(
                "created a new personal data key at %s (mode 0600); keep it with the state "
                "directory's backups",
                key_file,
            )
        hash_key = None if hash_key_file is None else read_key_file(hash_key_file)
        return cls(read_key_file(key_file), hash_key)

    def seal(self, value: Any, aad: bytes = b"") -> str:
        nonce = secrets.token_bytes(_NONCE)
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plain, _SEAL_AAD + aad)
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, text: str, aad: bytes = b"") -> Any:
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.b64decode(text, validate=True)
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _SEAL_AAD + aad)
        except (InvalidTag, ValueError, binascii.Error) as err:
            raise PersonalDataError(
                "sealed personal data cannot be opened with this hall's key (was the key "
                "file replaced?)"
            ) from err
        return json.loads(plain)

    def encrypt_bytes(self, data: bytes, aad: bytes) -> bytes:
        """Binary sealing for the document spool: nonce + ciphertext + tag."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, _SEAL_AAD + aad)

    def decrypt_bytes(self, sealed: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _SEAL_AAD + aad)
        except (InvalidTag, ValueError) as err:
            raise PersonalDataError(
                "a spooled document cannot be opened with this hall's key (damaged, or the "
                "key file was replaced)"
            ) from err

    def id_hash(self, id_number: str) -> str:
        """A keyed hash of an ID number: the same card gives the same value in this hall
        (or, with a shared ``hash_key_file``, in every hall of the district)."""
        normal = id_number.strip().upper().encode("utf-8")
        return hmac.new(self._hash_key, normal, hashlib.sha256).hexdigest()


SEAL_OVERHEAD = _NONCE + 16

# The events whose ``person`` may hold sealed personal data: opened as they are published,
# erased once central acknowledged them (agent/runtime/store/personal.py).
SEALED_EVENT_TYPES = ("identity.read", "case.registered")


def masked(card: IdCard) -> dict[str, Any]:
    """What may be shown in logs and sent in the ``masked`` form."""
    return {
        "card_type": card.card_type.value,
        "name": mask_name(card.name),
        "id_number": mask_id_number(card.id_number)
        if len(card.id_number) == 18
        else card.id_number[:3] + "*" * max(0, len(card.id_number) - 5) + card.id_number[-2:],
        "gender": card.gender,
        "birth_year": card.birth_date.year,
        "nationality": card.nationality or None,
    }


def describe(card: IdCard) -> str:
    """A card for a log line: type, masked name, masked number."""
    shown = masked(card)
    return f"{card.card_type.label} {shown['name']} {shown['id_number']}"


def person(card: IdCard, photo: bytes, additional_address: str | None = None) -> dict[str, Any]:
    """Every field central's acceptance flow needs (the ``full`` form, before sealing)."""
    data = card.as_dict()
    data["photo_wlt"] = base64.b64encode(photo).decode("ascii") if photo else None
    if additional_address:
        data["additional_address"] = additional_address
    return data


def identity_data(
    vault: Vault,
    form: Form,
    card: IdCard,
    photo: bytes,
    additional_address: str | None = None,
) -> dict[str, Any]:
    """The personal part of an ``identity.read`` event as it is stored (sealed if full)."""
    out: dict[str, Any] = {
        "form": form,
        "card_type": card.card_type.value,
        "id_hash": vault.id_hash(card.id_number),
    }
    if form == "full":
        out["person"] = {
            "sealed": vault.seal(person(card, photo, additional_address)),
            "key": vault.key_id,
        }
    elif form == "masked":
        out["person"] = masked(card)
    return out


def unseal_event(vault: Vault, envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope central receives: a sealed person opened (at publish time only)."""
    data = envelope.get("data")
    if envelope.get("type") not in SEALED_EVENT_TYPES or not isinstance(data, dict):
        return envelope
    held = data.get("person")
    if not isinstance(held, dict) or "sealed" not in held:
        return envelope
    try:
        opened = vault.unseal(str(held["sealed"]))
    except PersonalDataError as err:
        log.error("%s event %s: %s", envelope.get("type"), envelope.get("seq"), err)
        opened = {"unavailable": str(err)}
    return {**envelope, "data": {**data, "person": opened}}


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``; a short number keeps its last two digits."""
    digits = phone.strip()
    if len(digits) >= 7:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    return "*" * max(0, len(digits) - 2) + digits[-2:]


def mask_citizen(name: str, id_number: str, phone: str | None) -> dict[str, Any]:
    """A citizen as logs, lists and the ``masked`` form show them."""
    number = id_number.strip().upper()
    shown = (
        mask_id_number(number)
        if len(number) == 18
        else number[:3] + "*" * max(0, len(number) - 5) + number[-2:]
    )
    return {
        "name": mask_name(name.strip()),
        "id_number": shown,
        "phone": None if not phone else mask_phone(phone),
    }


def citizen_data(
    vault: Vault, form: Form, name: str, id_number: str, phone: str | None
) -> tuple[dict[str, Any], str]:
    """A proxy case's citizen: the personal part of its ``case.registered`` event, per
    ``form`` as for an ID card read at a window, and the sealed copy the hall keeps until
    the case closes."""
    number = id_number.strip().upper()
    person = {"name": name.strip(), "id_number": number, "phone": phone}
    out: dict[str, Any] = {"form": form}
    if form != "none":
        out["id_hash"] = vault.id_hash(number)
    if form == "full":
        out["person"] = {"sealed": vault.seal(person), "key": vault.key_id}
    elif form == "masked":
        out["person"] = mask_citizen(name, id_number, phone)
    return out, vault.seal(person, b"case")


Unsealer = Callable[[dict[str, Any]], dict[str, Any]]
