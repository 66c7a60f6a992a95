"""Write the demo's page photos: held-out composers' pages, degraded like phone photos, with their ground truth.

    python -m models.symbols.demo_pages

Writes ``sensors/simulate/data/pages/page-N.jpg`` and ``truth.json`` (boxes and class names per
page), which the demo's page station shows and the task's tests score against.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

import sensors
from models.symbols import data, engrave
from models.symbols.degrade import degrade

OUT = Path(sensors.__file__).resolve().parent / "simulate" / "data" / "pages"


def write_pages(count: int, seed: int, out: Path, quality: int = 80) -> list[Path]:
    pages = data.cached_pages("test", engrave.TEST_COMPOSERS, engrave.TRAIN_FONTS, 40, 3).pages
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, object] = {}
    written: list[Path] = []
    for index in rng.choice(len(pages), count, replace=False):
        page = pages[int(index)]
        image, boxes = degrade(page.image, page.boxes, rng, strength=0.8, desk=True)
        path = out / f"page-{len(written)}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        path.write_bytes(buffer.getvalue())
        truth[path.name] = {"source": page.source,
                            "boxes": np.round(boxes, 1).tolist(),
                            "classes": [engrave.CLASS_NAMES[int(label)] for label in page.labels]}
        written.append(path)
    (out / "truth.json").write_text(json.dumps(truth))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    for path in write_pages(args.count, args.seed, OUT):
        print(path, path.stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
