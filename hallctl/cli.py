"""``hallctl``: central's console for the halls, over the same MQTT 5 contract.

``fleet`` lists the halls from their retained ``state``; ``tail`` prints events; ``cmd``
sends one command and prints its reply; ``files`` receives the halls' document uploads;
``ingest`` is the reference consumer (hallctl/ingest.py). The broker connection they share
is in hallctl/broker.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import ValidationError

from agent.central.contract import (
    COMMANDS,
    ROOT,
    Birth,
    EventEnvelope,
    Reply,
    Will,
    validate_incoming,
)
from hallctl.broker import (
    DEFAULT_BROKER,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RECONNECT_MAX_S,
    BrokerOptions,
    HallctlError,
    UsageError,
    _connected,
    _expiry,
    _hall_of,
    _json,
)

log = logging.getLogger("hallctl")


# -- fleet ---------------------------------------------------------------------------------


async def fleet(args: argparse.Namespace) -> int:
    """Every hall's retained ``state``: retained messages arrive right after subscribing."""
    states: dict[str, dict[str, Any]] = {}
    async with _connected(BrokerOptions.from_args(args)) as client:
        await client.subscribe(f"{ROOT}/+/state", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.wait):
                async for message in client.messages:
                    hall = _hall_of(message.topic.value)
                    if not message.payload:  # a cleared retained state
                        states.pop(hall, None)
                        continue
                    states[hall] = _state_row(hall, message.payload)
    rows = [states[hall] for hall in sorted(states)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    columns = ("hall", "state", "boot_id", "session", "agent", "config", "started_at")
    table = [columns, *([str(row.get(c) or "-") for c in columns] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    online = sum(1 for row in rows if row["state"] == "online")
    print(f"{len(rows)} halls: {online} online, {len(rows) - online} offline or unknown")
    return EXIT_OK


def _state_row(hall: str, payload: bytes | bytearray) -> dict[str, Any]:
    try:
        data = json.loads(payload)
        state: Birth | Will = (
            Birth.model_validate(data) if data.get("online") else Will.model_validate(data)
        )
    except (ValueError, AttributeError, ValidationError) as err:
        return {"hall": hall, "state": "invalid", "error": str(err).splitlines()[0]}
    row: dict[str, Any] = {"hall": hall, **state.model_dump(mode="json")}
    if isinstance(state, Birth):
        row["state"] = "online"
        row["agent"] = state.agent_version
        row["config"] = state.config_version
    else:
        row["state"] = "offline (clean stop)" if state.clean else "offline"
    return row


# -- tail ----------------------------------------------------------------------------------


async def tail(args: argparse.Namespace) -> int:
    printed = 0
    async with _connected(BrokerOptions.from_args(args)) as client:
        topic = f"{ROOT}/{args.hall}/event/#"
        await client.subscribe(topic, qos=1)
        log.debug("subscribed to %s", topic)
        async for message in client.messages:
            try:
                event = EventEnvelope.model_validate_json(message.payload)
            except ValidationError as err:
                print(f"invalid event on {message.topic.value}: {err}", file=sys.stderr)
                continue
            if args.type and not event.type.startswith(args.type):
                continue
            print(_json(event) if args.json else event_line(event), flush=True)
            printed += 1
            if args.count and printed >= args.count:
                break
    return EXIT_OK


def event_line(event: EventEnvelope) -> str:
    clock = "" if event.clock_ok else " (clock?)"
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"{event.at}{clock} {event.hall} {event.epoch}:{event.seq} {event.type} {data}"


# -- cmd -----------------------------------------------------------------------------------


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value is JSON when it parses as JSON (``3``, ``true``, ``[...]``),
    else the plain string (``w1``, ``A012``)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r}: parameters are written key=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def build_command(name: str, pairs: Sequence[str], *, cmd_id: str | None = None) -> Any:
    """The validated payload for ``cmd/{name}``; HallctlError says what to fix."""
    model = COMMANDS.get(name)
    if model is None:
        raise UsageError(f"unknown command {name!r}; the commands are: {', '.join(COMMANDS)}")
    payload = {"cmd_id": cmd_id or f"hallctl-{uuid.uuid4()}", **parse_params(pairs)}
    try:
        command = validate_incoming(model, payload)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in err.errors()
        )
        fields = ", ".join(f for f in model.model_fields if f != "cmd_id")
        raise UsageError(f"{name}: {problems} (its parameters: {fields})") from err
    return command.model_dump(mode="json", exclude_unset=True)


async def cmd(args: argparse.Namespace) -> int:
    if args.raw:
        payload = {"cmd_id": f"hallctl-{uuid.uuid4()}", **parse_params(args.params)}
    else:
        payload = build_command(args.name, args.params)
    cmd_id = str(payload["cmd_id"])
    broker = BrokerOptions.from_args(args)
    identifier = f"hallctl-{uuid.uuid4().hex[:12]}"
    # Under the hall's own subtree: broker ACLs let a hall publish nowhere else.
    response_topic = f"{ROOT}/{args.hall}/reply/{identifier}"
    properties = _expiry(args.timeout)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = cmd_id.encode()
    reply: Reply | None = None
    async with _connected(broker, identifier=identifier) as client:
        await client.subscribe(response_topic, qos=1)
        # Also the hall's common reply topic, for a hall that ignores the response topic.
        await client.subscribe(f"{ROOT}/{args.hall}/reply", qos=1)
        await client.publish(
            f"{ROOT}/{args.hall}/cmd/{args.name}",
            json.dumps(payload, ensure_ascii=False),
            qos=1,
            properties=properties,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                async for message in client.messages:
                    with contextlib.suppress(ValidationError):
                        candidate = Reply.model_validate_json(message.payload)
                        if candidate.cmd_id == cmd_id:
                            reply = candidate
                            break
    if reply is None:
        print(
            f"no reply from {args.hall} within {args.timeout:g}s; the command expires"
            " at the broker and will not run later",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(json.dumps(reply.model_dump(mode="json"), ensure_ascii=False, indent=2))
    return EXIT_OK if reply.status == "ok" else EXIT_FAILED


# -- ingest --------------------------------------------------------------------------------


async def ingest(args: argparse.Namespace) -> int:
    """``--db postgresql://…``: one worker of the scale-out ingest (psycopg is imported only
    then); else the SQLite ingest."""
    if args.db.startswith(("postgresql://", "postgres://")):
        if args.ack_events < 1:
            raise UsageError(f"--ack-events {args.ack_events}: give 1 or more (1: every mark)")
        if args.receive_maximum is not None and not 1 <= args.receive_maximum <= 65535:
            raise UsageError(f"--receive-maximum {args.receive_maximum}: give 1 to 65535")
        if args.ack_age < 0 or args.ack_interval < 0:
            raise UsageError("--ack-age and --ack-interval are seconds: give 0 or more")
        try:
            from hallctl.pgingest import ingest_postgres
        except ImportError as err:
            raise UsageError(
                f"--db {args.db.split('@')[-1]!r} needs psycopg: pip install 'hall-agent[central]'"
            ) from err
        return await ingest_postgres(args)
    from hallctl.ingest import ingest as ingest_sqlite

    return await ingest_sqlite(args)


# -- files ---------------------------------------------------------------------------------


async def files(args: argparse.Namespace) -> int:
    """Receive the halls' document uploads into ``--out`` (hallctl/files.py)."""
    from hallctl.files import FileReceiver, receive_files

    broker = BrokerOptions.from_args(args)
    receiver = FileReceiver(args.out)
    failing = False
    while True:
        try:
            async with broker.client(args.client_id, persistent=True) as client:
                if failing:
                    log.info("connected to the broker again")
                failing = False
                await receive_files(client, receiver, args.hall)
        except aiomqtt.MqttError as err:
            if not failing:
                log.warning("broker %s:%d: %s; retrying", broker.host, broker.port, err)
            failing = True
            await asyncio.sleep(RECONNECT_MAX_S / 4)


# -- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallctl", description="Central's console for the halls (MQTT 5 contract)."
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("HALLCTL_BROKER", DEFAULT_BROKER),
        help="mqtt://HOST:1883 or mqtts://HOST:8883 (env HALLCTL_BROKER)",
    )
    parser.add_argument("--ca", type=Path, help="CA certificate to trust (PEM), for mqtts")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), for mqtts")
    parser.add_argument("--key", type=Path, help="client certificate's key (PEM)")
    parser.add_argument("--username", help="password from env HALLCTL_PASSWORD")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fleet", help="list halls from their retained state")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect (default 2)")
    p.set_defaults(run=fleet)

    p = sub.add_parser("tail", help="print events as they arrive, one line each")
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--type", default="", help="event type prefix, e.g. ticket. or rating")
    p.add_argument("--count", type=int, default=0, help="stop after N events")
    p.add_argument("--json", action="store_true", help="print whole envelopes")
    p.set_defaults(run=tail)

    p = sub.add_parser("cmd", help="send one command and print its reply")
    p.add_argument("hall")
    p.add_argument("name", help=", ".join(COMMANDS))
    p.add_argument("params", nargs="*", metavar="key=value", help="JSON values or strings")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (also its expiry)")
    p.add_argument("--raw", action="store_true", help="send without validating (tests a hall)")
    p.set_defaults(run=cmd)

    p = sub.add_parser("ingest", help="reference consumer: store, dedupe, replay gaps, ack")
    p.add_argument(
        "--db",
        required=True,
        help="SQLite file (one process), or postgresql://USER@HOST/DB: one worker of a"
        " scale-out ingest (run several, each with its own --client-id)",
    )
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--ack-every", type=int, default=100, help="SQLite: events per commit and ack")
    p.add_argument(
        "--group", default="ingest", help="PostgreSQL: the shared subscription's group name"
    )
    p.add_argument("--batch", type=int, default=500, help="PostgreSQL: most events per transaction")
    p.add_argument(
        "--ack-interval",
        type=float,
        default=1.0,
        help="PostgreSQL: at most one ack per hall per this many seconds (default 1)",
    )
    p.add_argument(
        "--ack-events",
        type=int,
        default=50,
        metavar="N",
        help="PostgreSQL: ack a hall once N of its stored events are not acked (default 50;"
        " 1: whenever its mark moved)",
    )
    p.add_argument(
        "--ack-age",
        type=float,
        default=30.0,
        metavar="S",
        help="PostgreSQL: ... or once the oldest of them was stored S seconds ago (default 30)",
    )
    p.add_argument(
        "--receive-maximum",
        type=int,
        metavar="N",
        help="PostgreSQL: at most N events received and not committed (MQTT 5 receive maximum;"
        " default 65535)",
    )
    p.add_argument(
        "--gap-timeout", type=float, default=2.0, help="seconds a gap may stay open (default 2)"
    )
    p.add_argument("--client-id", default="hallctl-ingest", help="fixed, for the session")
    p.add_argument(
        "--until-complete",
        type=int,
        metavar="N",
        help="exit once seqs 1..N of every hall's current epoch are stored",
    )
    p.set_defaults(run=ingest)

    p = sub.add_parser("files", help="receive captured documents: chunks in, checked files out")
    p.add_argument("--out", type=Path, required=True, help="folder; one subfolder per hall")
    p.add_argument("--hall", default="+", help="hall id (default: all)")
    p.add_argument("--client-id", default="hallctl-files", help="fixed, for the session")
    p.set_defaults(run=files)

    from hallctl import certs, release, rollout

    release.add_parser(sub)
    rollout.add_parser(sub)
    certs.add_parser(sub)
    return parser


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run one subcommand; what a person can fix is printed, not raised."""
    args = _parser().parse_args(argv)
    if args.verbose:
        log.setLevel(logging.DEBUG)
    try:
        code: int = await args.run(args)
    except UsageError as err:
        print(f"hallctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    except HallctlError as err:
        print(f"hallctl: {err}", file=sys.stderr)
        return EXIT_FAILED
    return code


CANCEL_AGAIN_S = 12.0  # longer than an orderly stop takes (closing the database)


async def _until_signal(argv: Sequence[str] | None) -> int:
    """SIGINT and SIGTERM end the command orderly (ingest closes its database)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[int] = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        task.cancel()
        if len(stopped) == 1:
            loop.call_later(CANCEL_AGAIN_S, again)

    def again() -> None:
        # Python 3.11's asyncio.wait_for can swallow a cancellation that lands as the
        # awaited thing finishes (aiomqtt and psycopg wait that way): a stop that did not
        # take is asked again, so that SIGTERM always ends the command.
        if not task.done():
            task.cancel()
            loop.call_later(CANCEL_AGAIN_S, again)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await run(argv)
    except asyncio.CancelledError:
        if stopped:
            return EXIT_OK
        raise


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mqtt").setLevel(logging.WARNING)
    return asyncio.run(_until_signal(argv))


if __name__ == "__main__":
    sys.exit(main())
