"""The hall's MQTT client certificate on disk: how long it has left, a new key and its
certificate signing request, and the checked, crash-safe replacement of the pair
(docs/fleet.md, "Certificates that renew themselves").

Files, beside ``mqtt.tls.key_file`` (say ``client.key``):

- ``client.key.pending``: the new key (EC P-256, PKCS#8, mode 0600) made for a renewal;
  its modification time is when the request was last sent.
- ``<cert_file>.new``: a certificate that passed every check, written just before the
  swap; a start that finds it finishes the swap (:func:`recover`).

Nothing here talks to the network; the feature (agent/features/certificates.py) sends the
request through the outbox and installs central's answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import HallAgentError

PENDING_SUFFIX = ".pending"
NEW_SUFFIX = ".new"
# A certificate may start this much in the future (the CA's clock and the hall's differ).
CLOCK_SKEW = dt.timedelta(minutes=10)


class CertificateRefused(HallAgentError):
    """A certificate from central failed a check; nothing was replaced."""


@dataclasses.dataclass(frozen=True, slots=True)
class CertFiles:
    cert: Path
    key: Path
    ca: Path

    @property
    def pending(self) -> Path:
        return self.key.with_name(self.key.name + PENDING_SUFFIX)

    @property
    def new(self) -> Path:
        return self.cert.with_name(self.cert.name + NEW_SUFFIX)


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def days_left(cert: x509.Certificate, now: dt.datetime) -> float:
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def certificate_days_left(path: Path, now: dt.datetime | None = None) -> float | None:
    """Days until the certificate in ``path`` expires (negative: expired); None when it
    cannot be read."""
    try:
        cert = load_certificate(path)
    except (OSError, ValueError):
        return None
    return days_left(cert, now or dt.datetime.now(dt.UTC))


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _public_der(key: ec.EllipticCurvePublicKey | object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC key")  # noqa: TRY004 - callers catch ValueError
    return key


def pending_key(files: CertFiles) -> ec.EllipticCurvePrivateKey:
    """The pending key, made now (0600, written atomically) when there is none."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return _load_key(files.pending)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(files.pending, pem, 0o600)
    os.utime(files.pending, (0, 0))  # not asked yet (the request's time is set once sent)
    return key


def subject_for(hall_id: str, current: x509.Certificate | None) -> x509.Name:
    """The current certificate's subject with its common name set to the hall's id."""
    attributes = [a for a in (current.subject if current else []) if a.oid != NameOID.COMMON_NAME]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, hall_id)])


def make_request(files: CertFiles, hall_id: str) -> str:
    """A PEM certificate signing request for the pending key (made if needed)."""
    key = pending_key(files)
    current: x509.Certificate | None = None
    with contextlib.suppress(OSError, ValueError):
        current = load_certificate(files.cert)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_for(hall_id, current))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _parse_pem_chain(text: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as err:
        raise CertificateRefused(f"the {what} is not PEM certificate text: {err}") from err


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _chains_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: dt.datetime,
) -> bool:
    current = leaf
    for _ in range(len(intermediates) + 1):
        if any(_issued_by(current, root) for root in roots):
            return True
        step = next((i for i in intermediates if _issued_by(current, i)), None)
        if step is None or not step.not_valid_before_utc <= now <= step.not_valid_after_utc:
            return False
        current = step
    return False


def check_certificate(
    files: CertFiles,
    hall_id: str,
    certificate: str,
    chain: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Central's certificate, checked for the pending key: same public key, issued by a CA
    in the CA file (through ``chain``), valid now and for longer than the current one,
    named for this hall, good for client authentication. CertificateRefused otherwise."""
    now = now or dt.datetime.now(dt.UTC)
    certs = _parse_pem_chain(certificate, "certificate")
    if not certs:
        raise CertificateRefused("the certificate is empty; send the PEM text central signed")
    leaf, extra = certs[0], certs[1:]
    intermediates = extra + (_parse_pem_chain(chain, "chain") if chain else [])
    try:
        key = _load_key(files.pending)
    except FileNotFoundError as err:
        raise CertificateRefused(
            "no renewal is pending on this hall (no new key was made); nothing was replaced"
        ) from err
    except ValueError as err:
        raise CertificateRefused(f"the pending key {files.pending} is damaged: {err}") from err
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise CertificateRefused(
            "the certificate is for another key, not the one this hall requested; "
            "nothing was replaced (sign the hall's latest cert.requested CSR)"
        )
    name = common_name(leaf.subject)
    if name != hall_id:
        raise CertificateRefused(
            f"the certificate names {name!r}, not this hall {hall_id!r}; nothing was replaced"
        )
    try:
        roots = x509.load_pem_x509_certificates(files.ca.read_bytes())
    except (OSError, ValueError) as err:
        raise CertificateRefused(f"cannot read the CA file {files.ca}: {err}") from err
    if not _chains_to(leaf, intermediates, roots, now):
        raise CertificateRefused(
            f"the certificate is not issued by a CA in {files.ca} (mqtt.tls.ca_file); "
            "nothing was replaced"
        )
    before, after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if before > now + CLOCK_SKEW:
        raise CertificateRefused(
            f"the certificate is valid only from {before:%Y-%m-%d %H:%M} UTC; check the "
            "CA's clock and this hall's"
        )
    if after <= now:
        raise CertificateRefused(f"the certificate expired on {after:%Y-%m-%d}")
    with contextlib.suppress(OSError, ValueError):
        current = load_certificate(files.cert)
        if after <= current.not_valid_after_utc:
            raise CertificateRefused(
                f"the certificate ends {after:%Y-%m-%d}, not after the current one "
                f"({current.not_valid_after_utc:%Y-%m-%d}); nothing was replaced"
            )
    with contextlib.suppress(x509.ExtensionNotFound):
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise CertificateRefused("the certificate is not for client authentication")
    return leaf


def installed_already(files: CertFiles, certificate: str) -> dict[str, str | bool] | None:
    """The install's result when ``certificate`` is the one in use already (central's
    answer delivered twice, e.g. on the renewal listener and then in the session)."""
    try:
        sent = x509.load_pem_x509_certificates(certificate.encode("ascii"))[0]
        current = load_certificate(files.cert)
    except (OSError, ValueError, UnicodeEncodeError, IndexError):
        return None
    if sent != current:
        return None
    return {
        "serial": serial_hex(current),
        "not_after": current.not_valid_after_utc.isoformat(),
        "already": True,
    }


def install(
    files: CertFiles, leaf: x509.Certificate, intermediates: list[x509.Certificate]
) -> None:
    """Replace the certificate and key with the checked ``leaf`` and the pending key.

    The certificate goes to ``<cert>.new`` first (fsynced); then the pending key is renamed
    over the key file (the old key is gone) and ``<cert>.new`` over the certificate. A
    crash in between is finished by :func:`recover` at the next start."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, *intermediates))
    _write_atomic(files.new, pem, _mode_of(files.cert, 0o640))
    _finish(files)


def recover(files: CertFiles) -> str | None:
    """Finish a swap a crash interrupted; what was done, or None when nothing was open."""
    if not files.new.exists():
        return None
    try:
        new_key = _public_der(load_certificate(files.new).public_key())
    except (OSError, ValueError):
        files.new.unlink(missing_ok=True)
        return f"removed the unreadable {files.new}"
    for path in (files.pending, files.key):
        with contextlib.suppress(OSError, ValueError):
            if _public_der(_load_key(path).public_key()) == new_key:
                _finish(files)
                return f"finished installing {files.new}"
    files.new.unlink(missing_ok=True)
    return f"removed {files.new}: it matches no key here"


def _finish(files: CertFiles) -> None:
    if files.pending.exists():
        os.replace(files.pending, files.key)
    os.replace(files.new, files.cert)
    _sync_dir(files.key.parent)
    if files.cert.parent != files.key.parent:
        _sync_dir(files.cert.parent)


def _mode_of(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, mode)
        out.write(data)
        out.flush()
        os.fsync(fd)
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
