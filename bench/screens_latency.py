"""Latency of a call on the screens: ``POST /windows/W/next`` → the big screen's DOM shows the
ticket in headless Chromium, and → the LED strip's frame arrives at the (virtual) RS-485 bus.

A real ``hall-agent run`` subprocess serves the big screen (``/pages/hall``) to Debian's
Chromium, driven by Playwright with the system browser, and drives three LED strips on the
virtual LED bus (``agent.demo.emulators.led``), which runs in this process on its own event
loop thread, listening on TCP like a serial-to-Ethernet adapter.

Clocks: the page records, with a MutationObserver, ``performance.timeOrigin +
performance.now()`` (epoch ms) when an element for the ticket appears among the current
calls; the client stamps ``time.time()`` just before sending the call. The LED bus stamps
``time.perf_counter()`` when the frame's last byte arrives, against the client's
``perf_counter`` before the call. Series:

- ``call → DOM``: the call is committed (fsync), the page feed rebuilds the hall view, the
  SSE message goes out, the page parses it and redraws;
- ``call → LED frame``: committed, the LED component reads the window, encodes a
  ``text_frame`` and writes it (the strip's answer is not included);
- ``call → answer`` (baseline): the same request until its 200.

Calls rotate over the three windows, one at a time; each waits for both screens.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx
from _common import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    AgentProcess,
    LoopThread,
    bench_hall,
    median,
    percentile,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)
from _fsync import NoShim, add_arguments, agent_env, mode, raw_baseline, suffix, taskset_prefix

from agent.demo.emulators.led import VirtualLedBus

NAME = "screens_latency"
SERIES = ("call_to_dom", "call_to_led_frame", "call_to_answer")
OBSERVER = """
window.__seen = {};
new MutationObserver(() => {
  for (const el of document.querySelectorAll('#current .call')) {
    const t = el.dataset.ticket;
    if (!(t in window.__seen)) window.__seen[t] = performance.timeOrigin + performance.now();
  }
}).observe(document, {subtree: true, childList: true});
"""


class LedThread(LoopThread):
    """The virtual LED bus on an event loop of its own, in a thread of this process."""

    def __init__(self) -> None:
        super().__init__()
        self.bus = VirtualLedBus("text_frame")

    def __enter__(self) -> LedThread:
        self.start()
        self.port = self.call(self.bus.start_tcp("127.0.0.1", 0))
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.bus.stop_tcp())
        self.stop()

    def frame_at(self, address: int, text: str) -> float:
        frame = self.call(self.bus.wait_for_text(address, text, within=20))
        return float(frame.received_at)


def agent_config(storage: Any, led_port: int) -> dict[str, Any]:
    config = bench_hall(storage, port=0, width=4)
    bus = {"type": "network", "host": "127.0.0.1", "port": led_port}
    config["devices"] = [
        {"id": f"led-w{n}", "kind": "led_strip", "transport": bus, "address": n} for n in (1, 2, 3)
    ]
    for n, window in enumerate(config["windows"], start=1):
        window["devices"] = [f"led-w{n}"]
    config["clock"] = {"trust": "system"}
    return config


def run(calls: int, warmup: int, env: dict[str, str], prefix: list[str]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    series: dict[str, list[float]] = {name: [] for name in SERIES}
    with scratch_dir(NAME) as tmp, LedThread() as led:
        config = write_config(tmp / "config.yaml", agent_config(tmp / "state", led.port))
        agent = AgentProcess(config, tmp / "state", tmp / "agent.log", env=env, prefix=prefix)
        url = agent.start()
        try:
            with (
                sync_playwright() as p,
                httpx.Client(base_url=url, headers=agent.ops, timeout=30) as client,
            ):
                browser = p.chromium.launch_persistent_context(
                    str(tmp / "profile"),
                    executable_path=CHROMIUM,
                    args=CHROMIUM_FLAGS,
                    headless=True,
                    viewport={"width": 1920, "height": 1080},
                )
                page = browser.new_page()
                page.add_init_script(OBSERVER)
                page.goto(f"{url}/pages/hall")
                page.wait_for_selector("body[data-connection=live]")
                total = calls + warmup
                services = ("social", "civil", "general")
                for i in range(total):
                    r = client.post("/api/v1/tickets", json={"service": services[i % 3]})
                    if r.status_code != 201:
                        raise RuntimeError(f"take failed: {r.text}")
                for i in range(total):
                    window = i % 3 + 1
                    started_epoch_ms = time.time() * 1000
                    started = time.perf_counter()
                    r = client.post(f"/api/v1/windows/w{window}/next")
                    answered = time.perf_counter()
                    ticket = r.json()["result"]["ticket"]
                    if ticket is None:
                        raise RuntimeError(f"window w{window} had no one to call")
                    number = ticket["number"]
                    page.wait_for_function(f"() => window.__seen[{number!r}] !== undefined")
                    seen = float(page.evaluate(f"window.__seen[{number!r}]"))
                    frame = led.frame_at(window, f"请{number}号")
                    if i < warmup:
                        continue
                    series["call_to_dom"].append(seen - started_epoch_ms)
                    series["call_to_led_frame"].append((frame - started) * 1000)
                    series["call_to_answer"].append((answered - started) * 1000)
                browser.close()
        finally:
            agent.stop()
    return series


def summary(values: list[float]) -> dict[str, float]:
    return {
        "calls": len(values),
        "p50_ms": median(values),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=15)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        env, prefix = agent_env(args.fsync_ms), taskset_prefix(args.one_core)
    except NoShim as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 0
    series = run(args.calls, args.warmup, env, prefix)
    figures: dict[str, Any] = {name: summary(values) for name, values in series.items()}
    figures["raw_sqlite"] = raw_baseline(args.fsync_ms, args.one_core)
    print_table(
        ["series", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            [name, f["calls"], f["p50_ms"], f["p95_ms"], f["p99_ms"], f["max_ms"]]
            for name, f in figures.items()
            if name in SERIES
        ],
    )
    raw = figures["raw_sqlite"]
    print(f"raw SQLite commit: p50 {raw['p50_ms']:.2f} ms, p99 {raw['p99_ms']:.2f} ms")
    write_results(
        NAME + suffix(args.fsync_ms, args.one_core),
        {
            **mode(args.fsync_ms, args.one_core),
            "calls": args.calls,
            "warmup": args.warmup,
            "windows": 3,
            "browser": "Debian chromium, headless, via Playwright (system browser)",
            "led": "text_frame over TCP on 127.0.0.1, virtual bus in the bench process",
            "agent": "hall-agent run, fresh storage in bench/.tmp, offline, log level WARNING",
        },
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
