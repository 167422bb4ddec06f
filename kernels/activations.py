"""Activation functions f and their derivatives f', written once for both targets.

Each function here is plain Python over scalars. ``compile_for("cpu")`` turns it into an
``@njit`` function and ``compile_for("cuda")`` into a ``@cuda.jit(device=True)`` function, so
the CPU and CUDA kernels evaluate exactly the same formulas.

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


def softmax_row(z, a):
    """a_j = e^(z_j) / sum_k e^(z_k) over one row, shifted by max(z) so e^x never overflows."""
    n = z.shape[0]
    zmax = z[0]
    for j in range(1, n):
        if z[j] > zmax:
            zmax = z[j]
    total = z.dtype.type(0)  # in the arrays' precision: float32 stays float32 on the GPU
    for j in range(n):
        e = math.exp(z[j] - zmax)
        a[j] = e
        total += e
    for j in range(n):
        a[j] = a[j] / total


@functools.cache
def compile_for(target: str):
    """Return (f, fprime, softmax_row) compiled for ``target``: "cpu" (@njit) or "cuda" (device functions)."""
    if target == "cpu":
        from numba import njit

        return tuple(njit(inline="always")(g) for g in (f, fprime, softmax_row))
    from numba import cuda

    return tuple(cuda.jit(device=True)(g) for g in (f, fprime, softmax_row))
