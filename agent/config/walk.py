"""Walking the model types alongside raw data (for error paths and env overrides).

These helpers see through ``Annotated`` and ``| None`` and pick the member of a tagged
union (``kind`` or ``type``); the device models use them to list their transports.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel


def _strip(tp: Any) -> Any:
    """Remove Annotated and ``| None`` wrappers."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_optional(tp: Any) -> bool:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _models_of_union(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        if all(_is_model(a) for a in args):
            return list(args)
    return []


def _tag(model: type[BaseModel]) -> tuple[str, str] | None:
    """The discriminator field and value of a union member (``kind`` or ``type``)."""
    for name in ("kind", "type"):
        info = model.model_fields.get(name)
        if info is not None and get_origin(info.annotation) is Literal:
            return name, str(get_args(info.annotation)[0])
    return None


def _pick_member(members: list[type[BaseModel]], data: object) -> type[BaseModel] | None:
    if isinstance(data, dict):
        for member in members:
            tag = _tag(member)
            if tag is not None and data.get(tag[0]) == tag[1]:
                return member
    return None


def _index_label(index: int, item: object) -> str:
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return f"[{index}]({item['id']})"
    return f"[{index}]"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
