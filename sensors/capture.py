"""``edge-agent capture audio|camera``: a file, a URL or a local capture device -> wire messages.

One library reads all three: PyAV (the ``av`` wheel bundles FFmpeg's decoders, demuxers, network
protocols and the ALSA / PulseAudio input devices), so a WAV, FLAC, MP3 or an RTSP/HTTP stream and
a USB microphone go through the same code, and no system audio library (PortAudio, as
``sounddevice`` needs) has to be installed on the edge box.  Audio is published as int16 PCM at the
source's rate and channel count (``--rate`` resamples), in chunks of ``chunk_s``, timestamped by sample
count from the first sample; files are paced with their own timing unless ``fast``.  Cameras (a video
file, an RTSP/HTTP stream, a V4L2 device ``v4l2:/dev/video0``) go through the same library: frames are
taken at ``fps``, JPEG-encoded, timestamped by their presentation time from the first frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sensors.errors import EdgeAgentError
from sensors.topics import sensor_topic
from sensors.wire import Kind, SensorMessage, encode

#: ``alsa:hw:1,0``, ``pulse:default`` or ``v4l2:/dev/video0``: a local capture device through FFmpeg's input
#: device of that name
DEVICE_PREFIXES = ("alsa", "pulse", "oss", "jack", "v4l2")


class CaptureError(EdgeAgentError):
    """An input that cannot be opened or decoded (as audio, or as video)."""


@dataclass(frozen=True)
class Source:
    """What was opened: a device (paced by the hardware) or a file/URL (paced by its timing unless fast)."""

    spec: str
    live: bool


def parse_source(spec: str) -> tuple[str, str | None, bool]:
    """``alsa:hw:0`` -> (``hw:0``, ``alsa``, live); a path or URL -> (spec, None, not live)."""
    kind, _, device = spec.partition(":")
    if kind in DEVICE_PREFIXES and device:
        return device, kind, True
    return spec, None, False


def open_container(spec: str, media: str = "audio") -> tuple[Any, bool]:
    """Open the input with PyAV, checking it has a ``media`` ("audio" or "video") stream; CaptureError saying
    what failed."""
    import av

    target, device_format, live = parse_source(spec)
    try:
        container = av.open(target, format=device_format, timeout=10.0)
    except (av.FFmpegError, OSError) as error:
        raise CaptureError(f"cannot open {spec!r}: {error}") from None
    if not getattr(container.streams, media):
        container.close()
        raise CaptureError(f"{spec!r} has no {media} stream")
    return container, live


def pcm_chunks(container: Any, chunk_s: float, rate: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """The first audio stream as int16 (samples, channels) chunks of ``chunk_s`` (the last may be shorter)."""
    import av

    stream = container.streams.audio[0]
    out_rate = rate or stream.codec_context.sample_rate or stream.rate
    resampler = av.AudioResampler(format="s16", layout=stream.codec_context.layout.name, rate=out_rate)
    channels = len(stream.codec_context.layout.channels)
    size = max(1, round(chunk_s * out_rate))
    pending = np.zeros((0, channels), np.int16)
    try:
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                pending = np.concatenate((pending, converted.to_ndarray().reshape(-1, channels)))
                while len(pending) >= size:
                    yield pending[:size], out_rate
                    pending = pending[size:]
        for converted in resampler.resample(None):
            pending = np.concatenate((pending, converted.to_ndarray().reshape(-1, channels)))
    except av.FFmpegError as error:
        raise CaptureError(f"cannot decode the audio: {error}") from None
    while len(pending):
        yield pending[:size], out_rate
        pending = pending[size:]


def capture(spec: str, sensor: str, publish: Callable[[str, bytes], None], *, prefix: str = "edge",
            chunk_s: float = 0.1, rate: int | None = None, fast: bool = False,
            stop: threading.Event | None = None, start_ns: int | None = None) -> int:
    """Publish the input's audio as wire messages on ``{prefix}/sensors/audio/{sensor}``; returns how many."""
    stop = stop or threading.Event()
    container, live = open_container(spec)
    topic = sensor_topic(prefix, Kind.AUDIO, sensor)
    origin_ns = time.time_ns() if start_ns is None else start_ns
    began = time.monotonic()
    sent = samples = 0
    try:
        for pcm, out_rate in pcm_chunks(container, chunk_s, rate):
            if stop.is_set():
                break
            due = began + samples / out_rate
            if not live and not fast and due > time.monotonic() and stop.wait(due - time.monotonic()):
                break
            message = SensorMessage(sensor, Kind.AUDIO, sent, origin_ns + round(samples * 1e9 / out_rate),
                                    np.ascontiguousarray(pcm), float(out_rate))
            publish(topic, encode(message))
            sent += 1
            samples += len(pcm)
    finally:
        container.close()
    return sent


def write_audio(path: str, audio: np.ndarray, rate: int, codec: str | None = None) -> None:
    """Write float mono audio in [-1, 1] to a file with PyAV (WAV: pcm_s16le, FLAC: flac; by extension)."""
    import av

    codec = codec or ("flac" if path.endswith(".flac") else "pcm_s16le")
    pcm = np.clip(np.round(np.asarray(audio) * 32767), -32768, 32767).astype(np.int16)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 4096], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def video_frames(container: Any, fps: float) -> Iterator[tuple[np.ndarray, float]]:
    """The first video stream's frames as RGB arrays with their time (s from the first frame), at most
    ``fps`` a second (frames closer than 1/fps to the last one taken are skipped)."""
    import av

    stream = container.streams.video[0]
    first: float | None = None
    next_due = 0.0
    try:
        for frame in container.decode(stream):
            when = float(frame.time) if frame.time is not None else next_due
            first = when if first is None else first
            if when - first + 1e-6 < next_due:
                continue
            next_due = when - first + 1.0 / fps
            yield frame.to_ndarray(format="rgb24"), when - first
    except av.FFmpegError as error:
        raise CaptureError(f"cannot decode the video: {error}") from None


def capture_camera(spec: str, sensor: str, publish: Callable[[str, bytes], None], *, prefix: str = "edge",
                   fps: float = 2.0, quality: int = 90, fast: bool = False, stop: threading.Event | None = None,
                   start_ns: int | None = None) -> int:
    """Publish the input's frames as JPEG wire messages on ``{prefix}/sensors/frame/{sensor}``; returns how many."""
    import io

    from PIL import Image

    from sensors.wire import Encoding

    stop = stop or threading.Event()
    container, live = open_container(spec, "video")
    topic = sensor_topic(prefix, Kind.FRAME, sensor)
    origin_ns = time.time_ns() if start_ns is None else start_ns
    began = time.monotonic()
    sent = 0
    try:
        for image, when in video_frames(container, fps):
            if stop.is_set():
                break
            due = began + when
            if not live and not fast and due > time.monotonic() and stop.wait(due - time.monotonic()):
                break
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
            message = SensorMessage(sensor, Kind.FRAME, sent, origin_ns + round(when * 1e9), buffer.getvalue(), 0.0,
                                    Encoding.JPEG, {"source": spec[-64:]})
            publish(topic, encode(message))
            sent += 1
    finally:
        container.close()
    return sent
