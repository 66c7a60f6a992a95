"""Native TensorRT backend: builds an engine from the model's ONNX file and caches it per device.

The engine is built once per (model file, TensorRT version, GPU, precision, shape profile) and
serialised to ``cache_dir``; later starts deserialise it in a second instead of rebuilding for
minutes. Device memory is handled with cuda-python's runtime bindings (no PyTorch, no PyCUDA).
``tensorrt`` and ``cuda`` are imported when the backend is created, never at import, and their
absence raises :class:`BackendUnavailable` so that the caller can fall back, loudly.

The functions above the backend class are pure (no TensorRT, no GPU) and are unit-tested on
machines without either; ``tests/gpu/check_tensorrt.py`` checks the rest on a GPU.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.runtime.base import Backend, BackendUnavailable
from models.runtime.caches import cache_path
from models.runtime.manifest import file_sha256
from sensors.files import write_bytes_atomic

if TYPE_CHECKING:
    from models.runtime.manifest import Manifest, TensorSpec

log = structlog.get_logger(__name__)

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]  # min, opt, max


class TensorRTConfig(BaseModel):
    """Settings of the native TensorRT backend (``pip install edge-agent[tensorrt]``; JetPack on Jetson)."""

    model_config = ConfigDict(extra="forbid")
    cache_field: ClassVar[str] = "cache_dir"
    cache_folder: ClassVar[str] = "trt-engines"
    kind: Literal["tensorrt"] = "tensorrt"
    fp16: bool = Field(default=True, description="build FP16 engines where the GPU supports it")
    cache_dir: Path | None = Field(default=None, description="engine cache, keyed by model hash, TensorRT version "
                                   "and GPU (default: trt-engines in the state directory)")
    workspace_mb: int = Field(default=1024, ge=16, description="builder workspace limit")
    max_batch: int = Field(default=16, ge=1,
                           description="largest batch of an engine with a dynamic batch axis; "
                                       "bigger batches run in chunks")
    opt_batch: int = Field(default=1, ge=1, description="batch size the engine is tuned for")
    dims: dict[str, tuple[int, int, int]] = Field(
        default_factory=dict,
        description="min, opt and max of named dynamic axes other than the batch axis, e.g. {time: [1, 64, 512]}")

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTConfig:
        if self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch {self.opt_batch} is larger than max_batch {self.max_batch}")
        for name, (low, opt, high) in self.dims.items():
            if not 1 <= low <= opt <= high:
                raise ValueError(f"dims.{name}: need 1 <= min <= opt <= max, got {[low, opt, high]}")
        return self


# ---- pure functions: cache naming, shape profiles, precision, batching ------------------------


def sanitise(text: str) -> str:
    """A file-name-safe form of a GPU name or version: runs of other characters become one '-'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.") or "unknown"


def engine_cache_key(model_sha256: str, trt_version: str, gpu_name: str, fp16: bool,
                     profile: str = "") -> str:
    """Cache key of an engine: a different model, TensorRT, GPU, precision or shape profile needs a new one."""
    if not re.fullmatch(r"[0-9a-f]{16,}", model_sha256):
        raise ValueError(f"model_sha256 must be a lowercase hex digest, got {model_sha256!r}")
    key = f"{model_sha256[:16]}-trt{sanitise(trt_version)}-{sanitise(gpu_name)}-{'fp16' if fp16 else 'fp32'}"
    if profile:
        key += "-p" + hashlib.sha256(profile.encode()).hexdigest()[:8]
    return key


def engine_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.engine"


def profile_shapes(spec: TensorSpec, config: TensorRTConfig) -> Profile:
    """Min, opt and max shapes of one input from its manifest dims.

    Fixed dims stay fixed; a named first dim is the batch axis (1, opt_batch, max_batch); any
    other named dim needs its range in ``config.dims``.
    """
    low: list[int] = []
    opt: list[int] = []
    high: list[int] = []
    for index, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            if dim < 1:
                raise ValueError(f"input {spec.name!r}: dim {index} is {dim}; name dynamic axes instead")
            triple = (dim, dim, dim)
        elif dim in config.dims:
            triple = config.dims[dim]
        elif index == 0:
            triple = (1, config.opt_batch, config.max_batch)
        else:
            raise ValueError(f"input {spec.name!r}: dynamic axis {dim!r} (dim {index}) needs its min, opt "
                             f"and max in the tensorrt backend's 'dims' setting")
        low.append(triple[0])
        opt.append(triple[1])
        high.append(triple[2])
    return tuple(low), tuple(opt), tuple(high)


def check_profile(name: str, network_dims: Sequence[int], profile: Profile) -> None:
    """Refuse a profile that disagrees with the ONNX graph (-1 marks the graph's dynamic dims)."""
    if len(network_dims) != len(profile[0]):
        raise ValueError(f"input {name!r}: the manifest gives {len(profile[0])} dims, "
                         f"the ONNX graph {len(network_dims)}")
    for index, dim in enumerate(network_dims):
        if dim >= 0 and any(shape[index] != dim for shape in profile):
            raise ValueError(f"input {name!r}: dim {index} is fixed at {dim} in the ONNX graph, "
                             f"the manifest asks for {[shape[index] for shape in profile]}")


def profile_text(profiles: dict[str, Profile]) -> str:
    """A stable text form of all inputs' profiles, for the cache key."""
    return ";".join(f"{name}={profiles[name]}" for name in sorted(profiles))


def fast_fp16(compute_capability: tuple[int, int]) -> bool:
    """Whether the GPU runs FP16 at least as fast as FP32.

    Replaces ``builder.platform_has_fast_fp16`` (deprecated in TensorRT 10.5, removed in 11):
    Maxwell Tegra (5.3), P100 (6.0), Tegra X2 (6.2) and Volta or newer; not consumer Pascal (6.1).
    """
    return compute_capability in {(5, 3), (6, 0), (6, 2)} or compute_capability >= (7, 0)


def choose_fp16(requested: bool, trt_version: str, compute_capability: tuple[int, int]) -> tuple[bool, str]:
    """Whether to set the builder's FP16 flag, and why not when it is not set."""
    if not requested:
        return False, "fp16 not requested"
    if int(trt_version.split(".")[0]) >= 11:
        # TensorRT 11 builds strongly typed networks only: precision comes from the ONNX file.
        return False, "TensorRT >= 11 has no FP16 builder flag; export an FP16 ONNX model instead"
    if not fast_fp16(compute_capability):
        return False, f"GPU (compute capability {compute_capability}) has no fast FP16"
    return True, ""


def explicit_batch_flag_needed(trt_version: str) -> bool:
    """TensorRT < 10 needs the EXPLICIT_BATCH network flag; 10 deprecates it (always explicit)."""
    return int(trt_version.split(".")[0]) < 10


def fits(shape: Shape, low: Shape, high: Shape) -> bool:
    """Whether a shape lies within a profile's min and max, dim by dim."""
    return len(shape) == len(low) and all(lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True))


def batch_slices(batch: int, max_batch: int) -> list[slice]:
    """Consecutive slices covering ``batch`` items, none longer than ``max_batch``."""
    if batch < 1 or max_batch < 1:
        raise ValueError(f"batch {batch} and max_batch {max_batch} must be positive")
    return [slice(start, min(start + max_batch, batch)) for start in range(0, batch, max_batch)]


# ---- CUDA runtime helpers -----------------------------------------------------------------------


def import_libraries() -> tuple[Any, Any]:
    """Import tensorrt and cuda-python's runtime bindings, or raise BackendUnavailable saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise BackendUnavailable(
            "the native TensorRT backend needs the 'tensorrt' Python package: pip install "
            "'edge-agent[tensorrt]' on x86-64/SBSA, or on a Jetson JetPack's python3-libnvinfer with a "
            f"venv made with --system-site-packages (deploy/JETSON.md); import failed: {error}") from error
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python 12.x
        except ImportError as error:
            raise BackendUnavailable(
                "the native TensorRT backend needs cuda-python for device memory: "
                f"pip install 'cuda-python>=12'; import failed: {error}") from error
    return trt, cudart


class Cuda:
    """The few CUDA runtime calls the backend needs, each checked."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def check(self, result: Any) -> Any:
        """Unpack a cuda-python result tuple, raising RuntimeError on a CUDA error."""
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(error)
            raise RuntimeError(f"CUDA error {int(error)}: {text.decode() if isinstance(text, bytes) else text}")
        return values[0] if len(values) == 1 else values

    def device(self) -> tuple[str, tuple[int, int]]:
        """Name and compute capability of the current GPU; BackendUnavailable without one."""
        try:
            index = self.check(self.rt.cudaGetDevice())
            props = self.check(self.rt.cudaGetDeviceProperties(index))
        except RuntimeError as error:
            raise BackendUnavailable(f"no usable CUDA device for TensorRT: {error}") from error
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name, (int(props.major), int(props.minor))

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, pointer: int) -> None:
        self.check(self.rt.cudaFree(pointer))

    def stream(self) -> Any:
        return self.check(self.rt.cudaStreamCreate())

    def to_device(self, pointer: int, array: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, stream))

    def to_host(self, array: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream))

    def destroy(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamDestroy(stream))


# ---- the backend --------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    """Runs a model as a TensorRT engine built from its ONNX file, cached per device."""

    config_type = TensorRTConfig

    def __init__(self, manifest: Manifest, config: TensorRTConfig) -> None:
        trt, cudart = import_libraries()
        self.manifest = manifest
        self.config = config
        self.trt = trt
        self.cuda = Cuda(cudart)
        self.buffers: dict[str, int] = {}
        self.stream: Any = None
        gpu_name, capability = self.cuda.device()
        self.profiles = {spec.name: profile_shapes(spec, config) for spec in manifest.inputs}
        self.fp16, why_not = choose_fp16(config.fp16, trt.__version__, capability)
        if config.fp16 and not self.fp16:
            log.warning("building an FP32 engine", model=manifest.name, reason=why_not)
        model_hash = manifest.sha256 or file_sha256(manifest.onnx_path)
        key = engine_cache_key(model_hash, trt.__version__, gpu_name, self.fp16, profile_text(self.profiles))
        self.engine_file = engine_path(cache_path(config), key)
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        self.engine = self._load_or_build()
        self.context = self.engine.create_execution_context()
        self.providers = [f"TensorRT {trt.__version__} on {gpu_name} ({'fp16' if self.fp16 else 'fp32'})"]
        self.input_names = [spec.name for spec in manifest.inputs]
        self.output_names = [spec.name for spec in manifest.outputs]
        self._lock = threading.Lock()
        self.stream = self.cuda.stream()
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    def _load_or_build(self) -> Any:
        runtime = self.trt.Runtime(self.trt_logger)
        if self.engine_file.is_file():
            engine = runtime.deserialize_cuda_engine(self.engine_file.read_bytes())
            if engine is not None:
                log.info("TensorRT engine loaded from cache", model=self.manifest.name, path=str(self.engine_file))
                return engine
            log.warning("cached TensorRT engine unusable, rebuilding", path=str(self.engine_file))
        started = time.monotonic()
        serialized = self._build()
        write_bytes_atomic(self.engine_file, serialized)
        log.info("TensorRT engine built", model=self.manifest.name, fp16=self.fp16,
                 seconds=round(time.monotonic() - started, 1), path=str(self.engine_file))
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise RuntimeError(f"TensorRT could not load the engine it just built for {self.manifest.name}")
        return engine

    def _build(self) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.trt_logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) \
            if explicit_batch_flag_needed(trt.__version__) else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.trt_logger)
        if not parser.parse_from_file(str(self.manifest.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {self.manifest.onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.config.workspace_mb << 20)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        graph_inputs = [network.get_input(index) for index in range(network.num_inputs)]
        if sorted(tensor.name for tensor in graph_inputs) != sorted(self.profiles):
            raise ValueError(f"{self.manifest.name}: the manifest's inputs {sorted(self.profiles)} are not the "
                             f"ONNX graph's {sorted(tensor.name for tensor in graph_inputs)}")
        for tensor in graph_inputs:
            shapes = self.profiles[tensor.name]
            check_profile(tensor.name, tuple(tensor.shape), shapes)
            profile.set_shape(tensor.name, *shapes)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {self.manifest.onnx_path}")
        return bytes(serialized)

    def _dtype(self, name: str) -> np.dtype[Any]:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def _allocate(self) -> None:
        """One device buffer per I/O tensor, sized for the profile's largest shapes, bound once."""
        for name, (_, _, largest) in self.profiles.items():
            self.context.set_input_shape(name, largest)
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            shape = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self._dtype(name).itemsize
            self.buffers[name] = self.cuda.malloc(nbytes)
            self.context.set_tensor_address(name, self.buffers[name])

    def _largest_batch(self, batch: int) -> int:
        """How many items the engine takes in one run: max_batch if the batch axis is dynamic."""
        low, _, high = self.profiles[self.input_names[0]]
        return high[0] if low[0] != high[0] else batch

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"{self.manifest.name}: missing inputs {missing}")
        arrays = {name: np.ascontiguousarray(inputs[name], dtype=self._dtype(name)) for name in self.input_names}
        batch = int(arrays[self.input_names[0]].shape[0])
        largest = self._largest_batch(batch)
        if batch <= largest:
            return self._run_chunk(arrays)
        parts = [self._run_chunk({name: array[part] for name, array in arrays.items()})
                 for part in batch_slices(batch, largest)]
        return [np.concatenate([part[index] for part in parts]) for index in range(len(self.output_names))]

    def _run_chunk(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            for name, array in arrays.items():
                low, _, high = self.profiles[name]
                if not fits(array.shape, low, high):
                    raise ValueError(f"{self.manifest.name}: input {name!r} has shape {array.shape}, the engine "
                                     f"takes {low} to {high}")
                self.context.set_input_shape(name, array.shape)
                self.cuda.to_device(self.buffers[name], array, self.stream)
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError(f"TensorRT failed to run {self.manifest.name}")
            outputs = []
            for name in self.output_names:
                host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name))
                self.cuda.to_host(host, self.buffers[name], self.stream)
                outputs.append(host)
            # Also keeps the input arrays alive until their asynchronous copies are done.
            self.cuda.synchronize(self.stream)
            return outputs

    def close(self) -> None:
        """Free device buffers and the stream; safe to call twice or after a failed start."""
        for pointer in self.buffers.values():
            self.cuda.free(pointer)
        self.buffers = {}
        if self.stream is not None:
            self.cuda.destroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None
