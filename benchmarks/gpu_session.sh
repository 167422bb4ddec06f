#!/usr/bin/env bash
# What a lent GPU should run: four calls of the workplace's device tool, 12 minutes of device time in
# all (each call's timeouts add up to at most the minutes below, its set-up included), the first a
# check that every path runs and trains as the CPU does before anything is timed at length. It runs
# on the device image's python3 (numba-cuda, CuPy, torch, pytest, pytest-xdist already there; no
# network, so nothing is installed from PyPI).
#
#   here, once:  mkdir -p .data && cp -r /usr/share/datasets/fashion-mnist .data/   (30 MB, ignored by git)
#   1. bash benchmarks/gpu_session.sh check     (timeout_s 200)  <= 3 min: every path vs the CPU, sanitizers
#   2. bash benchmarks/gpu_session.sh tests     (timeout_s 200)  <= 3 min: the CUDA tests on the GPU
#   3. bash benchmarks/gpu_session.sh bench     (timeout_s 250)  <= 4 min: fused sweep + end-to-end GPU set
#   4. bash benchmarks/gpu_session.sh kernels   (timeout_s 130)  <= 2 min: the per-kernel grid against CuPy
#   (carry: [".data"] for tests and bench.) Stop after 1 if it fails: the rest would measure a broken path.
#
# Everything measured goes under $OUT/benchmarks/results/gpu_<date>/ (the device tool brings $OUT
# back): copy that folder into benchmarks/results/, commit it, and put the numbers beside the cost
# model's predictions in benchmarks/NOTES.md. Without $OUT it lands in benchmarks/results/ directly.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-.}/benchmarks/results/gpu_$(date +%F)"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
[ -d .data/fashion-mnist ] && export GPUBP_FASHION_MNIST="$PWD/.data/fashion-mnist"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv \
    | tee "$RESULTS/gpu.txt"
timeout 40 python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$RESULTS/install.log" 2>&1 \
    || { cat "$RESULTS/install.log"; exit 1; }
timeout 20 python3 -m gpubp info 2>&1 | tee -a "$RESULTS/gpu.txt"

# One epoch of each configuration under "auto" and every Execution, float32 timed on 60,000 rows beside
# the cost model's prediction; float64 on 2,000 rows checked against the CPU's parameters.
CHECK_PY='
import json, sys, time
import numpy as np
import gpubp
from gpubp import schedule

small = len(sys.argv) > 1 and sys.argv[1] == "small"
configs = [([6, 5, 3], 8, 64)] if small else [([784, 30, 10], 10, 60_000), ([784, 100, 10], 128, 60_000)]
paths = ["auto", "layers", "epoch", "graph", "cublas", "cublas-graph"]
rows, failures = [], 0
for sizes, batch, n in configs:
    rng = np.random.default_rng(0)
    X, labels = rng.random((n, sizes[0])), rng.integers(0, sizes[-1], n)
    def net(device, path, dtype):
        return gpubp.Network(sizes, device=device, path=path, dtype=dtype, seed=1)
    m = min(n, 2_000)
    ref = net("cpu", "layers", "float64")
    ref.fit(X[:m], labels[:m], epochs=1, batch_size=batch, lr=0.1, momentum=0.5, shuffle=False)
    for path in paths:
        row = {"sizes": sizes, "batch": batch, "path": path}
        try:
            gpu = net("cuda", path, "float64")
            gpu.fit(X[:m], labels[:m], epochs=1, batch_size=batch, lr=0.1, momentum=0.5, shuffle=False)
            row["max_abs_diff_vs_cpu_f64"] = max(float(np.max(np.abs(a - b))) for a, b in
                                                 zip(ref.weights + ref.biases, gpu.weights + gpu.biases))
            row["agrees"] = row["max_abs_diff_vs_cpu_f64"] < 1e-8
            timed = net("cuda", path, "float32")
            how = timed._schedule.execution(batch)
            row["execution"] = str(schedule.path_name(how))
            timed.fit(X[:batch * 20], labels[:batch * 20], epochs=1, batch_size=batch)  # compile, record
            t = time.perf_counter()
            timed.fit(X, labels, epochs=1, batch_size=batch, lr=0.1)
            row["epoch_s"] = time.perf_counter() - t
            row["predicted_s"] = schedule.predict_epoch(how, sizes, batch, n)
        except (ImportError, ValueError) as e:  # a path this device or network cannot take (no CuPy)
            row["cannot"] = f"{type(e).__name__}: {e}"
        except Exception as e:  # a CUDA error: the path is broken
            row["error"] = f"{type(e).__name__}: {e}"
            failures += 1
        failures += row.get("agrees") is False
        print(json.dumps(row), flush=True)
        rows.append(row)
if not small:
    json.dump(rows, open(sys.argv[2], "w"), indent=1)
sys.exit(1 if failures else 0)
'

case "${1:-}" in
check)  # <= 3 minutes
    timeout 110 python3 -c "$CHECK_PY" full "$RESULTS/check.json" 2>&1 | tee "$RESULTS/check.log"
    status=${PIPESTATUS[0]}
    if command -v compute-sanitizer >/dev/null; then
        for tool in racecheck synccheck initcheck; do  # small fits of every path, one process per tool
            timeout 18 compute-sanitizer --tool "$tool" --error-exitcode 3 --print-limit 20 \
                python3 -c "$CHECK_PY" small >"$RESULTS/sanitizer-$tool.log" 2>&1
            echo "compute-sanitizer $tool: exit $? (124: out of time)" | tee -a "$RESULTS/sanitizer.txt"
            tail -3 "$RESULTS/sanitizer-$tool.log"
        done
    else
        echo "compute-sanitizer: not on this device" | tee "$RESULTS/sanitizer.txt"
    fi
    exit "$status"
    ;;
tests)  # <= 3 minutes: the CUDA tests, for real on the GPU (conftest turns the simulator off when libcuda sees one)
    timeout 130 python3 -m pytest -q -n 8 -p no:cacheprovider -m cuda -rs 2>&1 | tee "$RESULTS/pytest.log"
    timeout 30 python3 -m gpubp train --device cuda --epochs 2 --no-progress --json \
        >"$RESULTS/textbook-cuda.json" 2>"$RESULTS/textbook-cuda.log"
    tail -5 "$RESULTS/textbook-cuda.log"
    ;;
bench)  # <= 4 minutes
    timeout 60 python3 -m benchmarks.fused_sweep --epochs 2 --out "$RESULTS" 2>&1 | tee "$RESULTS/fused-sweep.log"
    timeout 150 python3 -m benchmarks --set quick --only e2e --device cuda --cuda-paths --out "$RESULTS" 2>&1 \
        | tee "$RESULTS/e2e.log" | grep -v "^    round"
    ;;
kernels)  # <= 2 minutes
    timeout 90 python3 -m benchmarks --set quick --only kernels --device cuda --out "$RESULTS" 2>&1 \
        | tee "$RESULTS/kernels.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh check|tests|bench|kernels" >&2
    exit 2
    ;;
esac
