"""A virtual GA/T 467 ID card reader on TCP and on a pty, with fixture cards and faults.

It speaks the real frames (:mod:`protocols.gat467`): find, select, read text + photo (and
fingerprint), read additional address, SAM reset/status/id. A test or a person places a
fixture card on it, takes it away, and injects faults: a read failure, answers with a bad
checksum, line noise before every answer, a hung reader, a failed security module, a card
that fails authentication, and readers that stop finding a card once it was read (as
many real ones do, until the card leaves the field).

The fixture cards are fictional people; their ID numbers carry valid check digits.

Run on its own::

    python -m agent.demo.emulators.idreader --port 9203 [--pty]

then type ``place NAME`` (``list`` shows the names), ``remove``, ``fail-read``,
``corrupt``, ``mute``, ``unmute`` or ``status``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from agent.demo.emulators._serving import Ports, Write, run_standalone, standalone_parser
from protocols.gat467 import (
    CardData,
    Command,
    Direction,
    FrameParser,
    Request,
    Status,
    encode_card_data,
    encode_response,
    encode_sam_id,
)
from protocols.idcard import CardType, IdCard, check_digit, encode_text

log = logging.getLogger(__name__)


def _id_number(first17: str) -> str:
    return first17 + check_digit(first17)


def _photo(seed: str) -> bytes:
    """1024 bytes standing in for a WLT photo (the real format is licensed)."""
    out = b"WLT-FIXTURE:" + seed.encode()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < 1024:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:1024]


@dataclasses.dataclass(frozen=True, slots=True)
class FixtureCard:
    """A card the virtual reader can hold."""

    key: str
    card: IdCard
    photo: bytes
    fingerprint: bytes | None = None
    additional_address: str | None = None

    def data(self, *, fingerprint: bool) -> CardData:
        finger = None
        if fingerprint:
            finger = self.fingerprint or b""
        return CardData(encode_text(self.card), self.photo, finger)


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


FIXTURE_CARDS: dict[str, FixtureCard] = {
    c.key: c
    for c in (
        FixtureCard(
            "resident",
            IdCard(
                card_type=CardType.RESIDENT,
                name="王小明",
                gender_code="1",
                nation_code="01",
                birth_date=_d("1990-03-07"),
                address="北京市东城区景山前街4号院2号楼301室",
                id_number=_id_number("11010119900307123"),
                authority="北京市公安局东城分局",
                valid_from=_d("2015-06-01"),
                valid_to=_d("2035-06-01"),
            ),
            _photo("resident"),
            fingerprint=hashlib.sha512(b"fp-resident").digest() * 16,
        ),
        FixtureCard(
            "resident-elderly",
            IdCard(
                card_type=CardType.RESIDENT,
                name="李秀英",
                gender_code="2",
                nation_code="01",
                birth_date=_d("1950-05-12"),
                address="北京市海淀区中关村大街27号",
                id_number=_id_number("11010819500512246"),
                authority="北京市公安局海淀分局",
                valid_from=_d("2010-01-15"),
                valid_to=None,
            ),
            _photo("resident-elderly"),
            additional_address="北京市海淀区海淀路80号3单元502",
        ),
        FixtureCard(
            "resident-minority",
            IdCard(
                card_type=CardType.RESIDENT,
                name="阿依古丽·买买提",
                gender_code="2",
                nation_code="05",
                birth_date=_d("1988-11-30"),
                address="新疆乌鲁木齐市天山区解放南路100号",
                id_number=_id_number("65010219881130004"),
                authority="乌鲁木齐市公安局天山区分局",
                valid_from=_d("2018-02-01"),
                valid_to=_d("2038-02-01"),
            ),
            _photo("resident-minority"),
        ),
        FixtureCard(
            "staff",
            IdCard(
                card_type=CardType.RESIDENT,
                name="赵文静",
                gender_code="2",
                nation_code="11",
                birth_date=_d("1985-09-21"),
                address="北京市西城区金融大街9号",
                id_number=_id_number("11010219850921314"),
                authority="北京市公安局西城分局",
                valid_from=_d("2016-04-01"),
                valid_to=_d("2036-04-01"),
            ),
            _photo("staff"),
        ),
        FixtureCard(
            "foreigner",
            IdCard(
                card_type=CardType.FOREIGNER,
                name="史密斯",
                name_en="SMITH, JOHN ALEXANDER",
                gender_code="1",
                birth_date=_d("1975-07-04"),
                id_number="USA110075070412",
                nationality="USA",
                valid_from=_d("2019-08-01"),
                valid_to=_d("2029-08-01"),
                card_version="02",
                authority="1100",
            ),
            _photo("foreigner"),
        ),
        FixtureCard(
            "foreigner-2023",
            IdCard(
                card_type=CardType.FOREIGNER_2023,
                name="玛丽亚",
                name_en="GARCIA LOPEZ, MARIA DE LOS ANGELES CARMEN",
                gender_code="2",
                renewal_count="00",
                birth_date=_d("1992-02-29"),
                id_number=_id_number("93372419920229001"),
                nationality="ESP",
                valid_from=_d("2024-01-10"),
                valid_to=_d("2034-01-10"),
            ),
            _photo("foreigner-2023"),
        ),
        FixtureCard(
            "hk-resident",
            IdCard(
                card_type=CardType.HMT_RESIDENT,
                name="陈大文",
                gender_code="1",
                birth_date=_d("1968-12-01"),
                address="广东省深圳市福田区福华一路88号",
                id_number=_id_number("81000019681201123"),
                authority="深圳市公安局福田分局",
                valid_from=_d("2021-03-15"),
                valid_to=_d("2026-03-15"),
                pass_number="H12345678",  # noqa: S106 - a permit number, not a password
                issue_count="01",
            ),
            _photo("hk-resident"),
        ),
    )
}

SAM_ID = encode_sam_id(5, 1, 20101030, 123456, 1234567890)


@dataclasses.dataclass(slots=True)
class Faults:
    """What goes wrong on the virtual reader; counters count down as answers go out."""

    fail_reads: int = 0  # the next N reads answer 41 (read failed)
    corrupt: int = 0  # the next N answers carry a bad checksum
    garbage: bytes = b""  # sent before every answer (line noise)
    mute: bool = False  # no answers at all (a hung reader)
    sam_fault: bool = False  # SAM status answers 60 (self-test failed)
    reject_card: bool = False  # reads answer 31 (the card does not accept the SAM)
    halt_after_read: bool = False  # find fails for a card once read, until it is re-placed


class VirtualIdReader:
    """The emulator; ``async with`` closes its ports."""

    def __init__(self) -> None:
        self.card: FixtureCard | None = None
        self.faults = Faults()
        self._selected = False
        self._halted = False
        self._ports = Ports(self._client)
        self._handlers: set[asyncio.Task[None]] = set()
        self._link: Path | None = None
        self.requests: list[Command | None] = []
        self.reads = 0
        self.bad_requests = 0
        self._changed = asyncio.Event()

    async def __aenter__(self) -> VirtualIdReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_tcp()
        self.unplug()

    # -- the card --------------------------------------------------------------------------

    def place(self, card: FixtureCard | str) -> None:
        self.card = FIXTURE_CARDS[card] if isinstance(card, str) else card
        self._selected = False
        self._halted = False

    def remove(self) -> None:
        self.card = None
        self._selected = False
        self._halted = False

    # -- transports ------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self._ports.start_tcp(host, port)

    async def stop_tcp(self) -> None:
        """Switch the reader off: close the port, end every connection."""
        self._ports.close_tcp()
        # A connection's handler may still wait for data that will never come (a host that
        # vanished without closing): end it rather than wait for it.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._ports.wait_tcp_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if not self._ports.servers or task is None:  # switched off meanwhile
            writer.close()
            return
        self._handlers.add(task)
        self._ports.writers.add(writer)
        parser = FrameParser(Direction.REQUEST)
        try:
            while data := await reader.read(4096):
                self.receive(parser, data, writer.write)
        except ConnectionError:
            pass
        finally:
            self._ports.writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    def plug(self, link: Path | None = None) -> str:
        """Plug in a serial reader: a new pty; ``link`` (a stable name like
        /dev/serial/by-id/…) is pointed at it. Returns the path to open."""
        self.unplug()

        def serve(write: Write) -> Callable[[bytes], None]:
            parser = FrameParser(Direction.REQUEST)

            def send(data: bytes) -> None:
                with contextlib.suppress(OSError):
                    write(data)

            return lambda data: self.receive(parser, data, send)

        path = self._ports.open_pty(serve)
        if link is not None:
            tmp = link.with_name(link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(path)
            tmp.replace(link)
            self._link = link
            return str(link)
        return path

    def unplug(self) -> None:
        """Pull the USB cable: the pty goes away (and its stable name with it)."""
        if self._link is not None:
            self._link.unlink(missing_ok=True)
            self._link = None
        self._ports.close_pty()

    # -- the protocol ----------------------------------------------------------------------

    def receive(self, parser: FrameParser, data: bytes, send: Callable[[bytes], object]) -> None:
        for frame in parser.feed(data):
            if not isinstance(frame, Request):
                self.bad_requests += 1
                self._send(send, encode_response(Status.REQUEST_CHECKSUM))
                continue
            self.requests.append(frame.command)
            self._send(send, self.answer(frame))

    def _send(self, send: Callable[[bytes], object], frame: bytes) -> None:
        if self.faults.mute:
            return
        if self.faults.corrupt > 0:
            self.faults.corrupt -= 1
            frame = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
        send(self.faults.garbage + frame)

    def answer(self, request: Request) -> bytes:
        command = request.command
        faults = self.faults
        match command:
            case None:
                return encode_response(Status.COMMAND_ERROR)
            case Command.RESET_SAM:
                self._selected = False
                return encode_response(Status.SUCCESS)
            case Command.SAM_STATUS:
                return encode_response(Status.SELF_TEST if faults.sam_fault else Status.SUCCESS)
            case Command.READ_SAM_ID:
                return encode_response(Status.SUCCESS, SAM_ID)
            case Command.FIND_CARD:
                if self.card is None or (faults.halt_after_read and self._halted):
                    return encode_response(Status.NO_CARD)
                return encode_response(Status.FIND_OK, b"\x00\x00\x00\x00")
            case Command.SELECT_CARD:
                if self.card is None or (faults.halt_after_read and self._halted):
                    return encode_response(Status.SELECT_FAILED)
                self._selected = True
                return encode_response(Status.SUCCESS, bytes(8))
            case Command.READ_TEXT_PHOTO | Command.READ_TEXT_PHOTO_FINGERPRINT:
                return self._read(command is Command.READ_TEXT_PHOTO_FINGERPRINT)
            case Command.READ_ADDITIONAL_ADDRESS:
                if self.card is None or not self._selected:
                    return encode_response(Status.NOT_ALLOWED)
                extra = self.card.additional_address
                if extra is None:
                    return encode_response(Status.NO_SUCH_ITEM)
                return encode_response(Status.SUCCESS, _pad_ucs2(extra, 70))
        return encode_response(Status.COMMAND_ERROR)  # pragma: no cover - every command above

    def _read(self, fingerprint: bool) -> bytes:
        faults = self.faults
        if self.card is None or not self._selected:
            return encode_response(Status.NOT_ALLOWED)
        if faults.reject_card:
            return encode_response(Status.CARD_REJECTED_SAM)
        if faults.fail_reads > 0:
            faults.fail_reads -= 1
            return encode_response(Status.READ_FAILED)
        self.reads += 1
        self._halted = True
        return encode_response(
            Status.SUCCESS, encode_card_data(self.card.data(fingerprint=fingerprint))
        )


def _pad_ucs2(text: str, size: int) -> bytes:
    encoded = text.encode("utf-16-le")
    return encoded + " ".encode("utf-16-le") * ((size - len(encoded)) // 2)


# -- standalone -----------------------------------------------------------------------------


async def _console(reader: VirtualIdReader) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        words = line.split()
        if not words:
            continue
        match words:
            case ["place", name] if name in FIXTURE_CARDS:
                reader.place(name)
            case ["remove"]:
                reader.remove()
            case ["fail-read"]:
                reader.faults.fail_reads += 1
            case ["corrupt"]:
                reader.faults.corrupt += 1
            case ["mute"]:
                reader.faults.mute = True
            case ["unmute"]:
                reader.faults.mute = False
            case ["list"]:
                print(", ".join(FIXTURE_CARDS), flush=True)
                continue
            case ["status"]:
                pass
            case _:
                print(
                    "commands: place NAME, remove, fail-read, corrupt, mute, unmute, list, status",
                    flush=True,
                )
                continue
        card = reader.card.key if reader.card else "none"
        print(f"card: {card}; {reader.reads} reads; faults {reader.faults}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    async with VirtualIdReader() as reader:
        port = await reader.start_tcp(args.host, args.port)
        print(f"virtual ID card reader on {args.host}:{port}", flush=True)
        if args.pty:
            print(f"serial side: {reader.plug()}", flush=True)
        await _console(reader)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser(
        "A virtual GA/T 467 ID card reader.", 9203, "also plug in a pty (serial)"
    )
    return run_standalone(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
