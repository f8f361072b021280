"""Virtual window callers and raters on a keypad bus, speaking the real wire protocol.

Like keypads wired to an RS-485 line behind a serial-to-TCP adapter, the emulator listens
on TCP (the agent connects to it as to the adapter) and, optionally, on a pty (the agent
opens it like /dev/ttyUSB0). A press sends the key's frame and waits for the host's
acknowledgement; without one in time it sends the frame again, as real keypads do. What
the host sends back is kept per address: the number on the caller's display, beeps, and
whether the rater is inviting a rating.

Run on its own::

    python -m agent.demo.emulators.keypad --port 9202 [--pty]

then type ``1 next``, ``1 confirm 6`` (digits after the key), ``11 key 0`` (a rater's
key by index), ``show`` or ``help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import sys
from collections.abc import Callable

from agent.demo.emulators._serving import Ports, Write, run_standalone, standalone_parser
from protocols.keypad import (
    Beep,
    CallerKey,
    CallerPress,
    Frame,
    KeypadProtocol,
    RaterPress,
    ShowNumber,
    StartRating,
    keypad_protocol,
)

log = logging.getLogger(__name__)

# A keypad waits this long for the host's acknowledgement before it sends again, and
# gives up after so many resends. The agent acknowledges a press once it is saved, a few
# milliseconds after it arrives (more on a slow SD card).
ACK_TIMEOUT_S = 0.5
RETRIES = 3


@dataclasses.dataclass(slots=True)
class KeypadState:
    """What one virtual keypad shows and has been told."""

    address: int
    display: str = ""
    beeps: int = 0
    rating_invites: int = 0
    rating_active: bool = False
    presses: int = 0
    frames_sent: int = 0
    acknowledged: int = 0
    unknown_commands: int = 0


class _Session:
    def __init__(self, protocol: KeypadProtocol, send: Callable[[bytes], object]) -> None:
        self.parser = protocol.parser()
        self.send = send


class VirtualKeypads:
    """Every keypad on one virtual bus. ``async with`` closes its ports."""

    def __init__(
        self,
        protocol: str = "ff68",
        *,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        retries: int = RETRIES,
    ) -> None:
        self.protocol = keypad_protocol(protocol)
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.keypads: dict[int, KeypadState] = {}
        self._sessions: set[_Session] = set()
        self._ports = Ports(self._client)
        self._waiting: dict[Frame, asyncio.Future[None]] = {}
        self._changed = asyncio.Condition()
        self._press_lock = asyncio.Lock()
        #: The next this many acknowledgements are ignored (a noisy line), to test resends.
        self.deaf_to_acks = 0

    async def __aenter__(self) -> VirtualKeypads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_tcp()
        self.close_pty()

    def keypad(self, address: int) -> KeypadState:
        return self.keypads.setdefault(address, KeypadState(address))

    # -- transports ---------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 9202) -> int:
        bound = await self._ports.start_tcp(host, port)
        log.info("virtual keypad bus listening on %s:%d", host, bound)
        return bound

    async def stop_tcp(self) -> None:
        await self._ports.stop_tcp()

    @property
    def connections(self) -> int:
        return len(self._sessions)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._ports.writers.add(writer)  # closed by stop_tcp() from now on
        session = _Session(self.protocol, writer.write)
        self._sessions.add(session)
        await self._notify()
        try:
            await self._ports.read_connection(
                reader, writer, functools.partial(self.receive, session)
            )
        finally:
            self._sessions.discard(session)

    def open_pty(self) -> str:
        """The bus as a serial port: returns the pty path the agent opens."""

        def serve(write: Write) -> Callable[[bytes], None]:
            session = _Session(self.protocol, write)
            self._sessions.add(session)
            return functools.partial(self.receive, session)

        return self._ports.open_pty(serve)

    def close_pty(self) -> None:
        self._ports.close_pty()

    # -- what the host sends ------------------------------------------------------------------

    def receive(self, session: _Session, data: bytes) -> None:
        for event in session.parser.feed(data):
            if not isinstance(event, Frame):
                continue
            waiter = self._waiting.get(event)
            if waiter is not None:
                if self.deaf_to_acks > 0:
                    self.deaf_to_acks -= 1
                    continue
                if not waiter.done():
                    waiter.set_result(None)
                continue
            command = self.protocol.decode_host(event)
            match command:
                case ShowNumber(address, text):
                    self.keypad(address).display = text.strip()
                case Beep(address):
                    self.keypad(address).beeps += 1
                case StartRating(address):
                    state = self.keypad(address)
                    state.rating_invites += 1
                    state.rating_active = True
                case _:
                    self.keypad(event.address).unknown_commands += 1
        # Bare: it only wakes the waiters (the condition wants its lock) and ends at once.
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (TimeoutError after ``within`` seconds)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_connected(self, within: float = 5.0) -> None:
        await self.wait_for(lambda: self.connections > 0, within)

    # -- pressing keys ------------------------------------------------------------------------

    async def press(self, address: int, key: CallerKey, digits: str = "") -> bool:
        """A caller's key (with the digits typed before it); True once acknowledged."""
        frame = self.protocol.caller_frame(CallerPress(address, key, digits))
        return await self._send_press(address, frame)

    async def rate(self, address: int, key: int) -> bool:
        """A rater's key by index (0 = leftmost); True once acknowledged."""
        state = self.keypad(address)
        acked = await self._send_press(address, self.protocol.rater_frame(RaterPress(address, key)))
        state.rating_active = False
        return acked

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the line (noise, a broken frame)."""
        for session in list(self._sessions):
            with contextlib.suppress(OSError):
                session.send(data)

    async def _send_press(self, address: int, frame: Frame) -> bool:
        state = self.keypad(address)
        state.presses += 1
        ack = self.protocol.acknowledgement(frame)
        raw = self.protocol.encode(frame)
        async with self._press_lock:  # one frame on the line at a time, as on RS-485
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[ack] = done
            try:
                for _ in range(1 + self.retries):
                    self.send_raw(raw)
                    state.frames_sent += 1
                    try:
                        async with asyncio.timeout(self.ack_timeout_s):
                            await asyncio.shield(done)
                    except TimeoutError:
                        continue
                    state.acknowledged += 1
                    return True
                return False
            finally:
                self._waiting.pop(ack, None)


# -- standalone -----------------------------------------------------------------------------

_HELP = (
    "commands: ADDR next|recall|rate|confirm|pause|transfer [DIGITS]  (a caller key, with "
    "the digits typed before it), ADDR key INDEX (a rater key), show, help"
)


async def _console(keypads: VirtualKeypads) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        words = line.split()
        if not words or words[0] in ("help", "?"):
            print(_HELP, flush=True)
            continue
        if words[0] == "show":
            for state in sorted(keypads.keypads.values(), key=lambda s: s.address):
                print(state, flush=True)
            continue
        try:
            address = int(words[0])
            if words[1] == "key":
                acked = await keypads.rate(address, int(words[2]))
            else:
                digits = words[2] if len(words) > 2 else ""
                acked = await keypads.press(address, CallerKey(words[1]), digits)
        except (ValueError, IndexError) as err:
            print(f"{err}; {_HELP}", flush=True)
            continue
        print("acknowledged" if acked else "no acknowledgement (is the agent connected?)")


async def _main(args: argparse.Namespace) -> None:
    async with VirtualKeypads(args.protocol) as keypads:
        port = await keypads.start_tcp(args.host, args.port)
        print(f"virtual keypad bus on {args.host}:{port}", flush=True)
        if args.pty:
            print(f"serial side: {keypads.open_pty()}", flush=True)
        print(_HELP, flush=True)
        await _console(keypads)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser(
        "Virtual window callers and raters.", 9202, "also offer the bus on a pty"
    )
    parser.add_argument("--protocol", default="ff68")
    return run_standalone(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
