"""Choose the faces task's identification threshold on validation identities (``python -m agent.tasks.faces.tune``).

The embedder's ``same_person_similarity`` is chosen for 1:1 verification; a camera compares every
face with everyone enrolled, so more faces pass by chance.  This runs the whole task (detector,
alignment, tracking, averaging, gallery) on simulated entrance cameras whose staff and visitors
are the embedder's VALIDATION identities (800-879 of seed 21; the demo uses test identities), and
writes the lowest similarity at which at most ``--visitor-rate`` of visitor tracks are matched to
someone into the embedder manifest as ``thresholds.identify_similarity``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import structlog
import yaml

from agent.tasks.base import TaskContext
from agent.tasks.faces.config import FacesConfig
from agent.tasks.faces.demo_gallery import VIEWS, write_demo_gallery
from agent.tasks.faces.task import FacesTask
from models.runtime import load_model
from sensors.simulate.entrance import entrance_stream
from sensors.simulate.faces import Identity, sample_identities

MANIFEST = Path(__file__).resolve().parents[3] / "models" / "faces" / "manifest.yaml"


def track_scores(task: FacesTask, people: list[Identity], staff_share: float, seeds: range,
                 frames: int = 60) -> list[float]:
    """The closest-person similarity of every track decision on cameras with this share of staff visits."""
    scores = []
    for seed in seeds:
        sensor = f"door-{seed}"
        drafts = []
        for message in entrance_stream(sensor, seed, 1.0, staff_share, 0, frames_per_visit=6, people=people):
            if message.seq >= frames:
                break
            drafts += task.process(message)
        drafts += task.finish_camera(sensor)
        scores += [float(draft.score) for draft in drafts if draft.score is not None]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitor-rate", type=float, default=0.1, help="visitor tracks matched, at most")
    parser.add_argument("--write", action="store_true", help="write the threshold into the embedder manifest")
    args = parser.parse_args()
    validation = sample_identities(880, 21)[800:880]  # staff and visitors from the validation split
    folder = Path(tempfile.mkdtemp(prefix="faces-tune-"))
    write_demo_gallery(folder, views=VIEWS, people=validation)
    context = TaskContext("tune", folder, load_model, structlog.get_logger("tune"))
    task = FacesTask(FacesConfig(enabled=True, gallery=folder, key_file=folder / "demo.key", match_similarity=0.0),
                     context)
    staff = track_scores(task, validation, 1.0, range(101, 109))
    visitors = track_scores(task, validation, 0.0, range(201, 209))
    task.close()
    cuts = np.round(np.arange(0.3, 0.9, 0.025), 3)
    chosen = next(float(c) for c in cuts if np.mean(np.asarray(visitors) >= c) <= args.visitor_rate)
    print(f"{len(staff)} staff tracks, {len(visitors)} visitor tracks; at {chosen}: staff named "
          f"{np.mean(np.asarray(staff) >= chosen):.1%}, visitors matched {np.mean(np.asarray(visitors) >= chosen):.1%}")
    if args.write:
        data = yaml.safe_load(MANIFEST.read_text())
        data["thresholds"]["identify_similarity"] = chosen
        MANIFEST.write_text(yaml.safe_dump(data, sort_keys=False))
        print(f"wrote thresholds.identify_similarity {chosen} into {MANIFEST}")


if __name__ == "__main__":
    main()
