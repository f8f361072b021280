"""Where announcements are played: ALSA through ``aplay``, or WAV files in a folder.

One :class:`AudioSink` interface; :meth:`AudioSink.play` returns only once the whole
announcement has been played (or written), so the caller can never start the next one
over it. ``aplay`` reads the WAV from its standard input: nothing is written to disk on a
Pi's SD card for each call.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import io
import os
import re
import shutil
import wave
from pathlib import Path

from drivers.errors import DriverError

# aplay needs a moment to open the device besides the sound itself.
APLAY_MARGIN_S = 5.0


class AudioError(DriverError):
    """The announcement could not be played; the message says what to check."""


def wav_seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


class AudioSink(abc.ABC):
    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the sound goes, for people."""

    @abc.abstractmethod
    async def play(self, wav: bytes, label: str) -> Path | None:
        """Play one announcement to its end; returns the file written, if any.

        Raises :class:`AudioError`.
        """

    def problem(self) -> str | None:
        """Why this sink cannot play at all (checked at start), or None."""
        return None


class AplaySink(AudioSink):
    """ALSA playback through ``aplay`` (alsa-utils), one process per announcement."""

    def __init__(self, device: str = "default", program: str = "aplay") -> None:
        self.device = device
        self.program = program

    @property
    def endpoint(self) -> str:
        return f"ALSA device {self.device}"

    def problem(self) -> str | None:
        if shutil.which(self.program) is None:
            return f"{self.program} is not installed (Debian package alsa-utils)"
        return None

    async def play(self, wav: bytes, label: str) -> Path | None:
        try:
            process = await asyncio.create_subprocess_exec(
                self.program,
                "-q",
                "-D",
                self.device,
                "-t",
                "wav",
                "-",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            raise AudioError(f"{self.program} cannot be started: {err}") from err
        try:
            async with asyncio.timeout(wav_seconds(wav) + APLAY_MARGIN_S):
                _, stderr = await process.communicate(wav)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AudioError(
                f"{self.program} on {self.device} did not finish playing; is the device busy?"
            ) from None
        except asyncio.CancelledError:
            # Shutting down: let the sentence end rather than cut it (it is a few seconds).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(APLAY_MARGIN_S):
                    await process.wait()
            raise
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip().splitlines()
            raise AudioError(
                f"{self.program} on {self.device} failed ({process.returncode}): "
                f"{detail[-1] if detail else 'no message'}"
            )
        return None


class FileSink(AudioSink):
    """Each announcement as a WAV file ``NNNN-<label>.wav`` (tests and the demo)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._count = 0

    @property
    def endpoint(self) -> str:
        return f"folder {self.folder}"

    def problem(self) -> str | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"cannot create {self.folder}: {err.strerror}"
        if not os.access(self.folder, os.W_OK):
            return f"cannot write to {self.folder}"
        return None

    async def play(self, wav: bytes, label: str) -> Path | None:
        self._count += 1
        safe = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-") or "call"
        path = self.folder / f"{self._count:04d}-{safe}.wav"
        try:
            await asyncio.to_thread(_write_atomically, path, wav)
        except OSError as err:
            raise AudioError(f"cannot write {path}: {err.strerror}") from err
        return path


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
