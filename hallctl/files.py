"""Central's side of document uploads, as a reference: chunks in, whole files out.

A hall sends each captured page as chunks on ``hall/v1/{hall}/file/{file}/chunk`` and then
``.../complete`` with the size and SHA-256. A receiver stores every chunk at its offset
(after checking the chunk's own SHA-256), remembers which it has, and answers each
``complete`` on ``hall/v1/{hall}/file-ack``: ``complete`` once the whole file is on disk
(fsynced) with the right size and SHA-256, else ``missing`` with the chunk ranges to send
again. Chunks may arrive twice or out of order; a file already stored is answered
``complete`` again. ``hallctl files --out DIR`` runs it; the tests use it as central.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import mimetypes
import os
import re
from pathlib import Path

import aiomqtt

from agent.central import contract as c

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _ranges(indexes: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class FileReceiver:
    """Assembles uploaded files under ``directory/{hall}/``. Blocking file I/O."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stored: list[Path] = []

    def _base(self, hall: str, file: str) -> Path:
        if not _SAFE.match(hall) or not _SAFE.match(file):
            raise ValueError(f"unsafe hall or file name {hall!r}/{file!r}")
        folder = self.directory / hall
        folder.mkdir(parents=True, exist_ok=True)
        return folder / file

    def on_chunk(self, hall: str, chunk: c.FileChunk) -> bool:
        """Store one chunk; False (and nothing stored) when its checksum does not match."""
        try:
            data = base64.b64decode(chunk.data, validate=True)
        except (binascii.Error, ValueError):
            return False
        if len(data) != chunk.size or hashlib.sha256(data).hexdigest() != chunk.sha256:
            log.warning(
                "chunk %d of %s/%s failed its checksum; dropped", chunk.index, hall, chunk.file
            )
            return False
        base = self._base(hall, chunk.file)
        part = base.with_name(base.name + ".part")
        mode = "r+b" if part.exists() else "wb"
        with part.open(mode) as fh:
            fh.seek(chunk.offset)
            fh.write(data)
        with base.with_name(base.name + ".chunks").open("a", encoding="ascii") as fh:
            fh.write(f"{chunk.index}\n")
        return True

    def on_complete(self, hall: str, done: c.FileComplete) -> c.FileAck:
        base = self._base(hall, done.file)
        final = base.with_suffix(mimetypes.guess_extension(done.content_type) or ".bin")
        if final.exists() and _sha256(final) == done.sha256:
            return c.FileAck(file=done.file, status="complete")
        part = base.with_name(base.name + ".part")
        index_file = base.with_name(base.name + ".chunks")
        have: set[int] = set()
        if index_file.exists():
            have = {int(x) for x in index_file.read_text(encoding="ascii").split()}
        missing = [i for i in range(done.chunks) if i not in have]
        if missing:
            return c.FileAck(file=done.file, status="missing", missing=_ranges(missing))
        with part.open("r+b") as fh:
            fh.truncate(done.size)
            fh.flush()
            os.fsync(fh.fileno())
        if part.stat().st_size != done.size or _sha256(part) != done.sha256:
            log.warning("%s/%s does not match its sha256; asking for all of it", hall, done.file)
            part.unlink()
            index_file.unlink(missing_ok=True)
            return c.FileAck(file=done.file, status="missing", missing=[(0, done.chunks - 1)])
        part.replace(final)
        index_file.unlink(missing_ok=True)
        meta = final.with_name(final.name + ".json")
        meta.write_text(json.dumps(done.model_dump(), indent=1), encoding="utf-8")
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stored.append(final)
        log.info("stored %s from %s (%d bytes, sha256 ok)", final.name, hall, done.size)
        return c.FileAck(file=done.file, status="complete")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def receive_files(client: aiomqtt.Client, receiver: FileReceiver, hall: str = "+") -> None:
    """Subscribe to the halls' uploads and answer them, until cancelled."""
    await client.subscribe(f"{c.ROOT}/{hall}/file/+/chunk", qos=1)
    await client.subscribe(f"{c.ROOT}/{hall}/file/+/complete", qos=1)
    async for message in client.messages:
        parts = str(message.topic).split("/")
        if len(parts) != 6 or parts[3] != "file":
            continue
        hall_id, kind = parts[2], parts[5]
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            if kind == "chunk":
                receiver.on_chunk(hall_id, c.FileChunk.model_validate_json(payload))
            elif kind == "complete":
                ack = receiver.on_complete(hall_id, c.FileComplete.model_validate_json(payload))
                await client.publish(c.Topics(hall_id).file_ack, ack.model_dump_json(), qos=1)
        except ValueError as err:
            log.warning("ignored a malformed upload message on %s: %s", message.topic, err)
