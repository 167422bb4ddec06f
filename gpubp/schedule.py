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

# What the whole-epoch kernel can launch with on an sm_90 GPU: its registers per thread as ptxas
# assigns them (tests/test_cuda_kernels.py's PTX test checks that the compiled kernel uses no more),
# an SM's register file, and the 48 KB of static shared memory a block may declare.
FUSED_REGISTERS = {"float32": 72, "float64": 80}
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers are given to a warp in units of 256
STATIC_SHARED_BYTES = 48 * 1024
MAX_BLOCK_THREADS = 1024


def fused_limits(dtype: str) -> tuple[int, int]:
    """(most threads, most shared elements) the whole-epoch kernel can launch with, in ``dtype``."""
    warp_registers = -(-FUSED_REGISTERS[dtype] * 32 // REGISTER_UNIT) * REGISTER_UNIT
    threads = min(MAX_BLOCK_THREADS, REGISTERS_PER_SM // warp_registers * 32)
    return threads, STATIC_SHARED_BYTES // np.dtype(dtype).itemsize


def check_tuning(tuning: Tuning, dtype: str) -> None:
    """ValueError, naming the value and its limit, if the whole-epoch kernel could never launch with
    these ``tuning`` values in ``dtype`` (every launch would fail with "too many resources requested",
    or ptxas would refuse the shared buffer)."""
    threads, shared = fused_limits(dtype)
    if tuning.fused_threads > threads:
        raise ValueError(
            f"Tuning(fused_threads={tuning.fused_threads}) is too many for the whole-epoch kernel in {dtype}: "
            f"at {FUSED_REGISTERS[dtype]} registers a thread, a block of at most {threads} threads fits an "
            f"SM's {REGISTERS_PER_SM} registers"
        )
    if tuning.fused_shared > shared:
        raise ValueError(
            f"Tuning(fused_shared={tuning.fused_shared}) is too large for the whole-epoch kernel in {dtype}: "
            f"its shared buffer holds at most {shared} elements (48 KB of static shared memory)"
        )


@dataclass(frozen=True)
class Tuning:
    """Numbers that change how fast an epoch runs, never what it computes (CUDA only; first
    guesses, not yet measured on a GPU). Checked at construction against what the whole-epoch
    kernel can launch with (in float32; a network in float64 checks again with its own limits)."""

    fused_threads: int = 512  # threads of the whole-epoch kernel's one block
    fused_shared: int = 4096  # elements of its shared buffer (batch + 2 x width of a layer must fit)
    fused_work: int = 1 << 24  # "auto" never runs an epoch in one launch above this batch_size x weights
    graph_batches: int = 16  # mini-batches per recorded CUDA graph

    def __post_init__(self) -> None:
        for name in ("fused_threads", "fused_shared", "fused_work", "graph_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Tuning({name}={value!r}) must be a positive integer")
        check_tuning(self, "float32")


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


# ---- the cost model "auto" decides by (CUDA) ---------------------------------------------------
# Every constant is an ASSUMPTION until a GPU measures it (benchmarks/gpu_session.sh does); the
# H100 SXM figures are NVIDIA's, the others are read from numba-cuda's launch path and the static
# kernel report. FUSED_INSTRUCTIONS_PER_FFMA is the whole-epoch kernel's issue rate, to be fed from
# the static report (python -m benchmarks --only static) as its product loops change.
# host time of one planned Numba kernel launch: a ``Prepared`` launch, ~4.5 us of Python here
# (benchmarks.dispatch, the driver stubbed; numba-cuda's dispatcher took ~45-80) + cuda.core's
# packing and cuLaunchKernel (~3.5 us, assumption)
LAUNCH_HOST_S = 8e-6
CUBLAS_HOST_S = 30e-6  # host time of one GEMM through CuPy (array wrappers, handle, stream)
GRAPH_REPLAY_HOST_S = 15e-6  # host time of one graph launch
GRAPH_NODE_S = 1.0e-6  # device time between two kernel nodes of a replayed graph
KERNEL_MIN_S = 2.5e-6  # device time of the smallest kernel: start, one wave, drain
MULTIPROCESSORS = 132  # H100 SXM
CLOCK_HZ = 1.755e9  # H100 SXM boost clock under load
FFMA_PER_SM_CYCLE = {"float32": 128, "float64": 64}
NUMBA_GEMM_EFFICIENCY = 0.10  # tiled/register-blocked Numba products: fraction of an SM's FFMA peak
CUBLAS_GEMM_EFFICIENCY = 0.50  # cuBLAS at these small shapes
# SASS instructions per multiply-add of the whole-epoch kernel's product loops, float32, as the static
# report (benchmarks.static, "per_ffma_overall") measures it: 15.2 at issue 20, 7.7 at 879682f, 4.2 now
FUSED_INSTRUCTIONS_PER_FFMA = 4.2
FUSED_ISSUE_PER_CYCLE = 1.0  # warp instructions the one block issues per cycle (16 warps, a sync per stage)
FUSED_ELEMENTWISE_INSTRUCTIONS = 8  # per element of its gather, BP1 and update loops


def _ffma(sizes: list[int], batch: int) -> list[tuple[int, int, int]]:
    """(multiply-adds, output rows, output columns) of each product of one step: the forward of each
    layer, BP4 of each layer, BP2 of every layer but the first."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    out = [(batch * a * b, batch, b) for a, b in layers] + [(batch * a * b, b, a) for a, b in layers]
    return out + [(batch * a * b, batch, a) for a, b in layers[1:]]


def _gemm_s(ffma: int, rows: int, cols: int, dtype: str, efficiency: float, tile: int) -> float:
    """Device seconds of one product: spread over the blocks its output fills, at most one per SM."""
    blocks = min(MULTIPROCESSORS, -(-rows // tile) * -(-cols // tile))
    return KERNEL_MIN_S + ffma / (blocks * FFMA_PER_SM_CYCLE[dtype] * CLOCK_HZ * efficiency)


def step_launches(sizes: list[int], products: str = "numba", softmax: bool = False) -> dict[str, int]:
    """Launches of one mini-batch step on the per-operation path: {"kernels": Numba launches,
    "gemms": cuBLAS calls}, as ``CudaEngine`` and the update make them."""
    L = len(sizes) - 1
    # one gather of X and Y, a forward per layer, BP1, BP4 with BP3 per layer, BP2 per hidden
    # layer, one update; with cuBLAS the same Numba launches (bias+f, BP3, f') around 3 L - 1 GEMMs
    numba = 1 + L + int(softmax) + 1 + L + (L - 1) + 1
    return {"kernels": numba, "gemms": 0 if products == "numba" else 3 * L - 1}


def predict_epoch(how: Execution, sizes: list[int], batch_size: int, rows: int, dtype: str = "float32") -> float:
    """Predicted seconds of one epoch of ``rows`` rows on an H100 (the constants above) under ``how``.

    Per-operation steps: the host's launch time and the device's kernel time overlap, so a step
    takes the larger. Replayed graphs: the device time plus a node gap per kernel, the host's share
    of a replay negligible. The whole epoch: one block issuing FUSED_INSTRUCTIONS_PER_FFMA per
    multiply-add at FUSED_ISSUE_PER_CYCLE."""
    steps = -(-rows // batch_size)
    products = _ffma(sizes, batch_size)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if how.whole_epoch:
        ffma = sum(p[0] for p in products)
        elements = batch_size * (sizes[0] + sizes[-1]) + n_params
        instructions = (ffma * FUSED_INSTRUCTIONS_PER_FFMA + elements * FUSED_ELEMENTWISE_INSTRUCTIONS) / 32
        return LAUNCH_HOST_S + steps * instructions / (FUSED_ISSUE_PER_CYCLE * CLOCK_HZ)
    counts = step_launches(sizes, how.products)
    cublas = how.products == "cublas"
    efficiency, tile = (CUBLAS_GEMM_EFFICIENCY, 64) if cublas else (NUMBA_GEMM_EFFICIENCY, 16)
    device = sum(_gemm_s(*p, dtype, efficiency, tile) for p in products)
    device += (counts["kernels"] - (0 if cublas else len(products))) * KERNEL_MIN_S  # the elementwise ones
    n = counts["kernels"] + counts["gemms"]
    if how.replay:
        return steps * (device + n * GRAPH_NODE_S) + steps / 16 * GRAPH_REPLAY_HOST_S
    host = counts["kernels"] * LAUNCH_HOST_S + counts["gemms"] * CUBLAS_HOST_S
    return steps * max(host, device)


def predict_epoch_seconds(cfg: Any, rows: int = 60_000, cupy: bool = True) -> dict[str, Any]:
    """The cost model at one configuration of the benchmarks (``cfg.sizes``, ``cfg.batch_size``):
    predicted seconds of an epoch of ``rows`` rows on an H100 for every alias of ``PATHS``, in float32,
    and the one "auto" takes (with CuPy installed, or not). The static report calls this."""
    sizes, batch = list(cfg.sizes), cfg.batch_size
    seconds = {name: predict_epoch(how, sizes, batch, rows) for name, how in PATHS.items()}
    fits = max(sizes[1:]) * 2 + batch <= Tuning().fused_shared
    if not fits or batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) > Tuning().fused_work:
        seconds["epoch"] = None  # auto would not weigh it
    allowed = [name for name, t in seconds.items() if t is not None and (cupy or name in ("layers", "epoch"))]
    return {"seconds": seconds, "auto": min(allowed, key=lambda name: seconds[name])}


def candidates(backend: Backend, sizes: list[int], batch_size: int, tuning: Tuning) -> list[Execution]:
    """The Executions "auto" weighs on CUDA: one launch per operation always; the whole epoch when
    the fused kernel fits (and batch x weights is within ``tuning.fused_work``); recorded graphs and
    cuBLAS when CuPy is installed (its GEMMs, and the stream handling of a replay, are then there)."""
    out = [Execution()]
    n_weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    fits = backend.kernels.fused.fits(batch_size, sizes, tuning.fused_shared)
    if fits and batch_size * n_weights <= tuning.fused_work:
        out.append(Execution(whole_epoch=True))
    if cupy_installed():
        out += [Execution(replay=True), Execution(products="cublas"), Execution(products="cublas", replay=True)]
    return out


def cupy_installed() -> bool:
    """Whether CuPy can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def auto(backend: Backend, sizes: list[int], batch_size: int, tuning: Tuning, dtype: str = "float32") -> Execution:
    """What "auto" runs: the whole epoch in one call on the CPU; on CUDA the candidate the cost
    model predicts fastest for an epoch of 60,000 rows (first of equals: the list's order)."""
    if backend.name == "cpu":
        return Execution(whole_epoch=True)
    options = candidates(backend, sizes, batch_size, tuning)
    return min(options, key=lambda how: predict_epoch(how, sizes, batch_size, 60_000, dtype))


def choose(
    path: str | Execution,
    backend: Backend,
    sizes: list[int],
    batch_size: int,
    tuning: Tuning,
    per_step: bool = False,
    dtype: str = "float32",
) -> Execution:
    """The one place that decides how an epoch runs (ValueError if a forced path cannot).

    "auto": the whole epoch in one call on the CPU; on CUDA the Execution ``predict_epoch`` (the
    written cost model) says is fastest among ``candidates``. ``per_step`` (a distributed fit,
    which all-reduces the gradients between two steps): one call per step."""
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
    if path == "auto":
        return auto(backend, sizes, batch_size, tuning, dtype)
    fits = backend.name == "cpu" or backend.kernels.fused.fits(batch_size, sizes, tuning.fused_shared)
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
        if backend.name == "cuda":
            check_tuning(self.tuning, str(self.dtype))
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
        dist = self.dist is not None
        return choose(self.path, self.backend, self.sizes, batch_size, self.tuning, dist, str(self.dtype))

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
