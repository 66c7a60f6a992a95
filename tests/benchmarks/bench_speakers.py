"""Benchmark: the speakers task on 10 live microphones at 16 kHz: share of one core, and the memory it adds.

    python -m tests.benchmarks.bench_speakers

Ten microphones each play the demo's three-speaker conversation (the shipped asset, each from another
offset, so that they do not speak in step), as int16 wire messages of 0.1 s interleaved as live streams
arrive; timed: decode -> windowing -> SpeakersTask.process (VAD, turns, embeddings, clusters) and its
ticks.  Memory: resident set size after the run minus before the task was made (models, VAD sessions,
buffers, clusters).  Targets: < 0.5 core, < 150 MB.  The model is the shipped ``models/speakers`` when it
is there, else the stand-in (a far cheaper network: say so when quoting the figure).
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agent.tasks.base import TaskContext
from agent.tasks.speakers.config import SpeakersConfig
from agent.tasks.speakers.task import SpeakersTask
from agent.windowing import Windower
from models.runtime import load_model
from models.speakers.standin import write_standin
from sensors.simulate.conversation import load_demo
from sensors.wire import Kind, SensorMessage, decode, encode

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "speakers" / "manifest.yaml"
RATE = 16_000
CHUNK = 1600


def rss_mb() -> float:
    """Resident set size now, MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def streams(microphones: int, seconds: float) -> list[list[bytes]]:
    """Wire messages of each microphone: the conversation looped from a different offset."""
    audio, _ = load_demo()
    pcm = np.round(audio * 32767).astype(np.int16)
    count = int(seconds * RATE / CHUNK)
    result = []
    for mic in range(microphones):
        offset = mic * len(pcm) // microphones
        looped = np.take(pcm, np.arange(offset, offset + count * CHUNK), mode="wrap")
        result.append([encode(SensorMessage(f"mic-{mic:02d}", Kind.AUDIO, seq, 10**18 + seq * 100_000_000,
                                            looped[seq * CHUNK : (seq + 1) * CHUNK, None], float(RATE)))
                       for seq in range(count)])
    return result


def microphones_cpu(microphones: int = 10, seconds: float = 60.0, model: Path | None = None,
                    **settings: Any) -> dict[str, Any]:
    """CPU seconds per second of audio and added memory for ``microphones`` live streams (``settings``: config)."""
    data = streams(microphones, seconds)
    with tempfile.TemporaryDirectory() as folder:
        if model is None:
            model = SHIPPED if SHIPPED.exists() else write_standin(Path(folder) / "standin")
        before = rss_mb()
        context = TaskContext("bench", Path(folder) / "state", load_model, structlog.get_logger())
        config = SpeakersConfig(model=model, **settings)
        task = SpeakersTask(config, context)
        windowers = [Windower(config.window_s, config.hop_s) for _ in data]
        turns = 0
        started = time.process_time()
        for chunk in range(len(data[0])):
            for windower, stream in zip(windowers, data, strict=True):
                for window in windower.feed(decode(stream[chunk]))[0]:
                    turns += sum(draft.type == "speaker_turn" for draft in task.process(window))
            if chunk % 10 == 0:
                task.tick(time.time_ns())
        cpu = time.process_time() - started
        added = rss_mb() - before
        name = task.ref.name
        task.close()
    return {"microphones": microphones, "seconds_of_audio": seconds, "cores": cpu / seconds,
            "added_memory_mb": added, "turns": turns, "model": name}


def run(microphones: int = 10, seconds: float = 60.0) -> dict[str, Any]:
    """The measurement; prints and returns it."""
    result = microphones_cpu(microphones, seconds)
    print(f"speakers task, {microphones} microphones x 16 kHz, {seconds:.0f} s of conversation each "
          f"({result['turns']} turns, model {result['model']}): {result['cores']:.3f} core (target < 0.5), "
          f"{result['added_memory_mb']:.0f} MB added (target < 150)", flush=True)
    return result


if __name__ == "__main__":
    run()
