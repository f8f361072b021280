"""The hall's own screen content (docs/screens.md, "The hall's own content"): notices,
community news (社区动态) and job information (招聘信息), edited by the hall's manager on
``/pages/manager/content`` and shown on the big screen beside central's notices.

Every change is a write of the hall's writer, saved with its ``content.changed`` event in
one transaction (:mod:`agent.runtime.store.content`). An uploaded image is checked before
anything is kept — its type by its content (the first bytes, then decoded by Pillow, never
by its name), its size, its dimensions (before it is decoded, so a decompression bomb is
refused unread) — then re-encoded for the screen (at most :data:`SCREEN_BOX`, JPEG, no
metadata) and stored under ``<storage.path>/content/``, bounded in total
(``pages.content.images_max_bytes``). A refusal says in plain Chinese what is wrong and
how to fix it, and changes nothing already stored.

Pillow is imported only when an image is checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.config import HALL_STAFFING, HallAgentConfig
from agent.config.system import ScreenContentConfig
from agent.core import events as ev
from agent.core.errors import NotFound, Refused
from agent.core.events import Event
from agent.runtime.hall import Hall
from agent.runtime.store import ContentImage, ContentItem, Store, Written

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# What the hall edits, and what the screens call it.
KIND_NAMES = {"notice": "通知公告", "news": "社区动态", "job": "招聘信息"}
# The big screen shows an image at most this large (its bulletin panel on a 1920x1080
# screen is about 700 px wide); larger uploads are scaled down, smaller ones kept.
SCREEN_BOX = (1280, 720)
JPEG_QUALITY = 85
# The images' folder under storage.path, and an image's id (hex of its SHA-256).
CONTENT_DIR = "content"
_IMAGE_ID = re.compile(r"^[0-9a-f]{20}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# What the first bytes of each accepted format are.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
ACCEPTED = "PNG、JPEG、GIF 或 WebP"
# A body is read (and dropped) to its end up to this much before a too-large upload is
# answered, so the browser sees the answer instead of a reset connection.
DRAIN_BYTES = 64 * 1024 * 1024


class ContentRefused(Refused):
    """An edit or an upload the hall refuses; ``code`` says which rule (the web layer maps
    it to its HTTP status). The message is plain Chinese: what is wrong, how to fix it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# -- checking an upload ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedImage:
    """An upload that passed every check, re-encoded for the screen."""

    id: str
    data: bytes
    content_type: str
    width: int
    height: int
    source_format: str


def sniff(head: bytes) -> str | None:
    """The image format the first bytes announce (None: not an image we accept)."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _what_it_is(head: bytes) -> str:
    """A plain description of a file that is not an image, for the refusal."""
    if not head:
        return "文件是空的"
    text = head[:64].lstrip()
    if text.startswith((b"#!", b"<script", b"<?php", b"<html", b"<!DOCTYPE", b"<?xml", b"<svg")):
        return "文件内容是脚本或网页，不是图片"
    if head.startswith(b"%PDF"):
        return "文件是 PDF 文档，不是图片"
    if head.startswith(b"PK\x03\x04"):
        return "文件是压缩包或 Office 文档，不是图片"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "文件内容不是可识别的图片"
    return "文件内容是文字，不是图片"


def check_image(data: bytes, limits: ScreenContentConfig) -> PreparedImage:
    """Check an upload and re-encode it for the screen; raises :class:`ContentRefused`.

    The order matters: size, then the type from the first bytes, then the dimensions from
    the header (nothing decoded yet), and only then the pixels.
    """
    if len(data) > limits.image_max_bytes:
        raise ContentRefused(
            "image_too_large",
            f"图片文件太大（{_mb(len(data))}，上限 {_mb(limits.image_max_bytes)}）：请先把图片"
            "缩小或压缩（例如另存为 JPEG、把宽度调到 1920 像素以内）再上传",
        )
    kind = sniff(data[:16])
    if kind is None:
        raise ContentRefused(
            "not_an_image",
            f"{_what_it_is(data[:64])}（按文件内容判断，与文件名无关）：只能上传 {ACCEPTED} "
            "图片，请选择一张照片或图片文件再上传",
        )
    from PIL import Image, ImageOps, UnidentifiedImageError

    damaged = ContentRefused(
        "image_damaged",
        f"文件开头像 {kind} 图片，但内容已损坏或不完整，无法读出：请重新导出或另存这张图片后再上传",
    )
    side = limits.image_max_side
    try:
        # Only the header is read here; Pillow itself refuses past twice MAX_IMAGE_PIXELS.
        image = Image.open(io.BytesIO(data), formats=[kind])
        width, height = image.size
        if width > side or height > side or width * height > side * side:
            raise ContentRefused(
                "image_too_many_pixels",
                f"图片尺寸 {width}×{height} 像素，超过上限（每边不超过 {side} 像素）：请先"
                f"把图片缩小到每边 {side} 像素以内再上传（屏幕只需要 1920×1080）",
            )
        if kind == "JPEG":  # decode at a reduced scale when that is enough
            image.draft("RGB", SCREEN_BOX)
        image.load()
        frame = ImageOps.exif_transpose(image)
        frame.thumbnail(SCREEN_BOX)
        if frame.mode in ("RGBA", "LA", "P", "PA"):
            rgba = frame.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (19, 49, 92))  # the screen's panel colour
            flat.paste(rgba, mask=rgba.getchannel("A"))
            frame = flat
        else:
            frame = frame.convert("RGB")
        out = io.BytesIO()
        frame.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except ContentRefused:
        raise
    except Image.DecompressionBombError as err:
        raise ContentRefused(
            "image_too_many_pixels",
            f"图片像素太多，无法安全打开：请先把图片缩小到每边 {side} 像素以内再上传",
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise damaged from err
    encoded = out.getvalue()
    return PreparedImage(
        id=hashlib.sha256(encoded).hexdigest()[:20],
        data=encoded,
        content_type="image/jpeg",
        width=frame.width,
        height=frame.height,
        source_format=kind,
    )


# -- what the screens show -------------------------------------------------------------------


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def showing(item: ContentItem, now: dt.datetime) -> bool:
    """Whether an item is in its time window now (start inclusive, end exclusive)."""
    start, end = _when(item.starts_at), _when(item.ends_at)
    return (start is None or start <= now) and (end is None or now < end)


def image_url(image_id: str) -> str:
    return f"/pages/content/images/{image_id}"


def screen_notices(
    items: Iterable[ContentItem], central: Iterable[Mapping[str, Any]], now: dt.datetime
) -> list[JSON]:
    """The notices the screens show now: the hall's by priority (then oldest first), and
    central's (pushed with ``show_notice`` or the config; marked ``source: central``)."""
    hall = [
        {"id": i.id, "text": i.body, "priority": i.priority, "source": "hall", "label": None}
        for i in items
        if i.kind == "notice" and showing(i, now)
    ]
    pushed = []
    for n in central:
        until = _when(str(n.get("until") or "")) if n.get("until") else None
        if until is not None and until <= now:
            continue
        pushed.append(
            {
                "id": n.get("id"),
                "text": n.get("text", ""),
                "priority": 0,
                "source": "central",
                "label": "上级通知",
            }
        )
    both = hall + pushed
    both.sort(key=lambda n: -int(n["priority"]))  # stable: the hall's first at equal rank
    return both


def screen_bulletins(items: Iterable[ContentItem], now: dt.datetime) -> list[JSON]:
    """The news and job items the big screen shows in turn now, by priority."""
    return [
        {
            "id": i.id,
            "kind": i.kind,
            "kind_name": KIND_NAMES[i.kind],
            "title": i.title,
            "text": i.body,
            "image": None if i.image is None else image_url(i.image),
        }
        for i in items
        if i.kind in ("news", "job") and showing(i, now)
    ]


def next_change(
    items: Iterable[ContentItem], central: Iterable[Mapping[str, Any]], now: dt.datetime
) -> dt.datetime | None:
    """The next instant an item starts or ends (the screens are rebuilt then)."""
    times = [_when(i.starts_at) for i in items] + [_when(i.ends_at) for i in items]
    times += [_when(str(n.get("until") or "")) for n in central]
    later = [t for t in times if t is not None and t > now]
    return min(later) if later else None


# -- editing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ItemFields:
    """What a manager sets on an item (validated by the API's models)."""

    title: str
    body: str
    priority: int
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    image: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class ImageUse:
    """A stored image and the items that show it."""

    image: ContentImage
    used_by: list[ContentItem]
    staff: list[str] = dataclasses.field(default_factory=list)  # a photo of these (工号)


def _stamp(at: dt.datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="seconds")


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:59] + "…"


class ScreenContent:
    """The hall's notices, news, jobs and images: reads, edits and uploads."""

    def __init__(self, hall: Hall) -> None:
        self.hall = hall
        self.folder = hall.config.storage.path / CONTENT_DIR

    @property
    def config(self) -> HallAgentConfig:
        return self.hall.config

    @property
    def limits(self) -> ScreenContentConfig:
        return self.hall.config.pages.content

    # -- reads -------------------------------------------------------------------------------

    async def items(self, kind: str) -> list[ContentItem]:
        return await self.hall.store_read(lambda s: s.content_items(kind))

    async def central_notices(self) -> list[JSON]:
        pushed = await self.hall.store_read(lambda s: s.setting("notices"))
        return [dict(n) for n in pushed or [] if isinstance(n, dict)]

    async def images(self) -> tuple[list[ImageUse], int]:
        """Every stored image with the items that use it, and the bytes they hold."""

        def read(store: Store) -> tuple[list[ContentImage], list[ContentItem], int, Any]:
            return (
                store.content_images(),
                store.content_items(),
                store.content_image_bytes(),
                store.setting(HALL_STAFFING),
            )

        images, items, used, edited = await self.hall.store_read(read)
        photos = edited.get("photos") if isinstance(edited, dict) else None
        photos = photos if isinstance(photos, dict) else {}
        return [
            ImageUse(
                i,
                [t for t in items if t.image == i.id],
                sorted(str(k) for k, v in photos.items() if v == i.id),
            )
            for i in images
        ], used

    def image_path(self, image_id: str) -> Path | None:
        """The file of a stored image (None: no such id or file)."""
        if not _IMAGE_ID.match(image_id):
            return None
        path = self.folder / f"{image_id}.jpg"
        return path if path.is_file() else None

    async def tidy(self) -> int:
        """At start: remove files in the content folder that no stored image names (an
        upload cut off between its file and its row, a temporary file); returns how many."""
        known = {i.file for i in await self.hall.store_read(lambda s: s.content_images())}

        def sweep() -> int:
            if not self.folder.is_dir():
                return 0
            strays = [p for p in self.folder.iterdir() if p.is_file() and p.name not in known]
            for path in strays:
                path.unlink(missing_ok=True)
            return len(strays)

        removed = await asyncio.to_thread(sweep)
        if removed:
            log.info("removed %d unfinished upload(s) from %s", removed, self.folder)
        return removed

    # -- edits -------------------------------------------------------------------------------

    async def save(
        self, kind: str, item_id: str | None, fields: ItemFields, by: str
    ) -> ContentItem:
        """Create an item (``item_id`` None) or replace one of ``kind``."""
        if kind not in KIND_NAMES:
            raise NotFound(f"there is no content kind {kind!r}; known: {', '.join(KIND_NAMES)}")
        if item_id is not None and not _ITEM_ID.match(item_id):
            raise NotFound(f"there is no {kind} {item_id!r}")

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[ContentItem]:
            old = None if item_id is None else store.content_item(item_id)
            if item_id is not None and (old is None or old.kind != kind):
                raise NotFound(
                    f"there is no {kind} {item_id!r} (deleted meanwhile?); reload the list"
                )
            if fields.image is not None and store.content_image(fields.image) is None:
                raise ContentRefused(
                    "unknown_image",
                    f"图片 {fields.image} 不存在（可能已被删除）：请重新上传图片，或不选图片保存",
                )
            stamp = now.isoformat(timespec="seconds")
            item = ContentItem(
                id=item_id or uuid.uuid4().hex[:12],
                kind=kind,
                title=fields.title,
                body=fields.body,
                priority=fields.priority,
                starts_at=_stamp(fields.starts_at),
                ends_at=_stamp(fields.ends_at),
                image=fields.image,
                created_at=stamp if old is None else old.created_at,
                edited_by=by,
                edited_at=stamp,
            )
            changed = ev.ContentChanged(
                kind=kind,  # type: ignore[arg-type]
                id=item.id,
                action="created" if old is None else "updated",
                by=by,
                title=_short(item.title or item.body),
            )
            stored = store.save_content_item(item, Event(changed, now), clock_ok=clock_ok)
            return Written(stored, item)

        return await self.hall.write(write)

    async def delete(self, kind: str, item_id: str, by: str) -> ContentItem:
        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[ContentItem]:
            found = store.content_item(item_id)
            if found is None or found.kind != kind:
                raise NotFound(f"there is no {kind} {item_id!r} (deleted already?); reload")
            changed = ev.ContentChanged(
                kind=kind,  # type: ignore[arg-type]
                id=found.id,
                action="deleted",
                by=by,
                title=_short(found.title or found.body),
            )
            stored = store.delete_content_item(item_id, Event(changed, now), clock_ok=clock_ok)
            return Written(stored, found)

        return await self.hall.write(write)

    async def upload(self, data: bytes, name: str, by: str) -> ContentImage:
        """Check, re-encode and keep an uploaded image; raises :class:`ContentRefused`."""
        limits = self.limits
        prepared = await asyncio.to_thread(check_image, data, limits)
        path = self.folder / f"{prepared.id}.jpg"
        existed = path.is_file()
        if not existed:
            await asyncio.to_thread(_write_file, path, prepared.data)
        original = _plain_name(name)

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[ContentImage]:
            same = store.content_image(prepared.id)
            if same is not None:
                return Written([], same)  # the same picture again: nothing to add
            used = store.content_image_bytes()
            if used + len(prepared.data) > limits.images_max_bytes:
                raise ContentRefused(
                    "content_storage_full",
                    _full_message(store, used, len(prepared.data), limits.images_max_bytes),
                )
            image = ContentImage(
                id=prepared.id,
                file=path.name,
                content_type=prepared.content_type,
                width=prepared.width,
                height=prepared.height,
                bytes=len(prepared.data),
                original_name=original,
                uploaded_by=by,
                uploaded_at=now.isoformat(timespec="seconds"),
            )
            changed = ev.ContentChanged(
                kind="image", id=image.id, action="created", by=by, title=_short(original)
            )
            stored = store.save_content_image(image, Event(changed, now), clock_ok=clock_ok)
            return Written(stored, image)

        try:
            return await self.hall.write(write)
        except BaseException:
            # Refused or not saved: a file no row names is not content; a file that was
            # there before (the same picture, stored) stays.
            if not existed:
                known = await self.hall.store_read(lambda s: s.content_image(prepared.id))
                if known is None:
                    path.unlink(missing_ok=True)
            raise

    async def delete_image(self, image_id: str, by: str) -> None:
        """Delete a stored image no item shows; refused while one does."""

        def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[ContentImage]:
            image = store.content_image(image_id)
            if image is None:
                raise NotFound(f"there is no image {image_id!r} (deleted already?); reload")
            users = [i for i in store.content_items() if i.image == image_id]
            edited = store.setting(HALL_STAFFING)  # staff photos (agent/features/staffing.py)
            photos = edited.get("photos") if isinstance(edited, dict) else None
            staff = sorted(k for k, v in (photos or {}).items() if v == image_id)
            if staff:
                raise ContentRefused(
                    "image_in_use",
                    f"这张图片是工号 {'、'.join(staff)} 的照片（人员排班页）：请先在人员排班页"
                    "给他们换一张照片或不用照片，再删除图片",
                )
            if users:
                names = "、".join(f"{KIND_NAMES[i.kind]}“{i.title or i.body[:20]}”" for i in users)
                raise ContentRefused(
                    "image_in_use",
                    f"这张图片正在被 {names} 使用：请先删除这些条目，"
                    "或给它们换一张图片，再删除图片",
                )
            changed = ev.ContentChanged(
                kind="image",
                id=image_id,
                action="deleted",
                by=by,
                title=_short(image.original_name),
            )
            stored = store.delete_content_image(image_id, Event(changed, now), clock_ok=clock_ok)
            return Written(stored, image)

        image = await self.hall.write(write)
        (self.folder / image.file).unlink(missing_ok=True)


def _full_message(store: Store, used: int, size: int, cap: int) -> str:
    """The storage cap is reached: what to delete, unused images first."""
    images = store.content_images()
    items = store.content_items()
    in_use = {i.image for i in items if i.image is not None}
    unused = [i for i in images if i.id not in in_use]
    head = f"图片存储已满（已用 {_mb(used)}，上限 {_mb(cap)}，这张图片需要 {_mb(size)}）："
    if unused:
        listed = "、".join(f"“{i.original_name}”" for i in unused[:5])
        more = f" 等 {len(unused)} 张" if len(unused) > 5 else ""
        return head + f"请先在“图片”列表里删除不再使用的图片：{listed}{more}，再上传"
    showing_images = [i for i in items if i.image is not None]
    showing_images.sort(key=lambda i: i.edited_at)
    listed = "、".join(f"{KIND_NAMES[i.kind]}“{i.title}”" for i in showing_images[:3])
    return head + f"请先删除旧的条目（例如 {listed}）和它们的图片，再上传"


def _plain_name(name: str) -> str:
    """The uploaded file's name as shown to managers (never used as a path)."""
    cleaned = "".join(c for c in Path(name or "").name if c.isprintable())[:80]
    return cleaned or "图片"


def _write_file(path: Path, data: bytes) -> None:
    """Write the file whole and durably: a temporary name, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def describe_images(uses: Sequence[ImageUse]) -> list[JSON]:
    return [
        {
            "id": u.image.id,
            "url": image_url(u.image.id),
            "width": u.image.width,
            "height": u.image.height,
            "bytes": u.image.bytes,
            "name": u.image.original_name,
            "uploaded_by": u.image.uploaded_by,
            "uploaded_at": u.image.uploaded_at,
            "used_by": [
                *({"kind": i.kind, "id": i.id, "title": i.title} for i in u.used_by),
                *({"kind": "staff", "id": n, "title": f"工号 {n} 的照片"} for n in u.staff),
            ],
        }
        for u in uses
    ]
