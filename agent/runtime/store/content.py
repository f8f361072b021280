"""The hall's own screen content (docs/screens.md): notices, community news and job items,
and the images uploaded for them.

Every change is saved with its ``content.changed`` event in one transaction. The image
files themselves live under ``<storage.path>/content/`` (written by
:mod:`agent.features.content` before their row); a row here is what makes a file part of
the hall's content, and the sum of the rows' ``bytes`` is what the storage cap counts.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from agent.core.events import Event
from agent.runtime.store.core import StoreCore, StoredEvent

CONTENT_MIGRATION = """
CREATE TABLE content_items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    priority INTEGER NOT NULL,
    starts_at TEXT,
    ends_at TEXT,
    image TEXT,
    created_at TEXT NOT NULL,
    edited_by TEXT NOT NULL,
    edited_at TEXT NOT NULL
);
CREATE INDEX content_items_kind ON content_items (kind);
CREATE TABLE content_images (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    original_name TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TEXT NOT NULL
);
"""


@dataclasses.dataclass(frozen=True, slots=True)
class ContentItem:
    """A notice, a news item or a job item, as stored."""

    id: str
    kind: str  # notice | news | job
    title: str  # empty for a notice
    body: str  # a notice's text, an item's text
    priority: int  # higher first
    starts_at: str | None  # ISO 8601 with its offset; None: from now on
    ends_at: str | None  # None: until deleted
    image: str | None  # an image's id
    created_at: str
    edited_by: str
    edited_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class ContentImage:
    """An uploaded image as stored: its file (under the content folder) and its size."""

    id: str
    file: str
    content_type: str
    width: int
    height: int
    bytes: int
    original_name: str
    uploaded_by: str
    uploaded_at: str


_ITEM_COLUMNS = (
    "id, kind, title, body, priority, starts_at, ends_at, image, created_at, edited_by, edited_at"
)
_IMAGE_COLUMNS = (
    "id, file, content_type, width, height, bytes, original_name, uploaded_by, uploaded_at"
)


class ContentRows(StoreCore):
    """The screen content's tables (a part of ``Store``)."""

    def content_items(self, kind: str | None = None) -> list[ContentItem]:
        """Every item (of ``kind``), highest priority first, then oldest first."""

        def select(conn: sqlite3.Connection) -> list[ContentItem]:
            where, args = ("WHERE kind = ?", (kind,)) if kind is not None else ("", ())
            return [
                ContentItem(*row)
                for row in conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM content_items {where} "
                    "ORDER BY priority DESC, created_at, id",
                    args,
                )
            ]

        return self._read(select)

    def content_item(self, item_id: str) -> ContentItem | None:
        def select(conn: sqlite3.Connection) -> ContentItem | None:
            row = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM content_items WHERE id = ?", (item_id,)
            ).fetchone()
            return None if row is None else ContentItem(*row)

        return self._read(select)

    def save_content_item(
        self, item: ContentItem, event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Create or replace an item, with its event."""

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO content_items ({_ITEM_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "title = excluded.title, body = excluded.body, priority = excluded.priority, "
                "starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
                "image = excluded.image, edited_by = excluded.edited_by, "
                "edited_at = excluded.edited_at",
                dataclasses.astuple(item),
            )

        _, stored = self._transaction(upsert, [event], clock_ok=clock_ok)
        return stored

    def delete_content_item(
        self, item_id: str, event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Delete an item, with its event."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM content_items WHERE id = ?", (item_id,))

        _, stored = self._transaction(delete, [event], clock_ok=clock_ok)
        return stored

    def content_images(self) -> list[ContentImage]:
        """Every stored image, oldest first."""

        def select(conn: sqlite3.Connection) -> list[ContentImage]:
            return [
                ContentImage(*row)
                for row in conn.execute(
                    f"SELECT {_IMAGE_COLUMNS} FROM content_images ORDER BY uploaded_at, id"
                )
            ]

        return self._read(select)

    def content_image(self, image_id: str) -> ContentImage | None:
        def select(conn: sqlite3.Connection) -> ContentImage | None:
            row = conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM content_images WHERE id = ?", (image_id,)
            ).fetchone()
            return None if row is None else ContentImage(*row)

        return self._read(select)

    def content_image_bytes(self) -> int:
        """The bytes every stored image holds (what the storage cap counts)."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM content_images"
            ).fetchone()
        )
        return int(row[0])

    def save_content_image(
        self, image: ContentImage, event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Record an uploaded image (its file is already in place), with its event."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO content_images ({_IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                dataclasses.astuple(image),
            )

        _, stored = self._transaction(insert, [event], clock_ok=clock_ok)
        return stored

    def delete_content_image(
        self, image_id: str, event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Forget an image (the caller removes its file after the commit)."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM content_images WHERE id = ?", (image_id,))

        _, stored = self._transaction(delete, [event], clock_ok=clock_ok)
        return stored
