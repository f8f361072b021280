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

cryptography (~7 MB of memory: its compiled module's pages and its objects) is imported
by the functions that need it, not with this module: the hourly look at the expiry date
and the ``/metrics`` gauge read the certificate's ``notAfter`` with :func:`not_valid_after`,
a small reader of the certificate's DER, so a hall with a client certificate carries
cryptography only while it renews (about once a year) or checks an answer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import HallAgentError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

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
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def days_left(cert: x509.Certificate, now: dt.datetime) -> float:
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def certificate_days_left(path: Path, now: dt.datetime | None = None) -> float | None:
    """Days until the certificate in ``path`` expires (negative: expired); None when it
    cannot be read."""
    try:
        after = not_valid_after(path)
    except (OSError, ValueError):
        return None
    return (after - (now or dt.datetime.now(dt.UTC))).total_seconds() / 86400


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL
)


def not_valid_after(path: Path) -> dt.datetime:
    """When the (first) certificate in the PEM file ``path`` expires, in UTC: what
    cryptography's ``not_valid_after_utc`` says, read from the DER without it
    (Certificate → tbsCertificate → validity → notAfter). ValueError when it is not a
    certificate."""
    found = _PEM_CERTIFICATE.search(path.read_bytes())
    if found is None:
        raise ValueError(f"{path} holds no PEM certificate")
    try:
        der = base64.b64decode(found.group(1), validate=False)
    except binascii.Error as err:
        raise ValueError(f"{path}: the certificate is not base64: {err}") from err
    try:
        _, start, _ = _der_item(der, 0, 0x30)  # Certificate
        _, pos, tbs_end = _der_item(der, start, 0x30)  # tbsCertificate
        if der[pos] == 0xA0:  # [0] version
            pos = _der_item(der, pos, 0xA0)[2]
        pos = _der_item(der, pos, 0x02)[2]  # serialNumber
        pos = _der_item(der, pos, 0x30)[2]  # signature algorithm
        pos = _der_item(der, pos, 0x30)[2]  # issuer
        _, pos, _ = _der_item(der, pos, 0x30)  # validity
        pos = _der_item(der, pos, None)[2]  # notBefore
        tag, start, end = _der_item(der, pos, None)  # notAfter
        if end > tbs_end:
            raise ValueError("the validity runs past the certificate")
        return _der_time(tag, der[start:end])
    except IndexError as err:
        raise ValueError(f"{path}: the certificate is cut short") from err


def _der_item(der: bytes, pos: int, tag: int | None) -> tuple[int, int, int]:
    """(tag, start of the content, end of the item) of the DER item at ``pos``."""
    found = der[pos]
    if tag is not None and found != tag:
        raise ValueError(f"not a certificate (DER tag {found:#04x} where {tag:#04x} belongs)")
    length = der[pos + 1]
    start = pos + 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("not a certificate (a DER length of an unsupported form)")
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    end = start + length
    if end > len(der):
        raise ValueError("the certificate is cut short")
    return found, start, end


def _der_time(tag: int, value: bytes) -> dt.datetime:
    """UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280
    has certificates write them."""
    text = value.decode("ascii")
    if tag == 0x17 and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (tag == 0x18 and len(text) == 15 and text.endswith("Z")):
        raise ValueError(f"not a certificate time: {text!r}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _public_der(key: ec.EllipticCurvePublicKey | object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC key")  # noqa: TRY004 - callers catch ValueError
    return key


def pending_key(files: CertFiles) -> ec.EllipticCurvePrivateKey:
    """The pending key, made now (0600, written atomically) when there is none."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

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
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attributes = [a for a in (current.subject if current else []) if a.oid != NameOID.COMMON_NAME]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, hall_id)])


def make_request(files: CertFiles, hall_id: str) -> str:
    """A PEM certificate signing request for the pending key (made if needed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

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
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _parse_pem_chain(text: str, what: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as err:
        raise CertificateRefused(f"the {what} is not PEM certificate text: {err}") from err


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

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
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

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
    from cryptography import x509

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
    from cryptography.hazmat.primitives import serialization

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
