"""The log's bounds: a repeated failure is one line and a count per window, and nothing
writes more than so many lines a second and bytes an hour. With a fake clock."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import pytest

from agent.runtime.logs import (
    MAX_LINE_CHARS,
    BoundedStreamHandler,
    LogLimiter,
    cut_line,
    setup_logging,
)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def bounded(
    clock: Clock, **limits: float
) -> tuple[io.StringIO, BoundedStreamHandler, logging.Logger]:
    stream = io.StringIO()
    limiter = LogLimiter(clock=clock, **limits)  # type: ignore[arg-type]
    handler = BoundedStreamHandler(stream, limiter, timers=False)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger(f"agent.test.{id(handler)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return stream, handler, log


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_repeated_error_is_one_line_then_a_count_per_window() -> None:
    clock = Clock()
    stream, handler, log = bounded(clock)
    for _ in range(1000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            log.exception("socket.accept() out of system resource")
        clock.now += 0.01  # 10 s of them
    written = lines(stream)
    assert written[0] == f"ERROR {log.name}: socket.accept() out of system resource"
    assert written[-1] == "OSError: [Errno 24] Too many open files"  # one traceback
    assert sum("out of system resource" in line for line in written) == 1
    # The window ends (60 s after the first): one line with the count.
    clock.now += 50
    handler.flush_due()
    summary = lines(stream)[len(written) :]
    assert summary == [
        f"ERROR {log.name}: socket.accept() out of system resource … "
        "repeated 999 times in the last 60 s"
    ]
    # Still coming: each window ends with a count, nothing else.
    for _ in range(3):
        for _ in range(120):  # a window's worth
            log.error("socket.accept() out of system resource")
            clock.now += 0.5
        handler.flush_due()
    counts = lines(stream)[len(written) + 1 :]
    assert (
        counts
        == [
            f"ERROR {log.name}: socket.accept() out of system resource … "
            "repeated 120 times in the last 60 s"
        ]
        * 3
    )
    # A quiet window forgets it: the next one is written in full again.
    clock.now += 200
    handler.flush_due()
    log.error("socket.accept() out of system resource")
    assert lines(stream)[-1].endswith(": socket.accept() out of system resource")


def test_same_template_other_values_are_written_up_to_a_few_per_window() -> None:
    clock = Clock()
    stream, handler, log = bounded(clock, repeat_window_s=60)
    for device in "abcdefg":
        log.warning("device %s is offline", device)
    log.warning("device %s is offline", "a")
    log.warning("printer %s: %s", "p1", "paper out")  # another template: its own count
    written = lines(stream)
    assert [line.rsplit(": ", 1)[1] for line in written] == [
        *(f"device {d} is offline" for d in "abcde"),
        "paper out",
    ]
    clock.now += 60
    handler.flush_due()
    assert lines(stream)[-1].endswith(": device a is offline … and 3 more like it in the last 60 s")


def test_info_lines_are_not_collapsed_but_every_level_counts_towards_the_cap() -> None:
    clock = Clock()
    stream, _, log = bounded(clock, max_lines_per_s=20)
    for _ in range(10):
        log.info("ticket issued")
    assert len(lines(stream)) == 10


def test_at_most_so_many_lines_a_second_then_one_line_with_how_many_were_dropped() -> None:
    clock = Clock()
    stream, handler, log = bounded(clock, max_lines_per_s=20)
    for i in range(100):  # within one second
        log.info("line %d", i)
    assert len(lines(stream)) == 20
    assert handler.limiter.dropped == 80
    clock.now += 1  # the next second: the report comes first, then the line
    log.info("after")
    written = lines(stream)
    assert written[20].startswith("WARNING agent.runtime.logs: log limit: dropped 80 lines in the")
    assert written[21].endswith(": after")
    # A flood that goes on: a report at most every 10 s, and never more than 20 a second.
    for _ in range(30):
        for i in range(1000):
            log.info("flood %d", i)
        clock.now += 1
    handler.close()
    flood = lines(stream)[22:]
    reports = [line for line in flood if "log limit: dropped" in line]
    assert 3 <= len(reports) <= 5
    kept = len(flood) - len(reports)
    assert kept == 30 * 20 - 1  # "after" took one line of the first second
    assert sum(int(r.split("dropped ")[1].split()[0]) for r in reports) == 30 * 1000 - kept


def test_nothing_writes_more_than_the_hourly_bytes_whatever_happens() -> None:
    clock = Clock()
    hourly = 256 * 1024
    stream, handler, log = bounded(clock, max_lines_per_s=20, max_bytes_per_hour=hourly)
    big = "x" * 5000
    for second in range(3600):  # an hour of long lines, all different, 50 a second
        for i in range(25):
            log.info("event %d.%d %s", second, i, big)
            log.warning("failure %d.%d %s", second, i, big)
        clock.now += 1
    handler.close()
    written = len(stream.getvalue().encode("utf-8"))
    # The hour's allowance, the eighth that may come at once, and the reports.
    assert written <= hourly + hourly / 8 + 400 * 200
    assert written > hourly / 2  # it does write, up to its allowance


def test_a_very_long_line_keeps_its_head_and_its_end() -> None:
    text = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "OSError: boom"
    cut = cut_line(text)
    assert len(cut) < MAX_LINE_CHARS + 100
    assert cut.startswith("Traceback")
    assert cut.endswith("OSError: boom")
    assert "characters cut" in cut
    assert cut_line("short") == "short"


def test_closing_writes_what_is_still_counted() -> None:
    clock = Clock()
    stream, handler, log = bounded(clock)
    for _ in range(5):
        log.error("central link down: %s", "refused")
    clock.now += 7
    handler.close()
    assert lines(stream)[-1].endswith(
        ": central link down: refused … repeated 4 times in the last 7 s"
    )


def test_the_timer_writes_a_count_when_nothing_else_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    setup_logging("INFO", "text", repeat_window_s=1.0)
    log = logging.getLogger("agent.test.timer")
    for _ in range(3):
        log.warning("keypad bus lost")
    deadline = time.monotonic() + 30
    while "repeated 2 times" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "keypad bus lost … repeated 2 times in the last 1 s" in stream.getvalue()
    assert stream.getvalue().count("keypad bus lost") == 2
