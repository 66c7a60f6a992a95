"""Inference runtime: the backend interface, its ONNX Runtime and TensorRT backends, and manifests.

Public surface: :func:`load_model` returns a :class:`Model` (manifest + backend);
``BackendConfig`` is the tagged union of backend settings used in the agent config.
Engine caches live in the state directory (:func:`under_state_dir`, :func:`cache_path`).
Errors: :class:`ManifestError` for a bad manifest, :class:`BackendUnavailable` when
a backend's library is not installed (raised when the backend is asked for).
"""

from models.runtime.base import Backend, BackendUnavailable
from models.runtime.caches import DEFAULT_STATE_DIR, cache_path, under_state_dir
from models.runtime.manifest import Manifest, ManifestError, load_manifest, write_manifest
from models.runtime.onnxrt import OnnxRuntimeConfig
from models.runtime.registry import BackendConfig, Model, load_model
from models.runtime.tensorrt import TensorRTConfig

__all__ = [
    "DEFAULT_STATE_DIR", "Backend", "BackendConfig", "BackendUnavailable", "Manifest", "ManifestError", "Model",
    "OnnxRuntimeConfig", "TensorRTConfig", "cache_path", "load_manifest", "load_model", "under_state_dir",
    "write_manifest",
]
