"""What the printed ticket tells the citizen: where to go, the wait, the hall's phone, the
materials to bring, and a QR code a phone can read (quiet zone included), in both printer
profiles. No printer: the layout is encoded and read back as the printer would."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from qr_paper import paper_image, read_qr
from support import hall_config

from agent.config import HallAgentConfig, PrinterDevice
from agent.core.model import Priority
from agent.features.printing import TicketFacts, status_url, ticket_document
from protocols.escpos import encode_gb18030, encode_raster
from protocols.escpos_commands import read_tickets
from protocols.escpos_model import Paper, QrCode, TextLine
from protocols.escpos_raster import CJK_FONT, Typesetter

needs_font = pytest.mark.skipif(
    not Path(CJK_FONT).exists(), reason="fonts-wqy-microhei is not installed (scripts/setup)"
)

TOKEN = "kX3v9QyZ0mW4tP7bR2sL1A"
MATERIALS = ["本人有效身份证件", "社会保障卡", "近期一寸免冠照片 1 张", "户口簿（首页及本人页）"]


def config_with(
    tmp_path: Path, ticket: dict[str, Any] | None = None, **more: Any
) -> HallAgentConfig:
    data = hall_config(
        tmp_path / "state",
        devices=[
            {
                "id": "kiosk-printer",
                "kind": "printer",
                "transport": {"type": "network", "host": "127.0.0.1", "port": 9100},
                **more.pop("printer", {}),
            }
        ],
        ticket=ticket or {},
    )
    data["hall"]["phone"] = "0571-8888 1234"
    data["web"]["public_url"] = "http://192.168.10.2:8737"
    data["services"][0]["guide"] = {"summary": "社保卡申领、补换", "materials": MATERIALS}
    data.update(more)
    return HallAgentConfig.model_validate(data)


FACTS = TicketFacts(
    ticket_id="20260302-A012",
    number="A012",
    service="social",
    day="2026-03-02",
    priority=Priority.NORMAL,
    issued_at=dt.datetime(2026, 3, 2, 1, 30, tzinfo=dt.UTC),
    ahead=3,
    wait_minutes=15,
    token=TOKEN,
)


def texts(config: HallAgentConfig, facts: TicketFacts = FACTS) -> list[str]:
    printer = config.devices[0]
    assert isinstance(printer, PrinterDevice)
    doc = ticket_document(config, printer, facts)
    return [b.text for b in doc.blocks if isinstance(b, TextLine)]


def test_the_ticket_says_where_to_go_the_wait_the_phone_and_the_materials(tmp_path):
    lines = texts(config_with(tmp_path))

    assert "请到 1号窗口、3号窗口 办理" in lines  # the windows that serve 社保医保
    assert "您前面还有 3 人" in lines
    assert "预计等待约 15 分钟" in lines
    assert "咨询电话 0571-8888 1234" in lines
    start = lines.index("请备齐以下材料（一次性告知）：")
    assert lines[start + 1 : start + 5] == [f"□ {m}" for m in MATERIALS]
    assert "扫码查看排队进度" in lines


@pytest.mark.parametrize(
    ("ahead", "wait", "expected", "absent"),
    [
        (0, 0, ["即将叫号，请留意叫号屏"], "您前面还有"),
        (1, 0, ["您前面还有 1 人", "即将叫号，请留意叫号屏"], "预计等待"),
        (2, 7, ["您前面还有 2 人", "预计等待约 7 分钟"], "即将叫号"),
    ],
)
def test_no_wait_is_said_as_soon_not_left_out(tmp_path, ahead, wait, expected, absent):
    lines = texts(config_with(tmp_path), dataclasses.replace(FACTS, ahead=ahead, wait_minutes=wait))
    at = lines.index(expected[0])
    assert lines[at : at + len(expected)] == expected
    assert not any(absent in line for line in lines)


@pytest.mark.parametrize(
    ("materials", "printed", "more"),
    [("all", 4, None), ("none", 0, None), (2, 2, "另有 2 项，请扫码或到引导台查看"), (9, 4, None)],
)
def test_the_checklist_follows_ticket_materials(tmp_path, materials, printed, more):
    lines = texts(config_with(tmp_path, {"materials": materials}))
    assert [line for line in lines if line.startswith("□ ")] == [
        f"□ {m}" for m in MATERIALS[:printed]
    ]
    assert ("请备齐以下材料（一次性告知）：" in lines) is (printed > 0)
    assert (more in lines) if more else not any(line.startswith("另有") for line in lines)


def test_windows_phone_and_qr_can_be_left_out(tmp_path):
    config = config_with(tmp_path, {"show_windows": False, "status_page": False})
    printer = config.devices[0]
    assert isinstance(printer, PrinterDevice)
    doc = ticket_document(config, printer, FACTS)
    assert not any(t.startswith("请到") for t in texts(config))
    assert doc.qr_payloads() == []
    assert status_url(config, FACTS) is None
    no_token = dataclasses.replace(FACTS, token=None)
    assert status_url(config_with(tmp_path), no_token) is None  # no page to open


def test_the_qr_opens_the_status_page_or_the_district_site(tmp_path):
    assert status_url(config_with(tmp_path), FACTS) == f"http://192.168.10.2:8737/t/{TOKEN}"
    district = config_with(tmp_path, {"qr_url": "https://zwfw.example.gov.cn/q/{hall}/{token}"})
    assert status_url(district, FACTS) == f"https://zwfw.example.gov.cn/q/test-hall/{TOKEN}"
    # A district link that needs the token is not printed without one.
    assert status_url(district, dataclasses.replace(FACTS, token=None)) is None


@needs_font
@pytest.mark.parametrize("width", [80, 58])
@pytest.mark.parametrize("profile", ["gb18030", "raster"])
def test_the_printed_qr_decodes_to_the_status_page_with_a_quiet_zone(tmp_path, profile, width):
    config = config_with(tmp_path, printer={"profile": profile, "paper_width_mm": width})
    printer = config.devices[0]
    assert isinstance(printer, PrinterDevice)
    paper = Paper.for_width(width)
    doc = ticket_document(config, printer, FACTS)
    if profile == "raster":
        typesetter = Typesetter(Path(CJK_FONT).read_bytes(), paper.width_dots)
        data = encode_raster(doc, paper, typesetter)
    else:
        data = encode_gb18030(doc, paper)
    (ticket,) = read_tickets(data)
    if profile == "gb18030":  # the printer draws it itself (GS ( k)
        (native,) = [b for b in ticket.blocks if isinstance(b, QrCode)]
        assert native.payload == f"http://192.168.10.2:8737/t/{TOKEN}"

    found = read_qr(paper_image(ticket, paper))

    assert found.text == f"http://192.168.10.2:8737/t/{TOKEN}"
    assert found.module == (6 if width == 80 else 4)
    # ISO/IEC 18004: at least 4 modules of blank paper on every side.
    assert min(found.quiet) >= 4 * found.module, found.quiet
