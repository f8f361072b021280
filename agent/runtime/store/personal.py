"""Erasing sealed personal data from the outbox (see :mod:`agent.runtime.personal`).

An ``identity.read`` or ``case.registered`` event that holds a sealed person keeps it only
until central acknowledged the event, and at the latest ``max_hours`` after it was read: then the
sealed part is replaced by ``{"erased": ...}``; the rest of the event (flow, window,
ticket, hash) stays, and its size is counted again for retention.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3

from agent.runtime.store.core import StoreCore, _format_at

_ERASE_SQL = """
UPDATE events
   SET data = json_set(data, '$.person', json(?)),
       size = length(json_set(data, '$.person', json(?))) + 160
 WHERE type IN ('identity.read', 'case.registered')
   AND CASE WHEN json_valid(data) THEN json_extract(data, '$.person.sealed') END IS NOT NULL
   AND {condition}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Erasure:
    """How many events had their sealed personal data erased, and why."""

    acknowledged: int  # central acknowledged the event
    expired: int  # kept as long as allowed without an acknowledgement

    @property
    def count(self) -> int:
        return self.acknowledged + self.expired


class PersonalRows(StoreCore):
    """Erasure of sealed personal data (a part of ``Store``)."""

    def erase_personal_data(self, now: dt.datetime, max_hours: float) -> Erasure:
        """Erase the sealed personal data of acknowledged events, and of any read more
        than ``max_hours`` before ``now``, in one transaction."""
        acked = json.dumps({"erased": "acknowledged by central"})
        cutoff = _format_at(now - dt.timedelta(hours=max_hours))
        aged = json.dumps({"erased": f"kept no longer than {max_hours:g} hours"})

        def erase(conn: sqlite3.Connection) -> Erasure:
            acknowledged = conn.execute(
                _ERASE_SQL.format(condition="acked = 1"), (acked, acked)
            ).rowcount
            expired = conn.execute(
                _ERASE_SQL.format(condition="at < ?"), (aged, aged, cutoff)
            ).rowcount
            return Erasure(int(acknowledged), int(expired))

        erasure, _ = self._transaction(erase)
        return erasure
