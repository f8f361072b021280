"""docs/operations.md lists every log message at warning or above that the agent, its
drivers or hallctl can write, so an ops person can look up any line they see."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "operations.md"
LEVELS = {"warning", "error", "exception", "critical"}
PLACEHOLDER = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[sdifrgex]")


def messages() -> Iterator[tuple[str, int, str]]:
    """(file, line, format string) of every literal warning+ log call."""
    for root in ("agent", "drivers", "hallctl"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = node.func.value
                if not (isinstance(owner, ast.Name) and owner.id == "log"):
                    continue
                name, args = node.func.attr, node.args
                first = args[0] if name in LEVELS and args else None
                if name == "log" and len(args) >= 2:
                    first = args[1]  # log.log(level, message, ...): may be a warning
                if first is None:
                    continue
                # A message passed through a helper is checked at the helper's callers.
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield str(path.relative_to(REPO)), node.lineno, first.value


def helper_messages() -> Iterator[tuple[str, int, str]]:
    """hallctl logs through ``_warn_once(key, message, ...)``."""
    for path in sorted((REPO / "hallctl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_warn_once"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                yield str(path.relative_to(REPO)), node.lineno, str(node.args[1].value)


def key_fragment(message: str) -> str:
    """The longest literal part of a format string: what must appear in the page."""
    return max(PLACEHOLDER.split(message), key=len).strip()


def test_every_warning_and_error_message_is_documented() -> None:
    page = DOC.read_text(encoding="utf-8")
    found = [*messages(), *helper_messages()]
    assert len(found) > 30
    missing = [
        f"{file}:{line}: {message!r}"
        for file, line, message in found
        if key_fragment(message) not in page
    ]
    assert not missing, "add these to docs/operations.md (message, meaning, what to do):\n" + (
        "\n".join(missing)
    )


def test_the_fragment_rule_reads_messages_as_the_page_shows_them() -> None:
    assert key_fragment("central link down: %s; the hall keeps running and buffers") == (
        "; the hall keeps running and buffers"
    )
    assert key_fragment("printer %s: %s") == "printer"
    assert key_fragment("retrying every %.0f s") == "retrying every"
