"""Logging for journald and terminals: one line per fact, levels, no personal data, and a
bounded amount of it whatever happens (docs/operations.md, "How much the agent logs")."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TextIO

# Resident ID numbers (18 characters, last may be X) and mainland mobile numbers.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def mask_id_number(value: str) -> str:
    """``110101199003071234`` → ``110101********1234``: region and check digits only."""
    return _ID_NUMBER.sub(lambda m: f"{m.group(1)}{'*' * 8}{m.group(2)}", value)


def mask_name(name: str) -> str:
    """``张三丰`` → ``张**``: enough for staff to recognise a case, not to identify."""
    return name[:1] + "*" * (len(name) - 1) if name else name


class PersonalDataFilter(logging.Filter):
    """A safety net: masks ID and phone numbers in any record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _MOBILE.sub(r"\1****\2", mask_id_number(message))
        if masked != message:
            record.msg = masked
            record.args = None
        return True


class JournaldFormatter(logging.Formatter):
    """``<N>`` syslog priority prefixes, which journald reads from a service's stderr."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prefix = self.PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", " | ")
        return f"<{prefix}>{text}"


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


# -- a bounded log -------------------------------------------------------------------------

LIMITER_LOGGER = "agent.runtime.logs"
# A longer line (a deep traceback) keeps its head and its end, where the exception is.
MAX_LINE_CHARS = 8000
_LINE_HEAD = 2000
# Templates tracked for repeats at most (each a few hundred bytes).
_MAX_KEYS = 1000
# Distinct texts of one template remembered (by hash) as already written, per template.
_MAX_SEEN = 64


@dataclass(slots=True)
class _Repeats:
    """One message template's current window."""

    started: float
    seen: set[int] = field(default_factory=set)  # hashes of the texts written
    fresh: int = 0  # distinct texts written in this window
    suppressed: int = 0
    varied: bool = False  # some suppressed text differed from every written one
    last: str = ""


def _first_line(text: str, limit: int = 300) -> str:
    line = text.split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def cut_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """A line longer than ``limit`` keeps its head and its end, and says how much went."""
    if len(text) <= limit:
        return text
    tail = limit - _LINE_HEAD
    return f"{text[:_LINE_HEAD]} … [{len(text) - limit} characters cut] … {text[-tail:]}"


class LogLimiter:
    """Which records are written, decided with a clock of its own (no I/O, no threads).

    - **Repeats**: warnings and errors with the same logger, level and message template are
      written once per ``repeat_window_s``; the rest are counted, and
      :meth:`repeat_summaries` gives one "… repeated N times in the last S s" record when
      the window ends. While they keep coming, each window ends with one such record and
      nothing else. A template's distinct texts (``device a is offline``, ``device b is
      offline``) are written up to ``distinct_per_window`` per window before they are
      counted too.
    - **Volume**: at most ``max_lines_per_s`` lines in any second of the clock, and
      ``max_bytes_per_hour`` bytes an hour (an eighth of it may come at once); what is over
      is dropped and counted, and :meth:`drop_report` gives the one line saying how many,
      at most every ``report_every_s``.
    """

    def __init__(
        self,
        repeat_window_s: float = 60.0,
        max_lines_per_s: int = 100,
        max_bytes_per_hour: int = 4 * 1024 * 1024,
        *,
        distinct_per_window: int = 5,
        report_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repeat_window_s = repeat_window_s
        self.max_lines_per_s = max_lines_per_s
        self.max_bytes_per_hour = max_bytes_per_hour
        self.distinct_per_window = distinct_per_window
        self.report_every_s = report_every_s
        self.clock = clock
        self._repeats: dict[tuple[str, int, str], _Repeats] = {}
        self._second = -math.inf
        self._lines = 0
        self._bytes_capacity = max_bytes_per_hour / 8
        self._bytes = self._bytes_capacity
        self._bytes_at = clock()
        self.dropped = 0  # since the last report
        self.dropped_total = 0
        self._dropped_since = 0.0
        self._last_report = -math.inf

    # -- repeats

    def admit(self, record: logging.LogRecord) -> bool:
        """Whether a record passes the repeat rule (lines and bytes are taken after)."""
        if record.levelno < logging.WARNING:
            return True
        now = self.clock()
        key = (record.name, record.levelno, str(record.msg))
        text = record.getMessage()
        state = self._repeats.get(key)
        ended = state is not None and now >= state.started + self.repeat_window_s
        if state is None or (ended and state.suppressed == 0):
            if state is None and len(self._repeats) >= _MAX_KEYS:
                self._repeats.pop(next(iter(self._repeats)))
            self._repeats[key] = state = _Repeats(started=now)
        # (A window that ended with records counted stays until repeat_summaries reports it.)
        digest = hash(text)
        if digest in state.seen or state.fresh >= self.distinct_per_window:
            state.varied = state.varied or digest not in state.seen
            state.suppressed += 1
            state.last = _first_line(text)
            return False
        state.fresh += 1
        if len(state.seen) < _MAX_SEEN:
            state.seen.add(digest)
        return True

    def repeat_summaries(self, everything: bool = False) -> list[logging.LogRecord]:
        """One record per template whose window ended with records counted (every such
        template with ``everything``, as when the log closes)."""
        now = self.clock()
        out = []
        for key, state in list(self._repeats.items()):
            if not everything and now < state.started + self.repeat_window_s:
                continue
            if state.suppressed == 0:
                del self._repeats[key]
                continue
            name, level, _ = key
            elapsed = max(1.0, min(now - state.started, self.repeat_window_s))
            what = (
                f"and {state.suppressed} more like it"
                if state.varied
                else f"repeated {state.suppressed} times"
            )
            text = f"{state.last} … {what} in the last {elapsed:.0f} s"
            out.append(logging.LogRecord(name, level, "", 0, text, None, None))
            # While they keep coming, the next window is counted, not written again.
            state.started, state.fresh, state.suppressed, state.varied = now, 0, 0, False
        return out

    # -- volume

    def line_available(self) -> bool:
        """Whether this second's allowance has a line left (counted as dropped if not)."""
        now = self.clock()
        second = math.floor(now)
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines < self.max_lines_per_s:
            return True
        self._drop(now)
        return False

    def take(self, size: int) -> bool:
        """A line of ``size`` bytes from the allowances; False (and counted) when the hour's
        bytes are used up. Call after :meth:`line_available`."""
        now = self.clock()
        self._refill(now)
        if size > self._bytes:
            self._drop(now)
            return False
        self._bytes -= size
        self._lines += 1
        return True

    def charge(self, size: int) -> None:
        """Bytes written whatever the allowance (the dropped-lines report)."""
        self._refill(self.clock())
        self._bytes -= size

    def _refill(self, now: float) -> None:
        rate = self.max_bytes_per_hour / 3600
        self._bytes = min(self._bytes_capacity, self._bytes + (now - self._bytes_at) * rate)
        self._bytes_at = now

    def _drop(self, now: float) -> None:
        if self.dropped == 0:
            self._dropped_since = now
        self.dropped += 1
        self.dropped_total += 1

    def drop_report(self, everything: bool = False) -> logging.LogRecord | None:
        """The line saying how many lines were dropped, when there were some and the last
        such line is ``report_every_s`` old (whenever there were some, with ``everything``)."""
        now = self.clock()
        if self.dropped == 0:
            return None
        if not everything and now < self._report_at():
            return None
        text = (
            f"log limit: dropped {self.dropped} lines in the last "
            f"{max(1.0, now - self._dropped_since):.0f} s (more than {self.max_lines_per_s} "
            f"lines a second or {self.max_bytes_per_hour // 1024} KiB an hour)"
        )
        self.dropped, self._last_report = 0, now
        return logging.LogRecord(LIMITER_LOGGER, logging.WARNING, "", 0, text, None, None)

    def _report_at(self) -> float:
        # Not before the second of the first drop is over, nor within report_every_s of the
        # last report.
        return max(self._last_report + self.report_every_s, math.floor(self._dropped_since) + 1)

    def next_due(self) -> float | None:
        """When a summary or report will be due (on this limiter's clock), if ever."""
        times = [s.started + self.repeat_window_s for s in self._repeats.values() if s.suppressed]
        if self.dropped:
            times.append(self._report_at())
        return min(times) if times else None


@contextlib.contextmanager
def _holding(handler: logging.Handler) -> Iterator[None]:
    """The handler's lock, held for a ``with`` block."""
    handler.acquire()
    try:
        yield
    finally:
        handler.release()


class BoundedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes what its :class:`LogLimiter` lets through.

    Summaries (repeats, dropped lines) are written before the next record, or by a timer
    when nothing else comes; :meth:`close` writes what is still counted.
    """

    def __init__(
        self, stream: TextIO, limiter: LogLimiter | None = None, *, timers: bool = True
    ) -> None:
        super().__init__(stream)
        self.limiter = limiter or LogLimiter()
        self._timers = timers
        self._timer: threading.Timer | None = None
        self._timer_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self._write_due(everything=False)
            if self.limiter.admit(record):
                self._write(record)
            self._arm()
        except Exception:  # noqa: BLE001 - logging never raises into the agent
            self.handleError(record)

    def _write(self, record: logging.LogRecord) -> None:
        if not self.limiter.line_available():
            return
        text = cut_line(self.format(record)) + self.terminator
        if self.limiter.take(len(text.encode("utf-8", "replace"))):
            self.stream.write(text)
            self.flush()

    def _write_due(self, everything: bool) -> None:
        report = self.limiter.drop_report(everything)
        if report is not None:
            text = self.format(report) + self.terminator
            self.limiter.charge(len(text.encode("utf-8")))
            self.stream.write(text)
            self.flush()
        for summary in self.limiter.repeat_summaries(everything):
            self._write(summary)

    def _arm(self) -> None:
        if not self._timers:
            return
        at = self.limiter.next_due()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, at - self.limiter.clock()) + 0.05
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer_at = at
        self._timer.start()

    def _on_timer(self) -> None:
        with self._locked():
            self._timer, self._timer_at = None, None
            with contextlib.suppress(Exception):  # logging never raises
                self._write_due(everything=False)
                self._arm()

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return _holding(self)

    def flush_due(self) -> None:
        """Write the summaries due now (what the timer does)."""
        with self._locked():
            self._write_due(everything=False)

    def close(self) -> None:
        with self._locked():
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, None
            with contextlib.suppress(OSError, ValueError):  # the stream may be gone
                self._write_due(everything=True)
        super().close()


@dataclass(frozen=True, slots=True)
class RecentLine:
    created: float  # seconds since the epoch
    levelno: int
    logger: str
    message: str  # masked (PersonalDataFilter), cut to MAX_LINE_CHARS


class RecentLog(logging.Handler):
    """The last log lines, in memory, for central's ``get_logs`` (docs/fleet.md).

    Bounded by count; each line is masked and cut like the lines written to the journal.
    It keeps what the loggers emit at the configured level, before the rate limiter: a
    burst the journal summarised is still here line by line, up to :attr:`capacity`.
    """

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.capacity = capacity
        self._lines: deque[RecentLine] = deque(maxlen=capacity)
        self.dropped = 0  # lines pushed out by newer ones
        self.addFilter(PersonalDataFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = cut_line(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                message = cut_line(f"{message} | {_first_line(repr(record.exc_info[1]))}")
            message = _MOBILE.sub(r"\1****\2", mask_id_number(message))
            if len(self._lines) == self.capacity:
                self.dropped += 1
            self._lines.append(RecentLine(record.created, record.levelno, record.name, message))
        except Exception:  # noqa: BLE001 - logging never raises into the agent
            self.handleError(record)

    def lines(
        self, *, level: int = logging.INFO, since: float | None = None, limit: int = 200
    ) -> list[RecentLine]:
        """The newest ``limit`` lines at ``level`` or above, created at or after
        ``since``, oldest first."""
        with self._locked():
            kept = [
                line
                for line in self._lines
                if line.levelno >= level and (since is None or line.created >= since)
            ]
        return kept[-limit:] if limit > 0 else []

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return _holding(self)


_RECENT = RecentLog()


def recent_log() -> RecentLog:
    """The process's one :class:`RecentLog` (installed by :func:`setup_logging`)."""
    return _RECENT


def setup_logging(
    level: str = "INFO",
    fmt: Literal["auto", "text", "journald"] = "auto",
    *,
    repeat_window_s: float = 60.0,
    max_lines_per_s: int = 100,
    max_bytes_per_hour: int = 4 * 1024 * 1024,
) -> None:
    journald = fmt == "journald" or (fmt == "auto" and under_systemd())
    handler = BoundedStreamHandler(
        sys.stderr, LogLimiter(repeat_window_s, max_lines_per_s, max_bytes_per_hour)
    )
    if journald:
        handler.setFormatter(JournaldFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(PersonalDataFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BoundedStreamHandler):
            old.close()
    root.addHandler(handler)
    if _RECENT not in root.handlers:
        root.addHandler(_RECENT)
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
