"""ID cards and documents: codec throughput, card read latency over a pty, card → ticket,
document capture, the sealed spool, and the chunked upload to central over mosquitto.

Series:

- ``parser``: GA/T 467 read answers (1295 bytes each) through ``FrameParser`` whole and one
  byte at a time, then the text block decoded; frames per second.
- ``read over pty``: select + read text/photo + additional address by the driver against
  the virtual reader on a real pty (no baud limit on a pty: a real 115200 8N1 line adds
  ~113 ms of wire time for the 1295-byte answer).
- ``placed → presented``: a card placed on the virtual reader until the watcher reports it,
  at the default poll interval (0.3 s).
- ``placed → ticket committed``: the kiosk flow through the hall's single writer and SQLite.
- ``capture``: one 2592×1944 page from the camera stand-in (ffmpeg test pattern).
- ``spool``: sealing a 2 MB page chunk by chunk and fsyncing it.
- ``upload``: a 2 MB page from the spool to a central receiver (mosquitto on localhost,
  QoS 1, 48 KiB chunks, base64 in JSON) until central's ``complete`` came back; against a
  baseline of the same number of raw 64 KiB QoS 1 publishes on the same broker.
- ``slow link``: the same page through a proxy adding a 200 ms round trip (a 4G or
  satellite hall), with one chunk in flight (the baseline: one round trip per chunk)
  against the default window of ``documents.upload_inflight`` chunks.
"""

# ruff: noqa: ASYNC110 - waits on the agent's counters, which have no event

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from _common import median, percentile, print_table, write_results
from _slowlink import slow_link

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from broker import Broker  # type: ignore[import-not-found]  # noqa: E402

from agent.config import DocumentsConfig, validate_config  # noqa: E402
from agent.daemon import running_agent  # noqa: E402
from agent.demo.emulators.idreader import FIXTURE_CARDS, VirtualIdReader  # noqa: E402
from agent.features.documents import Spool  # noqa: E402
from agent.runtime.personal import Vault  # noqa: E402
from drivers.idreader import (  # noqa: E402
    CardPresented,
    Gat467Client,
    Gat467Watcher,
    PollSettings,
)
from drivers.scanner import FfmpegCamera, Page, Scanner, TestPatternSource  # noqa: E402
from drivers.transport import SerialTarget, open_line  # noqa: E402
from hallctl.files import FileReceiver, receive_files  # noqa: E402
from protocols.gat467 import (  # noqa: E402
    FrameParser,
    Response,
    Status,
    decode_card_data,
    encode_card_data,
    encode_response,
)
from protocols.idcard import decode_text  # noqa: E402

NAME = "identity_documents"


def parser_series(count: int) -> dict[str, Any]:
    card = FIXTURE_CARDS["resident"]
    frame = encode_response(Status.SUCCESS, encode_card_data(card.data(fingerprint=False)))
    stream = frame * count
    started = time.perf_counter()
    got = FrameParser().feed(stream)
    whole = time.perf_counter() - started
    assert len(got) == count
    parser = FrameParser()
    started = time.perf_counter()
    n = 0
    for i in range(min(len(stream), 200 * len(frame))):
        n += len(parser.feed(stream[i : i + 1]))
    bytewise = time.perf_counter() - started
    started = time.perf_counter()
    for answer in got:
        assert isinstance(answer, Response)
        decode_text(decode_card_data(answer.data, with_fingerprint=False).text)
    decode = time.perf_counter() - started
    return {
        "frames_per_s_whole": round(count / whole),
        "mb_per_s_whole": round(len(stream) / whole / 1e6, 1),
        "frames_per_s_byte_at_a_time": round(n / bytewise),
        "cards_decoded_per_s": round(count / decode),
    }


async def read_series(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        async with VirtualIdReader() as reader:
            path = reader.plug(Path(folder) / "ttyIDR")
            reader.place("resident-elderly")
            client = Gat467Client(await open_line(SerialTarget(path, 115200)), baudrate=115200)
            times = []
            for _ in range(rounds):
                assert await client.find()
                started = time.perf_counter()
                presented = await client.read(additional_address=True)
                times.append((time.perf_counter() - started) * 1000)
                assert presented.additional_address
            await client.close()
            # Placement → event at the default poll interval.
            placed = []
            settings = PollSettings(debounce_s=0.0)
            async with Gat467Watcher(SerialTarget(path, 115200), settings) as watcher:
                while not watcher.health.ok:
                    await asyncio.sleep(0.01)
                for _ in range(max(5, rounds // 10)):
                    reader.remove()
                    # A random moment of the poll cycle, as a citizen's hand would.
                    await asyncio.sleep(settings.poll_interval_s * random.uniform(2, 3))
                    while not watcher._events.empty():
                        watcher._events.get_nowait()
                    started = time.perf_counter()
                    reader.place("resident")
                    while True:
                        event = await watcher.next_event()
                        if isinstance(event, CardPresented):
                            break
                    placed.append((time.perf_counter() - started) * 1000)
    return {
        "read_p50_ms": round(median(times), 2),
        "read_p95_ms": round(percentile(times, 95), 2),
        "placed_to_presented_p50_ms": round(median(placed), 1),
        "placed_to_presented_max_ms": round(max(placed), 1),
        "wire_time_115200_ms": round(1295 * 10 / 115200 * 1000, 1),
    }


def _hall(storage: Path, kiosk_port: int, url: str | None = None) -> Any:
    always = [
        {
            "start": "00:00",
            "end": "23:59",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        }
    ]
    data: dict[str, Any] = {
        "hall": {"id": "bench-hall", "name": "基准大厅"},
        "services": [
            {
                "id": f"s{i}",
                "name": f"业务{i}",
                "prefix": chr(65 + i),
                "hours": always,
                "daily_cap": 999,
            }
            for i in range(20)
        ],
        "windows": [
            {
                "id": "w1",
                "name": "1号窗口",
                "number": 1,
                "services": [f"s{i}" for i in range(20)],
                "devices": ["cam"],
            }
        ],
        "devices": [
            {
                "id": "kiosk",
                "kind": "id_reader",
                "transport": {"type": "network", "host": "127.0.0.1", "port": kiosk_port},
                "poll_interval_s": 0.05,
            },
            {
                "id": "cam",
                "kind": "camera",
                "transport": {"type": "test_pattern"},
                "width": 2592,
                "height": 1944,
                "warmup_frames": 2,
            },
        ],
        "storage": {"path": str(storage)},
        "web": {"host": "127.0.0.1", "port": 0},
        "clock": {"trust": "system"},
        "personal_data": {"key_file": str(storage.parent / "k.key")},
        "documents": {"upload_rate": 1000},
        "logging": {"level": "WARNING"},
    }
    if url is not None:
        data["mqtt"] = {
            "url": url,
            "reconnect_spread_s": 0,
            "reconnect_max_s": 0.5,
            "stable_after_s": 0,
        }
    return validate_config(data)


async def ticket_series(rounds: int) -> dict[str, Any]:
    cards = [k for k in FIXTURE_CARDS if k != "staff"]
    times = []
    with tempfile.TemporaryDirectory() as folder:
        async with VirtualIdReader() as reader:
            port = await reader.start_tcp()
            config = _hall(Path(folder) / "state", port)
            async with running_agent(config) as running:
                desk = running.identity
                assert desk is not None
                while not all(r.health.ok for r in desk.readers.values()):
                    await asyncio.sleep(0.01)
                for i in range(rounds):
                    card, service = cards[i % len(cards)], f"s{i // len(cards)}"
                    object.__setattr__(config.device("kiosk"), "service", service)
                    before = desk.last.get("kiosk")
                    started = time.perf_counter()
                    reader.place(card)
                    await desk.wait_for(lambda b=before: desk.last.get("kiosk") is not b, 5)
                    times.append((time.perf_counter() - started) * 1000)
                    assert desk.last["kiosk"].outcome == "ticket", desk.last["kiosk"]
                    reader.remove()
                    await asyncio.sleep(random.uniform(0.15, 0.25))  # any moment of a poll
    return {
        "placed_to_ticket_p50_ms": round(median(times), 1),
        "placed_to_ticket_p95_ms": round(percentile(times, 95), 1),
        "poll_interval_ms": 50,
    }


async def capture_series(rounds: int) -> dict[str, Any]:
    camera = FfmpegCamera(TestPatternSource(), size=(2592, 1944), warmup_frames=2)
    times, sizes = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        (page,) = await camera.capture(1)
        times.append((time.perf_counter() - started) * 1000)
        sizes.append(len(page.data))
    return {"capture_p50_ms": round(median(times)), "page_kib": round(median(sizes) / 1024)}


class Fixed(Scanner):
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def endpoint(self) -> str:
        return "fixed"

    async def check(self) -> str:
        return "ready"

    async def capture(self, pages: int = 1) -> list[Page]:
        return [Page(self.data) for _ in range(pages)]


def spool_series(size: int, rounds: int) -> dict[str, Any]:
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(Path(folder) / "spool", Vault.from_files(Path(folder) / "k.key"))
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            spool.write(f"f{i}", data, 48 * 1024)
            times.append(time.perf_counter() - started)
    return {"spool_write_mb_per_s": round(size / median(times) / 1e6, 1)}


async def timed_uploads(
    data: bytes, rounds: int, folder: Path, broker: Broker, url: str, inflight: int | None = None
) -> tuple[list[float], list[float]]:
    """Capture and upload ``data`` ``rounds`` times through the agent to a central receiver;
    seconds from capture and from the page being spooled, each until central's ``complete``."""
    name = f"inflight-{inflight}"
    receiver = FileReceiver(folder / f"central-{name}")

    async def central() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"central-{name}") as c:
            await receive_files(c, receiver, "bench-hall")

    task = asyncio.create_task(central())
    config = _hall(folder / f"state-{name}", 9, url)
    update: dict[str, Any] = {"devices": [d for d in config.devices if d.kind == "camera"]}
    if inflight is not None:
        update["documents"] = config.documents.model_copy(update={"upload_inflight": inflight})
    config = config.model_copy(update=update)
    times, after_capture = [], []
    try:
        async with running_agent(config) as running:
            docs = running.documents
            assert docs is not None
            docs.scanners["cam"] = Fixed(data)
            while not running.link.connected.is_set():
                await asyncio.sleep(0.01)
            for i in range(rounds):
                started = time.perf_counter()
                await docs.capture("w1")
                spooled = time.perf_counter()
                while docs.delivered < i + 1:
                    await asyncio.sleep(0.002)
                times.append(time.perf_counter() - started)
                after_capture.append(time.perf_counter() - spooled)
        assert (
            hashlib.sha256(receiver.stored[0].read_bytes()).digest()
            == hashlib.sha256(data).digest()
        )
    finally:
        task.cancel()
    return times, after_capture


async def upload_series(size: int, rounds: int) -> dict[str, Any]:
    data = b"\xff\xd8" + os.urandom(size - 2)
    with tempfile.TemporaryDirectory() as folder:
        broker = Broker(Path(folder) / "mosquitto")
        broker.start()
        try:
            times, after_capture = await timed_uploads(
                data, rounds, Path(folder), broker, broker.url
            )
            # Baseline: the same bytes as raw QoS 1 publishes of 64 KiB, one at a time.
            chunks = -(-size // (64 * 1024))
            payload = os.urandom(64 * 1024)
            raw = []
            async with aiomqtt.Client(broker.host, broker.port, identifier="raw") as client:
                for _ in range(rounds):
                    started = time.perf_counter()
                    for _ in range(chunks):
                        await client.publish("bench/raw", payload, qos=1)
                    raw.append(time.perf_counter() - started)
        finally:
            broker.kill()
    return {
        "upload_mb_per_s": round(size / median(times) / 1e6, 2),
        "upload_seconds_p50": round(median(times), 3),
        "capture_commit_seconds_p50": round(median(times) - median(after_capture), 3),
        "chunks_to_delivered_mb_per_s": round(size / median(after_capture) / 1e6, 2),
        "raw_publish_mb_per_s": round(size / median(raw) / 1e6, 2),
        "ratio_to_raw": round(median(raw) / median(times), 2),
        "stdev_s": round(statistics.pstdev(times), 3),
    }


async def slow_link_series(size: int, round_trip_s: float, rounds: int) -> dict[str, Any]:
    data = b"\xff\xd8" + os.urandom(size - 2)
    window = DocumentsConfig().upload_inflight
    with tempfile.TemporaryDirectory() as folder:
        broker = Broker(Path(folder) / "mosquitto")
        broker.start()
        try:
            seconds = {}
            for inflight in (1, window):
                async with slow_link(broker.host, broker.port, round_trip_s) as port:
                    url = f"mqtt://127.0.0.1:{port}"
                    times, _ = await timed_uploads(
                        data, rounds, Path(folder), broker, url, inflight
                    )
                seconds[inflight] = median(times)
        finally:
            broker.kill()
    one, many = seconds[1], seconds[window]
    return {
        "round_trip_ms": round(round_trip_s * 1000),
        "one_in_flight_seconds_p50": round(one, 2),
        "window_seconds_p50": round(many, 2),
        "window_chunks": window,
        "window_mb_per_s": round(size / many / 1e6, 2),
        "speedup_over_one_in_flight": round(one / many, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"parser": parser_series(args.frames)}
    figures["read"] = await read_series(args.reads)
    figures["kiosk"] = await ticket_series(args.tickets)
    figures["capture"] = await capture_series(args.captures)
    figures["spool"] = spool_series(2 * 1024 * 1024, 5)
    figures["upload"] = await upload_series(2 * 1024 * 1024, args.uploads)
    figures["slow link"] = await slow_link_series(2 * 1024 * 1024, 0.2, 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--tickets", type=int, default=30)
    parser.add_argument("--captures", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=5)
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    rows = [[series, key, value] for series, f in figures.items() for key, value in f.items()]
    print_table(["series", "figure", "value"], rows)
    path = write_results(NAME, vars(args), figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
