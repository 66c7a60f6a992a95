"""Each camera station's learned normal for the quality task: learning, saving, resets and operator feedback.

A camera learns its station's normal appearance from its first ``learn_frames`` frames (the parts a
station is commissioned with, assumed good), saves it as ``<state_dir>/quality/stations/<camera>.npz``
and resumes it after a restart.  Deleting the file (``edge-agent quality relearn CAMERA``) makes the
running agent learn again; ``edge-agent quality false-reject CAMERA PART`` drops a request file that
the running agent takes in: the rejected part's hot cells join the station's bank.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from models.quality.runtime.descriptors import KIND
from models.quality.runtime.station import StationLearner, StationNormal, StationSettings
from sensors.errors import StateError
from sensors.files import write_bytes_atomic, write_json_atomic

#: rejects kept per camera for false-reject feedback (their hot cells, a few KB each)
KEPT_REJECTS = 100


@dataclass
class Station:
    """One camera's learner or learned normal, and what it was learned for."""

    camera: str
    shape: tuple[int, int]
    learner: StationLearner | None = None
    normal: StationNormal | None = None
    saved: bool = False
    reason: str = "new camera"
    started: float = field(default_factory=time.monotonic)

    @property
    def learning(self) -> bool:
        return self.normal is None


@dataclass(frozen=True)
class FeedbackResult:
    """What became of one false-reject request."""

    camera: str
    part_id: str
    cells: int  # cells added to the bank; 0 when the part was not found
    reason: str = ""


class StationStore:
    """The stations' folder: one ``.npz`` per camera, kept rejects, and pending feedback requests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, camera: str) -> Path:
        return self.directory / f"{camera}.npz"

    def cameras(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.npz")) if self.directory.is_dir() else []

    def save(self, camera: str, normal: StationNormal, shape: tuple[int, int], model: str) -> None:
        meta = json.dumps({"shape": list(shape), "model": model, "features": KIND}).encode()
        write_bytes_atomic(self.path(camera), len(meta).to_bytes(4, "big") + meta + normal.to_bytes())

    def load(self, camera: str, shape: tuple[int, int], model: str) -> StationNormal:
        """The saved normal; StateError if it is missing, unreadable, or for another frame size, model or descriptor."""
        try:
            data = self.path(camera).read_bytes()
            size = int.from_bytes(data[:4], "big")
            meta = json.loads(data[4 : 4 + size])
            if meta.get("features") != KIND:  # a normal of another descriptor is another feature space
                learned_on = meta.get("features", "the classifier's")
                raise StateError(f"learned on cell features {learned_on!r}, not {KIND!r}")
            normal = StationNormal.from_bytes(data[4 + size :])
        except (OSError, ValueError, KeyError) as error:
            raise StateError(f"{self.path(camera)}: {error}") from None
        if tuple(meta.get("shape", ())) != shape or meta.get("model") != model:
            raise StateError(f"learned for frames {meta.get('shape')} and model {str(meta.get('model'))[:12]}, "
                             f"not {list(shape)} and {model[:12]}")
        return normal

    def reset(self, camera_pattern: str) -> list[str]:
        """Delete the learned normal of every camera matching the fnmatch pattern; returns their ids."""
        removed = [camera for camera in self.cameras() if fnmatch.fnmatchcase(camera, camera_pattern)]
        for camera in removed:
            self.path(camera).unlink(missing_ok=True)
        return removed

    def keep_reject(self, camera: str, part_id: str, points: np.ndarray) -> None:
        """Keep a reject's projected hot cells so an operator can later call it a false reject."""
        folder = self.directory / "rejects" / camera
        write_bytes_atomic(folder / f"{_safe(part_id)}.npy", _npy(points.astype(np.float16)))
        kept = sorted(folder.glob("*.npy"), key=lambda path: path.stat().st_mtime)
        for old in kept[:-KEPT_REJECTS]:
            old.unlink(missing_ok=True)

    def reject_points(self, camera: str, part_id: str) -> np.ndarray | None:
        try:
            return np.load(self.directory / "rejects" / camera / f"{_safe(part_id)}.npy").astype(np.float32)
        except (OSError, ValueError):
            return None

    def request_false_reject(self, camera: str, part_id: str) -> Path:
        """Queue feedback for the running agent (it takes it in within seconds, or at its next start)."""
        name = f"{time.time_ns()}-{_safe(camera)}.json"
        return write_json_atomic(self.directory / "requests" / name, {"camera": camera, "part_id": part_id})

    def pending_requests(self) -> list[tuple[Path, dict[str, Any]]]:
        folder = self.directory / "requests"
        requests = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                request = json.loads(path.read_text())
            except (OSError, ValueError):
                request = {}
            requests.append((path, request if isinstance(request, dict) else {}))
        return requests


class Stations:
    """The task's stations by camera: resume, learn, notice resets, take feedback."""

    def __init__(self, store: StationStore, settings: StationSettings, model: str,
                 log: structlog.stdlib.BoundLogger) -> None:
        self.store = store
        self.settings = settings
        self.model = model
        self.log = log
        self.by_camera: dict[str, Station] = {}

    def station(self, camera: str, shape: tuple[int, int]) -> tuple[Station, bool]:
        """The camera's station and whether it starts learning now (new, reset or the frame size changed)."""
        station = self.by_camera.get(camera)
        if station is not None and station.shape == shape:
            return station, False
        reason = "new camera" if station is None else "the frame size changed"
        if station is None:
            try:
                normal = self.store.load(camera, shape, self.model)
                self.by_camera[camera] = station = Station(camera, shape, normal=normal, saved=True)
                self.log.info("resumed station normal", sensor=camera, frames=normal.frames)
                return station, False
            except StateError as error:
                if self.store.path(camera).exists():
                    reason = f"saved normal not usable: {error}"
        return self._learn(camera, shape, reason), True

    def _learn(self, camera: str, shape: tuple[int, int], reason: str) -> Station:
        self.log.info("learning station normal", sensor=camera, reason=reason, frames=self.settings.frames)
        station = Station(camera, shape, learner=StationLearner(self.settings), reason=reason)
        self.by_camera[camera] = station
        return station

    def learn(self, station: Station, cells: np.ndarray) -> bool:
        """Add a learning frame; True when this frame completed the station (it is then saved)."""
        assert station.learner is not None
        station.learner.add(cells)
        if not station.learner.ready:
            return False
        station.normal, station.learner = station.learner.build(), None
        self.save(station)
        return True

    def save(self, station: Station) -> None:
        assert station.normal is not None
        try:
            self.store.save(station.camera, station.normal, station.shape, self.model)
            station.saved = True
        except OSError as error:  # a full disk must not stop inspection: the station stays in memory
            self.log.warning("station normal not saved", sensor=station.camera, error=str(error))

    def notice_resets(self) -> list[Station]:
        """Stations whose saved file vanished (``quality relearn``): they learn again; returns them."""
        reset = []
        for camera, station in list(self.by_camera.items()):
            if station.saved and not self.store.path(camera).exists():
                reset.append(self._learn(camera, station.shape, "relearn requested"))
        return reset

    def take_feedback(self) -> list[FeedbackResult]:
        """Apply pending false-reject requests to learned stations; each request file is then removed."""
        results = []
        for path, request in self.store.pending_requests():
            camera, part_id = str(request.get("camera", "")), str(request.get("part_id", ""))
            station = self.by_camera.get(camera)
            if station is not None and station.learning:
                continue  # taken in once the station has learned
            results.append(self._apply(camera, part_id, station))
            path.unlink(missing_ok=True)
        return results

    def _apply(self, camera: str, part_id: str, station: Station | None) -> FeedbackResult:
        points = self.store.reject_points(camera, part_id)
        if station is None or station.normal is None:
            return FeedbackResult(camera, part_id, 0, "no learned station for this camera since the agent started")
        if points is None:
            return FeedbackResult(camera, part_id, 0, f"no kept reject {part_id!r} (the last {KEPT_REJECTS} are kept)")
        station.normal.extend(points)
        self.save(station)
        return FeedbackResult(camera, part_id, len(points))


def _safe(name: str) -> str:
    """A part id as a file name: anything outside A-Z a-z 0-9 _ . - becomes _."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)[:128] or "_"


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
