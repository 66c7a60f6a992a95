"""The synthetic speaker corpus: speakers, sentences, augmentation and cached log-mel segments per split.

Speakers are combinations of engine, voice, espeak-ng variant, accent, pitch and rate
(:func:`speaker_splits`).  Train, validation and test speakers are disjoint, and no validation or test
speaker shares its (variant, accent) pair with a training speaker.  The ``independent`` split uses
engines, voices and variants never used in training (festival, flite ``awb``, held-out espeak-ng
variants).  Synthesised audio is cached under ``build/speakers-corpus/`` so reruns are fast.
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.signal import butter, fftconvolve, sosfilt

from models.speakers.runtime import features
from sensors.simulate.speech import Voice, synthesise

CACHE_DIR = Path("build/speakers-corpus")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
# espeak-ng's variants by FILE name (``espeak-ng --voices=variant``, column "File" without "!v/"): the
# display names (``male3``, ``Adam``) are silently ignored by ``-v en-us+NAME`` and give the default voice.
# Left out: ``fast`` and ``Mr`` (the default voice), ``caleb`` and ``klatt6`` (the same audio as ``klatt``).
VARIANTS = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris",
    "david", "Demonic", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "announcer",
    "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda",
    "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen", "pablo", "paul",
    "pedro", "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "robosoft", "robosoft2",
    "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "steph", "steph2", "steph3",
    "Storm", "Tweaky", "UniRobot", "zac", "anika", "anikaRobot", "AnxiousAndy", "f2", "f3", "f4", "f5",
    "whisperf", "grandpa", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "m2", "m3", "m4", "m5", "m6", "m7",
    "norbert", "sandro", "shelby", "travis", "victor", "whisper", "m8", "f1", "croak", "m1", "grandma",
)
TRAIN_FLITE = ("kal", "kal16", "rms", "slt")
HELD_OUT_FLITE = ("awb",)
HELD_OUT_FESTIVAL = ("kal_diphone", "cmu_us_slt_arctic_hts", "lp_diphone", "pc_diphone")


class CorpusConfig(BaseModel):
    """How big each split is and how the audio is degraded."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=11, description="seed of speakers, sentences and augmentation")
    held_out_variants: int = Field(default=14, description="espeak-ng variants kept out of training entirely")
    train_speakers_per_variant: int = Field(default=2, description="training speakers made from each variant")
    train_utterances: int = Field(default=8, description="utterances per training speaker")
    train_copies: int = Field(default=3, description="augmented copies of each training utterance")
    val_speakers: int = Field(default=20, description="validation speakers (thresholds, model selection)")
    val_utterances: int = Field(default=4, description="utterances per validation speaker")
    test_speakers: int = Field(default=40, description="test speakers, as the paper")
    test_utterances: int = Field(default=2, description="utterances per test speaker, as the paper")
    snr_db: tuple[float, float] = Field(default=(5.0, 30.0), description="range of noise SNR")
    clean_share: float = Field(default=0.25, description="share of utterances left unaugmented")


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence of one speaker, as log-mel frames (after augmentation)."""

    speaker: str
    text: str
    mel: np.ndarray
    audio: np.ndarray | None = None  # the augmented 16 kHz audio, kept only when asked (peer models need it)


# ------------------------------------------------------------------ speakers


def _espeak(variant: str, accent: str, rng: random.Random, low_pitch: bool | None = None) -> Voice:
    """One espeak-ng speaker; ``low_pitch`` keeps two speakers of the same variant an octave-ish apart."""
    pitch = rng.randint(15, 45) if low_pitch else rng.randint(55, 85) if low_pitch is False else rng.randint(20, 80)
    return Voice("espeak-ng", accent, variant, pitch=pitch, rate=rng.randint(130, 190))


def speaker_splits(config: CorpusConfig) -> dict[str, list[Voice]]:
    """train / val / test / independent speakers, disjoint, deterministic for the seed."""
    rng = random.Random(config.seed)
    variants = sorted(VARIANTS)
    rng.shuffle(variants)
    held_out, seen = variants[: config.held_out_variants], variants[config.held_out_variants :]
    train: list[Voice] = []
    used: set[tuple[str, str]] = set()
    for variant in seen:
        for index, accent in enumerate(rng.sample(ACCENTS, config.train_speakers_per_variant)):
            train.append(_espeak(variant, accent, rng, low_pitch=index % 2 == 0))
            used.add((variant, accent))
    for name in TRAIN_FLITE:
        train += [Voice("flite", name, pitch=rng.randint(20, 40), rate=rng.randint(85, 115)),
                  Voice("flite", name, pitch=rng.randint(60, 80), rate=rng.randint(85, 115))]
    # Validation and test speakers: variants heard in training, but never with this accent; each variant
    # at most once per split so that no two speakers of a split share their timbre.
    val = _unseen_combinations(seen, used, config.val_speakers, rng)
    test = _unseen_combinations(seen, used, config.test_speakers, rng)
    independent = [_espeak(variant, rng.choice(ACCENTS), rng) for variant in held_out]
    independent += [Voice("flite", name, pitch=pitch, rate=100) for name in HELD_OUT_FLITE for pitch in (30, 70)]
    independent += [Voice("festival", name, rate=rng.randint(90, 110)) for name in HELD_OUT_FESTIVAL]
    return {"train": train, "val": val, "test": test, "independent": independent}


def _unseen_combinations(variants: list[str], used: set[tuple[str, str]], count: int,
                         rng: random.Random) -> list[Voice]:
    picked = rng.sample(variants, count)
    voices = []
    for variant in picked:
        accent = rng.choice([accent for accent in ACCENTS if (variant, accent) not in used])
        used.add((variant, accent))
        voices.append(_espeak(variant, accent, rng))
    return voices


# ------------------------------------------------------------------ sentences

_SUBJECTS = ["the conveyor", "line three", "the press", "the forklift", "the packing robot", "the boiler",
             "the second shift", "the night crew", "the compressor", "the paint booth", "the lathe",
             "the quality team", "the loading dock", "the cooling pump", "the welding cell", "the supervisor"]
_VERBS = ["stopped", "started again", "needs a new belt", "is running hot", "was checked", "lost pressure",
          "is waiting for parts", "made a strange noise", "passed inspection", "has been cleaned",
          "will be serviced", "is ahead of schedule", "is behind by twenty minutes", "tripped the breaker"]
_TIMES = ["this morning", "after lunch", "at half past nine", "before the break", "on Tuesday",
          "during the night", "an hour ago", "at the end of the shift", "right now", "since yesterday"]
_TAILS = ["so please tell maintenance", "and nobody knows why", "because the sensor was blocked",
          "so we moved the pallets", "and the order ships on Friday", "which is the third time this week",
          "but the spare filter has arrived", "so keep the gate closed", "and the alarm is still on",
          "so we need another operator", "and the temperature is falling"]
_QUESTIONS = ["Can you bring {n} boxes to {s}?", "Did anyone check {s} {t}?", "Why is {s} so loud {t}?",
              "Who signed off {s} {t}?", "How many pallets are left near {s}?"]
_NUMBERS = ["two", "four", "seven", "twelve", "fifteen", "twenty", "thirty", "a hundred"]


def sentence(rng: random.Random) -> str:
    """One factory-floor sentence of about two to five seconds."""
    subject, time_phrase = rng.choice(_SUBJECTS), rng.choice(_TIMES)
    if rng.random() < 0.25:
        return rng.choice(_QUESTIONS).format(n=rng.choice(_NUMBERS), s=subject, t=time_phrase)
    text = f"{subject} {rng.choice(_VERBS)} {time_phrase}"
    if rng.random() < 0.7:
        text += f", {rng.choice(_TAILS)}"
    return text[0].upper() + text[1:] + "."


# ------------------------------------------------------------------ augmentation


def room_impulse(rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: a direct path plus exponentially decaying noise with RT60 of 0.15-0.8 s."""
    rt60 = rng.uniform(0.15, 0.8)
    length = int(rt60 * features.SAMPLE_RATE)
    t = np.arange(length) / features.SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * features.SAMPLE_RATE)] = 0.0  # the first reflections arrive after the direct sound
    impulse = rng.uniform(0.1, 0.5) * tail / np.sqrt(np.sum(tail**2))
    impulse[0] = 1.0
    return impulse


def coloured_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise (spectral slope 0, -1 or -2), unit RMS."""
    slope = rng.choice([0.0, -1.0, -2.0])
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.maximum(np.fft.rfftfreq(size), 1.0 / size)
    noise = np.fft.irfft(spectrum * freqs ** (slope / 2), n=size)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def augment(audio: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """Reverberation, band-limiting, coloured noise and a level change, each drawn at random."""
    audio = audio.astype(np.float64)
    if rng.random() < 0.7:
        audio = fftconvolve(audio, room_impulse(rng))[: audio.size]
    if rng.random() < 0.4:
        low, high = rng.uniform(80, 400), rng.uniform(3000, 7500)
        audio = sosfilt(butter(4, [low, high], btype="bandpass", fs=features.SAMPLE_RATE, output="sos"), audio)
    if rng.random() < 0.8:
        signal_rms = np.sqrt(np.mean(audio**2)) + 1e-9
        snr = rng.uniform(*snr_db)
        audio = audio + coloured_noise(audio.size, rng) * signal_rms / 10 ** (snr / 20)
    audio = audio * 10 ** (rng.uniform(-20, 6) / 20)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ synthesis and cache


def cached_synthesis(voice: Voice, text: str, cache: Path = CACHE_DIR) -> np.ndarray:
    """``synthesise`` with an on-disk cache keyed by speaker id and text."""
    key = hashlib.sha256(f"{voice.id}|{text}".encode()).hexdigest()[:24]
    path = cache / "audio" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    audio = synthesise(voice, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


def trim_silence(audio: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Cut the synthesiser's leading and trailing silence (below ``floor_db`` of the peak, 10 ms frames)."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    if frames.size == 0:
        return audio
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    voiced = np.flatnonzero(level > level.max() + floor_db)
    return audio[voiced[0] * 160 : (voiced[-1] + 1) * 160] if voiced.size else audio


def build_split(voices: list[Voice], utterances: int, copies: int, config: CorpusConfig, split: str,
                workers: int = 2, keep_audio: bool = False) -> list[Utterance]:
    """Synthesise (cached) ``utterances`` sentences per voice and return ``copies`` augmented versions each."""
    text_rng = random.Random(f"{config.seed}:{split}:text")
    jobs = [(voice, sentence(text_rng)) for voice in voices for _ in range(utterances)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        audios = list(pool.map(lambda job: trim_silence(cached_synthesis(*job)), jobs))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, sum(map(ord, split))]))
    corpus = []
    for (voice, text), audio in zip(jobs, audios, strict=True):
        for _ in range(copies):
            clean = rng.random() < config.clean_share
            degraded = audio if clean else augment(audio, rng, config.snr_db)
            kept = degraded if keep_audio else None
            corpus.append(Utterance(voice.id, text, features.log_mel(degraded), kept))
    return corpus


def build_corpus(config: CorpusConfig, cache: Path | None = CACHE_DIR) -> dict[str, list[Utterance]]:
    """Every split as augmented log-mel utterances (test splits get one augmented copy each).

    The log-mel frames are cached per configuration (``cache`` None: no cache), since augmenting and
    transforming the training split takes minutes on a shared CPU.
    """
    key = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
    path = cache / f"corpus-{key}.npz" if cache else None
    if path and path.is_file():
        return _load_corpus(path)
    voices = speaker_splits(config)
    corpus = {
        "train": build_split(voices["train"], config.train_utterances, config.train_copies, config, "train"),
        "val": build_split(voices["val"], config.val_utterances, 1, config, "val"),
        "test": build_split(voices["test"], config.test_utterances, 1, config, "test"),
        "independent": build_split(voices["independent"], config.test_utterances, 1, config, "independent"),
    }
    if path:
        _save_corpus(corpus, path)
    return corpus


def _save_corpus(corpus: dict[str, list[Utterance]], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for split, utterances in corpus.items():
        arrays[f"{split}.mel"] = np.concatenate([u.mel for u in utterances])
        arrays[f"{split}.frames"] = np.array([len(u.mel) for u in utterances])
        arrays[f"{split}.speaker"] = np.array([u.speaker for u in utterances])
        arrays[f"{split}.text"] = np.array([u.text for u in utterances])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds badly
    partial.replace(path)  # readers in parallel runs never see a half-written file


def _load_corpus(path: Path) -> dict[str, list[Utterance]]:
    with np.load(path) as arrays:
        splits = sorted({name.split(".")[0] for name in arrays.files})
        corpus = {}
        for split in splits:
            bounds = np.cumsum([0, *arrays[f"{split}.frames"].tolist()])
            mel = arrays[f"{split}.mel"]
            corpus[split] = [Utterance(str(speaker), str(text), mel[start:end])
                             for speaker, text, start, end in zip(arrays[f"{split}.speaker"], arrays[f"{split}.text"],
                                                                  bounds[:-1], bounds[1:], strict=True)]
    return corpus


def segment_bank(utterances: list[Utterance]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All 40-frame segments of ``utterances`` with their speaker index and the speaker names."""
    names = sorted({utterance.speaker for utterance in utterances})
    index = {name: position for position, name in enumerate(names)}
    chunks, labels = [], []
    for utterance in utterances:
        segs = features.segments(utterance.mel)
        chunks.append(segs)
        labels.append(np.full(len(segs), index[utterance.speaker], dtype=np.int64))
    return np.concatenate(chunks), np.concatenate(labels), names
