"""How an emulator is reached: TCP ports (a network device, or a serial-to-TCP adapter)
and a pty (a USB serial port the agent opens like /dev/ttyUSB0)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Write = Callable[[bytes], object]
#: Given how to answer one host, what takes the bytes that host sends.
Serve = Callable[[Write], Callable[[bytes], None]]
OnConnection = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Ports:
    """An emulator's listening TCP servers, their connections, and its pty."""

    def __init__(self, on_connection: OnConnection) -> None:
        self._on_connection = on_connection
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.pty: tuple[int, int] | None = None

    async def start_tcp(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the port (0 picks a free one)."""
        server = await asyncio.start_server(self._on_connection, host, port, reuse_address=True)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close_tcp(self) -> None:
        """Stop listening and close every connection (without waiting)."""
        for server in self.servers:
            server.close()
        for writer in list(self.writers):
            writer.close()

    async def wait_tcp_closed(self) -> None:
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()

    async def stop_tcp(self) -> None:
        self.close_tcp()
        await self.wait_tcp_closed()

    async def read_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_data: Callable[[bytes], None],
        read_size: int = 4096,
    ) -> None:
        """Hand what one host sends to ``on_data`` until it hangs up; then close it."""
        self.writers.add(writer)
        try:
            while data := await reader.read(read_size):
                on_data(data)
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def open_pty(self, serve: Serve, read_size: int = 4096) -> str:
        """A new pty served by ``serve``; returns the path the agent opens."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.pty = (master, slave)
        on_data = serve(lambda data: os.write(master, data))

        def readable() -> None:
            try:
                data = os.read(master, read_size)
            except OSError:  # nothing yet, or the other side closed (EIO until reopened)
                return
            on_data(data)

        asyncio.get_running_loop().add_reader(master, readable)
        return os.ttyname(slave)

    def close_pty(self) -> None:
        if self.pty is None:
            return
        master, slave = self.pty
        with contextlib.suppress(RuntimeError):  # the loop may be closing
            asyncio.get_running_loop().remove_reader(master)
        os.close(master)
        os.close(slave)
        self.pty = None


# -- running an emulator on its own (python -m agent.demo.emulators.…) -----------------------------


def standalone_parser(description: str, port: int, pty_help: str) -> argparse.ArgumentParser:
    """The options every emulator takes on its own: ``--host``, ``--port``, ``--pty``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--pty", action="store_true", help=pty_help)
    return parser


def run_standalone(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> int:
    """Run an emulator's console until Ctrl-C or the end of its input."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))
    return 0
