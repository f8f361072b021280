"""Translating pydantic errors: each becomes a :class:`ConfigProblem` an ops person can act
on, with a path people read (``devices[2](printer).transport.port``), what is wrong, and
the fix.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.config.base import (
    ENV_NAME_PATTERN,
    HALL_ID_PATTERN,
    IDENTIFIER_PATTERN,
    KEY_NAME_PATTERN,
    LANGUAGE_PATTERN,
    PREFIX_PATTERN,
    REGION_CODE_PATTERN,
)
from agent.config.devices import DEVICE_KINDS
from agent.config.env import _Override
from agent.config.errors import ConfigProblem, CrossCheckError
from agent.config.root import HallAgentConfig
from agent.config.walk import (
    _index_label,
    _is_model,
    _join,
    _models_of_union,
    _pick_member,
    _strip,
    _tag,
)

DOCS_HINT = "see docs/configuration.md"
_DATE_KEY = re.compile(r"^datetime\.date\((\d+), (\d+), (\d+)\)$")

# What each pattern means, in words, for the person fixing the file.
_PATTERN_HINTS: dict[str, str] = {
    IDENTIFIER_PATTERN: "an id is 1-32 characters: lower-case letters a-z, digits, '-' or '_', "
    "starting with a letter or digit (e.g. social-security)",
    HALL_ID_PATTERN: "a hall id is 2-63 characters: lower-case letters a-z, digits and '-', "
    "starting with a letter or digit (e.g. bj-hd-zgc-001); it is the MQTT client id",
    PREFIX_PATTERN: "a ticket prefix is 1 or 2 capital letters A-Z (e.g. A or GA)",
    KEY_NAME_PATTERN: "use an evdev key name as evtest prints it (e.g. KEY_F1, KEY_KP1, BTN_0)",
    ENV_NAME_PATTERN: "use an environment variable name: capital letters, digits and '_' "
    "(e.g. HALL_CALLER_TOKEN)",
    REGION_CODE_PATTERN: "use the 6-digit administrative division code (行政区划代码), "
    "or its 12-digit form down to the street/community",
    LANGUAGE_PATTERN: "use a language tag naming a clip pack: zh (Mandarin), en, yue, ug, bo ...",
}


# ---------------------------------------------------------------------------------------
# Where an error is: a pydantic error location as a path in the file


@dataclass(frozen=True, slots=True)
class _Place:
    path: str
    keys: tuple[str | int, ...]
    model: type[BaseModel] | None  # the model holding ``field``
    field: str | None
    is_key: bool  # the error is about a mapping key, not its value


def _locate(loc: Sequence[str | int], data: object) -> _Place:
    """Turn a pydantic error location into a path people read, skipping union tags."""
    tp: Any = HallAgentConfig
    path = ""
    keys: list[str | int] = []
    model: type[BaseModel] | None = None
    field: str | None = None
    is_key = False
    for raw in loc:
        item = raw
        tp = _strip(tp)
        members = _models_of_union(tp)
        if members:
            chosen = next((m for m in members if (_tag(m) or ("", ""))[1] == item), None)
            if chosen is not None:
                tp = chosen
                continue
            tp = _pick_member(members, data)
        if isinstance(raw, str) and _DATE_KEY.match(raw):
            # pydantic writes a date key (calendar.special_dates) as its repr.
            item = dt.date(*(int(n) for n in _DATE_KEY.findall(raw)[0])).isoformat()
        if isinstance(item, int) and get_origin(tp) is dict:
            # An int key (calendar.years.2026), not a list index.
            path = _join(path, str(item))
            data = data.get(item, data.get(str(item))) if isinstance(data, dict) else None
            tp = get_args(tp)[1]
            keys.append(item)
        elif isinstance(item, int):
            path += _index_label(item, data[item] if isinstance(data, list) else None)
            data = data[item] if isinstance(data, list) and 0 <= item < len(data) else None
            tp = get_args(tp)[0] if get_origin(tp) is list else None
            keys.append(item)
        elif item == "[key]":
            is_key = True
        else:
            if _is_model(tp):
                model, field = tp, item
                info = tp.model_fields.get(item)
                tp = info.annotation if info else None
            else:
                tp = get_args(tp)[1] if get_origin(tp) is dict else None
            path = _join(path, item)
            data = data.get(item) if isinstance(data, dict) else None
            keys.append(item)
    return _Place(path or "config", tuple(keys), model, field, is_key)


# ---------------------------------------------------------------------------------------
# Translating pydantic errors


def _constraints(annotation: Any, metadata: Sequence[object]) -> Iterator[object]:
    """Constraint objects of a field, including those inside ``Annotated[...] | None``."""
    yield from metadata
    for arg in get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ():
        if get_origin(arg) is Annotated:
            for extra in get_args(arg)[1:]:
                yield from getattr(extra, "metadata", [extra])


def _range_text(place: _Place) -> str:
    """The allowed range of the field, e.g. ``from 30 to 60``; empty when unbounded."""
    info = place.model.model_fields.get(place.field or "") if place.model else None
    if info is None:
        return ""
    low = high = None
    for item in _constraints(info.annotation, info.metadata):
        for name in ("ge", "gt"):
            low = getattr(item, name, None) if getattr(item, name, None) is not None else low
        for name in ("le", "lt"):
            high = getattr(item, name, None) if getattr(item, name, None) is not None else high
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _unquote(value: object) -> str:
    """pydantic quotes names in its error context (``"'kind'"``); people need no quotes."""
    return str(value).replace("'", "")


def _hint(error: ErrorDetails, place: _Place) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return f"add the field {place.field!r}" if place.field else "add the field"
    if kind == "extra_forbidden":
        allowed = list(place.model.model_fields) if place.model else []
        close = difflib.get_close_matches(str(place.field), allowed, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return f"{guess}remove it or check the spelling; allowed keys are {', '.join(allowed)}"
    if kind in ("literal_error", "enum"):
        return f"use one of: {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"use one of: {_unquote(ctx.get('expected_tags'))}"
    if kind == "union_tag_not_found":
        name = _unquote(ctx.get("discriminator"))
        kinds = f": one of {', '.join(DEVICE_KINDS)}" if name == "kind" else ""
        return f"add {name}{kinds}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return _PATTERN_HINTS.get(pattern, f"it must match the pattern {pattern}")
    if kind == "string_type":
        return 'write text; quote it if YAML reads it as a number or true/false (e.g. "2024")'
    if kind == "string_too_short":
        return f"write at least {ctx.get('min_length')} character(s)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"use a value{_range_text(place)}"
    if kind.startswith(("int_", "float_")):
        number = "a whole number" if kind.startswith("int_") else "a number"
        return f"write {number}{_range_text(place)}"
    if kind.startswith("bool_"):
        return "write true or false"
    if kind == "too_short":
        return f"give at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} item(s)"
    if kind == "list_type":
        return "write a list: one '- item' per line, or [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "write a mapping: 'key: value' lines indented under it"
    if kind.startswith("time_"):
        return "write the time as HH:MM, e.g. 09:00 or 17:30"
    if kind.startswith("path_"):
        return "write a file path, e.g. /var/lib/hall-agent"
    return DOCS_HINT


def _message(error: ErrorDetails, place: _Place) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "union_tag_invalid":
        return f"unknown {_unquote(ctx.get('discriminator'))} {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return f"no {_unquote(ctx.get('discriminator'))} given"
    if kind == "string_pattern_mismatch":
        what = "key" if place.is_key else "value"
        return f"{what} {value!r} does not have the required form"
    message = error["msg"].removeprefix("Value error, ")
    secret = place.field is not None and "password" in place.field
    if kind != "invalid" and not secret and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    if place.is_key:
        message = f"key: {message}"
    return message


def _problems_from(
    err: ValidationError, data: object, overrides: Sequence[_Override]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in err.errors():
        ctx: dict[str, Any] = dict(error.get("ctx") or {})
        cause = ctx.get("error")
        if isinstance(cause, CrossCheckError):
            problems.extend(cause.problems)
            continue
        place = _locate(error["loc"], data)
        path = _join(place.path, ctx["at"]) if "at" in ctx else place.path
        message = _message(error, place)
        for override in overrides:
            common = min(len(override.keys), len(place.keys))
            if place.keys and override.keys[:common] == place.keys[:common]:
                message += f" (set by {override.variable})"
                break
        problems.append(ConfigProblem(path, message, str(ctx.get("hint") or _hint(error, place))))
    return problems
