"""The CPU's whole-epoch path with the gather of shuffled rows on a second core.

Copying a shuffled mini-batch's rows out of a large X is bound by memory latency, not by
arithmetic: on the 2-core development VM it takes ~40 ms per epoch of 60,000 rows of 784 floats
(scattered over 188 MB, ~6 GB/s), a third of the textbook run's epoch. Here one helper thread
copies the next chunk of rows (in the epoch's order) into a contiguous buffer while this thread
trains on the current one, so the epoch costs about max(training, gather) instead of their sum.
The result is the same: the same rows in the same order, the same kernels.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from . import cores

if TYPE_CHECKING:
    from .workspace import Workspace

# Rows per chunk: enough to hide a thread hand-off (~50 us) behind the training of a chunk, small
# enough that a chunk stays in the shared cache (1024 x 784 float32 = 3.2 MB).
CHUNK_ROWS = 1024

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpubp-gather")
    return _pool


def worth_it(n_rows: int, batch_size: int) -> bool:
    """The training may use a second thread (``gpubp.cores.threads``: the products run on this one)
    and the rows are more than one chunk."""
    return n_rows > max(CHUNK_ROWS, 2 * batch_size) and cores.threads() >= 2


def whole_epoch(
    w: Workspace, X: np.ndarray, Y: np.ndarray, order: np.ndarray, start: int, stop: int, batch_size: int, hyper: tuple
) -> None:
    """``kernels.cpu.train_batches`` over rows order[start:stop] of (X, Y) in batches of
    ``batch_size``, chunk by chunk, each chunk's rows gathered by the helper thread while the
    previous chunk trains."""
    k = w.backend.kernels
    chunk = max(1, CHUNK_ROWS // batch_size) * batch_size
    bufs = w.chunk_buffers(chunk, X, Y)  # aligned to a cache line
    identity = np.arange(chunk, dtype=np.int64)
    work = w.buffers(batch_size)

    def gather(c0: int, buf: tuple[np.ndarray, np.ndarray]) -> None:
        c1 = min(c0 + chunk, stop)
        k.gather_rows(X, order[c0:c1], buf[0][: c1 - c0])
        k.gather_rows(Y, order[c0:c1], buf[1][: c1 - c0])

    pool = _executor()
    pending: Future = pool.submit(gather, start, bufs[0])
    try:
        for i, c0 in enumerate(range(start, stop, chunk)):
            c1 = min(c0 + chunk, stop)
            pending.result()
            if c1 < stop:
                pending = pool.submit(gather, c1, bufs[(i + 1) % 2])
            Xc, Yc = bufs[i % 2]
            k.train_batches(Xc, Yc, identity, 0, c1 - c0, w.net, work, *hyper)
    finally:
        pending.result()  # never leave the helper writing into a buffer after returning
