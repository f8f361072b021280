"""``hall-agent doctor``: each finding names the problem and what to do; failures make the
exit status non-zero. Device access is judged for the service user (here ``nobody``)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker
from pki import Pki, client_cert
from support import hall_config, small_tmpfs, write_config

from agent.doctor import Account, Doctor, Finding
from agent.runtime.store import Store

MIB = 2**20
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def doctor_config(tmp_path: Path, storage: Path | None = None, **sections: Any) -> Path:
    data = hall_config(storage or tmp_path / "state", **sections)
    return write_config(tmp_path / "hall.yaml", data)


def serial_device(device_id: str, port: Path) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "id_reader",
        "transport": {"type": "serial", "port": str(port)},
    }


def examine(config: Path, **options: Any) -> list[Finding]:
    account = Account.service("nobody")
    api = f"http://127.0.0.1:{free_port()}"  # no agent runs in these tests
    return list(Doctor(config, account=account, api=api, **options).examine())


def finding(findings: list[Finding], check: str) -> Finding:
    matches = [f for f in findings if f.check == check and f.level != "ok"] or [
        f for f in findings if f.check == check
    ]
    assert matches, f"no {check} finding in {findings}"
    return matches[0]


def test_a_missing_device_fails_and_says_to_plug_it_in(tmp_path: Path) -> None:
    config = doctor_config(tmp_path, devices=[serial_device("idreader", tmp_path / "ttyUSB9")])
    found = finding(examine(config), "device:idreader")
    assert found.level == "fail"
    assert f"{tmp_path / 'ttyUSB9'} does not exist" in found.message
    assert "plug the device in" in found.action
    assert "udev" in found.action


def test_a_device_the_service_user_cannot_open_fails_with_the_fix(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.write_bytes(b"")
    port.chmod(0o600)  # owner only: not for nobody, whatever groups it has
    config = doctor_config(tmp_path, devices=[serial_device("idreader", port)])
    found = finding(examine(config), "device:idreader")
    assert found.level == "fail"
    assert f"nobody cannot read and write {port}" in found.message
    assert "-rw-------" in found.message
    assert "MODE=0660" in found.action
    port.chmod(0o666)
    assert finding(examine(config), "device:idreader").level == "ok"


def test_an_unreachable_broker_fails_and_the_hall_still_runs(tmp_path: Path) -> None:
    port = free_port()
    config = doctor_config(tmp_path, mqtt={"url": f"mqtt://127.0.0.1:{port}"})
    found = finding(examine(config), "central")
    assert found.level == "fail"
    assert f"cannot reach the broker at 127.0.0.1:{port}" in found.message
    assert "firewall" in found.action


def test_a_reachable_plain_broker_is_ok_and_speaks_mqtt_5(
    tmp_path: Path, broker_factory: Callable[..., Broker]
) -> None:
    broker = broker_factory()
    config = doctor_config(tmp_path, mqtt={"url": broker.url})
    findings = [f for f in examine(config) if f.check == "central"]
    assert [f.level for f in findings] == ["ok", "ok", "ok", "warn"]
    assert "answers" in findings[0].message
    assert "accepts an MQTT 5 CONNECT" in findings[1].message
    assert "lets this hall publish to hall/v1/test-hall/reply/doctor-probe" in findings[2].message
    # A lab broker without an ACL confines nobody: a warning on plain TCP.
    assert "another hall's topic hall/v1/test-hall-doctor/" in findings[3].message
    assert "brokers/hall.acl" in findings[3].action
    # Under a client id of its own, and gone again: the agent's session is untouched.
    log = broker.log_text()
    assert "as test-hall-doctor (p5, c1" in log
    assert "Received DISCONNECT from test-hall-doctor" in log


def tls_broker(
    broker_factory: Callable[..., Broker], pki: Pki, tmp_path: Path, acl: str | None
) -> Broker:
    """A TLS broker with the shipped security lines and ``acl`` as its ACL file."""
    text = (ROOT / "brokers" / "mosquitto.conf").read_text(encoding="utf-8")
    wanted = ("use_identity_as_username", "require_certificate")
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    if acl is not None:
        (tmp_path / "test.acl").write_text(acl, encoding="utf-8")
        lines.append(f"acl_file {tmp_path / 'test.acl'}")
    started: Broker = broker_factory(tls=pki, extra_config=lines)
    return started


def examine_as_me(config: Path) -> list[Finding]:
    """Doctor as the test's own user: it can read the test PKI's key."""
    api = f"http://127.0.0.1:{free_port()}"
    return list(Doctor(config, account=Account.current(), api=api).examine())


def tls_doctor_config(tmp_path: Path, broker: Broker, pki: Pki) -> Path:
    cert, key = client_cert(pki, "test-hall")
    tls = {"ca_file": str(pki.ca_cert), "cert_file": str(cert), "key_file": str(key)}
    return doctor_config(tmp_path, mqtt={"url": broker.url, "tls": tls})


def test_the_shipped_broker_lets_the_hall_publish_its_own_topics_and_not_anothers(
    tmp_path: Path, broker_factory: Callable[..., Broker], pki: Pki
) -> None:
    shipped = (ROOT / "brokers" / "hall.acl").read_text(encoding="utf-8")
    broker = tls_broker(broker_factory, pki, tmp_path, shipped)
    config = tls_doctor_config(tmp_path, broker, pki)
    findings = [f for f in examine_as_me(config) if f.check == "central"]
    # (The test PKI's short-lived certificate gets its own "expires on" warning.)
    problems = [f for f in findings if f.level != "ok" and "expires on" not in f.message]
    assert not problems, problems
    messages = [f.message for f in findings]
    assert any("accepts this hall's TLS" in m for m in messages)
    assert "the broker lets this hall publish to hall/v1/test-hall/reply/doctor-probe" in messages
    # mosquitto 2 answers a denied QoS 1 publish with PUBACK 0x87 "not authorized".
    assert (
        "the broker refuses this hall's publish to hall/v1/test-hall-doctor/reply/doctor-probe "
        "(PUBACK 0x87)" in messages
    )
    log = broker.log_text()
    assert "Denied PUBLISH from test-hall-doctor" in log
    assert "Sending PUBACK to test-hall-doctor (m2, rc135)" in log


def test_a_tls_broker_without_an_acl_fails_with_the_fix(
    tmp_path: Path, broker_factory: Callable[..., Broker], pki: Pki
) -> None:
    broker = tls_broker(broker_factory, pki, tmp_path, None)
    config = tls_doctor_config(tmp_path, broker, pki)
    [found] = [f for f in examine_as_me(config) if "publish" in f.message and f.level != "ok"]
    assert found.level == "fail"
    assert "let this hall publish into another hall's topic" in found.message
    assert "hall/v1/test-hall-doctor/reply/doctor-probe" in found.message
    assert "use_identity_as_username" in found.action


def test_an_acl_that_trusts_the_client_id_is_caught(
    tmp_path: Path, broker_factory: Callable[..., Broker], pki: Pki
) -> None:
    # The ACL from the docs' one sentence: bound to the client id, not the certificate.
    broker = tls_broker(broker_factory, pki, tmp_path, "pattern readwrite hall/v1/%c/#\n")
    config = tls_doctor_config(tmp_path, broker, pki)
    [found] = [f for f in examine_as_me(config) if "publish" in f.message and f.level != "ok"]
    assert found.level == "fail"
    assert "refused this hall's publish to its own hall/v1/test-hall/" in found.message
    assert "bound to its certificate" in found.action


def _answer_once(server: socket.socket, reply: bytes) -> None:
    conn, _ = server.accept()
    with conn:
        conn.recv(1024)
        if reply:
            conn.sendall(reply)


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"\x20\x02\x00\x01", "speaks MQTT 3.1.1 only, not MQTT 5"),
        (b"\x20\x03\x00\x84\x00", "does not support MQTT 5"),
        (b"", "closed the connection on an MQTT 5 CONNECT"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "did not answer an MQTT CONNECT like a broker"),
    ],
)
def test_a_listener_that_does_not_speak_mqtt_5_fails(
    tmp_path: Path, reply: bytes, says: str
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        answering = threading.Thread(target=_answer_once, args=(server, reply))
        answering.start()
        config = doctor_config(tmp_path, mqtt={"url": f"mqtt://127.0.0.1:{port}"})
        found = finding(examine(config), "central")
        answering.join(10)
    assert found.level == "fail"
    assert says in found.message
    assert "MQTT 5" in found.action or "ACL" in found.action


def test_a_disk_below_the_reserve_warns_and_a_full_one_fails(tmp_path: Path) -> None:
    config = doctor_config(tmp_path)
    low = finding(examine(config, usage=lambda _: (10 * MIB, 1000 * MIB)), "disk")
    assert low.level == "warn"
    assert "below storage.reserve_bytes" in low.message
    full = finding(examine(config, usage=lambda _: (100_000, 1000 * MIB)), "disk")
    assert full.level == "fail"
    assert "the state disk is full" in full.message
    assert "journalctl --vacuum-size" in full.action


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "4m") as where:
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        yield where


@pytest.mark.timeout(60)
def test_a_really_full_disk_fails_through_the_command(tmp_path: Path, full_tmpfs: Path) -> None:
    config = doctor_config(tmp_path, storage=full_tmpfs / "state")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(config), "--user", "nobody"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith("FAIL  disk"))
    assert "the state disk is full: 0 MiB free of 4 MiB" in line
    assert "→ free space now" in result.stdout


def test_a_damaged_database_fails_and_says_what_the_agent_will_do(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    Store.open(storage).close()
    db = storage / "hall.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE filler (x)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,)] * 50)
    data = bytearray(db.read_bytes())
    data[4096 * 2 : 4096 * 3] = b"\xff" * 4096  # scribble over a page
    db.write_bytes(bytes(data))
    found = finding(examine(doctor_config(tmp_path)), "database")
    assert found.level == "fail"
    assert "new epoch" in found.action
    assert (
        finding(examine(doctor_config(tmp_path, storage=tmp_path / "new")), "database").level
        == "ok"
    )


@pytest.mark.timeout(60)
def test_the_command_prints_each_problem_with_what_to_do_and_exits_1(tmp_path: Path) -> None:
    config = doctor_config(
        tmp_path,
        devices=[serial_device("idreader", tmp_path / "nope")],
        mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"},
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    failures = [f for f in findings if f["level"] == "fail"]
    assert {f["check"] for f in failures} >= {"device:idreader", "central"}
    assert all(f["action"] for f in failures)
    assert next(f for f in findings if f["check"] == "config")["level"] == "ok"


def test_a_broken_config_stops_there_with_the_field_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("hall: {id: x}\n", encoding="utf-8")
    findings = examine(config)
    assert [f.check for f in findings] == ["config"]
    assert findings[0].level == "fail"
    assert "hall" in findings[0].message
