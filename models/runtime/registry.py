"""The registry that turns a backend config and a manifest into a loaded model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import structlog
from pydantic import Field

from models.runtime.base import Backend, BackendUnavailable
from models.runtime.manifest import Manifest, load_manifest
from models.runtime.onnxrt import OnnxRuntimeBackend, OnnxRuntimeConfig
from models.runtime.tensorrt import TensorRTBackend, TensorRTConfig

log = structlog.get_logger(__name__)
BackendConfig = Annotated[Union[OnnxRuntimeConfig, TensorRTConfig], Field(discriminator="kind")]


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
    backend: Backend
    if isinstance(config, TensorRTConfig):
        try:
            backend = TensorRTBackend(manifest, config)
        except BackendUnavailable as error:
            fallback = OnnxRuntimeConfig(providers=["tensorrt", "cuda", "cpu"], fp16=config.fp16,
                                         engine_cache_dir=config.cache_dir / "onnxruntime")
            backend = OnnxRuntimeBackend(manifest, fallback)
            log.warning("native TensorRT backend unavailable; falling back to ONNX Runtime", model=manifest.name,
                        asked="tensorrt", reason=str(error), used=backend.providers)
    else:
        backend = OnnxRuntimeBackend(manifest, config)
    return Model(manifest, backend)
