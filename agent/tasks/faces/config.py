"""Settings of the faces task: models, the gallery and its key, tracking, decisions and what events may carry."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.tasks.base import ModelPath, ShippedPath, TaskConfig


class FacesConfig(TaskConfig):
    """Settings of the faces task. Face embeddings are biometric data: the task is off unless enabled."""

    enabled: bool = Field(default=False, description="run this task; off unless set (biometric data, docs/faces.md)")
    model: ModelPath | None = Field(default=Path("models/faces"), description="face embedder manifest (ArcFace-style "
                                    "interface: aligned 112x112 RGB in, embedding out; docs/faces.md)")
    detector: ModelPath | None = Field(default=Path("models/faces/detector"),
                                       description="face detector manifest (boxes and five landmarks)")
    gallery: ShippedPath | None = Field(default=None, description="folder of gallery.enc; default <state_dir>/faces")
    key_file: ShippedPath | None = Field(default=None, description="file holding the gallery key (base64); "
                                         "default: the EDGE_AGENT_FACES_KEY environment variable")
    match_similarity: float | None = Field(default=None, gt=-1, lt=1, description="same person at this cosine "
                                           "similarity or more; default: the embedder manifest's threshold")
    detect_score: float | None = Field(default=None, gt=0, lt=1,
                                       description="face detection score cut; default: the detector manifest's")
    max_faces: int = Field(default=10, ge=1, le=200, description="faces tracked per frame at most (the most "
                                                                  "confident); the rest are counted in the log")
    min_face_px: float = Field(default=24.0, ge=8, le=1000,
                               description="smaller faces (box side) are not embedded: too few pixels to tell")
    decide_after: int = Field(default=3, ge=1, le=100, description="a track is decided on the mean embedding of "
                              "this many frames (earlier if the track ends)")
    track_iou: float = Field(default=0.3, gt=0, le=1, description="IoU that links a box to a track")
    max_missed: int = Field(default=3, ge=0, le=100, description="frames a track may be unseen before it ends")
    retention_s: float = Field(default=30.0, gt=0, le=86_400, description="a track's embeddings are forgotten "
                               "this long after it was last seen, at the latest")
    attach_face: bool = Field(default=False, description="attach the aligned face crop (JPEG) to each decision "
                              "event; off by default: no face images leave the device")
    queue_size: int = Field(default=8, ge=1, le=100_000, description="bounded input queue length")
