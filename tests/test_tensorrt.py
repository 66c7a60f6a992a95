"""The native TensorRT backend's CPU-side logic: cache keys, profiles, precision, batching, its absence.

TensorRT and a GPU are absent here; the backend's plumbing runs against tests/fake_tensorrt.py,
and tests/gpu/check_tensorrt.py checks real engines on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, save
from pydantic import ValidationError

from models.runtime import BackendUnavailable, OnnxRuntimeConfig, cache_path, load_model, under_state_dir
from models.runtime import tensorrt as trt_backend
from models.runtime.manifest import Manifest, TensorSpec, load_manifest, write_manifest
from models.runtime.tensorrt import (
    TensorRTBackend,
    TensorRTConfig,
    batch_slices,
    check_profile,
    choose_fp16,
    engine_cache_key,
    engine_path,
    explicit_batch_flag_needed,
    fast_fp16,
    fits,
    profile_shapes,
    sanitise,
)
from sensors.files import write_bytes_atomic
from tests import fake_tensorrt

HASH = "ab" * 32
TRT_PRESENT = importlib.util.find_spec("tensorrt") is not None


def spec(*shape: int | str) -> TensorSpec:
    return TensorSpec(name="x", shape=list(shape))


class TestCacheKey:
    BASE: dict[str, Any] = {"model_sha256": HASH, "trt_version": "10.3.0", "gpu_name": "Orin (nvgpu)",
                            "fp16": True}

    @pytest.mark.parametrize(("field", "other"), [
        ("model_sha256", "cd" * 32), ("trt_version", "8.6.2"), ("gpu_name", "NVIDIA H200"), ("fp16", False)])
    def test_each_input_changes_the_key(self, field: str, other: object) -> None:
        """Another model hash, TensorRT version, GPU or precision gives another cache key (and file)."""
        assert engine_cache_key(**{**self.BASE, field: other}) != engine_cache_key(**self.BASE)

    def test_profile_changes_the_key(self) -> None:
        """An engine built for other shape ranges is not reused."""
        assert engine_cache_key(**self.BASE, profile="x=((1,),(1,),(16,))") != \
            engine_cache_key(**self.BASE, profile="x=((1,),(1,),(32,))")

    def test_key_is_readable(self) -> None:
        """The key names the model hash prefix, TensorRT version, GPU and precision."""
        assert engine_cache_key(**self.BASE) == f"{HASH[:16]}-trt10.3.0-Orin-nvgpu-fp16"

    def test_engine_path(self, tmp_path: Path) -> None:
        """Engines live directly in the cache folder as <key>.engine."""
        assert engine_path(tmp_path, "k") == tmp_path / "k.engine"

    @pytest.mark.parametrize("bad", ["", "ABCDEF0123456789", "0123", "../../etc/passwd0000000000"])
    def test_rejects_non_digest(self, bad: str) -> None:
        """A model hash that is not a lowercase hex digest of at least 16 digits is refused."""
        with pytest.raises(ValueError, match="hex digest"):
            engine_cache_key(bad, "10.3.0", "gpu", True)

    @pytest.mark.parametrize(("name", "safe"), [
        ("NVIDIA GeForce RTX 4090", "NVIDIA-GeForce-RTX-4090"), ("Orin (nvgpu)", "Orin-nvgpu"),
        ("../../etc", "etc"), ("..", "unknown"), ("", "unknown"), ("Tesla T4/", "Tesla-T4")])
    def test_gpu_name_sanitisation(self, name: str, safe: str) -> None:
        """GPU names become file-name-safe: other characters collapse to one '-', edges trimmed."""
        assert sanitise(name) == safe

    @given(st.text(max_size=80))
    def test_sanitised_names_are_one_safe_path_component(self, name: str) -> None:
        """Whatever the driver reports, the sanitised name is a non-empty, non-hidden, slash-free component."""
        safe = sanitise(name)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", safe)
        assert not safe.endswith(("-", "."))


class TestAtomicWrite:
    def test_replaces_whole_file(self, tmp_path: Path) -> None:
        """A write creates missing folders, replaces an old engine, and leaves no temporary file."""
        target = tmp_path / "cache" / "k.engine"
        write_bytes_atomic(target, b"old")
        write_bytes_atomic(target, b"new engine")
        assert target.read_bytes() == b"new engine"
        assert [p.name for p in target.parent.iterdir()] == ["k.engine"]

    def test_failed_write_keeps_old_file(self, tmp_path: Path) -> None:
        """If writing fails, the previous engine stays intact and the temporary file is removed."""
        target = tmp_path / "k.engine"
        write_bytes_atomic(target, b"old")
        with pytest.raises(TypeError):
            write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
        assert target.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["k.engine"]


class TestProfiles:
    def test_dynamic_batch_from_manifest(self) -> None:
        """A named first dim is the batch axis: 1 .. max_batch, tuned at opt_batch; fixed dims stay."""
        config = TensorRTConfig(max_batch=32, opt_batch=4)
        assert profile_shapes(spec("batch", 8, 19), config) == ((1, 8, 19), (4, 8, 19), (32, 8, 19))

    def test_fixed_shape(self) -> None:
        """An all-fixed input gets one shape for min, opt and max."""
        assert profile_shapes(spec(1, 3, 224, 224), TensorRTConfig()) == ((1, 3, 224, 224),) * 3

    def test_named_axis_from_config(self) -> None:
        """Other dynamic axes take their ranges from the config's dims, by axis name."""
        config = TensorRTConfig(dims={"time": (10, 100, 400)}, max_batch=8)
        assert profile_shapes(spec("batch", "time", 64), config) == \
            ((1, 10, 64), (1, 100, 64), (8, 400, 64))

    def test_unknown_axis_is_named_in_the_error(self) -> None:
        """A dynamic non-batch axis without a range fails with the axis and setting named."""
        with pytest.raises(ValueError, match=r"'time'.*'dims'"):
            profile_shapes(spec("batch", "time"), TensorRTConfig())

    @pytest.mark.parametrize("dim", [0, -1])
    def test_non_positive_fixed_dim(self, dim: int) -> None:
        """A fixed dim of 0 or -1 is refused: dynamic axes must be named in the manifest."""
        with pytest.raises(ValueError, match="name dynamic axes"):
            profile_shapes(spec(dim, 4), TensorRTConfig())

    @given(shape=st.lists(st.one_of(st.integers(1, 64), st.just("batch")), min_size=1, max_size=5),
           max_batch=st.integers(1, 64), data=st.data())
    def test_profiles_are_ordered(self, shape: list[int | str], max_batch: int, data: st.DataObject) -> None:
        """For any manifest shape, min <= opt <= max in every dim, and fixed dims are equal in all three."""
        opt_batch = data.draw(st.integers(1, max_batch))
        config = TensorRTConfig(max_batch=max_batch, opt_batch=opt_batch, dims={"batch": (1, opt_batch, max_batch)})
        low, opt, high = profile_shapes(spec(*shape), config)
        for index, dim in enumerate(shape):
            assert 1 <= low[index] <= opt[index] <= high[index]
            if isinstance(dim, int):
                assert low[index] == opt[index] == high[index] == dim

    def test_profile_checked_against_graph(self) -> None:
        """A profile must have the graph's rank and keep the graph's fixed dims; -1 dims are free."""
        profile = ((1, 8, 19), (1, 8, 19), (16, 8, 19))
        check_profile("x", (-1, 8, 19), profile)
        with pytest.raises(ValueError, match="fixed at 9"):
            check_profile("x", (-1, 9, 19), profile)
        with pytest.raises(ValueError, match="3 dims, the ONNX graph 2"):
            check_profile("x", (-1, 8), profile)

    def test_fits(self) -> None:
        """A shape fits a profile only with the same rank and every dim within min..max."""
        assert fits((4, 8), (1, 8), (16, 8))
        assert not fits((17, 8), (1, 8), (16, 8))
        assert not fits((4,), (1, 8), (16, 8))

    @pytest.mark.parametrize("settings_", [{"opt_batch": 8, "max_batch": 4}, {"dims": {"t": (5, 2, 9)}}])
    def test_config_rejects_disordered_ranges(self, settings_: dict[str, Any]) -> None:
        """opt_batch above max_batch, or dims not ordered min <= opt <= max, fail config validation."""
        with pytest.raises(ValidationError):
            TensorRTConfig(**settings_)


class TestPrecisionAndVersions:
    @pytest.mark.parametrize(("capability", "fast"), [
        ((5, 3), True), ((6, 0), True), ((6, 1), False), ((6, 2), True), ((7, 2), True), ((8, 7), True),
        ((9, 0), True), ((5, 2), False)])
    def test_fast_fp16(self, capability: tuple[int, int], fast: bool) -> None:
        """FP16 counts as fast on Tegra X1/X2, P100 and Volta or newer, not on consumer Pascal or Maxwell."""
        assert fast_fp16(capability) is fast

    def test_fp16_on_orin_with_trt10(self) -> None:
        """A Jetson Orin (8.7) with TensorRT 10 gets the FP16 flag when asked."""
        assert choose_fp16(True, "10.3.0", (8, 7)) == (True, "")

    @pytest.mark.parametrize(("requested", "version", "capability", "reason"), [
        (False, "10.3.0", (8, 7), "not requested"), (True, "11.1.0", (9, 0), "FP16 ONNX"),
        (True, "8.6.2", (6, 1), "no fast FP16")])
    def test_fp32_with_reason(self, requested: bool, version: str, capability: tuple[int, int],
                              reason: str) -> None:
        """Without a request, on TensorRT 11 (no FP16 flag) or on a slow-FP16 GPU, FP32 is built and why is said."""
        use, why = choose_fp16(requested, version, capability)
        assert use is False and reason in why

    @pytest.mark.parametrize(("version", "needed"), [("8.6.2", True), ("10.3.0", False), ("11.0.1", False)])
    def test_explicit_batch_flag(self, version: str, needed: bool) -> None:
        """Only TensorRT < 10 needs the EXPLICIT_BATCH network flag."""
        assert explicit_batch_flag_needed(version) is needed


class TestBatchSlices:
    @given(batch=st.integers(1, 500), max_batch=st.integers(1, 64))
    def test_slices_cover_batch_in_order(self, batch: int, max_batch: int) -> None:
        """Slices are consecutive, cover every item once, none exceeds max_batch, and there are ceil(b/m)."""
        slices = batch_slices(batch, max_batch)
        covered = [i for part in slices for i in range(part.start, part.stop)]
        assert covered == list(range(batch))
        assert all(part.stop - part.start <= max_batch for part in slices)
        assert len(slices) == math.ceil(batch / max_batch)

    def test_rejects_empty_batch(self) -> None:
        """A batch of zero items is an error rather than an empty run."""
        with pytest.raises(ValueError):
            batch_slices(0, 4)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A real ONNX model (MatMul + Relu, dynamic batch) with its manifest; returns the manifest path."""
    weights = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "tiny", [x], [y], [helper.make_tensor("w", TensorProto.FLOAT, [6, 3], weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(tmp_path / "model.onnx"))
    manifest = Manifest(name="tiny", task="test", version="1", inputs=[TensorSpec(name="x", shape=["batch", 6])],
                        outputs=[TensorSpec(name="y", shape=["batch", 3])])
    return write_manifest(manifest, tmp_path / "manifest.yaml")


class TestBackendUnavailable:
    @pytest.mark.skipif(TRT_PRESENT, reason="tensorrt is installed here; this pins the message where it is not")
    def test_missing_tensorrt_is_a_clear_error(self, tiny_model: Path) -> None:
        """Without the tensorrt package, creating the backend raises BackendUnavailable saying what to install."""
        with pytest.raises(BackendUnavailable, match=r"tensorrt.*pip install 'edge-agent\[tensorrt\]'"):
            TensorRTBackend(load_manifest(tiny_model), TensorRTConfig())

    @pytest.mark.skipif(TRT_PRESENT, reason="tensorrt is installed here; this pins the fallback where it is not")
    def test_registry_falls_back_to_onnxruntime_and_says_why(self, tiny_model: Path, tmp_path: Path) -> None:
        """load_model with a tensorrt config runs on ONNX Runtime instead, with the reason in the warning."""
        with structlog.testing.capture_logs() as logs:
            model = load_model(tiny_model, TensorRTConfig(cache_dir=tmp_path / "cache"))
        warning = next(e for e in logs if e["event"].startswith("native TensorRT backend unavailable"))
        assert "JETSON.md" in warning["reason"] and warning["used"][-1] == "CPUExecutionProvider"
        model.close()


@contextmanager
def opened(manifest: Manifest, config: TensorRTConfig) -> Iterator[TensorRTBackend]:
    backend = TensorRTBackend(manifest, config)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_tensorrt.CudaRuntime]:
    """The backend wired to the in-memory TensorRT/CUDA stand-in (a Jetson Orin with TensorRT 10.3)."""
    cudart = fake_tensorrt.CudaRuntime()
    monkeypatch.setattr(trt_backend, "import_libraries", lambda: (fake_tensorrt.fake_tensorrt(), cudart))
    before = dict(fake_tensorrt.CudaRuntime.buffers)
    yield cudart
    leaked = set(fake_tensorrt.CudaRuntime.buffers) - set(before)
    assert not leaked, f"{len(leaked)} device buffers not freed"


class TestBackendPlumbing:
    def test_build_cache_and_reuse(self, fake_gpu: fake_tensorrt.CudaRuntime, tiny_model: Path,
                                   tmp_path: Path) -> None:
        """The first start builds and caches an FP16 engine under its key; the second loads it without building."""
        config = TensorRTConfig(cache_dir=tmp_path / "engines", max_batch=8)
        builds = fake_tensorrt.Builder.builds
        with opened(load_manifest(tiny_model), config) as first:
            assert first.fp16 is True
            assert first.engine_file.parent == config.cache_dir
            assert "-NVIDIA-Orin-nvgpu-fp16-p" in first.engine_file.name
        with opened(load_manifest(tiny_model), config) as second:
            assert second.engine_file == first.engine_file
        assert fake_tensorrt.Builder.builds == builds + 1
        assert [p.name for p in config.cache_dir.iterdir()] == [first.engine_file.name]

    def test_corrupt_cache_is_rebuilt(self, fake_gpu: fake_tensorrt.CudaRuntime, tiny_model: Path,
                                      tmp_path: Path) -> None:
        """A cached engine that no longer deserialises is rebuilt and replaced, not fatal."""
        config = TensorRTConfig(cache_dir=tmp_path / "engines")
        with opened(load_manifest(tiny_model), config) as backend:
            path = backend.engine_file
        path.write_bytes(b"truncated")
        builds = fake_tensorrt.Builder.builds
        with opened(load_manifest(tiny_model), config):
            pass
        assert fake_tensorrt.Builder.builds == builds + 1
        assert path.read_bytes().startswith(fake_tensorrt.MAGIC)

    @pytest.mark.parametrize("batch", [1, 5, 8, 19])
    def test_outputs_match_onnxruntime_across_chunks(self, fake_gpu: fake_tensorrt.CudaRuntime,
                                                     tiny_model: Path, tmp_path: Path, batch: int) -> None:
        """Outputs equal ONNX Runtime's for batches below, at and above max_batch (run in chunks)."""
        manifest = load_manifest(tiny_model)
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float64)  # cast by the backend
        expected = ort.InferenceSession(str(manifest.onnx_path)).run(None, {"x": x.astype(np.float32)})[0]
        with opened(manifest, TensorRTConfig(cache_dir=tmp_path, max_batch=8)) as backend:
            (y,) = backend.run({"x": x})
            runs = backend.context.runs
        assert y.dtype == np.float32 and y.shape == (batch, 3)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
        assert runs == math.ceil(batch / 8)

    def test_wrong_shape_and_missing_input(self, fake_gpu: fake_tensorrt.CudaRuntime, tiny_model: Path,
                                           tmp_path: Path) -> None:
        """An input of the wrong shape or a missing input is refused with the model and tensor named."""
        with opened(load_manifest(tiny_model), TensorRTConfig(cache_dir=tmp_path)) as backend:
            with pytest.raises(ValueError, match=r"tiny: input 'x' has shape \(2, 5\)"):
                backend.run({"x": np.zeros((2, 5), np.float32)})
            with pytest.raises(ValueError, match="missing inputs"):
                backend.run({})

    def test_fp32_on_slow_fp16_gpu(self, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, tmp_path: Path) -> None:
        """On a GPU without fast FP16 the engine is FP32 and cached under an fp32 key."""
        cudart = fake_tensorrt.CudaRuntime(b"NVIDIA GeForce GTX 1080", (6, 1))
        monkeypatch.setattr(trt_backend, "import_libraries", lambda: (fake_tensorrt.fake_tensorrt(), cudart))
        with opened(load_manifest(tiny_model), TensorRTConfig(cache_dir=tmp_path)) as backend:
            assert backend.fp16 is False
            assert backend.engine_file.name.endswith(".engine") and "-fp32-" in backend.engine_file.name

    def test_committed_vibration_model(self, fake_gpu: fake_tensorrt.CudaRuntime, tmp_path: Path) -> None:
        """The committed vibration model's manifest yields a working profile and ONNX Runtime's outputs."""
        manifest = load_manifest(Path(__file__).resolve().parent.parent / "models" / "vibration")
        shape = [4 if isinstance(d, str) else d for d in manifest.inputs[0].shape]
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        expected = ort.InferenceSession(str(manifest.onnx_path)).run(None, {manifest.inputs[0].name: x})
        with opened(manifest, TensorRTConfig(cache_dir=tmp_path)) as backend:
            outputs = backend.run({manifest.inputs[0].name: x})
        for got, want in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cache_dir_default_is_in_state_directory(tmp_path: Path) -> None:
    """The default engine cache lies inside the systemd StateDirectory, the only place the unit can write, and
    follows the agent's state_dir; a cache folder set explicitly stays where it was set."""
    assert os.path.commonpath([cache_path(TensorRTConfig()), Path("/var/lib/edge-agent")]) == "/var/lib/edge-agent"
    assert cache_path(under_state_dir(TensorRTConfig(), tmp_path)) == tmp_path / "trt-engines"
    assert cache_path(under_state_dir(OnnxRuntimeConfig(), tmp_path)) == tmp_path / "trt-cache"
    explicit = TensorRTConfig(cache_dir=tmp_path / "mine")
    assert cache_path(under_state_dir(explicit, tmp_path / "state")) == tmp_path / "mine"
