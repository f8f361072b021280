"""Clip packs for voice calling, generated once with espeak-ng (offline).

``python -m agent.features.voice_pack --out DIR [--language zh|en]`` writes one WAV per clip and
a ``pack.json`` index. Mandarin uses espeak-ng's ``cmn-latn-pinyin`` voice (clips are
written in pinyin with tone numbers, which that voice reads with proper tones; the plain
``cmn`` voice reads many characters as English letters plus a digit); the ticket letters
A-Z are spoken by the English voice, as people in halls say them. The agent generates a
missing pack at start when espeak-ng is installed; recorded clips (same names, one WAV
format) sound better and can replace any of these files.
"""

from __future__ import annotations

import argparse
import array
import concurrent.futures
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.features.voice_clips import EN_TENS, EN_UNITS, VoiceError, read_wav, write_wav

ESPEAK = "espeak-ng"
ZH_VOICE = "cmn-latn-pinyin"
EN_VOICE = "en"
SPEED_WPM = 150
# Samples quieter than this (16-bit) at either end of a clip are trimmed, so clips join
# without espeak-ng's lead-in and trailing silence.
SILENCE_LEVEL = 300
KEEP_EDGE_S = 0.02

_ZH_DIGITS = ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3")
_ZH_WORDS = {
    "请": ("qing", "qing3"),
    "号": ("hao", "hao4"),
    "到": ("dao", "dao4"),
    "号窗口": ("hao-chuang-kou", "hao4 chuang1 kou3"),
    "办理": ("ban-li", "ban4 li3"),
    "十": ("shi", "shi2"),
    "百": ("bai", "bai3"),
    # The kiosk's spoken guidance (agent.features.voice.kiosk_tokens).
    "您的号码是": ("nin-de-hao-ma-shi", "nin2 de5 hao4 ma3 shi4"),
    "前面还有": ("qian-mian-hai-you", "qian2 mian4 hai2 you3"),
    "人": ("ren", "ren2"),
}
# Every English word the number sentences use.
_EN_WORDS = [*EN_UNITS, *EN_TENS[2:], "hundred", "number"]


def clip_specs(language: str) -> dict[str, tuple[str, str, str]]:
    """Clip name -> (file stem, espeak-ng voice, text) for a language's pack."""
    specs: dict[str, tuple[str, str, str]] = {
        letter: (f"letter-{letter}", EN_VOICE, letter) for letter in string.ascii_uppercase
    }
    if language == "zh":
        for digit, pinyin in enumerate(_ZH_DIGITS):
            specs[str(digit)] = (f"digit-{digit}", ZH_VOICE, pinyin)
        for name, (stem, pinyin) in _ZH_WORDS.items():
            specs[name] = (stem, ZH_VOICE, pinyin)
    elif language == "en":
        for word in _EN_WORDS:
            specs[word] = (word, EN_VOICE, word)
        specs["please-go-to-window"] = ("please-go-to-window", EN_VOICE, "please go to window")
    else:
        raise VoiceError(
            f"no clip pack can be generated for {language!r} (zh and en can); "
            "record one: a folder of WAV clips named as the template's words"
        )
    return specs


def _trim(frames: bytes, rate: int) -> bytes:
    samples = array.array("h")
    samples.frombytes(frames)
    # The first and last loud sample, without a list of every loud one (a clip's worth).
    first = next((i for i, v in enumerate(samples) if abs(v) > SILENCE_LEVEL), None)
    if first is None:
        return frames
    last = next(i for i in range(len(samples) - 1, -1, -1) if abs(samples[i]) > SILENCE_LEVEL)
    edge = int(KEEP_EDGE_S * rate)
    start, end = max(0, first - edge), min(len(samples), last + edge)
    return samples[start:end].tobytes()


def _speak(voice: str, text: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "clip.wav"
        subprocess.run(  # noqa: S603 - fixed program, arguments from our own table
            [ESPEAK, "-v", voice, "-s", str(SPEED_WPM), "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        clip = read_wav(raw.read_bytes())
    frames = clip.frames
    if clip.format.sample_width == 2 and clip.format.channels == 1:
        frames = _trim(frames, clip.format.rate)
    target.write_bytes(write_wav(frames, clip.format))


def generate_pack(folder: Path, language: str) -> Path:
    """Write the language's clips and ``pack.json`` into ``folder``; returns it."""
    if shutil.which(ESPEAK) is None:
        raise VoiceError(
            f"espeak-ng is not installed, so no clip pack can be generated in {folder}; "
            "install it (apt-get install espeak-ng) or put recorded clips there"
        )
    specs = clip_specs(language)
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pack-", dir=folder))
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            jobs = [
                pool.submit(_speak, voice, text, work / f"{stem}.wav")
                for stem, voice, text in specs.values()
            ]
            for job in jobs:
                job.result()
        for stem, _, _ in specs.values():
            os.replace(work / f"{stem}.wav", folder / f"{stem}.wav")
    except (OSError, subprocess.SubprocessError) as err:
        raise VoiceError(f"generating the {language} clip pack in {folder} failed: {err}") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    index = {
        "language": language,
        "generator": f"{ESPEAK} ({ZH_VOICE if language == 'zh' else EN_VOICE}, {SPEED_WPM} wpm)",
        "clips": {name: f"{stem}.wav" for name, (stem, _, _) in specs.items()},
    }
    tmp = folder / "pack.json.tmp"
    tmp.write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "pack.json")
    return folder


def ensure_pack(folder: Path, language: str) -> Path:
    """The pack in ``folder``: recorded clips or an earlier pack as they are, else generated."""
    if (folder / "pack.json").is_file() or any(folder.glob("*.wav")):
        return folder
    return generate_pack(folder, language)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a voice calling clip pack.")
    parser.add_argument("--out", type=Path, required=True, help="folder of the pack")
    parser.add_argument("--language", choices=["zh", "en"], default="zh")
    args = parser.parse_args(argv)
    try:
        generate_pack(args.out, args.language)
    except VoiceError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    sys.stdout.write(f"clip pack ({args.language}) written to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
