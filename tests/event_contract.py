"""The contract, checked on every event the agent emits in the test suite.

``install()`` wraps the one place the hall's events are written (``StoreCore._append``):
each typed event's ``data`` is validated against the generated schema of its type
(docs/contract/schemas/events/<type>.json, what central validates against), and a
failure is recorded with its type and the offending field. tests/conftest.py installs it
for the whole session and fails the test during which an event did not fit.

``RawEvent`` rows (copies between stores, tests of retention) carry no schema and are not
checked; events written by an agent running in a child process are checked by that
process's own tests, not here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from agent.core.events import Event
from agent.runtime.store.core import StoreCore

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "contract" / "schemas" / "events"


@dataclasses.dataclass(frozen=True)
class Misfit:
    """One event whose data did not validate against its type's schema."""

    type: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.type}: data{self.field}: {self.problem}"


class ContractCheck:
    """Validates events' data against their type's schema; remembers what did not fit."""

    def __init__(self, schemas: Path = SCHEMAS) -> None:
        self.schemas = schemas
        self.checked = 0
        self.seconds = 0.0
        self.misfits: list[Misfit] = []
        self._validators: dict[str, jsonschema.protocols.Validator | None] = {}
        self._lock = threading.Lock()

    def _validator(self, event_type: str) -> jsonschema.protocols.Validator | None:
        if event_type not in self._validators:
            path = self.schemas / f"{event_type}.json"
            if path.is_file():
                schema = json.loads(path.read_text(encoding="utf-8"))
                cls = jsonschema.validators.validator_for(schema)
                self._validators[event_type] = cls(schema)
            else:
                self._validators[event_type] = None
        return self._validators[event_type]

    def check(self, event_type: str, data: Any) -> list[Misfit]:
        """The ways ``data`` misfits ``event_type``'s schema (recorded, and returned)."""
        with self._lock:
            start = time.perf_counter()
            self.checked += 1
            validator = self._validator(event_type)
            if validator is None:
                found = [Misfit(event_type, "", f"no schema at {self.schemas}/{event_type}.json")]
            else:
                found = [
                    Misfit(event_type, "".join(f"[{p!r}]" for p in err.absolute_path), err.message)
                    for err in validator.iter_errors(data)
                ]
            self.misfits.extend(found)
            self.seconds += time.perf_counter() - start
            return found

    def take(self) -> list[Misfit]:
        """The misfits recorded so far; forgets them."""
        with self._lock:
            found, self.misfits = self.misfits, []
            return found


def install(check: ContractCheck) -> Callable[[], None]:
    """Check every typed event the store appends; returns the function that undoes it."""
    original = StoreCore._append

    @functools.wraps(original)
    def checked_append(self: StoreCore, events: Sequence[Any], clock_ok: bool) -> Any:
        for event in events:
            if isinstance(event, Event):
                check.check(event.type, event.data)
        return original(self, events, clock_ok)

    StoreCore._append = checked_append  # type: ignore[method-assign]

    def uninstall() -> None:
        StoreCore._append = original  # type: ignore[method-assign]

    return uninstall
