"""The command line's side of the local API: find the running agent and ask it.

``hall-agent status``, ``take``, ``window …``, ``reprint`` and the credential verbs are
typed by an ops person on a Pi; they must answer in a blink, not after loading the
daemon's stack. This module uses the standard library and PyYAML only: no pydantic, no
FastAPI, nothing of the daemon.

Where the agent is comes from three values of the config file (``storage.path``, where the
agent writes its API address and its ops token; ``web.host`` and ``web.port``, the address
when none was written), with the same ``HALL_<SECTION>__<FIELD>`` overrides the agent
applies. :func:`read_place` reads only those; when the file is anything but plainly
readable for them (missing, broken YAML, a duplicate key, a value of an odd type, an
override it cannot read) it says so with ``None`` and the caller loads the config in full,
which names the problem and its fix exactly as ``hall-agent check-config`` would.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import HallAgentError

# The files the agent keeps in storage.path for the command line.
API_URL_FILE = "api-url"
OPS_TOKEN_FILE = "ops-token"  # noqa: S105 - a file name

ENV_PREFIX = "HALL_"
DEFAULT_STORAGE = Path("/var/lib/hall-agent")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8737
_STR = "tag:yaml.org,2002:str"
_DECIMAL = re.compile(r"^\+?[0-9]+$")


class Place:
    """Where the running agent of one config is, as far as the command line needs."""

    __slots__ = ("host", "port", "storage")

    def __init__(self, storage: Path, host: str, port: int) -> None:
        self.storage = storage
        self.host = host
        self.port = port

    @property
    def api_url_file(self) -> Path:
        return self.storage / API_URL_FILE

    @property
    def token_file(self) -> Path:
        return self.storage / OPS_TOKEN_FILE

    def api_base(self) -> str:
        """The address the agent wrote at its start, else the configured one."""
        try:
            written = self.api_url_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            written = ""
        return written or f"http://{self.host}:{self.port}"


def read_place(path: Path, environ: Mapping[str, str] | None = None) -> Place | None:
    """storage.path, web.host and web.port of the config at ``path`` with the ``HALL_*``
    overrides of ``environ`` (default ``os.environ``); None when not plainly readable."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    values = _file_values(text)
    if values is None:
        return None
    overrides = _env_values(os.environ if environ is None else environ)
    if overrides is None:  # an override of these fields that only the full loader can judge
        return None
    values.update(overrides)
    port = values.get("port", str(DEFAULT_PORT))
    if not _DECIMAL.match(port) or int(port) > 65535:
        return None
    storage = values.get("path", str(DEFAULT_STORAGE))
    host = values.get("host", DEFAULT_HOST)
    if not storage or not host:
        return None
    return Place(Path(storage), host, int(port))


_FIELDS = {("storage", "path"): "path", ("web", "host"): "host", ("web", "port"): "port"}


def _file_values(text: str) -> dict[str, str] | None:
    """The three fields' texts as written in the file (absent: not in the dict)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        return None
    top = _mapping(root)
    if top is None:
        return None
    values: dict[str, str] = {}
    for section in ("storage", "web"):
        node = top.get(section)
        if node is None:
            continue
        fields = _mapping(node)
        if fields is None:
            return None
        for (where, name), key in _FIELDS.items():
            if where != section or name not in fields:
                continue
            value = fields[name]
            if not isinstance(value, yaml.ScalarNode):
                return None
            if key == "port":
                if not _DECIMAL.match(value.value) or value.style not in (None, ""):
                    return None
            elif value.tag != _STR:
                return None
            values[key] = value.value
    return values


def _mapping(node: Any) -> dict[str, Any] | None:
    """A YAML mapping node's plain keys and value nodes; None for anything else (another
    kind of node, a merge key or a key written twice: the full loader says what is wrong)."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return None
    out: dict[str, Any] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag != _STR or key.value in out:
            return None
        out[key.value] = value
    return out


def _env_values(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The overrides of the three fields (None: one the full loader must judge)."""
    values: dict[str, str] = {}
    for variable in sorted(environ):
        if variable[: len(ENV_PREFIX)].upper() != ENV_PREFIX:
            continue
        segments = tuple(s.lower() for s in variable[len(ENV_PREFIX) :].split("__"))
        if len(segments) == 1 and segments[0].startswith(("storage_", "web_")):
            return None  # HALL_WEB_PORT: a typo the full loader names
        if segments[0] not in ("storage", "web") or len(segments) < 2:
            continue
        key = _FIELDS.get((segments[0], segments[1]))
        if key is None:
            continue  # another field of those sections: not ours to read
        raw = environ[variable]
        if len(segments) > 2 or (key == "port" and not _DECIMAL.match(raw.strip())):
            return None
        values[key] = raw.strip() if key == "port" else raw
    return values


# -- the request -----------------------------------------------------------------------


class ApiUnreachable(HallAgentError):
    """Nothing answers at the address (refused, no such host, no route)."""


class ApiFailed(HallAgentError):
    """Something answered, but not with an HTTP answer in time."""


class Answer:
    """The status and body of one answer."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request to the local API at ``base`` (``http://host:port``), a JSON body in.

    Plain HTTP/1.1 over a socket, one request per connection (``Connection: close``): the
    local API is on this machine or the hall's LAN, and http.client would load the e-mail
    parser and TLS for it. ``https://`` goes through http.client.
    """
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiUnreachable(f"{base} is not an http:// address")
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = b""
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    target = parts.path.rstrip("/") + path
    if parts.scheme == "https":
        return _https(parts.hostname, parts.port, method, target, headers, data, timeout)
    port = parts.port or 80
    host = parts.hostname
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as err:
        raise ApiFailed(f"no answer within {timeout:g} s") from err
    except OSError as err:
        raise ApiUnreachable(str(err)) from err
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}", "Connection: close"]
    if data or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(data)}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    try:
        with sock:
            sock.sendall(head + data)
            received = []
            while chunk := sock.recv(65536):
                received.append(chunk)
    except TimeoutError as err:
        raise ApiFailed(f"no answer within {timeout:g} s") from err
    except OSError as err:
        raise ApiFailed(str(err)) from err
    return _parse_answer(b"".join(received))


def _parse_answer(raw: bytes) -> Answer:
    """Status line, headers and body of an HTTP/1.1 answer read to the end."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not separator or not version.startswith("HTTP/1.") or not code.isdigit():
        raise ApiFailed("the answer is not HTTP" if raw else "the connection closed unanswered")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return Answer(int(code), _dechunk(rest))
    length = fields.get("content-length")
    if length is not None and length.isdigit():
        if len(rest) < int(length):
            raise ApiFailed("the answer ended early")
        rest = rest[: int(length)]
    return Answer(int(code), rest)


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError as err:
            raise ApiFailed("the answer's chunks are broken") from err
        if not separator or len(data) < size:
            raise ApiFailed("the answer ended early")
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]


def _https(
    host: str,
    port: int | None,
    method: str,
    target: str,
    headers: dict[str, str],
    data: bytes,
    timeout: float,
) -> Answer:
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
        try:
            connection.connect()
        except TimeoutError as err:
            raise ApiFailed(f"no answer within {timeout:g} s") from err
        except OSError as err:
            raise ApiUnreachable(str(err)) from err
        try:
            connection.request(method, target, body=data or None, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, response.read())
        except (OSError, http.client.HTTPException) as err:
            raise ApiFailed(str(err) or type(err).__name__) from err
    finally:
        connection.close()
