"""Virtual LED strips on one RS-485 bus, over TCP (a serial-to-Ethernet adapter) or a pty.

It speaks the real frames of :mod:`protocols.led`: it parses what the host sends with the
same parser a strip's firmware would need, answers ``text_frame`` frames addressed to a
strip it has (``CMD | 0x80`` with a status byte), and keeps what every strip shows and
every frame it got, with the time its last byte arrived, for tests and the benchmark.

Run on its own::

    python -m agent.demo.emulators.led --port 9201 [--protocol text_frame] [--pty]

It prints each strip's text as it changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable

from agent.demo.emulators._serving import Ports, Write, run_standalone, standalone_parser
from protocols.led import (
    REPLY,
    BoardFrame,
    Command,
    LedProtocolError,
    Rejected,
    ReplyStatus,
    TextFrame,
    codec_for,
    encode_text_frame,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """A frame a strip got: when its last byte arrived (``time.perf_counter()``)."""

    address: int
    text: str  # what the strip shows after it ("" when blank)
    flash: bool
    received_at: float
    raw: TextFrame | BoardFrame


@dataclasses.dataclass(slots=True)
class StripState:
    text: str = ""
    flash: bool = False
    frames: int = 0


class VirtualLedBus:
    """The emulator; ``async with`` closes its ports."""

    def __init__(
        self,
        protocol: str = "text_frame",
        *,
        addresses: Iterable[int] | None = None,
        on_change: Callable[[int, StripState], None] | None = None,
    ) -> None:
        self.codec = codec_for(protocol)
        #: Addresses of the strips on the bus; None: every address answers.
        self.addresses = None if addresses is None else set(addresses)
        self.strips: dict[int, StripState] = {}
        self.frames: list[ReceivedFrame] = []
        self.rejected: list[Rejected] = []
        self.muted = False  # a strip that does not answer (power off, wrong address)
        self._on_change = on_change
        self._ports = Ports(self._client)
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> VirtualLedBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_tcp()
        self.close_pty()

    # -- transports --------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 9201) -> int:
        """Listen like a serial-to-TCP adapter; returns the port (0 picks a free one)."""
        bound = await self._ports.start_tcp(host, port)
        log.info("virtual LED bus (%s) listening on %s:%d", self.codec.name, host, bound)
        return bound

    async def stop_tcp(self) -> None:
        await self._ports.stop_tcp()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._ports.read_connection(reader, writer, self._serve(writer.write))

    def open_pty(self) -> str:
        """The bus as a serial port: returns the pty path a driver opens like /dev/ttyUSB0."""
        return self._ports.open_pty(self._serve)

    def close_pty(self) -> None:
        self._ports.close_pty()

    def _serve(self, write: Write) -> Callable[[bytes], None]:
        """One host's line: its own parser, answers back to it."""
        parser = self.codec.parser()
        return lambda data: self._receive(parser.feed(data), write)

    # -- the strips ------------------------------------------------------------------------------

    def _has(self, address: int) -> bool:
        return self.addresses is None or address in self.addresses

    def _receive(self, events: list[TextFrame | BoardFrame | Rejected], reply: Callable) -> None:  # type: ignore[type-arg]
        now = time.perf_counter()
        for event in events:
            if isinstance(event, Rejected):
                self.rejected.append(event)
                continue
            if not self._has(event.address):
                continue
            if isinstance(event, BoardFrame):
                self._show(event.address, "" if event.number == 0 else str(event.number), False)
                self.frames.append(
                    ReceivedFrame(event.address, self.strips[event.address].text, False, now, event)
                )
                continue
            if event.is_reply:
                continue
            status = self._apply(event)
            state = self.strips.get(event.address, StripState())
            self.frames.append(ReceivedFrame(event.address, state.text, state.flash, now, event))
            if not self.muted:
                answer = TextFrame(event.address, event.command | REPLY, 0, bytes((status,)))
                with contextlib.suppress(OSError):
                    reply(encode_text_frame(answer))
        if events:
            # Bare: it only wakes the waiters (the condition wants its lock) and ends at once.
            asyncio.get_running_loop().create_task(self._notify())

    def _apply(self, frame: TextFrame) -> ReplyStatus:
        if frame.command == Command.SHOW:
            try:
                text = frame.text
            except LedProtocolError:
                return ReplyStatus.BAD_TEXT
            self._show(frame.address, text, bool(frame.flags & 0x01))
        elif frame.command == Command.CLEAR:
            self._show(frame.address, "", False)
        elif frame.command != Command.PING:
            return ReplyStatus.UNKNOWN_COMMAND
        return ReplyStatus.DONE

    def _show(self, address: int, text: str, flash: bool) -> None:
        state = self.strips.setdefault(address, StripState())
        state.text, state.flash = text, flash
        state.frames += 1
        if self._on_change is not None:
            self._on_change(address, state)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def text(self, address: int) -> str:
        state = self.strips.get(address)
        return "" if state is None else state.text

    async def wait_for(
        self, predicate: Callable[[VirtualLedBus], bool], within: float = 10.0
    ) -> None:
        """Wait until ``predicate(self)`` holds (TimeoutError after ``within`` s)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_for_text(self, address: int, text: str, within: float = 10.0) -> ReceivedFrame:
        """Wait until the strip at ``address`` shows ``text``; returns that frame."""
        await self.wait_for(lambda bus: bus.text(address) == text, within)
        return next(f for f in reversed(self.frames) if f.address == address)


# -- standalone -----------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> None:
    def show(address: int, state: StripState) -> None:
        flash = " (flash)" if state.flash else ""
        print(f"strip {address}: {state.text or '(blank)'}{flash}", flush=True)

    async with VirtualLedBus(args.protocol, on_change=show) as bus:
        port = await bus.start_tcp(args.host, args.port)
        print(f"virtual LED bus ({args.protocol}) on {args.host}:{port}", flush=True)
        if args.pty:
            print(f"serial side: {bus.open_pty()}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser(
        "Virtual LED strips on one bus.", 9201, "also listen on a pty (serial)"
    )
    parser.add_argument("--protocol", choices=["text_frame", "number_board"], default="text_frame")
    return run_standalone(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
