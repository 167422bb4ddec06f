"""Kernels of one thread per element, row or column: BP1, BP3, softmax, the SGD update, the
epilogues of the cuBLAS products, and the bookkeeping (gathering a batch, counting), with their
launchers (written as launch plans: ``launches``).

Formulas for f, f', softmax and the cost/BP1 of one row come from ``activations`` and ``losses``
as device functions, so these kernels evaluate the same expressions as the CPU ones.
"""

import functools
import math
from types import SimpleNamespace

from numba import cuda

from ..activations import SOFTMAX
from .common import BLOCK2, FLAT, ROWS, TILE, TILE_PAD, f, fprime, grid1, numba_type, output_error_row, softmax_row
from .launches import Launch, configured, launcher

NONFINITE_BLOCKS = 1024  # at most this many blocks for count_nonfinite (a grid-stride loop)


def grid_rows(rows: int, cols: int, side: int = TILE) -> tuple[int, int]:
    """Blocks covering a (rows, cols) output with side x side tiles, rows on x (up to 2^31 - 1
    blocks) and columns on y (at most 65,535 blocks: 1,048,560 columns of 16, far more than a
    layer is wide). A grid with rows on y would fail to launch beyond ~1M rows (a big batch, or
    ``gradients`` over a whole data set)."""
    return ((rows + side - 1) // side or 1, (cols + side - 1) // side or 1)


@cuda.jit(device=True)
def _row_col():
    """(row, column) of this thread in a ``grid_rows`` launch of TILE x TILE blocks: threads'
    x runs along the columns (the contiguous axis), blocks' x along the rows."""
    return cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x


@functools.cache
def build(T):
    """This family's kernels for element type ``T`` (numba.float32 or numba.float64)."""

    @cuda.jit(cache=True)
    def softmax_rows(Z, A):
        """Feedforward, softmax output layer: A[i] = softmax(Z[i]), one thread per row."""
        i = cuda.grid(1)
        if i < Z.shape[0]:
            softmax_row(Z[i], A[i])

    @cuda.jit(cache=True)
    def output_error(Z, A, Y, Delta, loss, act, cost):
        """BP1: Delta[i] = grad_a C ⊙ f'(Z[i]), one thread per row; cost[0] += sum_i C_x(i)."""
        i = cuda.grid(1)
        if i < Z.shape[0]:
            c = output_error_row(Z[i], A[i], Y[i], Delta[i], loss, act)
            cuda.atomic.add(cost, 0, c)

    @cuda.jit(device=True)
    def column_sums(Delta, scale, nabla_b, j0, width):
        """BP3 for columns j0 .. j0 + width - 1 (a multiple of TILE) of a TILE x TILE block:
        nabla_b[j] = scale * sum_i Delta[i, j]. For each TILE columns the block's TILE rows of
        threads each sum every TILE-th row (neighbouring threads read neighbouring columns), then a
        tree in shared memory adds the TILE sums. ``bias_gradient`` and the BP4 kernels'
        extra column of blocks (``products``) run this."""
        part = cuda.shared.array((TILE, TILE_PAD), T)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        m, n = Delta.shape
        for c0 in range(j0, j0 + width, TILE):
            j = c0 + tx
            acc = T(0)
            if j < n:
                for i in range(ty, m, TILE):
                    acc += Delta[i, j]
            part[ty, tx] = acc
            cuda.syncthreads()
            half = TILE // 2
            while half > 0:
                if ty < half:
                    part[ty, tx] += part[ty + half, tx]
                cuda.syncthreads()
                half //= 2
            if ty == 0 and j < n:
                nabla_b[j] = T(scale) * part[0, tx]
            cuda.syncthreads()

    @cuda.jit(cache=True)
    def bias_gradient(Delta, scale, nabla_b):
        """BP3 summed over the batch: nabla_b[j] = scale * sum_i Delta[i, j], TILE columns a block."""
        column_sums(Delta, scale, nabla_b, cuda.blockIdx.x * TILE, TILE)

    @cuda.jit(cache=True)
    def bias_activation(Z, b, A, act):
        """Feedforward after Z = A_prev W^T: Z += b, A = f(Z) (A untouched for softmax)."""
        i, j = _row_col()
        if i < Z.shape[0] and j < Z.shape[1]:
            z = Z[i, j] + b[j]
            Z[i, j] = z
            if act != SOFTMAX:
                A[i, j] = f(z, act, T(1))

    @cuda.jit(cache=True)
    def times_fprime(Z, A, Delta, act):
        """BP2 after Delta = Delta_next W_next: the Hadamard product Delta ⊙= f'(Z)."""
        i, j = _row_col()
        if i < Delta.shape[0] and j < Delta.shape[1]:
            Delta[i, j] = Delta[i, j] * fprime(Z[i, j], A[i, j], act, T(1))

    @cuda.jit(cache=True)
    def sgd_update(P, nabla, velocity, lr, momentum, decay):
        """SGD update with momentum and L2 decay: v = momentum v - lr (nabla + decay P); P += v."""
        k = cuda.grid(1)
        if k < P.shape[0]:
            p = P[k]
            v = T(momentum) * velocity[k] - T(lr) * (nabla[k] + T(decay) * p)
            velocity[k] = v
            P[k] = p + v

    @cuda.jit(cache=True)
    def sgd_update_all(P, nabla, velocity, lr, momentum, decay, n_weights):
        """sgd_update of every parameter in one launch: weight decay on the first n_weights (the
        weights), none on the rest (the biases)."""
        k = cuda.grid(1)
        if k < P.shape[0]:
            p = P[k]
            d = T(decay) if k < n_weights else T(0)
            v = T(momentum) * velocity[k] - T(lr) * (nabla[k] + d * p)
            velocity[k] = v
            P[k] = p + v

    @cuda.jit(cache=True)
    def gather_batch(X, Y, order, start, A0, Yb):
        """Both gathers of a mini-batch in one launch: A0[i] = X[order[start + i]] and
        Yb[i] = Y[order[start + i]], one thread per element of A0 and Yb together."""
        t = cuda.grid(1)
        m, nx = A0.shape
        ny = Yb.shape[1]
        if t < m * (nx + ny):
            i = t // (nx + ny)
            c = t - i * (nx + ny)
            row = order[start + i]
            if c < nx:
                A0[i, c] = X[row, c]
            else:
                Yb[i, c - nx] = Y[row, c - nx]

    @cuda.jit(cache=True)
    def sgd_update_all_from(P, nabla, velocity, hyper, n_weights):
        """sgd_update_all with (lr, momentum, decay) read from the device array ``hyper``, so a
        recorded CUDA graph replays with this epoch's values."""
        k = cuda.grid(1)
        if k < P.shape[0]:
            p = P[k]
            d = T(hyper[2]) if k < n_weights else T(0)
            v = T(hyper[1]) * velocity[k] - T(hyper[0]) * (nabla[k] + d * p)
            velocity[k] = v
            P[k] = p + v

    @cuda.jit(cache=True)
    def gather_batch_at(X, Y, order, offset, A0, Yb):
        """gather_batch of the batch that starts at the device-side position offset[0] of order."""
        t = cuda.grid(1)
        m, nx = A0.shape
        ny = Yb.shape[1]
        if t < m * (nx + ny):
            i = t // (nx + ny)
            c = t - i * (nx + ny)
            row = order[offset[0] + i]
            if c < nx:
                A0[i, c] = X[row, c]
            else:
                Yb[i, c - nx] = Y[row, c - nx]

    @cuda.jit(cache=True)
    def gather_rows(src, idx, dst):
        """Mini-batch gather: dst[i, c] = src[idx[i], c], one thread per element of dst."""
        t = cuda.grid(1)
        n = dst.shape[1]
        if t < dst.shape[0] * n:
            i = t // n
            dst[i, t - i * n] = src[idx[i], t - i * n]

    @cuda.jit(cache=True)
    def advance(offset, step):
        """offset[0] += step: on to the next batch (one thread)."""
        if cuda.grid(1) == 0:
            offset[0] += step

    @cuda.jit(cache=True)
    def count_nonfinite(P, out):
        """Divergence check: out[0] += number of NaN/inf entries of P (grid-stride loop)."""
        start, step = cuda.grid(1), cuda.gridsize(1)
        count = 0
        for k in range(start, P.shape[0], step):
            if not math.isfinite(P[k]):
                count += 1
        if count > 0:  # almost never: no atomics on the healthy path
            cuda.atomic.add(out, 0, count)

    @cuda.jit(cache=True)
    def count_correct(A, Y, correct):
        """Accuracy: correct[0] += 1 for each row i with argmax A[i] == argmax Y[i] (first max wins);
        a row with a NaN output never counts."""
        i = cuda.grid(1)
        if i < A.shape[0]:
            a_best, y_best, nan = 0, 0, A[i, 0] != A[i, 0]
            for j in range(1, A.shape[1]):
                nan = nan or A[i, j] != A[i, j]
                if A[i, j] > A[i, a_best]:
                    a_best = j
                if Y[i, j] > Y[i, y_best]:
                    y_best = j
            if a_best == y_best and not nan:
                cuda.atomic.add(correct, 0, 1)

    return SimpleNamespace(**{name: obj for name, obj in locals().items() if name != "T"})


def kernels(dtype):
    """This family's kernels for a numpy dtype."""
    return build(numba_type(dtype))


# ---- launchers: the names and argument order of kernels.cpu, plus stream -----------------------


@launcher
def softmax(Z, A, stream=0) -> list[Launch]:
    """A[i] = softmax(Z[i]) for every row (after a product kernel wrote Z, on the same stream)."""
    return [(configured(kernels(Z.dtype).softmax_rows, grid1(Z.shape[0], ROWS), ROWS, stream), (Z, A))]


@launcher
def output_error(Z, A, Y, Delta, loss: int, act: int, cost, stream=0) -> list[Launch]:
    """BP1: Delta = grad_a C ⊙ f'(Z) for every row; cost[0] += sum of the rows' costs C_x."""
    k = configured(kernels(Z.dtype).output_error, grid1(Z.shape[0], ROWS), ROWS, stream)
    return [(k, (Z, A, Y, Delta, loss, act, cost))]


@launcher
def bias_gradient(Delta, scale: float, nabla_b, stream=0) -> list[Launch]:
    """BP3 summed over the batch: nabla_b = scale * sum_x Delta (overwrites nabla_b)."""
    k = configured(kernels(nabla_b.dtype).bias_gradient, grid1(nabla_b.shape[0], TILE), BLOCK2, stream)
    return [(k, (Delta, scale, nabla_b))]


@launcher
def bias_activation(Z, b, A, act: int, stream=0) -> list[Launch]:
    """Z += b, A = f(Z): the rest of the forward pass after a GEMM wrote Z = A_prev W^T."""
    k = configured(kernels(Z.dtype).bias_activation, grid_rows(*Z.shape), BLOCK2, stream)
    return [(k, (Z, b, A, act))] + (softmax.plan(Z, A, stream) if act == SOFTMAX else [])


@launcher
def times_fprime(Z, A, Delta, act: int, stream=0) -> list[Launch]:
    """Delta ⊙= f'(Z): the rest of BP2 after a GEMM wrote Delta = Delta_next W_next."""
    k = configured(kernels(Delta.dtype).times_fprime, grid_rows(*Delta.shape), BLOCK2, stream)
    return [(k, (Z, A, Delta, act))]


@launcher
def sgd_update(P, nabla, velocity, lr: float, momentum: float, decay: float, stream=0) -> list[Launch]:
    """SGD on flat arrays: v = momentum v - lr (nabla + decay P);  P += v."""
    k = configured(kernels(P.dtype).sgd_update, grid1(P.shape[0], FLAT), FLAT, stream)
    return [(k, (P, nabla, velocity, lr, momentum, decay))]


@launcher
def sgd_update_all(P, nabla, velocity, lr: float, momentum: float, decay: float, n_weights: int, stream=0) -> list:
    """SGD on every parameter in one launch, weight decay on the first n_weights only."""
    k = configured(kernels(P.dtype).sgd_update_all, grid1(P.shape[0], FLAT), FLAT, stream)
    return [(k, (P, nabla, velocity, lr, momentum, decay, n_weights))]


@launcher
def gather_batch(X, Y, order, start: int, A0, Yb, stream=0) -> list[Launch]:
    """A0 = X[order[start:start + m]], Yb = Y[order[start:start + m]] (m = rows of A0) in one
    launch, without slicing order."""
    n = A0.shape[0] * (A0.shape[1] + Yb.shape[1])
    return [(configured(kernels(A0.dtype).gather_batch, grid1(n, FLAT), FLAT, stream), (X, Y, order, start, A0, Yb))]


@launcher
def sgd_update_all_from(P, nabla, velocity, hyper, n_weights: int, stream=0) -> list[Launch]:
    """sgd_update_all with hyper = (lr, momentum, decay) on the device (float64)."""
    k = configured(kernels(P.dtype).sgd_update_all_from, grid1(P.shape[0], FLAT), FLAT, stream)
    return [(k, (P, nabla, velocity, hyper, n_weights))]


@launcher
def gather_batch_at(X, Y, order, offset, A0, Yb, stream=0) -> list[Launch]:
    """gather_batch of the batch at a position held on the device (offset: int64[1])."""
    n = A0.shape[0] * (A0.shape[1] + Yb.shape[1])
    k = configured(kernels(A0.dtype).gather_batch_at, grid1(n, FLAT), FLAT, stream)
    return [(k, (X, Y, order, offset, A0, Yb))]


@launcher
def gather_rows(src, idx, dst, stream=0) -> list[Launch]:
    """dst[i] = src[idx[i]]: copies a shuffled mini-batch into a work buffer."""
    return [(configured(kernels(dst.dtype).gather_rows, grid1(dst.size, FLAT), FLAT, stream), (src, idx, dst))]


@launcher
def advance(offset, step: int, stream=0) -> list[Launch]:
    """offset[0] += step on the device (offset: int64[1])."""
    return [(configured(build(numba_type(offset.dtype)).advance, 1, 1, stream), (offset, step))]


@launcher
def count_nonfinite(P, out, stream=0, max_blocks: int = NONFINITE_BLOCKS) -> list[Launch]:
    """out[0] += number of NaN/inf entries of the flat array P (out: int64, 1 element)."""
    blocks = min(grid1(P.shape[0], FLAT), max_blocks)
    return [(configured(kernels(P.dtype).count_nonfinite, blocks, FLAT, stream), (P, out))]


@launcher
def count_correct(A, Y, correct, stream=0) -> list[Launch]:
    """correct[0] += number of rows with argmax A[i] == argmax Y[i] (correct: int64, 1 element)."""
    return [(configured(kernels(A.dtype).count_correct, grid1(A.shape[0], ROWS), ROWS, stream), (A, Y, correct))]
