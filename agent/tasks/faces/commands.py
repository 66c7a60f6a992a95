"""The faces gallery command, ``edge-agent faces new-key|enrol|list|remove``: who the face task may recognise.

Kept light (``edge-agent --help`` imports it): the gallery, numpy and the model load only when it runs.  The
gallery lives in ``<state_dir>/faces/gallery.enc`` unless ``--gallery`` names another folder; its key comes
from ``--key-file`` or the ``EDGE_AGENT_FACES_KEY`` environment variable (docs/faces.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.tasks.base import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gallery", type=Path, help="the gallery's folder (default: <state_dir>/faces)")
    common.add_argument("--key-file", type=Path,
                        help="file holding the gallery key, base64 (default: $EDGE_AGENT_FACES_KEY)")
    actions = parser.add_subparsers(dest="faces_action", required=True, metavar="ACTION")
    actions.add_parser("new-key", parents=[common], help="write a new random key to --key-file (never overwrites)")
    enrol = actions.add_parser("enrol", parents=[common], help="add a person from photos (one face each) or "
                                                                "aligned 112x112 face crops")
    enrol.add_argument("--name", required=True, help="the person's name, e.g. \"Alice\"")
    enrol.add_argument("images", nargs="+", type=Path,
                       help="PNG or JPEG photos showing the person's face (the largest face is taken), or "
                            "aligned 112x112 crops (taken as they are)")
    actions.add_parser("list", parents=[common], help="the enrolled names, with views and enrolment times")
    remove = actions.add_parser("remove", parents=[common], help="forget a person completely")
    remove.add_argument("name", help="the name to remove")


def _run(args: argparse.Namespace, config: Any) -> int:
    from models.faces.runtime.gallery import GalleryKeyError, write_key_file

    if args.faces_action == "new-key":
        if args.key_file is None:
            raise GalleryKeyError("new-key writes to --key-file; give one")
        write_key_file(args.key_file)
        print(f"wrote a new gallery key to {args.key_file} (mode 600); keep a copy: without it the gallery "
              "cannot be read")
        return 0
    gallery = _open_gallery(args, config)
    if args.faces_action == "enrol":
        return _enrol(gallery, args.name, args.images)
    if args.faces_action == "remove":
        gallery.remove(args.name)
        print(f"removed {args.name!r} from {gallery.path}")
        return 0
    return _list(gallery)


def default_gallery(state_dir: Path) -> Path:
    """Where the gallery lives unless configured: the faces task's own state folder."""
    return state_dir / "faces"


def _open_gallery(args: argparse.Namespace, config: Any) -> Any:
    from models.faces.runtime.gallery import Gallery, load_key

    directory = args.gallery if args.gallery is not None else default_gallery(Path(config.state_dir))
    return Gallery(directory, load_key(args.key_file))


def _enrol(gallery: Any, name: str, images: list[Path]) -> int:
    from models.faces.runtime.embedder import FaceEmbedder

    embedder = FaceEmbedder()
    try:
        embeddings = embedder.embed(_read_crops(images, embedder))
    finally:
        embedder.close()
    identity = gallery.enrol(name, embeddings)
    print(f"enrolled {identity.name!r} with {len(images)} image(s) ({len(identity.embeddings)} in all) "
          f"in {gallery.path}")
    return 0


def _read_crops(images: list[Path], embedder: Any) -> Any:
    """One aligned 112x112 crop per image: an image of that size is taken as an aligned crop, any other is a
    photo whose largest face is found by the detector and aligned."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from models.faces.runtime.align import CROP_SIZE
    from sensors.errors import RejectedInput

    crops, detector = [], None
    try:
        for path in images:
            try:
                with Image.open(path) as image:
                    picture = np.asarray(image.convert("RGB"))
            except (OSError, UnidentifiedImageError) as error:
                raise RejectedInput(f"cannot read the face image {path}: {error}") from error
            if picture.shape[:2] == (CROP_SIZE, CROP_SIZE):
                crops.append(picture)
                continue
            if detector is None:
                from models.faces.runtime.detector import FaceDetector

                detector = FaceDetector()
            found = detector.detect(picture)
            if not found:
                raise RejectedInput(f"{path} ({picture.shape[1]}x{picture.shape[0]}): no face found; use a photo "
                                    f"with the face clearly visible, or an aligned {CROP_SIZE}x{CROP_SIZE} crop")
            largest = max(found, key=lambda face: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))
            crops.append(embedder.align(picture, largest.landmarks))
    finally:
        if detector is not None:
            detector.close()
    return np.stack(crops)


def _list(gallery: Any) -> int:
    import sys
    import time

    identities = gallery.load()
    if not identities:
        print(f"nobody is enrolled in {gallery.path}", file=sys.stderr)
        return 1
    for name in sorted(identities):
        identity = identities[name]
        enrolled = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(identity.enrolled))
        print(f"{name}: {len(identity.embeddings)} view(s), enrolled {enrolled}")
    return 0


FACES = Command(
    name="faces",
    help="Manage the encrypted face gallery: new-key, enrol NAME from face crops, list, remove NAME.",
    example="edge-agent faces --config /etc/edge-agent/agent.yaml enrol --key-file /etc/edge-agent/faces.key "
            "--name \"Alice\" alice-1.png alice-2.png",
    add_arguments=_arguments,
    run=_run,
)
COMMANDS = (FACES,)
