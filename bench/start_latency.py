"""Start -> API answering, and the client verbs' wall time and memory.

Start: ``hall-agent run`` as systemd starts it (the installed console script), timed from
just before the process is spawned to its first ``200`` on ``GET /api/v1/status`` with
the ops token (the API, not only ``/healthz``). Two configs:

- ``example``: ``config/example.yaml`` as is (every device kind, the central link), with
  storage and port overridden as on a Pi (``HALL_STORAGE__PATH``, ``HALL_WEB__PORT=0``),
  its TLS files replaced by a throw-away PKI made here and ``mqtt.url`` pointed at a
  closed local port, so the link is built and tries to connect exactly as on a Pi whose
  central is away. Its devices are absent on this machine: drivers find nothing and retry
  in the background, as on a Pi with a cable out.
- ``no-devices``: the bench hall (4 services, 3 windows, offline, no devices).

One warm-up start per config (it creates the database and Python's bytecode caches), then
``--runs`` starts (5) that reopen that state, as a watchdog restart does; the figure is
the median. Beside the wall time, the CPU seconds the agent had used when it answered
(utime + stime from ``/proc/<pid>/stat``, 10 ms ticks, every thread's: the start's second
step is imported on a worker thread meanwhile): the figure that moves least when other
work shares the machine. And the whole start: from spawn until ``/healthz`` no longer
names the check ``start`` (the devices, the link and the pages are up too; systemd's
READY=1 comes then).

Client verbs: ``hall-agent status``, ``take``, ``window w1 next`` and ``reprint`` against a
running agent, each found through ``--config`` (the API's address and the ops token come
from the config file, as for an ops person on a Pi with /etc/hall-agent/config.yaml).
Wall time from spawn to exit; peak RSS of that one process from GNU time (``%M``). ``reprint``
is refused (the bench hall has no printer): the same client round trip, answered 409.

The results record the load average: on a machine shared with other work the wall times
grow with it, the CPU seconds far less.

Baselines measured in the same run with the same interpreter: ``python -c pass``, and
``python -c "import agent.daemon"`` (what every verb cost when it loaded the daemon's
stack), wall time and peak RSS, median of the same number of runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    SCRATCH,
    agent_command,
    bench_hall,
    median,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)

NAME = "start_latency"
EXAMPLE = ROOT / "config" / "example.yaml"
TARGET_EXAMPLE_S = 1.0
TARGET_NO_DEVICES_S = 0.6
TARGET_VERB_S = 0.15
TARGET_VERB_MB = 30.0
POLL_S = 0.005


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: no HALL_* of ours, this tree's code first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def _script() -> list[str]:
    """The installed ``hall-agent`` console script, as an ops person types it."""
    script = Path(sys.executable).parent / "hall-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agent.cli"]


def _get(url: str, path: str, token: str | None, timeout: float = 2.0) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


TIME = Path("/usr/bin/time")


def timed_run(
    cmd: Sequence[str], env: Mapping[str, str]
) -> tuple[float, float | None, float | None, int]:
    """Wall seconds, peak RSS in MB, CPU seconds (user + system) and the exit code of one
    process.

    RSS and CPU come from GNU time run in between: Linux keeps ``ru_maxrss`` across
    ``exec``, so a child spawned straight from this (larger) process would report this
    process's RSS. Without /usr/bin/time they are not measured (None).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time", dir=SCRATCH) as out:
        wrapper = [str(TIME), "-f", "%U %S %M", "-o", out.name] if TIME.exists() else []
        started = time.perf_counter()
        code = subprocess.call(
            [*wrapper, *cmd], env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wall = time.perf_counter() - started
        # GNU time writes "Command exited with non-zero status N" before the figures.
        lines = out.read().splitlines()
    if not wrapper or not lines:
        return wall, None, None, code
    user, system, rss_kb = lines[-1].split()
    return wall, int(rss_kb) / 1024, float(user) + float(system), code


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (what it spent itself, whatever the load)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _starting(url: str) -> bool:
    """Whether ``/healthz`` still names the start's second step (agent/web/starting.py)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2.0)
    try:
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return any(r.get("check") == "start" for r in body.get("reasons", []))


def start_once(
    config: Path, storage: Path, env: Mapping[str, str], log: Path
) -> tuple[float, float, float]:
    """Seconds from spawn to the first 200 of ``GET /api/v1/status`` as ops, the CPU
    seconds the agent had used by then, and the seconds until the whole start is done
    (``/healthz`` no longer says ``start``: the devices, the link and the pages are up);
    then stop it."""
    url_file = storage / "api-url"
    url_file.unlink(missing_ok=True)
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            agent_command(config), stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=ROOT
        )
    try:
        deadline = started + 60
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
                raise RuntimeError(f"hall-agent exited with {proc.returncode}:\n" + "\n".join(tail))
            try:
                url = url_file.read_text(encoding="utf-8").strip()
                token = (storage / "ops-token").read_text(encoding="ascii").strip()
            except OSError:
                url = ""
            if url:
                try:
                    if _get(url, "/api/v1/status", token) == 200:
                        answered = time.perf_counter() - started
                        cpu = cpu_seconds(proc.pid)
                        while _starting(url) and time.perf_counter() < deadline:
                            time.sleep(POLL_S)
                        return answered, cpu, time.perf_counter() - started
                except OSError:
                    pass
            time.sleep(POLL_S)
        raise TimeoutError("hall-agent did not answer within 60 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def example_env(work: Path, storage: Path) -> dict[str, str]:
    """The example config's overrides: storage, port, a throw-away PKI, a closed broker."""
    from pki import make_pki  # tests/pki.py, on the path through _common

    pki = make_pki(work / "pki", client_name="bj-hd-zgc-001")
    return {
        "HALL_STORAGE__PATH": str(storage),
        "HALL_WEB__PORT": "0",
        "HALL_PAGES__STAFF_PHOTOS": str(storage / "staff-photos"),
        "HALL_MQTT__URL": "mqtts://127.0.0.1:9",
        "HALL_MQTT__TLS__CA_FILE": str(pki.ca_cert),
        "HALL_MQTT__TLS__CERT_FILE": str(pki.client_cert),
        "HALL_MQTT__TLS__KEY_FILE": str(pki.client_key),
    }


def measure_start(
    label: str, config: Path, storage: Path, extra: Mapping[str, str], runs: int, work: Path
) -> dict[str, Any]:
    env = _env(extra)
    log = work / f"{label}.log"
    warm_up, _, _ = start_once(config, storage, env, log)
    runs_ = [start_once(config, storage, env, log) for _ in range(runs)]
    times = [wall for wall, _, _ in runs_]
    cpu = [used for _, used, _ in runs_]
    complete = [done for _, _, done in runs_]
    return {
        "first_start_s": warm_up,
        "median_s": median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs_s": [round(t, 4) for t in times],
        "cpu_s_median": median(cpu),
        "cpu_s_runs": cpu,
        "complete_s_median": median(complete),
        "complete_s_runs": [round(t, 4) for t in complete],
    }


def measure_commands(
    commands: Mapping[str, Sequence[str]], env: Mapping[str, str], runs: int
) -> dict[str, dict[str, Any]]:
    """Each command ``runs`` times, interleaved, after one unmeasured run each."""
    for cmd in commands.values():
        timed_run(cmd, env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[float]] = {name: [] for name in commands}  # empty: not measured
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, set[int]] = {name: set() for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            wall, mb, used, code = timed_run(cmd, env)
            walls[name].append(wall)
            if mb is not None and used is not None:
                rss[name].append(mb)
                cpu[name].append(used)
            codes[name].add(code)
    return {
        name: {
            "wall_s_median": median(walls[name]),
            "wall_s_max": max(walls[name]),
            "rss_mb_median": median(rss[name]) if rss[name] else None,
            "rss_mb_max": max(rss[name]) if rss[name] else None,
            "cpu_s_median": median(cpu[name]) if cpu[name] else None,
            "exit_codes": sorted(codes[name]),
            "wall_s_runs": [round(w, 4) for w in walls[name]],
        }
        for name in commands
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured starts / verb runs (5)")
    args = parser.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    figures: dict[str, Any] = {}
    with scratch_dir("start-") as work:
        # Baselines first, then the agent.
        python = sys.executable
        baseline = measure_commands(
            {
                "python -c pass": [python, "-c", "pass"],
                "python -c 'import agent.daemon'": [python, "-c", "import agent.daemon"],
            },
            _env(),
            args.runs,
        )
        figures["baseline"] = baseline

        plain = work / "plain"
        plain_config = write_config(work / "bench-hall.yaml", bench_hall(plain))
        figures["start"] = {
            "no-devices": measure_start("no-devices", plain_config, plain, {}, args.runs, work),
        }
        ex_storage = work / "example"
        figures["start"]["example"] = measure_start(
            "example", EXAMPLE, ex_storage, example_env(work, ex_storage), args.runs, work
        )

        # The verbs against one running agent, found through its config file.
        env = _env()
        agent_log = work / "verbs-agent.log"
        (plain / "api-url").unlink(missing_ok=True)
        proc = subprocess.Popen(
            agent_command(plain_config),
            stdout=agent_log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (plain / "api-url").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(agent_log.read_text(encoding="utf-8", errors="replace"))
                time.sleep(0.05)
            cli = [*_script()]
            conf = ["--config", str(plain_config)]
            commands = {
                "status": [*cli, "status", *conf],
                "take": [*cli, "take", "--service", "social", *conf],
                "window w1 next": [*cli, "window", "w1", "next", *conf],
                "reprint (refused)": [*cli, "reprint", "A001", *conf],
            }
            assert timed_run([*cli, "window", "w1", "sign-in", "1001", *conf], env)[-1] == 0
            figures["verbs"] = measure_commands(commands, env, args.runs)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)

    worst_wall = max(v["wall_s_median"] for v in figures["verbs"].values())
    worst_rss = max(v["rss_mb_max"] or math.inf for v in figures["verbs"].values())
    figures["target"] = {
        "example_s": TARGET_EXAMPLE_S,
        "no_devices_s": TARGET_NO_DEVICES_S,
        "verb_wall_s": TARGET_VERB_S,
        "verb_rss_mb": TARGET_VERB_MB,
        "example_met": figures["start"]["example"]["median_s"] <= TARGET_EXAMPLE_S,
        "no_devices_met": figures["start"]["no-devices"]["median_s"] <= TARGET_NO_DEVICES_S,
        "verbs_met": worst_wall <= TARGET_VERB_S and worst_rss <= TARGET_VERB_MB,
    }
    pass_wall = baseline["python -c pass"]["wall_s_median"]

    print(f"start -> GET /api/v1/status answered (median of {args.runs}; first start apart)")
    print_table(
        [
            "config",
            "median s",
            "min s",
            "max s",
            "first start s",
            "agent CPU s (median)",
            "whole start s (median)",
        ],
        [
            [
                k,
                v["median_s"],
                v["min_s"],
                v["max_s"],
                v["first_start_s"],
                v["cpu_s_median"],
                v["complete_s_median"],
            ]
            for k, v in figures["start"].items()
        ],
    )
    print()
    print_table(
        ["command", "wall s (median)", "x python -c pass", "CPU s", "RSS MB (max)", "exit"],
        [
            [
                name,
                v["wall_s_median"],
                v["wall_s_median"] / pass_wall,
                "-" if v["cpu_s_median"] is None else v["cpu_s_median"],
                "-" if v["rss_mb_max"] is None else v["rss_mb_max"],
                ",".join(map(str, v["exit_codes"])),
            ]
            for name, v in {**baseline, **figures["verbs"]}.items()
        ],
    )
    print(json.dumps(figures["target"]))
    parameters = {
        "runs": args.runs,
        "poll_s": POLL_S,
        "load_average": os.getloadavg(),
    }
    write_results(NAME, parameters, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
