"""ONNX Runtime backend: CPU everywhere, CUDA and TensorRT execution providers where present."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from models.runtime.base import Backend
from models.runtime.caches import cache_path

if TYPE_CHECKING:
    from models.runtime.manifest import Manifest

log = structlog.get_logger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class OnnxRuntimeConfig(BaseModel):
    """Settings of the ONNX Runtime backend."""

    model_config = ConfigDict(extra="forbid")
    cache_field: ClassVar[str] = "engine_cache_dir"
    cache_folder: ClassVar[str] = "trt-cache"
    kind: Literal["onnxruntime"] = "onnxruntime"
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default=["cpu"], description="execution providers in order of preference; missing ones fall back"
    )
    intra_op_threads: int = Field(default=1, ge=0, description="threads per model run; 0 lets ORT decide")
    engine_cache_dir: Path | None = Field(
        default=None, description="TensorRT EP engine cache (default: trt-cache in the state directory)"
    )
    fp16: bool = Field(default=True, description="let the TensorRT EP use FP16 where the GPU supports it")


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Keep the requested providers that this onnxruntime build has, CPU always last."""
    chosen = [PROVIDER_NAMES[name] for name in requested if PROVIDER_NAMES[name] in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend(Backend):
    """Runs a model with an ``onnxruntime.InferenceSession``."""

    config_type = OnnxRuntimeConfig

    def __init__(self, manifest: Manifest, config: OnnxRuntimeConfig) -> None:
        import onnxruntime as ort

        ort.disable_telemetry_events()  # an edge box in a factory phones nobody
        self.manifest = manifest
        wanted = choose_providers(config.providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        provider_options = [self._options(name, config) for name in wanted]
        self.session = ort.InferenceSession(
            str(manifest.onnx_path), options, providers=wanted, provider_options=provider_options
        )
        self.providers = list(self.session.get_providers())
        asked = [PROVIDER_NAMES[name] for name in config.providers]
        if asked != self.providers[: len(asked)] or len(asked) < len(self.providers) - 1:
            missing = [name for name in asked if name not in self.providers]
            if missing:
                log.warning("execution providers missing, falling back", model=manifest.name,
                            asked=asked, used=self.providers)
        self.output_names = [spec.name for spec in manifest.outputs]

    @staticmethod
    def _options(provider: str, config: OnnxRuntimeConfig) -> dict[str, str]:
        if provider == "TensorrtExecutionProvider":
            cache = cache_path(config)
            cache.mkdir(parents=True, exist_ok=True)
            return {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache),
                "trt_fp16_enable": str(config.fp16),
            }
        return {}

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.output_names, inputs))

    def close(self) -> None:
        del self.session
