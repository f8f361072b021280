"""What voice calling and its clip packs share: the clip format, WAV in and out, the
English number words and the error both raise.

:mod:`agent.features.voice` (the engine and announcer) and :mod:`agent.features.voice_pack`
(pack generation with espeak-ng) both build on this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import io
import wave

from agent.errors import HallAgentError

EN_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


class VoiceError(HallAgentError):
    """An announcement cannot be made (a clip is missing, the pack is unusable)."""


# -- clips and WAV --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AudioFormat:
    channels: int
    sample_width: int
    rate: int


@dataclasses.dataclass(frozen=True, slots=True)
class Clip:
    frames: bytes
    format: AudioFormat

    @property
    def seconds(self) -> float:
        return len(self.frames) / (
            self.format.channels * self.format.sample_width * self.format.rate
        )


def read_wav(data: bytes) -> Clip:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            fmt = AudioFormat(reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
            return Clip(reader.readframes(reader.getnframes()), fmt)
    except (wave.Error, EOFError) as err:
        raise VoiceError(f"not a PCM WAV file: {err}") from err


def write_wav(frames: bytes, fmt: AudioFormat) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(fmt.channels)
        writer.setsampwidth(fmt.sample_width)
        writer.setframerate(fmt.rate)
        writer.writeframes(frames)
    return out.getvalue()
