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
    PollSettings,
)
from drivers.transport import LineTarget


def open_reader(
    target: LineTarget,
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
    "PollSettings",
    "ReaderEvent",
    "ReaderHealth",
    "ReaderUnavailable",
    "open_reader",
]
