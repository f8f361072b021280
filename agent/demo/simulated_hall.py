"""``hall-agent demo``: a complete simulated hall on this machine, no hardware, no broker.

It runs the real agent on ``config/demo.yaml`` (offline: events stay in the outbox),
and, unless told not to, simulated citizens who take tickets and simulated staff who
sign in and call them, so the screens and the event log move on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import secrets
import signal
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from agent.config import (
    AnnouncerDevice,
    CallerDevice,
    CameraDevice,
    ConfigError,
    FileTransport,
    HallAgentConfig,
    LedStripDevice,
    NetworkTransport,
    PrinterDevice,
    RaterDevice,
    TestPatternTransport,
    WebTransport,
    format_problems,
    load_config,
)
from agent.core import events as ev
from agent.core.errors import QueueError
from agent.core.events import Event
from agent.core.model import Priority, Source
from agent.core.operations import CallNext, Take
from agent.daemon import Running, running_agent
from agent.demo import identity as identity_demo
from agent.demo.cases import demo_cases
from agent.demo.content import demo_content
from agent.demo.emulators.keypad import VirtualKeypads
from agent.demo.emulators.led import StripState, VirtualLedBus
from agent.demo.emulators.printer import VirtualPrinter
from agent.demo.history import Filled, fill_history
from agent.features.access import HallAccess, Role
from agent.features.keypads import device_windows
from agent.features.staff import sign_in_by_number
from agent.runtime.hall import Hall, ShuttingDown
from agent.runtime.logs import setup_logging
from agent.runtime.store import DB_NAME, Store, Written
from agent.runtime.tasks import BackgroundTasks
from protocols.keypad import CallerKey

log = logging.getLogger("agent.demo")

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def demo_config(state: Path | None, port: int | None) -> HallAgentConfig:
    try:
        config = load_config(DEMO_CONFIG)
    except ConfigError as err:
        raise SystemExit(f"the demo config is broken:\n{format_problems(err.problems)}") from err
    storage = config.storage.model_copy(update={"path": (state or config.storage.path).resolve()})
    web = config.web if port is None else config.web.model_copy(update={"port": port})
    wildcard = web.host in ("0.0.0.0", "::")  # noqa: S104 (not bound here: no address to print)
    if web.public_url is None and web.port and not wildcard:
        # The printed tickets' QR codes open their status page on this machine.
        web = web.model_copy(update={"public_url": f"http://{web.host}:{web.port}"})
    devices = [_in_state(d, storage.path) for d in config.devices]
    # The demo's personal data key lives with its state, wherever --state points.
    personal = config.personal_data.model_copy(
        update={"key_file": storage.path / "personal-data.key"}
    )
    windows = config.windows
    if not any(isinstance(d, CameraDevice) for d in devices):
        devices.append(DEMO_CAMERA)
        first = windows[0].model_copy(update={"devices": [*windows[0].devices, DEMO_CAMERA.id]})
        windows = [first, *windows[1:]]
    return config.model_copy(
        update={
            "storage": storage,
            "web": web,
            "devices": devices,
            "personal_data": personal,
            "windows": windows,
        }
    )


# Window 1's document camera in the demo: ffmpeg's test pattern (no camera needed).
DEMO_CAMERA = CameraDevice(
    id="camera-w1",
    transport=TestPatternTransport(),
    width=1600,
    height=1200,
    warmup_frames=2,
)


def _in_state(device: Any, state: Path) -> Any:
    """The demo's announcements go into its state folder, wherever --state points."""
    if isinstance(device, AnnouncerDevice) and isinstance(device.transport, FileTransport):
        transport = device.transport.model_copy(update={"path": state / "announcements"})
        return device.model_copy(update={"transport": transport})
    return device


def run_demo(
    *,
    state: Path | None = None,
    port: int | None = None,
    duration: float | None = None,
    simulate: bool = True,
    history: bool = True,
) -> int:
    config = demo_config(state, port)
    setup_logging(
        config.logging.level,
        "text",
        repeat_window_s=config.logging.repeat_window_s,
        max_lines_per_s=config.logging.max_lines_per_s,
        max_bytes_per_hour=config.logging.max_bytes_per_hour,
    )
    asyncio.run(_demo(config, duration, simulate, history))
    return 0


async def _demo(
    config: HallAgentConfig, duration: float | None, simulate: bool, history: bool = True
) -> None:
    if history and not (config.storage.path / DB_NAME).exists():
        print("  A new demo hall: playing its past month first (a few seconds)…", flush=True)
    past = await asyncio.to_thread(fill_history, config, _DEMO_STAFF) if history else None
    async with (
        _virtual_printers(config) as printed,
        _virtual_led_buses(config) as buses,
        _virtual_keypads(config) as keypads,
        identity_demo.virtual_id_readers(config) as id_readers,
        running_agent(config) as running,
    ):
        tokens = await _demo_devices(config, running)
        guide = await _demo_guide(config, running)
        manager = await _demo_login(config, running, DEMO_MANAGER, Role.MANAGER)
        _explain(config, running)
        for where in printed:
            print(f"  Printed tickets (PNG and text) appear in {where}", flush=True)
        _explain_screens(config, running, buses, tokens, guide)
        _explain_manager(running, manager, past)
        await _demo_roster(running.hall)
        await demo_content(running.hall)
        if running.cases is not None:
            _explain_cases(running, await demo_cases(running.hall, running.cases))
        _explain_windows(config, running, keypads, tokens)
        identity_demo.explain(running, id_readers)
        async with BackgroundTasks() as simulation:

            def part(name: str, coro: Coroutine[Any, Any, None]) -> None:
                simulation.create_task(_simulated(name, coro), name=name)

            if simulate:
                part("sim-citizens", _citizens(running))
                for w in config.windows:
                    part(f"sim-{w.id}", _staff_at(config, keypads, running.hall, w.id))
                for bus in keypads.values():
                    part("sim-raters", _raters(bus))
                part("sim-id-cards", identity_demo.citizens_with_cards(running, id_readers))
            if id_readers:
                part("id-console", identity_demo.console(running, id_readers))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            if duration is not None:
                loop.call_later(duration, stop.set)
            try:
                await stop.wait()
            finally:
                simulation.cancel()


async def _simulated(name: str, part: Coroutine[Any, Any, None]) -> None:
    """One part of the simulation: one that fails stops, and the demo goes on without it."""
    try:
        await part
    except Exception:
        log.info("%s stopped; the demo goes on without it", name, exc_info=True)


@contextlib.asynccontextmanager
async def _virtual_printers(config: HallAgentConfig) -> AsyncIterator[list[Path]]:
    """A virtual printer on each network printer of the demo config (127.0.0.1:9100)."""
    folders: list[Path] = []
    async with contextlib.AsyncExitStack() as stack:
        for device in config.devices:
            if not isinstance(device, PrinterDevice) or not isinstance(
                device.transport, NetworkTransport
            ):
                continue
            folder = config.storage.path / "printed"
            printer = await stack.enter_async_context(
                VirtualPrinter(folder, paper_width_mm=device.paper_width_mm)
            )
            try:
                await printer.start_tcp(device.transport.host, device.transport.port)
            except OSError as err:
                log.warning(
                    "the virtual printer cannot listen on %s:%d (%s); tickets will not print",
                    device.transport.host,
                    device.transport.port,
                    err.strerror,
                )
                continue
            folders.append(folder)
        yield folders


@contextlib.asynccontextmanager
async def _virtual_led_buses(config: HallAgentConfig) -> AsyncIterator[list[str]]:
    """A virtual LED bus on each network address of the demo's LED strips (127.0.0.1:9201)."""
    started: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        buses: dict[tuple[str, int], str] = {}
        for device in config.devices:
            if isinstance(device, LedStripDevice) and isinstance(
                device.transport, NetworkTransport
            ):
                buses.setdefault((device.transport.host, device.transport.port), device.protocol)
        for (host, port), protocol in buses.items():
            bus = await stack.enter_async_context(VirtualLedBus(protocol, on_change=_log_strip))
            try:
                await bus.start_tcp(host, port)
            except OSError as err:
                log.warning(
                    "the virtual LED bus cannot listen on %s:%d (%s); strips stay dark",
                    host,
                    port,
                    err.strerror,
                )
                continue
            started.append(f"{host}:{port}")
        yield started


def _log_strip(address: int, state: StripState) -> None:
    log.info("LED strip %d shows %s", address, state.text or "(blank)")


def _explain_screens(
    config: HallAgentConfig,
    running: Running,
    buses: list[str],
    tokens: dict[str, str],
    guide: tuple[str, str],
) -> None:
    lines = [
        "",
        "  Screens (open in a browser; they update by themselves):",
        f"    big screen:      {running.url}/pages/hall",
        f"    kiosk (取号):    {running.url}/pages/kiosk?token={tokens[DEMO_KIOSK]}",
        f"    办事指南查询:    {running.url}/pages/guide",
        f"    guide desk:      {running.url}/pages/guide-desk  (引导台; log in as {guide[0]},"
        f" password {guide[1]})",
    ]
    lines += [f"    window {w.id}:       {running.url}/pages/window/{w.id}" for w in config.windows]
    lines.append(f"    large text:      {running.url}/pages/hall?large=1")
    lines.append(
        f"    screen content:  {running.url}/pages/manager/content  (通知、社区动态、招聘信息; a"
        " manager logs in: hall-agent user add NAME --role manager)"
    )
    for bus in buses:
        lines.append(f"  LED strips: a virtual bus on {bus} (their text is logged below)")
    if running.voice is not None:
        lines.append(f"  Announcements are written as WAV files to {running.voice.sink.endpoint}")
    print("\n".join([*lines, ""]), flush=True)


def _explain(config: HallAgentConfig, running: Running) -> None:
    service = config.services[0].id
    window = config.windows[0].id
    token_file = config.storage.path / "ops-token"
    client = f"--api {running.url} --token-file {token_file}"
    lines = [
        "",
        f"  {config.hall.name} is open (demo hall '{config.hall.id}', offline: events wait in",
        f"  the outbox). State is kept in {config.storage.path}.",
        "",
        f"  Local API and its OpenAPI page:  {running.url}/docs",
        f"  The queue as JSON:               {running.url}/api/v1/queue",
        f"  The event log (outbox):          {running.url}/api/v1/events",
        "  The API wants a credential (docs/security.md); the ops token opens everything:",
        f'    curl -H "Authorization: Bearer $(cat {token_file})" {running.url}/api/v1/queue',
        "",
        "  Try, in another terminal (.venv/bin/hall-agent):",
        f"    hall-agent status {client}",
        f"    hall-agent take --service {service} {client}",
        f"    hall-agent window {window} next {client}",
        "",
        "  Simulated citizens take tickets and staff call them. Ctrl-C stops the hall.",
        "",
    ]
    print("\n".join(lines), flush=True)


# The demo's own devices, enrolled at its start (docs/security.md): the kiosk page, and the
# web callers and raters of the config. Their tokens are kept in the demo's state so pages
# opened in an earlier run keep working.
DEMO_KIOSK = "demo-kiosk"
DEMO_TOKENS = "demo-tokens.json"


async def _demo_devices(config: HallAgentConfig, running: Running) -> dict[str, str]:
    """Enrol the demo's kiosk and web callers and raters; their tokens by device id."""
    access = running.access
    assert access is not None
    path = config.storage.path / DEMO_TOKENS
    try:
        kept = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (FileNotFoundError, ValueError):
        kept = {}
    windows = device_windows(config)
    wanted: dict[str, tuple[Role, str | None]] = {DEMO_KIOSK: (Role.KIOSK, None)}
    for device in config.devices:
        web = isinstance(getattr(device, "transport", None), WebTransport)
        if isinstance(device, CallerDevice | RaterDevice) and web and device.id in windows:
            role = Role.CALLER if isinstance(device, CallerDevice) else Role.RATER
            wanted[device.id] = (role, windows[device.id])
    tokens = {}
    for device_id, (role, window) in wanted.items():
        token = kept.get(device_id)
        if token is None or not _still_enrolled(access, token, device_id, role, window):
            token = await access.enroll(device_id, role, window)
        tokens[device_id] = token
    if tokens != kept:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(tokens, fh, indent=1, sort_keys=True)
    return tokens


DEMO_GUIDE = "guide-demo"
DEMO_MANAGER = "manager-demo"


async def _demo_guide(config: HallAgentConfig, running: Running) -> tuple[str, str]:
    """The demo's guide (导办员) login for the guide desk page."""
    return await _demo_login(config, running, DEMO_GUIDE, Role.GUIDE)


async def _demo_login(
    config: HallAgentConfig, running: Running, name: str, role: Role
) -> tuple[str, str]:
    """A login of the demo (the guide's for the guide desk, the manager's for the
    manager's page): its name and password, kept in the demo's state (mode 0600) so it
    stays the same between runs."""
    access = running.access
    assert access is not None
    path = config.storage.path / f"demo-{role.value}.json"
    try:
        password = str(json.loads(path.read_text(encoding="utf-8"))["password"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        password = secrets.token_urlsafe(9)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"name": name, "password": password}, fh)
    await access.add_user(name, role, [], password)
    return name, password


def _explain_manager(running: Running, manager: tuple[str, str], past: Filled | None) -> None:
    lines = [
        "  The manager's page (统计报表: today live, any range, charts, CSV and Excel):",
        f"    {running.url}/pages/manager  (log in as {manager[0]}, password {manager[1]})",
    ]
    if past is not None:
        lines.append(
            f"    behind it: {past.days} simulated days from {past.first} and today so far, "
            f"{past.tickets} tickets (made in {past.seconds:.1f} s)"
        )
    else:
        lines.append("    (no simulated month: only a new state folder gets one; try --state DIR)")
    print("\n".join([*lines, ""]), flush=True)


def _explain_cases(running: Running, numbers: list[str]) -> None:
    if not numbers:
        return
    print(
        f"  Proxy cases (代收代办): {', '.join(numbers)} — one due on the next working day, one "
        f"overdue, one done — at {running.url}/pages/manager/cases\n",
        flush=True,
    )


def _still_enrolled(
    access: HallAccess, token: str, device_id: str, role: Role, window: str | None
) -> bool:
    found = access.device_for(token, device_id, role)
    return found is not None and found.windows == frozenset([window] if window else [])


async def _citizens(running: Running) -> None:
    hall = running.hall
    services = [s.id for s in hall.config.services]
    rng = random.Random()  # noqa: S311 - a simulation, not a secret
    while True:
        await asyncio.sleep(rng.uniform(2, 6))
        service = rng.choice(services)
        priority = Priority.ELDERLY if rng.random() < 0.15 else Priority.NORMAL
        try:
            take = Take(service=service, source=Source.TOUCH, priority=priority)
            outcome = await running.issuing.take(take)
        except (QueueError, ShuttingDown) as err:
            log.info("citizen could not take a %s ticket: %s", service, err)
            continue
        if outcome.ticket is not None:
            ahead = outcome.result["ahead"]
            log.info("citizen took %s (%s ahead)", outcome.ticket.number, ahead)


# -- window callers and raters (issue 6) ------------------------------------------------

# The demo's staff: sign in on a keypad with 1001 (w1), 1002 (w2), ... then confirm.
_DEMO_STAFF = [
    {"staff": "d-1001", "name": "王芳", "key_code": "1001", "windows": []},
    {"staff": "d-1002", "name": "李明", "key_code": "1002", "windows": []},
    {"staff": "d-1003", "name": "张丽", "key_code": "1003", "windows": []},
    {"staff": "d-1004", "name": "陈静", "key_code": "1004", "windows": []},
    {"staff": "d-1005", "name": "刘洋", "key_code": "1005", "windows": []},
]


@contextlib.asynccontextmanager
async def _virtual_keypads(config: HallAgentConfig) -> AsyncIterator[dict[str, VirtualKeypads]]:
    """A virtual keypad bus on each network address of the demo's callers and raters
    (127.0.0.1:9202), by endpoint."""
    started: dict[str, VirtualKeypads] = {}
    tried: set[str] = set()
    async with contextlib.AsyncExitStack() as stack:
        for device in config.devices:
            transport = getattr(device, "transport", None)
            if not isinstance(device, CallerDevice | RaterDevice) or not isinstance(
                transport, NetworkTransport
            ):
                continue
            endpoint = transport.endpoint() or ""
            if endpoint in tried:
                continue
            tried.add(endpoint)
            bus = await stack.enter_async_context(VirtualKeypads(device.protocol))
            try:
                await bus.start_tcp(transport.host, transport.port)
            except OSError as err:
                log.warning(
                    "the virtual keypad bus cannot listen on %s:%d (%s); keypads stay silent",
                    transport.host,
                    transport.port,
                    err.strerror,
                )
                continue
            started[endpoint] = bus
        yield started


async def _demo_roster(hall: Hall) -> None:
    """The demo's staff roster, as central's set_staff would push it."""

    def write(store: Store, now: dt.datetime, clock_ok: bool) -> Written[None]:
        if store.setting("staff"):
            return Written([], None)
        event = Event(ev.RosterSet(count=len(_DEMO_STAFF)), now)
        stored = store.append([event], clock_ok=clock_ok, settings={"staff": _DEMO_STAFF})
        return Written(stored, None)

    await hall.write(write)


def _explain_windows(
    config: HallAgentConfig,
    running: Running,
    keypads: dict[str, VirtualKeypads],
    tokens: dict[str, str],
) -> None:
    lines = ["  Window callers and raters (好差评):"]
    for device in config.devices:
        if not isinstance(device, CallerDevice | RaterDevice):
            continue
        if device.id in tokens:
            page = f"{running.url}/pages/{device.kind}/{device.id}?token={tokens[device.id]}"
            lines.append(f"    {device.id:<10} page: {page}")
        elif isinstance(device.transport, NetworkTransport):
            lines.append(
                f"    {device.id:<10} keypad at address {device.address} on the virtual bus "
                f"{device.transport.host}:{device.transport.port}"
            )
    if keypads:
        lines.append(
            "  Press the keypads yourself: python -m agent.demo.emulators.keypad is the same bus "
            "on its own (stop the demo's simulation with --no-simulation)."
        )
    lines.append("  Staff sign in on a keypad with 1001, 1002 or 1003 then confirm.")
    print("\n".join([*lines, ""]), flush=True)


def _bus_caller(
    config: HallAgentConfig, keypads: dict[str, VirtualKeypads], window: str
) -> tuple[VirtualKeypads, int] | None:
    for device_id in config.window(window).devices:
        device = config.device(device_id)
        if isinstance(device, CallerDevice) and isinstance(device.transport, NetworkTransport):
            bus = keypads.get(device.transport.endpoint() or "")
            if bus is not None and device.address is not None:
                return bus, device.address
    return None


async def _staff_at(
    config: HallAgentConfig, keypads: dict[str, VirtualKeypads], hall: Hall, window: str
) -> None:
    """Simulated staff: on the window's keypad when it has one on the virtual bus."""
    keypad = _bus_caller(config, keypads, window)
    if keypad is None:
        await _staff(hall, window)
        return
    bus, address = keypad
    rng = random.Random()  # noqa: S311 - a simulation, not a secret
    number = config.windows.index(config.window(window)) + 1
    await bus.wait_connected(within=30)
    await bus.press(address, CallerKey.CONFIRM, f"100{number}")
    while True:
        await asyncio.sleep(rng.uniform(6, 15))
        await bus.press(address, CallerKey.NEXT)
        log.info(
            "window %s: next pressed on keypad %d (shows %s)",
            window,
            address,
            bus.keypad(address).display or "nothing",
        )


async def _raters(bus: VirtualKeypads) -> None:
    """Simulated citizens rate on the bus raters that invite them, now and then badly."""
    rng = random.Random()  # noqa: S311 - a simulation, not a secret
    while True:
        await bus.wait_for(lambda: any(k.rating_active for k in bus.keypads.values()), 3600)
        await asyncio.sleep(rng.uniform(1, 4))
        for state in [k for k in bus.keypads.values() if k.rating_active]:
            key = rng.choices([0, 1, 2, 3, 4], weights=[60, 25, 8, 5, 2])[0]
            await bus.rate(state.address, key)
            if key >= 3:  # a bad key: the reason key follows
                await bus.rate(state.address, rng.randrange(4))


async def _staff(hall: Hall, window: str) -> None:
    rng = random.Random()  # noqa: S311 - a simulation, not a secret
    # A member of the demo's roster (only the roster's staff sign in): 1001 at w1, ...
    position = [w.id for w in hall.config.windows].index(window)
    staff = str(_DEMO_STAFF[position % len(_DEMO_STAFF)]["staff"])
    await sign_in_by_number(hall, window, staff)
    while True:
        await asyncio.sleep(rng.uniform(6, 15))
        try:
            outcome = await hall.execute(CallNext(window=window))
        except (QueueError, ShuttingDown) as err:
            log.info("window %s: %s", window, err)
            continue
        if outcome.ticket is not None:
            log.info("window %s called %s", window, outcome.ticket.number)
