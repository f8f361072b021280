"""Document capture: the :class:`Scanner` interface, UVC cameras through ffmpeg/V4L2 (and
ffmpeg's test pattern as a stand-in), sheet-fed scanners through SANE's ``scanimage``.

Both run their tool as a subprocess (never on the event loop's thread), write the pages
into a private temporary folder and hand back the bytes: JPEG as the device made it.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from drivers.errors import DriverError

# A capture that takes longer is a hung device or tool.
CAPTURE_TIMEOUT_S = 60.0


class ScannerError(DriverError):
    """Base of the capture drivers' errors; the message says what to do."""


class ScannerUnavailable(ScannerError):
    """The device or the tool that drives it is missing, unplugged or failed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    data: bytes
    content_type: str = "image/jpeg"


class Scanner(abc.ABC):
    """One capture device. ``capture(n)`` returns n pages or raises ScannerError."""

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the device is, for people."""

    @abc.abstractmethod
    async def check(self) -> str:
        """Raise ScannerUnavailable when the device cannot capture now; else a detail."""

    @abc.abstractmethod
    async def capture(self, pages: int = 1) -> list[Page]:
        """Capture ``pages`` pages."""


async def run_tool(argv: Sequence[str], *, env: dict[str, str] | None = None) -> str:
    """Run a capture tool; its stderr on failure becomes the error's message."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=None if env is None else {**os.environ, **env},
        )
    except FileNotFoundError as err:
        raise ScannerUnavailable(f"{argv[0]} is not installed; install it ({err})") from err
    try:
        async with asyncio.timeout(CAPTURE_TIMEOUT_S):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ScannerUnavailable(
            f"{Path(argv[0]).name} did not finish within {CAPTURE_TIMEOUT_S:g} s; the device "
            "may be hung: unplug it and plug it in again"
        ) from None
    text = stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        last = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
        raise ScannerUnavailable(f"{Path(argv[0]).name} failed: {last}")
    return text


# -- cameras: ffmpeg ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class V4l2Source:
    path: Path

    @property
    def endpoint(self) -> str:
        return f"video device {self.path}"


@dataclasses.dataclass(frozen=True, slots=True)
class TestPatternSource:
    """ffmpeg's lavfi test source: a camera stand-in (tests, the demo)."""

    __test__ = False
    pattern: str = "testsrc2"

    @property
    def endpoint(self) -> str:
        return f"test pattern ({self.pattern})"


_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")


def largest_mjpeg_size(listing: str) -> tuple[int, int] | None:
    """The largest MJPEG size from ``ffmpeg -f v4l2 -list_formats compressed``."""
    sizes = [
        (int(w), int(h))
        for line in listing.splitlines()
        if "Compressed" in line and ("mjpeg" in line.lower() or "jpeg" in line.lower())
        for w, h in _SIZE.findall(line.split(":", 3)[-1])
    ]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


class FfmpegCamera(Scanner):
    """A UVC document camera: MJPEG at full resolution, frames copied, not re-encoded."""

    def __init__(
        self,
        source: V4l2Source | TestPatternSource,
        *,
        size: tuple[int, int] | None = None,
        warmup_frames: int = 5,
        ffmpeg: str | None = None,
    ) -> None:
        self.source = source
        self.size = size
        self.warmup_frames = warmup_frames
        self._ffmpeg = ffmpeg or shutil.which("ffmpeg") or "ffmpeg"

    @property
    def endpoint(self) -> str:
        return self.source.endpoint

    async def check(self) -> str:
        if isinstance(self.source, V4l2Source) and not self.source.path.exists():
            raise ScannerUnavailable(
                f"the document camera {self.source.path} is not there (unplugged?); plug it in"
            )
        if shutil.which(self._ffmpeg) is None and isinstance(self.source, V4l2Source):
            raise ScannerUnavailable("ffmpeg is not installed; install the ffmpeg package")
        return "ready"

    async def _full_size(self, path: Path) -> tuple[int, int] | None:
        """Ask the camera which MJPEG sizes it has (ffmpeg prints them and exits 1)."""
        proc = await asyncio.create_subprocess_exec(
            self._ffmpeg,
            "-hide_banner",
            "-f",
            "v4l2",
            "-list_formats",
            "compressed",
            "-i",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
        return largest_mjpeg_size(stderr.decode("utf-8", "replace"))

    async def input_args(self) -> list[str]:
        if isinstance(self.source, TestPatternSource):
            width, height = self.size or (2592, 1944)
            return ["-f", "lavfi", "-i", f"{self.source.pattern}=size={width}x{height}:rate=10"]
        size = self.size or await self._full_size(self.source.path)
        args = ["-f", "v4l2", "-input_format", "mjpeg"]
        if size is not None:
            args += ["-video_size", f"{size[0]}x{size[1]}"]
        return [*args, "-i", str(self.source.path)]

    async def capture(self, pages: int = 1) -> list[Page]:
        await self.check()
        if shutil.which(self._ffmpeg) is None:
            return [Page(_pattern_jpeg(self.size or (1600, 1200), n)) for n in range(pages)]
        codec = ["-c:v", "copy"] if isinstance(self.source, V4l2Source) else ["-c:v", "mjpeg"]
        out: list[Page] = []
        with tempfile.TemporaryDirectory(prefix="hall-capture-") as folder:
            for n in range(pages):
                target = Path(folder) / f"page-{n}.jpg"
                # The last of warmup+1 frames is kept (-update 1): exposure has settled.
                await run_tool(
                    [
                        self._ffmpeg,
                        "-hide_banner",
                        "-loglevel",
                        "error",
                        *await self.input_args(),
                        "-frames:v",
                        str(self.warmup_frames + 1),
                        *codec,
                        "-q:v",
                        "3",
                        "-update",
                        "1",
                        "-y",
                        "-f",
                        "image2",
                        str(target),
                    ]
                )
                out.append(Page(await asyncio.to_thread(_read_page, target)))
        return out


def _read_page(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScannerUnavailable("the capture produced no image; try again") from None
    if not data.startswith(b"\xff\xd8"):
        raise ScannerUnavailable("the capture is not a JPEG image; check the device's format")
    return data


def _pattern_jpeg(size: tuple[int, int], n: int) -> bytes:
    """A stand-in page without ffmpeg (Pillow): bands of colour and the page number."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (250, 250, 245))
    draw = ImageDraw.Draw(image)
    for i, colour in enumerate(((200, 40, 40), (40, 160, 40), (40, 40, 200))):
        draw.rectangle((0, i * 40 + 40, size[0], i * 40 + 70), fill=colour)
    draw.text((40, 200), f"TEST PAGE {n + 1}", fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# -- sheet-fed scanners: SANE --------------------------------------------------------------


class SaneScanner(Scanner):
    """A SANE scanner through ``scanimage`` (batch mode for sheet feeders)."""

    def __init__(
        self,
        device_name: str,
        *,
        resolution_dpi: int = 300,
        mode: str = "color",
        source: str | None = None,
        scanimage: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.device_name = device_name
        self.resolution_dpi = resolution_dpi
        self.mode = mode
        self.source = source
        self._scanimage = scanimage or shutil.which("scanimage") or "scanimage"
        self._env = env

    @property
    def endpoint(self) -> str:
        return f"SANE device {self.device_name}"

    async def check(self) -> str:
        if shutil.which(self._scanimage) is None:
            raise ScannerUnavailable("scanimage is not installed; install the sane-utils package")
        return "ready"

    async def capture(self, pages: int = 1) -> list[Page]:
        await self.check()
        with tempfile.TemporaryDirectory(prefix="hall-scan-") as folder:
            argv = [
                self._scanimage,
                "-d",
                self.device_name,
                "--format=jpeg",
                "--resolution",
                str(self.resolution_dpi),
                "--mode",
                {"color": "Color", "gray": "Gray", "lineart": "Lineart"}[self.mode],
                f"--batch={folder}/page-%d.jpg",
                f"--batch-count={pages}",
            ]
            if self.source:
                argv += ["--source", self.source]
            await run_tool(argv, env=self._env)
            return await asyncio.to_thread(_collect, Path(folder))


def _collect(folder: Path) -> list[Page]:
    files = sorted(folder.glob("page-*.jpg"), key=lambda p: int(p.stem[5:]))
    if not files:
        raise ScannerUnavailable("the scanner gave no page; is there paper in the feeder?")
    return [Page(_read_page(p)) for p in files]
