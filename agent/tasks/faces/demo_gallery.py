"""Write the demo's face gallery (``python -m agent.tasks.faces.demo_gallery``): the entrance staff, enrolled.

Renders a few aligned pictures of each staff member of the simulated entrance camera, saves them
as PNGs (what ``edge-agent faces enrol`` takes, so the README can show the command on them), and
enrols them with the shipped embedder into ``sensors/simulate/data/faces/gallery.enc`` under a
demo key stored beside it.  The key is published with the package: it protects nothing and is
only for the demo's synthetic people.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

import sensors
from models.faces.runtime.embedder import FaceEmbedder
from models.faces.runtime.gallery import Gallery, load_key, write_key_file
from sensors.simulate.entrance import enrolment_crops, staff
from sensors.simulate.faces import Identity

DEMO_FACES = Path(sensors.__file__).resolve().parent / "simulate" / "data" / "faces"
KEY_FILE = DEMO_FACES / "demo.key"
VIEWS = 8


def write_demo_gallery(folder: Path = DEMO_FACES, views: int = VIEWS, seed: int = 3,
                       people: list[Identity] | None = None) -> Gallery:
    """Enrol every staff member (of ``people``, as the entrance camera picks them) from ``views`` rendered crops
    (also saved as PNGs) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "demo.key"
    if not key_file.exists():
        write_key_file(key_file)
    gallery = Gallery(folder, load_key(key_file))
    if gallery.path.exists():
        gallery.path.unlink()  # written anew: the people and the embedder may have changed
    embedder = FaceEmbedder()
    try:
        for index, (name, identity) in enumerate(staff(people).items()):
            crops = enrolment_crops(identity, views, seed + index)
            for view, crop in enumerate(crops):
                Image.fromarray(crop).save(folder / f"{name.lower()}-{view + 1}.png")
            gallery.enrol(name, embedder.embed(crops))
    finally:
        embedder.close()
    return gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEMO_FACES)
    args = parser.parse_args()
    gallery = write_demo_gallery(args.folder)
    print(f"wrote {gallery.path}: {', '.join(gallery.names())}")


if __name__ == "__main__":
    main()
