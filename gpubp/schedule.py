"""The order kernels run in: mini-batch SGD, layer by layer, on one device.

For each mini-batch (Nielsen's ``update_mini_batch``):
  1. gather the batch's rows of X and Y (the shuffle) into work buffers;
  2. forward, l = 1..L:      z^l = W^l a^(l-1) + b^l,  a^l = f(z^l);
  3. BP1:                    delta^L = grad_a C ⊙ f'(z^L);
  4. backward, l = L..1:     BP2 delta^(l-1) from W^l, BP3/BP4 the gradients of layer l;
  5. update every layer:     W <- W - (eta/m) sum_x delta (a^(l-1))^T,  b <- b - (eta/m) sum_x delta.
BP2 always reads the W^l that made the forward pass.

Each engine writes that order once: ``kernels.cpu.step`` (one @njit call per batch, the CPU),
``CudaEngine.backprop`` below (one launch per operation, CUDA) and ``kernels.cuda.fused`` (a
whole epoch in one CUDA launch). How an epoch runs is three independent choices, an
``Execution``, made in one function, ``choose``: how the products are computed (Numba kernels or
cuBLAS), whether a run of steps' launches is recorded once as a CUDA graph and replayed
(``gpubp.graphs``), and whether the whole epoch is one call. Parameters, activations and the
training data stay on the device for the whole fit; only the epoch's shuffled order is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import prefetch
from .backends import Backend


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


def choose(path: str | Execution, backend: Backend, sizes: list[int], batch_size: int, tuning: Tuning) -> Execution:
    """The one place that decides how an epoch runs (ValueError if a forced whole epoch cannot).

    "auto": the whole epoch in one call on the CPU; on CUDA when a batch needs at most
    ``tuning.fused_work`` multiply-adds per layer pass and every layer fits the fused kernel's
    shared buffer, else one launch per operation with Numba's products. Recording and cuBLAS are
    never taken by "auto" until a GPU measurement says where they win."""
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


@dataclass
class Views:
    """Per-layer views of the work buffers for a batch of m rows (slot 0 of A is the input)."""

    A: list[Any]
    Z: list[Any]
    D: list[Any]
    Y: Any


class Engine:
    """Runs one step's kernels, and a whole epoch's, for a schedule on its device."""

    epoch_options: dict[str, int] = {}  # launch settings of the whole-epoch call

    def __init__(self, s: Schedule) -> None:
        self.s, self.k = s, s.backend.kernels

    def whole_epoch(self, X: Any, Y: Any, order: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        """Mini-batch SGD over rows order[start:stop] in one call (``train_batches``)."""
        s = self.s
        A, Z, D, Yb = s.buffers(batch_size)
        self.k.train_batches(X, Y, order, start, stop, batch_size, s.params, s.nabla, s.velocity, s.layout, s.units,
                             s.acts, s.loss, A, Yb, Z, D, *hyper, s.cost, **self.epoch_options)  # fmt: skip


class CpuEngine(Engine):
    """The CPU's order of backpropagation is ``kernels.cpu.step``: one @njit call per batch."""

    def forward(self, v: Views, cap: int, m: int) -> None:
        s = self.s
        A, Z, _, _ = s.buffers(cap)
        self.k.feedforward(s.params, s.layout, s.units, s.acts, A, Z, cap, m)

    def backprop(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> None:
        """nabla = scale sum_x dC_x/dp over the batch of m rows in the work buffers; cost += sum_x C_x."""
        s = self.s
        A, Z, D, _ = s.buffers(cap)
        self.k.step(s.params, s.nabla, s.velocity, s.layout, s.units, s.acts, s.loss, v.Y, A, Z, D, cap, m, scale,
                    0.0, 0.0, 0.0, s.cost, False)  # fmt: skip

    def whole_epoch(self, X: Any, Y: Any, order: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        # small batches train on one core: the gather of the shuffled rows goes to a second one
        if prefetch.worth_it(stop - start, batch_size, self.k.BLAS_ROWS):
            prefetch.whole_epoch(self.s, X, Y, order, start, stop, batch_size, hyper)
            return
        super().whole_epoch(X, Y, order, start, stop, batch_size, hyper)


class CudaEngine(Engine):
    """CUDA's order of backpropagation, one kernel launch per operation and layer."""

    def __init__(self, s: Schedule, products: str) -> None:
        super().__init__(s)
        k = self.k
        if products == "cublas":
            self.products = (k.forward_cublas, k.hidden_error_cublas, k.weight_gradient_cublas)
        else:
            self.products = (k.forward, k.hidden_error, k.weight_gradient)
        self.epoch_options = {"threads": s.tuning.fused_threads, "shared": s.tuning.fused_shared}

    def forward(self, v: Views, cap: int, m: int, stream: Any = 0) -> None:
        """z^l = W^l a^(l-1) + b^l, a^l = f(z^l) for l = 1..L."""
        s, forward = self.s, self.products[0]
        for l in range(s.L):
            forward(v.A[l], s.W[l], s.b[l], v.Z[l + 1], v.A[l + 1], s.acts_list[l], stream)

    def backprop(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> None:
        """Forward, BP1, then down the layers BP4/BP3 and BP2: nabla = scale sum_x dC_x/dp.

        ``stream``: where to launch, e.g. a CUDA graph being recorded."""
        s, k, L, acts = self.s, self.k, self.s.L, self.s.acts_list
        _, hidden_error, weight_gradient = self.products
        self.forward(v, cap, m, stream)
        k.output_error(v.Z[L], v.A[L], v.Y, v.D[L], s.loss, acts[L - 1], s.cost, stream)  # BP1
        for l in reversed(range(L)):
            weight_gradient(v.D[l + 1], v.A[l], scale, s.gW[l], stream)  # BP4
            k.bias_gradient(v.D[l + 1], scale, s.gb[l], stream)  # BP3
            if l > 0:  # BP2
                hidden_error(v.D[l + 1], s.W[l], v.Z[l], v.A[l], v.D[l], acts[l - 1], stream)


class Schedule:
    """A network's parameters and buffers on one backend, and the kernel launches that train it."""

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
        self.backend, self.k = backend, backend.kernels
        self.path = requested(path, backend)
        self.tuning = tuning or Tuning()
        self.sizes, self.L = list(sizes), len(sizes) - 1
        self.dtype = params.dtype
        self.acts_list, self.loss = list(acts), loss

        # Flat parameter layout: W^1..W^L, then b^1..b^L (see kernels.cpu); the tables the engines read.
        n_w = [sizes[l + 1] * sizes[l] for l in range(self.L)]
        w_off = np.concatenate([[0], np.cumsum(n_w)])
        b_off = w_off[-1] + np.concatenate([[0], np.cumsum(sizes[1:])])
        self.n_weights = int(w_off[-1])
        self.host_layout = np.array([[w_off[l], b_off[l], sizes[l + 1], sizes[l]] for l in range(self.L)], np.int64)
        self.host_units = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # units[l] = sum(sizes[:l])
        self.layout, self.units = backend.to_device(self.host_layout), backend.to_device(self.host_units)
        self.acts = backend.to_device(np.asarray(acts, dtype=np.int64))

        self.params = backend.empty(params.shape, self.dtype)  # on the CPU: aligned to a cache line
        backend.copy(params, self.params)
        self.nabla = backend.zeros(params.shape, self.dtype)
        self.velocity = backend.zeros(params.shape, self.dtype)
        self.cost = backend.zeros(1, np.float64)  # summed over an epoch: float32 would lose digits
        self.count = backend.zeros(1, np.int64)
        self._snapshot: tuple[Any, Any] | None = None  # the state before this epoch or step
        self.W, self.b = self._layer_views(self.params)
        self.gW, self.gb = self._layer_views(self.nabla)
        self._buffers: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._views: dict[tuple[int, int], Views] = {}
        self._engines: dict[str, Any] = {}
        self.graphs: Any = None  # gpubp.graphs.Recordings, made by the first epoch that replays
        self.dist: Any = None  # a gpubp.distributed.Communicator during a distributed fit

    def engine(self, products: str = "numba") -> CpuEngine | CudaEngine:
        """The engine that runs one step's kernels on this device, with these products."""
        if products not in self._engines:
            cpu = self.backend.name == "cpu"
            self._engines[products] = CpuEngine(self) if cpu else CudaEngine(self, products)
        return self._engines[products]

    # -- buffers ------------------------------------------------------------------------------
    def _layer_views(self, flat: Any) -> tuple[list[Any], list[Any]]:
        ws, bs = [], []
        for w_off, b_off, n_out, n_in in self.host_layout:
            ws.append(flat[w_off : w_off + n_out * n_in].reshape((n_out, n_in)))
            bs.append(flat[b_off : b_off + n_out])
        return ws, bs

    def buffers(self, cap: int) -> tuple[Any, Any, Any, Any]:
        """Flat work buffers (A, Z, Delta, Y) for batches of up to ``cap`` rows.

        Two sizes are kept, training's and evaluation's, so a fit with validation does not
        allocate (and the graph path does not record) again every epoch."""
        if cap not in self._buffers:
            if len(self._buffers) == 2:
                oldest = next(iter(self._buffers))
                del self._buffers[oldest]
                self._views = {key: v for key, v in self._views.items() if key[0] != oldest}
            n, e = cap * int(self.host_units[-1]), self.backend.empty
            self._buffers[cap] = (
                e(n, self.dtype),
                e(n, self.dtype),
                e(n, self.dtype),
                e(cap * self.sizes[-1], self.dtype),
            )
        return self._buffers[cap]

    def views(self, cap: int, m: int) -> Views:
        """Views of layer l's (m, sizes[l]) rows in the buffers for ``cap`` rows."""
        if (cap, m) not in self._views:
            A, Z, D, Y = self.buffers(cap)

            def slots(buf: Any) -> list[Any]:
                starts = self.host_units[:-1] * cap
                return [buf[u : u + m * n].reshape((m, n)) for u, n in zip(starts, self.sizes)]

            self._views[(cap, m)] = Views(
                slots(A), slots(Z), slots(D), Y[: m * self.sizes[-1]].reshape((m, self.sizes[-1]))
            )
        return self._views[(cap, m)]

    # -- training -------------------------------------------------------------------------------
    def update(self, lr: float, momentum: float, decay: float, velocity: Any = None) -> None:
        """SGD on all parameters from nabla: weights with weight decay, biases without."""
        nw, velocity = self.n_weights, self.velocity if velocity is None else velocity
        self.k.sgd_update(self.params[:nw], self.nabla[:nw], velocity[:nw], lr, momentum, decay)
        self.k.sgd_update(self.params[nw:], self.nabla[nw:], velocity[nw:], lr, momentum, 0.0)

    def execution(self, batch_size: int) -> Execution:
        """How an epoch with this batch size runs (ValueError if the path asked for cannot)."""
        if self.dist is not None:  # one call per step, to all-reduce between steps
            return self.dist.step_execution(self.path)
        return choose(self.path, self.backend, self.sizes, batch_size, self.tuning)

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
        if how.replay:
            from .graphs import train_epoch_replayed

            train_epoch_replayed(self, how.products, X, Y, order, batch_size, hyper, progress)
            return
        order_d = self.backend.to_device(order.astype(np.int64))
        # Report progress a few dozen times an epoch, at batch boundaries.
        chunk = max(batch_size, -(-n // 50 // batch_size) * batch_size) if progress else n
        engine = self.engine(how.products)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            if how.whole_epoch:
                engine.whole_epoch(X, Y, order_d, start, stop, batch_size, hyper)
            else:
                self.steps(engine, X, Y, order_d, start, stop, batch_size, hyper)
            if progress:
                progress(stop, n)

    def steps(self, engine: Any, X: Any, Y: Any, order_d: Any, start: int, stop: int, batch_size: int, hyper: tuple):
        """Mini-batch SGD over rows order_d[start:stop] of X, one step call per batch.

        Distributed, each rank takes its share of every batch's rows and one all-reduce sums the
        ranks' gradients, each scaled by 1/(the whole batch's rows), before the same update."""
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            scale = 1.0 / (e - s)  # the mean over the whole batch, on every rank
            if self.dist is not None:
                s, e = self.dist.take(s, e)
            if e > s:
                v = self.views(batch_size, e - s)
                self.k.gather_rows(X, order_d[s:e], v.A[0])
                self.k.gather_rows(Y, order_d[s:e], v.Y)
                engine.backprop(v, batch_size, e - s, scale)
            else:  # no rows on this rank in a short last batch: it adds zeros to the sum
                self.dist.zero(self.nabla)
            if self.dist is not None:
                self.dist.allreduce(self.nabla)
            self.update(*hyper)

    def gradients(self, X: Any, Y: Any) -> Views:
        """nabla = dC/dp for the cost averaged over all rows of X (one batch); the views then hold
        every layer's z, a and delta."""
        n = X.shape[0]
        v = self.views(n, n)
        self.backend.copy(X, v.A[0])
        self.backend.copy(Y, v.Y)
        self.engine().backprop(v, n, n, 1.0 / n)
        return v

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
            self.k.output_error(v.Z[L], v.A[L], Y[s:e], v.D[L], self.loss, self.acts_list[L - 1], self.cost)
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

    # -- state ----------------------------------------------------------------------------------
    def reset_cost(self) -> None:
        self.backend.copy(np.zeros(1, np.float64), self.cost)

    def read_cost(self) -> float:
        return float(self.backend.to_host(self.cost)[0])

    def nonfinite(self, array: Any) -> int:
        """How many entries of ``array`` (on the host or this device) are NaN or inf, counted in one
        pass without a temporary array; the parameters if None."""
        if isinstance(array, np.ndarray):
            from .kernels import cpu

            count = np.zeros(1, np.int64)
            cpu.count_nonfinite(array.reshape(-1), count)
            return int(count[0])
        self.backend.copy(np.zeros(1, np.int64), self.count)
        self.k.count_nonfinite(array.reshape(array.size), self.count)
        return int(self.backend.to_host(self.count)[0])

    def state(self, into: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
        """A copy of the training state (the parameters, the momentum state) on this device, into
        the arrays of an earlier copy if given: to go back to after a diverged epoch, or a best epoch."""
        if into is None:
            into = tuple(self.backend.empty(self.params.shape, self.dtype) for _ in range(2))
        self.backend.copy(self.params, into[0])
        self.backend.copy(self.velocity, into[1])
        return into

    def set_state(self, state: tuple[Any, Any]) -> None:
        """Put back a training state that ``state`` copied."""
        self.backend.copy(state[0], self.params)
        self.backend.copy(state[1], self.velocity)

    def save_snapshot(self) -> None:
        """Keep the training state, to go back to if this epoch or step diverges."""
        self._snapshot = self.state(self._snapshot)

    def restore_snapshot(self) -> None:
        self.set_state(self._snapshot)

    def host(self, name: str) -> np.ndarray:
        """A numpy copy of "params", "nabla" or "velocity"."""
        return self.backend.to_host(getattr(self, name))

    def set_host(self, name: str, values: np.ndarray) -> None:
        """Set "params" or "velocity" from a flat host array."""
        self.backend.copy(np.ascontiguousarray(values, dtype=self.dtype), getattr(self, name))

    def split(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-layer copies (W^l, b^l) of a flat host array in the parameters' layout."""
        ws, bs = self._layer_views(flat)
        return [w.copy() for w in ws], [b.copy() for b in bs]
