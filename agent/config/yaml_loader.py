"""YAML as the config file is read: YAML 1.2 scalars and no duplicate keys.

Used for the file itself and for ``HALL_*`` override values that are not text. Parsed by
libyaml when PyYAML has it (about ten times faster than PyYAML's own parser: ~20 ms less
of every start here, more on a Pi), with the same resolvers and constructors; a text it
refuses is parsed again by PyYAML's own parser, whose error messages (and their places)
the config's problems quote.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import yaml


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars and no duplicate keys.

    YAML 1.1 (PyYAML's default) reads ``13:30`` as the base-60 number 810, which pydantic
    then takes as 00:13:30; ``on``/``no`` as booleans and ``010`` as octal. Here times stay
    text, only true/false are booleans, and ints are decimal, ``0x..`` or ``0o..``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        return _construct_mapping_once(self, node, deep)


def _construct_mapping_once(
    loader: yaml.constructor.SafeConstructor, node: yaml.MappingNode, deep: bool
) -> dict[Hashable, Any]:
    seen: dict[str, yaml.Mark] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        first = seen.setdefault(key_node.value, key_node.start_mark)
        if first is not key_node.start_mark:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key_node.value!r} twice (first on line {first.line + 1})",
                key_node.start_mark,
            )
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_CSafeLoader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


class _FastYamlLoader(_CSafeLoader or yaml.SafeLoader):  # type: ignore[misc]
    """The same rules over libyaml's parser (PyYAML's own when it was built without it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        return _construct_mapping_once(self, node, deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    if digits[:2] in ("0o", "0O"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_RESOLVERS = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LOADERS: tuple[type[yaml.SafeLoader] | type[yaml.CSafeLoader], ...] = (
    _YamlLoader,
    _FastYamlLoader,
)
_YAML12 = (
    (_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    (
        _INT_TAG,
        re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"),
        list("-+0123456789"),
    ),
    (
        _FLOAT_TAG,
        re.compile(
            r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    ),
)
for _loader in _LOADERS:
    _loader.yaml_implicit_resolvers = {k: list(v) for k, v in _RESOLVERS.items()}
    for _tag, _pattern, _first in _YAML12:
        _loader.add_implicit_resolver(_tag, _pattern, _first)
    _loader.add_constructor(_INT_TAG, _construct_int)


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A date (calendar.years, special_dates); one that is no date (2026-13-01) stays text,
    so that validation says which and why instead of the loader failing."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)  # type: ignore[arg-type]
    except ValueError:
        assert isinstance(node, yaml.ScalarNode)
        return str(loader.construct_scalar(node))


for _loader in _LOADERS:
    _loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _load_yaml(text: str) -> Any:
    try:
        return _load_with(_FastYamlLoader, text)
    except yaml.YAMLError:
        # PyYAML's own parser says what is wrong in the words the config's problems quote.
        return _load_with(_YamlLoader, text)


def _load_with(kind: type[yaml.SafeLoader] | type[yaml.CSafeLoader], text: str) -> Any:
    loader = kind(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
