"""Reading the store's rows defensively: bytes in, typed values or :class:`Damaged` out.

SQLite checks its pages, not what is inside a value: a changed byte in a ticket's JSON, or
bytes that are not UTF-8, pass ``PRAGMA integrity_check``. The store reads its rows as raw
bytes (never letting ``sqlite3`` decode text, whose error would quote the row) and decodes
them here; a row that does not decode — not UTF-8, not JSON, JSON that does not fit its
model or disagrees with the row's own columns — raises :class:`Damaged` with a reason that
names the problem, never the content (a row may hold personal data). The store then sets
the row aside (:mod:`agent.runtime.store.quarantine`) and goes on without it.

No SQL here: :class:`Table` says which columns a table's reads select, and the functions
turn one selected row (a column → value mapping) into its value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from agent.core.model import HallCounters, Ticket, WindowStatus
from agent.errors import HallAgentError
from agent.runtime.store.core import Damage, StoredEvent, _dumps

T = TypeVar("T")

Row = Mapping[str, Any]

# What a model's from_json raises on JSON of the wrong shape (a missing key, a wrong type,
# a value no enum or date has, an assert).
_UNFIT = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
    AssertionError,
)
# A \uD800-\uDFFF escape: half of a character, which no UTF-8 write can store again.
_HALF_CHARACTER = re.compile(r"\\u[dD][89a-fA-F]")
_KEY_SHOWN = 80


class Damaged(HallAgentError):
    """A row that does not decode. ``reason`` names the problem, never the row's content;
    ``replacement`` is what to keep in its place, if anything."""

    def __init__(self, reason: str, replacement: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.replacement = replacement


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    """What a read of one table selects: ``rowid``, then ``columns``."""

    name: str
    columns: tuple[str, ...]
    key: str  # the column that names a row in logs and in the quarantine table
    value: str | None  # the column kept as ``raw`` when the row is set aside (None: all)

    def select(self, where: str = "") -> str:
        """``SELECT rowid, <columns> FROM <table> [WHERE …]`` (``where`` is a constant)."""
        sql = f"SELECT rowid, {', '.join(self.columns)} FROM {self.name}"
        return f"{sql} WHERE {where}" if where else sql

    def values(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.columns, row[1:], strict=True))

    def damage(self, row: tuple[Any, ...], reason: str, replacement: str | None = None) -> Damage:
        """The row as it is kept in the quarantine table."""
        values = self.values(row)
        key = shown(values[self.key])
        if self.value is None:
            raw = lossless(values).encode("ascii")
            fields = "{}"
        else:
            raw = _as_bytes(values.pop(self.value))
            fields = lossless(values)
        return Damage(
            table=self.name,
            rowid=int(row[0]),
            key=key,
            reason=reason,
            raw=raw,
            column=self.value,
            fields=fields,
            replacement=replacement,
        )


TICKETS = Table("tickets", ("id", "day", "number", "service", "status", "data"), "id", "data")
WINDOWS = Table("windows", ("id", "data"), "id", "data")
HALL = Table("hall", ("id", "data"), "id", "data")
SETTINGS = Table("settings", ("key", "value"), "key", "value")
COMMANDS = Table("commands", ("cmd_id", "name", "received_at", "reply"), "cmd_id", "reply")
EVENTS = Table("events", ("seq", "id", "type", "at", "clock_ok", "class", "data"), "seq", "data")
DOCUMENTS = Table(
    "document_files",
    (
        "id",
        "document",
        "page",
        "content_type",
        "size",
        "sha256",
        "chunk_bytes",
        "chunks",
        "spool_bytes",
        "created_at",
        "sent_chunks",
        "state",
    ),
    "id",
    None,
)


# -- bytes, text, JSON -----------------------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogateescape")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def lossless(values: Mapping[str, Any]) -> str:
    """Columns as JSON, bytes that are not UTF-8 kept as ``\\udcXX`` escapes (reversible with
    ``json.loads(...)[k].encode("utf-8", "surrogateescape")``)."""
    return json.dumps({k: _plain(v) for k, v in values.items()}, ensure_ascii=True)


def shown(value: Any) -> str:
    """A row's key as logs show it: never raising, never long."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= _KEY_SHOWN else text[: _KEY_SHOWN - 1] + "…"


def text(value: Any, column: str) -> str:
    """A TEXT column's value, read as bytes: it must be UTF-8."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        raise Damaged(f"its {column} column is not text ({type(value).__name__})")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Damaged(
            f"its {column} column is not UTF-8 (byte {err.start}: {err.reason})"
        ) from None


def _no_constant(name: str) -> Any:
    raise Damaged(f"not JSON ({name} is not a number JSON knows)")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise Damaged("not JSON (a number too large for a float)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads(value: Any, column: str = "data") -> Any:
    """A JSON column's value, read as bytes: UTF-8 JSON that can be written back."""
    source = text(value, column)
    try:
        data = _DECODER.decode(source)
    except json.JSONDecodeError as err:
        raise Damaged(f"its {column} is not JSON ({err.msg} at character {err.pos})") from None
    except (ValueError, RecursionError) as err:
        raise Damaged(f"its {column} is not JSON ({type(err).__name__})") from None
    if _HALF_CHARACTER.search(source):
        try:
            _dumps(data).encode("utf-8")
        except UnicodeEncodeError:
            raise Damaged(
                f"its {column} holds half of a character (a \\ud800-style escape)"
            ) from None
    return data


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Damaged(f"its data is not a JSON object ({what} is one)")
    return data


def _fit(what: str, build: Callable[[dict[str, Any]], T], data: dict[str, Any]) -> T:
    try:
        return build(data)
    except _UNFIT as err:
        # The type only: the message of a ValueError may quote the value.
        raise Damaged(f"its data does not fit {what} ({type(err).__name__})") from None


def _optional(value: object, kind: type | tuple[type, ...]) -> bool:
    return value is None or isinstance(value, kind)


def _aware(*times: dt.datetime | None) -> bool:
    return all(t is None or t.tzinfo is not None for t in times)


def _agrees(row: Row, expected: Mapping[str, str]) -> None:
    for column, value in expected.items():
        if text(row[column], column) != value:
            raise Damaged(f"its {column} column disagrees with its data")


# -- the queue state ---------------------------------------------------------------------------


def ticket(row: Row) -> Ticket:
    t = _fit("a ticket", Ticket.from_json, _object(loads(row["data"]), "a ticket"))
    fits = (
        all(isinstance(v, str) for v in (t.id, t.number, t.service, t.issued_service))
        and all(
            _optional(v, str)
            for v in (t.window, t.staff, t.id_hash, t.granted_by, t.appointment, t.token)
        )
        and _optional(t.rating, dict)
        and isinstance(t.issued_at, dt.datetime)
        and _aware(t.issued_at, t.called_at, t.serving_at, t.ended_at)
    )
    if not fits:
        raise Damaged("its data does not fit a ticket (a value of the wrong type)")
    _agrees(
        row,
        {
            "id": t.id,
            "day": t.day.isoformat(),
            "number": t.number,
            "service": t.service,
            "status": t.status.value,
        },
    )
    return t


def window(row: Row) -> WindowStatus:
    w = _fit("a window", WindowStatus.from_json, _object(loads(row["data"]), "a window"))
    fits = (
        isinstance(w.id, str)
        and all(_optional(v, str) for v in (w.staff, w.staff_name, w.current))
        and _optional(w.rating, dict)
        and all(_optional(o["name"], str) for o in w.others)
    )
    if not fits:
        raise Damaged("its data does not fit a window (a value of the wrong type)")
    _agrees(row, {"id": w.id})
    return w


def hall(row: Row) -> HallCounters:
    return _fit("the hall's counters", HallCounters.from_json, _object(loads(row["data"]), "it"))


# -- the outbox --------------------------------------------------------------------------------


def event(epoch: int, row: Row) -> StoredEvent:
    """An event row. Its ``data`` must be a JSON object; whether it fits its type's schema
    is the consumer's question (``StoredEvent.payload`` answers ``Unreadable``)."""
    ev_id, kind, at = text(row["id"], "id"), text(row["type"], "type"), text(row["at"], "at")
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        raise Damaged("its at column is not a time") from None
    if when.tzinfo is None:
        raise Damaged("its at column has no UTC offset")
    if row["clock_ok"] not in (0, 1):
        raise Damaged("its clock_ok column is not 0 or 1")
    if row["class"] not in (0, 1, 2):
        raise Damaged("its class column is not a retention class")
    data = _object(loads(row["data"]), "an event's")
    return StoredEvent(epoch, int(row["seq"]), ev_id, kind, at, bool(row["clock_ok"]), data)


# -- central's settings and commands -------------------------------------------------------------

# The shape of the settings the agent writes itself; other keys (and the items of the lists
# central sends) are checked by their readers. The keys are the features' (central_config:
# agent/central/pushed.py; printing.concluded: agent/features/printing.py).
_SETTING_SHAPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "central_config": (
        "an object with a version and sections",
        lambda v: isinstance(v, dict) and "version" in v and isinstance(v.get("sections"), dict),
    ),
    "notices": ("a list", lambda v: isinstance(v, list)),
    "staff": ("a list", lambda v: isinstance(v, list)),
    "appointments": ("a list", lambda v: isinstance(v, list)),
    "printing.concluded": (
        "an object with an epoch and a seq",
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("epoch"), int)
            and isinstance(v.get("seq"), int)
        ),
    ),
}


def setting(key: str, row: Row) -> Any:
    value = loads(row["value"], "value")
    shape = _SETTING_SHAPES.get(key)
    if shape is not None and value is not None and not shape[1](value):
        raise Damaged(f"its value is not {shape[0]}")
    return value


_REPLY_STATUSES = ("ok", "rejected", "failed", "expired")


def command_reply(cmd_id: str, row: Row) -> dict[str, Any]:
    """A saved reply. A damaged one is replaced by a reply that says so: the command was
    executed when it was saved, and a repeated cmd_id must never execute it again."""
    try:
        reply = loads(row["reply"], "reply")
        if not (
            isinstance(reply, dict)
            and isinstance(reply.get("cmd_id"), str)
            and isinstance(reply.get("name"), str)
            and reply.get("status") in _REPLY_STATUSES
            and _optional(reply.get("error"), str)
            and _optional(reply.get("result"), dict)
        ):
            raise Damaged("its reply is not a reply")
    except Damaged as err:
        name = row["name"]
        substitute = {
            "cmd_id": cmd_id,
            "name": name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
            "status": "failed",
            "error": "this command was executed before; its saved reply was damaged on disk "
            "and set aside, so it is not executed again",
        }
        raise Damaged(err.reason, replacement=_dumps(substitute)) from None
    return reply


# -- the document spool ------------------------------------------------------------------------

_SPOOL_STATES = ("spooled", "sent", "delivered")
_SPOOL_INTS = ("page", "size", "chunk_bytes", "chunks", "spool_bytes", "sent_chunks")


def spool_file(row: Row) -> dict[str, Any]:
    """A ``document_files`` row's values, typed (``SpoolFile(**values)``)."""
    values: dict[str, Any] = {}
    for column in DOCUMENTS.columns:
        value = row[column]
        if column in _SPOOL_INTS:
            if not isinstance(value, int):
                raise Damaged(f"its {column} column is not a whole number")
            values[column] = value
        else:
            values[column] = text(value, column)
    if values["state"] not in _SPOOL_STATES:
        raise Damaged("its state column is not a spool state")
    return values
