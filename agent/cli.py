"""The ``hall-agent`` command: run the daemon, check a config, operate the running hall.

Only the standard library and :mod:`agent.client` are loaded before the verb is known:
``run``, ``demo``, ``check-config`` and ``doctor`` import the daemon's stack in their own
branch, while ``status``, ``take``, ``window``, ``reprint`` and the credential verbs talk
to the running agent without it (pydantic, FastAPI and the daemon stay unloaded).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agent
from agent.client import ApiFailed, ApiUnreachable, Place, read_place, request
from agent.errors import HallAgentError

DEFAULT_CONFIG = Path("/etc/hall-agent/config.yaml")
DEFAULT_API = "http://127.0.0.1:8737"
# Where the agent keeps the ops token when no config says otherwise (storage.path).
DEFAULT_TOKEN_FILE = Path("/var/lib/hall-agent/ops-token")
TOKEN_HELP = (
    "the ops token file (default: ops-token in the config's storage.path, "
    f"else {DEFAULT_TOKEN_FILE})"
)

DEVICE_ROLES = ("kiosk", "screen", "caller", "rater")
USER_ROLES = ("staff", "guide", "manager")

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
    demo.add_argument(
        "--no-history",
        action="store_true",
        help="no simulated month behind the manager's page (a new state only)",
    )

    status = sub.add_parser("status", help="the running hall at a glance")
    _client_options(status)

    take = sub.add_parser("take", help="issue a ticket as the kiosk would")
    take.add_argument("--service", required=True, help="service id")
    take.add_argument(
        "--priority",
        default="normal",
        choices=["normal", "elderly", "disabled", "veteran", "pregnant", "appointment"],
    )
    _client_options(take)

    reprint = sub.add_parser("reprint", help="print a ticket of today again")
    reprint.add_argument("number", help="ticket number, e.g. A012")
    _client_options(reprint)

    window = sub.add_parser("window", help="operate a window: next, recall, finish, ...")
    window.add_argument("window", help="window id")
    window.add_argument("action", choices=WINDOW_ACTIONS)
    window.add_argument(
        "argument",
        nargs="?",
        help=(
            "transfer: service id; call: ticket number; sign-in: staff number; sign-out: "
            "staff number (that one only; none: everyone)"
        ),
    )
    window.add_argument("--back", action="store_true", help="transfer to the back of the queue")
    window.add_argument("--reason", default="", help="pause: why the window pauses")
    _client_options(window)

    _credential_parsers(sub)
    _report_parser(sub)

    return parser


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=None, help=f"local API URL (default: {DEFAULT_API})")
    p.add_argument("--config", type=Path, default=None, help="find the API from this config")
    p.add_argument("--token-file", type=Path, default=None, help=TOKEN_HELP)
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def _credential_parsers(sub: Any) -> None:
    """enroll, revoke, user add, user remove (docs/security.md)."""
    enroll = sub.add_parser(
        "enroll", help="enrol a device (kiosk, screen, caller, rater): prints its token once"
    )
    enroll.add_argument("device", help="the device's id, e.g. kiosk-1 or caller-w1")
    enroll.add_argument("--role", required=True, choices=DEVICE_ROLES)
    enroll.add_argument("--window", default=None, help="callers and raters: their window")
    _client_options(enroll)

    revoke = sub.add_parser("revoke", help="revoke a device's token")
    revoke.add_argument("device")
    _client_options(revoke)

    user = sub.add_parser("user", help="people who log in: staff, guides, managers")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser(
        "add", help="add a login (or replace it); the password is read from stdin or a prompt"
    )
    add.add_argument("name", help="the login name; for staff, their staff number")
    add.add_argument("--role", required=True, choices=USER_ROLES)
    add.add_argument(
        "--window",
        dest="windows",
        metavar="W",
        action="append",
        default=[],
        help="staff: a window they work at (repeat for several)",
    )
    _client_options(add)
    remove = user_sub.add_parser("remove", help="remove a login; its sessions end")
    remove.add_argument("name")
    _client_options(remove)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # pydantic looks for plugins in every installed package's metadata when it builds its
    # first model (tens of ms here, more on a Pi's SD card); the agent uses none. An
    # operator who wants one sets PYDANTIC_DISABLE_PLUGINS themselves (even to "").
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        return _dispatch(args)
    except CliError as err:
        print(f"hall-agent: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _config_warnings(path: Path) -> list[str]:
    """What a valid config should still have, today in the hall (next year's calendar)."""
    import datetime as dt

    from agent.config import load_config
    from agent.config.calendar import calendar_warnings

    config = load_config(path)
    today = dt.datetime.now(config.hall.zone).date()
    return [str(w) for w in calendar_warnings(config.calendar, today)]


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "check-config":
        from agent.config import check_config_file

        code, text = check_config_file(args.file)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        if code == 0:
            for warning in _config_warnings(args.file):
                print(f"warning: {warning}", file=sys.stderr)
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
            history=not args.no_history,
        )
    if command == "status":
        return _status(args)
    if command == "take":
        body = {"service": args.service, "priority": args.priority, "source": "api"}
        answer = _request(args, "POST", "/tickets", body)
        return _print_operation(args, answer)
    if command == "window":
        return _window(args)
    if command in ("enroll", "revoke", "user"):
        return _credentials(args)
    if command == "report":
        return _report(args)
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
    # The start allocates a few hundred thousand objects that live as long as the process
    # (modules, classes, models, routes) and almost no garbage: the cyclic collector would
    # walk them again and again while they are made (5-17 % of a start's CPU here). It is
    # switched off until the agent answers; then serve() collects once, freezes what start
    # made (later collections skip it) and switches the collector back on, or after 30 s
    # if the start waits (agent/daemon.py).
    import gc

    gc.disable()
    import asyncio

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
        return asyncio.run(serve(config, config_path=path))
    except (StoreError, WebStartError, PermissionError) as err:
        raise CliError(str(err)) from err


# -- talking to the running agent ------------------------------------------------------


def _api_base(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    env = os.environ.get("HALL_API")
    if env:
        return env.rstrip("/")
    config_path = _config_path(args)
    if config_path is not None:
        return _place(config_path).api_base()
    return DEFAULT_API


@functools.cache
def _place(config_path: Path) -> Place:
    """Where the agent of this config is: read lightly, or from the full config when the
    light read cannot be sure (the full load then names any problem and its fix)."""
    place = read_place(config_path)
    if place is not None:
        return place
    config = _load(config_path)
    return Place(Path(config.storage.path), config.web.host, config.web.port)


def _config_path(args: argparse.Namespace) -> Path | None:
    config_path: Path | None = args.config
    if config_path is None and DEFAULT_CONFIG.exists():
        config_path = DEFAULT_CONFIG
    return config_path


def _token_file(args: argparse.Namespace) -> Path | None:
    """Where the ops token is: --token-file, the config's storage.path, the default."""
    if args.token_file is not None:
        return Path(args.token_file)
    config_path = _config_path(args)
    if config_path is not None:
        return _place(config_path).token_file
    return DEFAULT_TOKEN_FILE if DEFAULT_TOKEN_FILE.exists() else None


def _token(path: Path | None) -> str | None:
    """The ops token, or None when there is no file (the agent then answers 401)."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except PermissionError as err:
        raise CliError(
            f"cannot read the ops token {path}: permission denied; run as root, or join "
            "the service's group (sudo usermod -aG hall-agent $USER, then log in again)"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read the ops token {path}: {err}") from err


def _request(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    base = _api_base(args)
    token_file = _token_file(args)
    token = _token(token_file)
    try:
        response = request(base, method, f"/api/v1{path}", body, token, timeout=10)
    except ApiUnreachable as err:
        raise CliError(
            f"no agent answers at {base}; is it running? (systemctl status hall-agent, "
            "or pass --api / --config)"
        ) from err
    except ApiFailed as err:
        raise CliError(f"the agent at {base} did not answer: {err}") from err
    try:
        answer = response.json()
    except ValueError as err:
        raise CliError(f"the agent answered {response.status} without JSON") from err
    if response.status >= 400:
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
        message = answer.get("message") if isinstance(answer, dict) else None
        message = message or f"the agent answered {response.status}"
        if response.status == 401 and token is None:
            where = "none was found" if token_file is None else f"{token_file} does not exist"
            message += (
                f"\nhall-agent sends the ops token ({where}): pass --token-file FILE, or "
                "--config FILE for <storage.path>/ops-token"
            )
        raise CliError(message)
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
        people = [window["staff"]] if window.get("staff") else []
        people += [o["staff"] for o in window.get("others") or []]
        staff = f", staff {' + '.join(people)}" if people else ""
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
    elif action == "sign-out" and args.argument:
        body = {"staff": args.argument}  # that one only; the other stays
    elif action == "pause":
        body = {"reason": args.reason}
    answer = _request(args, "POST", f"/windows/{args.window}/{action}", body)
    return _print_operation(args, answer)


def _credentials(args: argparse.Namespace) -> int:
    """enroll, revoke, user add, user remove."""
    if args.command == "enroll":
        body = {"device": args.device, "role": args.role, "window": args.window}
        answer = _request(args, "POST", "/auth/devices", body)
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
            return 0
        where = f" at window {answer['window']}" if answer.get("window") else ""
        print(f"enrolled {answer['device']} as {answer['role']}{where}; its token, shown only now:")
        print(answer["token"])
        page = {"kiosk": "/pages/kiosk", "caller": f"/pages/caller/{args.device}"}
        page["rater"] = f"/pages/rater/{args.device}"
        if args.role in page:
            print(f"its page: {_api_base(args)}{page[args.role]}?token={answer['token']}")
        return 0
    if args.command == "revoke":
        answer = _request(args, "DELETE", f"/auth/devices/{args.device}")
        message = f"revoked {args.device}: its token is refused from now on"
    elif args.user_command == "add":
        password = _read_password()
        body = {"name": args.name, "role": args.role, "windows": args.windows}
        answer = _request(args, "POST", "/auth/users", {**body, "password": password})
        where = f" at {', '.join(args.windows)}" if args.windows else ""
        message = f"user {args.name} can log in as {args.role}{where}"
    else:
        answer = _request(args, "DELETE", f"/auth/users/{args.name}")
        message = f"removed user {args.name}; their sessions ended"
    print(json.dumps(answer, ensure_ascii=False, indent=2) if args.json else message)
    return 0


def _read_password() -> str:
    """A new password: typed twice at a prompt, or the first line of stdin (never an
    argument: it would show in the process list and the shell's history)."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("no password on stdin (its first line is the password)")
        return password
    import getpass

    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise CliError("the two passwords differ; nothing was changed")
    return password


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
        staff = " + ".join([w["staff"]] if w.get("staff") else []) or "-"
        staff += "".join(f" + {o['staff']}" for o in w.get("others") or [])
        print(f"  {w['id']:<8} {w['name']:<10} {w['state']:<7} now {ticket:<6} staff {staff}")
    return 0


# -- reports (docs/reports.md) -----------------------------------------------------------


def _report_parser(sub: Any) -> None:
    report = sub.add_parser(
        "report", help="the hall's statistics for a day, week, month or range; CSV/XLSX export"
    )
    report.add_argument(
        "--from",
        dest="first",
        default=None,
        help="first business day: YYYY-MM-DD, YYYY-Www, YYYY-MM, today, yesterday (today)",
    )
    report.add_argument("--to", dest="last", default=None, help="last business day (from's)")
    report.add_argument("--by", choices=["service", "window", "staff", "hour"], default=None)
    out = report.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write CSV")
    out.add_argument("--xlsx", type=Path, default=None, metavar="FILE", help="write XLSX")
    _client_options(report)


def _report(args: argparse.Namespace) -> int:
    """Asks the running agent (GET /api/v1/reports, the ops token) and prints or writes."""
    from urllib.parse import urlencode

    from agent.features import report_tables

    query = {k: v for k, v in (("from", args.first), ("to", args.last), ("by", args.by)) if v}
    answer = _request(args, "GET", "/reports" + (f"?{urlencode(query)}" if query else ""))
    if args.csv is not None:
        _write(args.csv, report_tables.csv_bytes(answer, args.by))
    elif args.xlsx is not None:
        _write(args.xlsx, report_tables.to_xlsx(answer))
    elif args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        print(report_tables.text(answer, args.by))
    return 0


def _write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as err:
        raise CliError(f"cannot write {path}: {err.strerror or err}") from err
    print(f"wrote {path} ({len(content)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
