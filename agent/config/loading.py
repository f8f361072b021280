"""Loading: read the YAML file, apply the ``HALL_*`` overrides and validate; and the JSON
Schema of the file, written by ``python -m agent.config --write-schema FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.env import _apply_overrides, _Override
from agent.config.errors import ConfigError, ConfigProblem, format_problems
from agent.config.messages import _problems_from
from agent.config.root import HallAgentConfig
from agent.config.yaml_loader import _load_yaml

# ---------------------------------------------------------------------------------------
# Loading


def _read_text(path: Path) -> str:
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problem = ConfigProblem(
            where,
            "file not found",
            "check the path; on a Pi it is /etc/hall-agent/config.yaml "
            "(start from config/example.yaml)",
        )
    except IsADirectoryError:
        problem = ConfigProblem(where, "is a directory", "give the path of the YAML file")
    except PermissionError:
        problem = ConfigProblem(
            where,
            "cannot read the file: permission denied",
            "make it readable by the user running hall-agent (e.g. group hall-agent, mode 640)",
        )
    except OSError as err:
        problem = ConfigProblem(where, f"cannot read the file: {err.strerror}", "check the path")
    else:
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            problem = ConfigProblem(
                f"{where}:{line}",
                f"the file is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})",
                "save it as UTF-8; editors on Chinese Windows often save GBK: "
                "convert with iconv -f GB18030 -t UTF-8",
            )
    raise ConfigError([problem])


def _yaml_hint(problem: str) -> str:
    if "'\\t'" in problem or "tab" in problem:
        return "indent with spaces; YAML does not allow tabs"
    if "found the key" in problem:
        return "remove one of the two keys, or merge their contents"
    if "mapping values are not allowed" in problem:
        return "quote a value containing ': ', or check this line's indentation"
    if "expected ':'" in problem or "simple key" in problem:
        return "write 'key: value' with a space after ':'; check this line's indentation"
    return "check the indentation (spaces only) and the quoting at that place"


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(
            [ConfigProblem(where, f"YAML syntax error: {what}", _yaml_hint(err.problem or ""))]
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(
            [ConfigProblem(str(path), f"YAML error: {err}", _yaml_hint(str(err)))]
        ) from err
    if data is None:
        raise ConfigError(
            [ConfigProblem(str(path), "the file is empty", "start from config/example.yaml")]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    f"the top level is a {type(data).__name__}, not a mapping of sections",
                    "the file starts with sections: hall:, services:, windows:, devices: ...",
                )
            ]
        )
    return data


def _validate(data: dict[str, Any], overrides: Sequence[_Override]) -> HallAgentConfig:
    try:
        return HallAgentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems_from(err, data, overrides)) from err


def validate_config(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> HallAgentConfig:
    """Validate already-parsed config data (e.g. pushed by central).

    ``environ`` overrides are applied when given; ``None`` applies none (unlike
    :func:`load_config`, whose ``None`` means ``os.environ``).
    """
    copy: dict[str, Any] = deepcopy(dict(data))
    overrides: list[_Override] = []
    if environ is not None:
        overrides, problems = _apply_overrides(copy, environ)
        if problems:
            raise ConfigError(problems)
    return _validate(copy, overrides)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> HallAgentConfig:
    """Read the YAML file, apply ``HALL_*`` overrides from ``environ`` (default
    ``os.environ``) and validate. Raises :class:`ConfigError` naming every problem."""
    data = _parse_yaml(_read_text(path), path)
    overrides, problems = _apply_overrides(data, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems)
    return _validate(data, overrides)


def check_config_file(path: Path, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``hall-agent check-config FILE``: ``(0, "ok")`` or ``(2, one line per problem)``."""
    try:
        load_config(path, environ)
    except ConfigError as err:
        return 2, format_problems(err.problems)
    return 0, "ok"


# ---------------------------------------------------------------------------------------
# JSON Schema


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file (for editors and for central's config pushes)."""
    return HallAgentConfig.model_json_schema()


def schema_text() -> str:
    """The committed form of ``config/schema.json``."""
    return json.dumps(config_schema(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.config", description="Config schema and checks for hall-agent."
    )
    parser.add_argument("--write-schema", type=Path, metavar="FILE", help="write the JSON Schema")
    parser.add_argument("--check", type=Path, metavar="FILE", help="check a config file")
    args = parser.parse_args(argv)
    if args.write_schema is not None:
        args.write_schema.write_text(schema_text(), encoding="utf-8")
    if args.check is not None:
        code, text = check_config_file(args.check)
        sys.stdout.write(text + "\n")
        return code
    if args.write_schema is None:
        sys.stdout.write(schema_text())
    return 0


# The settings key of the hall's own staff board (agent/features/staffing.py): the roster
# and the rota the manager edited on /pages/manager/staff, above the file's and central's.
HALL_STAFFING = "hall_staffing"


def with_staffing(config: HallAgentConfig, saved: Mapping[str, Any] | None) -> HallAgentConfig:
    """``config`` with the hall's edited roster and rota (``saved``: the
    :data:`HALL_STAFFING` setting, ``{"staff": [...], "rota": {...}}``) in place of its
    own, checked like the file. None: ``config`` unchanged."""
    if not saved:
        return config
    data = config.model_dump(mode="json")
    data["staff"] = list(saved["staff"])
    data["rota"] = dict(saved["rota"])
    return validate_config(data)
