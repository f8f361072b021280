"""Voice calling (语音叫号): one announcement at a time, in call order, never cut off.

A call becomes *tokens* — clip names — from a template per language (Mandarin by
default: ``请 A012 号 到 3 号窗口 办理``); the clip-pack engine turns tokens into one WAV
stream by concatenating recorded or generated clips (:mod:`agent.features.voice_pack` makes a
pack with espeak-ng's ``cmn-latn-pinyin`` voice; the clip format and WAV reading and
writing both use are in :mod:`agent.features.voice_clips`); a sink plays it (ALSA through
``aplay``) or writes it (a folder of WAV files, for tests and the demo).

Every announcement is made from the committed ``ticket.called`` / ``recalled`` /
``returned`` event that triggered it — its own number and window, never "the current
ticket" read later — and they are spoken by one worker in event order, each to its end
before the next starts. A call still waiting after ``max_delay_s`` (a long backlog) is
skipped with a log line rather than announced minutes late.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from agent.config import AlsaTransport, AnnouncerDevice, FileTransport, HallAgentConfig
from agent.core import events as ev
from agent.features.voice_clips import (
    EN_TENS,
    EN_UNITS,
    AudioFormat,
    Clip,
    VoiceError,
    read_wav,
    write_wav,
)
from agent.features.voice_pack import ensure_pack
from agent.runtime.devices import DeviceBoard
from agent.runtime.hall import Hall
from agent.runtime.store import StoredEvent
from agent.runtime.tasks import BackgroundTasks, stop
from drivers.audio import AplaySink, AudioError, AudioSink, FileSink

log = logging.getLogger(__name__)

CHIME = "chime"

DEFAULT_TEMPLATES: dict[str, str] = {
    "zh": "请 {ticket} 号 到 {window} 号窗口 办理",
    "en": "number {ticket} please-go-to-window {window}",
}
# Silence between clips of one sentence, between the sentences of one announcement, and
# after the chime, in seconds.
GAP_S = 0.06
# How many of the latest spoken and skipped announcements are kept (tests, status).
KEPT_RECENT = 64
SENTENCE_GAP_S = 0.7
CHIME_GAP_S = 0.3

_ZH_DIGITS = "0123456789"


# -- tokens ---------------------------------------------------------------------------------


def ticket_tokens(number: str, language: str) -> list[str]:
    """A ticket number read character by character: ``A012`` → A 0 1 2 (zero, one, two)."""
    out: list[str] = []
    for ch in number.upper():
        if ch.isascii() and ch.isalpha():
            out.append(ch)
        elif ch.isascii() and ch.isdigit():
            out.append(ch if language != "en" else EN_UNITS[int(ch)])
    return out


def zh_cardinal(n: int) -> list[str]:
    """Mandarin reading of 1-999 as clips: 3 → 3; 12 → 十 2; 20 → 2 十; 105 → 1 百 0 5."""
    if not 1 <= n <= 999:
        raise VoiceError(f"window number {n} cannot be read (1-999)")
    hundreds, rest = divmod(n, 100)
    tens, units = divmod(rest, 10)
    out: list[str] = []
    if hundreds:
        out += [str(hundreds), "百"]
        if rest == 0:
            return out
        if tens == 0:
            return [*out, "0", str(units)]
    if tens:
        if tens > 1 or hundreds:
            out.append(str(tens))
        out.append("十")
    if units:
        out.append(str(units))
    return out


def en_cardinal(n: int) -> list[str]:
    if not 1 <= n <= 999:
        raise VoiceError(f"window number {n} cannot be read (1-999)")
    hundreds, rest = divmod(n, 100)
    out: list[str] = []
    if hundreds:
        out += [EN_UNITS[hundreds], "hundred"]
    if rest >= 20:
        tens, units = divmod(rest, 10)
        out.append(EN_TENS[tens])
        if units:
            out.append(EN_UNITS[units])
    elif rest:
        out.append(EN_UNITS[rest])
    return out


def sentence_tokens(template: str, language: str, ticket: str, window: int) -> list[str]:
    """One sentence of a call as clip names, from a template of space-separated clips."""
    out: list[str] = []
    for word in template.split():
        if word == "{ticket}":
            out += ticket_tokens(ticket, language)
        elif word == "{window}":
            out += en_cardinal(window) if language == "en" else zh_cardinal(window)
        else:
            out.append(word)
    return out


# What the kiosk says after a ticket is taken (its own speaker, not the hall's announcer):
# the service (a clip named as the service, when the pack has one: recorded), the number
# and the people ahead. ``{ahead}`` is read as a number (0 → 零).
KIOSK_TEMPLATE = "{service} 您的号码是 {ticket} 号 前面还有 {ahead} 人"


def kiosk_tokens(pack: ClipPack, service_name: str, ticket: str, ahead: int) -> list[str]:
    """The kiosk's sentence as clip names (Mandarin); the service is left out when the pack
    has no clip for it (generated packs do not: record one named as the service)."""
    out: list[str] = []
    for word in KIOSK_TEMPLATE.split():
        if word == "{service}":
            if service_name in pack.clips:
                out.append(service_name)
        elif word == "{ticket}":
            out += ticket_tokens(ticket, "zh")
        elif word == "{ahead}":
            out += ["0"] if ahead <= 0 else zh_cardinal(min(ahead, 999))
        else:
            out.append(word)
    return out


def announcement_tokens(
    ticket: str,
    window: int,
    *,
    languages: Sequence[str],
    templates: Mapping[str, str],
    repeat: int,
    chime: bool,
) -> list[tuple[str, list[str]]]:
    """The sentences of one announcement in order, each ``(language, clip names)``; the
    chime is a sentence of its own (language ``chime``)."""
    sentences: list[tuple[str, list[str]]] = [(CHIME, [CHIME])] if chime else []
    for _ in range(repeat):
        for language in languages:
            template = templates.get(language) or DEFAULT_TEMPLATES.get(language)
            if template is None:
                raise VoiceError(f"no call template for language {language!r}; set templates")
            sentences.append((language, sentence_tokens(template, language, ticket, window)))
    return sentences


# -- clip packs -----------------------------------------------------------------------------


def silence(seconds: float, fmt: AudioFormat) -> bytes:
    return bytes(int(seconds * fmt.rate) * fmt.channels * fmt.sample_width)


def scale(frames: bytes, fmt: AudioFormat, percent: int) -> bytes:
    """``frames`` at ``percent`` of their loudness (a linear gain, 0 to 100)."""
    if percent >= 100:
        return frames
    gain = max(0, percent) / 100
    if fmt.sample_width == 1:  # 8-bit WAV is unsigned, silence at 128
        return bytes(128 + round((b - 128) * gain) for b in frames)
    code = {2: "h", 4: "i"}.get(fmt.sample_width)
    if code is None:  # 24-bit: packed three bytes a sample
        samples = [
            int.from_bytes(frames[i : i + 3], "little", signed=True)
            for i in range(0, len(frames) - 2, 3)
        ]
        return b"".join(round(v * gain).to_bytes(3, "little", signed=True) for v in samples)
    values = array.array(code, frames)
    return array.array(code, (round(v * gain) for v in values)).tobytes()


def chime_clip(fmt: AudioFormat) -> Clip:
    """A two-tone "ding-dong" in the pack's format (16-bit packs; others get silence)."""
    if fmt.sample_width != 2:
        return Clip(silence(0.8, fmt), fmt)
    samples = array.array("h")
    for freq, seconds in ((880.0, 0.35), (660.0, 0.55)):
        count = int(seconds * fmt.rate)
        for i in range(count):
            fade = math.exp(-4.0 * i / count)
            value = int(9000 * fade * math.sin(2 * math.pi * freq * i / fmt.rate))
            samples.extend([value] * fmt.channels)
    return Clip(samples.tobytes(), fmt)


class ClipPack:
    """A folder of WAV clips, one per token, all in one format.

    ``pack.json`` maps clip names to files (``{"clips": {"请": "qing.wav", ...}}``); a
    folder without it uses each file's name (``请.wav`` is the clip 请). Recorded clips
    work the same as generated ones, as long as every file has the same format.
    """

    def __init__(self, folder: Path, clips: Mapping[str, Clip], fmt: AudioFormat) -> None:
        self.folder = folder
        self.clips = dict(clips)
        self.format = fmt
        self.clips.setdefault(CHIME, chime_clip(fmt))

    @classmethod
    def load(cls, folder: Path) -> ClipPack:
        index = folder / "pack.json"
        files: dict[str, Path] = {}
        if index.is_file():
            try:
                listed = json.loads(index.read_text(encoding="utf-8"))["clips"]
            except (ValueError, KeyError, TypeError) as err:
                raise VoiceError(f"{index} is not a clip pack index: {err}") from err
            files = {str(name): folder / str(file) for name, file in listed.items()}
        elif folder.is_dir():
            files = {p.stem: p for p in folder.glob("*.wav")}
        if not files:
            raise VoiceError(
                f"no clip pack in {folder}; generate one with "
                f"'python -m agent.features.voice_pack --out {folder}' or put recorded clips there"
            )
        clips: dict[str, Clip] = {}
        fmt: AudioFormat | None = None
        for name, path in files.items():
            try:
                clip = read_wav(path.read_bytes())
            except OSError as err:
                raise VoiceError(f"clip {name!r} cannot be read from {path}: {err}") from err
            except VoiceError as err:
                raise VoiceError(f"clip {name!r} ({path}): {err}") from err
            if fmt is None:
                fmt = clip.format
            elif clip.format != fmt:
                raise VoiceError(
                    f"clip {name!r} ({path}) is {clip.format}, the others {fmt}: convert every "
                    "clip to one format (e.g. sox in.wav -r 22050 -c 1 -b 16 out.wav)"
                )
            clips[name] = clip
        assert fmt is not None
        return cls(folder, clips, fmt)

    def missing(self, tokens: Sequence[str]) -> list[str]:
        return sorted({t for t in tokens if t not in self.clips})


class VoicePacks:
    """The clip packs of the configured languages, joined into one format check."""

    def __init__(self, packs: Mapping[str, ClipPack]) -> None:
        self.packs = dict(packs)
        formats = {p.format for p in self.packs.values()}
        if len(formats) > 1:
            raise VoiceError(f"the languages' clip packs differ in format: {formats}")

    @property
    def format(self) -> AudioFormat:
        return next(iter(self.packs.values())).format

    def render(self, sentences: Sequence[tuple[str, Sequence[str]]], volume: int = 100) -> bytes:
        """``(language, clip names)`` sentences as one WAV at ``volume`` percent; the chime
        is the first pack's."""
        first = next(iter(self.packs.values()))
        streams: list[bytes] = []
        for n, (language, tokens) in enumerate(sentences):
            pack = self.packs.get(language, first)
            missing = pack.missing(tokens)
            if missing:
                raise VoiceError(
                    f"the {language} clip pack in {pack.folder} has no clip for "
                    f"{', '.join(missing)}"
                )
            if n:
                after_chime = sentences[n - 1][0] == CHIME
                streams.append(silence(CHIME_GAP_S if after_chime else SENTENCE_GAP_S, self.format))
            for i, token in enumerate(tokens):
                if i:
                    streams.append(silence(GAP_S, self.format))
                streams.append(pack.clips[token].frames)
        return write_wav(scale(b"".join(streams), self.format, volume), self.format)


# -- the announcer --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """One call to speak, taken from its committed event."""

    seq: int
    kind: str
    ticket: str
    window: str
    window_number: int
    queued_at: float  # time.monotonic()

    @classmethod
    def from_event(cls, event: StoredEvent) -> Announcement | None:
        """The announcement of a call (called, recalled, returned); None for other events."""
        match event.payload:
            case ev.TicketCalled() | ev.TicketRecalled() | ev.TicketReturned() as call:
                return cls(
                    event.seq,
                    event.type,
                    call.ticket,
                    call.window or "",
                    call.window_number,
                    time.monotonic(),
                )
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Spoken:
    """An announcement that was played (or written), for tests and status."""

    announcement: Announcement
    sentences: list[tuple[str, list[str]]]
    seconds: float
    path: Path | None
    started: float  # monotonic
    finished: float


def voice_folder(config: HallAgentConfig, device: AnnouncerDevice) -> Path:
    return device.clips or (config.storage.path / "voice")


def sink_for(device: AnnouncerDevice) -> AudioSink:
    transport = device.transport
    if isinstance(transport, FileTransport):
        return FileSink(transport.path)
    assert isinstance(transport, AlsaTransport)
    return AplaySink(transport.device)


class VoiceCalling:
    """The hall's announcer at work. An async context manager."""

    def __init__(
        self,
        hall: Hall,
        devices: DeviceBoard | None,
        device: AnnouncerDevice,
        *,
        sink: AudioSink | None = None,
        packs: VoicePacks | None = None,
    ) -> None:
        self.hall = hall
        self.devices = devices
        self.device = device
        self.sink = sink or sink_for(device)
        self.packs = packs
        # The latest announcements only (tests, status): a hall calls thousands a week.
        self.spoken: collections.deque[Spoken] = collections.deque(maxlen=KEPT_RECENT)
        self.skipped: collections.deque[Announcement] = collections.deque(maxlen=KEPT_RECENT)
        self.spoken_total = 0
        self.skipped_total = 0
        self.failed = 0
        self._queue: asyncio.Queue[Announcement] = asyncio.Queue()
        self._done = asyncio.Condition()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> VoiceCalling:
        async with contextlib.AsyncExitStack() as stack:
            events = await stack.enter_async_context(self.hall.events())
            tasks = await stack.enter_async_context(BackgroundTasks())
            follow = tasks.create_task(self._follow(events), name="voice-calls")
            speak = tasks.create_task(self._speak_loop(), name="voice-speaker")
            stack.push_async_callback(stop, follow)
            stack.push_async_callback(stop, speak)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _report(self, status: str, detail: str) -> None:
        if self.devices is not None:
            self.devices.report(self.device.id, status, detail)  # type: ignore[arg-type]

    async def _ensure_packs(self) -> VoicePacks | None:
        if self.packs is not None:
            return self.packs
        folder = voice_folder(self.hall.config, self.device)
        try:
            self.packs = await asyncio.to_thread(self._load_packs, folder)
        except VoiceError as err:
            log.error("announcer %s: %s; calls are not announced", self.device.id, err)
            self._report("error", str(err))
            return None
        return self.packs

    def _load_packs(self, folder: Path) -> VoicePacks:
        packs = {}
        for language in self.device.language:
            packs[language] = ClipPack.load(ensure_pack(folder / language, language))
        return VoicePacks(packs)

    async def _follow(self, events: asyncio.Queue[StoredEvent]) -> None:
        while True:
            event = await events.get()
            announcement = Announcement.from_event(event)
            if announcement is not None:
                self._queue.put_nowait(announcement)

    async def _speak_loop(self) -> None:
        problem = self.sink.problem()
        packs = await self._ensure_packs()
        if problem is not None:
            log.error("announcer %s: %s; calls are not announced", self.device.id, problem)
            self._report("error", problem)
        elif packs is not None:
            self._report("ok", f"{self.sink.endpoint}, {'+'.join(self.device.language)}")
        while True:
            announcement = await self._queue.get()
            waited = time.monotonic() - announcement.queued_at
            if waited > self.device.max_delay_s:
                log.warning(
                    "call of %s to window %s waited %.0f s to be announced; skipped",
                    announcement.ticket,
                    announcement.window,
                    waited,
                )
                self.skipped.append(announcement)
                self.skipped_total += 1
            elif packs is not None and problem is None:
                await self._speak(packs, announcement)
            async with self._done:
                self._done.notify_all()

    async def _speak(self, packs: VoicePacks, announcement: Announcement) -> None:
        device = self.device
        try:
            sentences = announcement_tokens(
                announcement.ticket,
                announcement.window_number,
                languages=device.language,
                templates=device.templates,
                repeat=device.repeat,
                chime=device.chime,
            )
            wav = await asyncio.to_thread(packs.render, sentences, device.volume)
        except VoiceError as err:
            self.failed += 1
            log.error("call of %s cannot be announced: %s", announcement.ticket, err)
            self._report("error", str(err))
            return
        started = time.monotonic()
        label = f"{announcement.ticket}-w{announcement.window_number}"
        try:
            path = await self.sink.play(wav, label)
        except AudioError as err:
            self.failed += 1
            log.error("call of %s was not announced: %s", announcement.ticket, err)
            self._report("error", str(err))
            return
        self._report("ok", f"{self.sink.endpoint}, {'+'.join(device.language)}")
        clip = read_wav(wav)
        self.spoken_total += 1
        self.spoken.append(
            Spoken(
                announcement,
                sentences,
                clip.seconds,
                path,
                started,
                time.monotonic(),
            )
        )
        log.info(
            "announced %s to window %s (%.1f s)",
            announcement.ticket,
            announcement.window_number,
            clip.seconds,
        )

    async def wait_spoken(self, count: int, within: float = 10.0) -> list[Spoken]:
        """Wait until ``count`` announcements have been handled (tests, the demo); the
        first ``count`` of those still kept (the latest ``KEPT_RECENT``)."""
        async with asyncio.timeout(within), self._done:
            await self._done.wait_for(
                lambda: self.spoken_total + self.skipped_total + self.failed >= count
            )
        return list(self.spoken)[:count]


@contextlib.asynccontextmanager
async def voice_calling(hall: Hall, devices: DeviceBoard) -> AsyncIterator[VoiceCalling | None]:
    """The hall's announcer, or None when none is configured."""
    announcers = [d for d in hall.config.devices if isinstance(d, AnnouncerDevice)]
    if not announcers:
        yield None
        return
    if len(announcers) > 1:
        log.warning(
            "%d announcers are configured; calls are spoken on the first, %s",
            len(announcers),
            announcers[0].id,
        )
    async with VoiceCalling(hall, devices, announcers[0]) as voice:
        yield voice
