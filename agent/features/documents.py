"""Captured documents: the window's camera or scanner, the sealed spool, the upload.

A capture (central's ``capture_document``, the local API, a window key) takes pages from
the window's ``camera`` or ``doc_scanner``. Each page is a file: it is written sealed
(AES-GCM, chunk by chunk, see :mod:`agent.runtime.personal`) into the spool and fsynced, then its
row and the ``document.captured`` event are committed in one transaction — save first,
then tell. The spool is bounded (``documents.spool_max_bytes``): a capture that would not
fit is refused with the reason rather than a waiting document being dropped.

While the link is up, files go to central oldest first as checksummed chunks
(``file/{id}/chunk``), then ``file/{id}/complete`` with size and SHA-256. Central answers
on ``file-ack``: ``complete`` (the hall deletes its copy: delivered) or the chunk ranges it
lacks (sent again). How many chunks the broker confirmed is saved as it goes (at most once
a second), so an upload resumes about where it stopped after an outage or a restart; a
``complete`` without an answer is offered again after ``documents.ack_timeout_s`` (and
after every reconnect). The files' rows are kept by the store
(:mod:`agent.runtime.store.documents`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agent.central import contract as c
from agent.config import (
    CameraDevice,
    DocScannerDevice,
    HallAgentConfig,
    TestPatternTransport,
    V4l2Transport,
    personal_data_key,
)
from agent.core import events as ev
from agent.core.engine import QueueEngine
from agent.core.errors import Refused
from agent.core.events import Event
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.personal import SEAL_OVERHEAD, PersonalDataError, Vault
from agent.runtime.store import SpoolFile, Store, StoredEvent, Written
from agent.runtime.tasks import BackgroundTasks
from drivers.scanner import (
    FfmpegCamera,
    Page,
    SaneScanner,
    Scanner,
    ScannerError,
    TestPatternSource,
    V4l2Source,
)

log = logging.getLogger(__name__)

CaptureDevice = CameraDevice | DocScannerDevice
ScannerFactory = Callable[[CaptureDevice], Scanner]
# How often the cameras and scanners are looked at between captures (hot-plug).
DEVICE_CHECK_S = 10.0
# Save how far an upload got at most this often (and at its end): each save is a durable
# commit (an fsync), and a restart resends at most this long's chunks.
_SAVE_EVERY_S = 1.0


def open_scanner(device: CaptureDevice) -> Scanner:
    if isinstance(device, DocScannerDevice):
        t = device.transport
        return SaneScanner(
            t.device_name,
            resolution_dpi=device.resolution_dpi,
            mode=device.mode,
            source=device.source,
        )
    transport = device.transport
    size = None if device.width is None or device.height is None else (device.width, device.height)
    if isinstance(transport, TestPatternTransport):
        return FfmpegCamera(
            TestPatternSource(transport.pattern),
            size=size or (1600, 1200),
            warmup_frames=device.warmup_frames,
        )
    assert isinstance(transport, V4l2Transport)
    return FfmpegCamera(V4l2Source(transport.path), size=size, warmup_frames=device.warmup_frames)


def _complete(file: SpoolFile) -> c.FileComplete:
    """The ``file/{id}/complete`` message of a spooled file (its row is
    :class:`agent.runtime.store.SpoolFile`)."""
    return c.FileComplete(
        file=file.id,
        document=file.document,
        page=file.page,
        content_type=file.content_type,
        size=file.size,
        sha256=file.sha256,
        chunks=file.chunks,
        chunk_bytes=file.chunk_bytes,
    )


class Spool:
    """The sealed page files on disk. Blocking: call from a thread."""

    def __init__(self, directory: Path, vault: Vault) -> None:
        self.directory = directory
        self.vault = vault

    def path(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.spool"

    def write(self, file_id: str, data: bytes, chunk_bytes: int) -> int:
        """Seal ``data`` chunk by chunk into the spool, durably; returns the bytes used."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(file_id)
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for index, start in enumerate(range(0, max(len(data), 1), chunk_bytes)):
                chunk = data[start : start + chunk_bytes]
                fh.write(self.vault.encrypt_bytes(chunk, f"{file_id}:{index}".encode()))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(target)
        _fsync_dir(self.directory)
        return target.stat().st_size

    def chunk(self, file: SpoolFile, index: int) -> bytes:
        record = file.chunk_bytes + SEAL_OVERHEAD
        with self.path(file.id).open("rb") as fh:
            fh.seek(index * record)
            sealed = fh.read(record)
        return self.vault.decrypt_bytes(sealed, f"{file.id}:{index}".encode())

    def remove(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    def orphans(self, known: set[str]) -> list[Path]:
        """Spool files no committed row names (a crash between the write and the commit)."""
        if not self.directory.exists():
            return []
        return [
            p
            for p in self.directory.iterdir()
            if p.suffix in (".spool", ".tmp") and p.stem not in known
        ]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))


class DocumentDesk:
    """Document capture and upload. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard,
        *,
        vault: Vault | None = None,
        scanner_factory: ScannerFactory = open_scanner,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.topics = c.Topics(hall.config.hall.id)
        self._vault = vault
        self._factory = scanner_factory
        self.scanners: dict[str, Scanner] = {}
        self._owner = {d: w.id for w in hall.config.windows for d in w.devices}
        self.spool: Spool | None = None
        self.problem: str | None = None
        self._wake = asyncio.Event()
        self._resend: dict[str, list[tuple[int, int]]] = {}
        self._offered: dict[str, float] = {}  # file -> monotonic time complete was sent
        self._lock = asyncio.Lock()  # one capture at a time per hall keeps the spool honest
        self._watch: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self.uploaded_chunks = 0
        self.delivered = 0

    @property
    def config(self) -> HallAgentConfig:
        return self.hall.config

    @property
    def loaded_vault(self) -> Vault | None:
        return self._vault

    @property
    def spool_dir(self) -> Path:
        return self.config.documents.spool_path or self.config.storage.path / "spool"

    async def __aenter__(self) -> DocumentDesk:
        if self._vault is None:
            pd = self.config.personal_data
            try:
                self._vault = await asyncio.to_thread(
                    Vault.from_files, personal_data_key(self.config), pd.hash_key_file
                )
            except (PersonalDataError, OSError) as err:
                self.problem = str(err)
                log.error("documents cannot be captured: %s", err)
        if self._vault is not None:
            self.spool = Spool(self.spool_dir, self._vault)
            await self._clean_orphans()
        for device in self.config.devices:
            if isinstance(device, CameraDevice | DocScannerDevice):
                scanner = self._factory(device)
                self.scanners[device.id] = scanner
                await self._check(device.id, scanner)
        tasks = await self._stack.enter_async_context(BackgroundTasks())
        self._watch = tasks.create_task(self._watch_devices(), name="document-devices")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self._stack.aclose()

    async def _watch_devices(self) -> None:
        """A camera unplugged or plugged back in shows in the device state within this."""
        while True:
            await asyncio.sleep(DEVICE_CHECK_S)
            for device_id, scanner in self.scanners.items():
                if not self._lock.locked():  # a capture in progress reports by itself
                    await self._check(device_id, scanner)

    async def _check(self, device_id: str, scanner: Scanner) -> bool:
        try:
            detail = await scanner.check()
        except ScannerError as err:
            self.devices.report(device_id, "offline", str(err))
            return False
        self.devices.report(device_id, "ok", f"{scanner.endpoint}: {detail}")
        return True

    async def _clean_orphans(self) -> None:
        assert self.spool is not None
        rows = await self.hall.store_read(lambda s: s.pending_document_ids())
        for path in await asyncio.to_thread(self.spool.orphans, rows):
            log.warning("removing %s: its capture was never saved (a crash during it)", path)
            path.unlink(missing_ok=True)

    # -- capture -------------------------------------------------------------------------

    def device_for(self, window: str | None, device_id: str | None = None) -> str:
        if device_id is not None:
            if device_id not in self.scanners:
                raise Refused(f"{device_id!r} is not a document camera or scanner of this hall")
            return device_id
        for candidate in self.scanners:
            if window is not None and self._owner.get(candidate) == window:
                return candidate
        if window is None and len(self.scanners) == 1:
            return next(iter(self.scanners))
        raise Refused(
            f"window {window} has no document camera or scanner; add a camera or doc_scanner "
            "to its devices"
        )

    async def capture(
        self,
        window: str | None,
        pages: int = 1,
        *,
        device_id: str | None = None,
        cmd_id: str | None = None,
    ) -> dict[str, Any]:
        """Capture, spool and record a document; its pages then upload by themselves."""
        if self.spool is None:
            raise Refused(f"documents cannot be captured: {self.problem}")
        spool = self.spool
        device = self.device_for(window, device_id)
        scanner = self.scanners[device]
        docs = self.config.documents
        async with self._lock:
            used = await self.hall.store_read(lambda s: s.spool_bytes())
            if used >= docs.spool_max_bytes:
                raise Refused(
                    f"the document spool is full ({used // 2**20} MiB wait for central); "
                    "captures resume once central has received them"
                )
            try:
                captured = await scanner.capture(pages)
            except ScannerError as err:
                self.devices.report(device, "error", str(err))
                raise Refused(f"the document could not be captured: {err}") from err
            self.devices.report(device, "ok", f"{scanner.endpoint}: ready")
            need = sum(len(p.data) for p in captured)
            if used + need > docs.spool_max_bytes:
                raise Refused(
                    f"the document spool has no room for {need // 1024} KiB more "
                    f"({used // 2**20} MiB wait for central); try again once they are sent"
                )
            return await self._save(spool, device, window, captured, cmd_id)

    async def _save(
        self,
        spool: Spool,
        device: str,
        window: str | None,
        pages: list[Page],
        cmd_id: str | None,
    ) -> dict[str, Any]:
        chunk_bytes = self.config.documents.chunk_bytes
        now = dt.datetime.now(self.config.hall.zone)
        document = f"{now:%Y%m%d}-{window or 'hall'}-{uuid.uuid4().hex[:8]}"
        files: list[SpoolFile] = []
        try:
            for number, page in enumerate(pages, start=1):
                file_id = f"{document}-p{number}"
                used = await asyncio.to_thread(spool.write, file_id, page.data, chunk_bytes)
                files.append(
                    SpoolFile(
                        id=file_id,
                        document=document,
                        page=number,
                        content_type=page.content_type,
                        size=len(page.data),
                        sha256=hashlib.sha256(page.data).hexdigest(),
                        chunk_bytes=chunk_bytes,
                        chunks=_chunks(len(page.data), chunk_bytes),
                        spool_bytes=used,
                        created_at=now.isoformat(timespec="milliseconds"),
                        sent_chunks=0,
                        state="spooled",
                    )
                )
            context = await self.hall.read(_window_context(window))
            captured = ev.DocumentCaptured(
                document=document,
                window=window,
                device=device,
                source="scanner" if isinstance(self.scanners[device], SaneScanner) else "camera",
                cmd_id=cmd_id,
                pages=[
                    ev.DocumentPage(
                        file=f.id,
                        page=f.page,
                        content_type=f.content_type,
                        size=f.size,
                        sha256=f.sha256,
                        chunks=f.chunks,
                    )
                    for f in files
                ],
                **context,
            )

            def write(store: Store, at: dt.datetime, clock_ok: bool) -> Written[list[StoredEvent]]:
                event = Event(captured, at)
                return Written.of_events(store.spool_document(files, event, clock_ok=clock_ok))

            stored = await self.hall.write(write)
        except BaseException:
            for f in files:
                spool.remove(f.id)
            raise
        log.info(
            "document %s captured at %s: %d page(s), %d KiB, spooled for central",
            document,
            window or device,
            len(files),
            sum(f.size for f in files) // 1024,
        )
        self._wake.set()
        pages = captured.to_data()["pages"]
        return {"document": document, "pages": pages, "seq": stored[0].seq}

    async def capture_command(self, command: c.CaptureDocument) -> dict[str, Any]:
        """Central's ``capture_document`` (a command handler of the link)."""
        return await self.capture(command.window, command.pages, cmd_id=command.cmd_id)

    # -- upload --------------------------------------------------------------------------

    async def pending(self) -> list[SpoolFile]:
        return await self.hall.store_read(lambda s: s.pending_documents())

    async def on_file_ack(self, payload: bytes) -> None:
        try:
            ack = c.FileAck.model_validate_json(payload)
        except ValueError as err:
            log.warning("ignored a malformed file-ack from central: %s", str(err).splitlines()[0])
            return
        if ack.status == "complete":
            await self._delivered(ack.file)
        else:
            self._resend[ack.file] = list(ack.missing)
            self._offered.pop(ack.file, None)
        self._wake.set()

    async def _delivered(self, file_id: str) -> None:
        def write(store: Store, now: dt.datetime, _: bool) -> Written[bool]:
            return Written([], store.document_delivered(file_id, now))

        if await self.hall.write(write) and self.spool is not None:
            await asyncio.to_thread(self.spool.remove, file_id)
            self.delivered += 1
            log.info("document file %s delivered to central; the hall's copy is deleted", file_id)
        self._offered.pop(file_id, None)
        self._resend.pop(file_id, None)

    async def upload(self, client: aiomqtt.Client) -> None:
        """Runs while the link is up (``Link.while_connected``): send what waits."""
        from agent.central.link import Pacer

        docs = self.config.documents
        # A small burst: a page starts at once, then the rate holds (the uplink is shared).
        pacer = Pacer(docs.upload_rate, burst=max(1, int(docs.upload_rate / 4)))
        self._offered.clear()  # a new connection: offer every sent file again
        while True:
            self._wake.clear()
            next_check = docs.ack_timeout_s
            for file in await self.pending():
                if self.spool is None:
                    return
                resend = self._resend.pop(file.id, None)
                if resend is not None:
                    for first, last in resend:
                        for index in range(max(0, first), min(last, file.chunks - 1) + 1):
                            await pacer.take()
                            await self._send_chunk(client, file, index)
                    await self._offer(client, file)
                elif file.state == "spooled":
                    await self._send_file(client, file, pacer)
                else:
                    offered = self._offered.get(file.id)
                    age = None if offered is None else time.monotonic() - offered
                    if age is None or age >= docs.ack_timeout_s:
                        await self._offer(client, file)
                    else:
                        next_check = min(next_check, docs.ack_timeout_s - age)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, next_check)):
                    await self._wake.wait()

    async def _send_chunk(self, client: aiomqtt.Client, file: SpoolFile, index: int) -> None:
        await self._publish_chunk(client, file, await self._chunk_message(file, index))

    async def _publish_chunk(self, client: aiomqtt.Client, file: SpoolFile, message: str) -> None:
        await client.publish(self.topics.file_chunk(file.id), message, qos=1)
        self.uploaded_chunks += 1

    async def _chunk_message(self, file: SpoolFile, index: int) -> str:
        assert self.spool is not None
        data = await asyncio.to_thread(self.spool.chunk, file, index)
        chunk = c.FileChunk(
            file=file.id,
            document=file.document,
            index=index,
            chunks=file.chunks,
            offset=index * file.chunk_bytes,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=base64.b64encode(data).decode("ascii"),
        )
        return chunk.model_dump_json()

    async def _send_file(self, client: aiomqtt.Client, file: SpoolFile, pacer: Any) -> None:
        """Send a file's chunks, ``upload_inflight`` at a time; the progress saved is the
        run of chunks from the start that the broker confirmed, so a restart resends only
        what may be missing."""
        window = asyncio.Semaphore(self.config.documents.upload_inflight)
        confirmed: set[int] = set()
        sent = file.sent_chunks  # every chunk below this one was confirmed
        saved_at = time.monotonic()

        async def send(index: int, message: str) -> None:
            try:
                await self._publish_chunk(client, file, message)
            finally:
                window.release()
            confirmed.add(index)

        async with asyncio.TaskGroup() as tasks:
            for index in range(file.sent_chunks, file.chunks):
                await pacer.take()
                await window.acquire()
                # Read here, publish in the task: the chunks leave in index order.
                tasks.create_task(send(index, await self._chunk_message(file, index)))
                while sent in confirmed:
                    confirmed.discard(sent)
                    sent += 1
                if time.monotonic() - saved_at >= _SAVE_EVERY_S and sent < file.chunks:
                    await self._save_progress(file.id, sent, "spooled")
                    saved_at = time.monotonic()
        sent = file.chunks  # the group ended without an error: every chunk was confirmed
        await self._save_progress(file.id, sent, "sent")
        await self._offer(client, dataclasses.replace(file, sent_chunks=sent, state="sent"))

    async def _offer(self, client: aiomqtt.Client, file: SpoolFile) -> None:
        await client.publish(
            self.topics.file_complete(file.id), _complete(file).model_dump_json(), qos=1
        )
        self._offered[file.id] = time.monotonic()

    async def _save_progress(self, file_id: str, sent: int, state: str) -> None:
        def write(store: Store, _now: dt.datetime, _ok: bool) -> Written[None]:
            store.save_upload_progress(file_id, sent, state)
            return Written([], None)

        await self.hall.write(write)

    async def state(self) -> dict[str, Any]:
        files = await self.pending()
        return {
            "waiting_files": len(files),
            "waiting_bytes": sum(f.size for f in files),
            "spool_bytes": sum(f.spool_bytes for f in files),
            "spool_max_bytes": self.config.documents.spool_max_bytes,
            "uploaded_chunks": self.uploaded_chunks,
            "delivered": self.delivered,
            "devices": {k: s.endpoint for k, s in self.scanners.items()},
            "problem": self.problem,
        }


def _window_context(window: str | None) -> Callable[[QueueEngine, dt.datetime], dict[str, Any]]:
    def read(engine: QueueEngine, _now: dt.datetime) -> dict[str, Any]:
        status = engine.windows.get(window) if window else None
        out: dict[str, Any] = {}
        if status is not None and status.current and status.current in engine.tickets:
            out["ticket"] = engine.tickets[status.current].number
            # Who serves that ticket (two staff may be signed in at the window).
            if engine.tickets[status.current].staff:
                out["staff"] = engine.tickets[status.current].staff
        if status is not None and status.staff:
            out.setdefault("staff", status.staff)
        return out

    return read


@contextlib.asynccontextmanager
async def document_desk(hall: Hall, devices: DeviceBoard) -> AsyncIterator[DocumentDesk | None]:
    """Document capture, or None when no camera or scanner is configured."""
    if not any(isinstance(d, CameraDevice | DocScannerDevice) for d in hall.config.devices):
        yield None
        return
    async with DocumentDesk(hall, devices) as desk:
        yield desk


# -- the local API -------------------------------------------------------------------------


class Capture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pages: int = Field(default=1, ge=1, le=50)


def document_routes(
    desk: DocumentDesk, *, capture_guard: Sequence[Any], read_guard: Sequence[Any]
) -> APIRouter:
    """Capture at a window (``capture_guard``: the dependencies that guard it) and the
    spool's state (``read_guard``); who may is decided by the web layer
    (agent/web/access.py)."""
    router = APIRouter(prefix="/api/v1", tags=["documents"])

    @router.post("/windows/{window}/capture", status_code=201, dependencies=list(capture_guard))
    async def capture(window: str, body: Capture | None = None) -> dict[str, Any]:
        """Capture a document with the window's camera or scanner (409 with the reason)."""
        return await desk.capture(window, body.pages if body else 1)

    @router.get("/documents", dependencies=list(read_guard))
    async def documents() -> dict[str, Any]:
        """The spool: pages waiting for central, bytes, what was delivered."""
        return await desk.state()

    return router
