"""Memory of ``hall-agent run`` over a simulated week of a busy hall, hour by hour.

The agent runs as its own process (``_soak_agent.py``: the daemon's ``serve`` with the
hall's clock read from a file the benchmark moves), on ``config/example.yaml`` with every
device kind it lists, each on the emulator ``hall-agent demo`` uses where one exists:

- the kiosk printer, the LED strips (one bus per protocol), the callers' and raters' keypad
  bus and both ID card readers are the demo's emulators (agent/demo/emulators) on local
  TCP ports; the document camera is ffmpeg's test pattern (as in the demo); the announcer
  writes WAV files; the scanner (SANE), the kiosk buttons and the QR scanner (evdev) are
  configured as in the example and absent, as a missing device is on a Pi;
- central is a mosquitto started here and a subscriber (a thread of this process) that
  acks what it received once a second, as central does; from Wednesday 10:00 to Thursday
  11:00 the broker is stopped (central gone), then started again, and the link drains.

The week starts on a Monday at 00:00 (hall time). Each simulated hour the hall's clock is
set forward; in its opening hours (the example's: 09:00-12:00 and 13:30-17:30 on
weekdays, Saturday morning for two services) 300 citizens a day take a ticket, spread
over the open hours: most through the API as the kiosk page does, one in twenty with an
ID card at the kiosk reader (``/identity/kiosk/take``). After each take one window in
turn calls the next ticket (window 1 and 2 on their bus keypads, window 3 through the
API), which finishes the previous one; the bus raters then rate it (mostly well, now and
then badly with a reason), window 3's rater is its web page (four citizens in five rate
there, the others let it time out). One
citizen in fifteen shows an ID card at window 1; window 1 captures a document (two
pages) twice a day. Staff sign in each morning. A hall screen and window 1's screen keep
their event streams open all week.

The agent is started once to make the state a hall has after installation (database,
keys, the announcer's generated clip pack), stopped, and started again for the week.
At the end of every simulated hour: ``VmRSS`` and ``RssAnon`` of the agent process. The
baseline, sampled alongside, is a bare ``python -c "import agent.daemon"`` process (what
the agent's code costs before it does anything). Reported: idle RSS with every device
kind (before the week, once the agent settled), RSS at the end of each day, and growth
over the week (end of Sunday against the end of Monday, when the first day's one-off
allocations are done, and against idle).

``--object-counts`` counts the objects the garbage collector tracks, by type, at the end
of Monday and of the last day, and prints the types that grew (cheap: no tracing).
``--tracemalloc`` runs the agent under tracemalloc and prints what grew between the end of
Monday and the end of the last day (largest first): for finding what grows, not for the
RSS figures (tracing costs memory itself).

``--idle-only`` stops after the idle phase (about 30 s): idle RSS with every device kind,
by mapping, and the modules the idle agent has loaded (``soak_memory_idle.json``); with
``--tracemalloc`` also the idle agent's Python memory by file (traced from after
``agent.daemon`` is imported).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as mqtt
import yaml
from _common import (
    ROOT,
    AgentProcess,
    median,
    print_table,
    scratch_dir,
    write_config,
    write_results,
)
from _mqtt import Broker, broker_version, read_vm
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import validate_config
from agent.demo.emulators.idreader import FIXTURE_CARDS, VirtualIdReader
from agent.demo.emulators.keypad import VirtualKeypads
from agent.demo.emulators.led import VirtualLedBus
from agent.demo.emulators.printer import VirtualPrinter
from protocols.keypad import CallerKey

NAME = "soak_memory"
EXAMPLE = ROOT / "config" / "example.yaml"
HALL_ID = "soak-hall"
ZONE = ZoneInfo("Asia/Shanghai")
TARGET_IDLE_MB = 70.0
TARGET_GROWTH_MB = 5.0
# The example config's opening hours, as (start, end) in hours of the day, by weekday.
WEEKDAY_HOURS = ((9.0, 12.0), (13.5, 17.5))
SATURDAY_HOURS = ((9.0, 12.0),)
# Services citizens ask for, with weights (the example's daily caps turn some away).
WEIGHTS = {"social": 35, "civil-affairs": 15, "household": 22, "elderly": 20, "employment": 8}
SATURDAY_SERVICES = ("social", "elderly")
# Central is away from Wednesday 10:00 to Thursday 11:00.
OUTAGE = ((2, 10), (3, 11))
BUS_WINDOWS = {"w1": 1, "w2": 2}  # window -> caller address on the keypad bus
RATERS = {"w1": 11, "w2": 12}
RATER_W3_TOKEN = "soak-rater-w3-page-token"  # rater-w3's page (token_env in the example)


# -- the agent's config ----------------------------------------------------------------------


def rss_by_mapping(pid: int) -> dict[str, int]:
    """Resident kB of a process by what is mapped (``/proc/<pid>/smaps``): each shared
    library or file by its package or name, the malloc heap, and anonymous memory (Python's
    object arenas, thread stacks, large allocations). Shows which part of a growth is code
    pages of libraries first used (file-backed, shared, reclaimable) and which is data."""
    out: collections.Counter[str] = collections.Counter()
    name = "?"
    for line in (
        Path(f"/proc/{pid}/smaps").read_text(encoding="utf-8", errors="replace").split("\n")
    ):
        fields = line.split(maxsplit=5)
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            name = _mapping_group(fields[5].strip() if len(fields) > 5 else "")
        elif line.startswith("Rss:"):
            out[name] += int(fields[1])
    return dict(out)


def _mapping_group(path: str) -> str:
    if not path:
        return "anonymous (Python's arenas, thread stacks, large allocations)"
    if path.startswith("["):
        return {"[heap]": "malloc heap"}.get(path, path)
    if "site-packages/" in path:
        package = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return f"{package.split('.')[0]} (library files)"
    if path.endswith((".db", ".db-wal", ".db-shm")) or "/state" in path:
        return "the state database"
    if path.endswith((".ttf", ".ttc", ".otf")):
        return "fonts"
    return Path(path).name.split(".so")[0] or path


def mapping_growth(before: dict[str, int], after: dict[str, int], top: int) -> list[list[Any]]:
    """The largest changes between two ``rss_by_mapping``, in MB, largest first."""
    keys = set(before) | set(after)
    grown = sorted(keys, key=lambda k: after.get(k, 0) - before.get(k, 0), reverse=True)
    return [
        [key, round((after.get(key, 0) - before.get(key, 0)) / 1024, 2)]
        for key in grown[:top]
        if after.get(key, 0) != before.get(key, 0)
    ]


def soak_config(work: Path, ports: dict[str, int], broker_url: str) -> dict[str, Any]:
    """config/example.yaml with its devices on the emulators and central on our broker."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    storage = work / "state"
    data["hall"]["id"] = HALL_ID
    data["storage"]["path"] = str(storage)
    data["web"]["port"] = 0
    data["web"]["rate_limit_per_s"] = 1000  # the benchmark is one busy client
    data["web"]["rate_limit_burst"] = 1000
    data["pages"]["staff_photos"] = str(work / "staff-photos")
    data["clock"] = {"trust": "system"}
    data["logging"] = {"level": "INFO", "format": "text"}
    data["personal_data"] = {
        "key_file": str(storage / "personal-data.key"),
        "send": {"kiosk": "hash", "window": "full"},
    }
    data["mqtt"] = {"url": broker_url, "reconnect_max_s": 2, "keepalive": 45}
    local = "127.0.0.1"
    for device in data["devices"]:
        kind, transport = device["kind"], device.get("transport", {})
        if kind == "printer":
            device["transport"] = {"type": "network", "host": local, "port": ports["printer"]}
        elif kind == "led_strip":
            protocol = device.get("protocol", "number_board")
            device["transport"] = {"type": "network", "host": local, "port": ports[protocol]}
        elif kind in ("caller", "rater") and transport.get("type") == "serial":
            device["transport"] = {"type": "network", "host": local, "port": ports["keypad"]}
        elif kind == "id_reader":
            device["transport"] = {"type": "network", "host": local, "port": ports[device["id"]]}
        elif kind == "camera":
            device["transport"] = {"type": "test_pattern"}
            device.update(width=1600, height=1200, warmup_frames=2)
        elif kind == "announcer":
            device["transport"] = {"type": "file", "path": str(work / "announcements")}
    validate_config(data)
    return data


def led_protocols() -> set[str]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return {d.get("protocol", "number_board") for d in data["devices"] if d["kind"] == "led_strip"}


# -- the hall's clock ------------------------------------------------------------------------


class Clock:
    """The file the agent reads its time from (``_soak_agent.FileClock``)."""

    def __init__(self, path: Path, start: dt.datetime) -> None:
        self.path = path
        self.now = start
        path.write_bytes(struct.pack("d", start.timestamp()))
        self._fh = path.open("r+b")

    def set(self, when: dt.datetime) -> None:
        self.now = when
        self._fh.seek(0)
        self._fh.write(struct.pack("d", when.timestamp()))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


# -- central ---------------------------------------------------------------------------------


class Central:
    """Receives the hall's events at QoS 1 and acks the highest seq once a second."""

    def __init__(self, broker: Broker) -> None:
        self.lock = threading.Lock()
        self.epoch = 0
        self.seq = 0
        self.acked = (0, 0)
        self.received = 0
        self.acks_sent = 0
        self._stop = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="soak-central", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.broker = broker
        self._thread = threading.Thread(target=self._acker, daemon=True)

    def start(self) -> None:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"hall/v1/{HALL_ID}/event/#", qos=1)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            envelope = json.loads(message.payload)
            epoch, seq = int(envelope["epoch"]), int(envelope["seq"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.received += 1
            if (epoch, seq) > (self.epoch, self.seq):
                self.epoch, self.seq = epoch, seq

    def _acker(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                latest = (self.epoch, self.seq)
            if latest > self.acked and self.client.is_connected():
                body = json.dumps({"epoch": latest[0], "seq": latest[1]})
                info = self.client.publish(f"hall/v1/{HALL_ID}/ack", body, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.acked = latest
                    self.acks_sent += 1


# -- the week --------------------------------------------------------------------------------


class Week:
    def __init__(
        self,
        args: argparse.Namespace,
        agent: AgentProcess,
        clock: Clock,
        broker: Broker,
        keypads: VirtualKeypads,
        readers: dict[str, VirtualIdReader],
        baseline_pid: int,
    ) -> None:
        self.args = args
        self.agent = agent
        self.clock = clock
        self.broker = broker
        self.keypads = keypads
        self.readers = readers
        self.baseline_pid = baseline_pid
        self.rng = random.Random(15)
        self.http = httpx.AsyncClient(base_url=agent.url, headers=agent.ops, timeout=30)
        self.hourly: list[dict[str, Any]] = []
        self.counts = {
            "takes": 0,
            "refused_takes": 0,
            "card_takes": 0,
            "calls": 0,
            "ratings": 0,
            "window_cards": 0,
            "captures": 0,
            "failed_requests": 0,
        }
        self.step = 0
        self.trims: list[tuple[int, int]] = []
        self.maps: list[dict[str, int]] = []  # rss_by_mapping at the end of each day
        self.w1_turns = 0

    def sample(self, day: int, hour: int) -> None:
        vm = read_vm(self.agent.pid)
        base = read_vm(self.baseline_pid)
        self.hourly.append(
            {
                "day": day,
                "hour": hour,
                "sim": self.clock.now.isoformat(timespec="minutes"),
                "rss_kb": vm["VmRSS"],
                "anon_kb": vm["RssAnon"],
                "baseline_rss_kb": base["VmRSS"],
                "threads": vm["Threads"],
                "real_s": time.monotonic(),
            }
        )

    async def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response | None:
        try:
            answer = await self.http.post(path, json=body)
        except httpx.HTTPError:
            self.counts["failed_requests"] += 1
            return None
        if answer.status_code >= 500 or answer.status_code in (401, 403, 404, 422):
            self.counts["failed_requests"] += 1
            if self.counts["failed_requests"] <= 5:
                print(f"{path}: {answer.status_code} {answer.text[:200]}", file=sys.stderr)
        return answer

    async def run(self, start: dt.datetime) -> None:
        for day in range(self.args.days):
            for hour in range(24):
                at = start + dt.timedelta(days=day, hours=hour)
                self.clock.set(at)
                self.outage(day, hour)
                await self.hour(day, hour, at)
                self.sample(day, hour)
            self.maps.append(rss_by_mapping(self.agent.pid))
            last = self.hourly[-1]
            print(
                f"day {day + 1} ({(start + dt.timedelta(days=day)):%a}): RSS "
                f"{last['rss_kb'] / 1024:.1f} MB, {self.counts['takes']} tickets so far",
                file=sys.stderr,
            )
            wants_snapshot = self.args.tracemalloc or self.args.object_counts
            if wants_snapshot and day in (0, self.args.days - 1):
                await self.snapshot()
            if self.args.trim_probe:
                self.trims.append(await self.trim_probe())

    def outage(self, day: int, hour: int) -> None:
        if (day, hour) == OUTAGE[0] and self.broker.running:
            self.broker.stop()
        elif (day, hour) == OUTAGE[1] and not self.broker.running:
            self.broker.start()

    async def trim_probe(self) -> tuple[int, int]:
        """VmRSS before and after the agent's malloc_trim(0) (``_soak_agent.py``)."""
        probe = self.agent.storage / "trim-probe"
        probe.unlink(missing_ok=True)
        assert self.agent.proc is not None
        self.agent.proc.send_signal(signal.SIGUSR2)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if probe.exists() and probe.read_text():
                before, after = probe.read_text().split()
                return int(before), int(after)
        return 0, 0

    async def snapshot(self) -> None:
        done = self.agent.storage / "tracemalloc-done"
        before = done.read_text() if done.exists() else ""
        assert self.agent.proc is not None
        self.agent.proc.send_signal(signal.SIGUSR1)
        for _ in range(600):
            await asyncio.sleep(0.1)
            if done.exists() and done.read_text() != before:
                return

    async def hour(self, day: int, hour: int, at: dt.datetime) -> None:
        weekday = at.weekday()
        if weekday == 6:
            await asyncio.sleep(self.args.idle_hour_s)
            return
        spans = SATURDAY_HOURS if weekday == 5 else WEEKDAY_HOURS
        open_hours = sum(end - start for start, end in spans)
        if hour == 8:
            for window in ("w1", "w2", "w3"):
                await self.post(
                    f"/api/v1/windows/{window}/sign-in",
                    {"staff": f"s-{window}", "name": f"{window}号窗口"},
                )
        minutes: list[float] = []
        for start, end in spans:
            lo, hi = max(start, hour), min(end, hour + 1)
            if hi > lo:
                minutes += [lo * 60, hi * 60]
        if not minutes:
            await asyncio.sleep(self.args.idle_hour_s)
            return
        lo, hi = minutes[0], minutes[-1]
        citizens = round(self.args.citizens * (hi - lo) / 60 / open_hours)
        services = SATURDAY_SERVICES if weekday == 5 else tuple(WEIGHTS)
        weights = [WEIGHTS[s] for s in services]
        for n in range(citizens):
            moment = at.replace(hour=0) + dt.timedelta(minutes=lo + (hi - lo) * n / citizens)
            self.clock.set(moment)
            service = self.rng.choices(services, weights)[0]
            await self.citizen(service)
            await self.window_turn(day)

    async def citizen(self, service: str) -> None:
        self.step += 1
        if self.step % 20 == 0:
            reader = self.readers["idreader-kiosk"]
            reader.place(self.rng.choice(list(FIXTURE_CARDS)))
            try:
                held = False
                for _ in range(50):
                    state = await self.http.get("/api/v1/identity/kiosk")
                    if state.status_code == 200 and state.json().get("card"):
                        held = True
                        break
                    await asyncio.sleep(0.05)
                if held:
                    answer = await self.post("/api/v1/identity/kiosk/take", {"service": service})
                    if answer is not None and answer.status_code == 201:
                        self.counts["card_takes"] += 1
                        self.counts["takes"] += 1
                        return
            finally:
                reader.remove()
        answer = await self.post("/api/v1/tickets", {"service": service})
        if answer is not None and answer.status_code == 201:
            self.counts["takes"] += 1
        else:
            self.counts["refused_takes"] += 1

    async def window_turn(self, day: int) -> None:
        window = ("w1", "w2", "w3")[self.step % 3]
        if window in BUS_WINDOWS:
            rater = self.keypads.keypad(RATERS[window])
            invites = rater.rating_invites
            await self.keypads.press(BUS_WINDOWS[window], CallerKey.NEXT)
            # The finished ticket's rating invitation travels over the bus to the rater.
            with contextlib.suppress(TimeoutError):
                await self.keypads.wait_for(lambda: rater.rating_invites > invites, 1.0)
            await self.rate_waiting()
        else:
            answer = await self.post(f"/api/v1/windows/{window}/next")
            await self.rate_on_page(answer)
        self.counts["calls"] += 1
        if window != "w1":
            return
        self.w1_turns += 1
        if self.w1_turns % 5 == 0:
            reader = self.readers["idreader-w1"]
            reader.place(self.rng.choice(list(FIXTURE_CARDS)))
            await asyncio.sleep(0.6)
            reader.remove()
            self.counts["window_cards"] += 1
        if self.w1_turns % 50 == 0:
            answer = await self.post("/api/v1/windows/w1/capture", {"pages": 2})
            if answer is not None and answer.status_code == 201:
                self.counts["captures"] += 1

    async def rate_on_page(self, called: httpx.Response | None) -> None:
        """Window 3's rater page: the citizen rates the ticket the call just finished
        (bad levels with a reason); now and then nobody does and it times out."""
        if called is None or called.status_code != 200 or self.rng.random() < 0.2:
            return
        level = self.rng.choices([5, 4, 3, 2, 1], weights=[60, 25, 8, 5, 2])[0]
        body: dict[str, Any] = {"level": level}
        if level <= 2:
            body["comment"] = "等候时间太长"
        try:
            answer = await self.http.post(
                "/api/v1/windows/w3/rating",
                json=body,
                headers={"Authorization": f"Bearer {RATER_W3_TOKEN}"},
            )
        except httpx.HTTPError:
            self.counts["failed_requests"] += 1
            return
        if answer.status_code == 200:
            self.counts["ratings"] += 1

    async def rate_waiting(self) -> None:
        for address in RATERS.values():
            state = self.keypads.keypad(address)
            if not state.rating_active:
                continue
            key = self.rng.choices([0, 1, 2, 3, 4], weights=[60, 25, 8, 5, 2])[0]
            await self.keypads.rate(address, key)
            if key >= 3:
                await self.keypads.rate(address, self.rng.randrange(4))
            self.counts["ratings"] += 1


async def screens(url: str, stop: asyncio.Event) -> None:
    """A hall screen and window 1's screen, their event streams open all week."""

    async def follow(view: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=None) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    async with client.stream("GET", f"/pages/feed/{view}") as stream:
                        async for _ in stream.aiter_bytes():
                            if stop.is_set():
                                return
                await asyncio.sleep(1)

    async with asyncio.TaskGroup() as group:
        group.create_task(follow("hall"))
        group.create_task(follow("window?window=w1"))


def baseline_process(seconds: float) -> subprocess.Popen[bytes]:
    code = f"import time, agent.daemon; print('ready', flush=True); time.sleep({seconds:g})"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE)


async def baseline_ready(baseline: subprocess.Popen[bytes]) -> None:
    """Until the baseline has imported agent.daemon (sampled before, it would be light)."""
    assert baseline.stdout is not None
    line = await asyncio.to_thread(baseline.stdout.readline)
    if line.strip() != b"ready":
        raise RuntimeError("the baseline process (import agent.daemon) did not start")


async def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    default_handler = loop.get_exception_handler()

    def quiet(loop_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Emulator connections cancelled as the week ends are not worth a traceback.
        if isinstance(context.get("exception"), asyncio.CancelledError):
            return
        if default_handler is None:
            loop_.default_exception_handler(context)
        else:
            default_handler(loop_, context)

    loop.set_exception_handler(quiet)
    async with contextlib.AsyncExitStack() as stack:
        ports: dict[str, int] = {}
        printer = await stack.enter_async_context(VirtualPrinter(None, render=False))
        ports["printer"] = await printer.start_tcp("127.0.0.1", 0)
        for protocol in led_protocols():
            bus = await stack.enter_async_context(VirtualLedBus(protocol))
            ports[protocol] = await bus.start_tcp("127.0.0.1", 0)
        keypads = await stack.enter_async_context(VirtualKeypads())
        ports["keypad"] = await keypads.start_tcp("127.0.0.1", 0)
        readers = {}
        for device in ("idreader-kiosk", "idreader-w1"):
            readers[device] = await stack.enter_async_context(VirtualIdReader())
            ports[device] = await readers[device].start_tcp("127.0.0.1", 0)

        broker = Broker(work / "broker")
        broker.start()
        stack.callback(broker.stop)
        central = Central(broker)
        central.start()
        stack.callback(central.stop)

        data = soak_config(work, ports, broker.url)
        config_path = write_config(work / "config.yaml", data)
        storage = Path(data["storage"]["path"])
        storage.mkdir(parents=True)  # noqa: ASYNC240 - once, before anything runs
        start = dt.datetime(2026, 11, 30, 0, 0, tzinfo=ZONE)  # a Monday
        clock = Clock(work / "clock", start.replace(hour=7))
        stack.callback(clock.close)
        env = {"HALL_RATER_W3_TOKEN": RATER_W3_TOKEN}
        if args.tracemalloc:
            env["SOAK_TRACEMALLOC"] = "12"  # frames kept per allocation
        agent = AgentProcess(
            config_path,
            storage,
            work / "agent.log",
            env=env,
            command=[
                sys.executable,
                str(ROOT / "bench" / "_soak_agent.py"),
                str(config_path),
                str(clock.path),
            ],
        )
        # A first start makes the state a hall has after installation (the database, the
        # keys, the announcer's generated clip pack); the week runs on the second start.
        agent.start(timeout=120)
        pack = storage / "voice" / "zh" / "pack.json"
        for _ in range(1200):
            if pack.exists():
                break
            await asyncio.sleep(0.1)
        agent.stop()
        agent.start(timeout=120)
        stack.callback(agent.stop)
        baseline = baseline_process(args.settle + args.idle_seconds + 7200)
        stack.callback(baseline.kill)
        await baseline_ready(baseline)

        stop = asyncio.Event()
        viewers = asyncio.create_task(screens(agent.url, stop))
        await keypads.wait_connected(within=30)
        await asyncio.sleep(args.settle)
        idle = []
        idle_base = []
        for _ in range(round(args.idle_seconds)):
            await asyncio.sleep(1)
            idle.append(read_vm(agent.pid)["VmRSS"])
            idle_base.append(read_vm(baseline.pid)["VmRSS"])
        idle_vm = read_vm(agent.pid)
        idle_maps = rss_by_mapping(agent.pid)
        if args.idle_only:
            await Week.snapshot(cast(Week, _AgentOnly(agent)))  # the modules loaded at idle
            modules = json.loads((storage / "modules-1.json").read_text(encoding="utf-8"))
            stop.set()
            viewers.cancel()
            with contextlib.suppress(BaseException):
                await viewers
            figures = idle_figures(idle, idle_base, idle_vm, idle_maps)
            figures["modules_loaded"] = len(modules)
            if args.tracemalloc:  # where the idle agent's Python memory is, by file
                snap = tracemalloc.Snapshot.load(str(storage / "tracemalloc-1.snap"))
                figures["tracemalloc_idle_total_mb"] = sum(
                    t.size for t in snap.statistics("filename")
                ) / (1024 * 1024)
                figures["tracemalloc_idle_top"] = [
                    f"{t.size / 1024:8.1f} KiB {t.count:7d} blocks  "
                    f"{t.traceback[0].filename.replace(str(ROOT) + '/', '')}"
                    for t in snap.statistics("filename")[: args.top]
                ]
            figures["packages_loaded"] = sorted({m.split(".")[0] for m in modules})
            figures["modules"] = modules
            return figures

        week = Week(args, agent, clock, broker, keypads, readers, baseline.pid)
        began = time.monotonic()
        try:
            await week.run(start)
        finally:
            stop.set()
            viewers.cancel()
            with contextlib.suppress(BaseException):
                await viewers
            await week.http.aclose()
        elapsed = time.monotonic() - began
        async with httpx.AsyncClient(headers=agent.ops, timeout=10) as client:
            status = (await client.get(f"{agent.url}/api/v1/status")).json()
        figures = summarise(week, idle, idle_base, idle_vm, elapsed)
        figures["central"] = {
            "events_received": central.received,
            "acks_sent": central.acks_sent,
            "last_acked_seq": central.acked[1],
            "outbox_depth_at_end": status.get("outbox_depth"),
            "link": status.get("central"),
        }
        figures["printed_tickets"] = len(printer.tickets)
        # Where the growth is, by mapping: idle -> end of day 1, end of day 1 -> the end.
        figures["growth_by_mapping_mb"] = {
            "idle_to_day1": mapping_growth(idle_maps, week.maps[0], 12),
            "day1_to_end": mapping_growth(week.maps[0], week.maps[-1], 12),
        }
        figures["idle_by_mapping_mb"] = {
            k: round(v / 1024, 2) for k, v in sorted(idle_maps.items(), key=lambda kv: -kv[1])[:15]
        }
        if args.tracemalloc:
            figures["tracemalloc_top"] = tracemalloc_diff(storage, args.top)
        elif args.object_counts:
            figures["object_growth_top"] = object_growth(storage, args.top)
        log = (work / "agent.log").read_text(encoding="utf-8", errors="replace")
        figures["agent_log_lines"] = log.count("\n")
        figures["agent_log_errors"] = log.count(" ERROR ")
        return figures


@dataclasses.dataclass
class _AgentOnly:
    """What ``Week.snapshot`` needs, without a week."""

    agent: AgentProcess


def idle_figures(
    idle: list[int], idle_base: list[int], idle_vm: dict[str, int], idle_maps: dict[str, int]
) -> dict[str, Any]:
    """``--idle-only``: the idle phase's figures, no week."""
    mb = 1024.0
    idle_mb = median(idle) / mb
    return {
        "idle_rss_mb": idle_mb,
        "idle_rss_mb_samples": [round(v / mb, 2) for v in idle],
        "idle_anon_mb": idle_vm["RssAnon"] / mb,
        "idle_file_mb": idle_vm.get("RssFile", 0) / mb,
        "baseline_rss_mb": median(idle_base) / mb,
        "idle_adds_to_baseline_mb": idle_mb - median(idle_base) / mb,
        "idle_by_mapping_mb": {
            k: round(v / mb, 2) for k, v in sorted(idle_maps.items(), key=lambda kv: -kv[1])[:20]
        },
        "target": {"idle_mb_max": TARGET_IDLE_MB, "idle_met": idle_mb <= TARGET_IDLE_MB},
    }


def summarise(
    week: Week, idle: list[int], idle_base: list[int], idle_vm: dict[str, int], elapsed: float
) -> dict[str, Any]:
    hourly = week.hourly
    mb = 1024.0
    days = sorted({h["day"] for h in hourly})
    end_of_day = {d: [h for h in hourly if h["day"] == d][-1] for d in days}
    first, last = end_of_day[days[0]], end_of_day[days[-1]]
    idle_mb = median(idle) / mb
    return {
        "idle_rss_mb": idle_mb,
        "idle_anon_mb": idle_vm["RssAnon"] / mb,
        "baseline_rss_mb": median(idle_base) / mb,
        "idle_adds_to_baseline_mb": idle_mb - median(idle_base) / mb,
        "end_of_day_rss_mb": {d: end_of_day[d]["rss_kb"] / mb for d in days},
        "end_of_day_anon_mb": {d: end_of_day[d]["anon_kb"] / mb for d in days},
        "peak_hourly_rss_mb": max(h["rss_kb"] for h in hourly) / mb,
        "growth_after_day1_mb": (last["rss_kb"] - first["rss_kb"]) / mb,
        "growth_anon_after_day1_mb": (last["anon_kb"] - first["anon_kb"]) / mb,
        "growth_from_idle_mb": last["rss_kb"] / mb - idle_mb,
        "end_baseline_rss_mb": last["baseline_rss_kb"] / mb,
        "counts": week.counts,
        "trim_probe_mb": [
            {"rss": round(b / mb, 2), "after_malloc_trim": round(a / mb, 2)} for b, a in week.trims
        ],
        "real_seconds": elapsed,
        "target": {
            "idle_mb_max": TARGET_IDLE_MB,
            "growth_mb_max": TARGET_GROWTH_MB,
            "idle_met": idle_mb <= TARGET_IDLE_MB,
            "growth_met": (last["rss_kb"] - first["rss_kb"]) / mb <= TARGET_GROWTH_MB,
        },
        "hourly": [
            {
                "sim": h["sim"],
                "rss_mb": round(h["rss_kb"] / mb, 2),
                "anon_mb": round(h["anon_kb"] / mb, 2),
                "baseline_mb": round(h["baseline_rss_kb"] / mb, 2),
                "threads": h["threads"],
            }
            for h in hourly
        ],
    }


def tracemalloc_diff(storage: Path, top: int) -> list[str]:
    early = tracemalloc.Snapshot.load(str(storage / "tracemalloc-1.snap"))
    late = tracemalloc.Snapshot.load(str(storage / "tracemalloc-2.snap"))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    early, late = early.filter_traces(ignore), late.filter_traces(ignore)
    lines = []
    for stat in late.compare_to(early, "traceback")[:top]:
        frames = [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}" for f in stat.traceback]
        ours = [f for f in frames if "/site-packages/" not in f and "/lib/python" not in f]
        where = " <- ".join((ours or frames)[-4:][::-1])
        lines.append(f"{stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks  {where}")
    return lines


def object_growth(storage: Path, top: int) -> list[str]:
    early = json.loads((storage / "objects-1.json").read_text(encoding="utf-8"))
    late = json.loads((storage / "objects-2.json").read_text(encoding="utf-8"))
    grown = sorted(((n - early.get(t, 0), t) for t, n in late.items()), reverse=True)
    return [f"{d:+8d}  {t} (now {late[t]})" for d, t in grown[:top] if d > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="simulated days (7)")
    parser.add_argument("--citizens", type=int, default=300, help="citizens a day (300)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before idle")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle sampling (10)")
    parser.add_argument(
        "--idle-hour-s", type=float, default=0.2, help="real seconds of a closed hour (0.2)"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="what grows, not RSS")
    parser.add_argument(
        "--object-counts",
        action="store_true",
        help="objects by type at the end of day 1 and of the last day (cheap)",
    )
    parser.add_argument(
        "--trim-probe",
        action="store_true",
        help="at each day's end, RSS before/after the agent's malloc_trim (changes later RSS)",
    )
    parser.add_argument("--top", type=int, default=30, help="tracemalloc lines (30)")
    parser.add_argument(
        "--idle-only",
        action="store_true",
        help="stop after the idle phase (idle RSS with every device kind, ~1 minute)",
    )
    args = parser.parse_args(argv)

    with scratch_dir("soak-") as work:
        figures = asyncio.run(soak(args, work))

    parameters = {
        "days": args.days,
        "citizens_per_day": args.citizens,
        "config": "config/example.yaml, devices on the demo's emulators (see the docstring)",
        "central": f"{broker_version()}, acks once a second, away Wed 10:00 - Thu 11:00",
        "settle_s": args.settle,
        "idle_sampling_s": args.idle_seconds,
        "tracemalloc": args.tracemalloc,
        "baseline": "python -c 'import agent.daemon' (sleeping)",
    }
    if args.idle_only:
        parameters["days"] = 0
        path = write_results(
            NAME + ("_idle_tracemalloc" if args.tracemalloc else "_idle"), parameters, figures
        )
        f = figures
        print(
            f"idle, every device kind: {f['idle_rss_mb']:.1f} MB RSS (anonymous "
            f"{f['idle_anon_mb']:.1f}, files {f['idle_file_mb']:.1f}); baseline "
            f"(import agent.daemon) {f['baseline_rss_mb']:.1f} MB; target <= "
            f"{TARGET_IDLE_MB:.0f} MB {'met' if f['target']['idle_met'] else 'NOT met'}"
        )
        for key, value in f["idle_by_mapping_mb"].items():
            print(f"  {value:6.2f} MB  {key}")
        if args.tracemalloc:
            print(f"tracemalloc at idle: {f['tracemalloc_idle_total_mb']:.1f} MB, by file:")
            for line in f["tracemalloc_idle_top"]:
                print("  " + line)
        print(f"results: {path}")
        return 0
    path = write_results(NAME + ("_tracemalloc" if args.tracemalloc else ""), parameters, figures)
    f = figures
    print(
        f"hall-agent over {args.days} simulated days, {args.citizens} citizens a day, "
        f"{f['real_seconds']:.0f} s real time; {f['counts']}"
    )
    rows = [["idle (every device kind)", f["idle_rss_mb"], f["baseline_rss_mb"]]]
    for day, value in f["end_of_day_rss_mb"].items():
        rows.append([f"end of day {day + 1}", value, f["end_baseline_rss_mb"]])
    print_table(["moment", "agent RSS MB", "baseline MB (import agent.daemon)"], rows)
    t = f["target"]
    print(
        f"target idle <= {TARGET_IDLE_MB:.0f} MB: {f['idle_rss_mb']:.1f} MB "
        f"({'met' if t['idle_met'] else 'NOT met'}); growth <= {TARGET_GROWTH_MB:.0f} MB: "
        f"{f['growth_after_day1_mb']:+.1f} MB from the end of day 1 to the end of the week "
        f"({'met' if t['growth_met'] else 'NOT met'}), {f['growth_from_idle_mb']:+.1f} MB "
        f"from idle; peak hourly {f['peak_hourly_rss_mb']:.1f} MB"
    )
    print(f"central: {f['central']}")
    for span, rows_ in f["growth_by_mapping_mb"].items():
        print(f"RSS growth by mapping, {span.replace('_', ' ')}:")
        for key, grown in rows_:
            print(f"  {grown:+6.2f} MB  {key}")
    if args.trim_probe:
        print(f"end of each day, RSS before -> after malloc_trim(0): {f['trim_probe_mb']}")
    if args.tracemalloc:
        print("tracemalloc, end of day 1 -> end of the last day, largest growth first:")
        for line in f["tracemalloc_top"]:
            print("  " + line)
    elif args.object_counts:
        print("objects tracked by the collector, end of day 1 -> end of the last day:")
        for line in f["object_growth_top"]:
            print("  " + line)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
