"""How an epoch runs, decided in one place, and the loops that run it.

How an epoch runs is three independent choices, an ``Execution``, made in one function,
``choose``: how the products are computed (Numba kernels or cuBLAS), whether a run of steps'
launches is recorded once as a CUDA graph and replayed (``gpubp.graphs``), and whether the whole
epoch is one call. A ``Schedule`` is a network's ``Workspace`` (its arrays on one device) with
those decisions and the loops over an epoch, evaluation and prediction; the engines
(``gpubp.engines``) run each step's kernels in the order of backpropagation. Parameters,
activations and the training data stay on the device for the whole fit; only the epoch's
shuffled order is sent.

Calls go one way: ``network`` -> ``training`` -> ``schedule`` -> ``graphs`` -> ``engines`` ->
``prefetch`` -> ``workspace`` -> ``backends`` and the kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend
from .engines import CpuEngine, CudaEngine
from .workspace import Views, Workspace


@dataclass(frozen=True)
class Tuning:
    """Numbers that change how fast an epoch runs, never what it computes (CUDA only; first
    guesses, not yet measured on a GPU)."""

    fused_threads: int = 512  # threads of the whole-epoch kernel's one block
    fused_shared: int = 4096  # elements of its shared buffer (batch + 2 x width of a layer must fit)
    fused_work: int = 1 << 24  # "auto" runs an epoch in one launch up to this batch_size x weights
    graph_batches: int = 16  # mini-batches per recorded CUDA graph


@dataclass(frozen=True)
class Execution:
    """How an epoch's kernels run: three independent choices.

    ``products``: "numba" (the kernels of ``gpubp.kernels``) or "cublas" (each product one cuBLAS
    GEMM through CuPy, the rest of its equation a Numba kernel; CUDA only). ``replay``: record the
    launches of ``Tuning.graph_batches`` mini-batches once as a CUDA graph and replay it (CUDA
    only). ``whole_epoch``: the whole epoch in one call: one @njit call on the CPU, one launch of
    one thread block on CUDA (small networks; Numba products, no recording).
    """

    products: str = "numba"
    replay: bool = False
    whole_epoch: bool = False

    def __post_init__(self) -> None:
        if self.products not in ("numba", "cublas"):
            raise ValueError(f"unknown products {self.products!r}; choose 'numba' or 'cublas'")
        if self.whole_epoch and (self.replay or self.products != "numba"):
            raise ValueError("a whole epoch in one call runs the Numba kernels and records nothing")


# The names of the paths that gpubp 0.1 took, kept as aliases.
PATHS = {
    "layers": Execution(),
    "epoch": Execution(whole_epoch=True),
    "graph": Execution(replay=True),
    "cublas": Execution(products="cublas"),
    "cublas-graph": Execution(products="cublas", replay=True),
}


def path_name(path: str | Execution) -> str | Execution:
    """The alias of ``PATHS`` an Execution has, if any ("auto" stays "auto")."""
    return next((name for name, e in PATHS.items() if e == path), path)


def requested(path: str | Execution, backend: Backend) -> str | Execution:
    """Check a ``path`` ("auto", an alias of ``PATHS`` or an ``Execution``) against the device, at
    construction; return "auto" or the ``Execution``."""
    if isinstance(path, str) and path != "auto":
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose one of 'auto', {', '.join(map(repr, PATHS))}")
        path = PATHS[path]
    elif not isinstance(path, (str, Execution)):
        raise TypeError(f"path must be 'auto', a path name or a gpubp.Execution, got {path!r}")
    if isinstance(path, Execution) and backend.name != "cuda":
        if path.products == "cublas":
            raise ValueError("cuBLAS products run on CUDA only; on the CPU the products already call BLAS from 32 rows")
        if path.replay:
            raise ValueError("recording and replaying CUDA graphs runs on CUDA only")
    if isinstance(path, Execution) and backend.name == "cuda":
        if path.products == "cublas":
            backend.kernels.check_cublas()
        if path.replay:
            from .graphs import check_graphs

            check_graphs()
    return path


def choose(
    path: str | Execution, backend: Backend, sizes: list[int], batch_size: int, tuning: Tuning, per_step: bool = False
) -> Execution:
    """The one place that decides how an epoch runs (ValueError if a forced path cannot).

    "auto": the whole epoch in one call on the CPU; on CUDA when a batch needs at most
    ``tuning.fused_work`` multiply-adds per layer pass and every layer fits the fused kernel's
    shared buffer, else one launch per operation with Numba's products. Recording and cuBLAS are
    never taken by "auto" until a GPU measurement says where they win. ``per_step`` (a distributed
    fit, which all-reduces the gradients between two steps): one call per step."""
    if per_step:
        if path == "auto":
            return Execution()
        if path.whole_epoch or path.replay:
            what = "a whole epoch" if path.whole_epoch else "many steps"
            raise ValueError(
                f"path={path_name(path)!r} runs {what} per call, so it cannot all-reduce the gradients between "
                f"two steps; distributed training needs path='layers' (or 'cublas' on CUDA), or 'auto', which "
                f"picks 'layers'"
            )
        return path
    fits = backend.name == "cpu" or backend.kernels.fused.fits(batch_size, sizes, tuning.fused_shared)
    if path == "auto":
        n_weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        small = backend.name == "cpu" or batch_size * n_weights <= tuning.fused_work
        return Execution(whole_epoch=fits and small)
    if path.whole_epoch and not fits:
        raise ValueError(
            f"a whole epoch in one launch (path='epoch') cannot train layers of {sizes} with batches of "
            f"{batch_size}: a batch plus twice a layer's width must be at most {tuning.fused_shared} (the "
            f"fused kernel's shared buffer); use path='layers' or 'auto'"
        )
    return path


class Schedule(Workspace):
    """A network's arrays on one backend (a ``Workspace``), how its epochs run, and the loops that
    run them, evaluate and predict."""

    def __init__(
        self,
        backend: Backend,
        sizes: list[int],
        acts: list[int],
        loss: int,
        params: np.ndarray,
        path: str | Execution = "auto",
        tuning: Tuning | None = None,
    ) -> None:
        self.path = requested(path, backend)
        self.tuning = tuning or Tuning()
        super().__init__(backend, sizes, acts, loss, params)
        self._engines: dict[str, CpuEngine | CudaEngine] = {}
        self.graphs: Any = None  # gpubp.graphs.Recordings, made by the first epoch that replays

    def engine(self, products: str = "numba") -> CpuEngine | CudaEngine:
        """The engine that runs one step's kernels on this device, with these products."""
        if products not in self._engines:
            if self.backend.name == "cpu":
                self._engines[products] = CpuEngine(self)
            else:
                options = {"threads": self.tuning.fused_threads, "shared": self.tuning.fused_shared}
                self._engines[products] = CudaEngine(self, products, options)
        return self._engines[products]

    # -- training -------------------------------------------------------------------------------
    def execution(self, batch_size: int) -> Execution:
        """How an epoch with this batch size runs (ValueError if the path asked for cannot)."""
        return choose(self.path, self.backend, self.sizes, batch_size, self.tuning, per_step=self.dist is not None)

    def train_epoch(
        self,
        X: Any,
        Y: Any,
        order: np.ndarray,
        batch_size: int,
        lr: float,
        momentum: float,
        decay: float,
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Mini-batch SGD over the rows of X in ``order``; adds the batches' costs to ``cost``."""
        how = self.execution(batch_size)
        n, hyper = len(order), (lr, momentum, decay)
        engine = self.engine(how.products)
        if how.replay:
            from .graphs import train_epoch_replayed

            train_epoch_replayed(self, engine, X, Y, order, batch_size, hyper, progress)
            return
        order_d = self.backend.to_device(order.astype(np.int64))
        # Report progress a few dozen times an epoch, at batch boundaries.
        chunk = max(batch_size, -(-n // 50 // batch_size) * batch_size) if progress else n
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            if how.whole_epoch:
                engine.whole_epoch(X, Y, order_d, start, stop, batch_size, hyper)
            else:
                engine.steps(X, Y, order_d, start, stop, batch_size, hyper)
            if progress:
                progress(stop, n)

    def gradients(self, X: Any, Y: Any) -> Views:
        """nabla = dC/dp for the cost averaged over all rows of X (one batch); the views then hold
        every layer's z, a and delta."""
        n = X.shape[0]
        v = self.views(n, n)
        self.backend.copy(X, v.A[0])
        self.backend.copy(Y, v.Y)
        self.engine().backprop(v, n, n, 1.0 / n)
        return v

    def step(self, X: Any, Y: Any, lr: float) -> None:
        """One plain SGD step on the batch X, as a batch of ``fit`` takes it (``Engine.sgd_step``);
        the momentum state is neither read nor written."""
        n = X.shape[0]
        v = self.views(n, n)
        self.backend.copy(X, v.A[0])
        self.backend.copy(Y, v.Y)
        self.engine().sgd_step(v, n, n, lr)

    # -- evaluation -------------------------------------------------------------------------------
    def feedforward_rows(self, X: Any, s: int, e: int, cap: int) -> Views:
        """Forward pass of rows s:e of X (at most ``cap`` of them) through every layer."""
        v = self.views(cap, e - s)
        self.backend.copy(X[s:e], v.A[0])
        self.engine().forward(v, cap, e - s)
        return v

    def evaluate(self, X: Any, Y: Any, cap: int = 1024) -> tuple[float, int]:
        """(sum over rows of the cost C_x, number of rows whose argmax matches Y's)."""
        self.reset_cost()
        self.backend.copy(np.zeros(1, np.int64), self.count)
        n, L = X.shape[0], self.L
        cap = min(cap, n)
        for s in range(0, n, cap):
            e = min(s + cap, n)
            v = self.feedforward_rows(X, s, e, cap)
            self.k.output_error(v.Z[L], v.A[L], Y[s:e], v.D[L], self.loss, self.host_act_codes[L - 1], self.cost)
            self.k.count_correct(v.A[L], Y[s:e], self.count)
        return self.read_cost(), int(self.backend.to_host(self.count)[0])

    def predict(self, X: Any, cap: int = 1024, on_device: bool = False) -> Any:
        """a^L for every row of X: a numpy array, or a new array on this device."""
        n = X.shape[0]
        shape, cap = (n, self.sizes[-1]), min(cap, n)
        out = self.backend.empty(shape, self.dtype) if on_device else np.empty(shape, self.dtype)
        for s in range(0, n, cap):
            e = min(s + cap, n)
            a = self.feedforward_rows(X, s, e, cap).A[self.L]
            if on_device:
                self.backend.copy(a, out[s:e])
            else:
                out[s:e] = self.backend.to_host(a)
        return out

    def nonfinite(self, array: Any) -> int:
        """How many entries of ``array`` (on the host or this device) are NaN or inf, counted in one
        pass without a temporary array."""
        if isinstance(array, np.ndarray):
            from .kernels import cpu

            count = np.zeros(1, np.int64)
            cpu.count_nonfinite(array.reshape(-1), count)
            return int(count[0])
        self.backend.copy(np.zeros(1, np.int64), self.count)
        self.k.count_nonfinite(array.reshape(array.size), self.count)
        return int(self.backend.to_host(self.count)[0])
