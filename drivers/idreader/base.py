"""The ID card reader's interface, its events, errors and health, whatever the transport."""

from __future__ import annotations

import abc
import dataclasses
import hashlib

from drivers.errors import DriverError
from protocols.idcard import IdCard


class IdReaderError(DriverError):
    """Base of the ID reader driver's errors; the message says what to do."""


class ReaderUnavailable(IdReaderError):
    """The reader cannot be reached or does not answer: unplugged, wrong port, hung."""


@dataclasses.dataclass(frozen=True, slots=True)
class CardPresented:
    """A card was placed on the reader and read. Personal data: never log it unmasked."""

    card: IdCard
    photo: bytes  # raw WLT, 1024 bytes (its decoder is licensed; central decodes)
    fingerprint: bytes | None = None
    additional_address: str | None = None

    @property
    def key(self) -> str:
        """Tells one card from another (debounce) without keeping its number around."""
        raw = f"{self.card.card_type}|{self.card.id_number}|{self.card.valid_from}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class CardRemoved:
    """The card read last is no longer found (taken away; some readers also stop finding
    a card once it was read, until it is placed again)."""


@dataclasses.dataclass(frozen=True, slots=True)
class CardProblem:
    """A card is there but cannot be read: what to tell the citizen."""

    message: str
    status: int | None = None


ReaderEvent = CardPresented | CardRemoved | CardProblem


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderHealth:
    connected: bool
    ok: bool
    detail: str = ""
    sam_id: str | None = None


class IdReader(abc.ABC):
    """One ID card reader, watched for cards. An async context manager.

    While open it keeps the reader connected (reconnecting after an unplug or a hang),
    polls for cards, and hands out one :data:`ReaderEvent` per card placed, removed or
    unreadable: a card left on the reader is read once.
    """

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the reader is, for people (``serial port /dev/ttyUSB0``)."""

    @property
    @abc.abstractmethod
    def health(self) -> ReaderHealth:
        """The reader's state now."""

    @abc.abstractmethod
    async def next_event(self) -> ReaderEvent:
        """Wait for the next card event."""

    @abc.abstractmethod
    async def __aenter__(self) -> IdReader: ...

    @abc.abstractmethod
    async def __aexit__(self, *exc: object) -> None: ...
