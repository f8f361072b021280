"""The kiosk's service guide (办事指南 / 一次性告知), its green channel (绿色通道) and its
spoken guidance; the guide page (办事指南查询) and the guide desk (引导台).

- :func:`kiosk_settings` is the page feed's ``kiosk`` source: each service's guide, the
  green channel's classes and policy text, the hall's phone, read from the *live* config
  (a config pushed by central carries the guides inside ``services``, so they change with
  it and the pages redraw on its ``config.applied`` event).
- ``GET /pages/guide`` — every service's guide, for the self-service area (no ticket);
- ``GET /pages/guide-desk`` — the guide desk: a guide logs in (role ``guide``), issues
  priority tickets, checks appointments in by number and sees the queue (all through the
  guarded local API; the page itself holds nothing);
- ``GET /pages/kiosk/voice?service=&ticket=&ahead=`` — the kiosk's own spoken guidance as
  one WAV from the hall's offline clip pack (:data:`agent.features.voice.KIOSK_TEMPLATE`),
  played by the kiosk's browser on its own speaker, so the hall's announcer keeps to calls.

docs/pages.md describes the pages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from agent.config import AnnouncerDevice, HallAgentConfig, ServiceGuide
from agent.features.voice_clips import VoiceError
from agent.runtime.hall import Hall

if TYPE_CHECKING:  # the announcer's code is loaded at the first spoken kiosk sentence
    from agent.features.voice import ClipPack

log = logging.getLogger(__name__)

JSON = dict[str, Any]

STATIC = Path(__file__).resolve().parent / "static"


def guide_json(guide: ServiceGuide | None) -> JSON | None:
    """A service's guide as the pages show it; None when it has nothing to tell."""
    if guide is None:
        return None
    out: JSON = {
        "summary": guide.summary,
        "materials": list(guide.materials),
        "notes": list(guide.notes),
        "time_limit": guide.time_limit_text,
        "fee": guide.fee,
    }
    if not any(out.values()):
        return None
    return out


def kiosk_settings(config: HallAgentConfig) -> JSON:
    """What the kiosk, the guide page and the guide desk need from the config."""
    green = config.queue.green_channel
    return {
        "guides": {s.id: guide_json(s.guide) for s in config.services},
        "green_channel": {
            "by_touch": green.by_touch,
            "classes": [{"id": c.id, "label": c.label} for c in green.classes],
            "policy": green.policy,
        },
        "phone": config.hall.phone,
    }


class KioskVoice:
    """The kiosk's sentence rendered from the hall's Mandarin clip pack (the announcer's
    folder, else ``<storage.path>/voice``), loaded once and kept."""

    def __init__(self, config: HallAgentConfig) -> None:
        announcer = next((d for d in config.devices if isinstance(d, AnnouncerDevice)), None)
        base = (announcer.clips if announcer is not None else None) or (
            config.storage.path / "voice"
        )
        self.folder = base / "zh"
        self.volume = announcer.volume if announcer is not None else 100
        self._pack: ClipPack | None = None
        self._lock = asyncio.Lock()

    async def pack(self) -> ClipPack:
        from agent.features.voice import ClipPack
        from agent.features.voice_pack import ensure_pack

        async with self._lock:
            if self._pack is None:
                self._pack = await asyncio.to_thread(
                    lambda: ClipPack.load(ensure_pack(self.folder, "zh"))
                )
            return self._pack

    async def render(self, service_name: str, ticket: str, ahead: int) -> bytes:
        from agent.features.voice import VoicePacks, kiosk_tokens

        pack = await self.pack()
        tokens = kiosk_tokens(pack, service_name, ticket, ahead)
        missing = pack.missing(tokens)
        if missing:
            raise VoiceError(
                f"the clip pack in {self.folder} has no clip for {', '.join(missing)}; "
                f"generate it again: python -m agent.features.voice_pack --out {self.folder}"
            )
        return VoicePacks({"zh": pack}).render([("zh", tokens)], self.volume)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC / f"{name}.html").read_text(encoding="utf-8"))


def kiosk_routes(hall: Hall, add_source: Callable[[str, Callable[[], Any]], None]) -> APIRouter:
    """The guide page, the guide desk and the kiosk's voice (included under ``/pages``);
    ``add_source`` is the page feed's (:meth:`agent.web.pages.PageFeed.add_source`)."""
    router = APIRouter(include_in_schema=False)
    add_source("kiosk", lambda: kiosk_settings(hall.config))
    voice = KioskVoice(hall.config)

    @router.get("/guide")
    async def guide_page() -> HTMLResponse:
        return _page("guide")

    @router.get("/guide-desk")
    async def guide_desk_page() -> HTMLResponse:
        return _page("guide-desk")

    @router.get("/kiosk/voice")
    async def kiosk_voice(
        service: Annotated[str, Query(min_length=1, max_length=64)],
        ticket: Annotated[str, Query(pattern=r"^[A-Za-z]{1,2}\d{2,5}$")],
        ahead: Annotated[int, Query(ge=0, le=9999)] = 0,
    ) -> Response:
        try:
            name = hall.config.service(service).name
        except KeyError:
            raise HTTPException(404, f"there is no service {service!r}") from None
        try:
            wav = await voice.render(name, ticket, ahead)
        except VoiceError as err:
            log.warning("the kiosk's voice is not available: %s", err)
            raise HTTPException(404, f"no kiosk voice: {err}") from None
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    return router
