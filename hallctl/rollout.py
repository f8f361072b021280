"""``hallctl rollout``: send an update to the halls in batches, wait for each batch's
outcome, and stop at the first failures (docs/fleet.md).

A hall's outcome is its ``update.activated`` (success), or ``update.failed`` /
``update.rolled_back`` / a refused command / no outcome within ``--batch-timeout``
(failure). With ``--pause-on-failure`` (the default) a batch with a failure ends the
rollout: the halls after it are not sent anything and are listed for a later run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from agent.central.contract import ROOT, EventEnvelope, Reply, UpdateAgent
from hallctl.broker import (
    EXIT_FAILED,
    EXIT_OK,
    BrokerOptions,
    UsageError,
    _connected,
    _hall_of,
)

SUCCESS = "update.activated"
FAILURES = ("update.failed", "update.rolled_back")


@dataclasses.dataclass
class Outcome:
    hall: str
    ok: bool | None = None  # None: still waiting
    detail: str = ""


def batches(halls: Sequence[str], batch: str, *, canary: int = 1) -> list[list[str]]:
    """``halls`` split into batches: first ``canary`` halls alone, then batches of
    ``batch`` (``5%`` of all halls, at least 1, or a count such as ``20``)."""
    if not halls:
        return []
    text = batch.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            size = max(1, math.ceil(len(halls) * share / 100))
        else:
            size = int(text)
            if size < 1:
                raise ValueError
    except ValueError as err:
        raise UsageError(f"--batch {batch!r}: give a share (5%) or a count of halls (20)") from err
    first = list(halls[:canary]) if canary > 0 else []
    rest = list(halls[len(first) :])
    out = [first] if first else []
    out.extend(rest[i : i + size] for i in range(0, len(rest), size))
    return out


async def rollout(args: argparse.Namespace) -> int:
    halls: list[str] = list(dict.fromkeys(h for part in args.halls for h in part.split(",") if h))
    if not halls:
        raise UsageError("--halls: name at least one hall (a,b,c or repeat the option)")
    template = UpdateAgent(
        cmd_id="x", version=args.version, url=args.url, sha256=args.sha256, size=args.size
    )
    plan = batches(halls, args.batch, canary=args.canary)
    outcomes: dict[str, Outcome] = {}
    stopped_at: int | None = None
    async with _connected(BrokerOptions.from_args(args)) as client:
        for kind in (SUCCESS, *FAILURES):
            await client.subscribe(f"{ROOT}/+/event/{kind}", qos=1)
        await client.subscribe(f"{ROOT}/+/reply", qos=1)
        for number, group in enumerate(plan, start=1):
            waiting = {hall: Outcome(hall) for hall in group}
            cmd_ids = {
                f"rollout-{args.version}-{hall}-{uuid.uuid4().hex[:8]}": hall for hall in group
            }
            for cmd_id, hall in cmd_ids.items():
                payload = template.model_copy(update={"cmd_id": cmd_id}).model_dump(mode="json")
                await client.publish(
                    f"{ROOT}/{hall}/cmd/update_agent",
                    json.dumps(payload, ensure_ascii=False),
                    qos=1,
                )
            print(f"batch {number}/{len(plan)}: {', '.join(group)}", flush=True)
            try:
                async with asyncio.timeout(args.batch_timeout):
                    async for message in client.messages:
                        _note(message.topic.value, message.payload, waiting, cmd_ids, args.version)
                        if all(o.ok is not None for o in waiting.values()):
                            break
            except TimeoutError:
                pass
            for outcome in waiting.values():
                if outcome.ok is None:
                    outcome.ok = False
                    outcome.detail = f"no outcome within {args.batch_timeout:g} s"
                mark = "ok  " if outcome.ok else "FAIL"
                print(f"  {mark} {outcome.hall}: {outcome.detail}", flush=True)
            outcomes.update(waiting)
            if args.pause_on_failure and not all(o.ok for o in waiting.values()):
                stopped_at = number
                break
    done = sum(1 for o in outcomes.values() if o.ok)
    failed = [o.hall for o in outcomes.values() if not o.ok]
    untouched = [h for h in halls if h not in outcomes]
    print(f"{done} updated, {len(failed)} failed, {len(untouched)} not sent", flush=True)
    if stopped_at is not None and untouched:
        print(
            f"stopped after batch {stopped_at}; the halls not sent: {','.join(untouched)}",
            flush=True,
        )
    return EXIT_OK if not failed and not untouched else EXIT_FAILED


def _note(
    topic: str,
    payload: bytes | Any,
    waiting: dict[str, Outcome],
    cmd_ids: dict[str, str],
    version: str,
) -> None:
    hall = _hall_of(topic)
    if hall not in waiting:
        return
    outcome = waiting[hall]
    if topic.endswith("/reply"):
        try:
            reply = Reply.model_validate_json(payload)
        except ValidationError:
            return
        if cmd_ids.get(reply.cmd_id) == hall and reply.status != "ok":
            outcome.ok, outcome.detail = False, f"{reply.status}: {reply.error}"
        return
    try:
        event = EventEnvelope.model_validate_json(payload)
    except ValidationError:
        return
    if event.data.get("version") != version:
        return
    if event.type == SUCCESS:
        outcome.ok, outcome.detail = True, f"running {version}"
    elif event.type in FAILURES:
        cause = event.data.get("cause") or event.data.get("error") or ""
        outcome.ok, outcome.detail = False, f"{event.type}: {cause}"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollout", help="send an update to halls in batches; stop on failures")
    p.add_argument("version")
    p.add_argument("--halls", action="append", required=True, help="a,b,c (repeat to add)")
    p.add_argument("--url", required=True, help="where halls download the bundle (HTTPS)")
    p.add_argument("--sha256", required=True, help="the bundle file's SHA-256 (release pack)")
    p.add_argument("--size", type=int, required=True, help="the bundle file's bytes")
    p.add_argument("--batch", default="5%", help="halls per batch: 5%% (default) or a count")
    p.add_argument("--canary", type=int, default=1, help="halls in the first batch (default 1)")
    p.add_argument(
        "--batch-timeout", type=float, default=900, help="seconds a batch may take (900)"
    )
    p.add_argument(
        "--pause-on-failure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop after a batch with a failure (default)",
    )
    p.set_defaults(run=rollout)
