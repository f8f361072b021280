"""Environment overrides: a ``HALL_<SECTION>__<FIELD>`` variable sets a field of the file.

Names match the models' fields in any case; a list item is named by its index or its id.
Text fields take the value as it is, other fields read it as YAML.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import SecretStr

from agent.config.errors import ConfigProblem
from agent.config.root import HallAgentConfig
from agent.config.walk import (
    _index_label,
    _is_model,
    _is_optional,
    _join,
    _models_of_union,
    _pick_member,
    _strip,
    _tag,
)
from agent.config.yaml_loader import _load_yaml
from agent.errors import HallAgentError

ENV_PREFIX = "HALL_"


@dataclass(frozen=True, slots=True)
class _Override:
    variable: str
    keys: tuple[str | int, ...]


class _OverrideError(HallAgentError):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_NULL_TEXT = frozenset({"", "~", "null", "Null", "NULL"})


def _override_value(raw: str, tp: Any) -> object:
    """Text values for text fields (a password ``123456`` stays text); YAML otherwise."""
    if _is_optional(tp) and raw.strip() in _NULL_TEXT:
        return None
    if _strip(tp) in (str, SecretStr, Path):
        return raw
    try:
        return _load_yaml(raw)
    except yaml.YAMLError:
        return raw


def _empty_for(tp: Any, where: str) -> object:
    tp = _strip(tp)
    if _is_model(tp) or _models_of_union(tp) or get_origin(tp) is dict:
        return {}
    raise _OverrideError(
        f"{where} is not in the file, so there is nothing to set inside it",
        f"write {where} in the YAML file first",
    )


def _set_override(data: dict[str, Any], segments: list[str], raw: str) -> tuple[str | int, ...]:
    tp: Any = HallAgentConfig
    node: Any = data
    where = ""
    keys: list[str | int] = []
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        tp = _strip(tp)
        members = _models_of_union(tp)
        if members:
            chosen = _pick_member(members, node)
            if chosen is None:
                tags = [t[1] for m in members if (t := _tag(m)) is not None]
                raise _OverrideError(
                    f"{where} has no valid type to tell which fields it has",
                    f"set {where} to one of {', '.join(tags)} in the file first",
                )
            tp = chosen
        key: str | int
        if _is_model(tp):
            fields = list(tp.model_fields)
            name = next((f for f in fields if f == segment.lower()), None)
            if name is None:
                close = difflib.get_close_matches(segment.lower(), fields, n=1)
                guess = f"did you mean {close[0].upper()}? " if close else ""
                raise _OverrideError(
                    f"{where or 'the config'} has no field {segment.lower()!r}",
                    f"{guess}fields there: {', '.join(fields)}",
                )
            if not isinstance(node, dict):
                raise _OverrideError(f"{where} is not a mapping in the file", "fix the file first")
            key, child_tp = name, tp.model_fields[name].annotation
            label = _join(where, name)
        elif get_origin(tp) is list:
            if not isinstance(node, list):
                raise _OverrideError(f"{where} is not a list in the file", "fix the file first")
            index = _list_index(node, segment, where)
            key, child_tp = index, get_args(tp)[0]
            label = where + _index_label(index, node[index])
        elif get_origin(tp) is dict:
            if not isinstance(node, dict):
                raise _OverrideError(f"{where} is not a mapping in the file", "fix the file first")
            key = next((k for k in node if str(k).lower() == segment.lower()), segment)
            child_tp = get_args(tp)[1]
            label = _join(where, str(key))
        else:
            raise _OverrideError(
                f"{where} is a single value, it has no {segment!r} inside",
                "end the variable name at " + where,
            )
        if last:
            node[key] = _override_value(raw, child_tp)
        else:
            if isinstance(key, str) and node.get(key) is None:
                node[key] = _empty_for(child_tp, label)
            node = node[key]
        keys.append(key)
        tp, where = child_tp, label
    return tuple(keys)


def _list_index(items: list[Any], segment: str, where: str) -> int:
    if segment.isdigit():
        index = int(segment)
        if index < len(items):
            return index
        raise _OverrideError(
            f"{where} has {len(items)} item(s), there is no index {index}",
            f"use an index from 0 to {len(items) - 1} or an item id",
        )
    ids = [item.get("id") for item in items if isinstance(item, dict)]
    for index, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("id", "")).lower() == segment.lower():
            return index
    raise _OverrideError(
        f"{where} has no item with id {segment.lower()!r}",
        f"use an index or one of the ids: {', '.join(str(i) for i in ids if i is not None)}",
    )


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[list[_Override], list[ConfigProblem]]:
    """Apply ``HALL_<SECTION>__<FIELD>`` variables to the raw data, in name order."""
    sections = list(HallAgentConfig.model_fields)
    overrides: list[_Override] = []
    problems: list[ConfigProblem] = []
    for variable in sorted(environ):
        if variable[: len(ENV_PREFIX)].upper() != ENV_PREFIX:
            continue
        rest = variable[len(ENV_PREFIX) :]
        if "__" not in rest:
            # HALL_MQTT_URL is a typo of HALL_MQTT__URL; HALL_SOMETHING_ELSE is not ours.
            section = next((s for s in sections if rest.lower().startswith(s + "_")), None)
            if section is not None:
                fixed = f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :]}"
                problems.append(
                    ConfigProblem(
                        variable,
                        "looks like a config override but has a single '_' after the section",
                        f"write {fixed}",
                    )
                )
            continue
        segments = rest.split("__")
        if not all(segments):
            problems.append(
                ConfigProblem(
                    variable,
                    "empty part in the variable name",
                    "separate the parts with exactly two underscores: HALL_MQTT__TLS__CA_FILE",
                )
            )
            continue
        try:
            keys = _set_override(data, segments, environ[variable])
        except _OverrideError as err:
            problems.append(ConfigProblem(variable, err.message, err.hint))
        else:
            overrides.append(_Override(variable, keys))
    return overrides, problems
