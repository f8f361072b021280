"""One process of bench/city.py's simulated halls (tests/cityhalls.py ``City``): the halls
``hd-FIRST`` … ``hd-(FIRST+COUNT-1)`` in one event loop, driven by one JSON command a line
on stdin, each answered by one JSON line on stdout. Not run by hand.

Commands: ``connect``, ``live`` (events, seconds), ``wait`` (limit), ``down``, ``hour``
(events), ``back`` (spread), ``counts``, ``report``, ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cityhalls import City  # type: ignore[import-not-found]


def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """paho re-registers a socket the broker's stop just closed: not worth a traceback."""
    if isinstance(context.get("exception"), OSError):
        return
    loop.default_exception_handler(context)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet)
    city = City(
        [f"hd-{i:05d}" for i in range(args.first, args.first + args.count)],
        args.port,
        seed=args.seed,
        gap_rate=args.gap_rate,
        dup_rate=args.dup_rate,
        drain_rate=args.drain_rate,
        metrics_every=args.metrics_every or None,
    )
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        command = json.loads(line)
        try:
            match command["do"]:
                case "connect":
                    await city.connect()
                case "live":
                    await city.live(command["events"], command["seconds"])
                case "wait":
                    await city.wait_done(command["limit"])
                case "down":
                    city.down()
                case "hour":
                    city.hour(command["events"])
                case "back":
                    city.back(command["spread"])
                case "counts":
                    pass
                case "report":
                    say({"ok": True, "halls": city.report()})
                    continue
                case "stop":
                    await city.close()
                    say({"ok": True})
                    return
                case other:
                    raise ValueError(f"unknown command {other!r}")
        except Exception as err:  # the orchestrator reports it and stops the run
            say({"ok": False, "error": repr(err)})
            continue
        say({"ok": True, "now": time.monotonic(), **city.counts()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--gap-rate", type=float, default=0.01)
    parser.add_argument("--dup-rate", type=float, default=0.01)
    parser.add_argument("--drain-rate", type=float, default=200.0)
    parser.add_argument("--metrics-every", type=float, default=0.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
