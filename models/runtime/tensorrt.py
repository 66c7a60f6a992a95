"""Native TensorRT backend: builds an engine from the model's ONNX file and caches it per device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.runtime.base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from models.runtime.manifest import Manifest


class TensorRTConfig(BaseModel):
    """Settings of the native TensorRT backend (``pip install edge-agent[tensorrt]``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["tensorrt"] = "tensorrt"
    fp16: bool = Field(default=True, description="build FP16 engines where the GPU supports it")
    cache_dir: Path = Field(default=Path("/var/lib/edge-agent/trt-engines"),
                            description="engine cache, keyed by model hash, TensorRT version and GPU")
    workspace_mb: int = Field(default=1024, ge=16, description="builder workspace limit")


class TensorRTBackend(Backend):
    """Runs a model as a TensorRT engine (implementation in progress by the runtime owner)."""

    providers: list[str]

    def __init__(self, manifest: Manifest, config: TensorRTConfig) -> None:
        self.manifest = manifest
        self.config = config
        raise BackendUnavailable("tensorrt backend not built yet")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise BackendUnavailable("tensorrt backend not built yet")

    def close(self) -> None:
        return None


def engine_cache_key(model_sha256: str, trt_version: str, gpu_name: str, fp16: bool) -> str:
    """Cache key of an engine: a different model, TensorRT or GPU needs a new engine."""
    safe_gpu = "".join(c if c.isalnum() else "-" for c in gpu_name)
    return f"{model_sha256[:16]}-trt{trt_version}-{safe_gpu}-{'fp16' if fp16 else 'fp32'}"


def engine_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.engine"
