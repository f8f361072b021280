"""The staff board the hall edits itself (docs/configuration.md, "The hall's own roster and
rota"; docs/pages.md, "The staff page"): the roster shown on the big screen's staff board
(工号, name, photo, windows) and the week's rota (A and B per window, weekday and shift),
edited by the manager on ``/pages/manager/staff``.

Where the running roster and rota come from, latest first:

1. **本大厅编辑** (``hall``): the manager's last save, kept in the store (setting
   :data:`agent.config.HALL_STAFFING`) with its ``staff.board_edited`` event in one
   transaction, and laid over the config at every start;
2. **上级下发** (``central``): ``staff`` and ``rota`` in central's config push. A push that
   carries either replaces the hall's edit (the edit is dropped with the push's
   ``config.applied``); a push without them keeps it;
3. **配置文件** (``file``): the config file's ``staff`` and ``rota``.

An edit is checked exactly as the file is (the config's models and its cross checks:
known windows, shifts and staff, nobody A at two windows at once), so it gives the same
errors as ``check-config``. A member's sign-in fields (``key_code``, ``id_sha256``) and
central's ``photo_url`` are kept from the running roster; a photo is an image uploaded
through the content checks (``POST /api/v1/content/images``), shown by its id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from agent.config import (
    HALL_STAFFING,
    ConfigError,
    with_staffing,
)
from agent.core import events as ev
from agent.core.errors import Refused
from agent.core.events import Event
from agent.runtime.hall import Hall
from agent.runtime.store import Store

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Where the running rota came from, and how the page names it.
SOURCES = {"hall": "本大厅编辑", "central": "上级下发", "file": "配置文件"}


class StaffingRefused(Refused):
    """An edit that does not pass the config's checks: ``problems`` are the lines
    ``check-config`` would print (path, what is wrong, how to fix it)."""

    code = "invalid_staffing"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("the staff board is not valid: " + "; ".join(self.problems))


@dataclasses.dataclass(frozen=True, slots=True)
class MemberEdit:
    """One roster entry as the page edits it."""

    staff: str
    name: str
    windows: list[str]
    photo: str | None  # an uploaded content image's id


def source_of(saved: Any, central: Any) -> str:
    """``hall``, ``central`` or ``file``: where the running rota came from."""
    if saved:
        return "hall"
    sections = central.get("sections") if isinstance(central, Mapping) else None
    if isinstance(sections, Mapping) and ("rota" in sections or "staff" in sections):
        return "central"
    return "file"


def photos_of(saved: Any) -> dict[str, str]:
    """Staff number -> image id of the hall's photos (``saved``: the stored edit)."""
    photos = saved.get("photos") if isinstance(saved, Mapping) else None
    return {str(k): str(v) for k, v in (photos or {}).items() if v}


class StaffingDesk:
    """Reads and saves the hall's own roster and rota."""

    def __init__(self, hall: Hall) -> None:
        self.hall = hall

    async def load(self) -> None:
        """At start, after central's saved push: lay the hall's edit over the config."""
        saved = await self.hall.store_read(lambda s: s.setting(HALL_STAFFING))
        if not saved:
            return
        try:
            config = with_staffing(self.hall.config, saved)
        except (ConfigError, ValidationError, KeyError, TypeError) as err:
            log.warning(
                "the staff board edited in the hall no longer fits the config (%s); showing "
                "the config's roster and rota until a manager saves the board again",
                str(err).splitlines()[0],
            )
            return
        await self.hall.reconfigure(config)

    async def current(self) -> JSON:
        """What the page shows: windows, shifts, roster, rota, and where they came from."""

        def read(store: Store) -> tuple[Any, Any]:
            return store.setting(HALL_STAFFING), store.setting("central_config")

        saved, central = await self.hall.store_read(read)
        config = self.hall.config
        source = source_of(saved, central)
        photos = photos_of(saved)
        return {
            "source": source,
            "source_name": SOURCES[source],
            "edited_by": saved.get("edited_by") if saved else None,
            "edited_at": saved.get("edited_at") if saved else None,
            "windows": [{"id": w.id, "name": w.name, "number": w.number} for w in config.windows],
            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "staff": [
                {
                    "staff": m.staff,
                    "name": m.name,
                    "windows": list(m.windows),
                    "photo": photos.get(m.staff),
                }
                for m in config.staff
            ],
            "rota": config.rota.model_dump(mode="json"),
        }

    async def save(self, members: Sequence[MemberEdit], rota: Mapping[str, Any], by: str) -> JSON:
        """Check and keep the hall's roster and rota; the big screen follows at once.
        Raises :class:`StaffingRefused` with the config's own errors."""
        running = {m.staff: m for m in self.hall.config.staff}
        staff: list[JSON] = []
        for member in members:
            kept = running.get(member.staff)
            entry = {
                "staff": member.staff,
                "name": member.name,
                "windows": list(member.windows),
                "photo_url": None if kept is None else kept.photo_url,
                "key_code": None if kept is None else kept.key_code,
                "id_sha256": None if kept is None else kept.id_sha256,
            }
            staff.append(entry)
        saved: JSON = {"staff": staff, "rota": dict(rota)}
        try:
            config = with_staffing(self.hall.config, saved)
        except ConfigError as err:
            raise StaffingRefused([str(p) for p in err.problems]) from err
        saved["rota"] = config.rota.model_dump(mode="json")
        photos = {m.staff: m.photo for m in members if m.photo}
        missing = await self.hall.store_read(
            lambda s: [p for p in photos.values() if s.content_image(p) is None]
        )
        if missing:
            raise StaffingRefused(
                [
                    f"photo {p}: 照片不存在（可能已被删除）：请重新上传照片，或不选照片保存"
                    for p in missing
                ]
            )
        now = dt.datetime.now(dt.UTC)
        saved.update(
            photos=photos,
            edited_by=by,
            edited_at=now.astimezone(config.hall.zone).isoformat(timespec="seconds"),
        )
        windows = sorted({p.window for p in [*config.rota.posts, *config.rota.week]})
        event = Event(ev.StaffingEdited(count=len(staff), windows=windows, by=by), now)
        await self.hall.reconfigure(config, settings={HALL_STAFFING: saved}, event=event)
        log.info("%s edited the staff board: %d staff, %d windows", by, len(staff), len(windows))
        return await self.current()


__all__ = ["SOURCES", "MemberEdit", "StaffingDesk", "StaffingRefused", "photos_of", "source_of"]
