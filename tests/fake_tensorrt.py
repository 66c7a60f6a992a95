"""An in-memory stand-in for the parts of ``tensorrt`` and cuda-python's ``cudart`` the backend uses.

It exists because CI has no GPU: the backend's own plumbing (engine cache, profiles, device
buffers, chunked batches, cleanup) can then run on a CPU. "Device memory" is host memory
reached through real addresses, so copies use the pointers the backend computes; an "engine"
runs its ONNX file with ONNX Runtime and refuses shapes outside its profile and writes past a
buffer's end. It proves nothing about TensorRT itself: tests/gpu/check_tensorrt.py does that.
"""

from __future__ import annotations

import ctypes
import json
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

MAGIC = b"FAKE-TRT-ENGINE\n"


class DataType(Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT32 = np.int32
    INT64 = np.int64
    UINT8 = np.uint8


ORT_TYPES = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF,
             "tensor(int32)": DataType.INT32, "tensor(int64)": DataType.INT64, "tensor(uint8)": DataType.UINT8}


def nptype(dtype: DataType) -> type:
    return dtype.value


class Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0


class MemoryPoolType:
    WORKSPACE = "workspace"


class BuilderFlag:
    FP16 = "fp16"


class TensorIOMode(Enum):
    INPUT = 1
    OUTPUT = 2


class Network:
    def __init__(self) -> None:
        self.inputs: list[SimpleNamespace] = []
        self.onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> SimpleNamespace:
        return self.inputs[index]


class OnnxParser:
    def __init__(self, network: Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as error:  # the real parser reports errors the same way: False + get_error
            self.errors.append(str(error))
            return False
        self.network.onnx = Path(path).read_bytes()
        self.network.inputs = [SimpleNamespace(name=i.name, shape=tuple(d if isinstance(d, int) else -1
                                                                      for d in i.shape))
                               for i in session.get_inputs()]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.profiles: list[dict[str, list[list[int]]]] = []
        self.workspace = 0

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: dict[str, list[list[int]]]) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class OptimizationProfile(dict[str, list[list[int]]]):
    def set_shape(self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> None:
        self[name] = [list(low), list(opt), list(high)]


class Builder:
    builds = 0

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> Network:
        return Network()

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
        Builder.builds += 1
        header = json.dumps({"profile": config.profiles[0], "fp16": "fp16" in config.flags}).encode()
        return MAGIC + len(header).to_bytes(4, "little") + header + network.onnx


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
        if not data.startswith(MAGIC):
            return None
        size = int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "little")
        header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + size])
        return Engine(header, data[len(MAGIC) + 4 + size:])


class Engine:
    def __init__(self, header: dict[str, Any], onnx: bytes) -> None:
        self.profile = {name: [tuple(shape) for shape in shapes] for name, shapes in header["profile"].items()}
        self.fp16 = header["fp16"]
        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.tensors = [(i.name, ORT_TYPES[i.type], TensorIOMode.INPUT) for i in self.session.get_inputs()] + \
            [(o.name, ORT_TYPES[o.type], TensorIOMode.OUTPUT) for o in self.session.get_outputs()]

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return next(dtype for tensor, dtype, _ in self.tensors if tensor == name)

    def create_execution_context(self) -> Context:
        return Context(self)


def view(address: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A numpy array over memory at an address (the fake's 'device memory')."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer(memoryview((ctypes.c_char * nbytes).from_address(address)), dtype=dtype).reshape(shape)


class Context:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.profile[name]
        if len(shape) != len(low) or any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)):
            raise ValueError(f"fake TensorRT: shape {shape} of {name} outside the profile {low}..{high}")
        self.shapes[name] = tuple(shape)
        return True

    def _feeds(self, address_of: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        feeds = {}
        for name, dtype, mode in self.engine.tensors:
            if mode is TensorIOMode.INPUT:
                shape = self.shapes[name]
                dt = np.dtype(nptype(dtype))
                feeds[name] = view(address_of[name], shape, dt).copy() if address_of \
                    else np.zeros(shape, dtype=dt)
        return feeds

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.shapes:
            return self.shapes[name]
        index = [o.name for o in self.engine.session.get_outputs()].index(name)
        return tuple(self.engine.session.run(None, self._feeds())[index].shape)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: Any) -> bool:
        self.runs += 1
        outputs = self.engine.session.run(None, self._feeds(self.addresses))
        for meta, value in zip(self.engine.session.get_outputs(), outputs, strict=True):
            size = CudaRuntime.sizes[self.addresses[meta.name]]
            if value.nbytes > size:
                raise MemoryError(f"fake TensorRT: output {meta.name} ({value.nbytes} B) overflows its "
                                  f"buffer ({size} B)")
            view(self.addresses[meta.name], value.shape, value.dtype)[...] = value
        return True


class CudaRuntime:
    """The cudart calls the backend makes; every call returns (error, *values) like cuda-python."""

    cudaError_t = SimpleNamespace(cudaSuccess=0, cudaErrorMemoryAllocation=2)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    sizes: dict[int, int] = {}
    buffers: dict[int, ctypes.Array[ctypes.c_char]] = {}

    def __init__(self, gpu_name: bytes = b"NVIDIA Orin (nvgpu)", capability: tuple[int, int] = (8, 7)) -> None:
        self.props = SimpleNamespace(name=gpu_name, major=capability[0], minor=capability[1])
        self.streams: set[int] = set()

    def cudaGetErrorString(self, error: int) -> tuple[int, bytes]:
        return 0, f"fake error {error}".encode()

    def cudaGetDevice(self) -> tuple[int, int]:
        return 0, 0

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, SimpleNamespace]:
        return 0, self.props

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(nbytes)
        address = ctypes.addressof(buffer)
        CudaRuntime.buffers[address], CudaRuntime.sizes[address] = buffer, nbytes
        return 0, address

    def cudaFree(self, address: int) -> tuple[int]:
        if address not in CudaRuntime.buffers:
            return (1,)
        del CudaRuntime.buffers[address], CudaRuntime.sizes[address]
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        stream = len(self.streams) + 1000
        self.streams.add(stream)
        return 0, stream

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.streams.remove(stream)
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
        device = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        if nbytes > CudaRuntime.sizes.get(device, -1):
            return (1,)
        ctypes.memmove(dst, src, nbytes)
        return (0,)


def fake_tensorrt(version: str = "10.3.0") -> SimpleNamespace:
    """A module-like namespace with the tensorrt names the backend uses."""
    return SimpleNamespace(
        __version__=version, Logger=Logger, Runtime=Runtime, Builder=Builder, OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, MemoryPoolType=MemoryPoolType,
        BuilderFlag=BuilderFlag, nptype=nptype)
