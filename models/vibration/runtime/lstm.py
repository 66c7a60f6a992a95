"""Run-time anomaly scorer: reconstruction error of the LSTM autoencoder, relative to the machine's normal.

Numpy and ONNX Runtime only (through :class:`models.runtime.Model`); no torch, so the agent can use it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.runtime import Model
from models.vibration.runtime.manifest import VibrationManifest
from models.vibration.runtime.scorers import Scorer

#: floor under reconstruction errors before the log, so a perfect reconstruction stays finite
ERROR_FLOOR = 1e-9
#: sequences per ONNX Runtime call while fitting the baseline
FIT_BATCH = 256


class LstmAutoencoderScorer(Scorer):
    """Scores the latest feature sequence by how badly the autoencoder reconstructs it.

    The error is that of the latest step: how well the latest feature vector is reconstructed
    from a code of the whole sequence, i.e. in the context of the machine's recent snapshots.
    Scoring only the latest step keeps one odd snapshot (a sensor artefact) from lifting the
    scores of all the sequences it is part of: on the validation fleet the mean or median over
    the steps gave autocorrelated scores and several times more false alarms.

    The autoencoder is shared by all machines; what is normal for one machine is learnt by
    :meth:`fit`: the log errors over the machine's healthy baseline give a mean and spread, and
    :meth:`score` reports the new error in those units (a z-score), so ``0`` is typical for this
    machine and a fault drives it up by many.
    """

    name: ClassVar[str] = "lstm_ae"
    needs_model: ClassVar[bool] = True

    def __init__(self, model: Model) -> None:
        manifest = model.manifest
        self.model = model
        preprocessing = VibrationManifest(manifest).preprocessing
        self.sequence_length = preprocessing.sequence_length
        self.n_features = len(preprocessing.feature_names)
        self.input_name = manifest.inputs[0].name
        self.error_index = [spec.name for spec in manifest.outputs].index("step_error")
        self.log_error_mean: float | None = None
        self.log_error_std: float | None = None

    def errors(self, sequences: np.ndarray) -> np.ndarray:
        """Reconstruction error of the latest step of each sequence in a (batch, time, features) array."""
        if sequences.ndim != 3 or sequences.shape[1:] != (self.sequence_length, self.n_features):
            raise ValueError(
                f"expected sequences of shape (batch, {self.sequence_length}, {self.n_features}), "
                f"got {sequences.shape}"
            )
        inputs = np.ascontiguousarray(sequences, dtype=np.float32)
        step_errors = self.model.run({self.input_name: inputs})[self.error_index]
        return np.asarray(step_errors[:, -1], dtype=np.float64)

    def fit(self, baseline: np.ndarray) -> None:
        """Learn the spread of log reconstruction errors over every sequence in the healthy baseline."""
        baseline = np.asarray(baseline, dtype=np.float32)
        count = baseline.shape[0] - self.sequence_length + 1
        if baseline.ndim != 2 or count < 2:
            raise ValueError(
                f"baseline needs at least {self.sequence_length + 1} windows of {self.n_features} "
                f"features, got shape {baseline.shape}"
            )
        sequences = np.lib.stride_tricks.sliding_window_view(baseline, self.sequence_length, axis=0)
        sequences = sequences.transpose(0, 2, 1)
        errors = np.concatenate([
            self.errors(sequences[start:start + FIT_BATCH]) for start in range(0, count, FIT_BATCH)
        ])
        log_errors = np.log(np.maximum(errors, ERROR_FLOOR))
        self.log_error_mean = float(np.mean(log_errors))
        # A floor on the spread keeps a near-constant baseline from turning noise into huge scores.
        self.log_error_std = float(max(np.std(log_errors), 0.05))

    def score(self, history: np.ndarray) -> float:
        """How many baseline spreads the log error of the latest sequence lies above the machine's mean."""
        if self.log_error_mean is None or self.log_error_std is None:
            raise RuntimeError("LstmAutoencoderScorer.score called before fit or load_state")
        error = self.errors(np.asarray(history, dtype=np.float32)[np.newaxis])[0]
        return (float(np.log(max(error, ERROR_FLOOR))) - self.log_error_mean) / self.log_error_std

    def state(self) -> dict[str, Any]:
        """The learnt baseline statistics, tied to the model version they were computed with."""
        return {
            "model_version": self.model.manifest.version,
            "log_error_mean": self.log_error_mean,
            "log_error_std": self.log_error_std,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state`; refuse ones learnt with another model version."""
        if state.get("model_version") != self.model.manifest.version:
            raise ValueError(
                f"baseline state was learnt with model version {state.get('model_version')!r}, "
                f"this is {self.model.manifest.version!r}"
            )
        self.log_error_mean = float(state["log_error_mean"])
        self.log_error_std = float(state["log_error_std"])
