"""A throw-away PKI for TLS tests: a CA, a server and a client certificate, and a wrong CA.

Everything is written as PEM files so mosquitto, paho/aiomqtt and the hall agent's own
config can point at them exactly as they would on a Pi.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # An unrelated CA: a client that trusts it must refuse the broker's certificate.
    wrong_ca_cert: Path
    wrong_ca_key: Path
    # A client certificate signed by the wrong CA: the broker must refuse it.
    wrong_client_cert: Path
    wrong_client_key: Path


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hall-agent tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca(common_name: str) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _leaf(
    issuer: _Issued,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName] | None = None,
    *,
    validity: dt.timedelta = VALIDITY,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> _Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def _write(directory: Path, stem: str, issued: _Issued) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_pki(directory: Path, client_name: str = "hd-test-001") -> Pki:
    """Write a fresh CA, a ``localhost`` server cert, a client cert and a wrong CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("hall-agent test CA")
    server = _leaf(
        ca,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _leaf(ca, client_name, ExtendedKeyUsageOID.CLIENT_AUTH)
    wrong_ca = _ca("an unrelated CA")
    wrong_client = _leaf(wrong_ca, client_name, ExtendedKeyUsageOID.CLIENT_AUTH)

    ca_cert, ca_key = _write(directory, "ca", ca)
    server_cert, server_key = _write(directory, "server", server)
    client_cert, client_key = _write(directory, "client", client)
    wrong_ca_cert, wrong_ca_key = _write(directory, "wrong-ca", wrong_ca)
    wrong_client_cert, wrong_client_key = _write(directory, "wrong-client", wrong_client)
    return Pki(
        dir=directory,
        ca_cert=ca_cert,
        ca_key=ca_key,
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        wrong_ca_cert=wrong_ca_cert,
        wrong_ca_key=wrong_ca_key,
        wrong_client_cert=wrong_client_cert,
        wrong_client_key=wrong_client_key,
    )


def client_cert(pki: Pki, common_name: str) -> tuple[Path, Path]:
    """A client certificate for ``common_name`` (a hall id, or a central role) signed by
    the PKI's CA: ``(cert, key)`` in the PKI's folder."""
    return issue_client(pki, pki.dir, f"client-{common_name}", common_name)


def _load(cert: Path, key: Path) -> _Issued:
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return _Issued(x509.load_pem_x509_certificate(cert.read_bytes()), loaded)


def issue_client(
    pki: Pki,
    directory: Path,
    stem: str,
    common_name: str,
    *,
    days: float = 30,
    wrong_ca: bool = False,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[Path, Path]:
    """A client certificate (and key) for ``common_name`` valid ``days`` more, signed by
    the PKI's CA (or the wrong one); ``key``: certify this key instead of a new one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _load(pki.wrong_ca_cert, pki.wrong_ca_key) if wrong_ca else _load(pki.ca_cert, pki.ca_key)
    issued = _leaf(
        ca,
        common_name,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        validity=dt.timedelta(days=days),
        key=key,
    )
    return _write(directory, stem, issued)


def write_crl(pki: Pki, path: Path, revoked: list[int]) -> Path:
    """A CRL of the PKI's CA revoking the certificates with these serial numbers."""
    ca = _load(pki.ca_cert, pki.ca_key)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(_now() - dt.timedelta(minutes=5))
        .next_update(_now() + dt.timedelta(days=1))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_now() - dt.timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path
