"""What keeps ``hall-agent run`` quick to start, checked for what it does (timing is in
bench/start_latency.py): python-escpos's capabilities are parsed once and kept, and a
damaged copy of them never stops a start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def keep(storage: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(storage)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


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
    done = subprocess.run(
        [sys.executable, "-c", program, str(ROOT / "config" / "example.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The config was validated (pydantic ran) without the plugin scan ever happening.
    assert done.stdout.split() == ["ok", "0", "None"]


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
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_START, str(tmp_path / "state"), *unwanted],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    started, scraped = done.stdout.splitlines()
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
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False False", "True False", "PydanticV1NotSupportedError"]


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
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["0", "True", "True"]
