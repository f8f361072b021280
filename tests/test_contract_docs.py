"""The committed contract documents are what the generator makes from the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.central.contract import COMMANDS
from hallctl import asyncapi

CONTRACT_DIR = Path(__file__).resolve().parents[1] / "docs" / "contract"

# DESIGN §5: direction from the hall's point of view, QoS, retained.
TABLE = {
    "state": ("send", 1, True),
    "device/{device_id}": ("send", 1, True),
    "event/{event_type}": ("send", 1, False),
    "reply": ("send", 1, False),
    "metrics": ("send", 0, False),
    "config": ("receive", 1, True),
    "ack": ("receive", 1, False),
    **{f"cmd/{name}": ("receive", 1, False) for name in COMMANDS},
    # Documented addition for captured documents (DESIGN §4: resumable, checksummed chunks).
    "file/{file_id}/chunk": ("send", 1, False),
    "file/{file_id}/complete": ("send", 1, False),
    "file-ack": ("receive", 1, False),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    text = (CONTRACT_DIR / asyncapi.ASYNCAPI_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_committed_documents_are_current() -> None:
    stale = asyncapi.stale_files(CONTRACT_DIR)
    assert stale == [], f"docs/contract is stale ({', '.join(stale)}): run scripts/gen-contract"


def test_document_is_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert {s["protocol"] for s in document["servers"].values()} == {"mqtt", "secure-mqtt"}
    assert all(s["protocolVersion"] == "5" for s in document["servers"].values())


def test_one_channel_per_command_with_its_own_schema(document: dict[str, Any]) -> None:
    for name, model in COMMANDS.items():
        address = f"hall/v1/{{hall_id}}/cmd/{name}"
        matching = [ch for ch in document["channels"].values() if ch["address"] == address]
        assert len(matching) == 1, f"{name}: {len(matching)} channels"
        (message_ref,) = matching[0]["messages"].values()
        message = _resolve(document, message_ref["$ref"])
        schema = _resolve(document, message["payload"]["$ref"])
        fields = {f.alias or n for n, f in model.model_fields.items()}  # get_report's "from"
        assert set(schema["properties"]) == fields, name
        assert schema["additionalProperties"] is False, f"{name} must refuse unknown fields"


def test_every_topic_of_the_design_table_with_its_qos_and_retain(
    document: dict[str, Any],
) -> None:
    seen = {}
    for operation in document["operations"].values():
        channel = _resolve(document, operation["channel"]["$ref"])
        suffix = channel["address"].removeprefix("hall/v1/{hall_id}/")
        binding = operation["bindings"]["mqtt"]
        seen[suffix] = (operation["action"], binding["qos"], binding["retain"])
        for name in channel["parameters"]:
            assert f"{{{name}}}" in channel["address"]
    assert seen == TABLE


def test_commands_are_answered_on_reply(document: dict[str, Any]) -> None:
    for name in COMMANDS:
        operation = document["operations"][f"receive_cmd_{name}"]
        assert operation["reply"]["channel"] == {"$ref": "#/channels/reply"}


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert len(refs) > 3 * len(COMMANDS)
    for ref in refs:
        assert _resolve(document, ref) is not None, ref


def test_schema_files_are_standalone_json_schemas() -> None:
    files = sorted((CONTRACT_DIR / asyncapi.SCHEMA_DIR).glob("*.json"))
    assert {p.stem for p in files} == {m.__name__ for m in asyncapi.payload_models()}
    for path in files:
        text = path.read_text(encoding="utf-8")
        schema = json.loads(text)
        assert text.endswith("}\n")
        assert schema["$schema"] == asyncapi.JSON_SCHEMA_DIALECT
        assert schema["title"] == path.stem
        # Standalone: references point inside the file, never into the AsyncAPI document.
        for ref in _refs(schema):
            assert ref.startswith("#/$defs/"), (path.name, ref)
            assert _resolve(schema, ref) is not None


def test_check_mode_reports_a_stale_directory(tmp_path: Path) -> None:
    assert asyncapi.main(["--write", str(tmp_path)]) == 0
    assert asyncapi.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "schemas" / "Ack.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "schemas" / "Gone.json").write_text("{}\n", encoding="utf-8")
    assert asyncapi.stale_files(tmp_path) == ["schemas/Ack.json", "schemas/Gone.json"]
    assert asyncapi.main(["--check", str(tmp_path)]) == 1
    asyncapi.write(tmp_path)
    assert not (tmp_path / "schemas" / "Gone.json").exists()
    assert asyncapi.stale_files(tmp_path) == []
