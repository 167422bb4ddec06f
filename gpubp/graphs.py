"""Steps recorded once as a CUDA graph and replayed (``Execution(replay=True)``).

The launches of ``Tuning.graph_batches`` mini-batches of ``CudaEngine.backprop`` and the update
are recorded once (cuda.core's GraphBuilder, which Numba launches into) and replayed: one host
call per run of batches instead of about a dozen per batch. A second recording replays the
epoch's last full batches (fewer than graph_batches); a last short batch runs launch by launch.
The batch's position in the shuffled order and (lr, momentum, decay) live in device memory, so
the same graph replays every batch of every epoch; it is recorded again only for other X or Y
memory or another batch size. Numba's CUDA simulator cannot record: there the same launches run
directly, so everything but the recording itself is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def check_graphs() -> None:
    """Raise ImportError now, not mid-epoch, if this numba-cuda cannot launch into a CUDA graph
    being recorded (cuda.core's GraphBuilder as a launch's stream)."""
    from numba import config

    if not config.ENABLE_CUDASIM:
        try:
            from numba.cuda.cudadrv.driver import GraphBuilder  # noqa: F401
        except ImportError as e:
            raise ImportError(f"recording CUDA graphs needs numba-cuda 0.2x or later with cuda.core ({e})") from None


def _address(array: Any) -> int:
    """Where a device array's data starts: two wrappers of the same memory (each fit makes a new
    one) give the same address. Numba's simulator has no addresses: there, the id."""
    interface = getattr(array, "__cuda_array_interface__", None)
    return interface["data"][0] if interface else id(array)


class Recordings:
    """The device-side state of replayed steps, and the graphs recorded for one schedule."""

    def __init__(self, schedule: Any) -> None:
        self.s = schedule
        b = schedule.backend
        self.order: Any = None  # the epoch's shuffled order, on the device
        self.offset = b.zeros(1, np.int64)  # where the next batch starts in it
        self.hyper = b.zeros(3, np.float64)  # (lr, momentum, decay); the biases take no decay
        self.graphs: dict[int, tuple] = {}  # batches per replay -> (key, replay, what it reads)

    def batches(self, engine: Any, X: Any, Y: Any, batch_size: int, batches: int, stream: Any = 0) -> None:
        """``batches`` full batches, each starting where the device-side offset points in the order:
        the same launches every time, so recordable once."""
        s, k = self.s, self.s.k
        v = s.views(batch_size, batch_size)
        launches = (
            k.gather_batch_at.plan(X, Y, self.order, self.offset, v.A[0], v.Y, stream)
            + k.advance.plan(self.offset, batch_size, stream)
            + engine.plan(v, batch_size, batch_size, 1.0 / batch_size, stream)
            + k.sgd_update_all_from.plan(s.params, s.nabla, s.velocity, self.hyper, s.n_weights, stream)
        )
        for _ in range(batches):
            for call, args in launches:
                call(*args)

    def _warm_up(self, engine: Any, X: Any, Y: Any, batch_size: int) -> None:
        """One batch of exactly the launches a recording makes (``batches``), run directly before
        it: every kernel's module (and cuBLAS's) is then loaded outside the recording. What that
        batch changes (parameters, velocity, cost, the device-side offset) is put back after it;
        the work buffers and nabla it writes are overwritten by the first replay."""
        s, b = self.s, self.s.backend
        saved = [(a, b.empty(a.shape, a.dtype)) for a in (s.params, s.velocity, s.cost, self.offset)]
        for a, copy in saved:
            b.copy(a, copy)
        self.batches(engine, X, Y, batch_size, 1)
        for a, copy in saved:
            b.copy(copy, a)

    def replay_for(self, engine: Any, X: Any, Y: Any, batch_size: int, batches: int) -> Callable[[], None]:
        """A function that runs ``batches`` batches: a recorded CUDA graph on a GPU; in Numba's
        simulator, which cannot record, the launches themselves."""
        buffers = self.s.buffers(batch_size)  # evaluate() may have swapped the work buffers since
        key = (_address(X), X.shape, _address(Y), Y.shape, batch_size, id(buffers), id(engine))
        recorded = self.graphs.get(batches)
        if recorded is not None and recorded[0] == key:
            return recorded[1]
        self._warm_up(engine, X, Y, batch_size)
        if self.s.backend.simulated:
            replay = lambda: self.batches(engine, X, Y, batch_size, batches)  # noqa: E731
        else:
            from cuda.core import Device, Stream

            device = Device()
            device.set_current()
            builder = device.create_stream().create_graph_builder()
            builder.begin_building("relaxed")  # Numba may load a module during the first launches
            self.batches(engine, X, Y, batch_size, batches, builder)
            builder.end_building()
            graph, null_stream = builder.complete(), Stream.from_handle(0)
            replay = lambda: graph.launch(null_stream)  # noqa: E731  # the stream Numba launches on
        self.graphs[batches] = (key, replay, X, Y, buffers)  # what the graph reads stays alive with it
        return replay


def train_epoch_replayed(
    schedule: Any,
    engine: Any,
    X: Any,
    Y: Any,
    order: np.ndarray,
    batch_size: int,
    hyper: tuple[float, float, float],
    progress: Callable[[int, int], Any] | None,
) -> None:
    """One epoch: its full batches by replays of graph_batches at a time, then the rest of them
    from a second recording; a last short batch launch by launch."""
    s, n = schedule, len(order)
    if s.graphs is None:
        s.graphs = Recordings(s)
    r, per_replay = s.graphs, s.tuning.graph_batches
    if r.order is None or r.order.shape[0] != n:
        r.order = s.backend.empty(n, np.int64)
        r.graphs.clear()
    lr, momentum, decay = hyper
    s.backend.copy(order.astype(np.int64), r.order)
    s.backend.copy(np.zeros(1, np.int64), r.offset)
    s.backend.copy(np.array([lr, momentum, decay]), r.hyper)
    full = n // batch_size
    replays, rest = divmod(full, per_replay)
    if replays:
        replay = r.replay_for(engine, X, Y, batch_size, per_replay)
        for i in range(replays):
            replay()
            if progress and (i + 1) % max(1, replays // 50) == 0:
                progress((i + 1) * per_replay * batch_size, n)
    if rest:
        r.replay_for(engine, X, Y, batch_size, rest)()
    engine.steps(X, Y, r.order, full * batch_size, n, batch_size, hyper)
    if progress:
        progress(n, n)
