"""A window caller's "next" on the keypad bus: how long until the keypad is told "received"
and until its display shows the called number.

The real driver, desk and hall (SQLite in WAL mode with ``synchronous=FULL``) against the
virtual keypads on a real pty, in one process. A press is acknowledged only once it is
saved (``drivers/keypad/bus.py``), so the acknowledgement includes the commit.

Series, interleaved press by press so that a noisy neighbour hits each alike:

- ``next → acknowledged``: the frame out, the call committed, the echo back.
- ``next → display``: until the caller's display shows the new number.
- ``baseline``: a press of a keypad address the config does not have: the same frame, the
  same pty and parser, acknowledged at once with nothing to save.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from _common import bench_hall, median, percentile, print_table, scratch_dir, write_results
from _fsync import add_arguments, mode, raw_baseline, reexec, suffix

from agent.config import HallAgentConfig
from agent.core.operations import Take
from agent.demo.emulators.keypad import VirtualKeypads
from agent.features.callers import CallerDesk
from agent.features.keypads import WindowKeypads
from agent.features.rating import RatingDesk
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import Store
from protocols.keypad import CallerKey

NAME = "keypad_latency"
UNKNOWN_ADDRESS = 99


def _config(storage: Any, port: str) -> HallAgentConfig:
    data = bench_hall(storage)
    transport = {"type": "serial", "port": port}
    data["devices"] = [
        {"id": "caller-w1", "kind": "caller", "transport": transport, "address": 1},
    ]
    data["windows"][0]["devices"] = ["caller-w1"]
    # Every press here is a new one: no debounce folds two of them into one.
    data["callers"] = {"debounce_s": 0}
    return HallAgentConfig.model_validate(data)


async def run(presses: int) -> dict[str, Any]:
    acked: list[float] = []
    shown: list[float] = []
    baseline: list[float] = []
    with scratch_dir("keypad-") as folder:
        async with VirtualKeypads(ack_timeout_s=5.0, retries=0) as bus:
            config = _config(folder / "state", bus.open_pty())
            store = Store.open(config.storage.path)
            board = DeviceBoard(config)
            try:
                async with (
                    Hall(config, store) as hall,
                    RatingDesk(hall) as ratings,
                    WindowKeypads(hall, board, CallerDesk(hall), ratings) as keypads,
                ):
                    (driver,) = [b.driver for b in keypads.buses.values()]
                    await asyncio.wait_for(driver.wait_connected(), 5)
                    service = config.windows[0].services[0]
                    for _ in range(presses + 1):
                        await hall.execute(Take(service=service))
                    caller = bus.keypad(1)
                    for i in range(presses + 1):
                        started = time.perf_counter()
                        assert await bus.press(UNKNOWN_ADDRESS, CallerKey.NEXT)
                        base = time.perf_counter() - started

                        before = caller.display
                        started = time.perf_counter()
                        assert await bus.press(1, CallerKey.NEXT)
                        ack = time.perf_counter() - started
                        await bus.wait_for(lambda b=before: caller.display != b)
                        display = time.perf_counter() - started
                        if i:  # the first press warms up every path
                            baseline.append(base)
                            acked.append(ack)
                            shown.append(display)
            finally:
                store.close()

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(median(values) * 1000, 2),
            "p95_ms": round(percentile(values, 95) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2),
        }

    return {
        "next_to_acknowledged": ms(acked),
        "next_to_display": ms(shown),
        "baseline_acknowledged_at_once": ms(baseline),
        "acknowledged_ratio_to_baseline_p50": round(median(acked) / median(baseline), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=100)
    add_arguments(parser)
    args = parser.parse_args()
    # The hall's store is in this process: the shim and the pinning go on this process.
    reexec(args.fsync_ms, args.one_core)
    figures = asyncio.run(run(args.presses))
    figures["raw_sqlite"] = raw_baseline(args.fsync_ms, args.one_core)
    rows = [
        [series, key, value]
        for series, f in figures.items()
        for key, value in (f.items() if isinstance(f, dict) else [("", f)])
    ]
    print_table(["series", "figure", "value"], rows)
    path = write_results(
        NAME + suffix(args.fsync_ms, args.one_core),
        {**mode(args.fsync_ms, args.one_core), "presses": args.presses},
        figures,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
