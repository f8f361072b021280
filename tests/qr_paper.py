"""Reading a printed ticket's QR code back, as a phone would, and measuring its quiet zone.

Not a test module: shared by tests/test_ticket_print.py and tests/test_ticket_status.py.
Decoding uses zxing-cpp (a well-kept decoder, PyPI ``zxing-cpp``) on the image the virtual
printer's typesetter draws from what it received.
"""

from __future__ import annotations

import dataclasses

import zxingcpp
from PIL import Image

from protocols.escpos_commands import PrintedTicket
from protocols.escpos_model import Block, Paper
from protocols.escpos_raster import CJK_FONT, Typesetter


@dataclasses.dataclass(frozen=True)
class ReadQr:
    text: str
    box: tuple[int, int, int, int]  # left, top, right, bottom of the symbol (right/bottom
    # exclusive: zxing-cpp reports the outer edges of the finder patterns)
    module: float  # dots per module
    quiet: tuple[int, int, int, int]  # blank dots left, above, right, below the symbol


def render(blocks: tuple[Block, ...] | list[Block], paper: Paper) -> Image.Image:
    """The paper as the printer feeds it out (text, native QR codes, raster images)."""
    with open(CJK_FONT, "rb") as font:
        return Typesetter(font.read(), paper.width_dots).render(list(blocks)).convert("L")


def paper_image(ticket: PrintedTicket, paper: Paper) -> Image.Image:
    """What came out: native text and QR codes drawn, raster images (GS v 0) as sent."""
    return render(ticket.blocks, paper)


def read_qr(image: Image.Image) -> ReadQr:
    """The one QR code on the paper, its size and the blank space around it."""
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"expected one QR code on the ticket, found {len(found)}"
    code = found[0]
    points = [
        code.position.top_left,
        code.position.top_right,
        code.position.bottom_right,
        code.position.bottom_left,
    ]
    left, right = min(p.x for p in points), max(p.x for p in points)
    top, bottom = min(p.y for p in points), max(p.y for p in points)
    version = int(code.extra["Version"])
    module = (right - left) / (17 + 4 * version)
    return ReadQr(
        code.text,
        (left, top, right, bottom),
        module,
        _blank_around(image, left, top, right, bottom),
    )


def _blank_around(
    image: Image.Image, left: int, top: int, right: int, bottom: int
) -> tuple[int, int, int, int]:
    """How many rows/columns of paper with no ink lie beside the symbol on each side (up to
    the paper's edge), within the symbol's own span."""
    pixels = image.load()
    assert pixels is not None

    def ink(x: int, y: int) -> bool:
        value = pixels[x, y]
        assert isinstance(value, int)
        return value < 128

    def count(positions: list[list[tuple[int, int]]]) -> int:
        n = 0
        for line in positions:
            if any(ink(x, y) for x, y in line):
                break
            n += 1
        return n

    cols = range(left, right)
    rows = range(top, bottom)
    above = count([[(x, y) for x in cols] for y in range(top - 1, -1, -1)])
    below = count([[(x, y) for x in cols] for y in range(bottom, image.height)])
    before = count([[(x, y) for y in rows] for x in range(left - 1, -1, -1)])
    after = count([[(x, y) for y in rows] for x in range(right, image.width)])
    return before, above, after, below
