"""An independently written page generator for evaluation only: random notation drawn glyph by glyph, no verovio.

Its own layout (random pitches, rhythms and spacing, no musical sense), its own staves, stems and
ledger lines drawn with Pillow, glyph outlines rasterised one by one, and ground-truth boxes taken
from the ink each glyph actually put on the page rather than from font metrics.  A detector that
learnt verovio's engraving habits rather than the symbols loses here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.symbols import engrave

FONTS = ("Leland", "Petaluma", "Bravura", "Leipzig")
#: SMuFL glyph names drawn, with how often (notes dominate, as on real pages)
NOTES = {"noteheadBlack": 12, "noteheadHalf": 4, "noteheadWhole": 1}
RESTS = ("restWhole", "restHalf", "restQuarter", "rest8th", "rest16th")
DYNAMICS = ("dynamicForte", "dynamicPiano", "dynamicMezzo", "dynamicSforzando")


@cache
def glyph(font: str, name: str, staff_space: float) -> np.ndarray:
    """A glyph's ink as a float alpha image (1 = ink), cropped to its ink."""
    import cairosvg
    import verovio

    codes = {entry[0]: code for code, entry in engrave.font_metrics(font).items()}
    path = Path(verovio.__file__).parent / "data" / font / f"{codes[name]}.xml"
    outline = path.read_text().replace('<g id="', '<g data-id="')
    scale = staff_space / 250.0  # SMuFL: an em of 1000 units is four staff spaces
    size = int(np.ceil(1400 * scale))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
           f'<g transform="translate({size / 3:.1f},{size / 2:.1f}) scale({scale:.4f})">{outline}</g></svg>')
    png = cairosvg.svg2png(bytestring=svg.encode())
    import io

    alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[:, :, 3].astype(np.float32) / 255.0
    rows, cols = np.nonzero(alpha > 0.3)
    return alpha[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


class Sheet:
    """A page being drawn: pixels, and the objects placed so far."""

    def __init__(self, width: int, height: int, font: str, staff_space: float) -> None:
        self.ink = np.zeros((height, width), np.float32)
        self.font, self.space = font, staff_space
        self.boxes: list[tuple[float, float, float, float]] = []
        self.labels: list[int] = []

    def place(self, name: str, x: float, y_centre: float) -> float:
        """Stamp a glyph with its left edge at x, vertically centred on y; returns its right edge."""
        alpha = glyph(self.font, name, self.space)
        height, width = alpha.shape
        top, left = round(y_centre - height / 2), round(x)
        if top < 0 or left < 0 or top + height > self.ink.shape[0] or left + width > self.ink.shape[1]:
            return x
        region = self.ink[top : top + height, left : left + width]
        np.maximum(region, alpha, out=region)
        label = engrave.class_of(name)
        if label is not None:
            self.boxes.append((left, top, left + width, top + height))
            self.labels.append(label)
        return float(left + width)

    def line(self, x0: float, y0: float, x1: float, y1: float, thickness: float) -> None:
        canvas = Image.new("L", (self.ink.shape[1], self.ink.shape[0]), 0)
        ImageDraw.Draw(canvas).line((x0, y0, x1, y1), fill=255, width=max(round(thickness), 1))
        np.maximum(self.ink, np.asarray(canvas, np.float32) / 255.0, out=self.ink)


def _note(sheet: Sheet, rng: np.random.Generator, x: float, top: float) -> float:
    """A note (accidental, head, stem, flag, dot, articulation) at a random pitch; returns where it ends."""
    space = sheet.space
    step = int(rng.integers(-4, 13))  # half staff spaces below the top line; beyond the staff needs ledgers
    y = top + step * space / 2
    if rng.random() < 0.15:
        x = sheet.place(str(rng.choice(["accidentalSharp", "accidentalFlat", "accidentalNatural"])), x, y) + 2
    names, weights = list(NOTES), np.array(list(NOTES.values()), float)
    head = str(rng.choice(names, p=weights / weights.sum()))
    right = sheet.place(head, x, y)
    for ledger in [s for s in range(-2, step - 1, -2) if step < 0] + [s for s in range(10, step + 1, 2)]:
        sheet.line(x - 3, top + ledger * space / 2, right + 3, top + ledger * space / 2, space / 8)
    if head != "noteheadWhole":
        up = step >= 4
        stem_x = right - 1 if up else x + 1
        end = y - 3.5 * space if up else y + 3.5 * space
        sheet.line(stem_x, y, stem_x, end, space / 9)
        if head == "noteheadBlack" and rng.random() < 0.3:
            flag = f"flag{rng.choice(['8th', '16th'])}{'Up' if up else 'Down'}"
            sheet.place(flag, stem_x, end + (space if up else -space))
    if rng.random() < 0.15:
        sheet.place("augmentationDot", right + space / 3, y - (space / 2 if step % 2 == 0 else 0))
    if rng.random() < 0.1:
        mark = str(rng.choice(["articStaccatoAbove", "articAccentAbove", "fermataAbove"]))
        sheet.place(mark, x, top - 1.5 * space)
    return right + space * rng.uniform(1.2, 3.0)


def page(rng: np.random.Generator, width: int = 1400) -> engrave.Page:
    """One page of random staves."""
    space = round(float(rng.uniform(10.5, 13.5)) * 2) / 2  # half-pixel steps: glyphs render once per size
    font = str(rng.choice(FONTS))
    height = int(width * 1.414)
    sheet = Sheet(width, height, font, space)
    margin = int(width * rng.uniform(0.06, 0.1))
    top = margin + 4 * space
    while top + 10 * space < height - margin:
        for line in range(5):
            sheet.line(margin, top + line * space, width - margin, top + line * space, space / 10)
        clef = str(rng.choice(["gClef", "fClef", "cClef"], p=[0.6, 0.3, 0.1]))
        x = sheet.place(clef, margin + space / 2, top + {"gClef": 2.4, "fClef": 1.3, "cClef": 2.0}[clef] * space)
        for _ in range(int(rng.integers(0, 4))):
            x = sheet.place(str(rng.choice(["accidentalSharp", "accidentalFlat"])), x + 2, top + space * 1.5)
        if rng.random() < 0.4:
            digits = rng.choice([2, 3, 4, 6], size=2)
            sheet.place(f"timeSig{digits[0]}", x + space, top + space)
            x = sheet.place(f"timeSig{digits[1]}", x + space, top + 3 * space)
        x += space * 1.5
        while x < width - margin - 4 * space:
            if rng.random() < 0.12:
                x = sheet.place(str(rng.choice(RESTS)), x, top + 2 * space) + 1.5 * space
            else:
                x = _note(sheet, rng, x, top)
            if rng.random() < 0.05:
                sheet.place(str(rng.choice(DYNAMICS)), x - 2 * space, top + 7 * space)
        top += space * rng.uniform(10, 14)
    image = np.clip(255 * (1 - sheet.ink), 0, 255).astype(np.uint8)
    return engrave.Page(image, np.asarray(sheet.boxes, np.float32).reshape(-1, 4),
                        np.asarray(sheet.labels, np.int64), f"soup@{font}")


def pages(count: int, seed: int, width: int = 1400) -> list[engrave.Page]:
    rng = np.random.default_rng(seed)
    return [page(rng, width) for _ in range(count)]
