"""The hall's own screen content on the local API and its page (docs/api.md, "Screen
content"; docs/screens.md):

- ``GET/POST /api/v1/notices``, ``PUT/DELETE /api/v1/notices/{id}``;
- ``GET/POST /api/v1/content/news`` and ``…/jobs``, ``PUT/DELETE …/{id}``;
- ``GET/POST /api/v1/content/images`` (the upload is the image file itself as the body),
  ``DELETE /api/v1/content/images/{id}``;
- ``GET /pages/manager/content`` (the manager's editing page) and
  ``GET /pages/content/images/{id}`` (an image, for the screens: public, like the pages).

Who may edit is decided by the caller's ``edit_rule`` (agent/web/access.py: the manager
and ops); the content itself is :class:`agent.features.content.ScreenContent`'s.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.core.errors import NotFound
from agent.features.access import Principal
from agent.features.content import (
    DRAIN_BYTES,
    ContentRefused,
    ItemFields,
    ScreenContent,
    describe_images,
    image_url,
)
from agent.runtime.store import ContentItem
from agent.web.errors import ERRORS, ErrorBody

API = "/api/v1"
STATIC = pathlib.Path(__file__).resolve().parent / "static"

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"model": ErrorBody, "description": "the image file is larger than the cap"},
    415: {"model": ErrorBody, "description": "the file is not a PNG, JPEG, GIF or WebP image"},
}
_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Timed(_Strict):
    priority: int = Field(
        default=0, ge=0, le=9, description="0 to 9: higher is shown first (notices lead)"
    )
    starts_at: dt.datetime | None = Field(
        default=None, description="shown from this instant (no offset: the hall's time); null: now"
    )
    ends_at: dt.datetime | None = Field(
        default=None, description="hidden from this instant; null: until deleted"
    )


def _text(value: str, what: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise ValueError(f"{what} is empty: write what the screen should show")
    return cleaned


class NoticeIn(_Timed):
    """A notice (通知公告): one line on the screens' ticker."""

    text: str = Field(min_length=1, max_length=200, description="what the ticker shows")

    @field_validator("text")
    @classmethod
    def _filled(cls, value: str) -> str:
        return _text(value, "text")


class BulletinIn(_Timed):
    """A community news item (社区动态) or a job item (招聘信息)."""

    title: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=300)
    image: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{20}$",
        description="an uploaded image's id (POST /api/v1/content/images); null: no image",
    )

    @field_validator("title", "text")
    @classmethod
    def _filled(cls, value: str) -> str:
        return _text(value, "title or text")


def _item_json(item: ContentItem) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": item.id,
        "kind": item.kind,
        "priority": item.priority,
        "starts_at": item.starts_at,
        "ends_at": item.ends_at,
        "created_at": item.created_at,
        "edited_by": item.edited_by,
        "edited_at": item.edited_at,
    }
    if item.kind == "notice":
        body["text"] = item.body
    else:
        body.update(
            title=item.title,
            text=item.body,
            image=item.image,
            image_url=None if item.image is None else image_url(item.image),
        )
    return body


def _fields(body: NoticeIn | BulletinIn, zone: dt.tzinfo) -> ItemFields:
    """What a body sets; a time without an offset is the hall's."""

    def hall_time(at: dt.datetime | None) -> dt.datetime | None:
        return at if at is None or at.tzinfo is not None else at.replace(tzinfo=zone)

    starts, ends = hall_time(body.starts_at), hall_time(body.ends_at)
    if starts is not None and ends is not None and ends <= starts:
        raise ContentRefused(
            "invalid_window",
            "结束时间早于或等于开始时间，这一条永远不会显示：请把结束时间改晚，或不填结束时间",
        )
    if isinstance(body, NoticeIn):
        return ItemFields("", body.text, body.priority, starts, ends, None)
    return ItemFields(body.title, body.text, body.priority, starts, ends, body.image)


def content_routes(content: ScreenContent, *, edit_rule: Any) -> APIRouter:
    """The content's API (``edit_rule``: who may read and edit it, a :class:`Rule` of
    agent/web/access.py), its page and its images."""
    router = APIRouter()
    editor = Depends(edit_rule)
    _notice_routes(router, content, editor)
    _bulletin_routes(router, content, editor, "news", "news", "community news (社区动态)")
    _bulletin_routes(router, content, editor, "jobs", "job", "job information (招聘信息)")
    _image_routes(router, content, editor)

    @router.get("/pages/manager/content", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "content.html").read_text(encoding="utf-8"))

    @router.get("/pages/content/images/{image}", include_in_schema=False)
    async def image_file(image: str) -> Response:
        path = content.image_path(image)
        if path is None:
            raise NotFound(f"there is no image {image!r}")
        # An image's id is its content's hash: it never changes.
        return FileResponse(
            path, media_type="image/jpeg", headers={"Cache-Control": "max-age=31536000"}
        )

    return router


def _notice_routes(router: APIRouter, content: ScreenContent, editor: Any) -> None:
    zone = content.config.hall.zone

    @router.get(f"{API}/notices", tags=["content"], responses=ERRORS, dependencies=[editor])
    async def notices() -> dict[str, Any]:
        """The hall's notices (editable), and central's (``show_notice``; read-only here)."""
        items = await content.items("notice")
        central = await content.central_notices()
        return {
            "notices": [_item_json(i) for i in items],
            "central": [{**n, "source": "central"} for n in central],
        }

    @router.post(f"{API}/notices", status_code=201, tags=["content"], responses=ERRORS)
    async def add_notice(body: NoticeIn, who: Principal = editor) -> dict[str, Any]:
        """Add a notice: shown on the screens' ticker within its time window."""
        return _item_json(await content.save("notice", None, _fields(body, zone), who.name))

    @router.put(f"{API}/notices/{{item}}", tags=["content"], responses=ERRORS)
    async def edit_notice(item: _ID, body: NoticeIn, who: Principal = editor) -> dict[str, Any]:
        """Replace a notice's text, priority and time window."""
        return _item_json(await content.save("notice", item, _fields(body, zone), who.name))

    @router.delete(f"{API}/notices/{{item}}", tags=["content"], responses=ERRORS)
    async def delete_notice(item: _ID, who: Principal = editor) -> dict[str, Any]:
        """Delete a notice: it leaves the screens at once."""
        return {"deleted": _item_json(await content.delete("notice", item, who.name))}


def _bulletin_routes(
    router: APIRouter, content: ScreenContent, editor: Any, path: str, kind: str, name: str
) -> None:
    """``/api/v1/content/{path}``: list, add, replace and delete items of ``kind``."""
    zone = content.config.hall.zone

    async def listing() -> dict[str, Any]:
        return {path: [_item_json(i) for i in await content.items(kind)]}

    async def add(body: BulletinIn, who: Principal = editor) -> dict[str, Any]:
        return _item_json(await content.save(kind, None, _fields(body, zone), who.name))

    async def edit(item: _ID, body: BulletinIn, who: Principal = editor) -> dict[str, Any]:
        return _item_json(await content.save(kind, item, _fields(body, zone), who.name))

    async def delete(item: _ID, who: Principal = editor) -> dict[str, Any]:
        return {"deleted": _item_json(await content.delete(kind, item, who.name))}

    base = f"{API}/content/{path}"
    common: dict[str, Any] = {"tags": ["content"], "responses": ERRORS}
    router.get(base, summary=f"List {name}", dependencies=[editor], **common)(listing)
    router.post(base, summary=f"Add {name}", status_code=201, **common)(add)
    router.put(f"{base}/{{item}}", summary=f"Replace {name}", **common)(edit)
    router.delete(f"{base}/{{item}}", summary=f"Delete {name}", **common)(delete)


def _image_routes(router: APIRouter, content: ScreenContent, editor: Any) -> None:
    @router.get(f"{API}/content/images", tags=["content"], responses=ERRORS, dependencies=[editor])
    async def images() -> dict[str, Any]:
        """Every stored image, the items that show it, and the room left."""
        uses, used = await content.images()
        return {
            "images": describe_images(uses),
            "used_bytes": used,
            "max_bytes": content.limits.images_max_bytes,
            "image_max_bytes": content.limits.image_max_bytes,
            "image_max_side": content.limits.image_max_side,
        }

    @router.post(
        f"{API}/content/images",
        status_code=201,
        tags=["content"],
        responses=UPLOAD_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "the image file itself (PNG, JPEG, GIF or WebP), not a form",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    async def upload(request: Request, who: Principal = editor) -> dict[str, Any]:
        """Upload an image: its bytes are the request body; ``X-File-Name`` its name (shown
        to managers only). Checked by its content, size and dimensions, re-encoded for the
        screen, kept under the storage cap; a refusal says what is wrong and what to do."""
        data = await _read_capped(request, content.limits.image_max_bytes)
        image = await content.upload(
            data, unquote(request.headers.get("x-file-name", "")), who.name
        )
        return {
            "id": image.id,
            "url": image_url(image.id),
            "width": image.width,
            "height": image.height,
            "bytes": image.bytes,
            "name": image.original_name,
        }

    @router.delete(f"{API}/content/images/{{image}}", tags=["content"], responses=ERRORS)
    async def delete_image(image: _ID, who: Principal = editor) -> dict[str, Any]:
        """Delete an image no item shows (refused, naming them, while one does)."""
        await content.delete_image(image, who.name)
        return {"deleted": image}


async def _read_capped(request: Request, cap: int) -> bytes:
    """The request's body, refused when it is larger than ``cap`` (read to its end up to
    :data:`DRAIN_BYTES`, so the client reads the answer)."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else None
    kept = bytearray()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total <= cap:
            kept += chunk
        elif total > DRAIN_BYTES:
            break
    if total > cap:
        shown = max(total, size or 0)
        raise ContentRefused(
            "image_too_large",
            f"图片文件太大（{shown / (1024 * 1024):.1f} MB，上限 {cap / (1024 * 1024):.1f} MB）："
            "请先把图片缩小或压缩（例如另存为 JPEG、把宽度调到 1920 像素以内）再上传",
        )
    return bytes(kept)
