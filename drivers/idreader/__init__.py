"""ID card readers (GA/T 467): the :class:`IdReader` interface and its transports.

``open_reader(target)`` picks the implementation; a test can pass any :class:`IdReader`
(or a connector of its own to :class:`Gat467Watcher`) instead.
"""

from collections.abc import Callable

from drivers.idreader.base import (
    CardPresented,
    CardProblem,
    CardRemoved,
    IdReader,
    IdReaderError,
    ReaderEvent,
    ReaderHealth,
    ReaderUnavailable,
)
from drivers.idreader.gat467_reader import (
    Gat467Client,
    Gat467Watcher,
    NetworkTarget,
    PollSettings,
    SerialTarget,
    Target,
    open_streams,
)


def open_reader(
    target: Target,
    settings: PollSettings | None = None,
    on_health: Callable[[ReaderHealth], None] | None = None,
) -> IdReader:
    """The watcher for a reader on a serial line or TCP (no I/O until entered)."""
    return Gat467Watcher(target, settings, on_health=on_health)


__all__ = [
    "CardPresented",
    "CardProblem",
    "CardRemoved",
    "Gat467Client",
    "Gat467Watcher",
    "IdReader",
    "IdReaderError",
    "NetworkTarget",
    "PollSettings",
    "ReaderEvent",
    "ReaderHealth",
    "ReaderUnavailable",
    "SerialTarget",
    "Target",
    "open_reader",
    "open_streams",
]
