"""The order kernels run in: one mini-batch of SGD, layer by layer.

For each mini-batch (Nielsen's ``update_mini_batch``):
  1. gather the batch's rows of X and Y (the shuffle) into work buffers;
  2. forward, l = 1..L:      z^l = W^l a^(l-1) + b^l,  a^l = f(z^l);
  3. BP1:                    delta^L = grad_a C ⊙ f'(z^L);
  4. backward, l = L..1:     BP4/BP3 gradients of layer l, then BP2 delta^(l-1) from W^l;
  5. update every layer:     W <- W - (eta/m) sum_x delta (a^(l-1))^T,  b <- b - (eta/m) sum_x delta.
BP2 always reads the W^(l+1) that made the forward pass: the "layers" path updates after the
backward pass; the "epoch" path updates each layer right after BP2 has read its weights.

Two paths run this order; on either, parameters, activations and the training data stay on the
device for the whole fit, and only the epoch's shuffled order is sent, once per epoch:
- ``"layers"``: this module's Python loop launches one kernel per operation per layer (about a
  dozen launches per mini-batch for two layers). The reference, and the path for large layers.
- ``"epoch"``: the whole loop in one call of ``kernels.<backend>.train_batches``: on the CPU one
  @njit function, with each layer's BP3/BP4 and update fused; on CUDA one kernel launch that runs
  every mini-batch in a single thread block (``train_fused_v2``), which pays no launch per batch
  but uses one multiprocessor: for small networks, whose batches cannot fill a GPU anyway.
- ``"cublas"`` (CUDA only): the layers path with each product done by cuBLAS through CuPy and the
  rest of its equation by a Numba kernel (``kernels.cuda.*_cublas``): the path for wide layers
  at large batches, if cuBLAS beats the register-blocked kernels there. Never picked by "auto"
  until a GPU measurement says where it wins.
- ``"graph"`` (CUDA only): the layers path with its launches for GRAPH_BATCHES mini-batches
  recorded once as a CUDA graph (cuda.core's GraphBuilder, which Numba launches into) and
  replayed: one host call per GRAPH_BATCHES batches instead of about a dozen per batch (a
  second recording replays the epoch's last full batches, fewer than GRAPH_BATCHES). The
  batch's position, lr, momentum and decay live in device memory, so the same graph replays
  every batch of every epoch.
- ``"cublas-graph"`` (CUDA only, CuPy): the cublas path recorded and replayed like "graph": the
  products by cuBLAS with no host time per batch, for wide layers whose epochs the cublas path's
  host calls (a GEMM call and CuPy views per product) would otherwise bound.
``"auto"`` takes "epoch" on the CPU, and on CUDA when a batch needs at most ``FUSED_WORK``
multiply-adds per layer pass and its layers fit the kernel's shared buffer
(``kernels.cuda.fused_fits``), else "layers". That bound is a first guess, not yet measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend

PATHS = ("auto", "layers", "epoch", "cublas", "graph", "cublas-graph")
RECORDED = ("graph", "cublas-graph")  # the paths that replay a recorded CUDA graph
FUSED_WORK = 1 << 24  # CUDA "auto": batch_size * (number of weights) up to this runs fused
GRAPH_BATCHES = 16  # mini-batches per recorded CUDA graph of the "graph" path


def _address(array: Any) -> int:
    """Where a device array's data starts: two wrappers of the same memory (``_inputs`` makes a new
    one each fit) give the same address. Numba's simulator has no addresses: there, the id."""
    interface = getattr(array, "__cuda_array_interface__", None)
    return interface["data"][0] if interface else id(array)


@dataclass
class Views:
    """Per-layer views of the work buffers for a batch of m rows (slot 0 of A is the input)."""

    A: list[Any]
    Z: list[Any]
    D: list[Any]
    Y: Any


class Schedule:
    """A network's parameters and buffers on one backend, and the kernel launches that train it."""

    def __init__(
        self, backend: Backend, sizes: list[int], acts: list[int], loss: int, params: np.ndarray, path: str = "auto"
    ) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose one of {', '.join(map(repr, PATHS))}")
        self.requested_path = path  # distributed: "auto" is told from a forced "epoch" by it
        self.dist: Any = None  # distributed: a gpubp.distributed.Communicator during a distributed fit
        if path == "auto" and backend.name == "cpu":
            path = "epoch"
        self.backend, self.k, self.path = backend, backend.kernels, path
        k = self.k
        if path in ("cublas", "cublas-graph"):
            if backend.name != "cuda":
                raise ValueError(
                    f"path={path!r} runs on CUDA only; on the CPU the products already call BLAS from 32 rows up"
                )
            k.check_cublas()
            self.forward, self.hidden_error, self.weight_gradient = (
                k.forward_cublas,
                k.hidden_error_cublas,
                k.weight_gradient_cublas,
            )
        else:
            self.forward, self.hidden_error, self.weight_gradient = k.forward, k.hidden_error, k.weight_gradient
        if path in RECORDED:
            if backend.name != "cuda":
                raise ValueError(f"path={path!r} records CUDA graphs and runs on CUDA only")
            k.check_graphs()
        self.sizes, self.L = list(sizes), len(sizes) - 1
        self.dtype = params.dtype
        self.acts_list, self.loss = list(acts), loss
        self.acts = np.asarray(acts, dtype=np.int64)

        # Flat parameter layout: W^1..W^L, then b^1..b^L (see kernels.cpu).
        n_w = [sizes[l + 1] * sizes[l] for l in range(self.L)]
        w_off = np.concatenate([[0], np.cumsum(n_w)])
        b_off = w_off[-1] + np.concatenate([[0], np.cumsum(sizes[1:])])
        self.n_weights = int(w_off[-1])
        self.layout = np.array([[w_off[l], b_off[l], sizes[l + 1], sizes[l]] for l in range(self.L)], dtype=np.int64)
        self.units = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # The same three tables where the epoch kernels read them.
        self.tables = tuple(backend.to_device(t) for t in (self.layout, self.units, self.acts))

        self.params = backend.to_device(params)
        self.nabla = backend.zeros(params.shape, self.dtype)
        self.velocity = backend.zeros(params.shape, self.dtype)
        self.cost = backend.zeros(1, np.float64)  # summed over an epoch: float32 would lose digits
        self.count = backend.zeros(1, np.int64)
        self._snapshot = (backend.empty(params.shape, self.dtype), backend.empty(params.shape, self.dtype))
        self.W, self.b = self._layer_views(self.params)
        self.gW, self.gb = self._layer_views(self.nabla)
        self._buffers: dict[int, tuple[Any, Any, Any, Any]] = {}
        # The "graph" path's device-side state: the epoch's order, the position in it, (lr, momentum,
        # decay) for the weights and the biases, and the recorded graph.
        self._order: Any = None
        self._offset = backend.zeros(1, np.int64)
        self._hyper = (backend.zeros(3, np.float64), backend.zeros(3, np.float64))
        self._graphs: dict[int, tuple] = {}  # batches per replay -> (key, replay, what it reads)
        self._views: dict[tuple[int, int], Views] = {}

    # -- buffers ------------------------------------------------------------------------------
    def _layer_views(self, flat: Any) -> tuple[list[Any], list[Any]]:
        ws, bs = [], []
        for w_off, b_off, n_out, n_in in self.layout:
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
            n = cap * int(self.units[-1])
            e = self.backend.empty
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
                return [buf[cap * u : cap * u + m * n].reshape((m, n)) for u, n in zip(self.units[:-1], self.sizes)]

            self._views[(cap, m)] = Views(
                slots(A), slots(Z), slots(D), Y[: m * self.sizes[-1]].reshape((m, self.sizes[-1]))
            )
        return self._views[(cap, m)]

    # -- one batch, layer by layer ------------------------------------------------------------
    def backprop_layers(self, v: Views, scale: float, stream: Any = 0) -> None:
        """Forward, BP1, then BP4/BP3 and BP2 down the layers: nabla = scale * sum_x dC_x/dp.

        ``stream`` (CUDA only): where to launch, e.g. a graph being recorded."""
        k, L, acts = self.k, self.L, self.acts_list
        s = () if isinstance(stream, int) and stream == 0 else (stream,)  # the CPU kernels take no stream
        for l in range(L):
            self.forward(v.A[l], self.W[l], self.b[l], v.Z[l + 1], v.A[l + 1], acts[l], *s)
        k.output_error(v.Z[L], v.A[L], v.Y, v.D[L], self.loss, acts[L - 1], self.cost, *s)
        for l in reversed(range(L)):
            self.weight_gradient(v.D[l + 1], v.A[l], scale, self.gW[l], *s)
            k.bias_gradient(v.D[l + 1], scale, self.gb[l], *s)
            if l > 0:
                self.hidden_error(v.D[l + 1], self.W[l], v.Z[l], v.A[l], v.D[l], acts[l - 1], *s)

    def _layers_batches(
        self,
        X: Any,
        Y: Any,
        order_d: Any,
        start: int,
        stop: int,
        batch_size: int,
        lr: float,
        momentum: float,
        decay: float,
    ) -> None:
        """Mini-batch SGD over rows order_d[start:stop] of X, batch by batch and launch by launch."""
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            scale = 1.0 / (e - s)  # the mean over the whole (global) batch
            if self.dist is not None:  # distributed: this rank's rows of the global batch
                s, e = self.dist.take(s, e)
            if e > s:
                v = self.views(batch_size, e - s)
                self.k.gather_rows(X, order_d[s:e], v.A[0])
                self.k.gather_rows(Y, order_d[s:e], v.Y)
                self.backprop_layers(v, scale)
            else:  # distributed: no rows here in this (short) batch: add zeros to the sum
                self.dist.zero(self.nabla)
            if self.dist is not None:  # distributed: nabla <- the sum of every rank's nabla
                self.dist.allreduce(self.nabla)
            self.update_layers(lr, momentum, decay)

    def update_layers(self, lr: float, momentum: float, decay: float) -> None:
        """SGD on all parameters: weights with weight decay, biases without."""
        nw = self.n_weights
        self.k.sgd_update(self.params[:nw], self.nabla[:nw], self.velocity[:nw], lr, momentum, decay)
        self.k.sgd_update(self.params[nw:], self.nabla[nw:], self.velocity[nw:], lr, momentum, 0.0)

    # -- the layers path, recorded once as a CUDA graph and replayed ---------------------------------
    def _graph_batches(self, X: Any, Y: Any, batch_size: int, batches: int, stream: Any = 0) -> None:
        """``batches`` full batches of the layers path, each starting where the device-side
        offset points in the order buffer; the same launches every time, so recordable once."""
        v, nw, k = self.views(batch_size, batch_size), self.n_weights, self.k
        hyper_w, hyper_b = self._hyper
        for _ in range(batches):
            k.gather_rows_at(X, self._order, self._offset, v.A[0], stream)
            k.gather_rows_at(Y, self._order, self._offset, v.Y, stream)
            k.advance(self._offset, batch_size, stream)
            self.backprop_layers(v, 1.0 / batch_size, stream)
            k.sgd_update_from(self.params[:nw], self.nabla[:nw], self.velocity[:nw], hyper_w, stream)
            k.sgd_update_from(self.params[nw:], self.nabla[nw:], self.velocity[nw:], hyper_b, stream)

    def _warm_up(self, X: Any, Y: Any, batch_size: int) -> None:
        """The next batch's gather and backprop_layers, run directly before a recording: every
        kernel's module (and cuBLAS's, on the cublas-graph path) is then loaded outside the
        recording. No update runs; the work buffers and nabla it writes are overwritten by the
        first replay, and the cost it adds is taken back."""
        v, k = self.views(batch_size, batch_size), self.k
        cost = self.backend.empty(1, np.float64)
        self.backend.copy(self.cost, cost)
        k.gather_rows_at(X, self._order, self._offset, v.A[0])
        k.gather_rows_at(Y, self._order, self._offset, v.Y)
        self.backprop_layers(v, 1.0 / batch_size)
        self.backend.copy(cost, self.cost)

    def _graph_for(self, X: Any, Y: Any, batch_size: int, batches: int) -> Callable[[], None]:
        """A function that runs ``_graph_batches``: a recorded CUDA graph on a GPU (recorded again
        only for other X or Y memory, or another batch size); in Numba's simulator, which cannot
        record, the launches themselves."""
        buffers = self.buffers(batch_size)  # evaluate() may have swapped the work buffers since
        key = (_address(X), X.shape, _address(Y), Y.shape, batch_size, id(buffers))
        recorded = self._graphs.get(batches)
        if recorded is not None and recorded[0] == key:
            return recorded[1]
        self._warm_up(X, Y, batch_size)
        if self.backend.simulated:
            replay = lambda: self._graph_batches(X, Y, batch_size, batches)  # noqa: E731
        else:
            from cuda.core import Device, Stream

            device = Device()
            device.set_current()
            builder = device.create_stream().create_graph_builder()
            builder.begin_building("relaxed")  # Numba may load a module during the first launches
            self._graph_batches(X, Y, batch_size, batches, builder)
            builder.end_building()
            graph, null_stream = builder.complete(), Stream.from_handle(0)
            replay = lambda: graph.launch(null_stream)  # noqa: E731  # the stream Numba launches on
        self._graphs[batches] = (key, replay, X, Y, buffers)  # what the graph reads stays alive with it
        return replay

    def _train_epoch_graph(
        self, X: Any, Y: Any, order: np.ndarray, batch_size: int, lr: float, momentum: float, decay: float, progress
    ) -> None:
        """The epoch's full batches by replaying ``_graph_for``: GRAPH_BATCHES at a time, then the
        rest of them from a second recording; a last short batch launch by launch."""
        n = len(order)
        if self._order is None or self._order.shape[0] != n:
            self._order = self.backend.empty(n, np.int64)
            self._graphs.clear()
        self.backend.copy(order.astype(np.int64), self._order)
        self.backend.copy(np.zeros(1, np.int64), self._offset)
        self.backend.copy(np.array([lr, momentum, decay]), self._hyper[0])
        self.backend.copy(np.array([lr, momentum, 0.0]), self._hyper[1])
        full = n // batch_size
        replays, rest = divmod(full, GRAPH_BATCHES)
        if replays:
            replay = self._graph_for(X, Y, batch_size, GRAPH_BATCHES)
            for r in range(replays):
                replay()
                if progress and (r + 1) % max(1, replays // 50) == 0:
                    progress((r + 1) * GRAPH_BATCHES * batch_size, n)
        if rest:
            self._graph_for(X, Y, batch_size, rest)()
        self._layers_batches(X, Y, self._order, full * batch_size, n, batch_size, lr, momentum, decay)
        if progress:
            progress(n, n)

    # -- what the network asks for --------------------------------------------------------------
    def path_for(self, batch_size: int) -> str:
        """The path an epoch with this batch size takes (ValueError if "epoch" was asked for and
        cannot run it)."""
        if self.dist is not None:  # distributed: a per-step path, to all-reduce between steps
            return self.dist.step_path(self.requested_path)
        if self.path not in ("auto", "epoch"):
            return self.path
        fits = getattr(self.k, "fused_fits", None)
        fits = fits is None or fits(batch_size, self.sizes)
        if self.path == "epoch":
            if not fits:
                raise ValueError(
                    f"path='epoch' cannot train layers of {self.sizes} with batches of {batch_size} on "
                    f"{self.backend.name}: a batch plus twice a layer's width must be at most "
                    f"{self.k.FUSED_SHARED} (the fused kernel's shared buffer); use path='layers' or 'auto'"
                )
            return "epoch"
        return "epoch" if fits and batch_size * self.n_weights <= FUSED_WORK else "layers"

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
        if self.path in RECORDED:
            self._train_epoch_graph(X, Y, order, batch_size, lr, momentum, decay, progress)
            return
        n = len(order)
        order_d = self.backend.to_device(order.astype(np.int64))
        # Report progress a few dozen times an epoch, at batch boundaries.
        chunk = max(batch_size, -(-n // 50 // batch_size) * batch_size) if progress else n
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            if self.path_for(batch_size) == "epoch":
                A, Z, D, Yb = self.buffers(batch_size)
                layout, units, acts = self.tables
                self.k.train_batches(
                    X,
                    Y,
                    order_d,
                    start,
                    stop,
                    batch_size,
                    self.params,
                    self.nabla,
                    self.velocity,
                    layout,
                    units,
                    acts,
                    self.loss,
                    A,
                    Yb,
                    Z,
                    D,
                    lr,
                    momentum,
                    decay,
                    self.cost,
                )
            else:
                self._layers_batches(X, Y, order_d, start, stop, batch_size, lr, momentum, decay)
            if progress:
                progress(stop, n)

    def gradients(self, X: Any, Y: Any) -> None:
        """nabla = dC/dp for the cost averaged over all rows of X (one batch)."""
        n = X.shape[0]
        v = self.views(n, n)
        self.backend.copy(X, v.A[0])
        self.backend.copy(Y, v.Y)
        self.backprop_layers(v, 1.0 / n)

    def feedforward_rows(self, X: Any, s: int, e: int, cap: int) -> Views:
        """Forward pass of rows s:e of X (at most ``cap`` of them) through every layer."""
        v = self.views(cap, e - s)
        self.backend.copy(X[s:e], v.A[0])
        for l in range(self.L):
            self.forward(v.A[l], self.W[l], self.b[l], v.Z[l + 1], v.A[l + 1], self.acts_list[l])
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

    def predict(self, X: Any, cap: int = 1024) -> np.ndarray:
        """a^L for every row of X, as a numpy array."""
        n = X.shape[0]
        out = np.empty((n, self.sizes[-1]), self.dtype)
        cap = min(cap, n)
        for s in range(0, n, cap):
            e = min(s + cap, n)
            out[s:e] = self.backend.to_host(self.feedforward_rows(X, s, e, cap).A[self.L])
        return out

    # -- state ----------------------------------------------------------------------------------
    def reset_cost(self) -> None:
        self.backend.copy(np.zeros(1, np.float64), self.cost)

    def read_cost(self) -> float:
        return float(self.backend.to_host(self.cost)[0])

    def nonfinite_params(self) -> int:
        """How many parameters are NaN or inf (counted on the device)."""
        self.backend.copy(np.zeros(1, np.int64), self.count)
        self.k.count_nonfinite(self.params, self.count)
        return int(self.backend.to_host(self.count)[0])

    def save_snapshot(self) -> None:
        """Keep the parameters and the momentum state, to go back to if training diverges."""
        self.backend.copy(self.params, self._snapshot[0])
        self.backend.copy(self.velocity, self._snapshot[1])

    def restore_snapshot(self) -> None:
        self.backend.copy(self._snapshot[0], self.params)
        self.backend.copy(self._snapshot[1], self.velocity)

    def host_params(self) -> np.ndarray:
        return self.backend.to_host(self.params)

    def set_params(self, params: np.ndarray) -> None:
        self.backend.copy(np.ascontiguousarray(params, dtype=self.dtype), self.params)
