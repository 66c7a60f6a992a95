"""The registry that turns a backend config and a manifest into a loaded model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from models.runtime.base import Backend, BackendUnavailable
from models.runtime.caches import cache_path
from models.runtime.manifest import Manifest, load_manifest
from models.runtime.onnxrt import OnnxRuntimeBackend, OnnxRuntimeConfig
from models.runtime.tensorrt import TensorRTConfig
from sensors.plugins import Registry

log = structlog.get_logger(__name__)
BACKENDS: Registry[Backend] = Registry("backend", {
    "onnxruntime": "models.runtime.onnxrt:OnnxRuntimeBackend",
    "tensorrt": "models.runtime.tensorrt:TensorRTBackend",
})
#: the tagged union of every backend's settings, as the agent config takes it
BackendConfig: Any = BACKENDS.config_union()


@dataclass
class Model:
    """A loaded model: its manifest (name, version, parameters) and the backend that runs it."""

    manifest: Manifest
    backend: Backend

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.backend.run(inputs)

    def close(self) -> None:
        self.backend.close()


def load_model(manifest_path: str | Path, config: OnnxRuntimeConfig | TensorRTConfig | None = None) -> Model:
    """Load the model a manifest describes with the configured backend (ONNX Runtime CPU by default)."""
    manifest = load_manifest(manifest_path)
    config = config or OnnxRuntimeConfig()
    backend_type: Any = BACKENDS.get(config.kind)
    try:
        backend: Backend = backend_type(manifest, config)
    except BackendUnavailable as error:
        if not isinstance(config, TensorRTConfig):
            raise
        fallback = OnnxRuntimeConfig(providers=["tensorrt", "cuda", "cpu"], fp16=config.fp16,
                                     engine_cache_dir=cache_path(config) / "onnxruntime")
        backend = OnnxRuntimeBackend(manifest, fallback)
        log.warning("native TensorRT backend unavailable; falling back to ONNX Runtime", model=manifest.name,
                    asked="tensorrt", reason=str(error), used=backend.providers)
    return Model(manifest, backend)
