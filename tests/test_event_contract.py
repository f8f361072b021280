"""Every event the agent emits in the test suite validates against the generated schema of
its type: tests/conftest.py installs ``event_contract`` for the session and fails the test
during which an event did not fit. These tests show the check runs and what it reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from event_contract import ContractCheck

from agent.core import events as ev
from agent.runtime.store import Store
from agent.runtime.store.core import StoreCore

AT = dt.datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_the_check_sees_every_typed_event_the_store_appends(
    tmp_path: Path, contract_check: ContractCheck
) -> None:
    assert hasattr(StoreCore._append, "__wrapped__")
    store = Store.open(tmp_path / "state")
    try:
        before = contract_check.checked
        change = ev.DeviceChanged(
            device="printer-1", kind="printer", status="ok", detail="", since="2026-03-02"
        )
        applied = ev.ConfigApplied(version="v2", sections=["queue"])
        store.append([ev.Event(change, AT), ev.Event(applied, AT)])
        assert contract_check.checked == before + 2
    finally:
        store.close()


def test_a_misfit_names_its_type_and_the_offending_field() -> None:
    check = ContractCheck()
    bad = ev.ConfigApplied(version="v2", sections="queue")  # type: ignore[arg-type]
    found = check.check(bad.TYPE, bad.to_data())
    assert [(m.type, m.field) for m in found] == [("config.applied", "['sections']")]
    assert "is not of type 'array'" in found[0].problem
    assert str(found[0]).startswith("config.applied: data['sections']: ")
    assert check.take() == found
    assert check.take() == []


def test_a_field_the_schema_does_not_know_is_a_misfit() -> None:
    found = ContractCheck().check("config.applied", {"version": "v2", "sections": [], "x": 1})
    assert [m.type for m in found] == ["config.applied"]
    assert "'x' was unexpected" in found[0].problem


def test_a_type_without_a_schema_is_a_misfit() -> None:
    found = ContractCheck().check("ticket.teleported", {})
    assert [(m.type, m.field) for m in found] == [("ticket.teleported", "")]
    assert "no schema" in found[0].problem


def test_a_fitting_event_passes() -> None:
    check = ContractCheck()
    event = ev.Event(ev.ConfigApplied(version="v2", sections=["queue"]), AT)
    assert check.check(event.type, event.data) == []
    assert check.checked == 1
