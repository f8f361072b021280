"""docs/central-integration.md lists every event type the hall emits: the list is
generated from ``EVENT_TYPES`` (hallctl/typelist.py) and must be current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.core.events import EVENT_TYPES
from hallctl import typelist

ROOT = Path(__file__).resolve().parent.parent


def test_the_type_list_in_the_docs_is_current() -> None:
    text = typelist.DOC.read_text(encoding="utf-8")
    assert typelist.updated(text) == text, (
        "run scripts/gen-contract (python -m hallctl.typelist --write)"
    )


def test_every_type_is_listed_with_its_schema_and_the_schema_exists() -> None:
    text = typelist.render()
    linked = re.findall(r"\(contract/schemas/events/([a-z_.]+)\.json\)", text)
    assert linked == list(EVENT_TYPES)
    for event_type in linked:
        assert (ROOT / "docs" / "contract" / "schemas" / "events" / f"{event_type}.json").is_file()


def test_the_generator_refuses_a_doc_without_its_markers() -> None:
    with pytest.raises(ValueError, match="lacks the markers"):
        typelist.updated("no markers here")
