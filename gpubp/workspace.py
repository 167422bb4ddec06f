"""A network's numbers on one device: the parameters, the gradient, the momentum state and the
work buffers that hold every layer's z, a and delta for a batch. It launches nothing.

Parameters live in one flat array: all weights W^1..W^L, then all biases b^1..b^L. ``layout`` row
l holds (offset of W^l, offset of b^l, n_out, n_in) and ``units[l]`` = sum(sizes[:l]); the kernels
read both (``kernels.cpu.weights`` and ``slot``). Work buffers hold slot l = the rows of layer l
for a batch of up to ``cap`` rows; slot 0 of A is the input batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend


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
        self.acts_list, self.loss = list(acts), loss

        n_w = [sizes[l + 1] * sizes[l] for l in range(self.L)]
        w_off = np.concatenate([[0], np.cumsum(n_w)])
        b_off = w_off[-1] + np.concatenate([[0], np.cumsum(sizes[1:])])
        self.n_weights = int(w_off[-1])
        self.host_layout = np.array([[w_off[l], b_off[l], sizes[l + 1], sizes[l]] for l in range(self.L)], np.int64)
        self.host_units = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.layout, self.units = backend.to_device(self.host_layout), backend.to_device(self.host_units)
        self.acts = backend.to_device(np.asarray(acts, dtype=np.int64))

        self.params = backend.empty(params.shape, self.dtype)  # on the CPU: aligned to a cache line
        backend.copy(params, self.params)
        self.nabla = backend.zeros(params.shape, self.dtype)
        self.velocity = backend.zeros(params.shape, self.dtype)
        self.cost = backend.zeros(1, np.float64)  # summed over an epoch: float32 would lose digits
        self.count = backend.zeros(1, np.int64)
        self.W, self.b = self._layer_views(self.params)
        self.gW, self.gb = self._layer_views(self.nabla)
        self._buffers: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._views: dict[tuple[int, int], Views] = {}
        self._snapshot: tuple[Any, Any] | None = None  # the state before this epoch or step
        self.dist: Any = None  # a gpubp.distributed.Communicator during a distributed fit

    def _layer_views(self, flat: Any) -> tuple[list[Any], list[Any]]:
        ws, bs = [], []
        for w_off, b_off, n_out, n_in in self.host_layout:
            ws.append(flat[w_off : w_off + n_out * n_in].reshape((n_out, n_in)))
            bs.append(flat[b_off : b_off + n_out])
        return ws, bs

    # -- work buffers -----------------------------------------------------------------------------
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
        ws, bs = self._layer_views(flat)
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
