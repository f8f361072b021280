"""What keeps ``hall-agent run`` quick to start, checked for what it does (timing is in
bench/start_latency.py): python-escpos's capabilities are parsed once and kept, and a
damaged copy of them never stops a start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In a fresh interpreter: python-escpos is imported once per process.
PROGRAM = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from agent.daemon import ESCPOS_PICKLE_VARIABLE, keep_escpos_capabilities\n"
    "keep_escpos_capabilities(Path(sys.argv[1]))\n"
    "import escpos.capabilities as caps\n"
    "print(caps.pickle_path)\n"
    "print(ESCPOS_PICKLE_VARIABLE in os.environ, 'default' in caps.CAPABILITIES['profiles'])\n"
)


def run_python(
    program: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> str:
    """What ``python -c program args…`` prints, run from the repository (a fresh
    interpreter: what it imports is what a start imports); it must exit with 0."""
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def keep(storage: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    stdout = run_python(PROGRAM, str(storage), env=env)
    return stdout.splitlines()


def test_escpos_capabilities_are_kept_in_the_state_folder(tmp_path: Path) -> None:
    pickle_path, flags = keep(tmp_path)
    # Kept in <storage.path>/cache, and the variable was not left for child processes.
    assert Path(pickle_path).parent == tmp_path / "cache"
    assert Path(pickle_path).stat().st_size > 1000
    assert flags == "False True"
    # The next start reads the pickle (python-escpos parses only when its file is newer).
    made = Path(pickle_path).stat().st_mtime_ns
    assert keep(tmp_path)[0] == pickle_path
    assert Path(pickle_path).stat().st_mtime_ns == made


def test_a_damaged_capabilities_cache_is_made_anew(tmp_path: Path) -> None:
    pickle_path, _ = keep(tmp_path)
    # Cut short, as a power loss while python-escpos wrote it would leave it.
    Path(pickle_path).write_bytes(Path(pickle_path).read_bytes()[:100])
    again, flags = keep(tmp_path)
    assert again == pickle_path
    assert flags == "False True"
    assert Path(pickle_path).stat().st_size > 1000


def test_an_unwritable_state_folder_leaves_escpos_to_its_default(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    pickle_path, flags = keep(blocked)  # <file>/cache cannot be made
    assert not pickle_path.startswith(str(blocked))
    assert flags == "False True"


def test_the_agent_does_not_scan_installed_packages_for_pydantic_plugins() -> None:
    program = (
        "import sys, agent.cli\n"
        "code = agent.cli.main(['check-config', sys.argv[1]])\n"
        "import pydantic.plugin._loader as loader\n"
        "print(code, loader._plugins)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    stdout = run_python(program, str(ROOT / "config" / "example.yaml"), env=env)
    # The config was validated (pydantic ran) without the plugin scan ever happening.
    assert stdout.split() == ["ok", "0", "None"]


# An offline hall without devices, started in a fresh interpreter: it answers its API,
# then says which of the libraries a start need not pay for were loaded.
OFFLINE_START = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "import httpx\n"
    "sys.path.insert(0, 'tests')\n"
    "from support import as_ops, hall_config\n"
    "from agent.config import HallAgentConfig\n"
    "from agent.daemon import running_agent\n"
    "async def main():\n"
    "    config = HallAgentConfig.model_validate(hall_config(Path(sys.argv[1])))\n"
    "    async with running_agent(config) as agent:\n"
    "        async with httpx.AsyncClient(base_url=agent.url, headers=as_ops(agent)) as c:\n"
    "            status = (await c.get('/api/v1/status')).status_code\n"
    "            queue = (await c.get('/api/v1/queue')).status_code\n"
    "            loaded = [m for m in sys.argv[2:] if m in sys.modules]\n"
    "            metrics = await c.get('/metrics')\n"
    "            print(status, queue, agent.link.state.value, *loaded)\n"
    "            print(metrics.status_code, metrics.headers['content-type'].split(';')[0],\n"
    "                  'hall_outbox_bytes' in metrics.text, 'prometheus_client' in sys.modules)\n"
    "asyncio.run(main())\n"
)


def test_an_offline_hall_starts_without_mqtt_metrics_or_pydantic_v1(tmp_path: Path) -> None:
    """aiomqtt and paho come with the first connection (an offline hall never makes one),
    prometheus_client with the first scrape of /metrics, and FastAPI's routes are built
    without importing pydantic.v1 (agent/web/__init__.py)."""
    unwanted = ["aiomqtt", "paho.mqtt.client", "prometheus_client", "pydantic.v1"]
    stdout = run_python(OFFLINE_START, str(tmp_path / "state"), *unwanted, timeout=120)
    started, scraped = stdout.splitlines()
    # Both routes answered, the link is built (offline), and none of the four is loaded.
    assert started.split() == ["200", "200", "disabled"]
    # /metrics still answers in Prometheus's text format, with the hall's figures.
    assert scraped.split() == ["200", "text/plain", "True", "True"]


def test_fastapi_still_recognises_a_pydantic_v1_model_once_v1_is_imported() -> None:
    """The v1 check is skipped only while pydantic.v1 is not loaded: a route declared with a
    v1 model is refused by FastAPI as before."""
    program = (
        "import warnings, sys\n"
        "import agent.web\n"
        "from fastapi import FastAPI\n"
        "from fastapi._compat import shared\n"
        "from pydantic import BaseModel\n"
        "class V2(BaseModel):\n"
        "    x: int\n"
        "print(shared.is_pydantic_v1_model_class(V2), 'pydantic.v1' in sys.modules)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    from pydantic import v1\n"
        "class V1(v1.BaseModel):\n"
        "    x: int\n"
        "print(shared.is_pydantic_v1_model_class(V1), shared.is_pydantic_v1_model_class(V2))\n"
        "app = FastAPI()\n"
        "try:\n"
        "    def route(body: V1) -> None: ...\n"
        "    app.post('/v1-route')(route)\n"
        "except Exception as err:\n"
        "    print(type(err).__name__)\n"
    )
    stdout = run_python(program)
    assert stdout.splitlines() == ["False False", "True False", "PydanticV1NotSupportedError"]


def test_settling_the_start_freezes_its_objects_and_turns_the_collector_on() -> None:
    """`hall-agent run` starts with the cyclic collector off (agent/cli.py); once the agent
    answers, serve() collects once, freezes what start made and turns it back on."""
    program = (
        "import gc\n"
        "gc.disable()\n"
        "from agent.daemon import settle_start_up_objects\n"
        "before = gc.get_freeze_count()\n"
        "settle_start_up_objects()\n"
        "print(before, gc.get_freeze_count() > 10000, gc.isenabled())\n"
    )
    stdout = run_python(program)
    assert stdout.split() == ["0", "True", "True"]


# -- the two steps of a start (agent/daemon.py, agent/web/starting.py) --------------------


def _hall_with_a_web_caller(storage: Path) -> Any:
    from support import hall_config

    from agent.config import HallAgentConfig

    data = hall_config(storage)
    data["devices"] = [{"id": "caller-w1", "kind": "caller", "transport": {"type": "web"}}]
    data["windows"][0]["devices"] = ["caller-w1"]
    return HallAgentConfig.model_validate(data)


@pytest.mark.timeout(90)
async def test_the_api_answers_before_the_features_and_says_what_is_not_up_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 1 (store, hall, access, issuing, health, the API's own routes) answers while
    step 2 (devices, link, pages, their routes) is held; what step 2 brings is answered
    503 ``starting`` (never 404 or 401), /healthz says so, and once step 2 is done
    everything answers as before."""
    import httpx
    from support import bearer, ops_headers

    from agent import daemon_features
    from agent.daemon import Running, running_agent
    from agent.web.window_pages import load_tokens

    config = _hall_with_a_web_caller(tmp_path / "state")
    caller = bearer(load_tokens(config)["caller-w1"])  # kept: the agent reads the same
    held, release = asyncio.Event(), asyncio.Event()
    compose = daemon_features.compose_features

    async def held_back(*args: Any, **kwargs: Any) -> Any:
        held.set()
        await release.wait()
        return await compose(*args, **kwargs)

    monkeypatch.setattr(daemon_features, "compose_features", held_back)
    up: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def run() -> None:
        async with running_agent(config) as running:
            up.set_result(running)
            await done.wait()

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(held.wait(), 60)
        url = (config.storage.path / "api-url").read_text(encoding="utf-8").strip()
        ops = ops_headers(config.storage.path)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            status = await client.get("/api/v1/status", headers=ops)
            assert status.status_code == 200
            assert status.json()["central"]["state"] == "starting"
            taken = await client.post("/api/v1/tickets", json={"service": "social"}, headers=ops)
            assert taken.status_code == 201
            health = (await client.get("/healthz")).json()
            assert health["status"] == "degraded"
            # First the start, then what it has not brought up (the web caller's page).
            assert [r["check"] for r in health["reasons"]] == ["start", "device:caller-w1"]
            page = await client.get("/pages/kiosk", headers={"accept": "text/html"})
            assert page.status_code == 503
            assert page.headers["retry-after"] == "1"
            assert "正在启动" in page.text
            report = await client.get("/api/v1/reports", headers=ops)
            assert (report.status_code, report.json()["error"]) == (503, "starting")
            login = await client.post("/api/v1/auth/login", json={"name": "a", "password": "b"})
            assert (login.status_code, login.json()["error"]) == (503, "starting")
            # A page token only the window devices know, and a token nobody knows: the
            # agent cannot tell them apart yet, so neither is told "unauthorized".
            press = await client.post("/api/v1/windows/w1/next", headers=caller)
            assert (press.status_code, press.json()["error"]) == (503, "starting")
            assert press.headers["retry-after"] == "1"
            stranger = await client.get("/api/v1/status", headers=bearer("x" * 32))
            assert (stranger.status_code, stranger.json()["error"]) == (503, "starting")
            assert (await client.get("/api/v1/status")).status_code == 401  # no token at all
            assert not up.done()

            release.set()
            running = await asyncio.wait_for(up, 60)
            assert running.url == url
            status = await client.get("/api/v1/status", headers=ops)
            assert status.json()["central"]["state"] == "disabled"
            health = (await client.get("/healthz")).json()
            assert (health["status"], health["reasons"]) == ("ready", [])
            assert (await client.get("/pages/kiosk")).status_code == 200
            assert (await client.get("/api/v1/reports", headers=ops)).status_code == 200
            press = await client.post("/api/v1/windows/w1/next", headers=caller)
            assert press.status_code == 200, press.text
            assert (
                press.json()["result"]["ticket"]["number"]
                == taken.json()["result"]["ticket"]["number"]
            )
            stranger = await client.get("/api/v1/status", headers=bearer("x" * 32))
            assert stranger.status_code == 401
            missing = await client.get("/api/v1/no-such-route", headers=ops)
            assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    finally:
        release.set()
        done.set()
        await task


def test_the_ticket_printer_loads_python_escpos_at_its_first_ticket() -> None:
    """A hall with a printer starts without python-escpos's command layer and
    python-barcode (protocols/escpos.py imports them at the first ticket encoded)."""
    program = (
        "import sys\n"
        "import agent.features.printing\n"
        "from protocols.escpos import encode_gb18030\n"
        "from protocols.escpos_model import Paper, TextLine, TicketDocument\n"
        "heavy = ('escpos.escpos', 'barcode')\n"
        "print(*[m in sys.modules for m in heavy])\n"
        "doc = TicketDocument((TextLine('A001'),))\n"
        "data = encode_gb18030(doc, Paper.for_width(80))\n"
        "print(*[m in sys.modules for m in heavy], b'A001' in data)\n"
    )
    stdout = run_python(program)
    assert stdout.splitlines() == ["False False", "True True True"]


def test_a_printer_connects_and_prints_without_python_escpos() -> None:
    """The printer's links are the socket, pyserial and pyusb themselves: connecting and
    writing loads none of python-escpos's printer classes (every printer kind, its
    capabilities, python-barcode, pyusb: ~6 MB for the life of the process), and the
    ticket's typesetter waits for its first drawing to load Pillow and qrcode."""
    program = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "import agent.features.printing\n"
        "from drivers.printer.escpos_backend import EscposPrinter\n"
        "from drivers.transport import TcpTarget\n"
        "from protocols.escpos_raster import CJK_FONT, Typesetter\n"
        "Typesetter(Path(CJK_FONT), 576)\n"
        "async def main():\n"
        "    got = asyncio.Queue()\n"
        "    async def take(reader, writer):\n"
        "        await got.put(await reader.readexactly(6))\n"
        "        writer.close()\n"
        "    server = await asyncio.start_server(take, '127.0.0.1', 0)\n"
        "    port = server.sockets[0].getsockname()[1]\n"
        "    printer = EscposPrinter(TcpTarget('127.0.0.1', port))\n"
        "    await printer.send(b'\\x1b@A001')\n"
        "    print(await asyncio.wait_for(got.get(), 30))\n"
        "    await printer.close()\n"
        "    server.close()\n"
        "asyncio.run(main())\n"
        "heavy = ('escpos', 'barcode', 'usb', 'serial', 'PIL', 'qrcode')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    stdout = run_python(program)
    assert stdout.splitlines() == ["b'\\x1b@A001'", "[]"]


def test_python_escpos_comes_at_the_first_ticket_with_its_capabilities_kept(
    tmp_path: Path,
) -> None:
    """The agent only arranges the capabilities' cache at start (agent/daemon.py); the
    first ticket encoded imports python-escpos, which then reads or writes the pickle in
    the state folder."""
    program = (
        "import functools, os, sys\n"
        "from pathlib import Path\n"
        "from agent.daemon import ESCPOS_PICKLE_VARIABLE, keep_escpos_capabilities\n"
        "from protocols.escpos import before_escpos_import, commands_loaded, encode_gb18030\n"
        "from protocols.escpos_model import Paper, TextLine, TicketDocument\n"
        "before_escpos_import(functools.partial(keep_escpos_capabilities, Path(sys.argv[1])))\n"
        "print('escpos' in sys.modules, commands_loaded())\n"
        "encode_gb18030(TicketDocument((TextLine('A001'),)), Paper.for_width(80))\n"
        "import escpos.capabilities as caps\n"
        "print(commands_loaded(), caps.pickle_path, ESCPOS_PICKLE_VARIABLE in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    stdout = run_python(program, str(tmp_path), env=env)
    before, after = stdout.splitlines()
    assert before == "False False"
    loaded, pickle_path, variable_left = after.split()
    assert (loaded, variable_left) == ("True", "False")
    assert Path(pickle_path).parent == tmp_path / "cache"
    assert Path(pickle_path).stat().st_size > 1000


def test_the_local_api_serves_without_uvicorns_command_line() -> None:
    """uvicorn's package is entered without its ``__init__`` (agent/web/__init__.py): the
    server answers with neither click nor multiprocessing loaded, and uvicorn's public
    names still work for anyone who asks for them."""
    program = (
        "import asyncio, sys, urllib.request\n"
        "import agent.daemon\n"
        "from fastapi import FastAPI\n"
        "from agent.config.system import WebConfig\n"
        "from agent.web.app import WebServer\n"
        "app = FastAPI()\n"
        "app.get('/ping')(lambda: {'pong': True})\n"
        "def get(url):\n"
        "    with urllib.request.urlopen(url, timeout=30) as answer:\n"
        "        return answer.read().decode()\n"
        "async def main():\n"
        "    async with WebServer(app, WebConfig(port=0)) as web:\n"
        "        print(await asyncio.to_thread(get, f'http://127.0.0.1:{web.port}/ping'))\n"
        "asyncio.run(main())\n"
        "cli = ('click', 'multiprocessing', 'uvicorn.main')\n"
        "print(sorted(m for m in cli if m in sys.modules))\n"
        "import uvicorn\n"
        "from uvicorn import Config, Server, run\n"
        "print(uvicorn.__version__ > '0', Server is uvicorn.server.Server, callable(run))\n"
    )
    stdout = run_python(program)
    assert stdout.splitlines() == ['{"pong":true}', "[]", "True True True"]


# What the start's first step never loads: the second step's code comes once the API
# answers (agent/daemon_features.py, imported on a worker thread).
STEP_TWO = (
    "agent.daemon_features",
    "agent.central.link",
    "agent.central.contract",
    "agent.central.commands",
    "agent.web.pages",
    "agent.web.window_pages",
    "agent.features.reports",
    "agent.features.cases",
    "agent.features.updates",
    "escpos.escpos",
    "barcode",
)


def test_the_first_step_of_a_start_loads_none_of_the_second() -> None:
    program = (
        "import sys, agent.daemon, agent.features.printing\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    stdout = run_python(program)
    loaded = set(stdout.split())
    assert "agent.web.app" in loaded
    assert "agent.web.health" in loaded
    assert not loaded & set(STEP_TWO), sorted(loaded & set(STEP_TWO))
