"""The one issuing path refuses, in words a citizen reads, while the hall cannot save a
ticket (a full or failing state disk), and issues again once the store takes writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import hall_config

from agent.config import validate_config
from agent.core.operations import Take
from agent.features.issuing import (
    DISK_FULL_DETAIL,
    STORE_FAILING,
    STORE_FAILING_DETAIL,
    STORE_RETRY_S,
    Issuing,
    StoreUnavailable,
)
from agent.runtime.hall import Hall
from agent.runtime.store import Store, StoreError, StoreFull


@pytest.mark.parametrize(
    ("failure", "code", "detail"),
    [
        (
            StoreFull("could not save: the state disk is full (database or disk is full)"),
            "disk_full",
            DISK_FULL_DETAIL,
        ),
        (StoreError("could not save: disk I/O error"), "store_unavailable", STORE_FAILING_DETAIL),
    ],
    ids=["disk full", "disk failing"],
)
async def test_issuing_is_disabled_with_a_plain_reason_while_writes_fail(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: StoreError,
    code: str,
    detail: str,
) -> None:
    config = validate_config(hall_config(tmp_path / "state"))
    store = Store.open(tmp_path / "state")
    try:
        async with Hall(config, store) as hall:
            now = [0.0]  # the issuing path's monotonic clock, moved by the test
            issuing = Issuing(hall, clock=lambda: now[0] + time.monotonic())
            assert issuing.state()["issuing"] == {"enabled": True, "reason": None, "citizen": None}
            first = await issuing.take(Take(service="social"))
            assert first.ticket is not None

            def fail(*args: object, **kwargs: object) -> object:
                raise failure

            with monkeypatch.context() as patched:
                patched.setattr(Store, "commit", fail)
                with pytest.raises(type(failure)):
                    await issuing.take(Take(service="social"))
                # The staff's reason names the cause the failed write found; the citizen
                # reads the same plain words either way.
                assert issuing.state()["issuing"] == {
                    "enabled": False,
                    "reason": detail,
                    "citizen": STORE_FAILING,
                }
                with pytest.raises(StoreUnavailable) as refused:
                    await issuing.take(Take(service="social"))
                assert refused.value.message == detail
                assert refused.value.citizen_message == STORE_FAILING
                assert refused.value.code == code

            # Still refused until the retry time is over; then one take is the probe, and
            # once the store takes writes again it succeeds and issuing is back.
            assert issuing.state()["issuing"]["enabled"] is False
            now[0] += STORE_RETRY_S
            assert issuing.state()["issuing"]["enabled"] is True
            again = await issuing.take(Take(service="social"))
            assert again.ticket is not None
            assert again.ticket.number == "A002"
    finally:
        store.close()
