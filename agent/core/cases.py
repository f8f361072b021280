"""Proxy cases (代收代办): a case's record, its statuses, its promised date and when its
deadline is near or passed, and what a citizen is told about it. Pure: no clock, no I/O.

The hall's side (storing, events, receipts, the deadline watcher) is
:mod:`agent.features.cases`; docs/cases.md describes the whole.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from typing import Any, Literal

from agent.workdays import WorkingDays

JSON = dict[str, Any]

# A case number: the configured prefix, the day it was taken and a counter of that day.
CASE_NUMBER = re.compile(r"^[A-Z]{1,4}\d{8}\d{3,4}$")


class CaseStatus(enum.StrEnum):
    RECEIVED = "received"  # 已受理: taken at the window, on its way to whoever handles it
    PROCESSING = "processing"  # 办理中: central (or the department) works on it
    DONE = "done"  # 已办结: the result is back, waiting to be collected
    RETURNED = "returned"  # 已退回: not accepted; the citizen is told why at the hall
    CLOSED = "closed"  # 已结案: collected or withdrawn; nothing personal is kept

    @property
    def waiting_for_result(self) -> bool:
        """Whether the promised date still binds (no result yet)."""
        return self in (CaseStatus.RECEIVED, CaseStatus.PROCESSING)


# The moves a status may make; anything else is refused with both named.
MOVES: dict[CaseStatus, frozenset[CaseStatus]] = {
    CaseStatus.RECEIVED: frozenset(
        {CaseStatus.PROCESSING, CaseStatus.DONE, CaseStatus.RETURNED, CaseStatus.CLOSED}
    ),
    CaseStatus.PROCESSING: frozenset({CaseStatus.DONE, CaseStatus.RETURNED, CaseStatus.CLOSED}),
    CaseStatus.DONE: frozenset({CaseStatus.CLOSED, CaseStatus.PROCESSING}),
    CaseStatus.RETURNED: frozenset({CaseStatus.CLOSED, CaseStatus.PROCESSING}),
    CaseStatus.CLOSED: frozenset(),
}

# What the citizen reads (kiosk, public look-up, receipt): plain Chinese, nothing personal.
CITIZEN_STATUS: dict[CaseStatus, str] = {
    CaseStatus.RECEIVED: "已受理，正在转交办理",
    CaseStatus.PROCESSING: "正在办理中",
    CaseStatus.DONE: "已办结，请携带回执到大厅领取",
    CaseStatus.RETURNED: "未能办理，请携带回执到大厅咨询",
    CaseStatus.CLOSED: "已办结并领取",
}
# What staff read in lists.
STAFF_STATUS: dict[CaseStatus, str] = {
    CaseStatus.RECEIVED: "已受理",
    CaseStatus.PROCESSING: "办理中",
    CaseStatus.DONE: "已办结待领取",
    CaseStatus.RETURNED: "已退回",
    CaseStatus.CLOSED: "已结案",
}

Due = Literal["near", "overdue"]


def chinese_date(day: dt.date) -> str:
    """``2026-03-09`` → ``2026年3月9日（星期一）``."""
    weekday = "一二三四五六日"[day.weekday()]
    return f"{day.year}年{day.month}月{day.day}日（星期{weekday}）"


def case_number(prefix: str, day: dt.date, counter: int) -> str:
    return f"{prefix}{day:%Y%m%d}{counter:03d}"


def promised_date(taken: dt.date, time_limit_days: int, days: WorkingDays) -> dt.date:
    """The promised date of a case taken on ``taken`` with a limit in working days (承诺时限):
    the day it is taken does not count."""
    return days.add_working_days(taken, time_limit_days)


def warning_day(promised: dt.date, warn_working_days: int, days: WorkingDays) -> dt.date:
    """The working day staff are warned on: ``warn_working_days`` working days before the
    promised date (a promised date that is not a working day counts from the working day
    before it)."""
    last = days.previous_working_day(promised, include=True)
    return days.subtract_working_days(last, warn_working_days)


def last_near_promise(today: dt.date, warn_working_days: int, days: WorkingDays) -> dt.date:
    """The latest promised date whose warning day is on or before ``today``: the cases the
    deadline watcher need look at are promised on or before it (or already overdue)."""
    return days.add_working_days(today, warn_working_days + 1) - dt.timedelta(days=1)


def due(promised: dt.date, today: dt.date, warn_working_days: int, days: WorkingDays) -> Due | None:
    """Where an open case stands on business day ``today``: ``overdue`` after its promised
    date, ``near`` from its warning day on, else None."""
    if today > promised:
        return "overdue"
    if today >= warning_day(promised, warn_working_days, days):
        return "near"
    return None


@dataclasses.dataclass(slots=True)
class Case:
    """A proxy case as the hall keeps it (the citizen only masked; the full personal data is
    sealed beside it in the store and erased when the case closes)."""

    number: str
    day: dt.date  # the business day it was taken
    service: str
    window: str
    staff: str | None
    registered_at: str
    promised: dt.date
    promised_by: Literal["guide", "staff"]
    time_limit_days: int | None
    materials: list[str]
    citizen: JSON  # masked: name, id_number, phone
    status: CaseStatus = CaseStatus.RECEIVED
    note: str | None = None
    updated_at: str | None = None
    closed_at: str | None = None
    warned: Literal["", "near", "overdue"] = ""
    overdue: bool = False  # it passed its promised date without a result at some point

    def to_json(self) -> JSON:
        # By hand: dataclasses.asdict deep-copies every value (10x the time of a list).
        return {
            "number": self.number,
            "day": self.day.isoformat(),
            "service": self.service,
            "window": self.window,
            "staff": self.staff,
            "registered_at": self.registered_at,
            "promised": self.promised.isoformat(),
            "promised_by": self.promised_by,
            "time_limit_days": self.time_limit_days,
            "materials": list(self.materials),
            "citizen": dict(self.citizen),
            "status": self.status.value,
            "note": self.note,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "warned": self.warned,
            "overdue": self.overdue,
        }

    @classmethod
    def from_json(cls, data: JSON) -> Case:
        values = dict(data)
        values["day"] = dt.date.fromisoformat(values["day"])
        values["promised"] = dt.date.fromisoformat(values["promised"])
        values["status"] = CaseStatus(values["status"])
        return cls(**values)

    def staff_view(self, today: dt.date, warn_working_days: int, days: WorkingDays) -> JSON:
        """What the window's and the manager's lists show (masked citizen)."""
        state = (
            due(self.promised, today, warn_working_days, days)
            if self.status.waiting_for_result
            else None
        )
        return {
            **self.to_json(),
            "status_text": STAFF_STATUS[self.status],
            "promised_text": chinese_date(self.promised),
            "due": state,
        }

    def public_view(self, service_name: str) -> JSON:
        """What anyone holding the case number may see: nothing personal."""
        return {
            "case": self.number,
            "service": service_name,
            "status": self.status.value,
            "status_text": CITIZEN_STATUS[self.status],
            "promised": self.promised.isoformat(),
            "promised_text": chinese_date(self.promised),
        }
