"""A DeepScores-like page generator: real scores from the music21 corpus, engraved by verovio, labelled per glyph.

Every visible SMuFL glyph of a verovio SVG is a ``<use>`` of a font glyph whose bounding box the
font's metrics file (shipped inside verovio) gives in font units, so each glyph's class (its SMuFL
name, grouped into DeepScores-like classes by :data:`CLASSES`) and page box come from the
engraving itself, not from guessing on pixels.  Stems, beams, staff and ledger lines are drawn as
lines, not glyphs, and are not objects (as in DeepScores v1).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

#: the music fonts verovio ships; the last two are kept for evaluation only (fonts the model never saw)
TRAIN_FONTS = ("Leipzig", "Bravura", "Gootville")
TEST_FONTS = ("Leland", "Petaluma")

#: held-out composers: their pieces never appear in training (classical and romantic piano and string music,
#: so the test also shifts the symbol mix towards dynamics, articulations and flags)
TEST_COMPOSERS = ("beethoven", "mozart", "joplin", "chopin", "schubert")
#: (josquin's Humdrum files do not load in verovio 6.4)
TRAIN_COMPOSERS = ("bach", "palestrina", "monteverdi", "trecento", "ryansMammoth", "haydn", "handel",
                   "corelli", "cpebach", "weber", "verdi", "luca")

#: DeepScores-like classes: class name -> SMuFL glyph-name prefixes (first match wins, order matters)
CLASSES: dict[str, tuple[str, ...]] = {
    "noteheadBlack": ("noteheadBlack",),
    "noteheadHalf": ("noteheadHalf",),
    "noteheadWhole": ("noteheadWhole", "noteheadDoubleWhole"),
    "augmentationDot": ("augmentationDot",),
    "accidentalSharp": ("accidentalSharp",),
    "accidentalFlat": ("accidentalFlat",),
    "accidentalNatural": ("accidentalNatural",),
    "gClef": ("gClef",),
    "fClef": ("fClef",),
    "cClef": ("cClef",),
    "restWhole": ("restWhole", "restDoubleWhole"),
    "restHalf": ("restHalf",),
    "restQuarter": ("restQuarter",),
    "rest8th": ("rest8th",),
    "rest16th": ("rest16th", "rest32nd", "rest64th"),
    "flag8th": ("flag8th",),
    "flag16th": ("flag16th", "flag32nd", "flag64th"),
    "timeSig": ("timeSig",),
    "dynamic": ("dynamic",),
    "articulation": ("articStaccato", "articAccent", "articTenuto", "articMarcato", "articStaccatissimo"),
    "fermata": ("fermata",),
    "tuplet": ("tuplet",),
    "keyboard": ("keyboardPedal",),
    "ornament": ("ornament",),
    "brace": ("brace",),
}
CLASS_NAMES = tuple(CLASSES)

#: verovio's internal units per page (its default A4 at scale 100 % is 21000 x 29700)
PAGE_UNITS = (21000, 29700)
_USE = re.compile(r"translate\(([-\d.]+),\s*([-\d.]+)\)\s*scale\(([-\d.]+),\s*([-\d.]+)\)")
_TRANSLATE = re.compile(r"translate\(([-\d.]+),\s*([-\d.]+)\)")
_XLINK = "{http://www.w3.org/1999/xlink}href"
ET.register_namespace("", "http://www.w3.org/2000/svg")
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


@dataclass(frozen=True)
class Page:
    """One engraved page: its grayscale pixels and its objects (boxes as x0, y0, x1, y1 in pixels)."""

    image: np.ndarray
    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64 index into CLASS_NAMES
    source: str


def class_of(glyph_name: str) -> int | None:
    """The class index of a SMuFL glyph name, or None for glyphs that are not objects."""
    for index, prefixes in enumerate(CLASSES.values()):
        if glyph_name.startswith(prefixes):
            return index
    return None


@cache
def font_metrics(font: str) -> dict[str, tuple[str, float, float, float, float]]:
    """Codepoint -> (SMuFL name, x, y, w, h) in font units, from the metrics file verovio ships."""
    import verovio

    root = ET.parse(Path(verovio.__file__).parent / "data" / f"{font}.xml").getroot()
    return {g.attrib["c"]: (g.attrib.get("n", ""), float(g.attrib["x"]), float(g.attrib["y"]),
                            float(g.attrib["w"]), float(g.attrib["h"])) for g in root.iter("g")}


def score_text(path: Path) -> str:
    """A corpus file's text for verovio (compressed MusicXML unzipped; UTF-16 files decoded)."""
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist()
                        if not n.startswith("META-INF") and n.endswith((".xml", ".musicxml")))
            raw = archive.read(name)
    else:
        raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    return raw.decode("utf-8", errors="replace")


def corpus_pieces(composers: tuple[str, ...]) -> list[Path]:
    """The corpus files of these composers that verovio can read (MusicXML, Humdrum, ABC), sorted."""
    import music21

    found: list[Path] = []
    for composer in composers:
        found.extend(Path(p) for p in music21.corpus.getComposer(composer)
                     if str(p).endswith((".mxl", ".xml", ".musicxml", ".krn", ".abc")))
    return sorted(set(found))


def glyph_boxes(root: ET.Element, font: str, pixels_per_unit: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1 in pixels) and class indices of every labelled glyph of a parsed verovio SVG."""
    metrics = font_metrics(font)
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[int] = []

    def walk(element: ET.Element, dx: float, dy: float) -> None:
        shift = _TRANSLATE.match(element.attrib.get("transform", "")) if element.tag.endswith("}g") else None
        if shift:
            dx, dy = dx + float(shift.group(1)), dy + float(shift.group(2))
        if element.tag.endswith("}use"):
            add(element, dx, dy)
        if element.attrib.get("class") == "dots":  # verovio draws augmentation dots as ellipses, not glyphs
            for dot in element.iter("{http://www.w3.org/2000/svg}ellipse"):
                x, y = float(dot.attrib["cx"]) + dx, float(dot.attrib["cy"]) + dy
                rx, ry = float(dot.attrib["rx"]), float(dot.attrib["ry"])
                boxes.append(((x - rx) * pixels_per_unit, (y - ry) * pixels_per_unit,
                              (x + rx) * pixels_per_unit, (y + ry) * pixels_per_unit))
                labels.append(CLASS_NAMES.index("augmentationDot"))
            return
        for child in element:
            walk(child, dx, dy)

    def add(use: ET.Element, dx: float, dy: float) -> None:
        code = use.attrib.get(_XLINK, "").lstrip("#").split("-")[0]
        placed = _USE.search(use.attrib.get("transform", ""))
        if code not in metrics or not placed:
            return
        name, gx, gy, gw, gh = metrics[code]
        label = class_of(name)
        if label is None or gw <= 0 or gh <= 0:
            return
        tx, ty, sx, sy = (float(v) for v in placed.groups())
        left, right = dx + tx + gx * sx, dx + tx + (gx + gw) * sx
        top, bottom = dy + ty - (gy + gh) * sy, dy + ty - gy * sy  # glyphs are drawn y-up
        boxes.append((left * pixels_per_unit, top * pixels_per_unit,
                      right * pixels_per_unit, bottom * pixels_per_unit))
        labels.append(label)

    definition = next(e for e in root.iter() if e.attrib.get("class") == "definition-scale")
    walk(definition, 0.0, 0.0)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)


def _drop_tempo_marks(root: ET.Element) -> None:
    """Tempo marks draw a note with a text font cairo does not have (an empty box on the page): drop them."""
    for parent in root.iter():
        for child in [c for c in parent if c.attrib.get("class") == "tempo"]:
            parent.remove(child)


def engrave(path: Path, font: str, page: int, width_px: int) -> Page | None:
    """Page ``page`` (1-based) of a corpus piece in ``font``, rasterised to ``width_px`` wide; None if the
    piece has no such page or verovio cannot read it."""
    import cairosvg
    import verovio
    from PIL import Image

    toolkit = verovio.toolkit()
    toolkit.setOptions({"font": font, "header": "none", "footer": "none", "scale": 40,
                        "pageWidth": 2100, "pageHeight": 2970, "breaks": "auto"})
    if not toolkit.loadData(score_text(path)) or page > toolkit.getPageCount():
        return None
    root = ET.fromstring(toolkit.renderToSVG(page))
    _drop_tempo_marks(root)
    height_px = round(width_px * PAGE_UNITS[1] / PAGE_UNITS[0])
    png = cairosvg.svg2png(bytestring=ET.tostring(root), output_width=width_px, output_height=height_px,
                           background_color="white")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    boxes, labels = glyph_boxes(root, font, width_px / PAGE_UNITS[0])
    return Page(image, boxes, labels, f"{path.parent.name}/{path.name}#{page}@{font}")
