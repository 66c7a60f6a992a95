"""Audio capture for ``edge-agent capture audio``: a file, a URL or a local capture device -> wire messages.

One library reads all three: PyAV (the ``av`` wheel bundles FFmpeg's decoders, demuxers, network
protocols and the ALSA / PulseAudio input devices), so a WAV, FLAC, MP3 or an RTSP/HTTP stream and
a USB microphone go through the same code, and no system audio library (PortAudio, as
``sounddevice`` needs) has to be installed on the edge box.  Audio is published as int16 PCM at the
source's rate and channel count (``--rate`` resamples), in chunks of ``chunk_s``, timestamped by sample
count from the first sample; files are paced with their own timing unless ``fast``.
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

#: ``alsa:hw:1,0`` or ``pulse:default``: a local capture device through FFmpeg's input device of that name
DEVICE_PREFIXES = ("alsa", "pulse", "oss", "jack")


class CaptureError(EdgeAgentError):
    """An input that cannot be opened or decoded as audio."""


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


def open_container(spec: str) -> tuple[Any, bool]:
    """Open the input with PyAV; CaptureError saying what failed."""
    import av

    target, device_format, live = parse_source(spec)
    try:
        container = av.open(target, format=device_format, timeout=10.0)
    except (av.FFmpegError, OSError) as error:
        raise CaptureError(f"cannot open {spec!r}: {error}") from None
    if not container.streams.audio:
        container.close()
        raise CaptureError(f"{spec!r} has no audio stream")
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
