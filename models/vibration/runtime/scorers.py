"""Anomaly scorers over normalised vibration feature vectors: the interface and the shallow baselines.

Every scorer learns one machine's normal state from its healthy baseline (feature vectors already
normalised per feature) and maps the latest ``sequence_length`` vectors to one number, higher meaning
more anomalous.  The shallow ones here are pure numpy; the LSTM autoencoder lives in
:mod:`models.vibration.runtime.lstm` and runs an ONNX model.  Thresholds, smoothing and alarms are
not a scorer's business: :class:`models.vibration.runtime.monitor.MachineMonitor` does those for all of them.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any, ClassVar

import numpy as np

from models.runtime import Model
from sensors.errors import ConfigError


class ScorerError(ConfigError):
    """An unknown scorer name, or a scorer asked for without the model it needs."""


class Scorer(abc.ABC):
    """Learns a machine's normal state from a baseline and scores new feature vectors against it."""

    name: ClassVar[str]
    #: True for scorers whose constructor takes a :class:`models.runtime.Model`
    needs_model: ClassVar[bool] = False
    #: how many consecutive normalised feature vectors one score needs
    sequence_length: int = 1

    @abc.abstractmethod
    def fit(self, baseline: np.ndarray) -> None:
        """Learn from (n_windows, n_features) normalised feature vectors of the healthy period."""

    @abc.abstractmethod
    def score(self, history: np.ndarray) -> float:
        """Score (sequence_length, n_features) vectors, latest last; higher = more anomalous."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """What was learnt, JSON-able, for persistence."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned; raises ValueError for an incompatible state."""


def _regularised_covariance(data: np.ndarray, shrinkage: float) -> np.ndarray:
    """Sample covariance shrunk towards a scaled identity, so a short baseline still inverts."""
    cov = np.atleast_2d(np.cov(data, rowvar=False))
    target = np.trace(cov) / cov.shape[0]
    return (1 - shrinkage) * cov + shrinkage * max(target, 1e-6) * np.eye(cov.shape[0])


class MahalanobisScorer(Scorer):
    """Squared Mahalanobis distance from the baseline mean, with a shrunk (regularised) covariance."""

    name: ClassVar[str] = "mahalanobis"

    def __init__(self, shrinkage: float = 0.1) -> None:
        self.shrinkage = shrinkage
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(self, baseline: np.ndarray) -> None:
        baseline = np.asarray(baseline, dtype=np.float64)
        self.mean = baseline.mean(axis=0)
        self.precision = np.linalg.inv(_regularised_covariance(baseline, self.shrinkage))

    def score(self, history: np.ndarray) -> float:
        if self.mean is None or self.precision is None:
            raise RuntimeError("MahalanobisScorer.score called before fit or load_state")
        delta = np.asarray(history, dtype=np.float64)[-1] - self.mean
        return float(delta @ self.precision @ delta) / len(delta)

    def state(self) -> dict[str, Any]:
        assert self.mean is not None and self.precision is not None, "fit before state"
        return {"shrinkage": self.shrinkage, "mean": self.mean.tolist(), "precision": self.precision.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.shrinkage = float(state["shrinkage"])
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.precision = np.asarray(state["precision"], dtype=np.float64)
        if self.precision.shape != (len(self.mean), len(self.mean)):
            raise ValueError(f"precision shape {self.precision.shape} does not match mean {self.mean.shape}")


class PcaScorer(Scorer):
    """Squared prediction error (SPE, Q statistic): what the baseline's principal subspace cannot explain.

    The subspace keeps the components that explain ``variance`` of the baseline; faults that break the
    correlations between features (impacts raise kurtosis and high bands, not the shaft harmonics) show
    up as residual even when each feature alone stays in range.  Hotelling's T² inside the subspace is
    added with a small weight so a fault that moves along the normal directions is not invisible.
    """

    name: ClassVar[str] = "pca"

    def __init__(self, variance: float = 0.9, t2_weight: float = 0.1) -> None:
        self.variance = variance
        self.t2_weight = t2_weight
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self.eigenvalues: np.ndarray | None = None
        self.residual_scale = 1.0

    def fit(self, baseline: np.ndarray) -> None:
        baseline = np.asarray(baseline, dtype=np.float64)
        self.mean = baseline.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(np.atleast_2d(np.cov(baseline, rowvar=False)))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.maximum(eigenvalues[order], 0.0), vectors[:, order]
        explained = np.cumsum(eigenvalues) / max(eigenvalues.sum(), 1e-12)
        keep = min(int(np.searchsorted(explained, self.variance)) + 1, len(eigenvalues) - 1)
        keep = max(keep, 1)
        self.components = vectors[:, :keep]
        self.eigenvalues = np.maximum(eigenvalues[:keep], 1e-6)
        # Mean residual energy per dropped dimension puts SPE on a scale comparable across machines.
        self.residual_scale = float(max(eigenvalues[keep:].sum(), 1e-6))

    def score(self, history: np.ndarray) -> float:
        if self.mean is None or self.components is None or self.eigenvalues is None:
            raise RuntimeError("PcaScorer.score called before fit or load_state")
        delta = np.asarray(history, dtype=np.float64)[-1] - self.mean
        projected = delta @ self.components
        spe = float(delta @ delta - projected @ projected) / self.residual_scale
        t2 = float(np.sum(projected**2 / self.eigenvalues)) / len(self.eigenvalues)
        return spe + self.t2_weight * t2

    def state(self) -> dict[str, Any]:
        assert self.mean is not None and self.components is not None and self.eigenvalues is not None
        return {"variance": self.variance, "t2_weight": self.t2_weight, "mean": self.mean.tolist(),
                "components": self.components.tolist(), "eigenvalues": self.eigenvalues.tolist(),
                "residual_scale": self.residual_scale}

    def load_state(self, state: dict[str, Any]) -> None:
        self.variance = float(state["variance"])
        self.t2_weight = float(state["t2_weight"])
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.components = np.asarray(state["components"], dtype=np.float64).reshape(len(self.mean), -1)
        self.eigenvalues = np.asarray(state["eigenvalues"], dtype=np.float64)
        self.residual_scale = float(state["residual_scale"])
        if self.components.shape[1] != len(self.eigenvalues):
            raise ValueError("PCA state: components and eigenvalues disagree")


class GmmScorer(Scorer):
    """Negative log-likelihood under a Gaussian mixture (diagonal covariances) fitted by EM.

    A mixture covers machines whose normal state has several modes (load levels, speeds), where a
    single Gaussian would call the gap between the modes normal.  The mixture is fitted in the
    baseline's whitened principal coordinates (decorrelated, unit variance; shrunk covariance as
    Mahalanobis's): a load change moves a score of level features together (every band, rms, the
    shaft lines), and diagonal covariances in feature space would count each of them as independent
    evidence (on the second generator's fleet that made 40 false alarms against Mahalanobis's 5).
    """

    name: ClassVar[str] = "gmm"

    def __init__(self, components: int = 3, iterations: int = 100, seed: int = 0,
                 variance_floor: float = 1e-2, shrinkage: float = 0.1) -> None:
        self.components = components
        self.iterations = iterations
        self.seed = seed
        self.variance_floor = variance_floor
        self.shrinkage = shrinkage
        #: baseline mean and whitening matrix (features -> decorrelated unit-variance coordinates)
        self.center: np.ndarray | None = None
        self.projection: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.means: np.ndarray | None = None
        self.variances: np.ndarray | None = None

    def _log_joint(self, data: np.ndarray) -> np.ndarray:
        assert self.weights is not None and self.means is not None and self.variances is not None
        diff = data[:, None, :] - self.means[None]
        log_pdf = -0.5 * (np.sum(diff**2 / self.variances, axis=2)
                          + np.sum(np.log(2 * np.pi * self.variances), axis=1))
        return log_pdf + np.log(self.weights)

    def _whiten(self, data: np.ndarray) -> np.ndarray:
        assert self.center is not None and self.projection is not None
        return (data - self.center) @ self.projection

    def fit(self, baseline: np.ndarray) -> None:
        raw = np.asarray(baseline, dtype=np.float64)
        self.center = raw.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(_regularised_covariance(raw, self.shrinkage))
        self.projection = vectors / np.sqrt(np.maximum(eigenvalues, 1e-9))
        data = self._whiten(raw)
        count = min(self.components, max(1, len(data) // 10))
        rng = np.random.default_rng(self.seed)
        self.weights = np.full(count, 1.0 / count)
        self.means = data[rng.choice(len(data), size=count, replace=False)]
        self.variances = np.tile(np.maximum(data.var(axis=0), self.variance_floor), (count, 1))
        previous = -np.inf
        for _ in range(self.iterations):
            log_joint = self._log_joint(data)
            log_norm = np.logaddexp.reduce(log_joint, axis=1, keepdims=True)
            resp = np.exp(log_joint - log_norm)
            mass = resp.sum(axis=0) + 1e-10
            self.weights = mass / mass.sum()
            self.means = (resp.T @ data) / mass[:, None]
            second = (resp.T @ data**2) / mass[:, None]
            self.variances = np.maximum(second - self.means**2, self.variance_floor)
            likelihood = float(log_norm.mean())
            if likelihood - previous < 1e-6:
                break
            previous = likelihood

    def score(self, history: np.ndarray) -> float:
        if self.weights is None or self.projection is None:
            raise RuntimeError("GmmScorer.score called before fit or load_state")
        latest = self._whiten(np.asarray(history, dtype=np.float64)[-1:])
        return -float(np.logaddexp.reduce(self._log_joint(latest), axis=1)[0]) / latest.shape[1]

    def state(self) -> dict[str, Any]:
        assert self.weights is not None and self.means is not None and self.variances is not None
        assert self.center is not None and self.projection is not None
        return {"components": self.components, "weights": self.weights.tolist(),
                "means": self.means.tolist(), "variances": self.variances.tolist(),
                "shrinkage": self.shrinkage, "center": self.center.tolist(), "projection": self.projection.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        # a state saved before the whitening has no projection: the KeyError makes the machine relearn
        self.center = np.asarray(state["center"], dtype=np.float64)
        self.projection = np.asarray(state["projection"], dtype=np.float64).reshape(len(self.center), -1)
        self.shrinkage = float(state["shrinkage"])
        self.components = int(state["components"])
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.means = np.asarray(state["means"], dtype=np.float64)
        self.variances = np.asarray(state["variances"], dtype=np.float64)
        if self.means.shape != self.variances.shape or len(self.weights) != len(self.means) \
                or self.means.shape[1] != self.projection.shape[1]:
            raise ValueError("GMM state: weights, means, variances and projection disagree")


#: scorer name -> "module:Class"; imported on demand so the LSTM's runtime is only loaded when asked for
SCORERS: dict[str, str] = {
    "mahalanobis": "models.vibration.runtime.scorers:MahalanobisScorer",
    "pca": "models.vibration.runtime.scorers:PcaScorer",
    "gmm": "models.vibration.runtime.scorers:GmmScorer",
    "lstm_ae": "models.vibration.runtime.lstm:LstmAutoencoderScorer",
}


def scorer_class(name: str) -> type[Scorer]:
    """The scorer class registered under ``name``; ScorerError names the known ones otherwise."""
    if name not in SCORERS:
        raise ScorerError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
    module, _, attribute = SCORERS[name].partition(":")
    cls: type[Scorer] = getattr(importlib.import_module(module), attribute)
    return cls


def make_scorer(name: str, model: Model | None = None) -> Scorer:
    """A fresh, unfitted scorer; model-based ones (``needs_model``) get ``model``, the others none."""
    cls = scorer_class(name)
    if cls.needs_model:
        if model is None:
            raise ScorerError(f"scorer {name!r} needs a model: set the task's `model` to its manifest")
        return cls(model)  # type: ignore[call-arg]
    return cls()
