"""Idle memory and CPU of ``hall-agent run``, against an idle Python process.

The agent runs with the example config (``config/example.yaml``), its storage and web port
overridden by the environment as on a Pi (``HALL_STORAGE__PATH``, ``HALL_WEB__PORT=0``).
Once it answers ``/healthz`` it is left alone: 5 s to settle, then 30 s of sampling of
``/proc/<pid>/status`` (VmRSS, once a second) and ``/proc/<pid>/stat`` (utime + stime).

The baseline is ``python -c "import time; time.sleep(40)"`` with the same interpreter,
sampled over the same 30 s, side by side with the agent, so the difference is what the
agent adds to a bare interpreter.

If the example config cannot run on this machine (its broker's TLS files or its devices
are missing), a copy without its ``mqtt`` section (an offline hall), then also without its
``devices``, is used instead, and the results say which and why.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from _common import (
    ROOT,
    AgentProcess,
    bench_hall,
    median,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)

NAME = "idle"
TARGET_RSS_MB = 80.0
TARGET_CPU_PERCENT = 1.0
EXAMPLE = ROOT / "config" / "example.yaml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status we care about, and the thread count."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def read_cpu_ticks(pid: int) -> int:
    """utime + stime of the process, in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text[text.rindex(")") + 2 :].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def read_pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler:
    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        self.rss_kb: list[int] = []
        self.cpu_per_s: list[float] = []
        self.first_ticks = 0
        self.last_ticks = 0
        self.status: dict[str, int] = {}
        self.pss_kb: int | None = None

    def begin(self) -> None:
        self.first_ticks = self.last_ticks = read_cpu_ticks(self.pid)

    def sample(self, interval: float) -> None:
        self.status = read_status(self.pid)
        self.rss_kb.append(self.status["VmRSS"])
        ticks = read_cpu_ticks(self.pid)
        self.cpu_per_s.append((ticks - self.last_ticks) / CLOCK_TICKS / interval * 100)
        self.last_ticks = ticks

    def figures(self, elapsed: float) -> dict[str, Any]:
        self.pss_kb = read_pss_kb(self.pid)
        cpu_s = (self.last_ticks - self.first_ticks) / CLOCK_TICKS
        return {
            "rss_mb_median": median(self.rss_kb) / 1024,
            "rss_mb_max": max(self.rss_kb) / 1024,
            "rss_mb_samples": [round(v / 1024, 2) for v in self.rss_kb],
            "peak_rss_mb": self.status.get("VmHWM", 0) / 1024,
            "rss_anon_mb": self.status.get("RssAnon", 0) / 1024,
            "rss_file_mb": self.status.get("RssFile", 0) / 1024,
            "pss_mb": None if self.pss_kb is None else self.pss_kb / 1024,
            "threads": self.status.get("Threads"),
            "cpu_seconds": cpu_s,
            "cpu_percent_of_one_core": cpu_s / elapsed * 100,
            "cpu_percent_max_1s": max(self.cpu_per_s),
        }


def sample_together(samplers: list[Sampler], seconds: float, interval: float = 1.0) -> float:
    for s in samplers:
        s.begin()
    started = time.monotonic()
    for n in range(1, round(seconds / interval) + 1):
        time.sleep(max(0.0, started + n * interval - time.monotonic()))
        for s in samplers:
            s.sample(interval)
    return time.monotonic() - started


def example_without(work: Path, sections: tuple[str, ...]) -> Path:
    """A copy of the example config without the named parts (``mqtt``: run offline)."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for section in sections:
        data.pop(section, None)
        if section == "devices":
            for window in data.get("windows", []):
                window.pop("devices", None)
    return write_config(work / f"example-without-{'-'.join(sections)}.yaml", data)


def start_agent(work: Path, storage: Path) -> tuple[AgentProcess, str]:
    """The example config as is if it runs here, else with as little taken out as needed."""
    env = {"HALL_STORAGE__PATH": str(storage), "HALL_WEB__PORT": "0"}
    attempts: list[tuple[str, Callable[[], Path]]] = []
    if EXAMPLE.exists():
        attempts.append(("config/example.yaml", lambda: EXAMPLE))
        for sections in (("mqtt",), ("mqtt", "devices")):
            label = f"config/example.yaml without {' and '.join(sections)}"
            attempts.append((label, functools.partial(example_without, work, sections)))
    else:
        attempts.append(
            (
                "bench hall (config/example.yaml does not exist)",
                lambda: write_config(work / "bench-hall.yaml", bench_hall(storage)),
            )
        )
    failures = []
    for label, make in attempts:
        agent_ = AgentProcess(make(), storage, work / "agent.log", env=env)
        try:
            agent_.start()
        except (RuntimeError, TimeoutError) as err:
            failures.append(f"{label}: {err}")
            print(f"could not run with {label}; trying the next config", file=sys.stderr)
            continue
        if failures:
            reason = failures[0].splitlines()[-1][:300]
            return agent_, f"{label} (the example as is failed here: {reason})"
        return agent_, label
    raise RuntimeError("hall-agent would not start:\n" + "\n".join(failures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before sampling")
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time (30)")
    args = parser.parse_args(argv)

    with scratch_dir("idle-") as work:
        storage = work / "state"
        agent_, config_used = start_agent(work, storage)
        baseline = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({args.settle + args.seconds + 5:g})"]
        )
        try:
            time.sleep(args.settle)
            samplers = [Sampler("hall-agent run", agent_.pid), Sampler("baseline", baseline.pid)]
            elapsed = sample_together(samplers, args.seconds)
            figures = {
                "agent": samplers[0].figures(elapsed),
                "baseline": samplers[1].figures(elapsed),
            }
        finally:
            baseline.kill()
            baseline.wait(10)
            agent_.stop()

    agent_f, base_f = figures["agent"], figures["baseline"]
    figures["agent_adds"] = {
        "rss_mb": agent_f["rss_mb_median"] - base_f["rss_mb_median"],
        "cpu_percent": agent_f["cpu_percent_of_one_core"] - base_f["cpu_percent_of_one_core"],
    }
    figures["target"] = {
        "rss_mb_max": TARGET_RSS_MB,
        "cpu_percent_max": TARGET_CPU_PERCENT,
        "rss_met": agent_f["rss_mb_max"] <= TARGET_RSS_MB,
        "cpu_met": agent_f["cpu_percent_of_one_core"] <= TARGET_CPU_PERCENT,
    }
    parameters = {
        "config": config_used,
        "env": {"HALL_STORAGE__PATH": "<fresh dir in bench/.tmp>", "HALL_WEB__PORT": "0"},
        "settle_s": args.settle,
        "sampling_s": args.seconds,
        "sample_interval_s": 1.0,
        "clock_ticks_per_s": CLOCK_TICKS,
        "baseline": f"{Path(sys.executable).name} -c 'import time; time.sleep(...)'",
    }
    path = write_results(NAME, parameters, figures)

    print(
        f"idle, {args.seconds:g} s sampled after {args.settle:g} s settling; config: {config_used}"
    )
    rows = [
        [
            name,
            f["rss_mb_median"],
            f["rss_mb_max"],
            "-" if f["pss_mb"] is None else f["pss_mb"],
            f["threads"],
            f["cpu_seconds"],
            f["cpu_percent_of_one_core"],
        ]
        for name, f in (("hall-agent run", agent_f), ("baseline python", base_f))
    ]
    print_table(["process", "RSS MB", "max", "PSS MB", "threads", "CPU s", "CPU %"], rows)
    adds = figures["agent_adds"]
    print(f"the agent adds {adds['rss_mb']:.1f} MB RSS and {adds['cpu_percent']:.2f} % CPU")
    for what, value, limit, met in (
        ("RSS", f"{agent_f['rss_mb_max']:.1f} MB", f"{TARGET_RSS_MB:.0f} MB", "rss_met"),
        (
            "CPU",
            f"{agent_f['cpu_percent_of_one_core']:.2f} %",
            f"{TARGET_CPU_PERCENT:g} %",
            "cpu_met",
        ),
    ):
        print(
            f"target {what} <= {limit}: {value} ({'met' if figures['target'][met] else 'NOT met'})"
        )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
