"""The database file: its schema and migrations, opening it, the epoch, damage.

Also the read-only look ``hall-agent doctor`` takes at the file (:func:`check_file`),
which never migrates, moves or writes anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from agent.runtime.store.cases import CASES_MIGRATION
from agent.runtime.store.content import CONTENT_MIGRATION
from agent.runtime.store.core import StoreError
from agent.runtime.store.stats import STATS_MIGRATION

DB_NAME = "hall.db"
EPOCH_FILE = "epoch"
# SQLite's page size for the state file. Every B-tree page a commit changes is one WAL frame
# of page_size + 24 bytes, and a take changes about nine (its ticket, three ticket indexes,
# the hall row, the event and three event indexes): at 2 KiB instead of SQLite's 4 KiB a
# ticket's whole life writes about 40 % fewer bytes (docs/benchmarks.md, "Write
# amplification"), which an SD card feels as time and wear. (1 KiB pages save more still,
# but then freeing room on a full disk, one DELETE of a reserve's worth of events, needs
# more WAL than the released reserve holds.) New files are made with it; an existing file
# is converted once when it is opened (:func:`_adopt_page_size`).
PAGE_SIZE = 2048
# A page a checkpoint copies into the database once may have been changed by many commits
# since the last one: the fewer checkpoints, the fewer bytes in all.
WAL_CHECKPOINT_BYTES = 4 << 20
WAL_CHECKPOINT_PAGES = WAL_CHECKPOINT_BYTES // PAGE_SIZE
# While the hall checkpoints on its own connection (connect_checkpointer), its writer
# checkpoints only if the WAL grew to this many pages: a net, should those fall behind.
WAL_CHECKPOINT_NET_PAGES = 2 * WAL_CHECKPOINT_PAGES

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: the queue state and the outbox.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE hall (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
    CREATE TABLE tickets (
        id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        number TEXT NOT NULL,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        data TEXT NOT NULL,
        UNIQUE (day, number)
    );
    CREATE INDEX tickets_open ON tickets (status)
        WHERE status IN ('waiting','called','serving','held');
    CREATE TABLE windows (id TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        at TEXT NOT NULL,
        clock_ok INTEGER NOT NULL,
        class INTEGER NOT NULL,
        data TEXT NOT NULL,
        size INTEGER NOT NULL,
        published INTEGER NOT NULL DEFAULT 0,
        acked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_pending ON events (seq) WHERE published = 0;
    """,
    # 2: the central link: answered commands (dedupe across restarts), settings pushed by
    # central (config, notices, staff), counters that must survive pruning.
    """
    CREATE TABLE commands (
        cmd_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        received_at TEXT NOT NULL,
        reply TEXT NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE INDEX events_unacked ON events (class, seq) WHERE acked = 0;
    """,
    # 3: captured documents: one row per page file waiting in the spool
    # (agent/runtime/store/documents.py; the spool itself is agent/features/documents.py)
    # and how far its upload to central got.
    """
    CREATE TABLE document_files (
        id TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        page INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        chunk_bytes INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        spool_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        sent_chunks INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'spooled',
        delivered_at TEXT
    );
    CREATE INDEX document_files_pending ON document_files (created_at)
        WHERE state != 'delivered';
    """,
    # 4: access (agent/runtime/store/access.py): enrolled devices, people's logins and their
    # sessions. Tokens are kept as SHA-256, passwords as argon2 hashes, never in clear.
    """
    CREATE TABLE access_devices (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        window TEXT,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE access_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        windows TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE access_sessions (
        token_sha256 TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES access_users (name) ON DELETE CASCADE,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX access_sessions_user ON access_sessions (user);
    """,
    # 5: rows a read could not decode (damaged on disk), moved here whole and kept:
    # agent/runtime/store/quarantine.py. ``raw`` is the damaged value's bytes as they were,
    # ``fields`` the row's other columns as JSON.
    """
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        raw BLOB NOT NULL,
        fields TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    );
    """,
    # 6: statistics (agent/runtime/store/stats.py): one row per ticket's life and one per
    # staff member's duty or a window's pause, written with the events that change them,
    # so reports never depend on events the outbox's retention deletes.
    STATS_MIGRATION,
    # 7: the hall's own screen content (agent/runtime/store/content.py): notices, community
    # news and job items, and the images uploaded for them (their files under
    # <storage.path>/content/).
    CONTENT_MIGRATION,
    # 8: proxy cases (agent/runtime/store/cases.py): one row per case, its citizen sealed
    # in ``person`` until the case closes.
    CASES_MIGRATION,
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # Only a new, empty file takes it here (before WAL mode writes its first page).
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # Checkpoint when the WAL holds 4 MiB, as SQLite's default 1 000 pages of 4 KiB did.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.DatabaseError:
        # A file that is not a database fails here: close it before it is moved aside.
        conn.close()
        raise
    return conn


def connect_checkpointer(path: Path) -> sqlite3.Connection:
    """A connection that only checkpoints (copies the WAL into the database beside the
    hall's writer): a PASSIVE checkpoint waits for no writer or reader and none waits for
    it; it syncs the WAL and the database as the writer's own checkpoints would."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A connection that only reads (the hall's reads beside its writer): in WAL mode it
    sees the last commit and never waits for a write in progress."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def prepare(conn: sqlite3.Connection, directory: Path) -> int:
    """Check the file, apply the missing migrations; returns the store's epoch."""
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {ok}")
        _adopt_page_size(conn, directory / DB_NAME)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the state database is schema version {version}, newer than this "
                f"agent knows ({len(MIGRATIONS)}); install the newer agent again"
            )
        for number in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    except (sqlite3.DatabaseError, StoreError):
        conn.close()
        raise
    if row is not None:
        return int(row[0])
    # The file is written first: a crash between the two skips an epoch, never reuses one.
    damaged = len(list(directory.glob(f"{DB_NAME}.damaged-*[!lm]")))
    epoch = max(_read_epoch_file(directory), damaged) + 1
    _write_epoch_file(directory, epoch)
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (str(epoch),))
    return epoch


def _adopt_page_size(conn: sqlite3.Connection, path: Path) -> None:
    """Give a file made with another page size :data:`PAGE_SIZE`, once, with ``VACUUM``.

    Safe against a crash or a full disk: the conversion runs in SQLite's rollback-journal
    mode, where ``VACUUM`` is one transaction (a crash part-way is rolled back from the
    journal when the file is next opened; a failure leaves the file as it was). It is only
    tried with room on the disk for a second copy; when it cannot be done the store goes
    on with the page size it has (it works with any) and tries again at the next start.
    """
    current = int(conn.execute("PRAGMA page_size").fetchone()[0])
    if current == PAGE_SIZE or conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        return
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    free = shutil.disk_usage(path.parent).free
    if free < 2 * size + (1 << 20):
        log.warning(
            "the state database %s keeps its %d-byte pages for now: converting it to %d-byte "
            "pages (fewer bytes written per commit) needs %d MiB free on its disk, %d MiB are",
            path,
            current,
            PAGE_SIZE,
            (2 * size >> 20) + 1,
            free >> 20,
        )
        return
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("VACUUM")
    except sqlite3.OperationalError as err:
        log.warning(
            "the state database %s keeps its %d-byte pages for now (converting them failed: "
            "%s); nothing was changed, it is tried again at the next start",
            path,
            current,
            err,
        )
    else:
        log.info("the state database %s now has %d-byte pages (was %d)", path, PAGE_SIZE, current)
    finally:
        conn.execute("PRAGMA journal_mode=WAL")


def move_aside(path: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():  # damaged twice in one second: never overwrite the first
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm", "-journal"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside


def _statements(script: str) -> Iterator[str]:
    for part in script.split(";"):
        if part.strip():
            yield part.strip()


def _read_epoch_file(directory: Path) -> int:
    try:
        return int((directory / EPOCH_FILE).read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return 0


def _write_epoch_file(directory: Path, epoch: int) -> None:
    """Remember the epoch beside the database, so a recreated store never reuses one."""
    target = directory / EPOCH_FILE
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", encoding="ascii") as fh:
        fh.write(f"{epoch}\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- the doctor's look -------------------------------------------------------------------


class CannotOpen(StoreError):
    """The file could not be opened read-only (the message is SQLite's)."""


class CannotRead(StoreError):
    """The file opened but could not be read: damaged, or not a database (SQLite's words)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FileCheck:
    """What a read-only look at the database file found."""

    quick_check: str  # "ok", or what PRAGMA quick_check found wrong
    version: int  # the schema version (PRAGMA user_version)
    epoch: str | None  # as stored in meta; None when the file has none yet
    unpublished: int  # events not yet confirmed by the broker


def check_file(path: Path) -> FileCheck:
    """Look at an existing database file without changing it (``hall-agent doctor``).

    Raises :class:`CannotOpen` or :class:`CannotRead`; never migrates, never moves aside.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as err:
        raise CannotOpen(str(err)) from err
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        unsent = conn.execute("SELECT COUNT(*) FROM events WHERE published = 0").fetchone()
    except sqlite3.DatabaseError as err:
        raise CannotRead(str(err)) from err
    finally:
        conn.close()
    return FileCheck(
        quick_check=str(check),
        version=version,
        epoch=None if epoch is None else str(epoch[0]),
        unpublished=int(unsent[0]),
    )


def copy_file(path: Path, copy: Path) -> int:
    """A consistent copy of the database at ``path`` (its WAL included) into the new file
    ``copy``, through SQLite's backup API; the copy's schema version. Used before an
    update's first start (docs/fleet.md): a rollback restores it if the new version
    migrated the file."""
    if copy.exists():
        raise FileExistsError(f"{copy} exists; it would be overwritten")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            version = int(target.execute("PRAGMA user_version").fetchone()[0])
        finally:
            target.close()
    finally:
        source.close()
    return version


def file_version(path: Path) -> int:
    """The schema version of the database file at ``path`` (its WAL included), read-only.
    Raises :class:`CannotOpen` or :class:`CannotRead`."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as err:
        raise CannotOpen(str(err)) from err
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as err:
        raise CannotRead(str(err)) from err
    finally:
        conn.close()


def known_version() -> int:
    """The schema version this agent's migrations lead to."""
    return len(MIGRATIONS)
