"""The three matrix products of backpropagation, each fused with the rest of its equation:

- forward:          Z = A_prev W^T + b,  A = f(Z)
- BP2 hidden_error: Delta = (Delta_next W_next) ⊙ f'(Z)
- BP4 weight_gradient: nabla_w = scale * Delta^T A_prev   (outer products summed over the batch)

Two versions of each, as the numbered versions of llm.c's dev/cuda (the naive reference version
lives in ``benchmarks/variants/cuda_naive.py``):

- ``*_tiled``: a TILE x TILE block computes a TILE x TILE tile of the output. For each step along
  the reduction axis the block stages one tile of each operand in shared memory (one element per
  thread, coalesced along the contiguous axis, zero-filled outside the arrays so any shape works),
  synchronises, and every thread accumulates TILE products from shared memory.
- ``*_blocked``: a TILE x TILE block computes a BLOCK x BLOCK (64 x 64) tile, each thread 4 x 4
  outputs held in registers: 8 shared loads per 16 multiply-adds instead of 2 per 1.

The default launchers (``forward``, ``hidden_error``, ``weight_gradient``) take the blocked kernel
for outputs of at least 64 x 64, the tiled one below (chosen from the kernels' shared loads per
multiply-add, not yet measured on a GPU). Threads: ``x`` runs along the output's columns (the
contiguous axis), ``y`` along its rows; blocks' ``x`` runs along the rows and ``y`` along the
columns (``grid_rows``: a grid's y is capped at 65,535 blocks, its x is not). Accumulators are typed like the arrays.
"""

import functools
from types import SimpleNamespace

from numba import cuda

from ..activations import SOFTMAX
from . import elementwise
from .common import BLOCK2, TILE, TILE_PAD, f, fprime, numba_type
from .elementwise import grid_rows, softmax
from .launches import Launch, configured, launcher

BLOCK = 64  # side of the output tile of the register-blocked products
BLOCK_PAD = BLOCK + 1
BLOCK_K = 16  # reduction columns staged per step by the register-blocked products
PER_THREAD = BLOCK // TILE  # each of their TILE x TILE threads sums PER_THREAD x PER_THREAD outputs


@functools.cache
def build(T):
    """This family's kernels for element type ``T`` (numba.float32 or numba.float64)."""
    _column_sums = elementwise.build(T).column_sums  # BP3, in the BP4 kernels' extra blocks

    @cuda.jit(cache=True)
    def forward_tiled(A_prev, W, b, Z, A, act):
        """Feedforward, tiled: Z = A_prev W^T + b, A = f(Z) (A untouched for softmax)."""
        # sA[r, c] = A_prev[i0 + r, k0 + c], sW[r, c] = W[j0 + r, k0 + c]. Thread (ty, tx) reads
        # sW[tx, :], a column walk: the extra column puts the 16 rows in different banks.
        sA = cuda.shared.array((TILE, TILE), T)
        sW = cuda.shared.array((TILE, TILE_PAD), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.x * TILE + ty
        j0 = cuda.blockIdx.y * TILE
        j = j0 + tx
        m, n_in = A_prev.shape
        n_out = W.shape[0]
        acc = T(0)
        for k0 in range(0, n_in, TILE):
            k = k0 + tx
            sA[ty, tx] = A_prev[i, k] if i < m and k < n_in else T(0)
            sW[ty, tx] = W[j0 + ty, k] if j0 + ty < n_out and k < n_in else T(0)
            cuda.syncthreads()
            for kk in range(TILE):
                acc += sA[ty, kk] * sW[tx, kk]
            cuda.syncthreads()  # before the next step overwrites the tiles
        if i < m and j < n_out:
            z = acc + b[j]
            Z[i, j] = z
            if act != SOFTMAX:
                A[i, j] = f(z, act, T(1))

    @cuda.jit(cache=True)
    def hidden_error_tiled(Delta_next, W_next, Z, A, Delta, act):
        """BP2, tiled: Delta = (Delta_next W_next) ⊙ f'(Z), the Hadamard product fused."""
        # sD[r, c] = Delta_next[i0 + r, k0 + c], sW[r, c] = W_next[k0 + r, j0 + c]; the inner
        # loop reads sD[ty, kk] (one address per row: a broadcast) and sW[kk, tx] (consecutive).
        sD = cuda.shared.array((TILE, TILE), T)
        sW = cuda.shared.array((TILE, TILE), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.x * TILE + ty
        j = cuda.blockIdx.y * TILE + tx
        m, n = Delta.shape
        n_next = W_next.shape[0]
        acc = T(0)
        for k0 in range(0, n_next, TILE):
            sD[ty, tx] = Delta_next[i, k0 + tx] if i < m and k0 + tx < n_next else T(0)
            sW[ty, tx] = W_next[k0 + ty, j] if k0 + ty < n_next and j < n else T(0)
            cuda.syncthreads()
            for kk in range(TILE):
                acc += sD[ty, kk] * sW[kk, tx]
            cuda.syncthreads()
        if i < m and j < n:
            Delta[i, j] = acc * fprime(Z[i, j], A[i, j], act, T(1))

    @cuda.jit(cache=True)
    def weight_gradient_tiled(Delta, A_prev, scale, nabla_w, nabla_b):
        """BP4 summed over the batch, tiled: nabla_w = scale * Delta^T A_prev; blocks past the last
        column of nabla_w (a launch with one more column of blocks) do BP3 into nabla_b instead."""
        if cuda.blockIdx.y * TILE >= A_prev.shape[1]:
            _column_sums(Delta, scale, nabla_b, cuda.blockIdx.x * TILE, TILE)
            return
        # The reduction runs over the batch rows i: sD[r, c] = Delta[i0 + r, j0 + c] and
        # sA[r, c] = A_prev[i0 + r, k0 + c]; both loads are coalesced along the rows.
        sD = cuda.shared.array((TILE, TILE), T)
        sA = cuda.shared.array((TILE, TILE), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j0 = cuda.blockIdx.x * TILE
        j = j0 + ty
        k = cuda.blockIdx.y * TILE + tx
        m, n_out = Delta.shape
        n_in = A_prev.shape[1]
        acc = T(0)
        for i0 in range(0, m, TILE):
            r = i0 + ty
            sD[ty, tx] = Delta[r, j0 + tx] if r < m and j0 + tx < n_out else T(0)
            sA[ty, tx] = A_prev[r, k] if r < m and k < n_in else T(0)
            cuda.syncthreads()
            for rr in range(TILE):
                acc += sD[rr, ty] * sA[rr, tx]
            cuda.syncthreads()
        if j < n_out and k < n_in:
            nabla_w[j, k] = T(scale) * acc

    # ---- register-blocked products: a 64 x 64 output tile per block, 4 x 4 outputs per thread ---
    # C = P Q with P (M x K) and Q (K x N), each read either as stored or transposed (the flags are
    # compile-time constants of each version). A 16 x 16 block stages 64 x 16 of P and 16 x 64 of Q
    # per step and each thread accumulates the 4 x 4 outputs (ty + 16u, tx + 16v) in registers:
    # 8 shared loads per 16 multiply-adds, where the TILE x TILE kernels do 2 per 1.

    def _blocked_product(p_transposed, q_transposed):
        @cuda.jit(device=True)
        def stage(P, Q, M, N, K, i0, j0, k0, sP, sQ, t):
            """sP[kk, r] = P(i0 + r, k0 + kk), sQ[kk, c] = Q(k0 + kk, j0 + c), zero outside;
            consecutive threads take consecutive elements of the operand's contiguous axis."""
            zero = T(0)
            for q in range(BLOCK * BLOCK_K // (TILE * TILE)):
                e = t + q * TILE * TILE
                if p_transposed:  # P(i, k) = P[k, i]: i is contiguous
                    r, kk = e % BLOCK, e // BLOCK
                    i, k = i0 + r, k0 + kk
                    sP[kk, r] = P[k, i] if i < M and k < K else zero
                else:
                    kk, r = e % BLOCK_K, e // BLOCK_K
                    i, k = i0 + r, k0 + kk
                    sP[kk, r] = P[i, k] if i < M and k < K else zero
                if q_transposed:  # Q(k, j) = Q[j, k]: k is contiguous
                    kk, c = e % BLOCK_K, e // BLOCK_K
                    j, k = j0 + c, k0 + kk
                    sQ[kk, c] = Q[j, k] if j < N and k < K else zero
                else:
                    c, kk = e % BLOCK, e // BLOCK
                    j, k = j0 + c, k0 + kk
                    sQ[kk, c] = Q[k, j] if j < N and k < K else zero

        @cuda.jit(device=True)
        def product(P, Q, M, N, K, acc):
            """acc[u, v] = C(i0 + ty + 16u, j0 + tx + 16v) for this thread's block (i0, j0)."""
            sP = cuda.shared.array((BLOCK_K, BLOCK_PAD), T)
            sQ = cuda.shared.array((BLOCK_K, BLOCK_PAD), T)
            p = cuda.local.array(PER_THREAD, T)
            q = cuda.local.array(PER_THREAD, T)
            tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
            t = ty * TILE + tx
            i0, j0 = cuda.blockIdx.x * BLOCK, cuda.blockIdx.y * BLOCK
            for u in range(PER_THREAD):
                for v in range(PER_THREAD):
                    acc[u, v] = T(0)
            for k0 in range(0, K, BLOCK_K):
                stage(P, Q, M, N, K, i0, j0, k0, sP, sQ, t)
                cuda.syncthreads()
                for kk in range(BLOCK_K):
                    for u in range(PER_THREAD):
                        p[u] = sP[kk, ty + TILE * u]
                        q[u] = sQ[kk, tx + TILE * u]
                    for u in range(PER_THREAD):
                        for v in range(PER_THREAD):
                            acc[u, v] += p[u] * q[v]
                cuda.syncthreads()

        return product

    _product_nt = _blocked_product(False, True)  # A_prev W^T
    _product_nn = _blocked_product(False, False)  # Delta_next W_next
    _product_tn = _blocked_product(True, False)  # Delta^T A_prev

    @cuda.jit(cache=True)
    def forward_blocked(A_prev, W, b, Z, A, act):
        """Feedforward, register-blocked: Z = A_prev W^T + b, A = f(Z) (A untouched for softmax)."""
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        m, n_out = Z.shape
        _product_nt(A_prev, W, m, n_out, A_prev.shape[1], acc)
        for u in range(PER_THREAD):
            i = cuda.blockIdx.x * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                j = cuda.blockIdx.y * BLOCK + cuda.threadIdx.x + TILE * v
                if i < m and j < n_out:
                    z = acc[u, v] + b[j]
                    Z[i, j] = z
                    if act != SOFTMAX:
                        A[i, j] = f(z, act, T(1))

    @cuda.jit(cache=True)
    def hidden_error_blocked(Delta_next, W_next, Z, A, Delta, act):
        """BP2, register-blocked: Delta = (Delta_next W_next) ⊙ f'(Z)."""
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        m, n = Delta.shape
        _product_nn(Delta_next, W_next, m, n, W_next.shape[0], acc)
        for u in range(PER_THREAD):
            i = cuda.blockIdx.x * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                j = cuda.blockIdx.y * BLOCK + cuda.threadIdx.x + TILE * v
                if i < m and j < n:
                    Delta[i, j] = acc[u, v] * fprime(Z[i, j], A[i, j], act, T(1))

    @cuda.jit(cache=True)
    def weight_gradient_blocked(Delta, A_prev, scale, nabla_w, nabla_b):
        """BP4 summed over the batch, register-blocked: nabla_w = scale * Delta^T A_prev; blocks past
        the last column of nabla_w do BP3 into nabla_b (as the tiled kernel)."""
        if cuda.blockIdx.y * BLOCK >= A_prev.shape[1]:
            _column_sums(Delta, scale, nabla_b, cuda.blockIdx.x * BLOCK, BLOCK)
            return
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        n_out, n_in = nabla_w.shape
        _product_tn(Delta, A_prev, n_out, n_in, Delta.shape[0], acc)
        for u in range(PER_THREAD):
            j = cuda.blockIdx.x * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                k = cuda.blockIdx.y * BLOCK + cuda.threadIdx.x + TILE * v
                if j < n_out and k < n_in:
                    nabla_w[j, k] = T(scale) * acc[u, v]

    return SimpleNamespace(**{name: obj for name, obj in locals().items() if name != "T" and name[0] != "_"})


def kernels(dtype):
    """This family's kernels for a numpy dtype."""
    return build(numba_type(dtype))


def blocked(rows: int, cols: int) -> bool:
    """Whether a product's (rows, cols) output goes to the register-blocked kernel: when it fills
    64 x 64 tiles. Below that the 16 x 16 tiles waste fewer threads and spread over more blocks."""
    return rows >= BLOCK and cols >= BLOCK


# ---- launchers: the names and argument order of kernels.cpu, plus stream -----------------------


@launcher
def forward(A_prev, W, b, Z, A, act: int, stream=0) -> list[Launch]:
    """Feedforward for one layer: Z = A_prev W^T + b, A = f(Z) (blocked or tiled by shape)."""
    return (forward_blocked if blocked(*Z.shape) else forward_tiled).plan(A_prev, W, b, Z, A, act, stream)


@launcher
def forward_tiled(A_prev, W, b, Z, A, act: int, stream=0) -> list[Launch]:
    """Feedforward for one layer, 16 x 16 shared-memory tiles (then softmax, a second launch on
    the same stream, which sees the whole of Z)."""
    k = configured(kernels(Z.dtype).forward_tiled, grid_rows(*Z.shape), BLOCK2, stream)
    return [(k, (A_prev, W, b, Z, A, act))] + (softmax.plan(Z, A, stream) if act == SOFTMAX else [])


@launcher
def forward_blocked(A_prev, W, b, Z, A, act: int, stream=0) -> list[Launch]:
    """Feedforward for one layer, register-blocked 64 x 64 tiles."""
    k = configured(kernels(Z.dtype).forward_blocked, grid_rows(*Z.shape, BLOCK), BLOCK2, stream)
    return [(k, (A_prev, W, b, Z, A, act))] + (softmax.plan(Z, A, stream) if act == SOFTMAX else [])


@launcher
def hidden_error(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> list[Launch]:
    """BP2: Delta = (Delta_next W_next) ⊙ f'(Z) (blocked or tiled by shape)."""
    version = hidden_error_blocked if blocked(*Delta.shape) else hidden_error_tiled
    return version.plan(Delta_next, W_next, Z, A, Delta, act, stream)


@launcher
def hidden_error_tiled(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> list[Launch]:
    """BP2, 16 x 16 shared-memory tiles."""
    k = configured(kernels(Delta.dtype).hidden_error_tiled, grid_rows(*Delta.shape), BLOCK2, stream)
    return [(k, (Delta_next, W_next, Z, A, Delta, act))]


@launcher
def hidden_error_blocked(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> list[Launch]:
    """BP2, register-blocked 64 x 64 tiles."""
    k = configured(kernels(Delta.dtype).hidden_error_blocked, grid_rows(*Delta.shape, BLOCK), BLOCK2, stream)
    return [(k, (Delta_next, W_next, Z, A, Delta, act))]


@launcher
def weight_gradient(Delta, A_prev, scale: float, nabla_w, stream=0, nabla_b=None) -> list[Launch]:
    """BP4 summed over the batch: nabla_w = scale * Delta^T A_prev (blocked or tiled by shape;
    overwrites nabla_w); with ``nabla_b``, BP3 too in the same launch: nabla_b = scale * sum_x Delta."""
    version = weight_gradient_blocked if blocked(*nabla_w.shape) else weight_gradient_tiled
    return version.plan(Delta, A_prev, scale, nabla_w, stream, nabla_b)


def _bp4(kernel, side: int, Delta, A_prev, scale: float, nabla_w, stream, nabla_b) -> list[Launch]:
    """BP4's blocks, and one more column of them for BP3 when nabla_b is given; the kernel's
    nabla_b argument is row 0 of nabla_w, never written, when there is none."""
    rows, cols = grid_rows(*nabla_w.shape, side)
    grid, bias = ((rows, cols + 1), nabla_b) if nabla_b is not None else ((rows, cols), nabla_w[0])
    return [(configured(kernel, grid, BLOCK2, stream), (Delta, A_prev, scale, nabla_w, bias))]


@launcher
def weight_gradient_tiled(Delta, A_prev, scale: float, nabla_w, stream=0, nabla_b=None) -> list[Launch]:
    """BP4 (and BP3 with nabla_b), 16 x 16 shared-memory tiles (overwrites nabla_w)."""
    return _bp4(kernels(nabla_w.dtype).weight_gradient_tiled, TILE, Delta, A_prev, scale, nabla_w, stream, nabla_b)


@launcher
def weight_gradient_blocked(Delta, A_prev, scale: float, nabla_w, stream=0, nabla_b=None) -> list[Launch]:
    """BP4 (and BP3 with nabla_b), register-blocked 64 x 64 tiles (overwrites nabla_w)."""
    return _bp4(kernels(nabla_w.dtype).weight_gradient_blocked, BLOCK, Delta, A_prev, scale, nabla_w, stream, nabla_b)
