"""Activation functions f and their derivatives f', written once for both targets.

Each function here is plain Python over scalars (``softmax_row`` over a row, built with its index
type). ``compile_for("cpu")`` turns it into an ``@njit`` function and ``compile_for("cuda")`` into
a ``@cuda.jit(device=True)`` function, so the CPU and CUDA kernels evaluate exactly the same
formulas.

An activation is named by a small integer code so a kernel can take it as an argument.
Softmax is a row operation (it needs the whole row of ``z``) and is handled by the kernels
themselves; for it ``f`` and ``f'`` here are never called.
"""

import functools
import math

SIGMOID = 0
TANH = 1
RELU = 2
LINEAR = 3
SOFTMAX = 4

CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "linear": LINEAR, "softmax": SOFTMAX}
NAMES = {code: name for name, code in CODES.items()}


def f(z, act, one):
    """a = f(z) for one element; ``one`` is 1 in the arrays' precision, so float32 stays float32."""
    if act == SIGMOID:  # sigma(z) = 1 / (1 + e^-z); for z << 0, e^-z = inf gives exactly 0
        return one / (one + math.exp(-z))
    if act == TANH:
        return math.tanh(z)
    if act == RELU:
        return one - one if z <= 0 else z  # NaN stays NaN
    return z  # LINEAR


def fprime(z, a, act, one):
    """f'(z) for one element, from z and a = f(z) (whichever is cheaper)."""
    if act == SIGMOID:
        return a * (one - a)  # sigma' = sigma (1 - sigma)
    if act == TANH:
        return one - a * a
    if act == RELU:
        return one if z > 0 else one - one
    return one  # LINEAR


def _make_softmax_row(index):
    """``softmax_row`` with its indices of Numba type ``index`` (numba.uint64, from ``compile_for``:
    this module imports no Numba until a target is compiled).

    Unsigned indices counted by ``while`` loops, as in ``kernels/cuda/fused.py``: Numba wraps a
    negative signed index around (a compare and a select on every access) and a ``range`` loop
    carries its iterator's count and a select per trip; with an unsigned index each access is an
    address and a load, and LLVM unrolls the loops (sm_90: the exp loop's SASS 4.0 instructions
    per FFMA instead of 9.9). The same operations in the same order as with ``range``:
    results are bitwise the same."""

    def softmax_row(z, a):
        """a_j = e^(z_j) / sum_k e^(z_k) over one row, shifted by max(z) so e^x never overflows."""
        n, one = index(z.shape[0]), index(1)
        zmax = z[0]
        j = one
        while j < n:
            zj = z[j]
            if zj > zmax:
                zmax = zj
            j += one
        total = z.dtype.type(0)  # in the arrays' precision: float32 stays float32 on the GPU
        j = index(0)
        while j < n:
            e = math.exp(z[j] - zmax)
            a[j] = e
            total += e
            j += one
        j = index(0)
        while j < n:
            a[j] = a[j] / total
            j += one

    return softmax_row


@functools.cache
def compile_for(target: str):
    """Return (f, fprime, softmax_row) compiled for ``target``: "cpu" (@njit) or "cuda" (device functions)."""
    import numba

    softmax_row = _make_softmax_row(numba.uint64)
    if target == "cpu":
        return tuple(numba.njit(inline="always")(g) for g in (f, fprime, softmax_row))
    from numba import cuda

    return tuple(cuda.jit(device=True)(g) for g in (f, fprime, softmax_row))
