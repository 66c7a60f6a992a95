"""Inference runtime: the backend interface, its ONNX Runtime and TensorRT backends, and manifests.

Public surface: :func:`load_model` returns a :class:`Model` (manifest + backend);
``BackendConfig`` is the tagged union of backend settings used in the agent config.
Errors: :class:`ManifestError` for a bad manifest, :class:`BackendUnavailable` when
a backend's library is not installed (raised when the backend is asked for).
"""

from models.runtime.base import Backend, BackendUnavailable
from models.runtime.manifest import Manifest, ManifestError, load_manifest, write_manifest
from models.runtime.onnxrt import OnnxRuntimeConfig
from models.runtime.registry import BackendConfig, Model, load_model
from models.runtime.tensorrt import TensorRTConfig

__all__ = [
    "Backend", "BackendConfig", "BackendUnavailable", "Manifest", "ManifestError", "Model",
    "OnnxRuntimeConfig", "TensorRTConfig", "load_manifest", "load_model", "write_manifest",
]
