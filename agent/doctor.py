"""``hall-agent doctor``: everything an ops person checks on a hall's Pi, in one command.

Each finding says what is wrong and what to do. Device access is judged for the service
user with the groups the systemd unit gives it (``SERVICE_GROUPS``), not for whoever runs
the doctor (usually root, who can open anything). Nothing is changed: the state database
is opened read-only, and the broker sees one MQTT 5 CONNECT under a client id of the
doctor's own (``{hall}-doctor``, clean start, no session kept), never the agent's: the
running agent's session is untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import grp
import json
import os
import pwd
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.config import (
    AlsaTransport,
    ConfigError,
    EvdevTransport,
    FileTransport,
    HallAgentConfig,
    NetworkTransport,
    SaneTransport,
    SerialTransport,
    UsbTransport,
    V4l2Transport,
    WebTransport,
    format_problems,
    load_config,
)

Level = Literal["ok", "warn", "fail"]

SERVICE_USER = "hall-agent"
# The unit's SupplementaryGroups= (systemd/hall-agent.service; a test keeps them equal).
SERVICE_GROUPS = ("dialout", "input", "lp", "video", "audio")
CONNECT_TIMEOUT_S = 5.0
CERT_WARN_DAYS = 30

_READ = os.R_OK
_READ_WRITE = os.R_OK | os.W_OK


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: Level
    message: str
    action: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """Whom device and file access is judged for."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def service(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)
        gids = {entry.pw_gid}
        gids.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
        for group in SERVICE_GROUPS:
            with contextlib.suppress(KeyError):
                gids.add(grp.getgrnam(group).gr_gid)
        return cls(name, entry.pw_uid, frozenset(gids))

    @classmethod
    def current(cls) -> Account:
        uid = os.getuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getgid(), *os.getgroups()}))

    def can(self, path: Path, mode: int) -> bool:
        """Permission bits as the kernel checks them (ACLs are not looked at)."""
        if self.uid == 0:
            return True
        info = path.stat()
        if info.st_uid == self.uid:
            shift = 6
        elif info.st_gid in self.gids:
            shift = 3
        else:
            shift = 0
        bits = (info.st_mode >> shift) & 0o7
        wanted = (4 if mode & os.R_OK else 0) | (2 if mode & os.W_OK else 0)
        return bits & wanted == wanted


Usage = Callable[[Path], tuple[int, int]]


class Doctor:
    """Runs every check against one config; ``examine()`` yields the findings."""

    def __init__(
        self,
        config_path: Path,
        *,
        account: Account,
        api: str | None = None,
        usage: Usage | None = None,
        sysfs: Path = Path("/sys"),
    ) -> None:
        from agent.runtime.diskspace import disk_usage

        self.config_path = config_path
        self.account = account
        self.api = api
        self._usage = usage or disk_usage
        self.sysfs = sysfs
        self.config: HallAgentConfig | None = None

    def examine(self) -> Iterator[Finding]:
        yield from self.check_config()
        if self.config is None:
            return
        yield from self.check_disk()
        yield from self.check_database()
        yield from self.check_clock()
        yield from self.check_devices()
        yield from self.check_broker()
        yield from self.check_agent()

    # -- config -------------------------------------------------------------------------

    def check_config(self) -> Iterator[Finding]:
        path = self.config_path
        if not path.exists():
            yield Finding(
                "config",
                "fail",
                f"{path} does not exist",
                "copy the example: install -m 0640 -g hall-agent "
                "/opt/hall-agent/config.example.yaml /etc/hall-agent/config.yaml, then edit it",
            )
            return
        try:
            self.config = load_config(path)
        except ConfigError as err:
            yield Finding(
                "config",
                "fail",
                f"{path} has problems:\n{format_problems(err.problems)}",
                "fix each field named above (hall-agent check-config shows the same)",
            )
            return
        except OSError as err:
            yield Finding("config", "fail", f"cannot read {path}: {err}", "check its permissions")
            return
        yield Finding("config", "ok", f"{path} is valid (hall {self.config.hall.id})")
        with contextlib.suppress(OSError):
            if not self.account.can(path, _READ):
                yield Finding(
                    "config",
                    "fail",
                    f"{self.account.name} cannot read {path}",
                    f"chgrp {SERVICE_USER} {path}; chmod 0640 {path}",
                )

    # -- disk and database --------------------------------------------------------------

    def check_disk(self) -> Iterator[Finding]:
        from agent.runtime.diskspace import MAX_RESERVE_FILE_BYTES

        assert self.config is not None
        storage = self.config.storage
        where = _existing_parent(storage.path)
        try:
            free, total = self._usage(where)
        except OSError as err:
            yield Finding("disk", "fail", f"cannot read the free space of {where}: {err}")
            return
        mib = 2**20
        needed = min(MAX_RESERVE_FILE_BYTES, storage.reserve_bytes // 4)
        text = f"{free // mib} MiB free of {total // mib} MiB on {where}"
        if free < needed:
            yield Finding(
                "disk",
                "fail",
                f"the state disk is full: {text}; tickets cannot be saved",
                "free space now: journalctl --vacuum-size=50M, apt-get clean, remove old "
                "files; see docs/operations.md, 'disk full'",
            )
        elif free < storage.reserve_bytes:
            yield Finding(
                "disk",
                "warn",
                f"the state disk is low: {text}, below storage.reserve_bytes "
                f"({storage.reserve_bytes // mib} MiB); the outbox evicts events by policy",
                "free space (journalctl --vacuum-size=50M, apt-get clean) or use a larger SD card",
            )
        else:
            yield Finding("disk", "ok", text)
        if storage.path.exists() and not self.account.can(storage.path, _READ_WRITE):
            yield Finding(
                "disk",
                "fail",
                f"{self.account.name} cannot write {storage.path}",
                f"chown -R {SERVICE_USER}:{SERVICE_USER} {storage.path} (systemd's "
                "StateDirectory= does this at start)",
            )

    def check_database(self) -> Iterator[Finding]:
        from agent.runtime.store import DB_NAME, MIGRATIONS, CannotOpen, CannotRead, check_file

        assert self.config is not None
        directory = self.config.storage.path
        path = directory / DB_NAME
        damaged = sorted(p.name for p in directory.glob(f"{DB_NAME}.damaged-*[!lm]"))
        if damaged:
            yield Finding(
                "database",
                "warn",
                f"{len(damaged)} damaged database(s) kept aside in {directory}: "
                f"{', '.join(damaged)}",
                "send them to support if central misses events of an old epoch, then delete them",
            )
        if not path.exists():
            yield Finding("database", "ok", f"no state yet: {path} is created at first start")
            return
        try:
            found = check_file(path)  # read-only: never migrates or moves the file
        except CannotOpen as err:
            yield Finding("database", "fail", f"cannot open {path}: {err}", "check permissions")
            return
        except CannotRead as err:
            yield Finding(
                "database",
                "fail",
                f"{path} cannot be read: {err}",
                "if it is damaged the agent moves it aside at its next start and begins a new "
                "epoch; keep the moved file for support",
            )
            return
        if found.quick_check != "ok":
            yield Finding(
                "database",
                "fail",
                f"{path} is damaged ({found.quick_check})",
                "restart the agent: it moves the file aside (kept, never deleted) and starts "
                "a new epoch; central sees the new epoch",
            )
        elif found.version > len(MIGRATIONS):
            yield Finding(
                "database",
                "fail",
                f"{path} is schema version {found.version}, newer than this agent "
                f"({len(MIGRATIONS)})",
                "install the newer agent again (the database is left as it is)",
            )
        else:
            epoch_text = "?" if found.epoch is None else found.epoch
            yield Finding(
                "database",
                "ok",
                f"{path} is intact (epoch {epoch_text}, {found.unpublished} events not yet sent)",
            )

    # -- clock --------------------------------------------------------------------------

    def check_clock(self) -> Iterator[Finding]:
        from agent.runtime.clock import SystemClock

        assert self.config is not None
        latch = Path("/run/hall-agent")
        clock = SystemClock(self.config.clock.trust, latch_dir=latch if latch.is_dir() else None)
        state = clock.state(dt.datetime.now(dt.UTC))
        if state.ok:
            yield Finding("clock", "ok", state.detail)
        else:
            yield Finding(
                "clock",
                "warn",
                f"{state.detail}; events carry clock_ok=false and the business day holds",
                "check the network and `timedatectl timesync-status` (NTP server reachable, "
                "UDP 123 allowed); a hall offline for days needs a battery-backed RTC",
            )

    # -- devices ------------------------------------------------------------------------

    def check_devices(self) -> Iterator[Finding]:
        assert self.config is not None
        if not self.config.devices:
            yield Finding("devices", "ok", "no devices configured")
        # How each transport is probed: data, not a chain of cases.
        probes: dict[type[Any], Callable[[str, str, Any], Iterator[Finding]]] = {
            SerialTransport: lambda c, n, t: self._serial(c, n, t.port),
            FileTransport: lambda c, n, t: iter([self._node(c, n, t.path, _READ_WRITE)]),
            V4l2Transport: lambda c, n, t: iter([self._node(c, n, t.path, _READ_WRITE)]),
            EvdevTransport: lambda c, n, t: iter([self._evdev(c, n, t)]),
            UsbTransport: lambda c, n, t: iter([self._usb(c, n, t)]),
            NetworkTransport: lambda c, n, t: iter([_tcp(c, n, t.host, t.port)]),
            AlsaTransport: lambda c, n, t: iter([self._node(c, n, Path("/dev/snd"), _READ)]),
            SaneTransport: lambda c, n, t: iter(
                [
                    Finding(
                        c,
                        "ok",
                        f"{n}: SANE scanner {t.device_name!r} is not probed here",
                        f"to check it: sudo -u {SERVICE_USER} scanimage -L",
                    )
                ]
            ),
            WebTransport: lambda c, n, t: iter([Finding(c, "ok", f"{n}: a page the agent serves")]),
        }
        for device in self.config.devices:
            transport: Any = device.transport
            probe = next((probes[k] for k in type(transport).__mro__ if k in probes), None)
            if probe is None:  # a transport added to the config without a probe here
                yield Finding(f"device:{device.id}", "ok", f"{device.kind} {device.id}: not probed")
                continue
            yield from probe(f"device:{device.id}", f"{device.kind} {device.id}", transport)

    def _serial(self, check: str, label: str, port: str) -> Iterator[Finding]:
        if "://" in port:
            url = urlsplit(port)
            if url.scheme in ("socket", "rfc2217") and url.hostname and url.port:
                yield _tcp(check, label, url.hostname, url.port)
            else:
                yield Finding(check, "ok", f"{label}: {port} is not probed here")
            return
        yield self._node(check, label, Path(port), _READ_WRITE)

    def _node(self, check: str, label: str, path: Path, mode: int) -> Finding:
        what = "read" if mode == _READ else "read and write"
        if not path.exists():
            return Finding(
                check,
                "fail",
                f"{label}: {path} does not exist",
                "plug the device in and check its cable; for a /dev/hall/ name, check that "
                "the udev rule matches it (udevadm info -a -n /dev/ttyUSB0; docs/install.md, "
                "'devices')",
            )
        if not self.account.can(path, mode):
            info = path.stat()
            owner = _name(pwd.getpwuid, info.st_uid)
            group = _name(grp.getgrgid, info.st_gid)
            return Finding(
                check,
                "fail",
                f"{label}: {self.account.name} cannot {what} {path} "
                f"(owner {owner}, group {group}, mode {stat.filemode(info.st_mode)})",
                "give the device one of the service's groups "
                f"({', '.join(SERVICE_GROUPS)}) with MODE=0660 in "
                "/etc/udev/rules.d/99-hall-agent.rules, then udevadm trigger",
            )
        return Finding(
            check, "ok", f"{label}: {path} is there and {self.account.name} can {what} it"
        )

    def _evdev(self, check: str, label: str, transport: EvdevTransport) -> Finding:
        if transport.path is not None:
            return self._node(check, label, transport.path, _READ)
        wanted = (transport.name or "").lower()
        for name_file in sorted((self.sysfs / "class" / "input").glob("event*/device/name")):
            with contextlib.suppress(OSError):
                if wanted in name_file.read_text(encoding="utf-8", errors="replace").lower():
                    return self._node(check, label, Path("/dev/input") / name_file.parts[-3], _READ)
        return Finding(
            check,
            "fail",
            f"{label}: no input device named like {transport.name!r}",
            "plug it in; list the names with: cat /sys/class/input/event*/device/name",
        )

    def _usb(self, check: str, label: str, transport: UsbTransport) -> Finding:
        wanted = f"{transport.vendor_id:04x}:{transport.product_id:04x}"
        for device in sorted((self.sysfs / "bus" / "usb" / "devices").glob("*")):
            try:
                vendor = (device / "idVendor").read_text(encoding="ascii").strip()
                product = (device / "idProduct").read_text(encoding="ascii").strip()
            except OSError:
                continue
            if f"{vendor}:{product}" != wanted:
                continue
            if transport.serial is not None:
                try:
                    serial = (device / "serial").read_text(encoding="utf-8").strip()
                except OSError:
                    continue
                if serial != transport.serial:
                    continue
            try:
                bus = int((device / "busnum").read_text(encoding="ascii"))
                dev = int((device / "devnum").read_text(encoding="ascii"))
            except (OSError, ValueError):
                return Finding(check, "ok", f"{label}: USB {wanted} is connected")
            return self._node(check, label, Path(f"/dev/bus/usb/{bus:03d}/{dev:03d}"), _READ_WRITE)
        return Finding(
            check,
            "fail",
            f"{label}: USB device {wanted} is not connected",
            "plug it in and check with lsusb; if lsusb shows another id, correct "
            "vendor_id/product_id in the config",
        )

    # -- central ------------------------------------------------------------------------

    def check_broker(self) -> Iterator[Finding]:
        from agent.central.link import LinkConfigError, describe_connect_error, tls_context
        from agent.runtime.clock import SystemClock

        assert self.config is not None
        mqtt = self.config.mqtt
        if not mqtt.enabled:
            yield Finding("central", "ok", "no broker configured: the hall runs offline")
            return
        host, port = mqtt.host, mqtt.port
        assert host is not None
        assert port is not None
        if mqtt.uses_tls:
            yield from self._tls_files()
        try:
            raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as err:
            yield Finding(
                "central",
                "fail",
                f"cannot reach the broker at {host}:{port}: {err}",
                "check the network, DNS and firewall (the hall needs TCP to the broker's "
                "port); the hall keeps running and buffers meanwhile",
            )
            return
        hall_id = self.config.hall.id
        client_id = f"{hall_id}-doctor"
        password = mqtt.password.get_secret_value() if mqtt.password else None
        with raw:
            if not mqtt.uses_tls:
                yield Finding("central", "ok", f"the broker at {host}:{port} answers (plain TCP)")
                raw.settimeout(CONNECT_TIMEOUT_S)
                yield from mqtt5_connect(
                    raw, f"{host}:{port}", client_id, mqtt.username, password, hall_id, False
                )
                return
            clock_ok = SystemClock(self.config.clock.trust)(dt.datetime.now(dt.UTC))
            try:
                context = tls_context(mqtt)
                raw.settimeout(CONNECT_TIMEOUT_S)
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    version = tls.version()
                    connected = mqtt5_connect(
                        tls, f"{host}:{port}", client_id, mqtt.username, password, hall_id, True
                    )
            except LinkConfigError as err:
                yield Finding("central", "fail", str(err), "fix mqtt.tls in the config")
                return
            except (ssl.SSLError, OSError) as err:
                yield Finding(
                    "central",
                    "fail",
                    f"TLS with {host}:{port} failed: {describe_connect_error(err, clock_ok)}",
                    "the agent never falls back to plaintext; fix the cause named above",
                )
                return
        yield Finding(
            "central", "ok", f"the broker at {host}:{port} accepts this hall's TLS ({version})"
        )
        yield from connected

    def _tls_files(self) -> Iterator[Finding]:
        assert self.config is not None
        tls = self.config.mqtt.tls
        for name, path in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ):
            if path is None:
                continue
            if not path.exists():
                yield Finding(
                    "central", "fail", f"mqtt.tls.{name} {path} does not exist", "install the file"
                )
                continue
            if not self.account.can(path, _READ):
                yield Finding(
                    "central",
                    "fail",
                    f"{self.account.name} cannot read mqtt.tls.{name} {path}",
                    f"chgrp {SERVICE_USER} {path}; chmod 0640 {path}",
                )
            if name == "key_file" and path.stat().st_mode & 0o007:
                yield Finding(
                    "central",
                    "warn",
                    f"the hall's private key {path} is readable by every user",
                    f"chmod 0640 {path}",
                )
        if tls.cert_file is not None and tls.cert_file.exists():
            yield from _certificate_dates(tls.cert_file)

    # -- the running agent --------------------------------------------------------------

    def check_agent(self) -> Iterator[Finding]:
        import httpx

        from agent.daemon import api_url_file

        assert self.config is not None
        base = self.api
        if base is None:
            written = api_url_file(self.config)
            with contextlib.suppress(OSError):
                base = written.read_text(encoding="utf-8").strip() or None
        if base is None:
            base = f"http://{self.config.web.host}:{self.config.web.port}"
        try:
            answer = httpx.get(f"{base.rstrip('/')}/healthz", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            yield Finding(
                "agent",
                "warn",
                f"no agent answers at {base}",
                "systemctl status hall-agent; journalctl -u hall-agent -e",
            )
            return
        status = answer.get("status") if isinstance(answer, dict) else None
        reasons = answer.get("reasons", []) if isinstance(answer, dict) else []
        text = "; ".join(
            f"{r.get('check')}: {r.get('message')}" for r in reasons if isinstance(r, dict)
        )
        if status == "ready":
            yield Finding("agent", "ok", f"the agent at {base} is ready")
        elif status == "degraded":
            yield Finding("agent", "warn", f"the agent at {base} is degraded: {text}", "see above")
        else:
            yield Finding(
                "agent",
                "fail",
                f"the agent at {base} is {status}: {text}",
                "see docs/operations.md for each message",
            )


# MQTT 5 CONNACK reason codes an operator can act on.
_CONNACK_REASONS = {
    0x84: "does not support MQTT 5 (Unsupported Protocol Version)",
    0x85: "refused the client id",
    0x86: "refused the username or password",
    0x87: "says this hall is not authorized",
    0x8C: "refused the authentication method",
}


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def mqtt5_connect(
    sock: socket.socket,
    where: str,
    client_id: str,
    username: str | None,
    password: str | None,
    hall_id: str,
    strict: bool,
) -> list[Finding]:
    """Send one MQTT 5 CONNECT (protocol level 5, clean start) on ``sock`` and read the
    CONNACK: does the broker speak MQTT 5 and accept this hall? Then probe the ACL
    (``acl_probes``) and disconnect cleanly."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    variable = _utf8("MQTT") + bytes([5, flags]) + (30).to_bytes(2, "big") + _varint(0)
    payload = _utf8(client_id)
    if username is not None:
        payload += _utf8(username)
    if password is not None:
        secret = password.encode()
        payload += len(secret).to_bytes(2, "big") + secret
    body = variable + payload
    fix = "the hall needs an MQTT 5 broker (mosquitto 2, EMQX 5); see docs/central-integration.md"
    try:
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        head = _read_exact(sock, 2)
        if len(head) < 2:
            return [
                Finding(
                    "central",
                    "fail",
                    f"the broker at {where} closed the connection on an MQTT 5 CONNECT",
                    f"it may not speak MQTT 5, or refused this hall's login; {fix}",
                )
            ]
        if head[0] != 0x20:
            return [
                Finding(
                    "central", "fail", f"{where} did not answer an MQTT CONNECT like a broker", fix
                )
            ]
        rest = _read_exact(sock, head[1]) if head[1] < 0x80 else b""
    except OSError as err:
        return [Finding("central", "fail", f"MQTT 5 CONNECT to {where} failed: {err}", fix)]
    if head[1] == 2 and len(rest) == 2 and rest[1] == 0x01:
        return [
            Finding(
                "central", "fail", f"the broker at {where} speaks MQTT 3.1.1 only, not MQTT 5", fix
            )
        ]
    reason = rest[1] if len(rest) >= 2 else 0xFF
    if reason != 0:
        why = _CONNACK_REASONS.get(reason, f"refused the CONNECT (reason 0x{reason:02x})")
        return [
            Finding(
                "central",
                "fail",
                f"the broker at {where} {why}",
                fix
                if reason == 0x84
                else "check mqtt.username/password, the certificate and the ACL",
            )
        ]
    found = [Finding("central", "ok", f"the broker at {where} accepts an MQTT 5 CONNECT")]
    found += acl_probes(sock, where, hall_id, strict)
    with contextlib.suppress(OSError):
        sock.sendall(b"\xe0\x00")  # DISCONNECT, normal: no will, nothing kept
    return found


# The ACL probes' topics. The allowed one is a response topic nobody asked for (central's
# ingest reads only ``reply``, a console waits on response topics it named itself); the
# forbidden one belongs to a hall named after doctor's own client id, so an ACL that trusts
# the client id (``pattern … hall/v1/%c/#``) lets it through and is caught.
PROBE_OWN = "hall/v1/{hall}/reply/doctor-probe"
PROBE_OTHER = "hall/v1/{hall}-doctor/reply/doctor-probe"
_ACL_FIX = (
    "use the shipped broker configuration (brokers/mosquitto.conf and brokers/hall.acl: "
    "use_identity_as_username with the hall's certificate; docs/central-integration.md)"
)


def _read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """One MQTT packet (first byte, body); None when the broker closed the connection."""
    first = _read_exact(sock, 1)
    if not first:
        return None
    length, shift = 0, 0
    while True:
        byte = _read_exact(sock, 1)
        if not byte:
            return None
        length += (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = _read_exact(sock, length)
    return (first[0], body) if len(body) == length else None


def _publish_qos1(sock: socket.socket, topic: str, packet_id: int) -> int | None:
    """Publish at QoS 1 (not retained) and wait for its PUBACK: its reason code (0 and
    0x10 mean taken), or None when the broker closed the connection instead."""
    body = _utf8(topic) + packet_id.to_bytes(2, "big") + _varint(0) + b'{"probe":"doctor"}'
    sock.sendall(b"\x32" + _varint(len(body)) + body)
    while True:
        packet = _read_packet(sock)
        if packet is None:
            return None
        kind, rest = packet
        if kind >> 4 == 14:  # DISCONNECT from the broker (MQTT 5): its reason
            return rest[0] if rest else 0x80
        if kind >> 4 == 4 and int.from_bytes(rest[:2], "big") == packet_id:
            return rest[2] if len(rest) >= 3 else 0


def acl_probes(sock: socket.socket, where: str, hall_id: str, strict: bool) -> list[Finding]:
    """Publish (QoS 1, not retained) to one of this hall's own topics, which must be taken,
    then to another hall's, which must be refused: PUBACK "not authorized" (0x87), or a
    broker that drops the connection. Any answer other than a PUBACK is a refusal.
    mosquitto 2.0 answers PUBACK 0x87 and then closes the connection: the forbidden probe
    goes last. A
    broker that takes the other hall's publish fails when ``strict`` (TLS: a real city),
    else warns (a plain-TCP lab broker confines nobody anyway)."""
    own = PROBE_OWN.format(hall=hall_id)
    other = PROBE_OTHER.format(hall=hall_id)
    try:
        reason = _publish_qos1(sock, own, 1)
    except OSError as err:
        return [
            Finding(
                "central",
                "fail",
                f"publishing to {own} at {where} failed: {err}",
                "run doctor again; if it fails again, read the broker's log",
            )
        ]
    if reason is None or reason >= 0x80:
        how = "closed the connection" if reason is None else f"answered 0x{reason:02x}"
        return [
            Finding(
                "central",
                "fail",
                f"the broker at {where} refused this hall's publish to its own {own} ({how})",
                "the ACL must let a hall write hall/v1/<its id>/… bound to its certificate "
                f"(or username); {_ACL_FIX}",
            )
        ]
    found = [Finding("central", "ok", f"the broker lets this hall publish to {own}")]
    try:
        reason = _publish_qos1(sock, other, 2)
    except OSError:
        reason = None
    if reason is None or reason >= 0x80:
        how = "closed the connection" if reason is None else f"PUBACK 0x{reason:02x}"
        found.append(
            Finding("central", "ok", f"the broker refuses this hall's publish to {other} ({how})")
        )
    else:
        found.append(
            Finding(
                "central",
                "fail" if strict else "warn",
                f"the broker at {where} let this hall publish into another hall's topic "
                f"{other}: any hall can forge another's events",
                f"confine each hall to its own topics; {_ACL_FIX}",
            )
        )
    return found


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _tcp(check: str, label: str, host: str, port: int) -> Finding:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        return Finding(
            check,
            "fail",
            f"{label}: cannot connect to {host}:{port}: {err}",
            "check that the device is on, its address, and the cable or Wi-Fi",
        )
    return Finding(check, "ok", f"{label}: {host}:{port} answers")


def _certificate_dates(path: Path) -> Iterator[Finding]:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        yield Finding(
            "central", "fail", f"{path} is not a PEM certificate: {err}", "install it again"
        )
        return
    now = dt.datetime.now(dt.UTC)
    after = cert.not_valid_after_utc
    before = cert.not_valid_before_utc
    if now < before:
        yield Finding(
            "central",
            "fail",
            f"the hall's certificate {path} is valid only from {before:%Y-%m-%d}",
            "the hall's clock is probably behind: check timedatectl; else ask central for a "
            "certificate",
        )
    elif now > after:
        yield Finding(
            "central",
            "fail",
            f"the hall's certificate {path} expired on {after:%Y-%m-%d}",
            "ask central for a new certificate (or fix the clock if it is ahead)",
        )
    elif after - now < dt.timedelta(days=CERT_WARN_DAYS):
        yield Finding(
            "central",
            "warn",
            f"the hall's certificate {path} expires on {after:%Y-%m-%d} "
            f"({(after - now).days} days left)",
            "the hall asks central for a new one from mqtt.tls.renew_before_days before "
            "(cert.requested); check that central answers (hallctl certs serve)",
        )
    else:
        left = (after - now).days
        yield Finding(
            "central",
            "ok",
            f"the hall's certificate {path} expires on {after:%Y-%m-%d} ({left} days left)",
        )


def account_for(user: str | None) -> tuple[Account, Finding | None]:
    """The service user, or (on a machine without it) whoever runs the doctor."""
    name = user or SERVICE_USER
    try:
        return Account.service(name), None
    except KeyError:
        current = Account.current()
        if user is not None:
            return current, Finding(
                "user", "fail", f"there is no user {user!r}", "name an existing user"
            )
        return current, Finding(
            "user",
            "warn",
            f"there is no {SERVICE_USER} user here (not installed with scripts/install-pi?): "
            f"access is checked for {current.name}",
            "run scripts/install-pi on the hall's Pi",
        )


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        tag = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[f.level]
        first, *rest = f.message.splitlines()
        lines.append(f"{tag}  {f.check:<22} {first}")
        lines.extend(f"{'':28}{line}" for line in rest)
        if f.action and f.level != "ok":
            lines.append(f"{'':28}→ {f.action}")
    failures = sum(f.level == "fail" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    lines.append(f"{failures} failure(s), {warnings} warning(s)")
    return "\n".join(lines)


def run(config_path: Path, *, user: str | None, api: str | None, as_json: bool) -> tuple[int, str]:
    """The command: (exit status, text). Non-zero when any finding is a failure."""
    account, note = account_for(user)
    findings = [] if note is None else [note]
    findings.extend(Doctor(config_path, account=account, api=api).examine())
    code = 1 if any(f.level == "fail" for f in findings) else 0
    if as_json:
        return code, json.dumps([f.as_dict() for f in findings], ensure_ascii=False, indent=2)
    return code, render(findings)
