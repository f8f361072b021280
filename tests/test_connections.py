"""The local API's transport: the writes of one turn of the event loop go out as one."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.web.connections import CorkedTransport


class RecordingTransport:
    """What the agent's writes reach: each write, and whether it closed or aborted."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.ended: str | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.ended = "closed"

    def abort(self) -> None:
        self.ended = "aborted"

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def is_closing(self) -> bool:
        return self.ended is not None


def corked() -> tuple[CorkedTransport, RecordingTransport]:
    raw = RecordingTransport()
    transport: Any = raw
    return CorkedTransport(transport, asyncio.get_running_loop()), raw


async def test_an_answer_s_head_and_body_go_out_in_one_write_at_the_end_of_the_turn() -> None:
    transport, raw = corked()
    transport.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    transport.write(b"")  # the end of a body with a length: nothing to send
    assert raw.writes == []  # not before the turn ends
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"]
    # The next answer (or an event stream's next message) is a write of its own.
    transport.write(b"data: 1\n\n")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"data: 1\n\n"]
    assert transport.is_closing() is False  # the rest is the transport's own


async def test_close_sends_what_waits_first_and_abort_drops_it() -> None:
    transport, raw = corked()
    transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    transport.close()
    assert (raw.writes, raw.ended) == ([b"HTTP/1.1 408 Request Timeout\r\n\r\n"], "closed")
    await asyncio.sleep(0)
    assert len(raw.writes) == 1  # not written twice

    transport, raw = corked()
    transport.write(b"half an answer")
    transport.abort()
    await asyncio.sleep(0)
    assert (raw.writes, raw.ended) == ([], "aborted")


async def test_writelines_and_the_end_of_file_keep_the_order_of_the_writes() -> None:
    transport, raw = corked()
    transport.writelines([b"HTTP/1.1 200 OK\r\n\r\n", b"body"])
    transport.write_eof()  # what was waiting goes before the end of file
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"<eof>"]
