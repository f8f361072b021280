"""Ticket printing end to end: the agent, the printer driver and the virtual printer on TCP
(and a pty), speaking real ESC/POS. No sleeps: every wait is for a condition, with a limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import as_ops, hall_config

from agent.central import contract as c
from agent.config import HallAgentConfig
from agent.daemon import Running, running_agent
from agent.demo.emulators.printer import VirtualPrinter
from agent.features import printing
from agent.runtime.devices import DeviceHealth
from agent.runtime.store import Store
from drivers.printer import (
    FileTarget,
    Printer,
    PrinterHealth,
    PrinterUnavailable,
    PrintJob,
    PrintQueue,
    UsbTarget,
    open_printer,
)
from drivers.transport import SerialTarget, TcpTarget
from protocols.escpos import encode_gb18030
from protocols.escpos_model import Bitmap, Paper, QrCode, TextLine, document
from protocols.escpos_raster import CJK_FONT
from protocols.escpos_status import PrinterStatus

API = "/api/v1"
ARTIFACTS = Path(__file__).parent / "artifacts"
RARE_NAME = "𠮷䶮"
QR_TEMPLATE = "https://hall.example.gov.cn/q/{hall}/{ticket_id}?t={ticket}"

needs_font = pytest.mark.skipif(
    not Path(CJK_FONT).exists(), reason="fonts-wqy-microhei is not installed (scripts/setup)"
)


def printer_config(storage: Path, port: int, **printer: Any) -> HallAgentConfig:
    device = {
        "id": "kiosk-printer",
        "kind": "printer",
        "transport": {"type": "network", "host": "127.0.0.1", "port": port, "timeout_s": 2},
        "font_charset": "gb18030",
        "poll_interval_s": 0.5,
        **printer,
    }
    data = hall_config(
        storage,
        devices=[device],
        ticket={"qr_url": QR_TEMPLATE, "footer": ["过号请重新取号", "请留意叫号，谢谢！"]},
    )
    data["hall"]["name"] = f"测试社区服务站（{RARE_NAME}）"
    return HallAgentConfig.model_validate(data)


@contextlib.asynccontextmanager
async def hall_with_printer(
    tmp_path: Path, **printer: Any
) -> AsyncIterator[tuple[Running, VirtualPrinter, httpx.AsyncClient]]:
    async with VirtualPrinter(tmp_path / "printed") as vp:
        port = await vp.start_tcp(port=0)
        config = printer_config(tmp_path / "state", port, **printer)
        async with (
            running_agent(config) as running,
            httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=20) as client,
        ):
            yield running, vp, client


async def take(client: httpx.AsyncClient, service: str = "social", source: str = "touch") -> Any:
    return await client.post(f"{API}/tickets", json={"service": service, "source": source})


async def device_state(
    running: Running, wanted: Callable[[DeviceHealth], bool], within: float
) -> DeviceHealth:
    """Wait for the printer's state on the device board to satisfy ``wanted``."""
    changes = running.devices.watch()
    try:
        current = running.devices.get("kiosk-printer")
        async with asyncio.timeout(within):
            while not wanted(current):
                current = await changes.get()
                if current.device_id != "kiosk-printer":
                    current = running.devices.get("kiosk-printer")
        return current
    finally:
        running.devices.unwatch(changes)


async def events_of(client: httpx.AsyncClient, kind: str) -> list[dict[str, Any]]:
    r = await client.get(f"{API}/events", params={"limit": 1000})
    return [e for e in r.json() if e["type"] == kind]


# -- the driver against the virtual printer ------------------------------------------------


@pytest.mark.parametrize("transport", ["network", "serial"])
async def test_chinese_text_and_qr_payload_survive_driver_to_virtual_printer(tmp_path, transport):
    lines = [
        "演示社区党群服务中心",
        f"姓名：{RARE_NAME}（生僻字）",
        "，。！？、：；（）【】《》",
        "A012",
    ]
    payload = "https://hall.example.gov.cn/q/demo-hall/20260302-A012?窗口=３号&名=𠮷"
    doc = document([*(TextLine(t) for t in lines), QrCode(payload)])
    data = encode_gb18030(doc, Paper.for_width(80), font_charset="gb18030")
    async with VirtualPrinter(tmp_path / "printed") as vp:
        if transport == "network":
            target: Any = TcpTarget("127.0.0.1", await vp.start_tcp(port=0), 2.0)
        else:
            target = SerialTarget(vp.open_pty(), baudrate=115200)
        async with PrintQueue(open_printer(target)) as queue:
            assert queue.health.can_print, queue.health.reason()
            result = await queue.submit(PrintJob("t1", "A012", data))
            assert result.printed, result.reason
        (received,) = await vp.wait_for_tickets(1, within=10)
    assert received.lines == lines
    assert received.qr_payloads == [payload]
    assert vp.unknown_commands == 0
    assert vp.status_queries >= 6  # asked before and after the job


async def test_file_transport_prints_blind(tmp_path):
    device = tmp_path / "lp0"
    device.touch()
    printer = open_printer(FileTarget(device))
    assert not printer.reads_status
    async with PrintQueue(printer) as queue:
        assert queue.health.connected
        assert queue.health.status is None
        assert "cannot be read" in queue.health.detail
        result = await queue.submit(PrintJob("t", "A001", b"\x1b@AB\n\x1dV\x00"))
    assert result.printed
    assert device.read_bytes() == b"\x1b@AB\n\x1dV\x00"


@pytest.mark.parametrize(
    ("target", "said"),
    [
        (UsbTarget(0xFFFF, 0xFFFE), "cannot open USB printer ffff:fffe: "),
        (
            FileTarget(Path("/nonexistent/lp0")),
            "cannot open printer device file /nonexistent/lp0: ",
        ),
        (SerialTarget("/nonexistent/ttyUSB9"), "cannot open serial printer /nonexistent/ttyUSB9: "),
    ],
)
async def test_an_absent_printer_is_unavailable_with_where_it_was_looked_for(target, said):
    printer = open_printer(target)
    try:
        with pytest.raises(PrinterUnavailable) as caught:
            await printer.send(b"\x1b@")
    finally:
        await printer.close()
    assert str(caught.value).startswith(said), str(caught.value)


class ScriptedPrinter(Printer):
    """An in-memory printer whose answers a test scripts (for the queue's logic only)."""

    def __init__(self, answers: list[PrinterStatus | Exception]) -> None:
        self.answers = answers
        self.sent: list[bytes] = []

    @property
    def endpoint(self) -> str:
        return "scripted printer"

    async def status(self) -> PrinterStatus | None:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        pass


async def test_queue_retries_a_lost_connection_and_reports_health_changes():
    ok = PrinterStatus()
    lost = PrinterUnavailable("connection refused")
    # __aenter__ check, then: job try 1 (lost), try 2 (ok before, ok after)
    printer = ScriptedPrinter([ok, lost, ok, ok, ok])
    seen: list[PrinterHealth] = []
    async with PrintQueue(
        printer, poll_interval_s=60, retry_delay_s=0.01, on_health=seen.append
    ) as queue:
        result = await queue.submit(PrintJob("t", "A001", b"x"))
    assert result.printed
    assert result.attempts == 2
    assert printer.sent == [b"x"]
    assert [h.connected for h in seen] == [True, False, True]


async def test_queue_fails_at_once_when_the_printer_cannot_print():
    printer = ScriptedPrinter([PrinterStatus(paper_out=True, offline=True)])
    async with PrintQueue(printer, poll_interval_s=60, retry_delay_s=0.01) as queue:
        result = await queue.submit(PrintJob("t", "A001", b"x"))
    assert not result.printed
    assert result.attempts == 1
    assert "out of paper" in result.reason
    assert printer.sent == []


# -- the agent ------------------------------------------------------------------------------


async def test_a_kiosk_ticket_is_saved_then_printed(tmp_path):
    async with hall_with_printer(tmp_path) as (_running, vp, client):
        r = await take(client)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["result"]["print"] == {"state": "printed"}
        assert body["events"][0]["type"] == "ticket.issued"
        (printed,) = await vp.wait_for_tickets(1, within=10)
        ticket = body["result"]["ticket"]
        assert printed.number == ticket["number"] == "A001"
        assert printed.lines[0] == f"测试社区服务站（{RARE_NAME}）"
        assert "社保医保" in printed.lines
        assert "即将叫号，请留意叫号屏" in printed.lines  # no one ahead: said, not left out
        assert printed.lines[-2:] == ["过号请重新取号", "请留意叫号，谢谢！"]
        assert printed.qr_payloads == [
            f"https://hall.example.gov.cn/q/test-hall/{ticket['id']}?t=A001"
        ]
        state = (await client.get(f"{API}/issuing")).json()
        assert state["issuing"] == {"enabled": True, "reason": None, "citizen": None}
        assert state["printer"]["printed"] == 1
        status = (await client.get(f"{API}/status")).json()
        assert status["printing"]["printer"]["status"] == "ok"


async def test_paper_out_disables_kiosk_issuing_until_paper_is_loaded(tmp_path):
    poll = 0.5
    async with hall_with_printer(tmp_path, poll_interval_s=poll) as (running, vp, client):
        assert (await take(client)).status_code == 201
        await vp.wait_for_tickets(1, within=10)

        asked_before = vp.status_queries
        vp.set_state(paper_out=True)
        health = await device_state(running, lambda h: h.status == "error", within=30)
        # Noticed by the next poll (counted in questions asked, not in seconds: a loaded
        # machine is slow, never wrong): a poll asks at most 4 questions, and the poll under
        # way when the paper ran out may have been answered before it did.
        asked = vp.status_queries - asked_before
        assert asked <= 2 * 4, f"the printer was asked {asked} status questions before it counted"
        assert "out of paper" in health.detail

        state = (await client.get(f"{API}/issuing")).json()
        assert state["issuing"]["enabled"] is False
        assert "out of paper" in state["issuing"]["reason"]
        refused = await take(client)
        assert refused.status_code == 409
        assert refused.json()["error"] == "printer_unavailable"
        assert "out of paper" in refused.json()["message"]
        assert refused.json()["citizen_message"] == "取号机暂时无法打印，请到引导台取号"
        # A ticket central issues is not printed, so it is still issued.
        remote = await take(client, source="central")
        assert remote.status_code == 201
        assert "print" not in remote.json()["result"]
        # The device state is in the outbox for central.
        changed = await events_of(client, "device.changed")
        assert any(
            e["data"]["device"] == "kiosk-printer" and e["data"]["status"] == "error"
            for e in changed
        )

        vp.set_state(paper_out=False)
        await device_state(running, lambda h: h.status == "ok", within=poll + 2)
        again = await take(client)
        assert again.status_code == 201
        assert again.json()["result"]["print"] == {"state": "printed"}
        printed = await vp.wait_for_tickets(2, within=10)
        assert printed[1].number == again.json()["result"]["ticket"]["number"]
        changed = await events_of(client, "device.changed")
        assert changed[-1]["data"]["status"] == "ok"
        # In the hall's offset, like every other event (the device board's clock is UTC).
        assert {e["at"][-6:] for e in changed} == {"+08:00"}


async def test_paper_near_end_is_a_warning_and_issuing_goes_on(tmp_path):
    async with hall_with_printer(tmp_path, poll_interval_s=0.3) as (running, vp, client):
        vp.set_state(paper_near_end=True)
        health = await device_state(running, lambda h: h.status == "degraded", within=3)
        assert "nearly used up" in health.detail
        r = await take(client)
        assert r.status_code == 201
        assert r.json()["result"]["print"]["state"] == "printed"


async def test_printer_restarted_recovers_and_tickets_issued_meanwhile_are_reprinted(tmp_path):
    # A long poll interval: the kiosk learns that the printer is gone from the print itself.
    async with hall_with_printer(tmp_path, poll_interval_s=30) as (running, vp, client):
        port = vp_port(running)
        assert (await take(client)).status_code == 201
        await vp.wait_for_tickets(1, within=10)

        await vp.stop_tcp()
        lost = await take(client)
        assert lost.status_code == 201  # saved first: the ticket exists
        lost_result = lost.json()["result"]
        assert lost_result["print"]["state"] == "failed"
        assert "cannot be reached" in lost_result["print"]["reason"]
        failed = await events_of(client, "ticket.print_failed")
        assert [e["data"]["ticket"] for e in failed] == [lost_result["ticket"]["number"]]
        assert running.devices.get("kiosk-printer").status == "offline"
        refused = await take(client)
        assert refused.status_code == 409
        remote = (await take(client, source="central")).json()["result"]["ticket"]["number"]
        denied = await client.post(f"{API}/tickets/{remote}/reprint")
        assert denied.status_code == 409
        assert "cannot be reached" in denied.json()["message"]

        await vp.start_tcp(port=port)
        numbers = [lost_result["ticket"]["number"], remote]
        r = await client.post(f"{API}/tickets/{numbers[0]}/reprint")
        assert r.status_code == 200, r.text
        assert r.json()["events"][0]["type"] == "ticket.reprinted"
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.cli",
            "reprint",
            numbers[1],
            "--api",
            running.url,
            "--token-file",
            str(running.hall.config.storage.path / "ops-token"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("HALL_")},
        )
        out, err = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 0, err.decode()
        assert out.decode().strip() == f"{numbers[1]}  reprinted"
        reprinted = (await vp.wait_for_tickets(3, within=10))[1:]
        assert [t.number for t in reprinted] == numbers
        assert all(t.lines[0] == "【补打 REPRINT】" for t in reprinted)
        assert running.devices.get("kiosk-printer").status == "ok"
        # New tickets print again without an agent restart.
        assert (await take(client)).json()["result"]["print"] == {"state": "printed"}
        await vp.wait_for_tickets(4, within=10)


def vp_port(running: Running) -> int:
    (device,) = running.hall.config.devices
    port: int = device.transport.port  # type: ignore[union-attr]
    return port


async def test_central_reprint_command_and_refusals(tmp_path):
    async with hall_with_printer(tmp_path) as (running, vp, client):
        number = (await take(client)).json()["result"]["ticket"]["number"]
        handler = running.link.commands.handlers.reprint
        assert handler is not None
        result = await handler(c.Reprint(cmd_id="c-1", number=number))
        assert result["ticket"] == number
        assert result["printed"] is True
        (_, again) = await vp.wait_for_tickets(2, within=10)
        assert again.number == number
        missing = await client.post(f"{API}/tickets/Z999/reprint")
        assert missing.status_code == 404
        yesterday = await client.post(f"{API}/tickets/{number}/reprint", json={"day": "2020-01-01"})
        assert yesterday.status_code == 409
        assert "only today's tickets" in yesterday.json()["message"]


async def test_reprint_without_a_printer_is_refused(tmp_path):
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=10) as client,
    ):
        number = (await take(client)).json()["result"]["ticket"]["number"]
        r = await client.post(f"{API}/tickets/{number}/reprint")
        assert r.status_code == 409
        assert "no ticket printer" in r.json()["message"]
        state = (await client.get(f"{API}/issuing")).json()
        assert state == {
            "issuing": {"enabled": True, "reason": None, "citizen": None},
            "printer": None,
        }


@needs_font
async def test_raster_mode_prints_a_legible_ticket_image(tmp_path):
    async with hall_with_printer(tmp_path, profile="raster") as (_running, vp, client):
        r = await take(client, service="civil")
        assert r.json()["result"]["print"] == {"state": "printed"}
        (printed,) = await vp.wait_for_tickets(1, within=10)
        await vp.rendered()
    # No text went as characters: the whole ticket is an image.
    assert printed.lines == []
    images = [b for b in printed.ticket.blocks if isinstance(b, Bitmap)]
    assert images
    assert all(i.width == 576 for i in images)
    assert printed.png is not None
    assert printed.png.exists()
    from PIL import Image

    with Image.open(printed.png) as png:
        assert png.width == 576
        ink = sum(png.convert("L").histogram()[:128])
        assert 0.03 < ink / (png.width * png.height) < 0.5  # text and QR, not blank or black
    # Kept for a person to look at (a reviewed copy is docs/images/raster-ticket.png).
    artifact = ARTIFACTS / "raster-ticket.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(printed.png, artifact)
    assert artifact.stat().st_size > 0


@pytest.mark.parametrize("paper", ["ok", "near_end", "out"])
@pytest.mark.parametrize("cover_open", [False, True])
@pytest.mark.parametrize("cutter_error", [False, True])
def test_virtual_printer_status_replies_read_back_as_its_state(paper, cover_open, cutter_error):
    from agent.demo.emulators.printer import PrinterState
    from protocols.escpos_status import (
        AutomaticStatus,
        RealTimeReply,
        StatusParser,
        StatusRequest,
        apply_reply,
    )

    state = PrinterState(
        paper_near_end=paper == "near_end",
        paper_out=paper == "out",
        cover_open=cover_open,
        cutter_error=cutter_error,
    )
    parser = StatusParser()
    status = PrinterStatus()
    requests = list(StatusRequest)
    for request in requests:
        parser.expect(request)
    replies = b"".join(state.reply(int(r)) for r in requests)
    for event in parser.feed(replies + state.automatic_status()):
        if isinstance(event, RealTimeReply):
            status = apply_reply(status, event)
        else:
            assert isinstance(event, AutomaticStatus)
            assert event.status().can_print == state.can_print
            assert event.status().paper_out == state.paper_out
    assert status.can_print == state.can_print
    assert status.paper_out == state.paper_out
    assert status.cover_open == cover_open
    assert status.cutter_error == cutter_error
    assert status.warnings == (("paper_near_end",) if paper == "near_end" else ())


def _rewind_print_mark(db: Path, *, day: str | None = None) -> int:
    """As if the agent had been killed before any print was concluded: the saved mark goes
    back to 0 (and, with ``day``, the tickets' events say they were issued that day)."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            (value,) = conn.execute(
                "SELECT value FROM settings WHERE key = 'printing.concluded'"
            ).fetchone()
            mark = json.loads(value)
            conn.execute(
                "UPDATE settings SET value = ? WHERE key = 'printing.concluded'",
                (json.dumps({**mark, "seq": 0}),),
            )
            if day is not None:
                conn.execute(
                    "UPDATE events SET data = json_set(data, '$.day', ?) "
                    "WHERE type = 'ticket.issued'",
                    (day,),
                )
        return int(mark["seq"])
    finally:
        conn.close()


async def failed_prints(running: Running) -> list[dict[str, Any]]:
    events = await running.hall.store_call(lambda s: s.events(1, 1000))
    return [e.data for e in events if e.type == "ticket.print_failed"]


@pytest.mark.parametrize("case", ["recent", "older", "earlier_day"])
async def test_prints_cut_off_by_a_stop_are_printed_or_recorded_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    async with hall_with_printer(tmp_path) as (running, vp, client):
        for _ in range(2):
            assert (await take(client)).status_code == 201
        await take(client, source="central")  # not printed: not owed after a stop either
        await vp.wait_for_tickets(2)
        # Every print concluded: the mark is past the last printed ticket.
        mark = await running.hall.store_call(lambda s: s.setting(printing.PRINT_MARK))
        issued = await running.hall.store_call(lambda s: s.events(1, 1000))
        last_printed = max(
            e.seq for e in issued if e.type == "ticket.issued" and e.data["source"] == "touch"
        )
        assert mark["seq"] >= last_printed
        assert mark["device"] == "kiosk-printer"

    day = "2020-01-01" if case == "earlier_day" else None
    _rewind_print_mark(tmp_path / "state" / "hall.db", day=day)
    marks: list[tuple[str, int]] = []  # (ticket, the mark saved with its print_failed)
    if case == "older":
        monkeypatch.setattr(printing, "RESUME_WITHIN_S", -1.0)  # every ticket counts as old
        append = printing._append

        def watched(event: Any, *args: Any, settings: Any = None) -> Any:
            if settings is not None:
                marks.append((event.data["ticket"], settings[printing.PRINT_MARK]["seq"]))
            return append(event, *args, settings=settings)

        monkeypatch.setattr(printing, "_append", watched)
    async with hall_with_printer(tmp_path) as (running, vp, client):
        if case == "recent":
            tickets = await vp.wait_for_tickets(2)
            assert [t.number for t in tickets] == ["A001", "A002"]
        else:
            # A ticket taken now prints; the cut-off ones were dealt with before it.
            assert (await take(client)).status_code == 201
            tickets = await vp.wait_for_tickets(1)
            assert [t.number for t in tickets] == ["A004"]
        failed = await failed_prints(running)
        if case == "older":
            assert [(f["ticket"], f["attempts"]) for f in failed] == [("A001", 0), ("A002", 0)]
            assert all("the agent stopped before" in f["reason"] for f in failed)
            # Concluding A001 did not move the mark past A002, still owed at that moment:
            # a stop between the two would not have lost A002.
            a002 = next(
                e.seq for e in issued if e.type == "ticket.issued" and e.data["ticket"] == "A002"
            )
            assert marks[0][0] == "A001"
            assert marks[0][1] < a002
        else:
            assert failed == []

        def concluded(store: Store) -> bool:
            saved = store.setting(printing.PRINT_MARK)
            issued = [e.seq for e in store.events(1, 1000) if e.type == "ticket.issued"]
            return bool(saved["seq"] >= max(issued))

        await wait_until(lambda: running.hall.store_call(concluded), "every print concluded")


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)
