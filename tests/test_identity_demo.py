"""The demo's ID card readers and camera: a card swiped at the kiosk and at window 1, and a
document captured, through the real agent on the demo config (readers on free ports)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from agent.config import IdReaderDevice, NetworkTransport, PrinterDevice
from agent.daemon import running_agent
from agent.demo import identity as identity_demo
from agent.demo.simulated_hall import demo_config

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_demo_swipes_cards_and_captures_a_document(tmp_path: Path) -> None:
    config = demo_config(tmp_path / "state", 0)
    devices = []
    for device in config.devices:
        if isinstance(device, IdReaderDevice):
            transport = NetworkTransport(host="127.0.0.1", port=free_port())
            devices.append(device.model_copy(update={"transport": transport}))
        elif not isinstance(device, PrinterDevice):  # no virtual printer here: not printed
            devices.append(device)
    config = config.model_copy(update={"devices": devices})
    assert config.personal_data.key_file == tmp_path / "state" / "personal-data.key"
    async with (
        identity_demo.virtual_id_readers(config) as readers,
        running_agent(config) as running,
    ):
        assert set(readers) == {"idreader-kiosk", "idreader-w1"}
        said = await identity_demo.swipe(running, readers, "kiosk", "resident-elderly", "social")
        assert said == "idreader-kiosk: ticket: ticket A001 (社保医保)"
        said = await identity_demo.swipe(running, readers, "w1", "hk-resident")
        assert said.startswith("idreader-w1: identity")
        assert running.documents is not None
        captured = await running.documents.capture("w1", 1)
        events = await running.hall.store_call(lambda s: list(s.iter_events()))
    kinds = [e.type for e in events]
    assert "identity.read" in kinds
    assert "document.captured" in kinds
    issued = next(e for e in events if e.type == "ticket.issued")
    assert issued.data["priority"] == "elderly"
    assert issued.data["source"] == "id_card"
    document = next(e for e in events if e.type == "document.captured")
    assert document.data["document"] == captured["document"]
    assert document.data["window"] == "w1"
    text = json.dumps([e.data for e in events], ensure_ascii=False)
    assert "李秀英" not in text
    assert "陈大文" not in text
