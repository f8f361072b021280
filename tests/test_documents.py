"""Document capture and upload: real ffmpeg and SANE stand-ins, the sealed spool, and the
resumable upload to a central subscriber on a real mosquitto across a broker outage and
an agent restart."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from broker import Broker
from support import hall_config

from agent.central import contract as c
from agent.config import CameraDevice, HallAgentConfig, validate_config
from agent.core.errors import Refused
from agent.daemon import Running, running_agent
from agent.features.documents import DocumentDesk, Spool
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.personal import Vault
from agent.runtime.store import DB_NAME, Store
from drivers.scanner import (
    FfmpegCamera,
    SaneScanner,
    Scanner,
    ScannerUnavailable,
    TestPatternSource,
    V4l2Source,
    largest_mjpeg_size,
)
from hallctl.files import FileReceiver, receive_files

pytestmark = pytest.mark.timeout(60)

HALL = "test-hall"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
needs_sane = pytest.mark.skipif(shutil.which("scanimage") is None, reason="sane-utils missing")


def camera_config(storage: Path, url: str | None = None, **documents: Any) -> HallAgentConfig:
    data = hall_config(
        storage,
        devices=[
            {
                "id": "cam-w1",
                "kind": "camera",
                "transport": {"type": "test_pattern"},
                "width": 2048,
                "height": 1536,
                "warmup_frames": 1,
            }
        ],
        personal_data={"key_file": str(storage.parent / "personal.key")},
        documents={"chunk_bytes": 4096, "upload_rate": 1000, **documents},
    )
    data["windows"][0]["devices"] = ["cam-w1"]
    if url is not None:
        data["mqtt"] = {
            "url": url,
            "reconnect_spread_s": 0.1,
            "reconnect_max_s": 0.5,
            "stable_after_s": 0,
            "metrics_interval_s": 1,
        }
    return validate_config(data)


# -- drivers -----------------------------------------------------------------------------


@needs_ffmpeg
async def test_camera_stand_in_captures_jpeg_at_the_asked_size() -> None:
    camera = FfmpegCamera(TestPatternSource(), size=(640, 480), warmup_frames=2)
    pages = await camera.capture(2)
    assert len(pages) == 2
    for page in pages:
        assert page.data.startswith(b"\xff\xd8")
        assert page.content_type == "image/jpeg"
        # SOF0 carries the height and width.
        sof = page.data.index(b"\xff\xc0")
        height = int.from_bytes(page.data[sof + 5 : sof + 7], "big")
        width = int.from_bytes(page.data[sof + 7 : sof + 9], "big")
        assert (width, height) == (640, 480)


async def test_a_missing_video_device_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    camera = FfmpegCamera(V4l2Source(tmp_path / "video7"))
    with pytest.raises(ScannerUnavailable, match="unplugged"):
        await camera.capture()


VIDEO_DEVICES = sorted(Path("/dev").glob("video*"))


@pytest.mark.skipif(not VIDEO_DEVICES, reason="no video device here")
async def test_a_real_uvc_camera_captures() -> None:  # pragma: no cover - needs hardware
    camera = FfmpegCamera(V4l2Source(VIDEO_DEVICES[0]))
    (page,) = await camera.capture()
    assert page.data.startswith(b"\xff\xd8")


def test_the_largest_mjpeg_size_is_found_in_ffmpeg_listing() -> None:
    listing = (
        "[video4linux2,v4l2 @ 0x55] Compressed:       mjpeg :          Motion-JPEG : "
        "640x480 1280x720 2592x1944 1920x1080\n"
        "[video4linux2,v4l2 @ 0x55] Raw       :     yuyv422 :           YUYV 4:2:2 : "
        "640x480 3264x2448\n"
    )
    assert largest_mjpeg_size(listing) == (2592, 1944)
    assert largest_mjpeg_size("no formats") is None


@needs_sane
async def test_sane_test_backend_scans_a_batch(tmp_path: Path) -> None:
    (tmp_path / "dll.conf").write_text("test\n")
    scanner = SaneScanner(
        "test:0", resolution_dpi=75, mode="color", env={"SANE_CONFIG_DIR": str(tmp_path)}
    )
    pages = await scanner.capture(3)
    assert len(pages) == 3
    assert all(p.data.startswith(b"\xff\xd8") for p in pages)


@needs_sane
async def test_an_unknown_sane_device_says_what_failed(tmp_path: Path) -> None:
    (tmp_path / "dll.conf").write_text("test\n")
    scanner = SaneScanner("nosuch:0", env={"SANE_CONFIG_DIR": str(tmp_path)})
    with pytest.raises(ScannerUnavailable, match="scanimage failed"):
        await scanner.capture()


# -- the spool -------------------------------------------------------------------------------


def test_spool_is_sealed_chunk_by_chunk(tmp_path: Path) -> None:
    vault = Vault.from_files(tmp_path / "k.key")
    spool = Spool(tmp_path / "spool", vault)
    data = bytes(range(256)) * 70  # 17920 bytes: 5 chunks of 4096
    used = spool.write("f1", data, 4096)
    raw = spool.path("f1").read_bytes()
    assert used == len(raw) == len(data) + 5 * 28
    assert data[:64] not in raw
    from agent.features.documents import SpoolFile

    file = SpoolFile("f1", "d", 1, "image/jpeg", len(data), "", 4096, 5, used, "", 0, "spooled")
    assert b"".join(spool.chunk(file, i) for i in range(5)) == data
    assert spool.orphans({"f1"}) == []
    assert spool.orphans(set()) == [spool.path("f1")]


class FixedScanner(Scanner):
    """Pages of known bytes (logic tests of the desk without a capture tool)."""

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def endpoint(self) -> str:
        return "fixed"

    async def check(self) -> str:
        return "ready"

    async def capture(self, pages: int = 1) -> list[Any]:
        from drivers.scanner import Page

        return [Page(b"\xff\xd8" + bytes([n]) * self.size) for n in range(pages)]


async def test_capture_is_refused_when_the_spool_is_full(tmp_path: Path) -> None:
    config = camera_config(tmp_path / "state", spool_max_bytes=1024 * 1024)
    store = Store.open(tmp_path / "state")
    try:
        async with (
            Hall(config, store) as hall,
            DocumentDesk(
                hall, DeviceBoard(config), scanner_factory=lambda d: FixedScanner(600_000)
            ) as desk,
        ):
            first = await desk.capture("w1")
            assert first["pages"][0]["size"] == 600_002
            with pytest.raises(Refused, match="no room"):
                await desk.capture("w1")
            with pytest.raises(Refused, match="window w2 has no document camera"):
                await desk.capture("w2")
            state = await desk.state()
            assert state["waiting_files"] == 1
            assert len(list((tmp_path / "state" / "spool").iterdir())) == 1
    finally:
        store.close()


# -- the upload, end to end -------------------------------------------------------------------


class Central:
    """Central's file receiver on its own persistent MQTT session."""

    def __init__(self, broker: Broker, folder: Path) -> None:
        self.broker = broker
        self.receiver = FileReceiver(folder)
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    broker_host(self.broker),
                    self.broker.port,
                    identifier="central-files",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=_session(),
                ) as client:
                    await receive_files(client, self.receiver, HALL)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the broker is down: try again

    async def __aenter__(self) -> Central:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stored(self, count: int, within: float = 20.0) -> list[Path]:
        async with asyncio.timeout(within):
            while len(self.receiver.stored) < count:  # noqa: ASYNC110 - files on disk
                await asyncio.sleep(0.02)
        return self.receiver.stored


def broker_host(broker: Broker) -> str:
    return broker.host


def _session() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def captured_pages(state: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(state / DB_NAME)
    try:
        rows = conn.execute("SELECT data FROM events WHERE type = 'document.captured'").fetchall()
    finally:
        conn.close()
    return [p for (data,) in rows for p in json.loads(data)["pages"]]


@contextlib.asynccontextmanager
async def agent(config: HallAgentConfig) -> AsyncIterator[Running]:
    async with running_agent(config) as running:
        assert running.documents is not None
        yield running


async def test_a_document_reaches_central_across_an_outage_and_a_restart(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = camera_config(state, broker.url, upload_rate=20)
    async with Central(broker, tmp_path / "central") as central:
        # 1. Captured while the broker is down: spooled, sent once it is back.
        broker.stop()
        async with agent(config) as running:
            documents = running.documents
            assert documents is not None
            first = await documents.capture("w1", 2)
            assert len(first["pages"]) == 2
            assert (await documents.state())["waiting_files"] == 2
            broker.start()
            await central.stored(2)
            await _until(lambda: documents.delivered == 2)
        # 2. Cut off in the middle of a file, then restarted: it resumes where it was.
        async with agent(config) as running:
            documents = running.documents
            assert documents is not None
            await _until(running.link.connected.is_set)
            second = await documents.capture("w1", 1)
            chunks = second["pages"][0]["size"] // 4096 + 1
            assert chunks > 20
            # Progress is saved once a second: by chunk 26 at this rate (5 at once, 20/s).
            await _until(lambda: documents.uploaded_chunks >= 28)
            broker.stop()  # the link drops mid-file, then the agent stops too
        broker.start()
        async with agent(config) as running:
            documents = running.documents
            assert documents is not None
            stored = await central.stored(3)
            await _until(lambda: documents.delivered == 1)
            assert documents.uploaded_chunks < chunks  # resumed, not sent again from 0
            assert (await documents.state())["waiting_files"] == 0
    pages = captured_pages(state)
    assert len(pages) == 3
    by_file = {path.name.removesuffix(".jpg"): path for path in stored}
    assert sorted(by_file) == sorted(p["file"] for p in pages)
    for page in pages:
        path = by_file[page["file"]]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == page["sha256"]
        assert path.read_bytes().startswith(b"\xff\xd8")
    assert list((state / "spool").iterdir()) == []  # delivered: the hall's copies are gone


async def test_central_asks_again_for_what_it_lacks(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = camera_config(state, broker.url)
    async with agent(config) as running:
        documents = running.documents
        assert documents is not None
        await _until(running.link.connected.is_set)
        seen: list[c.FileChunk] = []
        async with aiomqtt.Client(broker.host, broker.port, identifier="central-test") as client:
            await client.subscribe(f"hall/v1/{HALL}/file/+/#", qos=1)
            result = await documents.capture("w1")
            file_id = result["pages"][0]["file"]
            total = result["pages"][0]["chunks"]
            async for message in client.messages:
                payload = bytes(message.payload)  # type: ignore[arg-type]
                if str(message.topic).endswith("/chunk"):
                    seen.append(c.FileChunk.model_validate_json(payload))
                    continue
                complete = c.FileComplete.model_validate_json(payload)
                if len(seen) == total:  # first round: claim two chunks were lost
                    ack = c.FileAck(file=file_id, status="missing", missing=[(1, 2)])
                    await client.publish(f"hall/v1/{HALL}/file-ack", ack.model_dump_json(), qos=1)
                    continue
                assert [ch.index for ch in seen[total:]] == [1, 2]
                data = b"".join(base64.b64decode(ch.data) for ch in seen[:total])
                assert hashlib.sha256(data).hexdigest() == complete.sha256
                done = c.FileAck(file=file_id, status="complete")
                await client.publish(f"hall/v1/{HALL}/file-ack", done.model_dump_json(), qos=1)
                break
        await _until(lambda: documents.delivered == 1)


async def test_capture_document_command_from_central(broker: Broker, tmp_path: Path) -> None:
    config = camera_config(tmp_path / "state", broker.url)
    async with agent(config) as running:
        await _until(running.link.connected.is_set)
        async with aiomqtt.Client(broker.host, broker.port, identifier="central-cmd") as client:
            await client.subscribe(f"hall/v1/{HALL}/reply", qos=1)
            command = {"cmd_id": "cap-1", "window": "w1", "pages": 1}
            await client.publish(f"hall/v1/{HALL}/cmd/capture_document", json.dumps(command), qos=1)
            async for message in client.messages:
                reply = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                break
        assert reply["status"] == "ok", reply
        assert reply["result"]["document"].endswith(reply["result"]["document"][-8:])
        assert len(reply["result"]["pages"]) == 1
        device = running.hall.config.device("cam-w1")
        assert isinstance(device, CameraDevice)


async def _until(check: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - state of the running agent
            await asyncio.sleep(0.02)


async def test_hallctl_files_receives_a_capture(broker: Broker, tmp_path: Path) -> None:
    from hallctl import cli as hallctl

    out = tmp_path / "received"
    receiving = asyncio.create_task(
        hallctl.run(["--broker", broker.url, "files", "--out", str(out), "--hall", HALL])
    )
    try:
        async with agent(camera_config(tmp_path / "state", broker.url)) as running:
            documents = running.documents
            assert documents is not None
            await _until(running.link.connected.is_set)
            result = await documents.capture("w1")
            await _until(lambda: documents.delivered == 1)
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
    (page,) = result["pages"]
    stored = out / HALL / f"{page['file']}.jpg"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == page["sha256"]
    meta = json.loads(stored.with_name(stored.name + ".json").read_text())
    assert meta["document"] == result["document"]


async def test_a_camera_unplugged_and_plugged_back_shows_in_its_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.features.documents

    monkeypatch.setattr(agent.features.documents, "DEVICE_CHECK_S", 0.01)
    node = tmp_path / "video0"
    node.touch()
    data = hall_config(
        tmp_path / "state",
        devices=[{"id": "cam", "kind": "camera", "transport": {"path": str(node)}}],
        personal_data={"key_file": str(tmp_path / "k.key")},
    )
    data["windows"][0]["devices"] = ["cam"]
    config = validate_config(data)
    board = DeviceBoard(config)
    store = Store.open(tmp_path / "state")
    try:
        async with Hall(config, store) as hall, DocumentDesk(hall, board):
            assert board.get("cam").status == "ok"
            node.unlink()
            await _until(lambda: board.get("cam").status == "offline", 5)
            assert "unplugged" in board.get("cam").detail
            node.touch()
            await _until(lambda: board.get("cam").status == "ok", 5)
    finally:
        store.close()
