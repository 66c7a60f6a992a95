"""A simulated entrance camera: enrolled staff and unknown visitors walk up to it, one JPEG frame at a time."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from sensors.simulate.faces import (
    Identity,
    Placement,
    render_face,
    render_frame,
    sample_identities,
    sample_nuisance,
    scene_backdrop,
)
from sensors.wire import Encoding, Kind, SensorMessage

#: identities of the face model's TEST split (models/faces/README.md: seed 21, 880-1119), so the demo shows
#: people the embedder never saw; the first four, one per generator group, are the demo's enrolled staff
IDENTITY_SEED, FIRST_TEST, LAST_TEST = 21, 880, 1119
STAFF_NAMES = ("Ada", "Bjorn", "Chidi", "Mei")
WIDTH, HEIGHT = 640, 480


def held_out_identities() -> list[Identity]:
    """The face model's test identities, in order (staff first)."""
    return sample_identities(LAST_TEST + 1, IDENTITY_SEED)[FIRST_TEST:]


def staff(people: list[Identity] | None = None) -> dict[str, Identity]:
    """The enrolled people of the demo, by name: the first of ``people`` (default: the held-out identities)."""
    pool = held_out_identities() if people is None else people
    return dict(zip(STAFF_NAMES, pool[: len(STAFF_NAMES)], strict=True))


def enrolment_crops(identity: Identity, views: int, seed: int) -> np.ndarray:
    """``views`` aligned 112x112 pictures of ``identity`` (what ``edge-agent faces enrol`` takes)."""
    rng = np.random.default_rng(seed)
    return np.stack([render_face(identity, rng) for _ in range(views)])


@dataclass
class Visit:
    """One person walking up to the camera: their face grows from ``first_side`` as they come closer."""

    identity: Identity
    name: str | None  # None for a visitor
    start: int  # frame index of the first appearance
    frames: int
    first_side: float
    last_side: float
    start_x: float
    end_x: float
    top: float
    seed: int

    def __post_init__(self) -> None:
        self.base = sample_nuisance(np.random.default_rng(self.seed))  # the visit's light and pose, jittered per frame

    def placement(self, frame: int) -> Placement | None:
        step = frame - self.start
        if not 0 <= step < self.frames:
            return None
        share = step / max(self.frames - 1, 1)
        side = self.first_side + (self.last_side - self.first_side) * share
        x = self.start_x + (self.end_x - self.start_x) * share
        rng = np.random.default_rng((self.seed, step))
        base = self.base
        nuisance = replace(base, yaw=float(np.clip(base.yaw * 0.5 + rng.normal(0, 0.08), -0.45, 0.45)),
                           roll=float(base.roll * 0.5 + rng.normal(0, 2)), smile=float(rng.uniform(-0.2, 0.6)),
                           blink=float(rng.uniform(0, 1) ** 4), mask=False)
        return Placement(self.identity, nuisance, int(side), (x, self.top - side / 2))


class EntranceScript:
    """Who shows up when at one camera: visits drawn from ``seed``, staff with probability ``staff_share``; staff
    and visitors come from ``people`` (default: the face model's held-out identities), staff first."""

    def __init__(self, seed: int, staff_share: float, frames_per_visit: int,
                 people: list[Identity] | None = None) -> None:
        pool = held_out_identities() if people is None else people
        self.rng = np.random.default_rng(seed)
        self.staff_share = staff_share
        self.frames_per_visit = frames_per_visit
        self.people = staff(pool)
        self.visitors = pool[len(STAFF_NAMES):]
        self.visits: list[Visit] = []
        self.next_start = 0

    def _new_visit(self, start: int) -> Visit:
        rng = self.rng
        if rng.random() < self.staff_share:
            name = str(rng.choice(list(self.people)))
            identity, label = self.people[name], name
        else:
            identity, label = self.visitors[int(rng.integers(len(self.visitors)))], None
        side = float(rng.uniform(60, 90))
        start_x = float(rng.uniform(40, WIDTH - 220))
        return Visit(identity, label, start, self.frames_per_visit + int(rng.integers(0, 4)), side,
                     side * float(rng.uniform(1.3, 1.7)), start_x, start_x + float(rng.uniform(-40, 60)),
                     float(rng.uniform(170, 260)), int(rng.integers(2**31)))

    def placements(self, frame: int) -> list[Placement]:
        """The faces in frame ``frame`` (0, 1 or 2 people; the second only when there is room)."""
        while self.next_start <= frame:
            self.visits.append(self._new_visit(self.next_start))
            self.next_start += int(self.rng.integers(self.frames_per_visit // 2, self.frames_per_visit * 2))
        self.visits = [v for v in self.visits if v.start + v.frames > frame]
        placed: list[Placement] = []
        for visit in self.visits:
            placement = visit.placement(frame)
            if placement is not None and all(_apart(placement, other) for other in placed):
                placed.append(placement)
        return placed


def _apart(first: Placement, second: Placement) -> bool:
    return (first.spot[0] + first.side < second.spot[0] or second.spot[0] + second.side < first.spot[0]
            or first.spot[1] + first.side < second.spot[1] or second.spot[1] + second.side < first.spot[1])


def entrance_stream(sensor_id: str, seed: int, fps: float, staff_share: float, start_ns: int,
                    frames_per_visit: int = 8, quality: int = 90,
                    people: list[Identity] | None = None) -> Iterator[SensorMessage]:
    """JPEG frames of one entrance camera, ``fps`` a second, forever (``people`` as for EntranceScript)."""
    rng = np.random.default_rng((seed, 1))
    backdrop = scene_backdrop(rng, WIDTH, HEIGHT)
    light = replace(sample_nuisance(rng), light_strength=0.2, brightness=1.0, blur=0.3, noise=3.0)
    script = EntranceScript(seed, staff_share, frames_per_visit, people)
    frame = 0
    while True:
        image, _ = render_frame(backdrop, script.placements(frame), rng, light)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        yield SensorMessage(sensor_id, Kind.FRAME, frame, start_ns + int(frame / fps * 1e9), buffer.getvalue(),
                            0.0, Encoding.JPEG, {})
        frame += 1
