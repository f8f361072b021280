"""The ticket's layout and its configuration (no printer needed)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from support import hall_config

from agent.config import ConfigError, HallAgentConfig, PrinterDevice, validate_config
from agent.core.model import Priority
from agent.features.printing import TicketFacts, printer_target, ticket_document
from drivers.printer import FileTarget, UsbTarget
from drivers.transport import SerialTarget, TcpTarget
from protocols.escpos import encode_gb18030
from protocols.escpos_commands import read_tickets
from protocols.escpos_model import Paper, QrCode, TextLine


def config_with(tmp_path: Path, ticket: dict[str, Any], **printer: Any) -> HallAgentConfig:
    device = {
        "id": "kiosk-printer",
        "kind": "printer",
        "transport": {"type": "network", "host": "127.0.0.1", "port": 9100},
        **printer,
    }
    return HallAgentConfig.model_validate(
        hall_config(tmp_path / "state", devices=[device], ticket=ticket)
    )


FACTS = TicketFacts(
    ticket_id="20260302-A012",
    number="A012",
    service="social",
    day="2026-03-02",
    priority=Priority.NORMAL,
    issued_at=dt.datetime(2026, 3, 2, 1, 30, tzinfo=dt.UTC),
    ahead=3,
    wait_minutes=15,
)


def lines(doc) -> list[tuple[str, int]]:
    return [(b.text, b.scale) for b in doc.blocks if isinstance(b, TextLine)]


def test_standard_layout(tmp_path):
    config = config_with(tmp_path, {"qr_url": "https://q.example.cn/{hall}/{day}/{ticket}"})
    printer = config.devices[0]
    assert isinstance(printer, PrinterDevice)
    doc = ticket_document(config, printer, FACTS)
    assert lines(doc) == [
        ("测试社区服务站", 1),
        ("社保医保", 2),
        ("A012", 6),
        ("请到 1号窗口、3号窗口 办理", 1),
        ("您前面还有 3 人", 1),
        ("预计等待约 15 分钟", 1),
        ("取号时间 2026-03-02 09:30", 1),  # in the hall's zone
        ("扫码查看", 1),
        ("过号请重新取号", 1),
    ]
    (qr,) = [b for b in doc.blocks if isinstance(b, QrCode)]
    assert qr.payload == "https://q.example.cn/test-hall/2026-03-02/A012"


def test_large_layout_on_58_mm_with_green_channel_and_reprint(tmp_path):
    config = config_with(
        tmp_path, {"large": True, "show_wait": False, "footer": []}, paper_width_mm=58
    )
    printer = config.devices[0]
    assert isinstance(printer, PrinterDevice)
    facts = dataclasses.replace(FACTS, priority=Priority.ELDERLY, issued_at=None)
    doc = ticket_document(config, printer, facts, reprint=True)
    assert lines(doc) == [
        ("【补打 REPRINT】", 1),
        ("测试社区服务站", 2),
        ("社保医保", 2),
        ("A012", 5),
        ("绿色通道 · 老年人", 2),
        ("请到 1号窗口、3号窗口 办理", 2),
    ]
    # The number still fits on one line of the narrow roll.
    (ticket,) = read_tickets(encode_gb18030(doc, Paper.for_width(58)))
    assert "A012" in ticket.lines()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://q.example.cn/{hal}", "unknown placeholder(s) hal"),
        ("https://q.example.cn/{ticket", "malformed"),
        ("q.example.cn/{ticket}", "no scheme"),
    ],
)
def test_bad_qr_templates_are_refused_with_a_fix(tmp_path, template, message):
    data = hall_config(tmp_path / "state", ticket={"qr_url": template})
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    (problem,) = caught.value.problems
    assert problem.path == "ticket.qr_url"
    assert message in problem.message
    assert "{ticket_id}" in problem.hint or "https://" in problem.hint


def test_transports_map_to_driver_targets(tmp_path):
    kinds = {
        "network": ({"type": "network", "host": "10.0.0.5", "port": 9100}, TcpTarget),
        "serial": ({"type": "serial", "port": "/dev/ttyUSB0", "baudrate": 19200}, SerialTarget),
        "usb": ({"type": "usb", "vendor_id": "0416", "product_id": "5011"}, UsbTarget),
        "file": ({"type": "file", "path": "/dev/usb/lp0"}, FileTarget),
    }
    for transport, target_type in kinds.values():
        config = config_with(tmp_path, {}, transport=transport)
        printer = config.devices[0]
        assert isinstance(printer, PrinterDevice)
        assert isinstance(printer_target(printer), target_type)
    usb = config_with(tmp_path, {}, transport=kinds["usb"][0]).devices[0]
    assert isinstance(usb, PrinterDevice)
    assert printer_target(usb) == UsbTarget(0x0416, 0x5011, None)
