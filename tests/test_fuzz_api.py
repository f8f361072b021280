"""Fuzz the local API from its own OpenAPI document (Schemathesis), bounded in examples:
no input may give a server error, and every status answered is one the document declares.

A real ``hall-agent run`` is fuzzed with the ops credential (every route reachable), so the
generated requests reach the handlers, not only the access check.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from support import AgentProcess, hall_config, write_config

# Examples per operation: enough to find a 500 from a range or a type, small enough for CI.
EXAMPLES = 15
# Routes whose answer is a stream that does not end (the pages' feeds).
STREAMING = ("/stream", "/events/stream")


def _fuzz(
    operation: Any, url: str, headers: dict[str, str], seen: Counter[str], failures: list[str]
) -> Callable[[], None]:
    """A hypothesis test of one operation, bounded in examples."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        seen[f"{operation.label} {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
        except (Exception, BaseExceptionGroup) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            failures.append(f"{operation.label}: {' '.join(lines[:4])}")
            raise

    return fuzz


@pytest.mark.timeout(600)
def test_no_server_error_and_only_documented_statuses(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    config = write_config(tmp_path / "hall.yaml", hall_config(storage))
    agent = AgentProcess(config, storage, tmp_path / "agent.log")
    url = agent.start()
    try:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        headers = agent.ops
        seen: Counter[str] = Counter()
        failures: list[str] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if any(part in operation.path for part in STREAMING):
                continue
            with contextlib.suppress(Exception, BaseExceptionGroup):  # each is in `failures`
                _fuzz(operation, url, headers, seen, failures)()
        assert sum(seen.values()) > 100, seen
        assert failures == [], "\n".join(failures)
        assert "Traceback" not in agent.log_path.read_text(encoding="utf-8")
    finally:
        agent.terminate()
