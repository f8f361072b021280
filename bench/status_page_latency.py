"""The ticket's status page on a phone: how long it takes to load, and a call at a window →
the page shows the ticket's new place.

A real ``hall-agent run`` subprocess; Debian's Chromium (Playwright, system browser) at a
phone's size (360×740) opens ``/t/{token}`` of the last of ``calls + 1`` waiting tickets of
one service (民政救助), which only window 2 calls. Each ``POST /windows/w2/next`` moves it
up by one.

Clocks: the page records, with a MutationObserver, ``performance.timeOrigin +
performance.now()`` (epoch ms) when ``#wait`` first says "您前面还有 K 人" (or 即将叫号); the
client stamps ``time.time()`` just before sending the call. Series:

- ``call → page``: the call is committed, the pages' feed rebuilds the hall's view (the
  snapshot and the day's tickets with their places: one simulation each), the ticket's SSE
  stream sends its new state, the page redraws;
- ``call → answer`` (baseline): the same request until its 200;
- ``page load``: navigation start → the first state drawn (``body[data-status]``), measured
  separately ``--loads`` times on a fresh page each.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from _common import (
    AgentProcess,
    bench_hall,
    median,
    percentile,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)

NAME = "status_page_latency"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
OBSERVER = """
window.__seen = {};
new MutationObserver(() => {
  const wait = document.getElementById('wait');
  if (!wait) return;
  const text = wait.innerText;
  if (!(text in window.__seen)) window.__seen[text] = performance.timeOrigin + performance.now();
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def run(calls: int, loads: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    series: dict[str, list[float]] = {"call_to_page": [], "call_to_answer": [], "page_load": []}
    with scratch_dir(NAME) as tmp:
        data = bench_hall(tmp / "state", port=0)
        data["web"]["public_url"] = "http://hall.invalid"
        config = write_config(tmp / "config.yaml", data)
        agent = AgentProcess(config, tmp / "state", tmp / "agent.log")
        url = agent.start()
        try:
            with (
                sync_playwright() as p,
                httpx.Client(base_url=url, headers=agent.ops, timeout=30) as client,
            ):
                link = ""
                for _ in range(calls + 1):
                    r = client.post("/api/v1/tickets", json={"service": "civil"})
                    if r.status_code != 201:
                        raise RuntimeError(f"take failed: {r.text}")
                    link = r.json()["result"]["status_url"]
                path = urlsplit(link).path
                browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                for _ in range(loads):
                    page = browser.new_page(viewport={"width": 360, "height": 740})
                    page.goto(f"{url}{path}", wait_until="commit")
                    page.wait_for_selector("body[data-status]")
                    series["page_load"].append(
                        float(
                            page.evaluate(
                                "performance.now() - performance.getEntriesByType('navigation')[0]"
                                ".startTime"
                            )
                        )
                    )
                    page.close()
                page = browser.new_page(viewport={"width": 360, "height": 740})
                page.add_init_script(OBSERVER)
                page.goto(f"{url}{path}")
                page.wait_for_selector("body[data-connection=live] #wait")
                client.post("/api/v1/windows/w2/sign-in", json={"staff": "1001"})
                for ahead in range(calls - 1, -1, -1):
                    want = "即将叫号，请留意叫号屏" if ahead == 0 else f"您前面还有 {ahead} 人"
                    started_epoch_ms = time.time() * 1000
                    started = time.perf_counter()
                    r = client.post("/api/v1/windows/w2/next")
                    answered = time.perf_counter()
                    if r.status_code != 200:
                        raise RuntimeError(f"next failed: {r.text}")
                    page.wait_for_function(
                        "(want) => Object.keys(window.__seen).some((t) => t.startsWith(want))",
                        arg=want,
                    )
                    seen = float(
                        page.evaluate(
                            "(want) => Math.min(...Object.entries(window.__seen)"
                            ".filter(([t]) => t.startsWith(want)).map(([, at]) => at))",
                            want,
                        )
                    )
                    series["call_to_page"].append(seen - started_epoch_ms)
                    series["call_to_answer"].append((answered - started) * 1000)
                browser.close()
        finally:
            agent.stop()
    return series


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": round(median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args(argv)
    if not shutil.which(CHROMIUM) and not CHROMIUM.startswith("/"):
        print("Chromium is not installed", file=sys.stderr)
        return 1
    series = run(args.calls, args.loads)
    figures = {name: summary(values) for name, values in series.items()}
    print_table(
        ["series", "n", "p50 ms", "p95 ms", "max ms"],
        [[k, f["n"], f["p50_ms"], f["p95_ms"], f["max_ms"]] for k, f in figures.items()],
    )
    write_results(
        NAME,
        {
            "calls": args.calls,
            "loads": args.loads,
            "browser": "Debian chromium, headless, 360x740, via Playwright (system browser)",
            "agent": "hall-agent run, fresh storage in bench/.tmp, offline, log level WARNING",
        },
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
