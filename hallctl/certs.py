"""``hallctl certs serve``: central's side of the certificates that renew themselves
(docs/fleet.md).

Listens for ``cert.requested`` events (and ``renewal/request`` messages of halls whose
certificate expired, over the renewal-only listener), checks that the request is the hall's own (its
signature, and a subject naming exactly the hall whose topic it came on: a hall never gets
a certificate for another), signs it with the district's client CA and sends the
certificate back as ``install_certificate``. The broker's ACL makes sure a hall can publish
only under its own topic, so the topic names the hall.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from agent.central.contract import ROOT, EventEnvelope, InstallCertificate, RenewalRequest
from hallctl.broker import EXIT_OK, BrokerOptions, HallctlError, UsageError, _connected, _hall_of

log = logging.getLogger("hallctl.certs")

REQUESTED = "cert.requested"
# What a hall with an expired certificate sends over the renewal-only listener.
RENEWAL_TOPIC = "/renewal/request"
# The signed certificate starts this much in the past: the hall's clock may lag.
BACKDATE = dt.timedelta(minutes=5)


class RequestRefused(HallctlError):
    """A certificate request that is not signed: what is wrong with it."""


class Authority:
    """The district's client CA: its certificate and key (PEM files)."""

    def __init__(self, cert: Path, key: Path, days: int) -> None:
        try:
            self.cert = x509.load_pem_x509_certificate(cert.read_bytes())
        except (OSError, ValueError) as err:
            raise UsageError(f"--ca-cert {cert}: not a readable PEM certificate ({err})") from err
        try:
            loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as err:
            raise UsageError(f"--ca-key {key}: not a readable unencrypted PEM key ({err})") from err
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise UsageError(f"--ca-key {key}: an EC or RSA key is needed")
        self.key = loaded
        if _public(self.key.public_key()) != _public(self.cert.public_key()):
            raise UsageError("--ca-key is not the key of --ca-cert")
        if days < 1:
            raise UsageError("--days: at least 1")
        self.days = days

    def sign(self, hall: str, csr_pem: str, now: dt.datetime | None = None) -> x509.Certificate:
        """The hall's certificate for its request; RequestRefused when the request is
        damaged, not self-signed by its key, or names another hall."""
        now = now or dt.datetime.now(dt.UTC)
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as err:
            raise RequestRefused(f"{hall}: the request is not a PEM CSR ({err})") from err
        if not csr.is_signature_valid:
            raise RequestRefused(f"{hall}: the request's signature does not verify")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if len(names) == 1 else None
        if name != hall:
            raise RequestRefused(
                f"{hall}: the request names {name!r}, not the hall it came from; not signed"
            )
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise RequestRefused(f"{hall}: the request's key is neither EC nor RSA")
        not_after = min(now + dt.timedelta(days=self.days), self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
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
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        return builder.sign(self.key, hashes.SHA256())


def _public(key: object) -> bytes:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes_raw()
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def answer(authority: Authority, topic: str, payload: bytes | bytearray) -> InstallCertificate:
    """The ``install_certificate`` for one ``cert.requested`` message."""
    hall = _hall_of(topic)
    csr: Any
    if topic.endswith(RENEWAL_TOPIC):
        try:
            csr = RenewalRequest.model_validate_json(payload).csr
        except ValidationError as err:
            problems = err.error_count()
            raise RequestRefused(f"{hall}: not a renewal request ({problems} errors)") from err
    else:
        try:
            event = EventEnvelope.model_validate_json(payload)
        except ValidationError as err:
            raise RequestRefused(
                f"{hall}: not an event envelope ({err.error_count()} errors)"
            ) from err
        if event.hall != hall:
            raise RequestRefused(f"{hall}: the envelope names hall {event.hall!r}; not signed")
        csr = event.data.get("csr")
    if not isinstance(csr, str):
        raise RequestRefused(f"{hall}: the request carries no csr")
    cert = authority.sign(hall, csr)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return InstallCertificate(cmd_id=f"cert-{hall}-{cert.serial_number:x}"[:64], certificate=pem)


async def serve(args: argparse.Namespace) -> int:
    authority = Authority(args.ca_cert, args.ca_key, args.days)
    signed = 0
    broker = BrokerOptions.from_args(args)
    async with _connected(broker, identifier=args.client_id, persistent=True) as client:
        await client.subscribe(f"{ROOT}/{args.hall}/event/{REQUESTED}", qos=1)
        await client.subscribe(f"{ROOT}/{args.hall}{RENEWAL_TOPIC}", qos=1)
        print(f"signing certificate requests of hall {args.hall} for {args.days} days", flush=True)
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            try:
                command = answer(authority, topic, payload)
            except RequestRefused as err:
                print(f"refused: {err}", flush=True)
                continue
            hall = _hall_of(topic)
            await client.publish(
                f"{ROOT}/{hall}/cmd/install_certificate",
                json.dumps(command.model_dump(mode="json", exclude_none=True)),
                qos=1,
            )
            signed += 1
            print(f"signed {hall}: {command.cmd_id}", flush=True)
            if args.count and signed >= args.count:
                break
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("certs", help="central's side of the halls' certificate renewal")
    verbs = p.add_subparsers(dest="certs_command", required=True)
    s = verbs.add_parser("serve", help="sign the halls' cert.requested and send the certificate")
    s.add_argument("--ca-cert", type=Path, required=True, help="the halls' client CA (PEM)")
    s.add_argument("--ca-key", type=Path, required=True, help="its key (PEM, unencrypted)")
    s.add_argument("--days", type=int, default=365, help="validity of a new certificate (365)")
    s.add_argument("--hall", default="+", help="hall id (default: all)")
    s.add_argument("--client-id", default="hallctl-certs", help="fixed, for the session")
    s.add_argument("--count", type=int, default=0, help="stop after N certificates signed")
    s.set_defaults(run=serve)
