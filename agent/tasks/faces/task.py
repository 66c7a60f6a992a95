"""Face matching: faces at a camera tracked across frames and matched, once per track, against an encrypted gallery.

Per frame: detect faces (boxes and five landmarks), align each to the embedder's 112x112 crop, embed,
and follow them with an IoU tracker (models/faces/runtime).  A track is decided once, on the mean
of its first ``decide_after`` embeddings (or of what it had when the face left), as
``face_matched`` or ``face_unknown``; its embeddings are dropped right after the decision, so
nothing biometric outlives a track.  The gallery is read again whenever its file changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.faces import events
from agent.tasks.faces.commands import COMMANDS
from agent.tasks.faces.config import FacesConfig
from agent.tasks.faces.simulate import EntranceSimulation
from agent.tasks.frames import decode_frame, encode_jpeg
from agent.windowing import Window
from models.faces.runtime.detector import DetectedFace, FaceDetector
from models.faces.runtime.embedder import FaceEmbedder
from models.faces.runtime.gallery import Gallery, LiveGallery, load_key
from models.faces.runtime.tracker import Decision, DecisionPolicy, IouTracker, Track
from models.runtime import Manifest
from sensors.errors import ConfigError
from sensors.wire import Kind, SensorMessage

#: how often a camera's "more faces than max_faces" and "faces too small" counts are logged, at most
LOG_EVERY_S = 60.0


@dataclass
class _Camera:
    """What the task keeps per camera: its tracks, the last aligned crop per track, and what was skipped."""

    tracker: IouTracker
    last_seen: float = 0.0  # time.monotonic() of the last frame
    last_frame_ns: int = 0
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    over_limit: int = 0
    too_small: int = 0
    last_log: float = 0.0


def match_threshold(config: FacesConfig, manifest: Manifest) -> float:
    """The similarity cut: the config's, else the manifest's identification threshold (chosen for one face
    against a gallery), else its 1:1 verification threshold (what third-party models come with)."""
    if config.match_similarity is not None:
        return config.match_similarity
    for name in ("identify_similarity", "same_person_similarity"):
        if name in manifest.thresholds:
            return float(manifest.thresholds[name])
    raise ConfigError(f"faces: {manifest.path} has no thresholds.identify_similarity or same_person_similarity; "
                      "set match_similarity")


def open_gallery(config: FacesConfig, task_state_dir: Path) -> Gallery:
    """The configured gallery with its key (raises a GalleryError saying what is missing or wrong); by default
    in the task's state folder, ``<state_dir>/faces``, where ``edge-agent faces enrol`` puts it."""
    directory = config.gallery if config.gallery is not None else task_state_dir
    return Gallery(directory, load_key(config.key_file))


class FacesTask(Task[FacesConfig]):
    """Camera frames -> one ``face_matched`` or ``face_unknown`` event per face track."""

    name = "faces"
    kinds = frozenset({Kind.FRAME})
    config_type = FacesConfig
    events = events.EVENTS
    simulation = EntranceSimulation
    commands = COMMANDS
    replicated_state = False  # the gallery is biometric data: it stays on the box it was enrolled on

    def __init__(self, config: FacesConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        assert config.model is not None and config.detector is not None  # the fields have defaults
        self.embedder = FaceEmbedder(model=context.load_model(config.model))
        self.detector = FaceDetector(model=context.load_model(config.detector), score_threshold=config.detect_score,
                                     max_faces=200)
        self.threshold = match_threshold(config, self.embedder.model.manifest)
        self.gallery = LiveGallery(open_gallery(config, context.state_dir))
        if not self.gallery.identities:
            context.log.warning("faces gallery is empty: every face will be reported unknown",
                                gallery=str(self.gallery.gallery.path))
        self.policy = DecisionPolicy(config.decide_after)
        self.refs = [ModelRef(m.name, m.version) for m in (self.detector.model.manifest,
                                                           self.embedder.model.manifest)]
        self.cameras: dict[str, _Camera] = {}

    @classmethod
    def check(cls, config: FacesConfig) -> None:
        """Both models load, the embedder has a threshold, and the gallery key opens the gallery (if one exists
        yet): a wrong key or a damaged file stops the start with the reason, rather than every face unknown."""
        from models.runtime import load_manifest

        assert config.model is not None and config.detector is not None
        load_manifest(config.detector)
        match_threshold(config, load_manifest(config.model))
        key = load_key(config.key_file)
        if config.gallery is not None:  # the default one lies in the state dir, which is not known here
            Gallery(config.gallery, key).load()

    def models(self) -> list[ModelRef]:
        return list(self.refs)

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, SensorMessage):
            raise RejectedInput(f"faces takes camera frames, got a {item.kind.name.lower()} window")
        image = decode_frame(item, mode="RGB", min_side=32)
        camera = self._camera(item.sensor_id)
        camera.last_seen, camera.last_frame_ns = time.monotonic(), item.timestamp_ns
        faces = self._usable(camera, self.detector.detect(image))
        result = camera.tracker.update([face.box for face in faces])
        drafts: list[EventDraft] = []
        if faces:
            crops = np.stack([self.embedder.align(image, face.landmarks) for face in faces])
            for track_id, crop, embedding in zip(result.track_ids, crops, self.embedder.embed(crops), strict=True):
                track = camera.tracker.tracks[track_id]
                if track.decided:
                    continue
                track.add_embedding(embedding)
                if self.config.attach_face:  # kept for the decision's attachment only
                    camera.crops[track_id] = crop
                decision = self.policy.ready(track)
                if decision is not None:
                    drafts.append(self._decide(item.sensor_id, camera, track, decision, item.timestamp_ns))
        drafts += self._end(item.sensor_id, camera, result.ended, item.timestamp_ns)
        self._log_skipped(item.sensor_id, camera)
        return drafts

    def _camera(self, sensor: str) -> _Camera:
        camera = self.cameras.get(sensor)
        if camera is None:
            camera = self.cameras[sensor] = _Camera(IouTracker(self.config.track_iou, self.config.max_missed))
        return camera

    def _usable(self, camera: _Camera, found: list[DetectedFace]) -> list[DetectedFace]:
        """The most confident ``max_faces`` faces big enough to embed; the others are counted."""
        big = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.config.min_face_px]
        camera.too_small += len(found) - len(big)
        camera.over_limit += max(0, len(big) - self.config.max_faces)
        return big[: self.config.max_faces]

    def _decide(self, sensor: str, camera: _Camera, track: Track, decision: Decision, time_ns: int) -> EventDraft:
        problem = self.gallery.refresh()
        if problem is not None:
            self.context.log.error("faces gallery changed but cannot be read; the previous copy stays in use",
                                   reason=problem, failed_reloads=self.gallery.failed_reloads)
        closest, similarity = self.gallery.match(decision.embedding)
        common = dict(track_id=track.track_id, frames=decision.frames, at_track_end=decision.at_track_end,
                      box=[round(v, 1) for v in track.box], threshold=round(self.threshold, 4))
        crop = camera.crops.pop(track.track_id, None)
        track.embeddings.clear()  # decided: nothing biometric is kept past this point
        attachment = encode_jpeg(crop) if self.config.attach_face and crop is not None else None
        if closest is not None and similarity is not None and similarity >= self.threshold:
            body: events.FaceMatched | events.FaceUnknown = events.FaceMatched(
                identity=closest, similarity=round(similarity, 4), **common)
            return body.draft(sensor, time_ns, "info", similarity, self.refs[1], attachment)
        best = None if similarity is None else round(similarity, 4)
        body = events.FaceUnknown(best_similarity=best, closest=closest, **common)
        return body.draft(sensor, time_ns, "warning", best, self.refs[1], attachment)

    def _end(self, sensor: str, camera: _Camera, ended: list[Track], time_ns: int) -> list[EventDraft]:
        """Decisions for tracks that ended undecided; every ended track is forgotten."""
        drafts = []
        for track in ended:
            decision = self.policy.ended(track)
            if decision is not None:
                drafts.append(self._decide(sensor, camera, track, decision, time_ns))
            camera.crops.pop(track.track_id, None)
        return drafts

    def _log_skipped(self, sensor: str, camera: _Camera) -> None:
        now = time.monotonic()
        if (camera.over_limit or camera.too_small) and now - camera.last_log >= LOG_EVERY_S:
            self.context.log.warning("faces skipped", sensor=sensor, over_max_faces=camera.over_limit,
                                     smaller_than_min_face_px=camera.too_small, max_faces=self.config.max_faces,
                                     min_face_px=self.config.min_face_px)
            camera.over_limit = camera.too_small = 0
            camera.last_log = now

    def tick(self, now_ns: int) -> list[EventDraft]:
        """Cameras unseen for ``retention_s`` have their tracks decided and forgotten."""
        now = time.monotonic()
        stale = [sensor for sensor, camera in self.cameras.items() if now - camera.last_seen > self.config.retention_s]
        return [draft for sensor in stale for draft in self.finish_camera(sensor)]

    def finish_camera(self, sensor: str) -> list[EventDraft]:
        """Decide the camera's open tracks now and forget the camera (its stream stopped)."""
        camera = self.cameras.pop(sensor, None)
        if camera is None:
            return []
        return self._end(sensor, camera, camera.tracker.finish(), camera.last_frame_ns)

    def forget(self, sensor: str) -> None:
        self.cameras.pop(sensor, None)

    def close(self) -> None:
        self.detector.close()
        self.embedder.close()
