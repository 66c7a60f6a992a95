#!/usr/bin/env bash
# GPU checks that CI cannot run: the native TensorRT backend against ONNX Runtime on the committed
# models, with timings, and whether MemoryDenyWriteExecute=yes is safe with CUDA and TensorRT.
#
#   tests/gpu/check_gpu.sh [check_tensorrt.py options]      e.g. --runs 500 --json results.json
#
# Needs an NVIDIA GPU with TensorRT (pip install 'edge-agent[tensorrt]', or JetPack on a Jetson),
# cuda-python, onnxruntime, numpy, pydantic, pyyaml and structlog. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
    echo "nvidia-smi not available"
[ -f /etc/nv_tegra_release ] && head -n 1 /etc/nv_tegra_release
"$python" - <<'EOF'
import importlib, platform
print("python", platform.python_version(), platform.machine())
for name in ("tensorrt", "cuda", "onnxruntime", "numpy"):
    try:
        module = importlib.import_module(name)
        print(f"{name:<12}", getattr(module, "__version__", "present"))
    except ImportError as error:
        print(f"{name:<12} MISSING ({error})")
EOF

echo "== TensorRT engines against ONNX Runtime (CPU), under kernel MDWE where the kernel has it"
status=0
"$python" tests/gpu/check_tensorrt.py --mdwe "$@" || status=$?

echo "== writable+executable memory (what systemd's MemoryDenyWriteExecute=yes forbids)"
if [ "$status" = 2 ]; then
    echo "not checked: TensorRT could not run"
elif command -v strace >/dev/null; then
    trace=$(mktemp)
    strace -f -qq -e trace=mmap,mprotect,pkey_mprotect -o "$trace" \
        "$python" tests/gpu/check_tensorrt.py --runs 5 >/dev/null 2>&1 || true
    wx=$(grep -c 'PROT_WRITE|PROT_EXEC' "$trace" || true)
    px=$(grep -E 'mprotect\(' "$trace" | grep -c 'PROT_EXEC' || true)
    echo "W+X mappings: $wx; mprotect adding PROT_EXEC: $px (both 0: MemoryDenyWriteExecute=yes is safe here)"
    rm -f "$trace"
else
    echo "strace not installed: not checked (the --mdwe run above covers kernels >= 6.3)"
fi
exit "$status"
