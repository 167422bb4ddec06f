"""How gpubp's CPU training uses the cores: the products on the calling thread, the second half of
a batch or the gather of shuffled rows on a second one.

A BLAS call that hands half a product to a second thread waits for it at the end of the call. On
a machine doing other things too that thread often has no core, and the caller waits a whole
scheduler slice: measured on the 2-core VM at 784-100-10, batch 128, an epoch took 0.34 s idle
and 8.3 s (0.8-17 s) with one other busy process, against 0.40 s either way with BLAS on one
thread (benchmarks/NOTES.md, issue 22). So while gpubp trains on the CPU with products of the
sizes people tune (``small_products``), the BLAS it calls runs on one thread (``one_blas_thread``,
through threadpoolctl; a limit the user set is kept if lower), and a second core, if this process
may use one, computes the second half of each batch of ``kernels.cpu.SPLIT_ROWS`` rows or more
(``whole_epoch_in_halves``), the second part of each phase of a batch of ``UNIT_ROWS`` to
``SPLIT_ROWS`` - 1 rows split by units (``whole_epoch_by_units``) or, for smaller batches, gathers
the next rows (``gpubp.prefetch``); larger products keep the BLAS's threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import numpy as np

if TYPE_CHECKING:
    from .workspace import Workspace

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


# -- a batch in two halves, the second on a helper thread ---------------------------------------------

_pool: ThreadPoolExecutor | None = None
_halves: WeakKeyDictionary = WeakKeyDictionary()  # Workspace -> {cap: kernels.cpu.Halves}


def in_halves(m: int) -> bool:
    """Whether a batch of m rows is backpropagated as two halves (``kernels.cpu.SPLIT_ROWS``)."""
    from .kernels.cpu import SPLIT_ROWS

    return m >= SPLIT_ROWS


def halves(w: Workspace, cap: int) -> Any:
    """The buffers the second halves of batches of up to ``cap`` rows are computed in
    (``kernels.cpu.Halves``), made once per workspace and size."""
    k, made = w.backend.kernels, _halves.setdefault(w, {})
    if cap not in made:
        work = w.buffers(cap)
        helper_work = k.WorkBuffers(*(np.empty_like(a) for a in work[:4]), np.zeros(1), cap)
        helper_net, solo_net = (w.net._replace(nabla=np.zeros_like(w.nabla)) for _ in range(2))
        flags = np.zeros(k.AWAKE + 1, np.int64)
        made[cap] = k.Halves(helper_net, helper_work, solo_net, work._replace(cost=np.zeros(1)), flags)
    return made[cap]


def whole_epoch_in_halves(
    w: Workspace,
    X: np.ndarray,
    Y: np.ndarray,
    order: np.ndarray,
    start: int,
    stop: int,
    batch_size: int,
    hyper: tuple,
    helper: bool,
) -> None:
    """``kernels.cpu.train_batches_in_halves`` over rows order[start:stop]: with ``helper`` the
    second half of each batch on a helper thread, else all on this one."""
    k, h = w.backend.kernels, halves(w, batch_size)
    if not helper:
        k.train_batches_in_halves(X, Y, order, start, stop, w.net, w.buffers(batch_size), h, *hyper, False)
        return
    with _helper(h.flags, k.serve_halves, X, Y, order, h):
        k.train_batches_in_halves(X, Y, order, start, stop, w.net, w.buffers(batch_size), h, *hyper, True)


@contextmanager
def _helper(flags: np.ndarray, serve: Any, *args: Any) -> Iterator[None]:
    """``serve(*args)`` on a helper thread from a pool shared by concurrent fits, its flags cleared
    before and QUIT set after the block. ``serve`` is compiled (or loaded from the cache) here
    first: compiled on the helper, a new fit's first epoch could end before the helper begins."""
    global _pool
    from .kernels.cpu import QUIT, bind

    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gpubp-helper")  # one per concurrent fit
    flags[:] = 0
    served = _pool.submit(bind(serve, *args), *args)
    try:
        yield
    finally:
        flags[QUIT] = 1
        served.result()


# -- a small batch split by units, the second part of each phase on a helper thread ------------

_units: WeakKeyDictionary = WeakKeyDictionary()  # Workspace -> kernels.cpu.Units


def by_units(w: Workspace, m: int) -> bool:
    """Whether a batch of m rows is backpropagated split by units (``kernels.cpu.units_step``):
    from UNIT_ROWS to SPLIT_ROWS - 1 rows, with a hidden layer and none of them softmax."""
    from .kernels.activations import SOFTMAX
    from .kernels.cpu import SPLIT_ROWS, UNIT_ROWS

    return UNIT_ROWS <= m < SPLIT_ROWS and w.L >= 2 and SOFTMAX not in w.host_act_codes[:-1]


def units(w: Workspace) -> Any:
    """The split of each layer's units (``kernels.cpu.Units``), made once per workspace: the first
    part a multiple of 4 units, about half."""
    if w not in _units:
        cuts = np.array([min(n, 4 * -(-n // 8)) for n in w.sizes[1:]], np.int64)
        _units[w] = w.backend.kernels.Units(cuts, np.zeros(w.backend.kernels.TASK + 1, np.int64))
    return _units[w]


def whole_epoch_by_units(
    w: Workspace,
    X: np.ndarray,
    Y: np.ndarray,
    order: np.ndarray,
    start: int,
    stop: int,
    batch_size: int,
    hyper: tuple,
    helper: bool,
) -> None:
    """``kernels.cpu.train_batches_by_units`` over rows order[start:stop]: with ``helper`` the
    second part of each phase offered to a helper thread, else all on this one."""
    k, u, work = w.backend.kernels, units(w), w.buffers(batch_size)
    if not helper:
        k.train_batches_by_units(X, Y, order, start, stop, w.net, work, u, hyper, False)
        return
    with _helper(u.flags, k.serve_units, X, Y, order, w.net, work, u, hyper):
        k.train_batches_by_units(X, Y, order, start, stop, w.net, work, u, hyper, True)
