"""GPU check of the native TensorRT backend: builds engines from committed models, compares them with ONNX
Runtime on the CPU, and times them. Run through tests/gpu/check_gpu.sh on a machine with an NVIDIA GPU.

Exit status 0 when every engine matches ONNX Runtime within tolerance (FP32: 1e-3 relative; FP16: 2e-2
relative plus 2e-2 of the output's scale), 1 when one does not, 2 when TensorRT cannot run here.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def refuse_exec_gain() -> str:
    """Turn on the kernel's MemoryDenyWriteExecute (Linux >= 6.3) for this process, as systemd's setting would."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        return f"unsupported by this kernel (errno {ctypes.get_errno()})"
    return "on"


def sample_inputs(manifest: Any, batch: int, rng: Any) -> dict[str, Any]:
    import numpy as np

    inputs = {}
    for spec in manifest.inputs:
        shape = [batch if index == 0 and isinstance(dim, str) else (dim if isinstance(dim, int) else 1)
                 for index, dim in enumerate(spec.shape)]
        if np.dtype(spec.dtype).kind == "u":
            inputs[spec.name] = rng.integers(0, 256, size=shape).astype(spec.dtype)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return inputs


def timings(run: Any, inputs: dict[str, Any], runs: int) -> dict[str, float]:
    import numpy as np

    for _ in range(min(10, runs)):
        run(inputs)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run(inputs)
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(samples, 50)), "p99_ms": float(np.percentile(samples, 99))}


def check_model(manifest_path: Path, fp16: bool, cache: Path, max_batch: int, runs: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from models.runtime.manifest import load_manifest
    from models.runtime.tensorrt import TensorRTBackend, TensorRTConfig

    manifest = load_manifest(manifest_path)
    config = TensorRTConfig(fp16=fp16, cache_dir=cache, max_batch=max_batch)
    started = time.perf_counter()
    backend = TensorRTBackend(manifest, config)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    TensorRTBackend(manifest, config).close()
    cached_s = time.perf_counter() - started
    reference = ort.InferenceSession(str(manifest.onnx_path), providers=["CPUExecutionProvider"])
    result: dict[str, Any] = {"model": manifest.name, "precision": "fp16" if backend.fp16 else "fp32",
                              "engine": backend.providers[0], "build_s": round(build_s, 2),
                              "cached_load_s": round(cached_s, 3), "batches": {}, "ok": True}
    rng = np.random.default_rng(0)
    dynamic = isinstance(manifest.inputs[0].shape[0], str)
    for batch in sorted({1, max_batch if dynamic else 1, 2 * max_batch + 1 if dynamic else 1}):
        inputs = sample_inputs(manifest, batch, rng)
        want = reference.run([o.name for o in manifest.outputs], inputs)
        got = backend.run(inputs)
        errors = []
        for a, b in zip(got, want, strict=True):
            scale = max(1.0, float(np.abs(b).max()))
            rtol, atol = (2e-2, 2e-2 * scale) if backend.fp16 else (1e-3, 1e-4 * scale)
            errors.append(float(np.abs(a.astype(np.float64) - b).max()))
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
                result["ok"] = False
        entry = {"max_abs_err": max(errors), **timings(backend.run, inputs, runs),
                 "ort_cpu": timings(lambda x: reference.run(None, x), inputs, max(10, runs // 10))}
        result["batches"][batch] = entry
    backend.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="*", type=Path, help="default: every models/*/manifest.yaml")
    parser.add_argument("--cache", type=Path, help="engine cache (default: a temporary folder)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--mdwe", action="store_true", help="run with MemoryDenyWriteExecute as systemd sets it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    mdwe = refuse_exec_gain() if args.mdwe else "off"
    sys.path.insert(0, str(REPO))
    from models.runtime.base import BackendUnavailable

    manifests = args.manifests or sorted(REPO.glob("models/*/manifest.yaml"))
    results = []
    with tempfile.TemporaryDirectory(prefix="trt-cache-") as temporary:
        cache = args.cache or Path(temporary)
        for manifest in manifests:
            for fp16 in (False, True):
                try:
                    results.append(check_model(manifest, fp16, cache, args.max_batch, args.runs))
                except BackendUnavailable as error:
                    print(f"TensorRT cannot run here: {error}")
                    return 2
    for result in results:
        print(f"{result['model']:<12} {result['precision']}  {result['engine']}  build {result['build_s']} s, "
              f"cached load {result['cached_load_s']} s  {'OK' if result['ok'] else 'MISMATCH'}")
        for batch, entry in result["batches"].items():
            print(f"    batch {batch:>3}: max |trt - ort| {entry['max_abs_err']:.2e}   TensorRT p50 "
                  f"{entry['p50_ms']:.3f} ms p99 {entry['p99_ms']:.3f} ms   "
                  f"ORT CPU p50 {entry['ort_cpu']['p50_ms']:.3f} ms")
    print(f"MemoryDenyWriteExecute (prctl MDWE): {mdwe}")
    if args.json:
        args.json.write_text(json.dumps({"mdwe": mdwe, "results": results}, indent=1))
    return 0 if all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
