"""A virtual ESC/POS ticket printer on TCP (like a network printer's port 9100) and on a pty.

It speaks the real wire protocol: it parses the byte stream (text in Chinese mode and
code pages, sizes, QR store and print, raster images, cuts) with
:mod:`protocols.escpos_commands`, answers ``DLE EOT n`` at once from a state the test or
the person sets (paper near end or out, cover open, cutter jammed, not answering), sends
automatic status back when asked (``GS a``), and renders every ticket to a PNG and a
text file. While it cannot print it keeps what it receives and prints it once it can, as
real printers do.

Run on its own::

    python -m agent.demo.emulators.printer --port 9100 --out ./printed [--pty]

then type ``paper out``, ``paper near-end``, ``paper ok``, ``cover open``,
``cover closed``, ``cutter jam``, ``cutter ok``, ``mute``, ``unmute`` or ``status``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.demo.emulators._serving import Ports, Write, run_standalone, standalone_parser
from agent.runtime.tasks import BackgroundTasks
from protocols.escpos_commands import Command as EscposCommand
from protocols.escpos_commands import (
    CommandParser,
    ParsedCommand,
    PrintedTicket,
    StatusQuery,
    TicketReader,
)
from protocols.escpos_model import Paper, TextLine
from protocols.escpos_raster import CJK_FONT, Typesetter

log = logging.getLogger(__name__)

GS_A = (0x1D, ord("a"))


@dataclasses.dataclass(slots=True)
class PrinterState:
    """What the virtual printer reports about itself."""

    paper_near_end: bool = False
    paper_out: bool = False
    cover_open: bool = False
    cutter_error: bool = False
    mute: bool = False  # does not answer status questions (a hung printer)

    @property
    def can_print(self) -> bool:
        return not (self.paper_out or self.cover_open or self.cutter_error)

    def reply(self, n: int) -> bytes:
        """The one-byte answer to DLE EOT n."""
        value = 0x12
        if n == 1 and not self.can_print:
            value |= 0x08
        elif n == 2:
            value |= (0x04 if self.cover_open else 0) | (0x20 if self.paper_out else 0)
            value |= 0x40 if self.cutter_error else 0
        elif n == 3:
            value |= 0x08 if self.cutter_error else 0
        elif n == 4:
            near = self.paper_near_end or self.paper_out
            value |= (0x0C if near else 0) | (0x60 if self.paper_out else 0)
        return bytes((value,))

    def automatic_status(self) -> bytes:
        """Four bytes of GS a automatic status back."""
        first = 0x10 | (0x08 if not self.can_print else 0) | (0x20 if self.cover_open else 0)
        second = 0x08 if self.cutter_error else 0
        third = (0x03 if self.paper_near_end or self.paper_out else 0) | (
            0x0C if self.paper_out else 0
        )
        return bytes((first, second, third, 0))


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedTicket:
    """A ticket the virtual printer cut off, with when its last byte arrived."""

    seq: int
    ticket: PrintedTicket
    received_at: float  # time.perf_counter() when the cut arrived
    png: Path | None
    text_file: Path | None

    @property
    def lines(self) -> list[str]:
        return self.ticket.lines()

    @property
    def qr_payloads(self) -> list[str]:
        return self.ticket.qr_payloads()

    @property
    def number(self) -> str | None:
        """The ticket number: the first line printed in large type."""
        for block in self.ticket.blocks:
            if isinstance(block, TextLine) and block.scale >= 3:
                return block.text.strip()
        return None


class _Session:
    """One host connection: its parser and how to answer it."""

    def __init__(self, send: Callable[[bytes], object]) -> None:
        self.parser = CommandParser()
        self.send = send
        self.automatic = False


class VirtualPrinter:
    """The emulator; ``async with`` stops its servers and writes what is pending."""

    def __init__(
        self,
        out_dir: Path | None = None,
        *,
        paper_width_mm: int = 80,
        chinese_mode: bool = False,
        font: Path | None = Path(CJK_FONT),
        render: bool = True,
    ) -> None:
        self.out_dir = out_dir
        self.state = PrinterState()
        self.paper = Paper.for_width(paper_width_mm)
        self._reader = TicketReader(chinese_mode=chinese_mode)
        self._held: list[ParsedCommand] = []
        self._sessions: set[_Session] = set()
        self._ports = Ports(self._client)
        self._typesetter: Typesetter | None = None
        if render and out_dir is not None and font is not None and font.exists():
            self._typesetter = Typesetter(font.read_bytes(), self.paper.width_dots)
        self.tickets: list[ReceivedTicket] = []
        self.status_queries = 0
        self.bytes_received = 0
        self.unknown_commands = 0
        self._changed = asyncio.Condition()
        self._render_tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._tasks = BackgroundTasks()

    async def __aenter__(self) -> VirtualPrinter:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tasks = await self._stack.enter_async_context(BackgroundTasks())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_tcp()
        self.close_pty()
        await self._stack.aclose()  # every PNG is written

    # -- transports --------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 9100) -> int:
        """Listen like a network printer; returns the port (give 0 for a free one)."""
        bound = await self._ports.start_tcp(host, port)
        log.info("virtual printer listening on %s:%d", host, bound)
        return bound

    async def stop_tcp(self) -> None:
        """Switch the network printer off: close the port and every connection."""
        await self._ports.stop_tcp()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer.write)
        self._sessions.add(session)
        try:
            await self._ports.read_connection(
                reader, writer, functools.partial(self.receive, session), 65536
            )
        finally:
            self._sessions.discard(session)

    def open_pty(self) -> str:
        """A serial printer: returns the pty path a driver opens like /dev/ttyUSB0."""

        def serve(write: Write) -> Callable[[bytes], None]:
            session = _Session(write)
            self._sessions.add(session)
            return functools.partial(self.receive, session)

        return self._ports.open_pty(serve, 65536)

    def close_pty(self) -> None:
        self._ports.close_pty()

    # -- the printer ---------------------------------------------------------------------------

    def receive(self, session: _Session, data: bytes) -> None:
        self.bytes_received += len(data)
        for command in session.parser.feed(data):
            if isinstance(command, StatusQuery):
                self.status_queries += 1
                if not self.state.mute:
                    session.send(self.state.reply(command.n))
                continue
            if isinstance(command, EscposCommand) and (command.prefix, command.code) == GS_A:
                session.automatic = command.params[0] != 0
                if session.automatic:
                    session.send(self.state.automatic_status())
                continue
            self._held.append(command)
        self._print_held()

    def _print_held(self) -> None:
        if not self.state.can_print:
            return
        held, self._held = self._held, []
        for command in held:
            ticket = self._reader.apply(command)
            if ticket is not None:
                self._cut(ticket)
        self.unknown_commands = self._reader.unknown

    def _cut(self, ticket: PrintedTicket) -> None:
        received_at = time.perf_counter()
        seq = len(self.tickets) + 1
        png = text_file = None
        if self.out_dir is not None:
            stem = f"ticket-{seq:04d}"
            number = ReceivedTicket(seq, ticket, received_at, None, None).number
            if number and re.fullmatch(r"[A-Za-z0-9]{1,8}", number):
                stem += f"-{number}"
            text_file = self.out_dir / f"{stem}.txt"
            text_file.write_text(ticket.as_text(), encoding="utf-8")
            if self._typesetter is not None:
                png = self.out_dir / f"{stem}.png"
                task = self._tasks.create_task(self._render(ticket, png), name="printer-render")
                self._render_tasks.add(task)
                task.add_done_callback(self._render_tasks.discard)
        self.tickets.append(ReceivedTicket(seq, ticket, received_at, png, text_file))
        # Bare: it only wakes the waiters and ends at once (also run with no group, bench/).
        asyncio.get_running_loop().create_task(self._notify())

    async def _render(self, ticket: PrintedTicket, path: Path) -> None:
        assert self._typesetter is not None
        image = await asyncio.to_thread(self._typesetter.render, ticket.blocks)
        await asyncio.to_thread(image.save, path)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def set_state(self, **changes: bool) -> None:
        """Change paper/cover/cutter/mute; automatic status goes to those who asked."""
        for name, value in changes.items():
            if not hasattr(self.state, name):
                raise AttributeError(f"the virtual printer has no state {name!r}")
            setattr(self.state, name, value)
        for session in list(self._sessions):
            if session.automatic:
                with contextlib.suppress(OSError):
                    session.send(self.state.automatic_status())
        self._print_held()

    async def wait_for_tickets(self, count: int, within: float = 10.0) -> list[ReceivedTicket]:
        """Wait until ``count`` tickets in all have been cut (TimeoutError after ``within`` s)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.tickets) >= count)
        return self.tickets[:count]

    async def rendered(self) -> None:
        """Wait until every PNG is written."""
        if self._render_tasks:
            await asyncio.gather(*list(self._render_tasks))


# -- standalone -----------------------------------------------------------------------------

_CONSOLE = {
    "paper out": {"paper_out": True},
    "paper near-end": {"paper_near_end": True, "paper_out": False},
    "paper ok": {"paper_near_end": False, "paper_out": False},
    "cover open": {"cover_open": True},
    "cover closed": {"cover_open": False},
    "cutter jam": {"cutter_error": True},
    "cutter ok": {"cutter_error": False},
    "mute": {"mute": True},
    "unmute": {"mute": False},
}


async def _console(printer: VirtualPrinter) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = " ".join(line.split()).lower()
        if command in _CONSOLE:
            printer.set_state(**_CONSOLE[command])
        elif command != "status":
            print(f"commands: {', '.join(_CONSOLE)}, status", flush=True)
            continue
        print(f"{printer.state}; {len(printer.tickets)} tickets printed", flush=True)


async def _main(args: argparse.Namespace) -> None:
    async with VirtualPrinter(
        args.out, paper_width_mm=args.paper, chinese_mode=args.chinese_mode
    ) as printer:
        port = await printer.start_tcp(args.host, args.port)
        print(f"virtual printer on {args.host}:{port}; tickets go to {args.out}", flush=True)
        if args.pty:
            print(f"serial side: {printer.open_pty()}", flush=True)
        await _console(printer)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser(
        "A virtual ESC/POS ticket printer.", 9100, "also listen on a pty (serial)"
    )
    parser.add_argument("--out", type=Path, default=Path("printed"), help="PNG and text folder")
    parser.add_argument("--paper", type=int, choices=[58, 80], default=80)
    parser.add_argument(
        "--chinese-mode", action="store_true", help="start in Chinese mode, as many do"
    )
    return run_standalone(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
