"""A network's numbers on one device: the parameters, the gradient, the momentum state and the
work buffers that hold every layer's z, a and delta for a batch. It launches nothing.

Parameters live in one flat array: all weights W^1..W^L, then all biases b^1..b^L. Row l-1 of
``host_layout`` holds (offset of W^l, offset of b^l, n_out, n_in), and ``host_row_offsets[l]`` =
sum(sizes[:l]): slot l of a work buffer (layer l's rows for a batch of up to ``cap`` rows) starts
at cap * host_row_offsets[l]; slot 0 of A is the input batch. The kernels take a network's arrays
as one ``NetArrays`` (``net``, built once) and the work buffers for ``cap`` rows as one
``WorkBuffers`` (``buffers(cap)``), named tuples of ``kernels.cpu``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import Backend

if TYPE_CHECKING:  # the backend's kernels module has them (importing them here would import Numba)
    from .kernels.cpu import NetArrays, WorkBuffers


@dataclass
class Views:
    """Per-layer views of the work buffers for a batch of m rows (slot 0 of A is the input)."""

    A: list[Any]
    Z: list[Any]
    D: list[Any]
    Y: Any


class Workspace:
    """The arrays one network trains in, on one backend."""

    def __init__(self, backend: Backend, sizes: list[int], acts: list[int], loss: int, params: np.ndarray) -> None:
        self.backend, self.k = backend, backend.kernels
        self.sizes, self.L = list(sizes), len(sizes) - 1
        self.dtype = params.dtype
        self.host_act_codes, self.loss = list(acts), loss  # the activation of layer l at l-1

        n_w = [sizes[l + 1] * sizes[l] for l in range(self.L)]
        w_off = np.concatenate([[0], np.cumsum(n_w)])
        b_off = w_off[-1] + np.concatenate([[0], np.cumsum(sizes[1:])])
        self.n_weights = int(w_off[-1])
        self.host_layout = np.array([[w_off[l], b_off[l], sizes[l + 1], sizes[l]] for l in range(self.L)], np.int64)
        self.host_row_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        self.params = backend.empty(params.shape, self.dtype)  # on the CPU: aligned to a cache line
        backend.copy(params, self.params)
        self.nabla = backend.zeros(params.shape, self.dtype)
        self.velocity = backend.zeros(params.shape, self.dtype)
        self.cost = backend.zeros(1, np.float64)  # summed over an epoch: float32 would lose digits
        self.count = backend.zeros(1, np.int64)
        self.W, self.b = self.layer_views(self.params)
        self.gW, self.gb = self.layer_views(self.nabla)
        self.net: NetArrays = self.k.NetArrays(
            self.params,
            self.nabla,
            self.velocity,
            backend.to_device(self.host_layout),
            backend.to_device(self.host_row_offsets),
            backend.to_device(np.asarray(acts, dtype=np.int64)),
            loss,
        )
        self._buffers: dict[int, WorkBuffers] = {}
        self._views: dict[tuple[int, int], Views] = {}
        self._chunks: list[tuple[Any, Any]] = []  # see chunk_buffers
        self._snapshot: tuple[Any, Any] | None = None  # the state before this epoch or step
        self.dist: Any = None  # a gpubp.distributed.Communicator during a distributed fit

    def layer_views(self, flat: Any) -> tuple[list[Any], list[Any]]:
        """Views (W^1..W^L, b^1..b^L) into a flat array (on the host or this device) laid out as the
        parameters."""
        ws, bs = [], []
        for w_off, b_off, n_out, n_in in self.host_layout:
            ws.append(flat[w_off : w_off + n_out * n_in].reshape((n_out, n_in)))
            bs.append(flat[b_off : b_off + n_out])
        return ws, bs

    # -- work buffers -----------------------------------------------------------------------------
    def buffers(self, cap: int) -> WorkBuffers:
        """The work buffers for batches of up to ``cap`` rows.

        Two sizes are kept, training's and evaluation's, so a fit with validation does not
        allocate (and the graph path does not record) again every epoch."""
        if cap not in self._buffers:
            if len(self._buffers) == 2:
                oldest = next(iter(self._buffers))
                del self._buffers[oldest]
                self._views = {key: v for key, v in self._views.items() if key[0] != oldest}
            n, e = cap * int(self.host_row_offsets[-1]), self.backend.empty
            A, Z, D = e(n, self.dtype), e(n, self.dtype), e(n, self.dtype)
            self._buffers[cap] = self.k.WorkBuffers(A, Z, D, e(cap * self.sizes[-1], self.dtype), self.cost, cap)
        return self._buffers[cap]

    def views(self, cap: int, m: int) -> Views:
        """Views of layer l's (m, sizes[l]) rows in the buffers for ``cap`` rows."""
        if (cap, m) not in self._views:
            work = self.buffers(cap)

            def slots(buf: Any) -> list[Any]:
                starts = self.host_row_offsets[:-1] * cap
                return [buf[u : u + m * n].reshape((m, n)) for u, n in zip(starts, self.sizes)]

            Y = work.Y[: m * self.sizes[-1]].reshape((m, self.sizes[-1]))
            self._views[(cap, m)] = Views(slots(work.A), slots(work.Z), slots(work.D), Y)
        return self._views[(cap, m)]

    def chunk_buffers(self, rows: int, X: Any, Y: Any) -> list[tuple[Any, Any]]:
        """Two pairs of (X, Y) buffers of ``rows`` rows each, shaped and typed as X's and Y's rows:
        one chunk of shuffled rows is gathered into one while the other trains (``gpubp.prefetch``).
        Kept until a call asks for other ones."""
        want = [((rows, X.shape[1]), X.dtype), ((rows, Y.shape[1]), Y.dtype)]
        if not self._chunks or [(a.shape, a.dtype) for a in self._chunks[0]] != want:
            self._chunks = [tuple(self.backend.empty(*w) for w in want) for _ in range(2)]
        return self._chunks

    # -- the cost, copies to and from the host, the training state ----------------------------------
    def reset_cost(self) -> None:
        self.backend.copy(np.zeros(1, np.float64), self.cost)

    def read_cost(self) -> float:
        return float(self.backend.to_host(self.cost)[0])

    def host(self, name: str) -> np.ndarray:
        """A numpy copy of "params", "nabla" or "velocity"."""
        return self.backend.to_host(getattr(self, name))

    def set_host(self, name: str, values: np.ndarray) -> None:
        """Set "params" or "velocity" from a flat host array."""
        self.backend.copy(np.ascontiguousarray(values, dtype=self.dtype), getattr(self, name))

    def split(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-layer copies (W^l, b^l) of a flat host array in the parameters' layout."""
        ws, bs = self.layer_views(flat)
        return [w.copy() for w in ws], [b.copy() for b in bs]

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
