"""The rows of the document spool (``document_files``): one per captured page file.

The sealed files themselves, their capture and their upload are
:mod:`agent.features.documents`; this part keeps which files wait for central, how far each
upload got and when central took a file, each change in its own transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

from agent.core.events import Event
from agent.runtime.store import rows
from agent.runtime.store.core import StoredEvent, _format_at
from agent.runtime.store.quarantine import QuarantineRows


@dataclasses.dataclass(frozen=True, slots=True)
class SpoolFile:
    """A row of ``document_files``: a page file waiting in the spool."""

    id: str
    document: str
    page: int
    content_type: str
    size: int
    sha256: str
    chunk_bytes: int
    chunks: int
    spool_bytes: int
    created_at: str
    sent_chunks: int
    state: str  # spooled | sent | delivered

    def _row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name.strip()) for name in _COLUMNS.split(","))


_COLUMNS = (
    "id, document, page, content_type, size, sha256, chunk_bytes, chunks, spool_bytes, "
    "created_at, sent_chunks, state"
)


class DocumentRows(QuarantineRows):
    """The document spool's rows (a part of ``Store``)."""

    def spool_document(
        self, files: Sequence[SpoolFile], event: Event, *, clock_ok: bool = True
    ) -> list[StoredEvent]:
        """Record a captured document's page files with its event, in one transaction
        (the files are already in the spool: save first, then tell)."""
        rows = [f._row() for f in files]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO document_files ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        _, stored = self._transaction(insert, [event], clock_ok=clock_ok)
        return stored

    def save_upload_progress(self, file_id: str, sent_chunks: int, state: str) -> None:
        """How many chunks of a file the broker confirmed (``state``: spooled or sent)."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE document_files SET sent_chunks = ?, state = ? "
                "WHERE id = ? AND state != 'delivered'",
                (sent_chunks, state, file_id),
            )

        self._transaction(update)

    def document_delivered(self, file_id: str, at: dt.datetime) -> bool:
        """Central has the file; True when this marked it delivered (False: it already
        was, or no such file)."""

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE document_files SET state = 'delivered', delivered_at = ? "
                "WHERE id = ? AND state != 'delivered'",
                (_format_at(at), file_id),
            ).rowcount

        count, _ = self._transaction(update)
        return bool(count)

    def pending_documents(self) -> list[SpoolFile]:
        """The files not yet delivered, oldest first."""

        def select(_: sqlite3.Connection) -> list[SpoolFile]:
            found = self._raw(rows.DOCUMENTS.select("state != 'delivered' ORDER BY created_at, id"))
            return [SpoolFile(**v) for v in self._decoded(rows.DOCUMENTS, found, rows.spool_file)]

        return self._read(select)

    def pending_document_ids(self) -> set[str]:
        """The ids of the files not yet delivered (a spool file no row names is an orphan),
        and of the files whose row was set aside as damaged (their files are kept too)."""

        def select(_: sqlite3.Connection) -> set[str]:
            found = self._raw(
                "SELECT id FROM document_files WHERE state != 'delivered' UNION "
                "SELECT key FROM quarantine WHERE source = 'document_files'"
            )
            return {rows.shown(r[0]) for r in found}

        return self._read(select)

    def spool_bytes(self) -> int:
        """The bytes the files not yet delivered hold in the spool."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT COALESCE(SUM(spool_bytes), 0) FROM document_files "
                "WHERE state != 'delivered'"
            ).fetchone()
        )
        return int(row[0])
