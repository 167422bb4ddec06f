"""A fair harness: every BLAS chooses its own kernels, and the run says which it chose.

Some machines set ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for the whole session (to protect
old OpenBLAS builds). They hold a current numpy to older kernels (Haswell's AVX2 instead of the
AVX-512 ones on this AMD EPYC), which is not how a user runs numpy or torch. ``python -m
benchmarks`` therefore re-executes itself without them (``--keep-blas-env`` keeps them), which is
the same as ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks ...``. The tests
never touch these variables.

The header of each result reports, through threadpoolctl, every BLAS and OpenMP library loaded
(numpy's OpenBLAS; SciPy's OpenBLAS, the one Numba's ``np.dot`` calls; torch's), with its core
type and thread count, and this machine's float32 matrix-product peak on one core and on all
cores, measured in the same run with a large ``np.dot``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REEXEC_MARK = "GPUBP_BENCH_FAIR_REEXEC"  # set in the child: never re-execute twice


def reexec_without_blas_overrides(argv: list[str], module: str = "benchmarks") -> None:
    """Replace this process by ``python -m module argv`` without BLAS_OVERRIDES, if any is set.

    OpenBLAS reads them when its library loads, so they must be gone before numpy is imported:
    a fresh process is the only sure way. Returns only when nothing had to be removed."""
    present = {k: os.environ[k] for k in BLAS_OVERRIDES if k in os.environ}
    if not present or os.environ.get(_REEXEC_MARK):
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
    env[_REEXEC_MARK] = ";".join(f"{k}={v}" for k, v in present.items())
    print(f"benchmarks: re-running without {', '.join(f'{k}={v}' for k, v in present.items())}", flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def removed_overrides() -> str | None:
    """The BLAS variables the parent process removed before re-executing ("" or None: none)."""
    return os.environ.get(_REEXEC_MARK)


def _owner(filepath: str) -> str:
    """Which package shipped a library, from its path (numpy.libs/, scipy.libs/, torch/lib/...)."""
    parts = Path(filepath).parts
    for part in reversed(parts[:-1]):
        name = part.removesuffix(".libs")
        if name in ("numpy", "scipy", "torch", "sklearn", "scikit_learn"):
            return name
        if part == "site-packages":
            break
    return Path(filepath).name


def threadpools() -> list[dict]:
    """The BLAS and OpenMP libraries loaded by numpy, SciPy (Numba's BLAS) and torch, as threadpoolctl
    sees them: owner package, API, implementation, version, core type (``architecture``), threads."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401  (Numba's np.dot calls SciPy's BLAS through scipy.linalg.cython_blas)

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed (pip install '.[bench]')"}]
    out = []
    for lib in threadpool_info():
        out.append(
            {
                "owner": _owner(lib.get("filepath", "")),
                "user_api": lib.get("user_api"),
                "internal_api": lib.get("internal_api"),
                "version": lib.get("version"),
                "architecture": lib.get("architecture"),
                "num_threads": lib.get("num_threads"),
                "threading_layer": lib.get("threading_layer"),
                "file": Path(lib.get("filepath", "")).name,
            }
        )
    return out


def torch_info() -> dict | None:
    """torch's own view: its thread count and the CPU code path it dispatches to (e.g. AVX512)."""
    try:
        import torch
    except ImportError:
        return None
    info = {"num_threads": torch.get_num_threads()}
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    return info


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """float32 matrix-product peak in GFLOP/s: the best of ``repeats`` np.dot of two n x n matrices,
    with numpy's BLAS on one thread and on all of them (2 n^3 FLOPs per product)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    flops = 2.0 * n**3
    cores = os.cpu_count() or 1

    def best() -> float:
        np.dot(a, b, out=c)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.dot(a, b, out=c)
            times.append(time.perf_counter() - t0)
        return flops / min(times) / 1e9

    out = {"n": n, "dtype": "float32", "cores": cores}
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            out["one_core_gflops"] = best()
    except ImportError:
        out["one_core_gflops"] = None
    out["all_cores_gflops"] = best()
    return out


def header_lines(record: dict) -> list[str]:
    """Markdown lines for a result's header: the BLAS environment, the thread pools and the peak."""
    if "threadpools" not in record:  # a result from before this harness
        return ["BLAS environment: not recorded (taken before the fair harness of issue 13)"]
    lines = []
    removed = record.get("blas_env_removed")
    kept = record.get("blas_env_kept")
    if kept:
        lines.append(f"BLAS environment: kept {kept} (--keep-blas-env): NOT a fair run for numpy and torch")
    else:
        lines.append(
            "BLAS environment: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
            + (f" (the harness removed {removed})" if removed else "")
        )
    pools = record.get("threadpools") or []
    if pools:
        lines += ["", "| library of | API | implementation | version | core type | threads |", "|---" * 6 + "|"]
        for p in pools:
            if "error" in p:
                lines.append(f"| {p['error']} | | | | | |")
                continue
            lines.append(
                f"| {p['owner']} ({p['file']}) | {p['user_api']} | {p['internal_api']} | {p['version']} | "
                f"{p['architecture'] or '–'} | {p['num_threads']} |"
            )
        t = record.get("torch")
        if t:
            lines.append(f"| torch (its own report) | | | | {t.get('cpu_capability', '–')} | {t['num_threads']} |")
        lines.append("")
    peak = record.get("peak")
    if peak and peak.get("all_cores_gflops"):
        one = peak.get("one_core_gflops")
        lines.append(
            f"float32 matmul peak of this machine (numpy np.dot {peak['n']}^3, best of the run): "
            + (f"{one:.0f} GFLOP/s on one core, " if one else "")
            + f"{peak['all_cores_gflops']:.0f} GFLOP/s on {peak['cores']} cores"
        )
    return lines
