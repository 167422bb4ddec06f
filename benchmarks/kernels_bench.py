"""Kernel level: each gpubp kernel against the same operation done the way a user otherwise would.

On the CPU the peer is numpy (BLAS for the products, numpy expressions for the elementwise part),
timed with perf_counter after a warm-up, median of repeats. On a GPU the peer is CuPy (cuBLAS for
the products, an ElementwiseKernel for the rest), and both are timed with CUDA events after a
warm-up, median of repeats.

A layer shape is (m, n_in, n_out): a batch of m rows through a layer with n_in inputs and n_out
outputs. Per operation (activation: sigmoid, cost: quadratic; float32):

| op              | arrays                                      | FLOPs counted               |
|-----------------|---------------------------------------------|-----------------------------|
| forward         | A_prev (m,n_in), W (n_out,n_in), b -> Z, A   | 2 m n_in n_out + m n_out    |
| output_error    | Z, A, Y (m,n_out) -> Delta, cost            | 5 m n_out                   |
| hidden_error    | Delta_next (m,n_out), W, Z, A (m,n_in) -> D | 2 m n_in n_out + 3 m n_in   |
| weight_gradient | Delta (m,n_out), A_prev (m,n_in) -> nabla_w | 2 m n_in n_out + n_in n_out |
| bias_gradient   | Delta (m,n_out) -> nabla_b                  | m n_out                     |
| sgd_update      | P, nabla, velocity (n_out n_in) -> P, v     | 6 n_out n_in                |

GB/s counts each array read or written once (the least traffic the operation needs); both
implementations are credited with the same FLOPs and bytes, so their ratio is the time ratio.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import numpy as np

from .common import import_kernel_codes, import_kernels, median_time, settle

OPS = ["forward", "output_error", "hidden_error", "weight_gradient", "bias_gradient", "sgd_update"]

QUICK_SHAPES = [(10, 784, 30), (128, 784, 100), (1024, 1024, 1024)]
MODEL_SHAPES = [(10, 784, 30), (10, 30, 10), (128, 784, 100), (1024, 784, 1024), (1024, 1024, 10)]
GRID_BATCHES = [1, 16, 128, 1024, 4096]
GRID_WIDTHS = [16, 128, 1024, 4096]
FULL_SHAPES = MODEL_SHAPES + [(m, n, n) for m in GRID_BATCHES for n in GRID_WIDTHS]

SCALE, LR, MOMENTUM, DECAY = 0.1, 0.01, 0.9, 1e-4
DT = np.float32


def shapes_for(which: str) -> list[tuple[int, int, int]]:
    return QUICK_SHAPES if which == "quick" else FULL_SHAPES


def counts(op: str, m: int, n_in: int, n_out: int) -> tuple[int, int]:
    """(FLOPs, bytes) of one call, as in the module's table."""
    item = np.dtype(DT).itemsize
    gemm = 2 * m * n_in * n_out
    flops, elems = {
        "forward": (gemm + m * n_out, m * n_in + n_out * n_in + n_out + 2 * m * n_out),
        "output_error": (5 * m * n_out, 4 * m * n_out),
        "hidden_error": (gemm + 3 * m * n_in, m * n_out + n_out * n_in + 3 * m * n_in),
        "weight_gradient": (gemm + n_in * n_out, m * n_out + m * n_in + n_out * n_in),
        "bias_gradient": (m * n_out, m * n_out + n_out),
        "sgd_update": (6 * n_in * n_out, 5 * n_in * n_out),
    }[op]
    return flops, elems * item


def host_arrays(op: str, m: int, n_in: int, n_out: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs and outputs of ``op`` for one layer shape, on the host."""
    rng = np.random.default_rng(seed)

    def randn(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(DT)

    def sig(z):
        return (1 / (1 + np.exp(-z))).astype(DT)

    if op == "forward":
        return {
            "A_prev": rng.random((m, n_in), dtype=DT),
            "W": randn(n_out, n_in, scale=n_in**-0.5),
            "b": randn(n_out),
            "Z": np.empty((m, n_out), DT),
            "A": np.empty((m, n_out), DT),
        }
    if op == "output_error":
        Z = randn(m, n_out)
        Y = np.zeros((m, n_out), DT)
        Y[np.arange(m), rng.integers(0, n_out, m)] = 1
        return {"Z": Z, "A": sig(Z), "Y": Y, "Delta": np.empty((m, n_out), DT), "cost": np.zeros(1, DT)}
    if op == "hidden_error":
        Z = randn(m, n_in)
        return {
            "Delta_next": randn(m, n_out, scale=0.1),
            "W_next": randn(n_out, n_in, scale=n_in**-0.5),
            "Z": Z,
            "A": sig(Z),
            "Delta": np.empty((m, n_in), DT),
        }
    if op == "weight_gradient":
        return {
            "Delta": randn(m, n_out, scale=0.1),
            "A_prev": rng.random((m, n_in), dtype=DT),
            "nabla_w": np.empty((n_out, n_in), DT),
        }
    if op == "bias_gradient":
        return {"Delta": randn(m, n_out, scale=0.1), "nabla_b": np.empty(n_out, DT)}
    if op == "sgd_update":
        n = n_out * n_in
        return {"P": randn(n), "nabla": randn(n, scale=0.1), "velocity": np.zeros(n, DT)}
    raise ValueError(op)


# The products' numbered CUDA versions, timed beside the default launcher (which picks by shape).
CUDA_VERSIONS = {op: ["naive", "tiled", "blocked", "cublas"] for op in ("forward", "hidden_error", "weight_gradient")}


def gpubp_call(k, op: str, a: dict, sigmoid: int, quadratic: int, version: str | None = None):
    """A no-argument function running gpubp's kernel ``op`` (module ``k``: cpu or cuda) on arrays ``a``;
    ``version`` names one of the CUDA products' versions (``forward_blocked``, ...)."""
    if version == "naive":
        from .variants import cuda_naive

        k = SimpleNamespace(**{op: getattr(cuda_naive, f"{op}_naive")})
    elif version:
        k = SimpleNamespace(**{op: getattr(k.products if version != "cublas" else k, f"{op}_{version}")})
    if op == "forward":
        return lambda: k.forward(a["A_prev"], a["W"], a["b"], a["Z"], a["A"], sigmoid)
    if op == "output_error":
        return lambda: k.output_error(a["Z"], a["A"], a["Y"], a["Delta"], quadratic, sigmoid, a["cost"])
    if op == "hidden_error":
        return lambda: k.hidden_error(a["Delta_next"], a["W_next"], a["Z"], a["A"], a["Delta"], sigmoid)
    if op == "weight_gradient":
        return lambda: k.weight_gradient(a["Delta"], a["A_prev"], SCALE, a["nabla_w"])
    if op == "bias_gradient":
        return lambda: k.bias_gradient(a["Delta"], SCALE, a["nabla_b"])
    return lambda: k.sgd_update(a["P"], a["nabla"], a["velocity"], LR, MOMENTUM, DECAY)


def numpy_call(op: str, a: dict):
    """The same operation in plain numpy, as the numpy peer of the end-to-end benchmark writes it."""
    if op == "forward":

        def fn():
            z = a["A_prev"] @ a["W"].T + a["b"]
            return z, 1 / (1 + np.exp(-z))

    elif op == "output_error":

        def fn():
            d = a["A"] - a["Y"]
            return d * (a["A"] * (1 - a["A"])), 0.5 * float((d * d).sum())

    elif op == "hidden_error":

        def fn():
            return (a["Delta_next"] @ a["W_next"]) * (a["A"] * (1 - a["A"]))

    elif op == "weight_gradient":

        def fn():
            return SCALE * (a["Delta"].T @ a["A_prev"])

    elif op == "bias_gradient":

        def fn():
            return SCALE * a["Delta"].sum(axis=0)

    else:

        def fn():
            a["velocity"][:] = MOMENTUM * a["velocity"] - LR * (a["nabla"] + DECAY * a["P"])
            a["P"] += a["velocity"]

    return fn


def bench_cpu(shapes, repeats: int, budget_s: float, log=print) -> list[dict]:
    k = import_kernels("cpu")
    acts, losses = import_kernel_codes()
    rows = []
    with np.errstate(over="ignore"):
        for m, n_in, n_out in shapes:
            for op in OPS:
                a = host_arrays(op, m, n_in, n_out)
                b = {name: arr.copy() for name, arr in a.items()}
                settle()
                g = median_time(gpubp_call(k, op, a, acts.SIGMOID, losses.QUADRATIC), 1, repeats, budget_s)
                settle()
                p = median_time(numpy_call(op, b), 1, repeats, budget_s)
                rows.append(_row("cpu", "numpy", op, (m, n_in, n_out), g["median_s"], p["median_s"]))
                log(_line(rows[-1]))
    return rows


def _row(device, peer, op, shape, t_gpubp, t_peer) -> dict:
    flops, nbytes = counts(op.split("[")[0], *shape)  # "forward[blocked]" counts as "forward"
    return {
        "device": device,
        "op": op,
        "m": shape[0],
        "n_in": shape[1],
        "n_out": shape[2],
        "peer": peer,
        "flops": flops,
        "bytes": nbytes,
        "gpubp_s": t_gpubp,
        "gpubp_gflops": flops / t_gpubp / 1e9,
        "gpubp_gbs": nbytes / t_gpubp / 1e9,
        "peer_s": t_peer,
        "peer_gflops": flops / t_peer / 1e9,
        "peer_gbs": nbytes / t_peer / 1e9,
        "speedup": t_peer / t_gpubp,
    }


def _line(r: dict) -> str:
    return (
        f"    {r['device']:4s} {r['op']:15s} m={r['m']:<5d} {r['n_in']:>4d}->{r['n_out']:<4d} "
        f"gpubp {r['gpubp_s'] * 1e6:10.1f} us {r['gpubp_gflops']:7.2f} GFLOP/s {r['gpubp_gbs']:7.2f} GB/s | "
        f"{r['peer']} {r['peer_s'] * 1e6:10.1f} us {r['peer_gflops']:7.2f} GFLOP/s | x{r['speedup']:.2f}"
    )


# ---------------------------------------------------------------------------------------------
# GPU: gpubp's CUDA kernels against CuPy (cuBLAS + ElementwiseKernel), timed with CUDA events


def _cupy_kernels(cp):
    """Elementwise kernels for the non-BLAS part of each operation (sigmoid, quadratic cost)."""
    return {
        "bias_sigmoid": cp.ElementwiseKernel(
            "T zin, T b", "T z, T a", "z = zin + b; a = 1 / (1 + exp(-z))", "bench_bias_sigmoid"
        ),
        "bp1": cp.ElementwiseKernel(
            "T a, T y", "T d, T c", "T e = a - y; d = e * a * (1 - a); c = 0.5 * e * e", "bench_bp1"
        ),
        "times_sigmoid_prime": cp.ElementwiseKernel(
            "T t, T a", "T d", "d = t * a * (1 - a)", "bench_times_sigmoid_prime"
        ),
        "sgd": cp.ElementwiseKernel(
            "T g, T lr, T mom, T decay", "T p, T v", "v = mom * v - lr * (g + decay * p); p += v", "bench_sgd"
        ),
    }


def cupy_call(cp, kern: dict, op: str, a: dict):
    """The operation in CuPy: cuBLAS products (via matmul) plus one elementwise kernel."""
    if op == "forward":

        def fn():
            kern["bias_sigmoid"](a["A_prev"] @ a["W"].T, a["b"], a["Z"], a["A"])

    elif op == "output_error":
        c = cp.empty_like(a["Z"])

        def fn():
            kern["bp1"](a["A"], a["Y"], a["Delta"], c)
            a["cost"] += c.sum()

    elif op == "hidden_error":

        def fn():
            kern["times_sigmoid_prime"](a["Delta_next"] @ a["W_next"], a["A"], a["Delta"])

    elif op == "weight_gradient":

        def fn():
            cp.matmul(a["Delta"].T, a["A_prev"], out=a["nabla_w"])
            a["nabla_w"] *= SCALE

    elif op == "bias_gradient":

        def fn():
            cp.multiply(a["Delta"].sum(axis=0), SCALE, out=a["nabla_b"])

    else:
        lr, mom, decay = DT(LR), DT(MOMENTUM), DT(DECAY)

        def fn():
            kern["sgd"](a["nabla"], lr, mom, decay, a["P"], a["velocity"])

    return fn


def _event_median(record, elapsed_ms, sync, fn, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` between two CUDA events, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start, end = record()
        fn()
        times.append(elapsed_ms(start, end) / 1e3)
    return statistics.median(times)


def bench_cuda(shapes, repeats: int, log=print) -> tuple[list[dict], list[str]]:
    """gpubp's CUDA kernels vs CuPy. Returns (rows, notes); notes say what was skipped and why."""
    from numba import cuda

    k = import_kernels("cuda")
    acts, losses = import_kernel_codes()
    try:
        import cupy as cp
    except ImportError as e:
        cp = None
        notes = [f"CuPy peer skipped: cupy is not importable ({e})"]
    else:
        notes = []
        kern = _cupy_kernels(cp)

    def numba_record():
        start, end = cuda.event(), cuda.event()
        start.record()
        return start, end

    def numba_elapsed(start, end):
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def cupy_record():
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        return start, end

    def cupy_elapsed(start, end):
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end)

    if cp is not None:  # the float32 matrix-product peak the kernels' GFLOP/s compare with
        n = 8192
        x, y = cp.random.random((n, n), dtype=cp.float32), cp.random.random((n, n), dtype=cp.float32)
        t = _event_median(cupy_record, cupy_elapsed, cp.cuda.Device().synchronize, lambda: x @ y, 3, 10)
        notes.append(f"cuBLAS SGEMM (CuPy matmul, float32, {n}^3, random data): {2 * n**3 / t / 1e12:.1f} TFLOP/s")
        log(notes[-1])
        del x, y

    rows = []
    for m, n_in, n_out in shapes:
        for op in OPS:
            host = host_arrays(op, m, n_in, n_out)
            dev = {name: cuda.to_device(arr) for name, arr in host.items()}
            if cp is None:
                t_p = float("nan")
            else:
                cdev = {name: cp.asarray(arr) for name, arr in host.items()}
                t_p = _event_median(
                    cupy_record,
                    cupy_elapsed,
                    cp.cuda.Device().synchronize,
                    cupy_call(cp, kern, op, cdev),
                    3,
                    repeats,
                )
            for version in [None, *CUDA_VERSIONS.get(op, [])]:
                t_g = _event_median(
                    numba_record,
                    numba_elapsed,
                    cuda.synchronize,
                    gpubp_call(k, op, dev, acts.SIGMOID, losses.QUADRATIC, version),
                    3,
                    repeats,
                )
                name = op if version is None else f"{op}[{version}]"
                rows.append(_row("cuda", "cupy", name, (m, n_in, n_out), t_g, t_p))
                log(_line(rows[-1]))
    return rows, notes
