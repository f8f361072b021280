"""Voice calling: tokens, the clip-pack engine, announcements in call order through a
running agent, the espeak-ng pack and the aplay sink."""

from __future__ import annotations

import array
import asyncio
import itertools
import json
import math
import shutil
import wave
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import as_ops, hall_config

from agent.config import AnnouncerDevice, HallAgentConfig
from agent.core.operations import CallNext, Take
from agent.daemon import running_agent
from agent.features.voice import (
    CHIME,
    GAP_S,
    SENTENCE_GAP_S,
    ClipPack,
    VoicePacks,
    announcement_tokens,
    chime_clip,
    en_cardinal,
    scale,
    sentence_tokens,
    zh_cardinal,
)
from agent.features.voice_clips import VoiceError, read_wav, write_wav
from agent.features.voice_pack import clip_specs, generate_pack
from drivers.audio import AplaySink, AudioError, FileSink

RATE = 8000
CLIP_S = 0.05  # every synthetic clip lasts this long


def tone(seconds: float, freq: float = 440.0) -> bytes:
    samples = array.array(
        "h",
        (int(8000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(int(seconds * RATE))),
    )
    return samples.tobytes()


def synthetic_pack(folder: Path, names: list[str]) -> Path:
    """A recorded-style pack: one short tone per clip, named by pack.json."""
    folder.mkdir(parents=True, exist_ok=True)
    from agent.features.voice_clips import AudioFormat

    fmt = AudioFormat(1, 2, RATE)
    index = {}
    for n, name in enumerate(names):
        (folder / f"clip{n}.wav").write_bytes(write_wav(tone(CLIP_S, 300 + 10 * n), fmt))
        index[name] = f"clip{n}.wav"
    (folder / "pack.json").write_text(json.dumps({"clips": index}), encoding="utf-8")
    return folder


ZH_CLIPS = [*"0123456789", *"ABCD", "请", "号", "到", "号窗口", "办理", "十", "百"]


def test_mandarin_numbers_and_templates() -> None:
    assert zh_cardinal(3) == ["3"]
    assert zh_cardinal(10) == ["十"]
    assert zh_cardinal(12) == ["十", "2"]
    assert zh_cardinal(20) == ["2", "十"]
    assert zh_cardinal(105) == ["1", "百", "0", "5"]
    assert zh_cardinal(110) == ["1", "百", "1", "十"]
    assert zh_cardinal(200) == ["2", "百"]
    assert en_cardinal(12) == ["twelve"]
    assert en_cardinal(42) == ["forty", "two"]
    assert en_cardinal(305) == ["three", "hundred", "five"]
    with pytest.raises(VoiceError):
        zh_cardinal(1000)
    zh = sentence_tokens("请 {ticket} 号 到 {window} 号窗口 办理", "zh", "A012", 3)
    assert zh == ["请", "A", "0", "1", "2", "号", "到", "3", "号窗口", "办理"]
    en = sentence_tokens("number {ticket} please-go-to-window {window}", "en", "B7", 11)
    assert en == ["number", "B", "seven", "please-go-to-window", "eleven"]
    sentences = announcement_tokens(
        "A012", 3, languages=["zh", "en"], templates={}, repeat=2, chime=True
    )
    assert [lang for lang, _ in sentences] == [CHIME, "zh", "en", "zh", "en"]


def test_clip_pack_renders_one_stream_of_known_length(tmp_path: Path) -> None:
    pack = ClipPack.load(synthetic_pack(tmp_path / "zh", ZH_CLIPS))
    packs = VoicePacks({"zh": pack})
    tokens = sentence_tokens("请 {ticket} 号 到 {window} 号窗口 办理", "zh", "A012", 3)
    clip = read_wav(packs.render([("zh", tokens), ("zh", tokens)]))
    expected = 2 * (len(tokens) * CLIP_S + (len(tokens) - 1) * GAP_S) + SENTENCE_GAP_S
    assert clip.seconds == pytest.approx(expected, abs=2 / RATE * len(tokens))
    with pytest.raises(VoiceError, match="no clip for E"):
        packs.render([("zh", ["E"])])
    assert chime_clip(pack.format).seconds == pytest.approx(0.9, abs=0.01)


@given(
    width=st.sampled_from([1, 2, 3, 4]),
    data=st.data(),
    percent=st.integers(min_value=0, max_value=100),
)
def test_volume_scales_every_sample_towards_silence(
    width: int, data: st.DataObject, percent: int
) -> None:
    from agent.features.voice_clips import AudioFormat

    fmt = AudioFormat(1, width, RATE)
    count = data.draw(st.integers(min_value=0, max_value=64))
    frames = data.draw(st.binary(min_size=count * width, max_size=count * width))
    out = scale(frames, fmt, percent)
    assert len(out) == len(frames)

    def samples(raw: bytes) -> list[int]:
        if width == 1:
            return [b - 128 for b in raw]
        return [
            int.from_bytes(raw[i : i + width], "little", signed=True)
            for i in range(0, len(raw), width)
        ]

    for before, after in zip(samples(frames), samples(out), strict=True):
        assert abs(after - before * percent / 100) <= 0.5 + 1e-9
        assert abs(after) <= abs(before)
    if percent == 100:
        assert out == frames
    if percent == 0:
        assert set(samples(out)) <= {0}


def test_a_lower_volume_renders_a_quieter_stream(tmp_path: Path) -> None:
    packs = VoicePacks({"zh": ClipPack.load(synthetic_pack(tmp_path / "zh", ZH_CLIPS))})
    tokens = sentence_tokens("请 {ticket} 号 到 {window} 号窗口 办理", "zh", "A012", 3)
    loud = read_wav(packs.render([(CHIME, [CHIME]), ("zh", tokens)]))
    quiet = read_wav(packs.render([(CHIME, [CHIME]), ("zh", tokens)], volume=40))
    assert len(quiet.frames) == len(loud.frames)
    peak = max(abs(v) for v in array.array("h", loud.frames))
    assert max(abs(v) for v in array.array("h", quiet.frames)) == round(peak * 0.4)


def test_a_pack_of_mixed_formats_is_refused(tmp_path: Path) -> None:
    from agent.features.voice_clips import AudioFormat

    folder = synthetic_pack(tmp_path / "zh", ["请", "号"])
    (folder / "clip1.wav").write_bytes(write_wav(tone(0.1), AudioFormat(1, 2, 16000)))
    with pytest.raises(VoiceError, match="one format"):
        ClipPack.load(folder)
    with pytest.raises(VoiceError, match="no clip pack"):
        ClipPack.load(tmp_path / "empty")


async def test_three_quick_calls_are_three_whole_announcements_in_call_order(
    tmp_path: Path,
) -> None:
    voice = tmp_path / "voice"
    synthetic_pack(voice / "zh", ZH_CLIPS)
    out = tmp_path / "announcements"
    data = hall_config(tmp_path / "state")
    data["devices"] = [
        {
            "id": "speaker",
            "kind": "announcer",
            "transport": {"type": "file", "path": str(out)},
            "clips": str(voice),
            "repeat": 2,
        }
    ]
    config = HallAgentConfig.model_validate(data)
    async with (
        running_agent(config) as running,
        httpx.AsyncClient(base_url=running.url, headers=as_ops(running)) as client,
    ):
        assert running.voice is not None
        for service in ("social", "civil", "general"):
            assert (await client.post("/api/v1/tickets", json={"service": service})).is_success
        # Three windows call at once: the writer orders them, the announcer follows that order.
        answers = await asyncio.gather(
            *(client.post(f"/api/v1/windows/{w}/next") for w in ("w1", "w2", "w3"))
        )
        called = {
            r.json()["result"]["ticket"]["number"]: r.json()["events"][-1]["seq"] for r in answers
        }
        spoken = await running.voice.wait_spoken(3)
    in_call_order = sorted(called, key=called.__getitem__)
    assert [s.announcement.ticket for s in spoken] == in_call_order
    window_of = {"A001": 1, "B001": 2, "D001": 3}
    for s in spoken:
        number = s.announcement.ticket
        sentence = ["请", *number, "号", "到", str(window_of[number]), "号窗口", "办理"]
        assert s.sentences == [(CHIME, [CHIME]), ("zh", sentence), ("zh", sentence)]
        assert s.path is not None
        assert s.path.name.endswith(f"{number}-w{window_of[number]}.wav")
        with wave.open(str(s.path), "rb") as w:
            seconds = w.getnframes() / w.getframerate()
        clips = 2 * len(sentence)
        expected = 0.9 + 0.3 + clips * CLIP_S + 2 * (len(sentence) - 1) * GAP_S + SENTENCE_GAP_S
        assert seconds == pytest.approx(expected, abs=0.01)
        assert s.seconds == pytest.approx(seconds)
    files = sorted(p.name for p in out.glob("*.wav"))
    assert [f.split("-")[1] for f in files] == in_call_order
    # Each announcement began after the one before it ended.
    assert all(a.finished <= b.started for a, b in itertools.pairwise(spoken))
    assert running.devices.get("speaker").status == "ok"


async def test_a_slow_sink_never_overlaps_or_reorders(tmp_path: Path) -> None:
    from agent.config import FileTransport
    from agent.features.voice import VoiceCalling
    from agent.runtime.hall import Hall
    from agent.runtime.store import Store

    class SlowSink(FileSink):
        playing = 0
        overlap = False

        async def play(self, wav: bytes, label: str) -> Path | None:
            SlowSink.playing += 1
            SlowSink.overlap |= SlowSink.playing > 1
            await asyncio.sleep(0.05)
            SlowSink.playing -= 1
            return await super().play(wav, label)

    voice = synthetic_pack(tmp_path / "voice" / "zh", ZH_CLIPS).parent
    config = HallAgentConfig.model_validate(hall_config(tmp_path / "state"))
    device = AnnouncerDevice(
        id="speaker", transport=FileTransport(path=tmp_path / "out"), clips=voice, repeat=1
    )
    store = Store.open(config.storage.path)
    try:
        async with (
            Hall(config, store) as hall,
            VoiceCalling(hall, None, device, sink=SlowSink(tmp_path / "out")) as calling,
        ):
            for _ in range(4):
                await hall.execute(Take(service="social"))
            await hall.execute(CallNext(window="w1"))
            for _ in range(3):
                await hall.execute(CallNext(window="w1"))
            spoken = await calling.wait_spoken(4)
    finally:
        store.close()
    assert [s.announcement.ticket for s in spoken] == ["A001", "A002", "A003", "A004"]
    assert not SlowSink.overlap


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_ng_generates_a_usable_mandarin_pack(tmp_path: Path) -> None:
    folder = generate_pack(tmp_path / "zh", "zh")
    index = json.loads((folder / "pack.json").read_text(encoding="utf-8"))
    assert set(index["clips"]) == set(clip_specs("zh"))
    pack = ClipPack.load(folder)
    assert pack.format.rate == 22050
    assert pack.format.channels == 1
    for name in ("请", "3", "号窗口", "A"):
        assert 0.1 < pack.clips[name].seconds < 2.0, name
    tokens = sentence_tokens("请 {ticket} 号 到 {window} 号窗口 办理", "zh", "A012", 12)
    wav = VoicePacks({"zh": pack}).render([("zh", tokens)])
    assert 2.0 < read_wav(wav).seconds < 8.0


@pytest.mark.skipif(shutil.which("aplay") is None, reason="aplay (alsa-utils) is not installed")
async def test_aplay_sink_plays_to_the_end_and_reports_failures() -> None:
    from agent.features.voice_clips import AudioFormat

    wav = write_wav(tone(0.3), AudioFormat(1, 2, RATE))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await AplaySink("null").play(wav, "A001") is None
    # aplay on the null device returns once it has fed all the samples.
    assert loop.time() - started < 5
    with pytest.raises(AudioError, match="failed"):
        await AplaySink("no-such-alsa-device").play(wav, "A001")
    assert AplaySink("default", program="no-such-aplay").problem() is not None


async def test_the_announcer_keeps_only_the_latest_announcements(tmp_path: Path) -> None:
    """A hall calls thousands of tickets a week: the announcer keeps the latest
    KEPT_RECENT of them and counts the rest, so its memory does not grow with the week."""
    from agent.config import FileTransport
    from agent.features.voice import KEPT_RECENT, VoiceCalling
    from agent.runtime.hall import Hall
    from agent.runtime.store import Store

    class SilentSink(FileSink):
        async def play(self, wav: bytes, label: str) -> Path | None:
            return None

    calls = KEPT_RECENT + 100
    voice = synthetic_pack(tmp_path / "voice" / "zh", ZH_CLIPS).parent
    data = hall_config(tmp_path / "state")
    data["services"][0]["daily_cap"] = calls
    config = HallAgentConfig.model_validate(data)
    device = AnnouncerDevice(
        id="speaker", transport=FileTransport(path=tmp_path / "out"), clips=voice, repeat=1
    )
    store = Store.open(config.storage.path)
    try:
        async with (
            Hall(config, store) as hall,
            VoiceCalling(hall, None, device, sink=SilentSink(tmp_path / "out")) as calling,
        ):
            for _ in range(calls):
                await hall.execute(Take(service="social"))
            for _ in range(calls):
                await hall.execute(CallNext(window="w1"))
            await calling.wait_spoken(calls, within=60)
    finally:
        store.close()
    assert calling.spoken_total == calls
    assert len(calling.spoken) == KEPT_RECENT
    # The kept ones are the latest, in call order.
    assert calling.spoken[-1].announcement.ticket == f"A{calls:03d}"
    assert calling.spoken[0].announcement.ticket == f"A{calls - KEPT_RECENT + 1:03d}"


def test_generated_clips_are_trimmed_to_their_sound() -> None:
    from agent.features.voice_pack import KEEP_EDGE_S, SILENCE_LEVEL, _trim

    rate = 1000
    edge = int(KEEP_EDGE_S * rate)
    quiet, loud = [0] * (3 * edge), [SILENCE_LEVEL + 1] * 50
    samples = array.array("h", quiet + loud + [0] * 7 + loud + quiet)
    kept = array.array("h")
    kept.frombytes(_trim(samples.tobytes(), rate))
    # From one edge before the first loud sample to one edge after the last (exclusive).
    assert list(kept) == [0] * edge + loud + [0] * 7 + loud + [0] * (edge - 1)
    silent = array.array("h", quiet).tobytes()
    assert _trim(silent, rate) == silent
