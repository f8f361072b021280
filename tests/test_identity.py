"""ID cards at the kiosk and at a window, through the real driver and the virtual reader
on TCP, against a real SQLite store; and what personal data leaves traces where."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.central import contract as c
from agent.config import HallAgentConfig, IdReaderDevice
from agent.core.engine import Outcome, QueueEngine
from agent.core.errors import Refused
from agent.core.operations import CallNext, SignIn, Take
from agent.demo.emulators.idreader import FIXTURE_CARDS, VirtualIdReader
from agent.features._targets import line_target
from agent.features.identity import IdentityDesk, erase_personal_data
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.personal import PersonalDataError, Vault, read_key_file, unseal_event
from agent.runtime.store import DB_NAME, Store
from drivers.idreader import Gat467Watcher, PollSettings, ReaderHealth

pytestmark = pytest.mark.timeout(30)

FAST = PollSettings(poll_interval_s=0.01, debounce_s=0.0)
RESIDENT = FIXTURE_CARDS["resident"].card
ELDERLY = FIXTURE_CARDS["resident-elderly"].card
STAFF = FIXTURE_CARDS["staff"].card


def fast_reader(device: IdReaderDevice, on_health: Callable[[ReaderHealth], None]):
    return Gat467Watcher(line_target(device.transport), FAST, on_health=on_health)


class Rig:
    """A hall with a kiosk reader and a window reader, each an emulator on TCP."""

    def __init__(
        self,
        hall: Hall,
        desk: IdentityDesk,
        kiosk: VirtualIdReader,
        window: VirtualIdReader,
        state: Path,
    ) -> None:
        self.hall, self.desk, self.kiosk, self.window, self.state = hall, desk, kiosk, window, state

    async def swipe(self, reader: VirtualIdReader, card: str, device: str) -> dict[str, Any]:
        """Place a card, wait until the desk handled it, take the card away again."""
        before = self.desk.last.get(device)
        reader.place(card)
        await self.desk.wait_for(lambda: self.desk.last.get(device) is not before, 5)
        reader.remove()
        watcher = self.desk.readers[device]
        assert isinstance(watcher, Gat467Watcher)
        polls = watcher.polls
        await until(lambda: watcher.polls > polls + FAST.removal_polls)
        return dataclasses.asdict(self.desk.last[device])

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.state / DB_NAME)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [
            {"seq": seq, **json.loads(data)}
            for seq, data in self.rows(f"SELECT seq, data FROM events WHERE type = '{kind}'")
        ]


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - driver state without an event
            await asyncio.sleep(0.005)


@pytest.fixture
async def rig(
    make_config: Callable[..., HallAgentConfig], tmp_path: Path, clock
) -> AsyncIterator[Rig]:
    async with VirtualIdReader() as kiosk, VirtualIdReader() as window:
        kiosk_port = await kiosk.start_tcp()
        window_port = await window.start_tcp()
        config = make_config(
            devices=[
                {
                    "id": "idr-kiosk",
                    "kind": "id_reader",
                    "transport": {"type": "network", "host": "127.0.0.1", "port": kiosk_port},
                    "service": "social",
                },
                {
                    "id": "idr-w1",
                    "kind": "id_reader",
                    "transport": {"type": "network", "host": "127.0.0.1", "port": window_port},
                },
            ],
            windows=[
                {
                    "id": "w1",
                    "name": "1号窗口",
                    "number": 1,
                    "services": ["general", "social"],
                    "devices": ["idr-w1"],
                },
                {"id": "w2", "name": "2号窗口", "number": 2, "services": ["social", "general"]},
                {"id": "w3", "name": "3号窗口", "number": 3, "services": ["fund"]},
            ],
            personal_data={"key_file": str(tmp_path / "keys" / "personal.key")},
        )
        state = tmp_path / "state"
        store = Store.open(state)
        try:
            async with (
                Hall(config, store, clock=clock) as hall,
                IdentityDesk(hall, DeviceBoard(config), reader_factory=fast_reader) as desk,
            ):
                await until(lambda: all(r.health.ok for r in desk.readers.values()))
                yield Rig(hall, desk, kiosk, window, state)
        finally:
            store.close()


async def test_a_card_at_the_kiosk_takes_a_ticket_once_per_service(rig: Rig) -> None:
    first = await rig.swipe(rig.kiosk, "resident", "idr-kiosk")
    assert first["outcome"] == "ticket"
    assert first["ticket"] == "B001"
    second = await rig.swipe(rig.kiosk, "resident", "idr-kiosk")
    assert second["outcome"] == "refused"
    assert "already holds ticket B001" in second["message"]
    issued = rig.events("ticket.issued")
    assert [e["ticket"] for e in issued] == ["B001"]
    assert issued[0]["source"] == "id_card"
    assert issued[0]["priority"] == "normal"
    (identity,) = rig.events("identity.read")
    assert identity["seq"] == issued[0]["seq"] + 1  # one transaction with the ticket
    assert identity["flow"] == "kiosk"
    assert identity["form"] == "hash"
    assert identity["ticket"] == "B001"
    assert "person" not in identity
    assert identity["id_hash"] == rig.desk.vault.id_hash(RESIDENT.id_number)
    # The ticket row keeps the keyed hash (the rule needs it), not the number.
    (ticket,) = rig.rows("SELECT data FROM tickets")
    assert json.loads(ticket[0])["id_hash"] == identity["id_hash"]


async def test_an_elderly_card_gets_the_green_channel(rig: Rig) -> None:
    last = await rig.swipe(rig.kiosk, "resident-elderly", "idr-kiosk")
    assert last["outcome"] == "ticket"
    (issued,) = rig.events("ticket.issued")
    assert issued["priority"] == "elderly"
    assert ELDERLY.age_on(dt.date(2026, 3, 2)) >= 65


async def test_the_kiosk_page_picks_the_service_for_a_held_card(rig: Rig) -> None:
    device = rig.hall.config.device("idr-kiosk")
    assert isinstance(device, IdReaderDevice)
    object.__setattr__(device, "service", None)  # a kiosk whose page asks
    last = await rig.swipe(rig.kiosk, "hk-resident", "idr-kiosk")
    assert last["outcome"] == "waiting_for_service"
    state = rig.desk.kiosk_state()
    assert state["card"]["name"] == "陈**"
    outcome = await rig.desk.take_held("fund")
    assert outcome.result["ticket"]["number"] == "C01"
    assert rig.desk.kiosk_state()["card"] is None
    with pytest.raises(Refused, match="no ID card is waiting"):
        await rig.desk.take_held("fund")


async def test_an_appointment_decides_service_and_priority(rig: Rig) -> None:
    device = rig.hall.config.device("idr-kiosk")
    object.__setattr__(device, "service", None)
    digest = hashlib.sha256(RESIDENT.id_number.encode()).hexdigest()
    command = c.SetAppointments(
        cmd_id="appt-1",
        appointments=[
            c.Appointment(
                appointment_id="YY-2026-0001",
                id_sha256=digest,
                service="general",
                day=dt.date(2026, 3, 2),
            ),
            c.Appointment(
                appointment_id="YY-2026-0002",
                id_sha256="0" * 64,
                service="fund",
                day=dt.date(2026, 3, 2),
            ),
        ],
    )
    answer = await rig.desk.set_appointments_command(command)
    assert answer == {"appointments": 2, "days": ["2026-03-02"]}
    assert rig.events("appointments.set")[0]["count"] == 2
    last = await rig.swipe(rig.kiosk, "resident", "idr-kiosk")
    assert last["ticket"] == "A001"
    (issued,) = rig.events("ticket.issued")
    assert issued["priority"] == "appointment"
    (identity,) = rig.events("identity.read")
    assert identity["appointment"] == "YY-2026-0001"


async def test_a_card_at_a_window_is_sent_in_full_sealed_at_rest(rig: Rig) -> None:
    await rig.hall.execute(SignIn(window="w1", staff="0012"))
    await rig.hall.execute(Take(service="social"))
    await rig.hall.execute(CallNext(window="w1"))
    last = await rig.swipe(rig.window, "resident-elderly", "idr-w1")
    assert last["outcome"] == "identity"
    (identity,) = rig.events("identity.read")
    assert identity["flow"] == "window"
    assert identity["window"] == "w1"
    assert identity["ticket"] == "B001"
    assert identity["staff"] == "0012"
    assert set(identity["person"]) == {"sealed", "key"}
    envelope = {"type": "identity.read", "seq": identity["seq"], "data": identity}
    sent = unseal_event(rig.desk.vault, envelope)["data"]["person"]
    assert sent["id_number"] == ELDERLY.id_number
    assert sent["name"] == "李秀英"
    assert sent["valid_to"] == "长期"
    assert sent["additional_address"] == "北京市海淀区海淀路80号3单元502"
    assert len(sent["photo_wlt"]) == 1368  # 1024 bytes of WLT, base64


async def test_staff_cards_sign_in_through_the_hook(rig: Rig) -> None:
    calls: list[tuple[str, str]] = []

    async def sign_in(hall: Hall, window: str, id_number: str) -> Outcome | None:
        calls.append((window, id_number))
        if id_number != STAFF.id_number:
            return None
        outcome: Outcome = await hall.execute(SignIn(window=window, staff="0007"))
        return outcome

    rig.desk.staff_sign_in = sign_in
    last = await rig.swipe(rig.window, "staff", "idr-w1")
    assert last["outcome"] == "staff"
    assert "0007" in last["message"]
    snapshot = await rig.hall.read(lambda e, n: e.windows["w1"].staff)
    assert snapshot == "0007"
    assert rig.events("identity.read") == []
    citizen = await rig.swipe(rig.window, "resident", "idr-w1")
    assert citizen["outcome"] == "identity"
    assert [w for w, _ in calls] == ["w1", "w1"]


async def test_no_personal_data_in_the_database_file_or_the_logs(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for card in ("resident", "resident-elderly", "foreigner-2023"):
        await rig.swipe(rig.kiosk, card, "idr-kiosk")
        await rig.swipe(rig.window, card, "idr-w1")
    assert len(rig.events("identity.read")) == 6
    secrets = []
    for key in ("resident", "resident-elderly", "foreigner-2023"):
        card = FIXTURE_CARDS[key].card
        secrets += [card.id_number, card.name, card.address, card.name_en]
    secrets = [s for s in secrets if s]
    files = [p for p in rig.state.iterdir() if p.name.startswith(DB_NAME)]
    assert files
    for path in files:
        raw = path.read_bytes()
        for secret in secrets:
            for encoding in ("utf-8", "utf-16-le"):
                assert secret.encode(encoding) not in raw, (path.name, encoding)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ID card read at the kiosk" in text
    for secret in secrets:
        assert secret not in text
    assert "110101********1233" in text  # masked: region and last four


async def test_personal_data_is_erased_once_acknowledged(rig: Rig) -> None:
    await rig.swipe(rig.window, "resident", "idr-w1")
    (identity,) = rig.events("identity.read")
    assert await erase_personal_data(rig.hall) == 0  # not acknowledged yet
    await rig.hall.store_call(lambda s: s.mark_acked(s.epoch, identity["seq"]))
    assert await erase_personal_data(rig.hall) == 1
    (erased,) = rig.events("identity.read")
    assert erased["person"] == {"erased": "acknowledged by central"}
    assert erased["id_hash"] == identity["id_hash"]
    assert erased["window"] == "w1"
    envelope = {"type": "identity.read", "seq": 1, "data": erased}
    assert unseal_event(rig.desk.vault, envelope) == envelope


async def test_personal_data_older_than_the_limit_is_erased_unacknowledged(rig: Rig, clock) -> None:
    await rig.swipe(rig.window, "resident", "idr-w1")
    clock.advance(hours=73)
    assert await erase_personal_data(rig.hall) == 1
    (erased,) = rig.events("identity.read")
    assert "72 hours" in erased["person"]["erased"]


def test_key_file_is_created_private_and_checked(tmp_path: Path) -> None:
    key = tmp_path / "k" / "personal.key"
    vault = Vault.from_files(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    again = Vault.from_files(key)
    assert again.unseal(vault.seal({"a": "王"})) == {"a": "王"}
    assert again.id_hash("11010119900307123x") == vault.id_hash("11010119900307123X")
    os.chmod(key, 0o644)
    with pytest.raises(PersonalDataError, match="chmod 600"):
        read_key_file(key)
    other = tmp_path / "other.key"
    Vault.from_files(other)
    with pytest.raises(PersonalDataError, match="key file replaced"):
        Vault.from_files(other).unseal(vault.seal({"a": 1}))
    shared = tmp_path / "district.key"
    shared.write_bytes(b"s" * 32)
    shared.chmod(0o600)
    one, two = Vault.from_files(key.with_name("a.key"), shared), Vault.from_files(other, shared)
    assert one.id_hash("X1") == two.id_hash("X1")


async def test_without_a_usable_key_the_readers_are_not_started(
    make_config: Callable[..., HallAgentConfig], tmp_path: Path, clock
) -> None:
    key = tmp_path / "bad.key"
    key.write_bytes(b"x" * 32)
    key.chmod(0o644)
    config = make_config(
        devices=[
            {
                "id": "idr",
                "kind": "id_reader",
                "transport": {"type": "network", "host": "127.0.0.1", "port": 9},
            }
        ],
        personal_data={"key_file": str(key)},
    )
    store = Store.open(tmp_path / "state")
    try:
        async with (
            Hall(config, store, clock=clock) as hall,
            IdentityDesk(hall, DeviceBoard(config)) as desk,
        ):
            assert desk.readers == {}
            assert "chmod 600" in str(desk.problem)
            with pytest.raises(Refused, match="cannot be used"):
                await desk.take_held("social")
    finally:
        store.close()


def test_engine_rule_message_is_for_people(config: HallAgentConfig, clock) -> None:
    engine = QueueEngine.fresh(config, clock())
    engine.take("social", clock(), id_hash="h")
    with pytest.raises(Refused, match="this ID card already holds ticket B001 for 社保医保"):
        engine.take("social", clock(), id_hash="h")
