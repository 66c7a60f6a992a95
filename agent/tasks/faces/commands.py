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
    enrol = actions.add_parser("enrol", parents=[common], help="add a person from aligned 112x112 face crops")
    enrol.add_argument("--name", required=True, help="the person's name, e.g. \"Alice\"")
    enrol.add_argument("images", nargs="+", type=Path, help="aligned 112x112 face crops (PNG or JPEG)")
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


def _open_gallery(args: argparse.Namespace, config: Any) -> Any:
    from models.faces.runtime.gallery import Gallery, load_key

    directory = args.gallery if args.gallery is not None else Path(config.state_dir) / "faces"
    return Gallery(directory, load_key(args.key_file))


def _enrol(gallery: Any, name: str, images: list[Path]) -> int:
    from models.faces.runtime.embedder import FaceEmbedder

    crops = _read_crops(images)
    embedder = FaceEmbedder()
    try:
        embeddings = embedder.embed(crops)
    finally:
        embedder.close()
    identity = gallery.enrol(name, embeddings)
    print(f"enrolled {identity.name!r} with {len(images)} image(s) ({len(identity.embeddings)} in all) "
          f"in {gallery.path}")
    return 0


def _read_crops(images: list[Path]) -> Any:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from models.faces.runtime.align import CROP_SIZE
    from sensors.errors import RejectedInput

    crops = []
    for path in images:
        try:
            with Image.open(path) as image:
                crop = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise RejectedInput(f"cannot read the face image {path}: {error}") from error
        if crop.shape[:2] != (CROP_SIZE, CROP_SIZE):
            raise RejectedInput(f"{path} is {crop.shape[1]}x{crop.shape[0]}; enrol takes aligned "
                                f"{CROP_SIZE}x{CROP_SIZE} face crops")
        crops.append(crop)
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
