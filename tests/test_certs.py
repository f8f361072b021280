"""Certificates that renew themselves (docs/fleet.md), against a test CA and a mosquitto
that requires a client certificate: the hall asks (``cert.requested``), ``hallctl certs
serve`` signs, the hall installs (``cert.renewed``), and after a broker restart the link
connects with the new certificate (the old one is revoked by then). A certificate for
another key, another hall or from another CA is refused and nothing is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest
from broker import Broker, free_port
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from oracle import Central, until, wait_event
from pki import Pki, issue_client, make_pki, write_crl
from support import hall_config

from agent.config import validate_config
from agent.daemon import running_agent
from agent.features.certificates import ASK_AGAIN_S, Certificates
from agent.runtime import certs
from agent.runtime.certs import CertFiles, CertificateRefused
from hallctl.certs import Authority, RequestRefused
from hallctl.cli import run as hallctl

HALL = "test-hall"
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
V5 = aiomqtt.ProtocolVersion.V5


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _central_tls(pki: Pki, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(cert), str(key))
    return context


def _tls(pki: Pki, cert: Path, key: Path) -> dict[str, str]:
    return {"ca_file": str(pki.ca_cert), "cert_file": str(cert), "key_file": str(key)}


def _pem(path: Path) -> str:
    return path.read_text(encoding="ascii")


def _serve_one_renewal(url: str, pki: Pki, cert: Path, key: Path) -> asyncio.Task[int]:
    """``hallctl certs serve`` as central runs it, signing one request for 20 days."""
    argv = [
        "--broker", url, "--ca", str(pki.ca_cert), "--cert", str(cert), "--key", str(key),
        "certs", "serve", "--ca-cert", str(pki.ca_cert), "--ca-key", str(pki.ca_key),
        "--days", "20", "--count", "1",
    ]  # fmt: skip
    return asyncio.create_task(hallctl(argv))


@pytest.mark.timeout(120)
async def test_a_certificate_due_in_10_days_is_renewed_and_used_at_the_next_connect(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    tls_dir = tmp_path / "tls"
    cert_file, key_file = issue_client(pki, tls_dir, "client", HALL, days=10)
    central_cert, central_key = issue_client(pki, tmp_path / "central", "central", "central")
    old_key = key_file.read_bytes()
    old_serial = _serial(cert_file)
    kept = tmp_path / "old"  # the old pair, to show the broker refuses it later
    kept.mkdir()
    shutil.copy(cert_file, kept / "client.crt")
    shutil.copy(key_file, kept / "client.key")

    broker = broker_factory(tls=pki, extra_config=["use_identity_as_username true"])
    mqtt: dict[str, Any] = {
        "url": broker.url,
        "tls": _tls(pki, cert_file, key_file),
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
        "stable_after_s": 0,
    }
    config = validate_config(hall_config(tmp_path / "state", mqtt=mqtt))
    serve = _serve_one_renewal(broker.url, pki, central_cert, central_key)
    try:
        await until(
            lambda: "SUBSCRIBE from hallctl-certs" in broker.log_text(), 20, "hallctl subscribed"
        )
        tls = _central_tls(pki, central_cert, central_key)
        async with (
            Central(broker.url, HALL, ["event/#", "reply"], tls_context=tls) as central,
            running_agent(config) as agent,
        ):
            await wait_event(agent.link.connected, 20, "the link to connect")
            assert agent.link.counters.connects == 1
            # The hall asks at start: 10 days left is within the default 30.
            await until(lambda: central.on("event/cert.requested"), 20, "cert.requested")
            requested = central.on("event/cert.requested")[0].json()["data"]
            assert requested["serial"] == format(old_serial, "x")
            assert 9 < requested["days_left"] <= 10
            assert "BEGIN CERTIFICATE REQUEST" in requested["csr"]
            assert await asyncio.wait_for(serve, 30) == 0
            await until(
                lambda: central.on("event/cert.renewed"),
                20,
                lambda: f"cert.renewed; replies: {central.replies()}",
            )
            renewed = central.on("event/cert.renewed")[0].json()["data"]

            new_serial = _serial(cert_file)
            assert renewed["serial"] == format(new_serial, "x")
            assert renewed["previous_serial"] == format(old_serial, "x")
            assert new_serial != old_serial
            new_cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            left = new_cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
            # 20 days (--days): within the test CA's own 30.
            assert dt.timedelta(days=19.9) < left <= dt.timedelta(days=20)
            # The old key is gone: not in the key file, not left anywhere beside it.
            assert key_file.read_bytes() != old_key
            assert not (tls_dir / "client.key.pending").exists()
            assert all(old_key not in p.read_bytes() for p in tls_dir.iterdir() if p.is_file())
            assert key_file.stat().st_mode & 0o777 == 0o600
            metrics = agent.health.metrics if agent.health is not None else None
            assert metrics is not None
            text = (await metrics()).decode()
            gauge = [
                line for line in text.splitlines() if line.startswith("hall_client_cert_days_left ")
            ]
            assert len(gauge) == 1
            assert 19.9 < float(gauge[0].split()[1]) <= 20

            # The broker now refuses the old certificate; the hall connects with the new.
            write_crl(pki, tmp_path / "revoked.crl", [old_serial])
            broker.extra_config.append(f"crlfile {tmp_path / 'revoked.crl'}")
            broker.restart()
            await until(lambda: agent.link.counters.connects >= 2, 30, "the link to reconnect")
            await wait_event(agent.link.connected, 20, "the link to be up again")
            assert agent.link.counters.connects >= 2
            old_tls = _central_tls(pki, kept / "client.crt", kept / "client.key")
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    "localhost", broker.port, identifier="old-cert", tls_context=old_tls, timeout=5
                ):
                    pass
    finally:
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve


@pytest.mark.timeout(120)
async def test_a_wrong_certificate_is_refused_with_a_reply_and_nothing_replaced(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    tls_dir = tmp_path / "tls"
    cert_file, key_file = issue_client(pki, tls_dir, "client", HALL, days=10)
    central_cert, central_key = issue_client(pki, tmp_path / "central", "central", "central")
    broker = broker_factory(tls=pki)
    mqtt: dict[str, Any] = {
        "url": broker.url,
        "tls": _tls(pki, cert_file, key_file),
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    config = validate_config(hall_config(tmp_path / "state", mqtt=mqtt))
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    tls = _central_tls(pki, central_cert, central_key)
    async with (
        Central(broker.url, HALL, ["event/#", "reply"], tls_context=tls) as central,
        running_agent(config) as agent,
    ):
        await until(lambda: central.on("event/cert.requested"), 20, "cert.requested")
        pending = tls_dir / "client.key.pending"
        before[pending.name] = pending.read_bytes()
        loaded = serialization.load_pem_private_key(pending.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        assert pending.stat().st_mode & 0o777 == 0o600
        wrong = tmp_path / "wrong"
        cases = {
            "another-key": (issue_client(pki, wrong, "k", HALL, days=365), "for another key"),
            "another-hall": (
                issue_client(pki, wrong, "h", "other-hall", days=365, key=loaded),
                "names 'other-hall', not this hall 'test-hall'",
            ),
            "another-ca": (
                issue_client(pki, wrong, "c", HALL, days=365, key=loaded, wrong_ca=True),
                "not issued by a CA in",
            ),
            "shorter": (
                issue_client(pki, wrong, "s", HALL, days=5, key=loaded),
                "not after the current one",
            ),
        }
        for name, ((cert, _key), message) in cases.items():
            cmd_id = f"install-{name}"
            await central.command(
                "install_certificate", {"cmd_id": cmd_id, "certificate": _pem(cert)}
            )
            reply = await central.reply_to(cmd_id, 20)
            assert reply["status"] == "failed", reply
            assert message in reply["error"], reply
            assert "nothing was replaced" in reply["error"] or name == "shorter"
        assert {p.name: p.read_bytes() for p in tls_dir.iterdir()} == before
        assert not central.on("event/cert.renewed")
        assert agent.link.connected.is_set()


def test_central_signs_only_a_request_naming_the_hall_it_came_from(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    cert_file, key_file = issue_client(pki, tmp_path / "tls", "client", HALL, days=10)
    files = CertFiles(cert_file, key_file, pki.ca_cert)
    authority = Authority(pki.ca_cert, pki.ca_key, 365)
    csr = certs.make_request(files, HALL)
    with pytest.raises(RequestRefused, match="names 'test-hall', not the hall it came from"):
        authority.sign("other-hall", csr)
    with pytest.raises(RequestRefused, match="not a PEM CSR"):
        authority.sign(HALL, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    signed = authority.sign(HALL, csr)
    pem = signed.public_bytes(serialization.Encoding.PEM).decode()
    leaf = certs.check_certificate(files, HALL, pem)
    assert leaf.serial_number == signed.serial_number
    # A second request made later reuses the pending key: central's late answer to the
    # first still fits.
    assert certs.make_request(files, HALL) != ""
    assert certs.check_certificate(files, HALL, pem).serial_number == signed.serial_number


def test_a_swap_cut_by_a_crash_is_finished_at_the_next_start(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    cert_file, key_file = issue_client(pki, tmp_path / "tls", "client", HALL, days=10)
    files = CertFiles(cert_file, key_file, pki.ca_cert)
    authority = Authority(pki.ca_cert, pki.ca_key, 365)
    signed = authority.sign(HALL, certs.make_request(files, HALL))
    leaf = certs.check_certificate(
        files, HALL, signed.public_bytes(serialization.Encoding.PEM).decode()
    )
    pending_key = files.pending.read_bytes()
    # The crash: the checked certificate written as <cert>.new, nothing renamed yet.
    files.new.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    assert certs.recover(files) is not None
    assert _serial(cert_file) == signed.serial_number
    assert key_file.read_bytes() == pending_key
    assert not files.new.exists()
    assert not files.pending.exists()
    assert certs.recover(files) is None
    with pytest.raises(CertificateRefused, match="no renewal is pending"):
        certs.check_certificate(
            files, HALL, signed.public_bytes(serialization.Encoding.PEM).decode()
        )


MOSQUITTO_SNIPPET = Path(__file__).resolve().parent.parent / "config" / "mosquitto"


class HallsBroker(Broker):
    """mosquitto with the shipped config/mosquitto/halls.conf: the halls' listener on
    ``port`` (the test CA) and the renewal-only listener on ``renewal_port`` (the PKI's
    other CA plays the bootstrap CA), each with the shipped ACL file."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        super().__init__(workdir, tls=pki)
        self.renewal_port = free_port(self.host)

    def _config(self) -> str:
        assert self.tls is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = [
            line
            for line in super()._config().splitlines()
            if line.split(" ")[0] not in ("per_listener_settings", "allow_anonymous")
        ]
        head = base[: next(i for i, line in enumerate(base) if line.startswith("listener "))]
        snippet = (MOSQUITTO_SNIPPET / "halls.conf").read_text(encoding="utf-8")
        for old, new in {
            "listener 8883": f"listener {self.port} {self.host}",
            "listener 8884": f"listener {self.renewal_port} {self.host}",
            "/etc/mosquitto/halls/ca.pem": str(self.tls.ca_cert),
            "/etc/mosquitto/halls/bootstrap-ca.pem": str(self.tls.wrong_ca_cert),
            "/etc/mosquitto/halls/broker.crt": str(self.tls.server_cert),
            "/etc/mosquitto/halls/broker.key": str(self.tls.server_key),
            "/etc/mosquitto/halls/": f"{MOSQUITTO_SNIPPET}/",
        }.items():
            snippet = snippet.replace(old, new)
        # per_listener_settings must come before everything a listener may set.
        return "\n".join(["per_listener_settings true", *head, snippet])


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
async def test_an_expired_certificate_is_renewed_over_the_renewal_only_listener(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    tls_dir = tmp_path / "tls"
    cert_file, key_file = issue_client(pki, tls_dir, "client", HALL, days=-0.5)  # expired
    old_key = key_file.read_bytes()
    central_cert, central_key = issue_client(pki, tmp_path / "central", "central", "central")
    broker = HallsBroker(tmp_path / "mosquitto", pki)
    broker.start()
    mqtt: dict[str, Any] = {
        "url": broker.url,
        "renewal_url": f"mqtts://localhost:{broker.renewal_port}",
        "tls": {
            **_tls(pki, cert_file, key_file),
            # The bootstrap certificate: CN test-hall, from the bootstrap CA.
            "bootstrap_cert_file": str(pki.wrong_client_cert),
            "bootstrap_key_file": str(pki.wrong_client_key),
        },
        "reconnect_spread_s": 0.2,
        "reconnect_max_s": 1.0,
        "stable_after_s": 0,
    }
    config = validate_config(hall_config(tmp_path / "state", mqtt=mqtt))
    serve = _serve_one_renewal(broker.url, pki, central_cert, central_key)
    tls = _central_tls(pki, central_cert, central_key)
    try:
        await until(
            lambda: "hall/v1/+/renewal/request" in broker.log_text(), 20, "hallctl subscribed"
        )
        async with (
            Central(broker.url, HALL, ["event/#", "reply"], tls_context=tls) as central,
            running_agent(config) as agent,
        ):
            assert await asyncio.wait_for(serve, 60) == 0
            # The new certificate opens the halls' listener: the link connects.
            await wait_event(agent.link.connected, 30, "the link to connect")
            assert key_file.read_bytes() != old_key
            assert not (tls_dir / "client.key.pending").exists()
            assert x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc > (
                dt.datetime.now(dt.UTC) + dt.timedelta(days=19)
            )
            # The outbox then delivers what happened meanwhile.
            await until(lambda: central.on("event/cert.renewed"), 20, "cert.renewed")
            assert central.on("event/cert.requested")
            renewal_replies = [r for r in central.replies() if r["name"] == "install_certificate"]
            assert renewal_replies
            assert renewal_replies[0]["status"] == "ok"
    finally:
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve

    # The renewal listener lets a bootstrap certificate do nothing else.
    bootstrap = ssl.create_default_context(cafile=str(pki.ca_cert))
    bootstrap.load_cert_chain(str(pki.wrong_client_cert), str(pki.wrong_client_key))
    async with aiomqtt.Client(
        "localhost", broker.port, identifier="central-watch", tls_context=tls, protocol=V5
    ) as watcher:
        await watcher.subscribe("hall/v1/#", qos=1)
        for topic, payload in (
            (f"hall/v1/{HALL}/event/ticket.issued", b"{}"),
            ("hall/v1/other-hall/renewal/request", b"{}"),
            (f"hall/v1/{HALL}/renewal/request", b"last"),
        ):
            # mosquitto closes the connection of a client whose publish it denies: one
            # connection per publish.
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    "localhost",
                    broker.renewal_port,
                    identifier="probe",
                    tls_context=bootstrap,
                    protocol=aiomqtt.ProtocolVersion.V311,
                ) as probe:
                    await probe.publish(topic, payload, qos=0)
        seen: list[str] = []
        async with asyncio.timeout(20):
            async for message in watcher.messages:
                if not message.retain:
                    seen.append(message.topic.value)
                if message.payload == b"last":
                    break
        denied = [line for line in broker.log_text().splitlines() if "Denied PUBLISH" in line]
        assert len(denied) == 2, denied
        assert seen == [f"hall/v1/{HALL}/renewal/request"]
    # ... and the bootstrap certificate does not open the halls' listener.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "localhost", broker.port, identifier="bootstrap-main", tls_context=bootstrap, timeout=5
        ):
            pass
    broker.kill()


class _RecordingHall:
    """What the renewal needs of a hall: its id and a writer that keeps the events."""

    def __init__(self, hall_id: str) -> None:
        self.config = SimpleNamespace(hall=SimpleNamespace(id=hall_id))
        self.events: list[Any] = []

    async def write(self, fn: Callable[[Any, dt.datetime, bool], Any]) -> Any:
        hall = self

        class Store:
            def append(self, events: list[Any], *, clock_ok: bool) -> list[Any]:
                hall.events.extend(e.data for e in events)
                return []

        return fn(Store(), dt.datetime.now(dt.UTC), True).value


async def test_a_request_is_sent_once_a_day_with_the_same_key_until_answered(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    cert_file, key_file = issue_client(pki, tmp_path / "tls", "client", HALL, days=10)
    mqtt = validate_config(
        hall_config(
            tmp_path / "state",
            mqtt={"url": "mqtts://localhost:8883", "tls": _tls(pki, cert_file, key_file)},
        )
    ).mqtt
    hall = _RecordingHall(HALL)
    renewal = Certificates(hall, mqtt)  # type: ignore[arg-type]
    assert await renewal.check()
    pending = tmp_path / "tls" / "client.key.pending"
    first_key = pending.read_bytes()
    assert not await renewal.check(), "asked again within the day"
    # A day without an answer: asked again, with the same key.
    day_ago = time.time() - ASK_AGAIN_S - 60
    os.utime(pending, (day_ago, day_ago))
    assert await renewal.check()
    assert pending.read_bytes() == first_key
    csrs = [x509.load_pem_x509_csr(e["csr"].encode()) for e in hall.events]
    assert len(csrs) == 2
    assert len({c.public_key().public_bytes(*_SPKI) for c in csrs}) == 1
    assert all(certs.common_name(c.subject) == HALL for c in csrs)
    assert all(9.9 <= e["days_left"] <= 10 for e in hall.events)

    # A certificate far from its end: nothing is asked.
    far_cert, far_key = issue_client(pki, tmp_path / "far", "client", HALL, days=300)
    far = validate_config(
        hall_config(
            tmp_path / "state2",
            mqtt={"url": "mqtts://localhost:8883", "tls": _tls(pki, far_cert, far_key)},
        )
    ).mqtt
    assert not await Certificates(_RecordingHall(HALL), far).check()  # type: ignore[arg-type]
    assert not (tmp_path / "far" / "client.key.pending").exists()


@pytest.mark.parametrize("days", [10, 3650, 365 * 40])
def test_the_expiry_date_is_read_without_cryptography_as_cryptography_reads_it(
    tmp_path: Path, days: int
) -> None:
    """The hourly look and the ``/metrics`` gauge read ``notAfter`` from the DER
    (UTCTime before 2050, GeneralizedTime from 2050), and an agent that only looks
    does not load cryptography (~7 MB)."""
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    cert_file, _ = issue_client(pki, tmp_path / "tls", "client", HALL, days=days)
    for path in (cert_file, pki.ca_cert):
        expected = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        assert certs.not_valid_after(path) == expected
    left = certs.certificate_days_left(cert_file)
    assert left is not None
    assert abs(left - days) < 0.01
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agent.runtime import certs\n"
        "left = certs.certificate_days_left(Path(sys.argv[1]))\n"
        "print(round(left), 'cryptography' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(cert_file)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(round(left)), "False"]


def test_a_damaged_certificate_file_has_no_expiry_date(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", client_name=HALL)
    cert_file, _ = issue_client(pki, tmp_path / "tls", "client", HALL, days=10)
    text = cert_file.read_text(encoding="ascii")
    body = text.split("-----")[2]
    for name, damaged in (
        ("cut", text.replace(body, body[: len(body) // 3])),
        ("not pem", "hello\n"),
        ("not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    ):
        path = tmp_path / f"{name}.crt"
        path.write_text(damaged, encoding="ascii")
        with pytest.raises(ValueError, match="certificate"):
            certs.not_valid_after(path)
        assert certs.certificate_days_left(path) is None
    assert certs.certificate_days_left(tmp_path / "missing.crt") is None
