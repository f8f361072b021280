"""The command line's light reading of a config and its plain HTTP client (agent/client.py).

The light read must agree with the full config loader whenever it answers, and step aside
(None) whenever it cannot be sure, so that the full loader names the problem.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support import hall_config, write_config

from agent.client import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STORAGE,
    ApiFailed,
    ApiUnreachable,
    Place,
    _parse_answer,
    read_place,
    request,
)
from agent.config import StorageConfig, WebConfig, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def full(path: Path, environ: Mapping[str, str]) -> tuple[Path, str, int]:
    config = load_config(path, environ)
    return config.storage.path, config.web.host, config.web.port


def light(path: Path, environ: Mapping[str, str]) -> tuple[Path, str, int] | None:
    place = read_place(path, environ)
    return None if place is None else (place.storage, place.host, place.port)


def test_the_defaults_are_the_models_defaults() -> None:
    assert StorageConfig().path == DEFAULT_STORAGE
    assert (WebConfig().host, WebConfig().port) == (DEFAULT_HOST, DEFAULT_PORT)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"HALL_STORAGE__PATH": "/srv/hall state"},
        {"HALL_web__port": " 9001 ", "HALL_WEB__HOST": "0.0.0.0"},
        {"HALL_WEB__MAX_CONNECTIONS": "64", "HALL_LOGGING__LEVEL": "DEBUG", "HOME": "/x"},
    ],
)
def test_the_light_read_agrees_with_the_loader(environ: dict[str, str], tmp_path: Path) -> None:
    test_hall = write_config(tmp_path / "hall.yaml", hall_config(tmp_path / "state", 8123))
    no_sections = hall_config(tmp_path)
    del no_sections["storage"], no_sections["web"]
    bare = write_config(tmp_path / "bare.yaml", no_sections)
    for path in (EXAMPLE, test_hall, bare):
        assert light(path, environ) == full(path, environ), path


@pytest.mark.parametrize(
    ("change", "environ"),
    [
        ("web:\n  port: 1\n", {}),  # a key written twice
        ("", {"HALL_WEB__PORT": "abc"}),  # not a port
        ("", {"HALL_WEB__PORT": "70000"}),
        ("", {"HALL_WEB_PORT": "9000"}),  # a single '_' after the section
        ("", {"HALL_STORAGE__PATH__X": "1"}),  # inside a single value
        ("", {"HALL_STORAGE__PATH": ""}),
    ],
)
def test_the_light_read_steps_aside_for_the_loader(
    change: str, environ: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "hall.yaml", hall_config(tmp_path / "state", 8123))
    path.write_text(path.read_text(encoding="utf-8") + change, encoding="utf-8")
    assert read_place(path, environ) is None


@pytest.mark.parametrize(
    "text",
    [
        "web:\n  port: '8737'\n",  # quoted: pydantic reads it, the light read leaves it
        "web:\n  port: 0x2222\n",
        "web:\n  port: 8_737\n",
        "web:\n  port: 80:37\n",
        "web: ~\n",
        "web: [1]\n",
        "storage:\n  path: 12\n",
        "storage:\n  path: [a]\n",
        "base: &b {port: 1}\nweb:\n  <<: *b\n",
        "- a list\n",
        "a: [unclosed\n",
        "",
    ],
)
def test_odd_files_are_left_to_the_loader(text: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    assert read_place(path, {}) is None


def test_unreadable_files_are_left_to_the_loader(tmp_path: Path) -> None:
    assert read_place(tmp_path / "missing.yaml", {}) is None
    assert read_place(tmp_path, {}) is None
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("hall:\n  name: caf\xe9\n".encode("latin-1"))
    assert read_place(latin, {}) is None


def test_the_place_prefers_the_address_the_agent_wrote(tmp_path: Path) -> None:
    place = Place(tmp_path, "127.0.0.1", 8737)
    assert place.api_base() == "http://127.0.0.1:8737"
    (tmp_path / "api-url").write_text("http://127.0.0.1:40001\n", encoding="utf-8")
    assert place.api_base() == "http://127.0.0.1:40001"
    assert place.token_file == tmp_path / "ops-token"


# -- the HTTP side -----------------------------------------------------------------------


def test_answers_are_parsed_with_a_length_or_in_chunks() -> None:
    plain = _parse_answer(b'HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{"a":1}')
    assert (plain.status, plain.json()) == (201, {"a": 1})
    chunked = _parse_answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;x=y\r\n{"a"\r\n3\r\n:2}\r\n0\r\n\r\n'
    )
    assert chunked.json() == {"a": 2}
    with pytest.raises(ApiFailed, match="ended early"):
        _parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}")
    with pytest.raises(ApiFailed, match="ended early"):
        _parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nab")
    with pytest.raises(ApiFailed, match="not HTTP"):
        _parse_answer(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ApiFailed, match="closed unanswered"):
        _parse_answer(b"")


@pytest.fixture
def one_shot_server() -> Iterator[tuple[int, list[bytes], list[bytes]]]:
    """A socket that reads one request and sends the queued answer back."""
    server = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(4096)
            requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], answers, requests
    thread.join(5)
    server.close()


def test_a_request_sends_the_token_and_json(
    one_shot_server: tuple[int, list[bytes], list[bytes]],
) -> None:
    port, answers, requests = one_shot_server
    answers.append(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}')
    body: dict[str, Any] = {"service": "社保"}
    answer = request(f"http://127.0.0.1:{port}/", "POST", "/api/v1/tickets", body, "tok")
    assert (answer.status, answer.json()) == (200, {"ok": True})
    sent = requests[0]
    assert sent.startswith(b"POST /api/v1/tickets HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer tok\r\n" in sent
    assert b"\r\nConnection: close\r\n" in sent
    assert sent.endswith('{"service": "社保"}'.encode())


def test_nothing_listening_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(ApiUnreachable):
        request(f"http://127.0.0.1:{port}", "GET", "/api/v1/status")
    with pytest.raises(ApiUnreachable, match="not an http"):
        request("ftp://127.0.0.1", "GET", "/")
