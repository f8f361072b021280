"""Logs: journald priority prefixes, and no personal data in any line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from agent.runtime.logs import (
    JournaldFormatter,
    PersonalDataFilter,
    mask_id_number,
    mask_name,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture(fmt: str, monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    setup_logging("DEBUG", fmt)  # type: ignore[arg-type]
    return stream, logging.getLogger("agent.test")


def test_journald_lines_carry_syslog_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, log = _capture("journald", monkeypatch)
    log.info("hall ready")
    log.warning("printer paper low")
    log.error("store damaged\nsecond line")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "<6>agent.test: hall ready",
        "<4>agent.test: printer paper low",
        "<3>agent.test: store damaged | second line",
    ]


def test_auto_uses_journald_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    stream, log = _capture("auto", monkeypatch)
    log.info("x")
    assert stream.getvalue().startswith("<6>")


def test_text_format_for_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    stream, log = _capture("auto", monkeypatch)
    log.info("x")
    assert "INFO" in stream.getvalue()
    assert not stream.getvalue().startswith("<")


def test_id_numbers_and_phones_are_masked_in_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, log = _capture("text", monkeypatch)
    log.info("card %s read, phone %s", "11010519491231002X", "13812345678")
    text = stream.getvalue()
    assert "11010519491231002X" not in text
    assert "110105********002X" in text
    assert "13812345678" not in text
    assert "138****5678" in text


def test_masking_helpers() -> None:
    assert mask_id_number("id 440300199001011234.") == "id 440300********1234."
    assert mask_id_number("order 1234567890123456789012") == "order 1234567890123456789012"
    assert mask_name("张三丰") == "张**"
    assert mask_name("") == ""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "no personal data", None, None)
    assert PersonalDataFilter().filter(record)
    assert JournaldFormatter("%(message)s").format(record) == "<6>no personal data"
