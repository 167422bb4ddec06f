"""Version 1 of the CUDA products: one thread per output element, looping over the reduction axis
in global memory. The reference the tiled and register-blocked products (kernels/cuda/products.py)
are held to; same contracts and launch conventions."""

import functools
from types import SimpleNamespace

from numba import cuda

from gpubp.kernels.activations import SOFTMAX
from gpubp.kernels.cuda.common import BLOCK2, f, fprime, grid2, numba_type
from gpubp.kernels.cuda.elementwise import softmax


@functools.cache
def build(T):
    """The naive products for element type ``T``."""

    @cuda.jit
    def forward_naive(A_prev, W, b, Z, A, act):
        """Feedforward, one thread per (i, j): Z = A_prev W^T + b, A = f(Z) (A untouched for softmax)."""
        j, i = cuda.grid(2)
        if i < Z.shape[0] and j < Z.shape[1]:
            acc = T(0)
            for k in range(A_prev.shape[1]):
                acc += A_prev[i, k] * W[j, k]
            z = acc + b[j]
            Z[i, j] = z
            if act != SOFTMAX:
                A[i, j] = f(z, act, T(1))

    @cuda.jit
    def hidden_error_naive(Delta_next, W_next, Z, A, Delta, act):
        """BP2, one thread per (i, j): Delta = (Delta_next W_next) ⊙ f'(Z)."""
        j, i = cuda.grid(2)
        if i < Delta.shape[0] and j < Delta.shape[1]:
            acc = T(0)
            for k in range(W_next.shape[0]):
                acc += Delta_next[i, k] * W_next[k, j]
            Delta[i, j] = acc * fprime(Z[i, j], A[i, j], act, T(1))

    @cuda.jit
    def weight_gradient_naive(Delta, A_prev, scale, nabla_w):
        """BP4 summed over the batch, one thread per (j, k): nabla_w = scale * Delta^T A_prev."""
        k, j = cuda.grid(2)
        if j < nabla_w.shape[0] and k < nabla_w.shape[1]:
            acc = T(0)
            for i in range(Delta.shape[0]):
                acc += Delta[i, j] * A_prev[i, k]
            nabla_w[j, k] = T(scale) * acc

    return SimpleNamespace(**{name: obj for name, obj in locals().items() if name != "T"})


def forward_naive(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer, one thread per output element."""
    build(numba_type(Z.dtype)).forward_naive[grid2(*Z.shape), BLOCK2, stream](A_prev, W, b, Z, A, act)
    if act == SOFTMAX:
        softmax(Z, A, stream)


def hidden_error_naive(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2, one thread per output element."""
    k = build(numba_type(Delta.dtype)).hidden_error_naive
    k[grid2(*Delta.shape), BLOCK2, stream](Delta_next, W_next, Z, A, Delta, act)


def weight_gradient_naive(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4, one thread per output element (overwrites nabla_w)."""
    k = build(numba_type(nabla_w.dtype)).weight_gradient_naive
    k[grid2(*nabla_w.shape), BLOCK2, stream](Delta, A_prev, scale, nabla_w)
