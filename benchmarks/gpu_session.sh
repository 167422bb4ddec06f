#!/usr/bin/env bash
# What a lent GPU should run, in three calls of the workplace's device tool (each well under its
# 10-minute limit). It runs on the device image's python3, which already has numba-cuda, CuPy,
# torch, pytest and pytest-xdist; that machine has no network, so nothing is installed from PyPI.
#
#   here, once:  mkdir -p .data && cp -r /usr/share/datasets/fashion-mnist .data/   (30 MB, ignored by git)
#   device call: bash benchmarks/gpu_session.sh tests      (carry: [".data"])  suite + Fashion-MNIST on the GPU
#   device call: bash benchmarks/gpu_session.sh bench      (carry: [".data"])  fused sweep + end-to-end GPU set
#   device call: bash benchmarks/gpu_session.sh kernels                        the per-kernel grid against CuPy
#
# Logs and result files go under $OUT (the device tool brings them back); commit the results
# into benchmarks/results/ and the numbers into benchmarks/NOTES.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpubp-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
[ -d .data/fashion-mnist ] && export GPUBP_FASHION_MNIST="$PWD/.data/fashion-mnist"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv \
    | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1 \
    || { cat "$OUT/install.log"; exit 1; }
python3 -m gpubp info 2>&1 | tee -a "$OUT/gpu.txt"
python3 - <<'EOF' 2>&1 | tee -a "$OUT/gpu.txt"
import importlib.metadata as md
for name in ("numba", "numba-cuda", "llvmlite", "numpy", "cupy-cuda13x", "cupy-cuda12x", "torch"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF

case "${1:-}" in
tests)
    # Everything but the CPU-only slow tests (Fashion-MNIST claims), for real on the GPU (conftest turns the
    # simulator off when libcuda sees a GPU), then the textbook run through the CLI on CUDA.
    timeout 420 python3 -m pytest -q -n 8 -p no:cacheprovider -m "not slow or cuda" -rs 2>&1 | tee "$OUT/pytest.log"
    timeout 120 python3 -m gpubp train --device cuda --epochs 10 --no-progress --json \
        >"$OUT/textbook-cuda.json" 2>"$OUT/textbook-cuda.log"
    tail -5 "$OUT/textbook-cuda.log"
    ;;
bench)
    timeout 200 python3 -m benchmarks.fused_sweep --out "$OUT" 2>&1 | tee "$OUT/fused-sweep.log"
    timeout 360 python3 -m benchmarks --set full --only e2e --device cuda --cuda-paths --out "$OUT" 2>&1 \
        | tee "$OUT/e2e.log" | grep -v "^    round"
    ;;
kernels)
    timeout 540 python3 -m benchmarks --set full --only kernels --device cuda --out "$OUT" 2>&1 | tee "$OUT/kernels.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh tests|bench|kernels" >&2
    exit 2
    ;;
esac
