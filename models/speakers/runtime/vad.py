"""Voice activity: silero-vad's ONNX model run with ONNX Runtime (no torch), streamed per microphone.

The model (``silero_vad.onnx``, MIT, extracted from the ``silero-vad`` wheel: see ``silero_vad.PROVENANCE``)
takes 512 new samples at 16 kHz with the 64 samples before them (``input`` [1, 576]), its recurrent
``state`` [2, 1, 128] and the rate ``sr``; it returns the speech probability of the chunk (``output``
[1, 1]) and the next state (``stateN``).  This is what silero's own ``OnnxWrapper`` does.  One
:class:`VadStream` per microphone keeps that state, the 64-sample context and the samples not yet
making a whole chunk, so windows of any length can be fed in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.speakers.runtime.features import SAMPLE_RATE

#: the shipped model, beside this file
VAD_MODEL = Path(__file__).resolve().parent / "silero_vad.onnx"
CHUNK = 512
CONTEXT = 64
#: below this RMS (about -80 dBFS) a chunk is silence without asking the model, and the state restarts
SILENCE_RMS = 1e-4


class SileroVad:
    """One ONNX Runtime session of silero-vad, shared by every microphone of a task (one thread)."""

    def __init__(self, path: Path = VAD_MODEL, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {item.name for item in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{path} is not silero-vad's 16 kHz model: inputs {sorted(names)}")
        self.rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def step(self, chunk: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """(CONTEXT + CHUNK,) samples and the state -> speech probability and the next state."""
        output, new_state = self.session.run(None, {"input": chunk[None, :], "state": state, "sr": self.rate})
        return float(output[0, 0]), new_state

    def stream(self) -> VadStream:
        return VadStream(self)


class VadStream:
    """One microphone's voice activity: feed 16 kHz audio in order, get one probability per 512 samples."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a break in it): fresh recurrent state, no context, no pending samples."""
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)
        self.chunks = 0  # chunks seen since the reset: chunk k covers samples [k * CHUNK, (k + 1) * CHUNK)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the whole chunks completed by ``audio`` (float32 16 kHz mono), in order."""
        audio = np.concatenate((self.pending, np.asarray(audio, dtype=np.float32)))
        whole = len(audio) // CHUNK
        probabilities = np.zeros(whole, dtype=np.float32)
        for index in range(whole):
            chunk = audio[index * CHUNK : (index + 1) * CHUNK]
            if float(np.sqrt(np.mean(chunk * chunk))) < SILENCE_RMS:
                self.state = np.zeros_like(self.state)
                probabilities[index] = 0.0
            else:
                probabilities[index], self.state = self.vad.step(np.concatenate((self.context, chunk)), self.state)
            self.context = chunk[-CONTEXT:]
        self.pending = audio[whole * CHUNK :].copy()
        self.chunks += whole
        return probabilities
