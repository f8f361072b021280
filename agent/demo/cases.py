"""The demo's proxy cases (代收代办, docs/cases.md): three cases a window took in the past
weeks, so that ``/pages/manager/cases`` is not empty — one due on the next working day
(近到期), one past its promised date (已超期) and one done (已办结, waiting to be collected).

They are registered and updated through the real :class:`~agent.features.cases.CaseDesk`
(the same checks, sealed personal data, events and rows as a window's), with the hall's
clock set back to the day each happened. Only into a hall without cases (an earlier run's
stay as they are).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, cast

from agent.core.cases import CaseStatus
from agent.core.model import business_day
from agent.features.cases import CaseDesk, Registration
from agent.runtime.hall import Hall
from agent.runtime.store import Store, Written
from protocols.idcard import check_digit


def demo_id_number(first17: str) -> str:
    """A made-up 18-character ID number with a valid check character (GB 11643)."""
    return first17 + check_digit(first17)


class _Backdated:
    """The hall with its clock set back to ``at``, for the case desk's writes and reads."""

    def __init__(self, hall: Hall, at: dt.datetime) -> None:
        self._hall = hall
        self.at = at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hall, name)

    async def write(self, run: Callable[[Store, dt.datetime, bool], Written[Any]]) -> Any:
        return await self._hall.write(lambda store, _now, ok: run(store, self.at, ok))

    async def read(self, run: Callable[[Any, dt.datetime], Any]) -> Any:
        return await self._hall.read(lambda engine, _now: run(engine, self.at))


@dataclasses.dataclass(frozen=True, slots=True)
class _Story:
    service: str
    window: str
    name: str
    id17: str
    materials: tuple[str, ...]
    registered_ago: int  # working days before today
    promised_in: int | None  # working days from today (negative: past); None: the guide's
    done_ago: int | None = None  # working days before today it was done


STORIES = (
    _Story(  # 近到期: promised for the next working day
        "household",
        "w2",
        "陈秀英",
        "11010519560314202",
        ("本人有效居民身份证原件", "居民户口簿原件"),
        registered_ago=14,
        promised_in=1,
    ),
    _Story(  # 已超期: promised two working days ago, still processing
        "civil-affairs",
        "w3",
        "刘建国",
        "11010619480921301",
        (),
        registered_ago=22,
        promised_in=-2,
    ),
    _Story(  # 已办结: done, waiting to be collected
        "household",
        "w1",
        "赵丽华",
        "11010819791105402",
        ("本人有效居民身份证原件", "居民户口簿原件"),
        registered_ago=10,
        promised_in=None,
        done_ago=2,
    ),
)


async def demo_cases(hall: Hall, desk: CaseDesk) -> list[str]:
    """Register the demo's cases (none when the hall has cases already); their numbers."""
    if await hall.store_read(lambda s: s.case_list(window=None, statuses=None)):
        return []
    zone = hall.config.hall.zone
    today = await hall.read(lambda engine, now: business_day(now, hall.config))
    days = desk.days
    numbers = []
    for story in STORIES:
        day = days.subtract_working_days(today, story.registered_ago)
        promised = None
        if story.promised_in is not None:
            promised = (
                days.add_working_days(today, story.promised_in)
                if story.promised_in >= 0
                else days.subtract_working_days(today, -story.promised_in)
            )
        taken = dt.datetime.combine(day, dt.time(10, 15), zone)
        past = CaseDesk(cast(Hall, _Backdated(hall, taken)), days=days)
        other = () if story.materials else ("低保申请书（已签字）", "家庭收入证明")
        registered = await past.register(
            Registration(
                service=story.service,
                window=story.window,
                name=story.name,
                id_number=demo_id_number(story.id17),
                materials=story.materials,
                other_materials=other,
                promised=promised,
            )
        )
        number = str(registered["case"]["number"])
        numbers.append(number)
        await _moved(past, number, CaseStatus.PROCESSING, "已报送区政务服务中心")
        if story.done_ago is not None:
            done = days.subtract_working_days(today, story.done_ago)
            finished = dt.datetime.combine(done, dt.time(15, 40), zone)
            later = CaseDesk(cast(Hall, _Backdated(hall, finished)), days=days)
            await _moved(later, number, CaseStatus.DONE, "证明已出具，请凭回执到 1 号窗口领取")
    return numbers


async def _moved(desk: CaseDesk, number: str, status: CaseStatus, note: str) -> None:
    await desk.update(number, status, by="window", note=note)
