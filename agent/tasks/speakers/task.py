"""Speaker clustering, live: microphone windows -> voice activity -> turns -> on-line speaker clusters.

Per microphone: the audio is checked (rate, NaN, clipping) and brought to 16 kHz mono; silero-vad
finds speech; speech is cut into turns at pauses and at speaker changes
(:mod:`models.speakers.runtime.turns`); each turn's embedding (the speakers model, ONNX) joins a
cluster or opens one, and the clusters are re-clustered now and then
(:mod:`models.speakers.runtime.clusters`).  Events: ``speaker_turn`` per turn and
``speakers_changed`` when clusters appear, merge, split or age out.  Cluster state (centroids,
counts, names, history summary; never audio) is one JSON file per microphone in the task's state
dir, saved periodically and on close and loaded at start.  Names come from
``edge-agent speakers name`` through ``<mic>.names.json`` beside it.  Audio leaves the device only
with ``publish_audio``.
"""

from __future__ import annotations

import io
import time
import wave
from dataclasses import dataclass

import numpy as np

from agent.events import EventDraft, ModelRef, iso_time
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.speakers import events
from agent.tasks.speakers.commands import COMMANDS, NameStore
from agent.tasks.speakers.config import SpeakersConfig
from agent.tasks.speakers.simulate import MicrophoneSimulation
from agent.windowing import Window
from models.runtime import Model
from models.speakers.runtime.clusters import Assignment, Change, SpeakerClusters
from models.speakers.runtime.features import N_MELS, SAMPLE_RATE, SEGMENT_FRAMES, to_mono_16k
from models.speakers.runtime.pipeline import Diarizer, Thresholds, TimeOf
from models.speakers.runtime.turns import Speech
from models.speakers.runtime.vad import SileroVad
from sensors.errors import ConfigError
from sensors.files import write_json_atomic
from sensors.wire import Kind, SensorMessage

#: sample rates a microphone may use, Hz (the wire format allows 1 Hz - 384 kHz; speech needs at least 8 kHz)
RATE_RANGE = (8_000, 192_000)
#: a window starting further than this from where the last one ended is a break in the stream
CONTINUITY_TOLERANCE_NS = 100_000_000


@dataclass
class _Microphone:
    """One microphone's diarizer, stream position, and what was counted about its input."""

    diarizer: Diarizer
    clock: TimeOf
    expected_ns: int | None = None
    names_mtime: float = 0.0
    breaks: int = 0
    clipped_samples: int = 0
    samples: int = 0

    @property
    def clusters(self) -> SpeakerClusters:
        return self.diarizer.clusters


class SpeakersTask(Task[SpeakersConfig]):
    """Microphone windows -> ``speaker_turn`` and ``speakers_changed`` events, clusters per microphone."""

    name = "speakers"
    kinds = frozenset({Kind.AUDIO})
    config_type = SpeakersConfig
    events = events.EVENTS
    simulation = MicrophoneSimulation
    commands = COMMANDS

    def __init__(self, config: SpeakersConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        assert config.model is not None  # the field has a default
        self.model: Model = context.load_model(config.model)
        manifest = self.model.manifest
        self.thresholds = Thresholds(**self._thresholds(config, manifest.thresholds, manifest.task))
        self.input_name = manifest.inputs[0].name
        self.ref = ModelRef(manifest.name, manifest.version)
        #: the embedding size, asked of the model itself (a manifest may leave it symbolic)
        self.dimension = int(self.embed(np.zeros((1, SEGMENT_FRAMES, N_MELS), np.float32)).shape[-1])
        self.vad = SileroVad()
        self.names = NameStore(context.state_dir)
        self.microphones: dict[str, _Microphone] = {}
        self.last_save = time.monotonic()

    @staticmethod
    def _thresholds(config: SpeakersConfig, manifest: dict[str, float], task: str) -> dict[str, float]:
        if task != "speakers":
            raise ConfigError(f"speakers: {config.model} is a {task!r} model, not a speakers model")
        try:
            return config.thresholds(manifest)
        except ValueError as error:
            raise ConfigError(f"speakers: {config.model}: {error}") from None

    @classmethod
    def check(cls, config: SpeakersConfig) -> None:
        """The model loads, is a speakers model and has every threshold the config does not set."""
        from models.runtime import load_manifest

        assert config.model is not None  # the field has a default
        manifest = load_manifest(config.model)
        cls._thresholds(config, manifest.thresholds, manifest.task)

    def models(self) -> list[ModelRef]:
        return [self.ref]

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """(n, 40, 128) log-mel segments -> (n, D) raw embeddings."""
        return np.asarray(self.model.run({self.input_name: mel})[0])

    def _microphone(self, sensor: str) -> _Microphone:
        microphone = self.microphones.get(sensor)
        if microphone is not None:
            return microphone
        diarizer = Diarizer(self.vad, self.embed, self.config, self.config, self.thresholds)
        clusters = diarizer.clusters
        saved = self.names.load_state(sensor)
        if saved is not None:
            try:
                clusters.load_state(saved, self.dimension)
                self.context.log.info("resumed speaker clusters", sensor=sensor, clusters=len(clusters.clusters))
            except (ValueError, KeyError, TypeError) as error:
                self.context.log.warning("saved speaker clusters not usable; starting afresh", sensor=sensor,
                                         error=str(error))
        microphone = _Microphone(diarizer, TimeOf(0))
        self.microphones[sensor] = microphone
        self._apply_names(sensor, microphone)
        return microphone

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, Window):
            raise RejectedInput("speakers takes windows of a microphone stream, not frames")
        microphone = self._microphone(item.sensor_id)
        try:
            audio = self._checked_audio(item, microphone)
        except RejectedInput:
            microphone.expected_ns = None  # the rejected window is a hole: the next one starts afresh
            raise
        if microphone.expected_ns is None or abs(item.start_ns - microphone.expected_ns) > CONTINUITY_TOLERANCE_NS:
            if microphone.expected_ns is not None:
                microphone.breaks += 1
                self.context.log.info("microphone stream restarted", sensor=item.sensor_id,
                                      gap_s=round((item.start_ns - microphone.expected_ns) / 1e9, 3))
            microphone.diarizer.reset()
        # the 16 kHz sample count is anchored to each window's source time, so resampling never drifts
        fed = microphone.diarizer.tracker.fed
        microphone.clock = TimeOf(item.start_ns - round(fed * 1e9 / SAMPLE_RATE))
        microphone.expected_ns = item.start_ns + round(len(item.samples) * 1e9 / item.sample_rate)
        try:
            decided = microphone.diarizer.feed(audio, microphone.clock)
        except ValueError as error:  # the model returned NaN: counted, never stops the agent
            raise RejectedInput(f"{item.sensor_id}: {error}") from None
        drafts: list[EventDraft] = []
        for live in decided:
            start_ns, end_ns = microphone.clock(live.turn.start), microphone.clock(live.turn.end)
            drafts.append(self._turn_event(item.sensor_id, microphone, live.assignment, start_ns, end_ns,
                                           live.turn.overlap, self._audio(live.speech, live.turn.start,
                                                                          live.turn.end)))
            drafts.extend(self._change_event(item.sensor_id, microphone, change, end_ns) for change in live.changes)
        return drafts

    def _checked_audio(self, window: Window, microphone: _Microphone) -> np.ndarray:
        """The window as float mono 16 kHz in [-1, 1]; RejectedInput for a rate, NaN or clipping it cannot use."""
        rate = window.sample_rate
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1] or rate != round(rate):
            raise RejectedInput(f"{window.sensor_id}: sample rate {rate} Hz; microphones must send a whole "
                                f"number of Hz between {RATE_RANGE[0]} and {RATE_RANGE[1]}")
        samples = window.samples
        finite = np.isfinite(samples)
        if not finite.all():
            raise RejectedInput(f"{window.sensor_id}: {int(samples.size - finite.sum())} NaN/inf samples in a "
                                f"{len(samples) / rate:.2f} s window")
        # int16 PCM reaches the task as whole numbers; float32 audio is in [-1, 1]
        full_scale = 32768.0 if np.array_equal(samples, np.round(samples)) else 1.0
        clipped = int(np.count_nonzero(np.abs(samples) >= 0.999 * full_scale))
        microphone.clipped_samples += clipped
        microphone.samples += samples.size
        if clipped > self.config.max_clipped_share * samples.size:
            raise RejectedInput(f"{window.sensor_id}: {clipped / samples.size:.0%} of the samples are clipped "
                                f"(more than max_clipped_share {self.config.max_clipped_share:.0%})")
        return to_mono_16k(samples / full_scale, rate)

    def _audio(self, speech: Speech, start: int, end: int) -> bytes | None:
        """The turn's audio as a 16 kHz int16 WAV, only when ``publish_audio`` allows it to leave the device."""
        if not self.config.publish_audio:
            return None
        audio = speech.audio[max(0, start - speech.audio_start) : max(0, end - speech.audio_start)]
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(SAMPLE_RATE)
            writer.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        return buffer.getvalue()

    def _turn_event(self, sensor: str, microphone: _Microphone, assignment: Assignment, start_ns: int,
                    end_ns: int, overlap: bool, audio: bytes | None) -> EventDraft:
        cluster = microphone.clusters.clusters.get(assignment.cluster)
        body = events.SpeakerTurn(
            microphone=sensor, cluster=assignment.cluster, name=cluster.name if cluster else None,
            start=iso_time(start_ns), end=iso_time(end_ns), duration_s=round((end_ns - start_ns) / 1e9, 2),
            confidence=assignment.confidence, overlap=overlap, new_cluster=assignment.new)
        return body.draft(sensor, start_ns, "info", assignment.confidence, self.ref, audio)

    def _change_event(self, sensor: str, microphone: _Microphone, change: Change, time_ns: int) -> EventDraft:
        clusters = microphone.clusters.clusters
        names = {str(i): name for i in change.clusters + ((change.into,) if change.into is not None else ())
                 if i in clusters and (name := clusters[i].name)}
        body = events.SpeakersChanged(microphone=sensor, change=change.kind, clusters=list(change.clusters),
                                      into=change.into, names=names, count=len(clusters))
        return body.draft(sensor, time_ns, "info", None, self.ref)

    def _apply_names(self, sensor: str, microphone: _Microphone) -> None:
        """Names given with ``edge-agent speakers name`` since they were last read."""
        mtime = self.names.names_mtime(sensor)
        if mtime == microphone.names_mtime:
            return
        microphone.names_mtime = mtime
        for cluster_id, name in self.names.load_names(sensor).items():
            if cluster_id in microphone.clusters.clusters:
                microphone.clusters.name(cluster_id, name)

    def tick(self, now_ns: int) -> list[EventDraft]:
        for sensor, microphone in self.microphones.items():
            self._apply_names(sensor, microphone)
        if time.monotonic() - self.last_save >= self.config.save_interval_s:
            self.last_save = time.monotonic()
            for sensor, microphone in self.microphones.items():
                self._save(sensor, microphone)
        return []

    def _save(self, sensor: str, microphone: _Microphone) -> None:
        state = microphone.clusters.state()
        state["input"] = {"samples": microphone.samples, "clipped_samples": microphone.clipped_samples,
                          "breaks": microphone.breaks}
        try:
            write_json_atomic(self.names.state_path(sensor), state)
        except OSError as error:
            self.context.log.error("cannot save speaker clusters", sensor=sensor, error=str(error))

    def forget(self, sensor: str) -> None:
        microphone = self.microphones.pop(sensor, None)
        if microphone is not None:  # saved, so it resumes if the microphone comes back
            self._save(sensor, microphone)

    def close(self) -> None:
        for sensor, microphone in self.microphones.items():
            self._apply_names(sensor, microphone)
            self._save(sensor, microphone)
        self.model.close()

