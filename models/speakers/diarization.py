"""Diarization error rate (DER) of the live speakers task on synthetic conversations of 2-6 speakers.

``python -m models.speakers.diarization [--manifest models/speakers] [--conversations 20] [--seed 5]``
synthesises conversations of speakers the embedding model never heard: when the training corpus's
speaker splits are there (``models.speakers.data.speaker_splits`` with ``train.yaml``'s corpus), its
test and independent speakers, whose synthesisers are installed; otherwise espeak-ng speakers drawn
at random from the seed (language, variant, pitch, rate; any the manifest's ``training.speakers``
lists left out), and the report says that they may have been heard in training.  With pauses,
interruptions, overlaps, room reverberation, noise and level changes, runs them through the same run-time
code as the agent (:class:`models.speakers.runtime.pipeline.Diarizer`: silero-vad -> turns -> on-line
clusters, 0.5 s at a time), and scores the labels the task published live with ``pyannote.metrics``
(DER with a 0.25 s collar, overlapped speech scored).  It writes a JSON report and a timeline picture,
truth against clusters, of the first conversation.  Needs espeak-ng, pyannote.metrics and matplotlib
(the ``train`` extra).
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.runtime import load_model
from models.speakers.runtime.clusters import ClusterSettings
from models.speakers.runtime.pipeline import Diarizer, Thresholds, TimeOf
from models.speakers.runtime.turns import TurnSettings
from models.speakers.runtime.vad import SileroVad
from sensors.simulate.conversation import Room, Utterance, conversation
from sensors.simulate.speech import SAMPLE_RATE, Voice, available_engines

LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy", "Annie",
            "Denis", "Gene", "Jacky", "Lee", "Mario", "Michael", "Mr serious", "Tweaky", "anika", "aunty",
            "belinda", "boris", "david", "edward", "grandma", "iven", "john", "linda", "max", "norbert", "paul")
SENTENCES = (
    "The pump on line three is running hot again today.", "Could you check the pressure gauge before lunch?",
    "I think the bearing needs replacing next week.", "Let us write it down in the maintenance log.",
    "The camera station rejected twelve parts this morning.", "We are short of spare filters for the press.",
    "Has anybody seen the torque wrench from bay four?", "The night shift reported a strange noise at the mill.",
    "Please stop the conveyor before you open the guard.", "The new batch of castings arrived an hour late.",
    "I will call the supplier about the cracked housings.", "Our output was higher than planned last week.",
    "Make sure the safety sensors are tested every Monday.", "The compressor needs an oil change next month.",
    "Can we move the inspection to the afternoon shift?", "That motor has been vibrating since the last repair.",
)
HOLD_S = 0.5
CHUNK_S = 0.5
ORIGIN_NS = 1_700_000_000 * 10**9


@dataclass(frozen=True)
class Scene:
    """One synthetic conversation: its voices, lines and room."""

    voices: list[Voice]
    lines: list[tuple[int, str]]
    room: Room
    seed: int


def held_out_voices() -> list[Voice] | None:
    """The speakers the embedding model never heard in training (its corpus's test and independent splits)
    whose synthesiser is installed, or None when the training corpus code is not there."""
    try:
        data: Any = importlib.import_module("models.speakers.data")
        corpus = yaml.safe_load((Path(__file__).parent / "train.yaml").read_text())["corpus"]
        splits = data.speaker_splits(data.CorpusConfig(**corpus))
        voices = [*splits["test"], *splits["independent"]]
    except (ImportError, OSError, KeyError, AttributeError, TypeError, ValueError):
        return None
    installed = available_engines()
    return [voice for voice in voices if isinstance(voice, Voice) and voice.engine in installed] or None


def draw_scenes(count: int, seed: int, exclude: set[str], pool: list[Voice] | None = None) -> list[Scene]:
    """``count`` conversations of 2-6 speakers: distinct voices from ``pool`` if given, else random espeak-ng
    voices not in ``exclude``."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        speakers = int(rng.integers(2, 7 if pool is None else min(7, len(pool) + 1)))
        voices: list[Voice] = []
        while len(voices) < speakers:
            voice = (pool[int(rng.integers(len(pool)))] if pool is not None else
                     Voice("espeak-ng", str(rng.choice(LANGUAGES)), str(rng.choice(VARIANTS)),
                           int(rng.integers(15, 95)), int(rng.integers(130, 190))))
            if voice.id not in exclude and all((v.name, v.variant) != (voice.name, voice.variant) or
                                               v.engine != voice.engine for v in voices) and voice not in voices:
                voices.append(voice)
        order = list(range(speakers)) + [int(s) for s in rng.integers(0, speakers, size=2 * speakers)]
        lines = [(speaker, str(rng.choice(SENTENCES))) for speaker in order]
        room = Room(rt60_s=float(rng.uniform(0.0, 0.4)), snr_db=float(rng.uniform(15, 40)),
                    level_db=(-8.0, 0.0), overlap_share=float(rng.uniform(0.05, 0.2)), pause_s=(0.2, 1.2))
        scenes.append(Scene(voices, lines, room, seed * 1000 + index))
    return scenes


def diarize(audio: np.ndarray, diarizer: Diarizer) -> list[tuple[float, float, int]]:
    """Feed a conversation as the task gets it (0.5 s at a time, then silence to close the last turn);
    returns the live decisions as (start s, end s, cluster)."""
    clock = TimeOf(ORIGIN_NS)
    padded = np.concatenate((audio, np.zeros(int(2 * SAMPLE_RATE), np.float32)))
    step = int(CHUNK_S * SAMPLE_RATE)
    found = []
    for start in range(0, len(padded), step):
        for live in diarizer.feed(padded[start : start + step], clock):
            found.append((live.turn.start / SAMPLE_RATE, live.turn.end / SAMPLE_RATE, live.assignment.cluster))
    return found


def der(truth: list[Utterance], found: list[tuple[float, float, int]], duration_s: float,
        collar: float = 0.25) -> dict[str, float]:
    """pyannote.metrics' diarization error rate and its parts, over the whole conversation."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for index, utterance in enumerate(truth):
        reference[Segment(utterance.start_s, utterance.end_s), index] = f"speaker{utterance.speaker}"
    for index, (start, end, cluster) in enumerate(found):
        hypothesis[Segment(start, end), index] = f"cluster{cluster}"
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    parts = metric(reference, hypothesis, uem=Timeline([Segment(0, duration_s)]), detailed=True)
    return {key: float(value) for key, value in parts.items()}


def timeline(path: Path, truth: list[Utterance], found: list[tuple[float, float, int]], title: str) -> Path:
    """A picture: who spoke when (top) against the clusters the task published (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(12, 3.2))
    colours = plt.get_cmap("tab10")
    for utterance in truth:
        axis.broken_barh([(utterance.start_s, utterance.end_s - utterance.start_s)], (1.1, 0.8),
                         color=colours(utterance.speaker % 10))
        axis.text(utterance.start_s, 1.5, f"S{utterance.speaker}", va="center", fontsize=7)
    for start, end, cluster in found:
        axis.broken_barh([(start, end - start)], (0.1, 0.8), color=colours(cluster % 10), alpha=0.8)
        axis.text(start, 0.5, f"c{cluster}", va="center", fontsize=7)
    axis.set_yticks([0.5, 1.5], ["clusters (live)", "truth"])
    axis.set_xlabel("seconds")
    axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate(manifest: Path, count: int, seed: int, out: Path, held_out: bool = True) -> dict[str, Any]:
    """DER over ``count`` conversations; writes ``out``/diarization.json and ``out``/timeline.png."""
    model = load_model(manifest)
    thresholds = Thresholds(**{name: float(model.manifest.thresholds[name])
                               for name in ("distance_cut", "assign_distance", "change_distance")})
    name = model.manifest.inputs[0].name
    trained = {str(s) for s in model.manifest.training.get("speakers", [])}
    pool = held_out_voices() if held_out else None
    vad = SileroVad()
    totals: dict[str, float] = {}
    rows = []
    for index, scene in enumerate(draw_scenes(count, seed, trained, pool)):
        audio, truth = conversation(scene.voices, scene.lines, scene.room, scene.seed)
        diarizer = Diarizer(vad, lambda mel: model.run({name: mel})[0], TurnSettings(), ClusterSettings(),
                            thresholds)
        found = diarize(audio, diarizer)
        parts = der(truth, found, len(audio) / SAMPLE_RATE)
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value
        rows.append({"speakers": len(scene.voices), "seconds": round(len(audio) / SAMPLE_RATE, 1),
                     "clusters": len({c for _, _, c in found}), "der": round(parts["diarization error rate"], 4)})
        print(f"conversation {index}: {rows[-1]}", flush=True)
        if index == 0:
            timeline(out / "timeline.png", truth, found, f"{model.manifest.name}: {len(scene.voices)} speakers, "
                     f"DER {parts['diarization error rate']:.1%}")
    total = totals.get("total", 0.0)
    errors = totals.get("confusion", 0) + totals.get("missed detection", 0) + totals.get("false alarm", 0)
    report = {"model": f"{model.manifest.name} {model.manifest.version}", "thresholds": thresholds.__dict__,
              "conversations": count, "seed": seed, "collar_s": 0.25, "excluded_training_speakers": len(trained),
              "speakers": ("the training corpus's test and independent speakers (never heard in training)" if pool
                           else "random espeak-ng speakers: some may have been heard in training"),
              "der": round(errors / total, 4) if total else None,
              "parts": {key: round(totals.get(key, 0.0) / total, 4) if total else None
                        for key in ("confusion", "missed detection", "false alarm")},
              "per_conversation": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "diarization.json").write_text(json.dumps(report, indent=1))
    model.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("models/speakers"),
                        help="speakers model manifest or its folder (default: the shipped model)")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("models/speakers/evaluation/diarization"))
    args = parser.parse_args()
    report = evaluate(args.manifest, args.conversations, args.seed, args.out)
    print(json.dumps({key: report[key] for key in ("model", "der", "parts", "conversations")}))


if __name__ == "__main__":
    main()
