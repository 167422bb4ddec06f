"""The engines: one mini-batch's kernels in the order of backpropagation, on one device.

For each mini-batch (Nielsen's ``update_mini_batch``):
  1. gather the batch's rows of X and Y (the shuffle) into the work buffers;
  2. forward, l = 1..L:      z^l = W^l a^(l-1) + b^l,  a^l = f(z^l);
  3. BP1:                    delta^L = grad_a C ⊙ f'(z^L);
  4. backward, l = L..1:     BP2 delta^(l-1) from W^l, BP3/BP4 the gradients of layer l;
  5. update every layer:     W <- W - (eta/m) sum_x delta (a^(l-1))^T,  b <- b - (eta/m) sum_x delta.
BP2 always reads the W^l that made the forward pass.

Each engine writes that order once: ``kernels.cpu.step`` (one @njit call per batch, the CPU),
``CudaEngine.backprop`` below (one launch per operation, CUDA) and ``kernels.cuda.fused`` (a
whole epoch in one CUDA launch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cores, prefetch
from .workspace import Views, Workspace


class Engine:
    """Runs one step's kernels, and a whole epoch's, on a workspace's device."""

    epoch_options: dict[str, int] = {}  # launch settings of the whole-epoch call

    def __init__(self, w: Workspace) -> None:
        self.w, self.k = w, w.backend.kernels

    def update(self, lr: float, momentum: float, decay: float, velocity: Any = None) -> None:
        """SGD on all parameters from nabla: weights with weight decay, biases without."""
        w = self.w
        nw, velocity = w.n_weights, w.velocity if velocity is None else velocity
        self.k.sgd_update(w.params[:nw], w.nabla[:nw], velocity[:nw], lr, momentum, decay)
        self.k.sgd_update(w.params[nw:], w.nabla[nw:], velocity[nw:], lr, momentum, 0.0)

    def sgd_step(self, v: Views, cap: int, m: int, lr: float) -> None:
        """One plain SGD step on the batch in the work buffers: backprop, then v = -lr nabla goes
        where nabla was, so the momentum state is neither read nor written."""
        self.backprop(v, cap, m, 1.0 / m)
        self.update(lr, 0.0, 0.0, velocity=self.w.nabla)

    def steps(self, X: Any, Y: Any, order_d: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        """Mini-batch SGD over rows order_d[start:stop] of X, one step call per batch.

        Distributed, each rank takes its share of every batch's rows and one all-reduce sums the
        ranks' gradients, each scaled by 1/(the whole batch's rows), before the same update."""
        w, dist = self.w, self.w.dist
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            scale = 1.0 / (e - s)  # the mean over the whole batch, on every rank
            if dist is not None:
                s, e = dist.take(s, e)
            if e > s:
                v = w.views(batch_size, e - s)
                self.k.gather_rows(X, order_d[s:e], v.A[0])
                self.k.gather_rows(Y, order_d[s:e], v.Y)
                self.backprop(v, batch_size, e - s, scale)
            else:  # no rows on this rank in a short last batch: it adds zeros to the sum
                dist.zero(w.nabla)
            if dist is not None:
                dist.allreduce(w.nabla)
            self.update(*hyper)

    def whole_epoch(self, X: Any, Y: Any, order: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        """Mini-batch SGD over rows order[start:stop] in one call (``train_batches``)."""
        w = self.w
        self.k.train_batches(X, Y, order, start, stop, w.net, w.buffers(batch_size), *hyper, **self.epoch_options)

    def forward(self, v: Views, cap: int, m: int, stream: Any = 0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def backprop(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> None:  # pragma: no cover
        raise NotImplementedError


class CpuEngine(Engine):
    """The CPU's order of backpropagation is ``kernels.cpu.step``: one @njit call per batch."""

    def __init__(self, w: Workspace) -> None:
        super().__init__(w)
        self._feedforward: Any = None  # kernels.cpu.bind's feedforward and step, bound on first use
        self._step: Any = None

    def forward(self, v: Views, cap: int, m: int, stream: Any = 0) -> None:
        w = self.w
        if self._feedforward is None:
            self._feedforward = self.k.bind(self.k.feedforward, w.net, w.buffers(cap), 0)
        self._feedforward(w.net, w.buffers(cap), m)

    def backprop(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> None:
        """nabla = scale sum_x dC_x/dp over the batch of m rows in the work buffers; cost += sum_x C_x."""
        w = self.w
        if self._step is None:
            self._step = self.k.bind(self.k.step, w.net, w.buffers(cap), 0, 0.0, 0.0, 0.0, 0.0, False, False)
        self._step(w.net, w.buffers(cap), m, scale, 0.0, 0.0, 0.0, False, False)

    def sgd_step(self, v: Views, cap: int, m: int, lr: float) -> None:
        """The step a batch of ``fit`` takes (``kernels.cpu.step``, plain SGD), with nabla standing
        in for the velocity, so the momentum state is neither read nor written."""
        w, net = self.w, self.w.net._replace(velocity=self.w.nabla)
        with cores.blas_threads_for(w.sizes, m):
            halves, units = cores.in_halves(m), cores.by_units(w, m)
            if not (halves or units):
                self.k.step(net, w.buffers(cap), m, 1.0 / m, lr, 0.0, 0.0, True, False)
                return
            hyper, X, Y, rows = (float(lr), 0.0, 0.0), v.A[0].copy(), v.Y.copy(), np.arange(m)
            if halves:  # as fit takes such a batch: in two halves (kernels.cpu.halves_step)
                self.k.halves_step(X, Y, rows, 0, m, net, w.buffers(cap), cores.halves(w, cap), hyper, False, False)
            else:  # or split by units (kernels.cpu.units_step)
                self.k.units_step(X, Y, rows, 0, m, net, w.buffers(cap), cores.units(w), hyper, False, False)

    def steps(self, X: Any, Y: Any, order_d: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        with cores.blas_threads_for(self.w.sizes, batch_size):
            super().steps(X, Y, order_d, start, stop, batch_size, hyper)

    def whole_epoch(self, X: Any, Y: Any, order: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        """Small products on this thread (BLAS on one thread: ``gpubp.cores``) and, with a second
        core, the gather of the shuffled rows on a helper thread (``gpubp.prefetch``); large
        products on the BLAS's threads."""
        small = cores.small_products(self.w.sizes, batch_size)
        two = small and cores.threads() >= 2  # asked before the limit below makes the BLAS's 1 the answer
        gather_aside = two and prefetch.worth_it(stop - start, batch_size)
        with cores.blas_threads_for(self.w.sizes, batch_size):
            if cores.in_halves(batch_size):
                cores.whole_epoch_in_halves(self.w, X, Y, order, start, stop, batch_size, hyper, two)
            elif cores.by_units(self.w, batch_size):
                cores.whole_epoch_by_units(self.w, X, Y, order, start, stop, batch_size, hyper, two)
            elif gather_aside:
                prefetch.whole_epoch(self.w, X, Y, order, start, stop, batch_size, hyper)
            else:
                super().whole_epoch(X, Y, order, start, stop, batch_size, hyper)


class CudaEngine(Engine):
    """CUDA's order of backpropagation, one kernel launch per operation and layer: per mini-batch
    of L layers with the Numba products, 3 L + 2 launches (one gather of the X and Y rows, a
    forward per layer, BP1, BP4 with BP3 in the same launch per layer, BP2 per hidden layer, one
    update; a softmax output one more); with cuBLAS, as many Numba launches and 3 L - 1 GEMMs.

    A step's launches are planned once (``plan``: each kernel configured, its arguments in a
    tuple, for one batch's views and scale) and a step calls them in order: no variant chosen,
    grid sized or argument tuple built per step, but the gather's start row."""

    PLANS = 16  # plans kept; the oldest goes first (each holds views of the work buffers)

    def __init__(self, w: Workspace, products: str, epoch_options: dict[str, int]) -> None:
        super().__init__(w)
        k = self.k
        if products == "cublas":
            self.products = (k.forward_cublas, k.hidden_error_cublas, k.weight_gradient_cublas)
        else:
            self.products = (k.forward, k.hidden_error, k.weight_gradient)
        self.bias_in_bp4 = products != "cublas"  # the Numba BP4 kernels also sum BP3
        self.epoch_options = epoch_options
        self._plans: dict[tuple, tuple] = {}  # (what, cap, m, scale) -> (views, launches), stream 0

    def update(self, lr: float, momentum: float, decay: float, velocity: Any = None) -> None:
        """SGD on all parameters from nabla in one launch: weights with weight decay, biases without."""
        w = self.w
        velocity = w.velocity if velocity is None else velocity
        self.k.sgd_update_all(w.params, w.nabla, velocity, lr, momentum, decay, w.n_weights)

    def steps(self, X: Any, Y: Any, order_d: Any, start: int, stop: int, batch_size: int, hyper: tuple) -> None:
        """As ``Engine.steps``, with each batch's rows of X and Y gathered in one launch that reads
        the order from an offset (no slice of it per step); a distributed fit as ``Engine.steps``.
        The launches are planned before the first step: per step, the gather's call with this
        batch's start row, then the backprop and update launches as planned."""
        if self.w.dist is not None:
            super().steps(X, Y, order_d, start, stop, batch_size, hyper)
            return
        w, k = self.w, self.k
        update = k.sgd_update_all.plan(w.params, w.nabla, w.velocity, *hyper, w.n_weights)
        planned: dict[int, tuple] = {}  # rows of the batch (all but a last short one: batch_size) -> launches
        for s in range(start, stop, batch_size):
            m = min(batch_size, stop - s)
            if m not in planned:
                v = w.views(batch_size, m)
                [(gather, _)] = k.gather_batch.plan(X, Y, order_d, s, v.A[0], v.Y)
                planned[m] = (gather, v.A[0], v.Y, self.plan(v, batch_size, m, 1.0 / m) + update)
            gather, A0, Yb, launches = planned[m]
            gather(X, Y, order_d, s, A0, Yb)
            for call, args in launches:
                call(*args)

    def forward(self, v: Views, cap: int, m: int, stream: Any = 0) -> None:
        """z^l = W^l a^(l-1) + b^l, a^l = f(z^l) for l = 1..L."""
        for call, args in self._planned("forward", v, cap, m, 0.0, stream, self._forward):
            call(*args)

    def backprop(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> None:
        """Forward, BP1, then down the layers BP4/BP3 and BP2: nabla = scale sum_x dC_x/dp.

        ``stream``: where to launch, e.g. a CUDA graph being recorded."""
        for call, args in self.plan(v, cap, m, scale, stream):
            call(*args)

    def plan(self, v: Views, cap: int, m: int, scale: float, stream: Any = 0) -> list:
        """``backprop``'s launches for the batch in ``v``, as (configured kernel, arguments): planned
        once for these views and scale (on the default stream)."""
        return self._planned("backprop", v, cap, m, scale, stream, self._backprop)

    def _planned(self, what: str, v: Views, cap: int, m: int, scale: float, stream: Any, make: Any) -> list:
        """The plan ``make`` builds, kept for the default stream (a recording, on its own stream,
        plans its batches once itself; keeping it would keep the recording's stream alive)."""
        if not (isinstance(stream, int) and stream == 0):
            return make(v, scale, stream)
        key = (what, cap, m, scale)
        found = self._plans.get(key)
        if found is None or found[0] is not v:  # other work buffers since
            if len(self._plans) >= self.PLANS:
                del self._plans[next(iter(self._plans))]
            found = self._plans[key] = (v, make(v, scale, stream))
        return found[1]

    def _forward(self, v: Views, scale: float, stream: Any) -> list:
        """Forward: z^l = W^l a^(l-1) + b^l, a^l = f(z^l) for l = 1..L, each layer's launches."""
        w, forward = self.w, self.products[0]
        out = []
        for l in range(w.L):
            out += forward.plan(v.A[l], w.W[l], w.b[l], v.Z[l + 1], v.A[l + 1], w.host_act_codes[l], stream)
        return out

    def _backprop(self, v: Views, scale: float, stream: Any) -> list:
        """Forward, BP1, then down the layers BP4 with BP3 and BP2."""
        w, k, L, acts = self.w, self.k, self.w.L, self.w.host_act_codes
        _, hidden_error, weight_gradient = self.products
        out = self._forward(v, scale, stream)
        out += k.output_error.plan(v.Z[L], v.A[L], v.Y, v.D[L], w.loss, acts[L - 1], w.cost, stream)  # BP1
        for l in reversed(range(L)):
            if self.bias_in_bp4:  # BP4 and BP3 in one launch
                out += weight_gradient.plan(v.D[l + 1], v.A[l], scale, w.gW[l], stream, nabla_b=w.gb[l])
            else:
                out += weight_gradient.plan(v.D[l + 1], v.A[l], scale, w.gW[l], stream)  # BP4
                out += k.bias_gradient.plan(v.D[l + 1], scale, w.gb[l], stream)  # BP3
            if l > 0:  # BP2
                out += hidden_error.plan(v.D[l + 1], w.W[l], v.Z[l], v.A[l], v.D[l], acts[l - 1], stream)
        return out
