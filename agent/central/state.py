"""The central link's state and counters, apart from the link: ``/healthz`` and
``/metrics`` answer before the link is built (agent/daemon.py starts the local API first)
and read them without loading the link's code and the contract's models."""

from __future__ import annotations

import dataclasses
import enum


class LinkState(enum.StrEnum):
    DISABLED = "disabled"
    MISCONFIGURED = "misconfigured"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    STOPPED = "stopped"


@dataclasses.dataclass(slots=True)
class LinkCounters:
    reconnects: int = 0
    published: int = 0
    connects: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    # Central's acks: the highest one applied (this epoch), and those the hall could not
    # apply as sent (malformed, for another epoch, or beyond the last seq it gave out).
    acked_seq: int = 0
    acks_malformed: int = 0
    acks_wrong_epoch: int = 0
    acks_beyond_last: int = 0
