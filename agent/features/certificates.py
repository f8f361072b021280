"""Certificates that renew themselves (docs/fleet.md).

Once an hour the hall looks at its MQTT client certificate (``mqtt.tls.cert_file``). From
``mqtt.tls.renew_before_days`` before it expires, it makes a new key on the hall (kept
pending beside the key file, mode 0600) and sends a certificate signing request as a
``cert.requested`` event: through the outbox, so a request made while central is out of
reach leaves when the link is back. Without an answer it asks again after a day, with the
same key.

Central answers with ``install_certificate``. The certificate is checked (the pending
key's public key, issued by a CA in ``mqtt.tls.ca_file``, valid, naming this hall) and
then replaces the certificate and the key (the old key is gone); ``cert.renewed`` says so.
The link builds its TLS context at every connect, so the next connection uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from agent.central import contract as c
from agent.config import MqttConfig
from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.events import Event
from agent.runtime.hall import Hall
from agent.runtime.store import Store, Written

if TYPE_CHECKING:
    from cryptography import x509

    from agent.runtime.certs import CertFiles

# cryptography (and agent.runtime.certs, which uses it) loads on first use: importing the
# daemon stays light (tests/test_layering.py).

log = logging.getLogger(__name__)

# How often the certificate's dates are looked at.
CHECK_EVERY_S = 3600.0
# A request central has not answered is sent again after this.
ASK_AGAIN_S = 86400.0
# How long a connection to the renewal-only listener waits for central's certificate.
RENEWAL_WAIT_S = 120.0


class Certificates:
    """The renewal of the hall's client certificate; ``install`` is central's command."""

    def __init__(
        self,
        hall: Hall,
        mqtt: MqttConfig,
        *,
        check_every_s: float = CHECK_EVERY_S,
        ask_again_s: float = ASK_AGAIN_S,
    ) -> None:
        self.hall = hall
        self.hall_id = hall.config.hall.id
        tls = mqtt.tls
        self.files: CertFiles | None = None
        if (
            mqtt.uses_tls
            and tls.cert_file is not None
            and tls.key_file is not None
            and tls.ca_file is not None
        ):
            from agent.runtime.certs import CertFiles, recover

            self.files = CertFiles(tls.cert_file, tls.key_file, tls.ca_file)
            # Before the link loads the files: a swap a power cut interrupted is finished.
            try:
                done = recover(self.files)
            except OSError as err:
                log.error("client certificate: cannot finish an interrupted renewal: %s", err)
            else:
                if done:
                    log.warning("client certificate: %s", done)
        self.renew_before = dt.timedelta(days=tls.renew_before_days)
        self.check_every_s = check_every_s
        self.ask_again_s = ask_again_s
        self.mqtt = mqtt
        self.renewal_wait_s = RENEWAL_WAIT_S
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.files is not None

    # -- asking -----------------------------------------------------------------------------

    async def watch(self) -> None:
        """Look at the certificate every hour (and ask for a new one when it is due)."""
        if self.files is None:
            return
        while True:
            try:
                await self.check()
                if self.mqtt.renewal_url is not None and await self._expired():
                    await self.renew_over_bootstrap()
            except (OSError, ValueError) as err:
                log.error("client certificate renewal: %s; trying again later", err)
            await asyncio.sleep(self.check_every_s)

    async def _expired(self) -> bool:
        from agent.runtime import certs

        assert self.files is not None
        left = await asyncio.to_thread(certs.certificate_days_left, self.files.cert)
        return left is not None and left <= 0

    # -- an expired certificate: the renewal-only listener ------------------------------------

    async def renew_over_bootstrap(self) -> bool:
        """With the certificate expired the broker refuses the hall; its renewal-only
        listener takes the bootstrap certificate and lets it send the request (on
        ``renewal/request``, not the outbox: the request must not wait behind the events)
        and receive ``install_certificate``. True once a certificate was installed."""
        import ssl

        import aiomqtt

        from agent.runtime import certs

        files, endpoint = self.files, self.mqtt.renewal_endpoint
        tls = self.mqtt.tls
        if files is None or endpoint is None or tls.bootstrap_cert_file is None:
            return False
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        assert tls.bootstrap_key_file is not None
        context.load_cert_chain(tls.bootstrap_cert_file, tls.bootstrap_key_file)
        async with self._lock:
            cert = await asyncio.to_thread(certs.load_certificate, files.cert)
            cert = await asyncio.to_thread(certs.load_certificate, files.cert)
            csr = await asyncio.to_thread(certs.make_request, files, self.hall_id)
        request = c.RenewalRequest(
            csr=csr,
            not_after=cert.not_valid_after_utc.isoformat(),
            days_left=round(certs.days_left(cert, dt.datetime.now(dt.UTC)), 1),
            serial=certs.serial_hex(cert),
        )
        topics = c.Topics(self.hall_id)
        host, port = endpoint
        log.warning(
            "client certificate expired on %s: asking at the renewal listener %s:%d",
            request.not_after,
            host,
            port,
        )
        try:
            async with (
                aiomqtt.Client(
                    host,
                    port,
                    identifier=f"{self.hall_id}.renewal",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    tls_context=context,
                    timeout=10.0,
                ) as client,
                asyncio.timeout(self.renewal_wait_s),
            ):
                await client.subscribe(topics.command("install_certificate"), qos=1)
                await client.publish(topics.renewal_request, request.model_dump_json(), qos=1)
                async for message in client.messages:
                    payload = message.payload
                    if not isinstance(payload, bytes | bytearray):
                        continue
                    reply = await self._answer(payload)
                    await client.publish(topics.reply, reply.model_dump_json(), qos=1)
                    if reply.status == "ok":
                        return True
        except (aiomqtt.MqttError, TimeoutError) as err:
            log.warning("the renewal listener gave no certificate (%s); asking again later", err)
        return False

    async def _answer(self, payload: bytes | bytearray) -> c.Reply:
        name = "install_certificate"
        try:
            command = c.InstallCertificate.model_validate_json(payload)
        except ValueError as err:
            return c.Reply(cmd_id="", name=name, status="rejected", error=str(err)[:500])
        try:
            result = await self.install(command)
        except Refused as err:
            return c.Reply(cmd_id=command.cmd_id, name=name, status="failed", error=str(err))
        return c.Reply(cmd_id=command.cmd_id, name=name, status="ok", result=result)

    async def check(self) -> bool:
        """Send a request when the certificate is due and none was sent within a day;
        True when one was sent."""
        files = self.files
        if files is None:
            return False
        from agent.runtime import certs

        async with self._lock:
            # The date alone first: cryptography loads only when a renewal is due.
            after = await asyncio.to_thread(certs.not_valid_after, files.cert)
            now = dt.datetime.now(dt.UTC)
            if after - now > self.renew_before:
                return False
            with contextlib.suppress(FileNotFoundError):
                asked = files.pending.stat().st_mtime
                if time.time() - asked < self.ask_again_s:
                    return False
            cert = await asyncio.to_thread(certs.load_certificate, files.cert)
            csr = await asyncio.to_thread(certs.make_request, files, self.hall_id)
            left = round(certs.days_left(cert, now), 1)
            await self._emit(
                ev.CertRequested(
                    csr=csr,
                    not_after=cert.not_valid_after_utc.isoformat(),
                    days_left=left,
                    serial=certs.serial_hex(cert),
                )
            )
            os.utime(files.pending)  # when it was asked: again after a day without answer
            log.info("client certificate expires in %.1f days: asked central for a new one", left)
            return True

    # -- central's answer -------------------------------------------------------------------

    async def install(self, command: c.InstallCertificate) -> dict[str, Any]:
        files = self.files
        if files is None:
            raise Refused("this hall has no client certificate to renew (mqtt.tls.cert_file)")
        from agent.runtime import certs
        from agent.runtime.certs import CertificateRefused

        async with self._lock:
            installed = await asyncio.to_thread(certs.installed_already, files, command.certificate)
            if installed is not None:
                return installed
            try:
                leaf = await asyncio.to_thread(
                    certs.check_certificate,
                    files,
                    self.hall_id,
                    command.certificate,
                    command.chain,
                )
            except CertificateRefused as err:
                log.warning("a certificate from central was refused: %s", err)
                raise Refused(str(err)) from err
            previous: str | None = None
            with contextlib.suppress(OSError, ValueError):
                previous = certs.serial_hex(
                    await asyncio.to_thread(certs.load_certificate, files.cert)
                )
            chain = _chain(command)
            await asyncio.to_thread(certs.install, files, leaf, chain)
            serial = certs.serial_hex(leaf)
            not_after = leaf.not_valid_after_utc.isoformat()
            await self._emit(
                ev.CertRenewed(not_after=not_after, serial=serial, previous_serial=previous)
            )
            log.info(
                "installed the new client certificate %s (valid until %s); the next "
                "connection uses it",
                serial,
                not_after,
            )
            return {"serial": serial, "not_after": not_after, "previous_serial": previous}

    async def _emit(self, data: ev.EventData) -> None:
        event = Event(data, dt.datetime.now(dt.UTC))

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
            return Written(
                store.append([dataclasses.replace(event, at=now)], clock_ok=clock_ok), None
            )

        await self.hall.write(write)


def _chain(command: c.InstallCertificate) -> list[x509.Certificate]:
    """The intermediates to keep beside the certificate (after it in the file)."""
    from cryptography import x509

    found = x509.load_pem_x509_certificates(command.certificate.encode("ascii"))[1:]
    if command.chain:
        found += x509.load_pem_x509_certificates(command.chain.encode("ascii"))
    return found
