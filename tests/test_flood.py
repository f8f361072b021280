"""The local API under floods: connections that send nothing or half a request, more
connections than the agent has file descriptors, one client sending too many changes.

Every assertion is about behaviour (answered, closed, refused, how much was logged), never
about how fast: these run on loaded machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import selectors
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import AgentProcess, as_ops, hall_config, write_config

from agent.config import ConfigError, HallAgentConfig, format_problems, validate_config
from agent.config.system import FD_RESERVE, WebConfig
from agent.daemon import Running, running_agent
from agent.web import connections
from agent.web.ratelimit import RateLimit, TokenBuckets

FLOOD = 1100
# The Pi's default open-file limit without the unit's LimitNOFILE=, here as the hard limit
# too: the flood alone is more than the agent may open (before the limits, ~1,030 idle
# connections took the hall down).
AGENT_OPEN_FILES = 1024
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: hall\r\nUser-Agent: slow"


def web(**limits: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 0, **limits}


def raise_own_open_files(needed: int) -> None:
    """Room for the test's own sockets, or skip: the flood needs more than 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-file hard limit is {hard}; the flood needs {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture
def own_open_files() -> Iterator[None]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_own_open_files(FLOOD + 400)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def read_until(sock: socket.socket, marker: bytes, timeout: float = 30.0) -> bytes:
    """What the socket sends until ``marker`` has come (AssertionError if it never does)."""
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{marker!r} did not come; got {got[-500:]!r}"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}; got {got[-500:]!r}"
        got += chunk
    return got


def wait_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """Read every socket until the agent closes it; what each received, for those closed."""
    received: dict[socket.socket, bytes] = dict.fromkeys(socks, b"")
    closed: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    chunk = ready.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # reset: closed without a word
                    chunk = b""
                if chunk:
                    received[ready] += chunk
                else:
                    selector.unregister(ready)
                    closed[ready] = received[ready]
    return closed


def open_feed(port: int) -> socket.socket:
    """The hall screen's event stream, as the big screen holds it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /pages/feed/hall HTTP/1.1\r\nHost: hall\r\n\r\n")
    read_until(sock, b"data:")
    return sock


@pytest.mark.timeout(300)
def test_a_flood_of_idle_connections_leaves_the_hall_served(
    tmp_path: Path, own_open_files: None
) -> None:
    storage = tmp_path / "state"
    config = hall_config(storage, web=web(header_timeout_s=1.0, body_timeout_s=2.0))
    log_path = tmp_path / "agent.log"
    agent = AgentProcess(
        write_config(tmp_path / "hall.yaml", config),
        storage,
        log_path,
        open_files=AGENT_OPEN_FILES,
    )
    url = agent.start()
    port = int(url.rsplit(":", 1)[1])
    flood: list[socket.socket] = []
    half: list[socket.socket] = []
    feed = open_feed(port)
    logged_before = log_path.stat().st_size
    try:
        for i in range(FLOOD):
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            flood.append(sock)
            if i % 10 == 0:
                half.append(sock)
                with contextlib.suppress(OSError):  # already closed by the agent
                    sock.sendall(HALF_HEAD)
        # While the flood is held, the hall answers a new connection: health, a page, a
        # ticket and a call, and the screen's stream (opened before) shows the call.
        started = time.monotonic()
        health = httpx.get(f"{url}/healthz", timeout=30)
        answered_s = time.monotonic() - started
        assert health.status_code == 200, health.text
        assert httpx.get(f"{url}/pages/kiosk", timeout=30).status_code == 200
        ops = agent.ops
        taken = httpx.post(
            f"{url}/api/v1/tickets", json={"service": "social"}, headers=ops, timeout=30
        )
        assert taken.status_code == 201, taken.text
        called = httpx.post(f"{url}/api/v1/windows/w1/next", headers=ops, timeout=30)
        assert called.json()["result"]["ticket"]["number"] == "A001"
        read_until(feed, b'"A001"')
        # The agent closes every connection that sent no whole request: the half-sent ones
        # that outlived the flood with a 408 after the header timeout.
        closed = wait_closed(flood, timeout=120)
        assert len(closed) == len(flood), f"{len(flood) - len(closed)} still open"
        assert any(closed[s].startswith(b"HTTP/1.1 408 ") for s in half)
        print(f"flood of {FLOOD}: /healthz answered in {answered_s:.2f} s")
    finally:
        for sock in flood:
            sock.close()
        feed.close()
        agent.terminate(timeout=30)
    grown = log_path.stat().st_size - logged_before
    print(f"log grew by {grown} bytes")
    assert grown < 1_000_000
    text = log_path.read_text(encoding="utf-8")
    assert "Traceback" not in text
    assert "cannot accept connections" not in text  # never out of file descriptors
    assert "keeps at most 512 connections" in text  # the limit fits the open-file limit


# -- deadlines and the connection limit, in-process ---------------------------------------


@contextlib.asynccontextmanager
async def agent_with(tmp_path: Path, **limits: Any) -> AsyncIterator[tuple[Running, int]]:
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state", web=web(**limits)))
    async with running_agent(config) as running:
        yield running, int(running.url.rsplit(":", 1)[1])


async def connect(
    port: int, send: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the agent sends before it closes the connection (within 30 s)."""
    try:
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        return b""


@pytest.mark.timeout(120)
async def test_connections_that_do_not_send_a_request_in_time_are_closed(tmp_path: Path) -> None:
    async with agent_with(
        tmp_path, header_timeout_s=0.5, body_timeout_s=1.0, keepalive_timeout_s=30
    ) as (_, port):
        silent = await connect(port)
        half = await connect(port, HALF_HEAD)
        body = await connect(
            port,
            b"POST /api/v1/tickets HTTP/1.1\r\nHost: hall\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"serv',
        )
        kept = await connect(port, b"GET /healthz HTTP/1.1\r\nHost: hall\r\n\r\n")
        answer = await asyncio.wait_for(kept[0].readuntil(b'"status"'), 30)
        assert answer.startswith(b"HTTP/1.1 200 ")
        await asyncio.wait_for(kept[0].read(1000), 30)  # the rest of the answer
        # A kept-alive connection may send its next request whole, and is answered.
        kept[1].write(b"GET /healthz HTTP/1.1\r\nHost: hall\r\n\r\n")
        again = await asyncio.wait_for(kept[0].readuntil(b'"status"'), 30)
        assert again.startswith(b"HTTP/1.1 200 ")
        await asyncio.wait_for(kept[0].read(1000), 30)
        # ... but not begin one and stall.
        kept[1].write(b"GET /heal")

        assert await until_closed(silent[0]) == b""
        assert (await until_closed(half[0])).startswith(b"HTTP/1.1 408 Request Timeout")
        assert (await until_closed(kept[0])).startswith(b"HTTP/1.1 408 Request Timeout")
        assert await until_closed(body[0]) == b""  # the body never came: closed, not done
        for _, writer in (silent, half, body, kept):
            writer.close()


@pytest.mark.timeout(120)
async def test_at_the_limit_the_oldest_idle_connection_makes_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.web.connections")
    async with (
        agent_with(tmp_path, max_connections=16, header_timeout_s=60, body_timeout_s=60) as (
            running,
            port,
        ),
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        idle = [await connect(port) for _ in range(16)]
        # A 17th connection is served; the oldest idle one was closed for it.
        assert (await client.get("/healthz")).status_code == 200
        assert await until_closed(idle[0][0]) == b""
        assert "reached its limit of 16 open connections" in caplog.text
        for _, writer in idle:
            writer.close()


@pytest.mark.timeout(120)
async def test_when_every_connection_is_busy_a_new_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.web.connections")
    async with agent_with(tmp_path, max_connections=16, header_timeout_s=60, body_timeout_s=60) as (
        _,
        port,
    ):
        streams = []
        for _ in range(16):  # screens holding their event streams: busy, never closed
            reader, writer = await connect(
                port, b"GET /pages/feed/hall HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            await asyncio.wait_for(reader.readuntil(b"data:"), 30)
            streams.append((reader, writer))
        refused, writer = await connect(port, b"GET /healthz HTTP/1.1\r\nHost: hall\r\n\r\n")
        assert await until_closed(refused) == b""
        writer.close()
        assert "refuses new connections: all 16 connections are busy" in caplog.text
        # A screen goes away: there is room again, and the other streams were kept.
        streams.pop()[1].close()
        served = False
        for _ in range(100):  # its closing reaches the agent soon, not at once
            reader, writer = await connect(port, b"GET /healthz HTTP/1.1\r\nHost: hall\r\n\r\n")
            answer = await until_closed(reader)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200 "):
                served = True
                break
            await asyncio.sleep(0.1)
        assert served
        for reader, writer in streams:
            assert not reader.at_eof()
            writer.close()


def test_the_connection_limit_fits_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"soft": 1024, "hard": 1024}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        limits["soft"], limits["hard"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    # A hard limit too low: the connection limit is lowered, with a warning.
    with caplog.at_level(logging.WARNING, "agent.web.connections"):
        assert connections.connection_limit(1024) == 1024 - FD_RESERVE
    assert "keeps at most 512 connections" in caplog.text
    # A soft limit below a hard one that is high enough is raised, as far as needed.
    limits.update(soft=1024, hard=65536)
    assert connections.connection_limit(1024) == 1024
    assert limits == {"soft": 1024 + FD_RESERVE, "hard": 65536}
    # Enough already: nothing changes.
    assert connections.connection_limit(256) == 256
    assert limits["soft"] == 1024 + FD_RESERVE


def test_a_failed_accept_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []
    handle = connections.accept_errors(lambda _, context: seen.append(context))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            handle(
                loop,
                {"message": connections.ACCEPT_FAILED, "exception": OSError(24, "Too many")},
            )
            handle(loop, {"message": "something else"})
    finally:
        loop.close()
    assert [r.exc_info for r in caplog.records] == [None]
    assert "cannot accept connections: [Errno 24] Too many" in caplog.text
    assert seen == [{"message": "something else"}]


# -- the rate limit ---------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_many_changes_from_one_client_are_answered_429_while_reads_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.web.ratelimit")
    # No exemption for this machine, 5 at once, and next to no refill during the test.
    limits = {"rate_limit_exempt": [], "rate_limit_burst": 5, "rate_limit_per_s": 0.01}
    async with (
        agent_with(tmp_path, **limits) as (running, _),
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running), timeout=30) as client,
    ):
        answers = [await client.post("/api/v1/windows/w1/next") for _ in range(40)]
        statuses = [a.status_code for a in answers]
        assert statuses[:5] == [200] * 5
        refused = [a for a in answers if a.status_code == 429]
        assert len(refused) >= 30
        for answer in refused:
            assert int(answer.headers["retry-after"]) >= 1
            body = answer.json()
            assert body["error"] == "rate_limited"
            assert "try again in" in body["message"]
        # Reads are never limited: health, the pages and their stream, the state.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/pages/kiosk")).status_code == 200
        assert (await client.get("/api/v1/status")).status_code == 200
        async with client.stream("GET", "/pages/feed/hall") as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    break
        # Other state-changing methods count too.
        assert (await client.delete("/api/v1/tickets/A001")).status_code == 429
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once for the client, not once per refusal
    assert "client 127.0.0.1 sends more than 5 requests at once" in warnings[0].getMessage()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_buckets_per_client() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2, burst=3, max_keys=2, clock=clock)
    assert [buckets.take("10.0.0.5") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("10.0.0.5") == pytest.approx(0.5)  # half a second to the next token
    assert buckets.take("10.0.0.6") == 0  # another client has its own bucket
    clock.now += 0.5
    assert buckets.take("10.0.0.5") == 0
    assert buckets.take("10.0.0.5") > 0
    clock.now += 60  # a full bucket again, no more
    assert [buckets.take("10.0.0.5") for _ in range(4)][-1] > 0
    # At most max_keys clients are tracked: the one idle longest is forgotten.
    buckets.take("10.0.0.7")
    assert [buckets.take("10.0.0.6") for _ in range(3)] == [0, 0, 0]


async def test_the_rate_limit_by_address_with_exemptions() -> None:
    clock = Clock()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = RateLimit(app, 1, 2, WebConfig().exempt_networks(), clock=clock)

    async def statuses(client_ip: str, method: str = "POST", n: int = 4) -> list[int]:
        transport = httpx.ASGITransport(app=limited, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hall") as client:
            return [(await client.request(method, "/api/v1/x")).status_code for _ in range(n)]

    assert await statuses("10.0.0.5") == [200, 200, 429, 429]
    assert await statuses("10.0.0.5", "GET") == [200] * 4
    assert await statuses("10.0.0.6", "PUT") == [200, 200, 429, 429]
    assert await statuses("127.0.0.1", n=10) == [200] * 10  # the Pi itself
    assert await statuses("::1", n=10) == [200] * 10
    assert await statuses("::ffff:127.0.0.1", n=10) == [200] * 10
    clock.now += 1
    assert await statuses("10.0.0.5") == [200, 429, 429, 429]


def test_web_limits_are_validated() -> None:
    base = hall_config(Path("/tmp/state"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rate_limit_exempt": ["10.0.0.300"]}, "is not an IP address or network"),
        ({"header_timeout_s": 10, "body_timeout_s": 5}, "shorter than header_timeout_s"),
        ({"max_connections": 4}, "web.max_connections"),
    ]
    for limits, fragment in cases:
        data = {**base, "web": web(**limits)}
        with pytest.raises(ConfigError) as raised:
            validate_config(data)
        assert fragment in format_problems(raised.value.problems)
    config = validate_config({**base, "web": web(rate_limit_exempt=["192.168.1.0/24", "::1"])})
    assert [str(n) for n in config.web.exempt_networks()] == ["192.168.1.0/24", "::1/128"]
