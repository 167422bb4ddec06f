"""@cuda.jit kernels and their host-side launchers: the contracts listed in ``gpubp.kernels``.

Layout. Rows are samples, as on the CPU: A^(l-1) is (m, n_in), W^l is (n_out, n_in), b^l is
(n_out,), Z^l, A^l and Delta^l are (m, n_out). Every array is a C-contiguous numba device array
(often a view of one flat device buffer) and all arrays of one call share one dtype, float32 or
float64. Launchers have the names and argument order of ``kernels.cpu`` plus a keyword
``stream=0``; they pick the kernel built for the arrays' dtype, size the grid themselves and
launch asynchronously. They never validate (the driver checks shapes and dtypes once) and never
allocate. Each is written as its launch plan (``launches.launcher``): ``launcher.plan(...)``
returns its (configured kernel, arguments) pairs without launching, so a fit builds a step's
launches once and then only calls them (``gpubp.engines.CudaEngine``). Shared arrays need their
dtype at compile time, so each family builds its kernels per element type in a cached ``build(T)``.

One module per family of kernels:

| module         | kernels                                                                 |
|----------------|-------------------------------------------------------------------------|
| ``products``   | forward (Z = A_prev W^T + b, A = f(Z)), BP2, BP4: tiled and register-blocked |
| ``elementwise``| BP1, BP3, softmax, SGD, the cuBLAS epilogues, gather and counts          |
| ``fused``      | a whole epoch in one launch (``train_batches``)                          |
| ``cublas``     | the products by cuBLAS through CuPy, then an elementwise epilogue        |
| ``launches``   | launch plans, and launches prepared once on a GPU (``Prepared``)         |
"""

from types import SimpleNamespace

# the kernels' two named tuples (a network's arrays, the work buffers), and the launchers, under
# the names of kernels.cpu
from ..cpu import NetArrays, WorkBuffers  # noqa: F401
from . import cublas, elementwise, fused, launches, products  # noqa: F401
from .cublas import check_cublas, forward_cublas, hidden_error_cublas, stream_pointer, weight_gradient_cublas  # noqa: F401
from .elementwise import (  # noqa: F401
    advance,
    bias_gradient,
    count_correct,
    count_nonfinite,
    gather_batch,
    gather_batch_at,
    gather_rows,
    output_error,
    sgd_update,
    sgd_update_all,
    sgd_update_all_from,
)
from .fused import train_batches  # noqa: F401
from .launches import Launch, run  # noqa: F401
from .products import forward, hidden_error, weight_gradient  # noqa: F401


def builds(T) -> SimpleNamespace:
    """Every @cuda.jit kernel of every family for element type ``T``, by name (for compiling each
    to PTX without a GPU; which signatures to compile is recorded from real launches by the tests)."""
    merged = {}
    for family in (products.build(T), elementwise.build(T), fused.build(T, fused.SHARED)):
        merged.update({name: k for name, k in vars(family).items() if _kernel(k)})
    return SimpleNamespace(**merged)


def _kernel(k) -> bool:
    """Whether a family's entry is a kernel (not a device function such as BP3's column sums, nor
    a namespace): numba-cuda's dispatchers say so in their options, the simulator's in ``_device``."""
    if isinstance(k, SimpleNamespace):
        return False
    return not (getattr(k, "_device", False) or getattr(k, "targetoptions", {}).get("device", False))
