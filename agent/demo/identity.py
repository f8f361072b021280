"""The demo's ID card readers and document camera: virtual readers on the configured TCP
ports (127.0.0.1:9203 kiosk, 9204 window 1), simulated citizens who swipe their cards, and
a console to swipe a card or capture a document by hand::

    swipe kiosk resident-elderly social     a card at the kiosk, then the service picked
    swipe w1 hk-resident                    a card at window 1's reader (identity.read)
    swipe w1 staff                          a staff card: signs in when in the roster
    capture w1 2                            two pages from window 1's camera
    cards                                   the fixture cards
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import AsyncIterator

from agent.config import HallAgentConfig, IdReaderDevice, NetworkTransport
from agent.core.errors import QueueError
from agent.daemon import Running
from agent.demo.emulators.idreader import FIXTURE_CARDS, VirtualIdReader
from agent.runtime.hall import ShuttingDown

log = logging.getLogger("agent.demo.simulated_hall")

# How long a simulated citizen leaves the card on the reader.
_HOLD_S = 1.5


@contextlib.asynccontextmanager
async def virtual_id_readers(config: HallAgentConfig) -> AsyncIterator[dict[str, VirtualIdReader]]:
    """A virtual reader on every network ID reader of the config, by device id."""
    readers: dict[str, VirtualIdReader] = {}
    async with contextlib.AsyncExitStack() as stack:
        for device in config.devices:
            if not isinstance(device, IdReaderDevice) or not isinstance(
                device.transport, NetworkTransport
            ):
                continue
            reader = await stack.enter_async_context(VirtualIdReader())
            try:
                await reader.start_tcp(device.transport.host, device.transport.port)
            except OSError as err:
                log.warning(
                    "the virtual ID reader cannot listen on %s:%d (%s)",
                    device.transport.host,
                    device.transport.port,
                    err.strerror,
                )
                continue
            readers[device.id] = reader
        yield readers


def _reader_for(config: HallAgentConfig, where: str, readers: dict[str, VirtualIdReader]) -> str:
    """``kiosk``, a window id or a device id → the reader's device id."""
    if where in readers:
        return where
    owned = {d: w.id for w in config.windows for d in w.devices}
    for device in readers:
        owner = owned.get(device)
        if (where == "kiosk" and owner is None) or owner == where:
            return device
    raise KeyError(where)


async def swipe(
    running: Running,
    readers: dict[str, VirtualIdReader],
    where: str,
    card: str,
    service: str | None = None,
) -> str:
    """Place a fixture card, let the hall handle it, take it away; what happened (masked)."""
    desk = running.identity
    if desk is None:
        return "no ID card reader is running"
    device = _reader_for(running.hall.config, where, readers)
    before = desk.last.get(device)
    readers[device].place(card)
    try:
        try:
            await desk.wait_for(lambda: desk.last.get(device) is not before, 5.0)
        except TimeoutError:
            return (
                f"{device}: no reaction (the same card again within a few seconds is taken "
                "for the same swipe; wait a moment)"
            )
        if desk.last[device].outcome == "waiting_for_service":
            services = [s.id for s in running.hall.config.services]
            picked = service or random.choice(services)  # noqa: S311 - a simulation
            with contextlib.suppress(QueueError):
                await desk.take_held(picked)
        await asyncio.sleep(_HOLD_S)
    finally:
        readers[device].remove()
    last = desk.last[device]
    return f"{device}: {last.outcome}: {last.message}"


async def citizens_with_cards(running: Running, readers: dict[str, VirtualIdReader]) -> None:
    """Now and then a citizen swipes a card at the kiosk; at window 1 one hands it over."""
    rng = random.Random()  # noqa: S311 - a simulation, not a secret
    citizens = [k for k in FIXTURE_CARDS if k != "staff"]
    while True:
        await asyncio.sleep(rng.uniform(12, 25))
        where = "kiosk" if rng.random() < 0.7 else "w1"
        try:
            log.info(
                "simulated swipe: %s", await swipe(running, readers, where, rng.choice(citizens))
            )
            if where == "w1" and running.documents is not None and rng.random() < 0.5:
                result = await running.documents.capture("w1", rng.randint(1, 2))
                log.info("window w1 captured document %s", result["document"])
        except (KeyError, TimeoutError, QueueError, ShuttingDown) as err:
            log.info("simulated swipe at %s: %s", where, err)


async def console(running: Running, readers: dict[str, VirtualIdReader]) -> None:
    """Commands typed in the demo's terminal (see the module docstring)."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        words = line.split()
        try:
            match words:
                case ["swipe", where, card] | ["swipe", where, card, _]:
                    if card not in FIXTURE_CARDS:
                        print(f"  cards: {', '.join(FIXTURE_CARDS)}", flush=True)
                        continue
                    service = words[3] if len(words) == 4 else None
                    print("  " + await swipe(running, readers, where, card, service), flush=True)
                case ["capture", window, *pages] if running.documents is not None:
                    count = int(pages[0]) if pages else 1
                    result = await running.documents.capture(window, count)
                    print(f"  captured {result['document']}: {len(result['pages'])} page(s)")
                case ["cards"]:
                    print(f"  cards: {', '.join(FIXTURE_CARDS)}", flush=True)
                case []:
                    continue
                case _:
                    print(
                        "  commands: swipe kiosk|WINDOW CARD [SERVICE], capture WINDOW [PAGES], "
                        "cards",
                        flush=True,
                    )
        except (KeyError, ValueError, TimeoutError, QueueError) as err:
            print(f"  {err}", flush=True)


def explain(running: Running, readers: dict[str, VirtualIdReader]) -> None:
    if not readers:
        return
    lines = [
        "  ID cards: virtual readers on "
        + ", ".join(f"{d}" for d in readers)
        + "; type in this terminal, e.g.:",
        "    swipe kiosk resident-elderly social   (a ticket, green channel by age)",
        "    swipe w1 hk-resident                  (identity.read for window 1)",
        "    capture w1 2                          (two pages from window 1's camera)",
        f"  Kiosk card state: {running.url}/api/v1/identity/kiosk",
        f"  Documents waiting for central: {running.url}/api/v1/documents",
        "  (both with the ops token, as the curl line above shows)",
        "",
    ]
    print("\n".join(lines), flush=True)
