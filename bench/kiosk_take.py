"""The kiosk at work: a tap on a service → the ticket's number on the kiosk page, and the
kiosk's spoken guidance (``GET /pages/kiosk/voice``), against the take's own HTTP answer.

A real ``hall-agent run`` subprocess serves the kiosk page (enrolled token) to Debian's
headless Chromium, driven by Playwright. Series:

- ``tap → number shown``: in the page, from the button's click to ``#taken`` in the DOM
  (the page's POST, the issue — committed with fsync — and its redraw);
- ``voice``: the kiosk's sentence rendered as one WAV from the Mandarin clip pack the agent
  generated with espeak-ng (skipped when espeak-ng is missing), until its 200;
- ``take → answer`` (baseline): ``POST /api/v1/tickets`` from this process until its 201.

Every take is followed by 完成 on the page; takes alternate between two services.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

import httpx
from _common import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    AgentProcess,
    bench_hall,
    median,
    percentile,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)

NAME = "kiosk_take"
SERIES = ("tap_to_number_shown", "voice", "take_to_answer")
TAP = """async (service) => {
  const started = performance.now();
  const shown = new Promise((resolve) => {
    const seen = new MutationObserver(() => {
      if (document.getElementById("taken")) { seen.disconnect(); resolve(performance.now()); }
    });
    seen.observe(document.getElementById("result-card"), {subtree: true, childList: true});
  });
  document.querySelector(`button[data-service=${service}]`).click();
  return (await shown) - started;
}"""


def run(takes: int, warmup: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    series: dict[str, list[float]] = {name: [] for name in SERIES}
    voice = shutil.which("espeak-ng") is not None
    with scratch_dir(NAME) as tmp:
        config = write_config(tmp / "config.yaml", bench_hall(tmp / "state", port=0, width=4))
        agent = AgentProcess(config, tmp / "state", tmp / "agent.log")
        url = agent.start()
        try:
            with (
                sync_playwright() as p,
                httpx.Client(base_url=url, headers=agent.ops, timeout=30) as client,
            ):
                enrolled = client.post(
                    "/api/v1/auth/devices", json={"device": "kiosk-1", "role": "kiosk"}
                ).json()
                browser = p.chromium.launch_persistent_context(
                    str(tmp / "profile"),
                    executable_path=CHROMIUM,
                    args=CHROMIUM_FLAGS,
                    headless=True,
                    viewport={"width": 1080, "height": 1920},
                )
                page = browser.new_page()
                page.goto(f"{url}/pages/kiosk?token={enrolled['token']}")
                page.wait_for_selector("body[data-connection=live]")
                for i in range(takes + warmup):
                    service = ("general", "civil")[i % 2]
                    page.wait_for_selector(f"button[data-service={service}]:not([disabled])")
                    shown = float(page.evaluate(TAP, service))
                    number = page.locator("#taken").text_content() or ""
                    page.click("#done")
                    started = time.perf_counter()
                    r = client.post("/api/v1/tickets", json={"service": "housing"})
                    answered = time.perf_counter()
                    if r.status_code != 201:
                        raise RuntimeError(f"take failed: {r.text}")
                    spoken = None
                    if voice:
                        began = time.perf_counter()
                        params = {"service": service, "ticket": number, "ahead": i}
                        v = client.get("/pages/kiosk/voice", params=params)
                        if v.status_code != 200:
                            raise RuntimeError(f"kiosk voice failed: {v.text}")
                        spoken = (time.perf_counter() - began) * 1000
                    if i < warmup:
                        continue
                    series["tap_to_number_shown"].append(shown)
                    series["take_to_answer"].append((answered - started) * 1000)
                    if spoken is not None:
                        series["voice"].append(spoken)
                browser.close()
        finally:
            agent.stop()
    return series


def summary(values: list[float], baseline: float) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    p50 = median(values)
    return {
        "count": len(values),
        "p50_ms": p50,
        "p95_ms": percentile(values, 95),
        "max_ms": max(values),
        "p50_vs_take_answer": p50 / baseline if baseline else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    series = run(args.takes, args.warmup)
    baseline = median(series["take_to_answer"])
    figures = {name: summary(values, baseline) for name, values in series.items()}
    print_table(
        ["series", "count", "p50 ms", "p95 ms", "max ms", "p50 / take answer"],
        [
            [
                name,
                f["count"],
                f.get("p50_ms", 0.0),
                f.get("p95_ms", 0.0),
                f.get("max_ms", 0.0),
                f.get("p50_vs_take_answer") or 0.0,
            ]
            for name, f in figures.items()
        ],
    )
    write_results(
        NAME,
        {
            "takes": args.takes,
            "warmup": args.warmup,
            "viewport": "1080x1920 (portrait kiosk)",
            "browser": "Debian chromium, headless, via Playwright (system browser)",
            "voice": "espeak-ng clip pack generated by the agent at the first request",
            "agent": "hall-agent run, fresh storage in bench/.tmp, offline, log level WARNING",
        },
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
