"""Which CUDA kernels the library launches, with which argument types: recorded from real fits in
Numba's CUDA simulator, so the PTX test compiles what actually runs and nothing kept by hand."""

import numpy as np

import gpubp
from gpubp.kernels import cuda as kc
from gpubp.kernels.cuda import elementwise

ELEMENT_TYPES = ("float32", "float64", "int64")


def _spec(arg):
    """A launch argument's Numba type, as plain data: ("array", dtype, ndim, layout), a scalar's
    name, or ("namedtuple", module, class name, (the fields' specs)) for the kernels' named tuples."""
    if isinstance(arg, tuple) and hasattr(arg, "_fields"):
        return ("namedtuple", type(arg).__module__, type(arg).__qualname__, tuple(_spec(a) for a in arg))
    if hasattr(arg, "dtype") and hasattr(arg, "ndim"):
        return ("array", str(arg.dtype), int(arg.ndim), "C" if arg.is_c_contiguous() else "A")
    if isinstance(arg, (bool, np.bool_)):
        raise TypeError("a bool launch argument: give kernels int codes")
    if isinstance(arg, (int, np.integer)):
        return ("int64",)
    if isinstance(arg, (float, np.floating)):
        return ("float64",)
    raise TypeError(f"unexpected launch argument {arg!r}")


def _owner(kernel):
    """(element type, name) of a kernel dispatcher among the families' builds."""
    import numba

    for t in ELEMENT_TYPES:
        T = getattr(numba, t)
        builds = kc.builds(T) if t != "int64" else elementwise.build(T)
        for name, k in vars(builds).items():
            if k is kernel:
                return t, name
    raise LookupError(f"{kernel} is no kernel of gpubp.kernels.cuda")


def record(monkeypatch) -> set[tuple]:
    """Train small networks through every way an epoch can run, in both dtypes, and return every
    launch as (element type, kernel name, argument specs)."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    seen = set()
    call = FakeCUDAKernel.__call__

    def spy(kernel, *args):
        if not kernel._device:
            seen.add((*_owner(kernel), tuple(_spec(a) for a in args)))
        return call(kernel, *args)

    monkeypatch.setattr(FakeCUDAKernel, "__call__", spy)
    rng = np.random.default_rng(0)
    tuning = gpubp.Tuning(fused_threads=37, graph_batches=2)
    for dtype in ("float32", "float64"):
        X, labels = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
        for path in ("layers", "epoch", "graph", "cublas", "cublas-graph"):
            softmax = dict(activation="tanh", output_activation="softmax", loss="log_likelihood")
            net = gpubp.Network([6, 5, 3], **softmax, dtype=dtype, device="cuda", path=path, tuning=tuning)
            net.fit(X, labels, epochs=1, batch_size=4, validation=(X[:3], labels[:3]))
        # outputs of 64 x 64 take the register-blocked products
        wide = gpubp.Network([64, 64, 1], dtype=dtype, device="cuda", path="layers")
        wide.fit(rng.standard_normal((64, 64)), rng.uniform(0, 1, 64), epochs=1, batch_size=64)
    monkeypatch.undo()
    return seen
