"""Words for citizens: what the kiosk, the screens and the ticket say when the hall refuses.

Every refusal a citizen can meet has two texts. The *staff* text (``QueueError.message``,
the API's ``message``, the log, /healthz) names the cause and the fix, device addresses
included. The *citizen* text (``QueueError.citizen_message``, the API's
``citizen_message``, the kiosk) is plain Chinese: what happened and what to do, never a
device address, a technical cause or English. This module holds the citizen texts, so
they are written once and read alike everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Protocol

# The printer cannot print (out of paper, cover open, unreachable, no font, ...).
PRINTER_UNAVAILABLE = "取号机暂时无法打印，请到引导台取号"
# The state database refuses writes (the disk is full or failing).
STORE_UNAVAILABLE = "系统暂时无法保存新的号票，请到服务台咨询"
# Any other refusal a citizen might meet: never the technical cause.
GENERIC = "暂时无法办理，请到引导台咨询"

_DAY_NAMES = {
    "mon": "周一",
    "tue": "周二",
    "wed": "周三",
    "thu": "周四",
    "fri": "周五",
    "sat": "周六",
    "sun": "周日",
}
_ORDER = tuple(_DAY_NAMES)


class _Period(Protocol):
    @property
    def days(self) -> Sequence[str]: ...

    @property
    def start(self) -> dt.time: ...

    @property
    def end(self) -> dt.time: ...


def days_text(days: Iterable[str]) -> str:
    """``[mon, tue, wed, thu, fri]`` → 周一至周五; ``[mon, wed]`` → 周一、周三; all → 每天."""
    chosen = sorted(set(days), key=_ORDER.index)
    if len(chosen) == len(_ORDER):
        return "每天"
    runs: list[list[str]] = []
    for day in chosen:
        if runs and _ORDER.index(day) == _ORDER.index(runs[-1][-1]) + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_DAY_NAMES[run[0]]}至{_DAY_NAMES[run[-1]]}")
        else:
            parts.extend(_DAY_NAMES[d] for d in run)
    return "、".join(parts)


def hours_text(periods: Sequence[_Period]) -> str:
    """A service's hours for citizens: 周一至周五 09:00-12:00、13:30-17:00；周六 09:00-12:00.

    Periods on the same days are put together, in the order of the config. No periods:
    the service is always open (全天).
    """
    if not periods:
        return "全天"
    groups: dict[tuple[str, ...], list[str]] = {}
    for period in periods:
        key = tuple(sorted(set(period.days), key=_ORDER.index))
        groups.setdefault(key, []).append(f"{period.start:%H:%M}-{period.end:%H:%M}")
    return "；".join(f"{days_text(days)} {'、'.join(times)}" for days, times in groups.items())


def service_closed(service: str, hours: str) -> str:
    """A service outside its hours (the kiosk's button and its refusal)."""
    return f"{service}现在不在办理时间。办理时间：{hours}"


_HOLIDAY = "法定节假日"


def spans_text(spans: Iterable[tuple[dt.time, dt.time]]) -> str:
    """A day's hours: ``09:00–12:00 13:30–17:00``."""
    return " ".join(f"{start:%H:%M}–{end:%H:%M}" for start, end in spans)


def when_text(moment: dt.datetime, today: dt.date) -> str:
    """A moment to come: ``今天 13:30``, ``明天 09:00`` or ``10月8日 09:00``."""
    if moment.date() == today:
        day = "今天"
    elif moment.date() == today + dt.timedelta(days=1):
        day = "明天"
    else:
        day = f"{moment.month}月{moment.day}日"
    return f"{day} {moment:%H:%M}"


def day_off_text(closed: str, holiday: str | None, note: str | None) -> str:
    """Why a whole day is off, for 今日休息（…）: 法定节假日：国庆节, 周末, ..."""
    if closed == "holiday":
        return f"{_HOLIDAY}：{holiday}" if holiday else _HOLIDAY
    if closed == "weekend":
        return "周末"
    if closed == "special_date":
        return note or "休息日"
    return "本日不办理"


def today_hours_text(
    spans: Sequence[tuple[dt.time, dt.time]],
    *,
    all_day: bool = False,
    closed: str | None = None,
    holiday: str | None = None,
    note: str | None = None,
) -> str:
    """The big screen's line: 今日办理时间 09:00–12:00 13:30–17:00, or 今日休息（周末）."""
    if all_day:
        return "今日全天办理"
    if closed is not None or not spans:
        return f"今日休息（{day_off_text(closed or '', holiday, note)}）"
    line = f"今日办理时间 {spans_text(spans)}"
    return f"{line}（{note}）" if note else line


def not_open_now(
    service: str,
    reason: str,
    *,
    today: dt.date,
    next_open: dt.datetime | None,
    holiday: str | None = None,
    note: str | None = None,
) -> str:
    """A service the calendar keeps closed now: why, and when it next opens."""
    then = "" if next_open is None else f"下次办理时间：{when_text(next_open, today)}"
    if reason == "holiday":
        name = f"（{holiday}）" if holiday else ""
        return f"今天是{_HOLIDAY}{name}，大厅休息。{then}"
    if reason == "weekend":
        return f"今天是周末，{service}不办理。{then}"
    if reason == "special_date":
        why = f"（{note}）" if note else ""
        return f"{service}今天暂停办理{why}。{then}"
    if reason == "lunch_break" and next_open is not None:
        return f"现在是午间休息时间，{service}{next_open:%H:%M}恢复办理。"
    if reason == "before_hours" and next_open is not None:
        return f"{service}今天{next_open:%H:%M}开始办理，请稍候。"
    if reason == "after_hours":
        return f"{service}今天的办理时间已结束。{then}"
    return f"{service}今天不办理。{then}"


# A service button on a day the whole hall is closed: the reason is the kiosk's banner.
DAY_OFF_BUTTON = "今日休息"


def hall_closed_today(
    closed: str | None,
    *,
    today: dt.date,
    next_open: dt.datetime | None,
    holiday: str | None = None,
    note: str | None = None,
) -> str:
    """The kiosk's one banner on a day the whole hall is closed, and when it next opens:
    今天是法定节假日（国庆节），大厅休息。下次办理时间：10月8日 09:00."""
    then = "" if next_open is None else f"下次办理时间：{when_text(next_open, today)}"
    if closed == "holiday":
        name = f"（{holiday}）" if holiday else ""
        return f"今天是{_HOLIDAY}{name}，大厅休息。{then}"
    if closed == "weekend":
        return f"今天是周末，大厅休息。{then}"
    if closed == "special_date":
        why = f"（{note}）" if note else ""
        return f"今天大厅暂停办理{why}。{then}"
    return f"今天大厅不办理业务。{then}"


def daily_cap_reached(service: str, hours: str) -> str:
    """Today's tickets for the service are all taken."""
    return f"{service}今日号已取完，请下个办理日再来。办理时间：{hours}"


def already_holding(service: str, number: str) -> str:
    """One waiting ticket per ID card and service."""
    return f"您已取过{service}的号（{number}号），请留意叫号"


# A ticket's status in words (the caller page, the ticket's status page).
STATUS_WORDS = {
    "waiting": "等候中",
    "called": "已叫号，等候到窗口",
    "serving": "办理中",
    "held": "已挂起",
    "finished": "已办结",
    "no_show": "已过号",
    "cancelled": "已取消",
    "expired": "已失效",
}


def status_text(status: str) -> str:
    return STATUS_WORDS.get(status, status)
