"""The ``hall-agent`` command: run the daemon, check a config, operate the running hall."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agent
from agent.errors import HallAgentError

DEFAULT_CONFIG = Path("/etc/hall-agent/config.yaml")
DEFAULT_API = "http://127.0.0.1:8737"

WINDOW_ACTIONS = (
    "next",
    "recall",
    "serving",
    "no-show",
    "hold",
    "finish",
    "pause",
    "resume",
    "sign-in",
    "sign-out",
    "transfer",
    "call",
)


class CliError(HallAgentError):
    """A problem the person at the terminal can fix; printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hall-agent",
        description="Runs a public service hall's queue and devices; talks to central over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"hall-agent {agent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config YAML file")

    check = sub.add_parser("check-config", help="validate a config file: prints ok or every error")
    check.add_argument("file", type=Path)

    doctor = sub.add_parser(
        "doctor", help="check config, devices, broker, clock, disk and database; say what to do"
    )
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config YAML file")
    doctor.add_argument(
        "--user", default=None, help="judge device access for this user (default: hall-agent)"
    )
    doctor.add_argument("--api", default=None, help="the running agent's local API URL")
    doctor.add_argument("--json", action="store_true", help="the findings as JSON")

    demo = sub.add_parser("demo", help="a complete simulated hall on this machine")
    demo.add_argument("--state", type=Path, default=None, help="state folder (./demo-state)")
    demo.add_argument("--port", type=int, default=None, help="local API port (8737)")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--no-simulation", action="store_true", help="no simulated citizens and staff"
    )

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", default=None, help=f"local API URL (default: {DEFAULT_API})")
        p.add_argument("--config", type=Path, default=None, help="find the API from this config")
        p.add_argument("--json", action="store_true", help="print the raw JSON answer")

    status = sub.add_parser("status", help="the running hall at a glance")
    client_options(status)

    take = sub.add_parser("take", help="issue a ticket as the kiosk would")
    take.add_argument("--service", required=True, help="service id")
    take.add_argument(
        "--priority",
        default="normal",
        choices=["normal", "elderly", "disabled", "veteran", "appointment"],
    )
    client_options(take)

    reprint = sub.add_parser("reprint", help="print a ticket of today again")
    reprint.add_argument("number", help="ticket number, e.g. A012")
    client_options(reprint)

    window = sub.add_parser("window", help="operate a window: next, recall, finish, ...")
    window.add_argument("window", help="window id")
    window.add_argument("action", choices=WINDOW_ACTIONS)
    window.add_argument(
        "argument",
        nargs="?",
        help="transfer: service id; call: ticket number; sign-in: staff number",
    )
    window.add_argument("--back", action="store_true", help="transfer to the back of the queue")
    window.add_argument("--reason", default="", help="pause: why the window pauses")
    client_options(window)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CliError as err:
        print(f"hall-agent: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "check-config":
        from agent.config import check_config_file

        code, text = check_config_file(args.file)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    if command == "run":
        return _run(args.config)
    if command == "doctor":
        from agent.doctor import run as run_doctor

        code, text = run_doctor(args.config, user=args.user, api=args.api, as_json=args.json)
        print(text)
        return code
    if command == "demo":
        from agent.demo.simulated_hall import run_demo

        return run_demo(
            state=args.state,
            port=args.port,
            duration=args.duration,
            simulate=not args.no_simulation,
        )
    if command == "status":
        return _status(args)
    if command == "take":
        body = {"service": args.service, "priority": args.priority, "source": "api"}
        answer = _request(args, "POST", "/tickets", body)
        return _print_operation(args, answer)
    if command == "window":
        return _window(args)
    if command == "reprint":
        answer = _request(args, "POST", f"/tickets/{args.number}/reprint")
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
        else:
            print(f"{answer['result']['ticket']}  reprinted")
        return 0
    raise CliError(f"unknown command {command}")


def _load(path: Path) -> Any:
    from agent.config import ConfigError, format_problems, load_config

    try:
        return load_config(path)
    except ConfigError as err:
        raise CliError(f"the config {path} has problems:\n{format_problems(err.problems)}") from err


def _run(path: Path) -> int:
    from agent.daemon import serve
    from agent.runtime.logs import setup_logging
    from agent.runtime.store import StoreError
    from agent.web.app import WebStartError

    config = _load(path)
    setup_logging(
        config.logging.level,
        config.logging.format,
        repeat_window_s=config.logging.repeat_window_s,
        max_lines_per_s=config.logging.max_lines_per_s,
        max_bytes_per_hour=config.logging.max_bytes_per_hour,
    )
    try:
        asyncio.run(serve(config))
    except (StoreError, WebStartError, PermissionError) as err:
        raise CliError(str(err)) from err
    return 0


# -- talking to the running agent ------------------------------------------------------


def _api_base(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    env = os.environ.get("HALL_API")
    if env:
        return env.rstrip("/")
    config_path: Path | None = args.config
    if config_path is None and DEFAULT_CONFIG.exists():
        config_path = DEFAULT_CONFIG
    if config_path is not None:
        from agent.daemon import api_url_file

        config = _load(config_path)
        written = api_url_file(config)
        if written.exists():
            return written.read_text(encoding="utf-8").strip()
        return f"http://{config.web.host}:{config.web.port}"
    return DEFAULT_API


def _request(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    import httpx

    base = _api_base(args)
    try:
        response = httpx.request(method, f"{base}/api/v1{path}", json=body, timeout=10)
    except httpx.ConnectError as err:
        raise CliError(
            f"no agent answers at {base}; is it running? (systemctl status hall-agent, "
            "or pass --api / --config)"
        ) from err
    except httpx.HTTPError as err:
        raise CliError(f"the agent at {base} did not answer: {err}") from err
    try:
        answer = response.json()
    except ValueError as err:
        raise CliError(f"the agent answered {response.status_code} without JSON") from err
    if response.status_code >= 400:
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
        message = answer.get("message") if isinstance(answer, dict) else None
        raise CliError(message or f"the agent answered {response.status_code}")
    return answer


def _print_operation(args: argparse.Namespace, answer: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    result = answer.get("result", {})
    ticket = result.get("ticket")
    if "ticket" in result and ticket is None:
        print(result.get("message", "no ticket"))
    elif ticket is not None:
        line = f"{ticket['number']}  {ticket['status']}"
        if ticket.get("window"):
            line += f"  window {ticket['window']}"
        if "ahead" in result:
            line += f"  ({result['ahead']} ahead, about {result['wait_minutes']} min)"
        print(line)
    elif "window" in result:
        window = result["window"]
        staff = f", staff {window['staff']}" if window.get("staff") else ""
        print(f"window {window['id']}: {window['state']}{staff}")
    if result.get("warning"):
        print(f"note: {result['warning']}")
    return 0


def _window(args: argparse.Namespace) -> int:
    action: str = args.action
    body: dict[str, Any] | None = None
    needs = {"transfer": "a service id", "call": "a ticket number", "sign-in": "a staff number"}
    if action in needs and not args.argument:
        raise CliError(f"'window {args.window} {action}' needs {needs[action]}")
    if action == "transfer":
        body = {"service": args.argument, "position": "back" if args.back else "front"}
    elif action == "call":
        body = {"number": args.argument}
    elif action == "sign-in":
        body = {"staff": args.argument}
    elif action == "pause":
        body = {"reason": args.reason}
    answer = _request(args, "POST", f"/windows/{args.window}/{action}", body)
    return _print_operation(args, answer)


def _status(args: argparse.Namespace) -> int:
    answer = _request(args, "GET", "/status")
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    hall = answer["hall"]
    print(f"{hall['name']} ({hall['id']})  business day {answer['day']}")
    print(
        f"waiting {answer['waiting']}   outbox {answer['outbox_depth']} unsent   "
        f"epoch {answer['epoch']} seq {answer['last_seq']}"
    )
    print("services:")
    for s in answer["services"]:
        state = "open" if s["open"] else "closed"
        cap = f"/{s['daily_cap']}" if s["daily_cap"] else ""
        print(
            f"  {s['prefix']:<2} {s['name']:<12} {state:<6} waiting {s['waiting']:>3}  "
            f"issued {s['issued_today']}{cap}  ~{s['wait_minutes']} min"
        )
    print("windows:")
    for w in answer["windows"]:
        ticket = w["ticket"]["number"] if w.get("ticket") else "-"
        staff = w.get("staff") or "-"
        print(f"  {w['id']:<8} {w['name']:<10} {w['state']:<7} now {ticket:<6} staff {staff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
