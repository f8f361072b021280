"""Memory of ``hall-agent run`` holding a 100 000-event outbox backlog, against an empty one.

Two real agent processes run side by side, as systemd starts them, each with its own
storage and the bench hall's config plus a central link whose broker is down (a local
port where mosquitto is not yet running), so whatever is in the outbox stays there:

- ``empty`` (baseline): a fresh storage directory, nothing in the outbox;
- ``backlog``: a copy of a store pre-built with 100 000 unpublished events (the queue
  engine's ticket and window events, appended in large transactions before the agent
  starts), as a hall has after a long outage.

Phases, for both processes at once:

1. ``offline``: once both answer ``/healthz``, 5 s to settle, then ``VmRSS`` (with
   ``RssAnon``/``RssFile``) from ``/proc/<pid>/status`` once a second for 15 s;
2. ``drain``: mosquitto starts on that port; both links connect (``reconnect_max_s = 2``)
   and the backlog drains at ``drain_rate = 10000`` (the highest allowed; at the default
   200/s it would take over 8 minutes); ``VmRSS`` every 0.1 s until the agent reports
   everything published, and the peak (``VmHWM``);
3. ``after``: 5 s more once drained.

Repeated (3 times by default) with fresh copies, the start order alternating; figures
are medians over the repetitions. The target: the backlog adds less than 20 MB of RSS
while offline. The agents' logs are scanned for aiomqtt's "pending publish calls"
warning, which a drain with a window wider than 10 writes once per publish.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import AgentProcess, median, print_table, scratch_dir, write_config, write_results
from _mqtt import (
    Broker,
    broker_version,
    build_backlog,
    copy_store,
    event_templates,
    hall_data,
    read_vm,
)

from agent.config import validate_config

NAME = "backlog_rss"
TARGET_MB = 20.0
KINDS = ("empty", "backlog")
PENDING_WARNING = "pending publish calls"
MQTT = {"drain_rate": 10_000, "reconnect_spread_s": 1, "reconnect_max_s": 2}


class Agent:
    def __init__(self, kind: str, work: Path, broker: Broker, rep: int, master: Path) -> None:
        self.kind = kind
        self.storage = work / f"{kind}-{rep}" / "state"
        if kind == "backlog":
            copy_store(master, self.storage)
        else:
            self.storage.mkdir(parents=True)
        data = hall_data(self.storage, f"rss-{kind}", broker.url, **MQTT)
        data["logging"] = {"level": "INFO", "format": "text"}
        validate_config(data)
        path = write_config(self.storage.parent / "config.yaml", data)
        self.log_path = self.storage.parent / "agent.log"
        self.process = AgentProcess(path, self.storage, self.log_path)
        self.samples: dict[str, list[int]] = {"offline": [], "drain": [], "after": []}
        self.anon: dict[str, list[int]] = {"offline": [], "drain": [], "after": []}
        self.drained_at: float | None = None
        self.status: dict[str, Any] = {}

    def sample(self, phase: str) -> None:
        vm = read_vm(self.process.pid)
        self.samples[phase].append(vm["VmRSS"])
        self.anon[phase].append(vm["RssAnon"])

    def poll(self) -> dict[str, Any]:
        self.status = httpx.get(
            f"{self.process.url}/api/v1/status", headers=self.process.ops, timeout=10
        ).json()
        return self.status

    def figures(self, drain_s: float | None) -> dict[str, Any]:
        vm = read_vm(self.process.pid)
        log = self.log_path.read_text(encoding="utf-8", errors="replace")
        central = self.status.get("central", {})
        return {
            "offline_rss_mb_median": median(self.samples["offline"]) / 1024,
            "offline_rss_mb_max": max(self.samples["offline"]) / 1024,
            "offline_anon_mb_median": median(self.anon["offline"]) / 1024,
            "drain_rss_mb_max": max(self.samples["drain"]) / 1024,
            "after_rss_mb_median": median(self.samples["after"]) / 1024,
            "peak_rss_mb_vmhwm": vm["VmHWM"] / 1024,
            "threads": vm["Threads"],
            "drain_s": drain_s,
            "published": central.get("published"),
            "outbox_depth_after": self.status.get("outbox_depth"),
            "pending_publish_warnings": log.count(PENDING_WARNING),
            "log_lines": log.count("\n"),
            "rss_mb_samples": {
                phase: [round(v / 1024, 2) for v in values]
                for phase, values in self.samples.items()
            },
        }


def one_repetition(
    args: argparse.Namespace, work: Path, master: Path, rep: int
) -> dict[str, dict[str, Any]]:
    broker = Broker(work / f"broker-{rep}")  # not started: the link finds nobody there
    # Hold the port (bound, not listening: connects are refused) until mosquitto takes it,
    # so that no other socket on the machine gets it as its ephemeral port meanwhile.
    placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    placeholder.bind((broker.host, broker.port))
    agents = {kind: Agent(kind, work, broker, rep, master) for kind in KINDS}
    order = KINDS if rep % 2 == 0 else KINDS[::-1]
    try:
        for kind in order:
            agents[kind].process.start()
        time.sleep(args.settle)
        begun = time.monotonic()
        for n in range(1, round(args.seconds) + 1):
            time.sleep(max(0.0, begun + n - time.monotonic()))
            for kind in order:
                agents[kind].sample("offline")
        offline_depth = agents["backlog"].poll()["outbox_depth"]

        placeholder.close()
        broker.start()
        started = time.monotonic()
        deadline = started + args.drain_timeout
        next_poll = started
        while time.monotonic() < deadline:
            for kind in order:
                agents[kind].sample("drain")
            if time.monotonic() >= next_poll:
                next_poll += 0.5
                status = agents["backlog"].poll()
                if agents["backlog"].drained_at is None and (
                    status["outbox_depth"] == 0
                    and status.get("central", {}).get("published", 0) >= args.events
                ):
                    agents["backlog"].drained_at = time.monotonic()
                    break
            time.sleep(0.1)
        drained = agents["backlog"].drained_at
        for _ in range(round(args.after)):
            time.sleep(1)
            for kind in order:
                agents[kind].sample("after")
        for kind in order:
            agents[kind].poll()
        figures = {
            kind: agents[kind].figures(
                None if kind != "backlog" or drained is None else drained - started
            )
            for kind in KINDS
        }
        figures["backlog"]["outbox_depth_offline"] = offline_depth
    finally:
        placeholder.close()
        for kind in order:
            agents[kind].process.stop()
        broker.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog size (100000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before sampling")
    parser.add_argument("--seconds", type=float, default=15.0, help="offline sampling (15)")
    parser.add_argument("--after", type=float, default=5.0, help="sampling once drained (5)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="(120)")
    args = parser.parse_args(argv)

    reps: list[dict[str, Any]] = []
    with scratch_dir("backlog-rss-") as work:
        templates = event_templates(work / "templates")
        master = work / "master"
        backlog = build_backlog(master, args.events, templates)
        for rep in range(args.repeat):
            reps.append(one_repetition(args, work, master, rep))
            b, e = reps[-1]["backlog"], reps[-1]["empty"]
            print(
                f"repetition {rep + 1}/{args.repeat}: offline {e['offline_rss_mb_median']:.1f}"
                f" vs {b['offline_rss_mb_median']:.1f} MB, drain peak "
                f"{e['drain_rss_mb_max']:.1f} vs {b['drain_rss_mb_max']:.1f} MB",
                file=sys.stderr,
            )

    figures: dict[str, Any] = {}
    keys = (
        "offline_rss_mb_median",
        "offline_anon_mb_median",
        "drain_rss_mb_max",
        "after_rss_mb_median",
        "peak_rss_mb_vmhwm",
    )
    for kind in KINDS:
        # Each figure is the median over the repetitions of that repetition's figure.
        figures[kind] = {k: median([r[kind][k] for r in reps]) for k in keys}
        figures[kind]["threads"] = reps[-1][kind]["threads"]
        figures[kind]["pending_publish_warnings_median"] = median(
            [r[kind]["pending_publish_warnings"] for r in reps]
        )
    drains = [r["backlog"]["drain_s"] for r in reps if r["backlog"]["drain_s"] is not None]
    figures["backlog"]["drain_s_median"] = median(drains) if drains else None
    figures["backlog"]["drain_events_per_s_median"] = (
        args.events / median(drains) if drains else None
    )
    figures["backlog"]["drained_every_time"] = len(drains) == len(reps)
    adds = {k: figures["backlog"][k] - figures["empty"][k] for k in keys}
    adds["offline_rss_mb_paired"] = [
        r["backlog"]["offline_rss_mb_median"] - r["empty"]["offline_rss_mb_median"] for r in reps
    ]
    adds["drain_peak_mb_paired"] = [
        r["backlog"]["drain_rss_mb_max"] - r["empty"]["drain_rss_mb_max"] for r in reps
    ]
    figures["backlog_adds_mb"] = adds
    figures["target"] = {
        "adds_mb_max": TARGET_MB,
        "offline_adds_mb": adds["offline_rss_mb_median"],
        "met": adds["offline_rss_mb_median"] < TARGET_MB,
        "drain_peak_adds_mb": adds["drain_rss_mb_max"],
        "drain_peak_met": adds["drain_rss_mb_max"] < TARGET_MB,
    }
    parameters = {
        "events": args.events,
        "backlog": backlog,
        "repetitions": args.repeat,
        "settle_s": args.settle,
        "offline_sampling_s": args.seconds,
        "after_sampling_s": args.after,
        "drain_sample_interval_s": 0.1,
        "mqtt": MQTT,
        "broker": broker_version() + " (local, started for the drain phase)",
        "agent": "hall-agent run (console script), bench hall config, logging INFO",
    }
    path = write_results(NAME, parameters, figures, repetitions=reps)

    print(
        f"RSS of hall-agent run, empty outbox vs {args.events}-event backlog, "
        f"{args.repeat} repetitions, medians (MB)"
    )
    rows = []
    for label, key in (
        ("offline (broker down)", "offline_rss_mb_median"),
        ("  of which anonymous", "offline_anon_mb_median"),
        ("drain peak (sampled)", "drain_rss_mb_max"),
        ("VmHWM at the end", "peak_rss_mb_vmhwm"),
        ("after the drain", "after_rss_mb_median"),
    ):
        rows.append(
            [
                label,
                figures["empty"][key],
                figures["backlog"][key],
                adds[key],
            ]
        )
    print_table(["phase", "empty", "backlog", "backlog adds"], rows)
    if drains:
        print(
            f"drain of {args.events} events: {median(drains):.1f} s "
            f"({args.events / median(drains):.0f} events/s, drain_rate 10000)"
        )
    print(
        "aiomqtt 'pending publish calls' warnings in the backlog agent's log: "
        f"{figures['backlog']['pending_publish_warnings_median']:.0f} (median)"
    )
    t = figures["target"]
    print(
        f"target backlog adds < {TARGET_MB:.0f} MB: offline {t['offline_adds_mb']:.1f} MB "
        f"({'met' if t['met'] else 'NOT met'}); drain peak {t['drain_peak_adds_mb']:.1f} MB "
        f"({'met' if t['drain_peak_met'] else 'NOT met'})"
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
