"""The time an update takes over a slow uplink (issue 19, docs/fleet.md): a real bundle of
this project and its dependencies, served over HTTP and ordered over MQTT, once on
localhost (the baseline) and once behind a 200 ms round-trip link limited to 2 MB/s.

    .venv/bin/python bench/update_time.py [--round-trip-ms 200] [--rate-mb-s 2] [--rounds 1]

Each run is its own sandbox: a mosquitto, a file server, the agent 0.1.0 under the
launcher and a supervisor that starts it again whenever it exits (as systemd does), and
central (a client on the broker's own host). Central sends ``update_agent`` for 0.2.0; the
figures come from the agent's ``update.installed`` (download with its SHA-256 check and
unpacking, signature and file hashes, the new virtual environment from the wheels) and
from when central sees ``update.installed`` and then ``update.activated`` (the switch, the
restart through the launcher, the new version's start until it is healthy and its link up).
In the slow run the hall's HTTP and MQTT connections both go through bench/_slowlink.py
(each direction delayed by half the round trip and limited to the rate); central does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _common import median, print_table, scratch_dir, write_config, write_results
from _slowlink import slow_link
from broker import Broker
from oracle import Central, until
from releases import Supervisor, file_server
from support import project_copy

from hallctl.release import build, keygen, pack, sign

NAME = "update_time"
HALL = "bench-hall"
OLD, NEW = "0.1.0", "0.2.0"
ALWAYS = [
    {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
]


def make_bundle(work: Path) -> dict[str, Any]:
    """Wheels of everything the agent needs (``pip wheel``), then a signed, packed bundle
    of version 0.2.0 built from them (``hallctl release build --wheelhouse``)."""
    house = work / "wheelhouse"
    source = project_copy(work / "src-wheels", OLD)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--wheel-dir", str(house), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"pip wheel failed:\n{done.stderr[-3000:]}")
    key = work / "keys" / "release.pem"
    key.parent.mkdir()
    public = keygen(key)
    bundle = work / "bundle"
    build(project_copy(work / f"src-{NEW}", NEW), bundle, wheelhouse=house)
    sign(bundle, key)
    served = work / "served"
    served.mkdir()
    sha, size = pack(bundle, served / f"hall-agent-{NEW}.tar")
    wheels = len(list((bundle / "wheels").glob("*.whl")))
    return {"public": public, "sha256": sha, "size": size, "wheels": wheels, "served": served}


@contextlib.asynccontextmanager
async def hall_side(port: int, round_trip_s: float, rate_bps: float | None) -> AsyncIterator[int]:
    """The port the hall reaches ``port`` on: itself, or a slow link in front of it."""
    if round_trip_s <= 0 and rate_bps is None:
        yield port
        return
    async with slow_link("127.0.0.1", port, round_trip_s, rate_bps) as slow:
        yield slow


def _arrival(central: Central, kind: str) -> tuple[float, dict[str, Any]] | None:
    for message in central.messages:
        if message.topic.endswith(f"/event/{kind}"):
            envelope = message.json()
            if envelope["data"].get("version") == NEW:
                return message.at, envelope["data"]
    return None


async def one_update(
    work: Path, release: dict[str, Any], round_trip_s: float, rate_bps: float | None
) -> dict[str, Any]:
    broker = Broker(work / "mosquitto")
    broker.start()
    try:
        with file_server(release["served"]) as http_port:
            async with (
                hall_side(http_port, round_trip_s, rate_bps) as hall_http,
                hall_side(broker.port, round_trip_s, rate_bps) as hall_mqtt,
            ):
                return await _run(work, release, hall_http, hall_mqtt, broker)
    finally:
        broker.kill()


async def _run(
    work: Path, release: dict[str, Any], http_port: int, mqtt_port: int, broker: Broker
) -> dict[str, Any]:
    storage = work / "state"
    config = write_config(
        work / "config.yaml",
        {
            "hall": {"id": HALL, "name": "基准测试服务站"},
            "services": [{"id": "social", "name": "社保医保", "prefix": "A", "hours": ALWAYS}],
            "windows": [{"id": "w1", "name": "1号窗口", "number": 1, "services": ["social"]}],
            "storage": {"path": str(storage)},
            "web": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "INFO", "format": "text"},
            "clock": {"trust": "system"},
            # The first connect after a start waits a random time (up to 10 s on a hall);
            # here at most 0.2 s, so the figure is the update's, not the dice's.
            "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "reconnect_spread_s": 0.2,
                     "reconnect_max_s": 1.0, "stable_after_s": 0},
            "update": {"trusted_keys": [release["public"]], "releases": str(work / "releases"),
                       "healthy_within_s": 600, "max_starts": 3, "download_timeout_s": 120},
        },
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}/hall-agent-{NEW}.tar"
    with Supervisor(work / "releases", config, storage, work / "agent.log") as supervisor:
        await asyncio.to_thread(supervisor.url)
        async with Central(broker.url, HALL, ["event/#", "state", "reply"]) as central:
            await until(
                lambda: any(
                    m.payload and m.json().get("agent_version") == OLD for m in central.on("state")
                ),
                120,
                "the birth of 0.1.0",
            )
            sent = time.monotonic()
            await central.command(
                "update_agent",
                {"cmd_id": "bench-1", "version": NEW, "url": url,
                 "sha256": release["sha256"], "size": release["size"]},
            )  # fmt: skip
            reply = await central.reply_to("bench-1", 60)
            if reply["status"] != "ok":
                raise SystemExit(f"update_agent refused: {reply}")
            await until(
                lambda: _arrival(central, "update.installed") or _arrival(central, "update.failed"),
                1200,
                "update.installed",
            )
            if _arrival(central, "update.failed"):
                raise SystemExit(f"the update failed: {_arrival(central, 'update.failed')}")
            await until(lambda: _arrival(central, "update.activated"), 600, "update.activated")
            installed = _arrival(central, "update.installed")
            activated = _arrival(central, "update.activated")
            assert installed is not None
            assert activated is not None
    stages = installed[1]
    return {
        "download_s": stages["download_s"],
        "verify_s": stages["verify_s"],
        "install_s": stages["install_s"],
        "switch_restart_s": round(activated[0] - installed[0], 2),
        "total_s": round(activated[0] - sent, 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rate = args.rate_mb_s * 1e6 if args.rate_mb_s > 0 else None
    with scratch_dir("update-time-") as work:
        release = await asyncio.to_thread(make_bundle, work)
        print(f"bundle: {release['wheels']} wheels, {release['size'] / 1e6:.1f} MB", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"localhost": [], "slow link": []}
        for n in range(args.rounds):
            for name, (rtt, limit) in {
                "localhost": (0.0, None),
                "slow link": (args.round_trip_ms / 1000, rate),
            }.items():
                sandbox = work / f"{name.replace(' ', '-')}-{n}"
                sandbox.mkdir()
                figures = await one_update(sandbox, release, rtt, limit)
                print(f"{name} #{n + 1}: {json.dumps(figures)}", flush=True)
                runs[name].append(figures)
    out: dict[str, Any] = {
        "bundle_mb": round(release["size"] / 1e6, 1),
        "wheels": release["wheels"],
        "round_trip_ms": args.round_trip_ms,
        "rate_mb_s": args.rate_mb_s,
    }
    for name, results in runs.items():
        out[name] = {key: round(median([r[key] for r in results]), 2) for key in results[0]}
    stages = ("download_s", "verify_s", "install_s", "switch_restart_s")
    for name in runs:
        # Less sensitive to one slow pip run on a shared machine than the median total.
        out[name]["stages_sum_s"] = round(sum(out[name][s] for s in stages), 2)
    base, slow = out["localhost"], out["slow link"]
    out["ratio_total_to_localhost"] = round(slow["total_s"] / base["total_s"], 2)
    out["ratio_stages_sum_to_localhost"] = round(slow["stages_sum_s"] / base["stages_sum_s"], 2)
    out["slow_link_adds_s"] = round(slow["stages_sum_s"] - base["stages_sum_s"], 1)
    out["ratio_download_to_localhost"] = round(
        slow["download_s"] / max(base["download_s"], 0.01), 1
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trip-ms", type=float, default=200)
    parser.add_argument("--rate-mb-s", type=float, default=2.0, help="0: no bandwidth limit")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    stages = ("download_s", "verify_s", "install_s", "switch_restart_s", "stages_sum_s", "total_s")
    rows = [[stage, figures["localhost"][stage], figures["slow link"][stage]] for stage in stages]
    print_table(["stage (s)", "localhost", f"{args.round_trip_ms:g} ms RTT"], rows)
    print(
        f"bundle {figures['bundle_mb']} MB ({figures['wheels']} wheels); total "
        f"{figures['ratio_total_to_localhost']}x the localhost run; the stages' medians "
        f"{figures['ratio_stages_sum_to_localhost']}x (+{figures['slow_link_adds_s']} s)"
    )
    path = write_results(NAME, vars(args), figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
