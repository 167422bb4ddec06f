"""How gpubp's CPU training uses the cores: the products on the calling thread, the gather of
shuffled rows on a second one.

A BLAS call that hands half a product to a second thread waits for it at the end of the call. On
a machine doing other things too that thread often has no core, and the caller waits a whole
scheduler slice: measured on the 2-core VM at 784-100-10, batch 128, an epoch took 0.34 s idle
and 8.3 s (0.8-17 s) with one other busy process, against 0.40 s either way with BLAS on one
thread (benchmarks/NOTES.md, issue 22). So while gpubp trains on the CPU with products of the
sizes people tune (``small_products``), the BLAS it calls runs on one thread (``one_blas_thread``,
through threadpoolctl; a limit the user set is kept if lower), and a second core, if this process
may use one, gathers the next rows (``gpubp.prefetch``); larger products keep the BLAS's threads.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_controller: Any = None


def _blas() -> Any:
    """threadpoolctl's handle on the BLAS libraries loaded here, made once (numba's np.dot calls
    SciPy's OpenBLAS, loaded first so that the handle sees it)."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


# Products of fewer multiply-adds than this run on one BLAS thread (up to ~3 ms on one core here),
# where a stall of a scheduler slice (4-8 ms) waiting for a second thread costs as much as the
# call or more: with one busy process, 784-100-10 at batch 512 (40 M) on two threads took 3.1 times
# its idle epoch. Larger products keep the BLAS's threads: a stall costs them less than the second
# core brings (784-1024-1024-10 at batch 1024, 1 G: 2.5 s per epoch on one thread, 1.2 s on two,
# 2.4 s on two with one busy process).
ONE_THREAD_MACS = 1 << 27


def one_blas_thread() -> AbstractContextManager:
    """Within it, every BLAS library runs each call on the calling thread alone."""
    return _blas().limit(limits=1)


def small_products(sizes: list[int], batch_size: int) -> bool:
    """Whether a batch's largest product has fewer than ``ONE_THREAD_MACS`` multiply-adds."""
    return batch_size * max(a * b for a, b in zip(sizes[:-1], sizes[1:])) < ONE_THREAD_MACS


def blas_threads_for(sizes: list[int], batch_size: int) -> AbstractContextManager:
    """One BLAS thread for small products (``small_products``), the BLAS's own threads otherwise."""
    return one_blas_thread() if small_products(sizes, batch_size) else nullcontext()


def threads() -> int:
    """How many threads gpubp's CPU training may run: the cores this process may use, or fewer if
    the user limited the BLAS to fewer (threadpoolctl, OMP_NUM_THREADS, OPENBLAS_NUM_THREADS)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = [lib["num_threads"] for lib in _blas().info()]
    return max(1, min([cores, *limits]))
