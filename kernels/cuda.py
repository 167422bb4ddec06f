"""@cuda.jit kernels and their host-side launchers: the contracts listed in ``gpubp.kernels``.

Layout. Rows are samples, as on the CPU: A^(l-1) is (m, n_in), W^l is (n_out, n_in), b^l is
(n_out,), Z^l, A^l and Delta^l are (m, n_out). Every array is a C-contiguous numba device array
(often a view made by slicing and reshaping one flat device buffer) and all arrays of one call
share one dtype, float32 or float64. Launchers have the names and argument order of
``kernels.cpu`` plus a keyword ``stream=0``; they pick the kernel built for the arrays' dtype,
size the grid themselves and launch asynchronously. They never validate (the driver checks
shapes and dtypes once) and never allocate.

Threads. 2-D kernels map ``threadIdx.x`` / ``blockIdx.x`` to the column of the output (the
contiguous axis, so neighbouring threads touch neighbouring addresses) and ``y`` to the row.
The three matrix products come in several versions, as the numbered versions of llm.c's dev/cuda:

- ``*_naive``: one thread per output element, looping over the reduction axis in global memory.
  The reference.
- ``*_tiled``: a TILE x TILE block computes a TILE x TILE tile of the output. For
  each step along the reduction axis the block stages one tile of each operand in shared memory
  (one element per thread, coalesced along the contiguous axis, zero-filled outside the arrays
  so any shape works), synchronises, and every thread accumulates TILE products from shared
  memory: each global element is read once per tile instead of once per output element.
- ``*_blocked``: a TILE x TILE block computes a BLOCK x BLOCK (64 x 64) tile, each thread 4 x 4
  outputs held in registers: 8 shared loads per 16 multiply-adds instead of 2 per 1.
- ``*_cublas``: the product by one cuBLAS GEMM (through CuPy, on the arrays in place), then one
  Numba kernel for the rest of the equation (bias and f for the forward pass, the Hadamard
  product with f' for BP2). The peer to beat; the "cublas" path of ``gpubp.schedule`` uses it.

The default names (``forward``, ``hidden_error``, ``weight_gradient``) take the blocked kernel
for outputs of at least 64 x 64 and the tiled one below.

Everything else is one thread per row (softmax, BP1, accuracy), per column (BP3) or per
element (SGD, gathering a mini-batch, the NaN/inf count). Formulas for f, f', softmax and the
cost/BP1 of one row come from ``activations`` and ``losses`` as device functions, so the CPU
and CUDA kernels evaluate the same expressions.

Shared arrays need their dtype at compile time, so the kernels are built per dtype by a cached
factory, ``_build(numba_dtype)``. Accumulators are typed like the arrays (float32 products are
summed in float32); python-float arguments (scale, lr, ...) are cast to that type once per
thread.
"""

import functools
import math
from types import SimpleNamespace

import numba
from numba import cuda

from .activations import SOFTMAX
from .activations import compile_for as _activations_for
from .losses import compile_for as _losses_for

try:  # small-batch launches fill few blocks by design; Numba would warn on every one of them
    from numba.cuda.core import config as _cuda_config

    _cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
except ImportError:  # the simulator, or an older numba-cuda
    pass

TILE = 16  # side of a shared-memory tile and of the 2-D thread blocks
TILE_PAD = TILE + 1  # a padded row (shapes of shared arrays must be constants, not expressions)
BLOCK = 64  # side of the output tile of the register-blocked products (*_blocked)
BLOCK_PAD = BLOCK + 1
BLOCK_K = 16  # reduction columns staged per step by the register-blocked products
PER_THREAD = BLOCK // TILE  # each of their TILE x TILE threads sums PER_THREAD x PER_THREAD outputs
ROWS = 128  # threads per block of the one-thread-per-row / per-column kernels
FLAT = 256  # threads per block of the elementwise kernels
NONFINITE_BLOCKS = 1024  # at most this many blocks for count_nonfinite (a grid-stride loop)
FUSED_THREADS = 512  # the one block of train_batches
FUSED_SHARED = 4096  # elements of the shared buffer that train_fused_v2 stages its products through
FUSED_VERSION = 2  # which train_fused_v* train_batches launches (the benchmarks compare them)

f, fprime, softmax_row = _activations_for("cuda")
output_error_row = _losses_for("cuda")


@functools.cache
def _build(T):
    """All kernels for element type ``T`` (numba.float32 or numba.float64)."""

    # ---- forward: Z = A_prev W^T + b, A = f(Z) ------------------------------------------------

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
    def forward_tiled(A_prev, W, b, Z, A, act):
        """Feedforward, tiled: Z = A_prev W^T + b, A = f(Z) (A untouched for softmax)."""
        # sA[r, c] = A_prev[i0 + r, k0 + c], sW[r, c] = W[j0 + r, k0 + c]. Thread (ty, tx) reads
        # sW[tx, :], a column walk: the extra column puts the 16 rows in different banks.
        sA = cuda.shared.array((TILE, TILE), T)
        sW = cuda.shared.array((TILE, TILE_PAD), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j0 = cuda.blockIdx.x * TILE
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
            i0, j0 = cuda.blockIdx.y * BLOCK, cuda.blockIdx.x * BLOCK
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

    @cuda.jit
    def forward_blocked(A_prev, W, b, Z, A, act):
        """Feedforward, register-blocked: Z = A_prev W^T + b, A = f(Z) (A untouched for softmax)."""
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        m, n_out = Z.shape
        _product_nt(A_prev, W, m, n_out, A_prev.shape[1], acc)
        for u in range(PER_THREAD):
            i = cuda.blockIdx.y * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                j = cuda.blockIdx.x * BLOCK + cuda.threadIdx.x + TILE * v
                if i < m and j < n_out:
                    z = acc[u, v] + b[j]
                    Z[i, j] = z
                    if act != SOFTMAX:
                        A[i, j] = f(z, act, T(1))

    @cuda.jit
    def hidden_error_blocked(Delta_next, W_next, Z, A, Delta, act):
        """BP2, register-blocked: Delta = (Delta_next W_next) ⊙ f'(Z)."""
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        m, n = Delta.shape
        _product_nn(Delta_next, W_next, m, n, W_next.shape[0], acc)
        for u in range(PER_THREAD):
            i = cuda.blockIdx.y * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                j = cuda.blockIdx.x * BLOCK + cuda.threadIdx.x + TILE * v
                if i < m and j < n:
                    Delta[i, j] = acc[u, v] * fprime(Z[i, j], A[i, j], act, T(1))

    @cuda.jit
    def weight_gradient_blocked(Delta, A_prev, scale, nabla_w):
        """BP4 summed over the batch, register-blocked: nabla_w = scale * Delta^T A_prev."""
        acc = cuda.local.array((PER_THREAD, PER_THREAD), T)
        n_out, n_in = nabla_w.shape
        _product_tn(Delta, A_prev, n_out, n_in, Delta.shape[0], acc)
        for u in range(PER_THREAD):
            j = cuda.blockIdx.y * BLOCK + cuda.threadIdx.y + TILE * u
            for v in range(PER_THREAD):
                k = cuda.blockIdx.x * BLOCK + cuda.threadIdx.x + TILE * v
                if j < n_out and k < n_in:
                    nabla_w[j, k] = T(scale) * acc[u, v]

    @cuda.jit
    def softmax_rows(Z, A):
        """Feedforward, softmax output layer: A[i] = softmax(Z[i]), one thread per row."""
        i = cuda.grid(1)
        if i < Z.shape[0]:
            softmax_row(Z[i], A[i])

    # ---- BP1: Delta = grad_a C ⊙ f'(Z), cost += sum_x C_x ------------------------------------

    @cuda.jit
    def output_error(Z, A, Y, Delta, loss, act, cost):
        """BP1: Delta[i] = grad_a C ⊙ f'(Z[i]), one thread per row; cost[0] += sum_i C_x(i)."""
        i = cuda.grid(1)
        if i < Z.shape[0]:
            c = output_error_row(Z[i], A[i], Y[i], Delta[i], loss, act)
            cuda.atomic.add(cost, 0, c)

    # ---- BP2: Delta = (Delta_next W_next) ⊙ f'(Z) --------------------------------------------

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
    def hidden_error_tiled(Delta_next, W_next, Z, A, Delta, act):
        """BP2, tiled: Delta = (Delta_next W_next) ⊙ f'(Z), the Hadamard product fused."""
        # sD[r, c] = Delta_next[i0 + r, k0 + c], sW[r, c] = W_next[k0 + r, j0 + c]; the inner
        # loop reads sD[ty, kk] (one address per row: a broadcast) and sW[kk, tx] (consecutive).
        sD = cuda.shared.array((TILE, TILE), T)
        sW = cuda.shared.array((TILE, TILE), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
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

    # ---- BP4: nabla_w = scale * Delta^T A_prev ----------------------------------------------

    @cuda.jit
    def weight_gradient_naive(Delta, A_prev, scale, nabla_w):
        """BP4 summed over the batch, one thread per (j, k): nabla_w = scale * Delta^T A_prev."""
        k, j = cuda.grid(2)
        if j < nabla_w.shape[0] and k < nabla_w.shape[1]:
            acc = T(0)
            for i in range(Delta.shape[0]):
                acc += Delta[i, j] * A_prev[i, k]
            nabla_w[j, k] = T(scale) * acc

    @cuda.jit
    def weight_gradient_tiled(Delta, A_prev, scale, nabla_w):
        """BP4 summed over the batch, tiled: nabla_w = scale * Delta^T A_prev."""
        # The reduction runs over the batch rows i: sD[r, c] = Delta[i0 + r, j0 + c] and
        # sA[r, c] = A_prev[i0 + r, k0 + c]; both loads are coalesced along the rows.
        sD = cuda.shared.array((TILE, TILE), T)
        sA = cuda.shared.array((TILE, TILE), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j0 = cuda.blockIdx.y * TILE
        j = j0 + ty
        k = cuda.blockIdx.x * TILE + tx
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

    # ---- BP3: nabla_b = scale * sum_x Delta ---------------------------------------------------

    @cuda.jit
    def bias_gradient(Delta, scale, nabla_b):
        """BP3 summed over the batch: nabla_b[j] = scale * sum_i Delta[i, j], one thread per column."""
        j = cuda.grid(1)
        if j < nabla_b.shape[0]:
            acc = T(0)
            for i in range(Delta.shape[0]):
                acc += Delta[i, j]  # neighbouring threads read neighbouring columns
            nabla_b[j] = T(scale) * acc

    # ---- SGD update ---------------------------------------------------------------------------

    # ---- epilogues of the cuBLAS products (*_cublas): the elementwise rest of forward and BP2 ----

    @cuda.jit
    def bias_activation(Z, b, A, act):
        """Feedforward after Z = A_prev W^T: Z += b, A = f(Z) (A untouched for softmax), one thread per (i, j)."""
        j, i = cuda.grid(2)
        if i < Z.shape[0] and j < Z.shape[1]:
            z = Z[i, j] + b[j]
            Z[i, j] = z
            if act != SOFTMAX:
                A[i, j] = f(z, act, T(1))

    @cuda.jit
    def times_fprime(Z, A, Delta, act):
        """BP2 after Delta = Delta_next W_next: the Hadamard product Delta ⊙= f'(Z), one thread per (i, j)."""
        j, i = cuda.grid(2)
        if i < Delta.shape[0] and j < Delta.shape[1]:
            Delta[i, j] = Delta[i, j] * fprime(Z[i, j], A[i, j], act, T(1))

    # ---- SGD -----------------------------------------------------------------------------------

    @cuda.jit
    def sgd_update(P, nabla, velocity, lr, momentum, decay):
        """SGD update with momentum and L2 decay: v = momentum v - lr (nabla + decay P); P += v."""
        k = cuda.grid(1)
        if k < P.shape[0]:
            p = P[k]
            v = T(momentum) * velocity[k] - T(lr) * (nabla[k] + T(decay) * p)
            velocity[k] = v
            P[k] = p + v

    @cuda.jit
    def sgd_update_from(P, nabla, velocity, hyper):
        """sgd_update with (lr, momentum, decay) read from the device array ``hyper``, so a recorded
        CUDA graph replays with this epoch's values."""
        k = cuda.grid(1)
        if k < P.shape[0]:
            p = P[k]
            v = T(hyper[1]) * velocity[k] - T(hyper[0]) * (nabla[k] + T(hyper[2]) * p)
            velocity[k] = v
            P[k] = p + v

    # ---- bookkeeping --------------------------------------------------------------------------

    @cuda.jit
    def gather_rows(src, idx, dst):
        """Mini-batch gather: dst[i, c] = src[idx[i], c], one thread per element of dst."""
        t = cuda.grid(1)
        n = dst.shape[1]
        if t < dst.shape[0] * n:
            i = t // n
            c = t - i * n
            dst[i, c] = src[idx[i], c]

    @cuda.jit
    def gather_rows_at(src, perm, offset, dst):
        """gather_rows of the batch that starts at the device-side position offset[0] of perm:
        dst[i, c] = src[perm[offset[0] + i], c], so a recorded CUDA graph gathers the next batch."""
        t = cuda.grid(1)
        n = dst.shape[1]
        if t < dst.shape[0] * n:
            i = t // n
            c = t - i * n
            dst[i, c] = src[perm[offset[0] + i], c]

    @cuda.jit
    def advance(offset, step):
        """offset[0] += step: on to the next batch (one thread)."""
        if cuda.grid(1) == 0:
            offset[0] += step

    @cuda.jit
    def count_nonfinite(P, out):
        """Divergence check: out[0] += number of NaN/inf entries of P (grid-stride loop)."""
        start, step = cuda.grid(1), cuda.gridsize(1)
        count = 0
        for k in range(start, P.shape[0], step):
            if not math.isfinite(P[k]):
                count += 1
        if count > 0:  # almost never: no atomics on the healthy path
            cuda.atomic.add(out, 0, count)

    @cuda.jit
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

    # ---- a whole epoch in one launch: the fused path ----------------------------------------
    # One thread block runs every mini-batch of rows perm[start:stop]: gather the batch, forward,
    # BP1, then down the layers BP2 and BP3/BP4 with the update, separated by __syncthreads.
    # Buffers and parameters are the flat arrays of ``kernels.cpu``'s drivers (same layout). One
    # launch per epoch instead of about a dozen per mini-batch: meant for small networks, whose
    # mini-batches are too small to fill a GPU anyway. The stages are device functions that every
    # thread of the block calls (t = this thread, nt = threads in the block); the numbered kernels
    # differ only in how they gather and run the forward pass.

    @cuda.jit(device=True)
    def _gather_v1(X, perm, s, m, Abuf, t, nt):
        """The shuffled batch into slot 0: Abuf[i, c] = X[perm[s + i], c], one element per step."""
        n0 = X.shape[1]
        for e in range(t, m * n0, nt):
            i = e // n0
            Abuf[e] = X[perm[s + i], e - i * n0]

    @cuda.jit(device=True)
    def _forward_v1(params, layout, units, acts, cap, m, Abuf, Zbuf, t, nt):
        """Forward, z = W a + b and a = f(z): one thread per output, operands from global memory."""
        one = T(1)
        for l in range(layout.shape[0]):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            a_in, out = cap * units[l], cap * units[l + 1]
            for e in range(t, m * n_out, nt):
                i = e // n_out
                j = e - i * n_out
                acc = params[b_off + j]
                for k in range(n_in):  # neighbouring threads read W rows n_in apart: uncoalesced
                    acc += Abuf[a_in + i * n_in + k] * params[w_off + j * n_in + k]
                Zbuf[out + e] = acc
                if acts[l] != SOFTMAX:
                    Abuf[out + e] = f(acc, acts[l], one)
            cuda.syncthreads()
            _softmax_layer(acts[l], m, n_out, out, Zbuf, Abuf, t, nt)

    @cuda.jit(device=True)
    def _softmax_layer(act, m, n_out, out, Zbuf, Abuf, t, nt):
        """a = softmax(z) for each row of a softmax layer (a no-op for other activations)."""
        if act == SOFTMAX:
            for i in range(t, m, nt):
                r = out + i * n_out
                softmax_row(Zbuf[r : r + n_out], Abuf[r : r + n_out])
            cuda.syncthreads()

    @cuda.jit(device=True)
    def _stage(src, off, stride, rows, k0, w, dst, dst_stride, t, nt):
        """dst[r * dst_stride + c] = src[off + r * stride + k0 + c] for r < rows, c < w.

        Consecutive threads copy consecutive c (coalesced); each thread issues four loads before
        its first store, so four loads per thread are in flight instead of one.
        """
        total = rows * w
        zero = T(0)
        for e0 in range(t, total, 4 * nt):
            e1, e2, e3 = e0 + nt, e0 + 2 * nt, e0 + 3 * nt
            r0, r1, r2, r3 = e0 // w, e1 // w, e2 // w, e3 // w
            v0 = src[off + r0 * stride + k0 + e0 - r0 * w]
            v1 = src[off + r1 * stride + k0 + e1 - r1 * w] if e1 < total else zero
            v2 = src[off + r2 * stride + k0 + e2 - r2 * w] if e2 < total else zero
            v3 = src[off + r3 * stride + k0 + e3 - r3 * w] if e3 < total else zero
            dst[r0 * dst_stride + e0 - r0 * w] = v0
            if e1 < total:
                dst[r1 * dst_stride + e1 - r1 * w] = v1
            if e2 < total:
                dst[r2 * dst_stride + e2 - r2 * w] = v2
            if e3 < total:
                dst[r3 * dst_stride + e3 - r3 * w] = v3

    @cuda.jit(device=True)
    def _gather_v2(X, perm, s, m, Abuf, t, nt):
        """The shuffled batch into slot 0, four rows' loads in flight per thread (rows of X are
        scattered through a large array: each load waits on device memory)."""
        n0 = X.shape[1]
        zero = T(0)
        total = m * n0
        for e0 in range(t, total, 4 * nt):
            e1, e2, e3 = e0 + nt, e0 + 2 * nt, e0 + 3 * nt
            i0, i1, i2, i3 = e0 // n0, e1 // n0, e2 // n0, e3 // n0
            v0 = X[perm[s + i0], e0 - i0 * n0]
            v1 = X[perm[s + i1], e1 - i1 * n0] if e1 < total else zero
            v2 = X[perm[s + i2], e2 - i2 * n0] if e2 < total else zero
            v3 = X[perm[s + i3], e3 - i3 * n0] if e3 < total else zero
            Abuf[e0] = v0
            if e1 < total:
                Abuf[e1] = v1
            if e2 < total:
                Abuf[e2] = v2
            if e3 < total:
                Abuf[e3] = v3

    @cuda.jit(device=True)
    def _forward_v2(params, layout, units, acts, cap, m, Abuf, Zbuf, sbuf, t, nt):
        """Forward, z = W a + b and a = f(z), the product staged through shared memory.

        For each chunk of kc input columns, the block copies the batch's a^(l-1)[:, chunk] and
        W[:, chunk] into ``sbuf`` (coalesced, along the rows), then each thread adds kc products
        per output from shared memory to its partial sums, kept in Zbuf until the last chunk.
        W's rows are padded to an odd stride so the threads of a warp, which read one column of
        W at different rows j, hit different banks.
        """
        one = T(1)
        for l in range(layout.shape[0]):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            a_in, out = cap * units[l], cap * units[l + 1]
            kc = min(n_in, (sbuf.shape[0] - n_out) // (m + n_out))  # chunk width (>= 1: see fused_fits)
            kcp = kc | 1  # W's padded row stride in sbuf
            sW = m * kc  # W's chunk starts after the activations' chunk
            for k0 in range(0, n_in, kc):
                w = min(kc, n_in - k0)
                _stage(Abuf, a_in, n_in, m, k0, w, sbuf, kc, t, nt)
                _stage(params, w_off, n_in, n_out, k0, w, sbuf[sW:], kcp, t, nt)
                cuda.syncthreads()
                last = k0 + w == n_in
                for e in range(t, m * n_out, nt):
                    i = e // n_out
                    j = e - i * n_out
                    acc = params[b_off + j] if k0 == 0 else Zbuf[out + e]
                    for kk in range(w):
                        acc += sbuf[i * kc + kk] * sbuf[sW + j * kcp + kk]
                    Zbuf[out + e] = acc
                    if last and acts[l] != SOFTMAX:
                        Abuf[out + e] = f(acc, acts[l], one)
                cuda.syncthreads()  # before the next chunk overwrites sbuf; a^l complete after the last
            _softmax_layer(acts[l], m, n_out, out, Zbuf, Abuf, t, nt)

    @cuda.jit(device=True)
    def _backward_update(Y, perm, s, m, params, velocity, layout, units, acts, loss, cap, Abuf, Zbuf, Dbuf,
                         lr, momentum, decay, cost, t, nt):  # fmt: skip
        """BP1, then from layer L down: BP2 into delta^(l-1) (reading W^l before it changes), then
        BP4/BP3 and the SGD update of W^l and b^l, one parameter per step (coalesced along rows)."""
        L = layout.shape[0]
        one = T(1)
        scale = one / T(m)
        lr_, mom, dec = T(lr), T(momentum), T(decay)
        n_L, o_L = layout[L - 1, 2], cap * units[L]
        for i in range(t, m, nt):  # BP1, one thread per row
            r = o_L + i * n_L
            c = output_error_row(Zbuf[r : r + n_L], Abuf[r : r + n_L], Y[perm[s + i]], Dbuf[r : r + n_L], loss,
                                 acts[L - 1])  # fmt: skip
            cuda.atomic.add(cost, 0, c)
        cuda.syncthreads()
        for l in range(L - 1, -1, -1):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            d, a_in = cap * units[l + 1], cap * units[l]
            if l > 0:  # BP2: delta^(l-1) = (W^l)^T delta^l ⊙ f'(z^(l-1))
                for e in range(t, m * n_in, nt):
                    i = e // n_in
                    j = e - i * n_in
                    acc = T(0)
                    for k in range(n_out):
                        acc += Dbuf[d + i * n_out + k] * params[w_off + k * n_in + j]
                    Dbuf[a_in + e] = acc * fprime(Zbuf[a_in + e], Abuf[a_in + e], acts[l - 1], one)
                cuda.syncthreads()
            for e in range(t, n_out * n_in, nt):  # BP4 and the update of W^l
                j = e // n_in
                k = e - j * n_in
                g = T(0)
                for i in range(m):
                    g += Dbuf[d + i * n_out + j] * Abuf[a_in + i * n_in + k]
                p = w_off + e
                v = mom * velocity[p] - lr_ * (scale * g + dec * params[p])
                velocity[p] = v
                params[p] += v
            for j in range(t, n_out, nt):  # BP3 and the update of b^l
                g = T(0)
                for i in range(m):
                    g += Dbuf[d + i * n_out + j]
                p = b_off + j
                v = mom * velocity[p] - lr_ * scale * g
                velocity[p] = v
                params[p] += v
        cuda.syncthreads()  # the next batch overwrites the buffers this one read

    @cuda.jit
    def train_fused_v1(X, Y, perm, start, stop, cap, params, velocity, layout, units, acts, loss, Abuf, Zbuf, Dbuf,
                       lr, momentum, decay, cost):  # fmt: skip
        """v1, the reference: the fused epoch with every operand read from global memory."""
        t, nt = cuda.threadIdx.x, cuda.blockDim.x
        for s in range(start, stop, cap):
            m = min(cap, stop - s)
            _gather_v1(X, perm, s, m, Abuf, t, nt)
            cuda.syncthreads()
            _forward_v1(params, layout, units, acts, cap, m, Abuf, Zbuf, t, nt)
            _backward_update(Y, perm, s, m, params, velocity, layout, units, acts, loss, cap, Abuf, Zbuf, Dbuf,
                             lr, momentum, decay, cost, t, nt)  # fmt: skip

    @cuda.jit
    def train_fused_v2(X, Y, perm, start, stop, cap, params, velocity, layout, units, acts, loss, Abuf, Zbuf, Dbuf,
                       lr, momentum, decay, cost):  # fmt: skip
        """v2: v1 with the forward products staged through shared memory (W read coalesced) and
        four loads in flight per thread in the gather and the staging."""
        sbuf = cuda.shared.array(FUSED_SHARED, T)
        t, nt = cuda.threadIdx.x, cuda.blockDim.x
        for s in range(start, stop, cap):
            m = min(cap, stop - s)
            _gather_v2(X, perm, s, m, Abuf, t, nt)
            cuda.syncthreads()
            _forward_v2(params, layout, units, acts, cap, m, Abuf, Zbuf, sbuf, t, nt)
            _backward_update(Y, perm, s, m, params, velocity, layout, units, acts, loss, cap, Abuf, Zbuf, Dbuf,
                             lr, momentum, decay, cost, t, nt)  # fmt: skip

    return SimpleNamespace(**{name: obj for name, obj in locals().items() if name != "T" and name[0] != "_"})


@functools.cache
def _kernels(dtype):
    """The kernels for a numpy dtype (the launchers' fast path: one cached lookup)."""
    return _build(numba.from_dtype(dtype))


def _grid2(rows: int, cols: int) -> tuple[int, int]:
    """Blocks covering a (rows, cols) output with TILE x TILE blocks; x runs along the columns."""
    return ((cols + TILE - 1) // TILE or 1, (rows + TILE - 1) // TILE or 1)


_BLOCK2 = (TILE, TILE)


# ---- launchers: same names and argument order as kernels.cpu, plus stream --------------------


def _blocked(rows: int, cols: int) -> bool:
    """Whether a product's (rows, cols) output goes to the register-blocked kernel: when it fills
    64 x 64 tiles. Below that the 16 x 16 tiles waste fewer threads and spread over more blocks.
    (Chosen from the kernels' shared loads per multiply-add, not yet measured on a GPU.)"""
    return rows >= BLOCK and cols >= BLOCK


def forward(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer: Z = A_prev W^T + b, A = f(Z) (blocked or tiled by shape)."""
    if _blocked(Z.shape[0], Z.shape[1]):
        forward_blocked(A_prev, W, b, Z, A, act, stream)
    else:
        forward_tiled(A_prev, W, b, Z, A, act, stream)


def forward_tiled(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer, 16 x 16 shared-memory tiles."""
    k = _kernels(Z.dtype)
    k.forward_tiled[_grid2(Z.shape[0], Z.shape[1]), _BLOCK2, stream](A_prev, W, b, Z, A, act)
    if act == SOFTMAX:  # a second launch on the same stream sees the whole of Z
        k.softmax_rows[(Z.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](Z, A)


def _grid_blocked(rows: int, cols: int) -> tuple[int, int]:
    """Blocks covering a (rows, cols) output with BLOCK x BLOCK tiles; x runs along the columns."""
    return ((cols + BLOCK - 1) // BLOCK or 1, (rows + BLOCK - 1) // BLOCK or 1)


def forward_blocked(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer, register-blocked 64 x 64 tiles."""
    k = _kernels(Z.dtype)
    k.forward_blocked[_grid_blocked(Z.shape[0], Z.shape[1]), _BLOCK2, stream](A_prev, W, b, Z, A, act)
    if act == SOFTMAX:
        k.softmax_rows[(Z.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](Z, A)


def hidden_error_blocked(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2, register-blocked 64 x 64 tiles."""
    _kernels(Delta.dtype).hidden_error_blocked[_grid_blocked(Delta.shape[0], Delta.shape[1]), _BLOCK2, stream](
        Delta_next, W_next, Z, A, Delta, act
    )


def weight_gradient_blocked(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4, register-blocked 64 x 64 tiles (overwrites nabla_w)."""
    _kernels(nabla_w.dtype).weight_gradient_blocked[_grid_blocked(nabla_w.shape[0], nabla_w.shape[1]), _BLOCK2, stream](
        Delta, A_prev, scale, nabla_w
    )


# ---- cuBLAS (through CuPy) for the product, a Numba kernel for the rest ------------------------


@functools.cache
def _cupy():
    """CuPy, or an ImportError that says what the cuBLAS products need."""
    try:
        import cupy
        import cupy.cublas  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the cuBLAS products need CuPy ({e}): pip install 'gpubp[cuda]'") from None
    return cupy


def check_cublas() -> None:
    """Raise ImportError now, not mid-epoch, if the *_cublas products cannot run (no CuPy)."""
    if not numba.config.ENABLE_CUDASIM:
        _cupy()


def check_graphs() -> None:
    """Raise ImportError now, not mid-epoch, if this numba-cuda cannot launch into a CUDA graph
    being recorded (cuda.core's GraphBuilder as a launch's stream)."""
    if not numba.config.ENABLE_CUDASIM:
        try:
            from numba.cuda.cudadrv.driver import GraphBuilder  # noqa: F401
        except ImportError as e:
            raise ImportError(f"recording CUDA graphs needs numba-cuda 0.2x or later with cuda.core ({e})") from None


def stream_pointer(stream) -> int:
    """The CUstream address of a launch's ``stream``: 0 (the legacy default stream), a Numba
    stream, a cuda.core Stream, or a cuda.core GraphBuilder (recording from its own stream)."""
    if isinstance(stream, int):
        return stream
    stream = getattr(stream, "stream", stream)  # a GraphBuilder: the stream being recorded
    handle = stream.handle
    return 0 if handle is None else int(handle)  # CUstream objects convert with int(), not .value


def _gemm(transa: str, transb: str, a, b, out, alpha: float, stream=0) -> None:
    """out = alpha op(a) op(b), op(x) = x or x^T ("N" or "T"): one cuBLAS GEMM on the arrays in place.

    On C-contiguous operands CuPy calls cuBLAS with no temporary array (it computes out^T in
    column-major order), so the call can be recorded into a CUDA graph; alpha is a host scalar,
    which a recording keeps. Numba's CUDA simulator has no cuBLAS: there numpy computes the same
    product on the host."""
    if numba.config.ENABLE_CUDASIM:
        op = {"N": lambda x: x.copy_to_host(), "T": lambda x: x.copy_to_host().T}
        out.copy_to_device((alpha * (op[transa](a) @ op[transb](b))).astype(out.dtype))
        return
    cp = _cupy()
    as_cupy = cp.asarray  # zero-copy views through __cuda_array_interface__
    pointer = stream_pointer(stream)
    if pointer == 0:  # the legacy default stream: CuPy's null stream, where Numba launches too
        cp.cublas.gemm(transa, transb, as_cupy(a), as_cupy(b), out=as_cupy(out), alpha=alpha)
        return
    with cp.cuda.ExternalStream(pointer):
        cp.cublas.gemm(transa, transb, as_cupy(a), as_cupy(b), out=as_cupy(out), alpha=alpha)


def forward_cublas(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer: Z = A_prev W^T by cuBLAS, then Z += b, A = f(Z) in one kernel."""
    k = _kernels(Z.dtype)
    _gemm("N", "T", A_prev, W, Z, 1.0, stream)
    k.bias_activation[_grid2(Z.shape[0], Z.shape[1]), _BLOCK2, stream](Z, b, A, act)
    if act == SOFTMAX:
        k.softmax_rows[(Z.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](Z, A)


def hidden_error_cublas(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2: Delta = Delta_next W_next by cuBLAS, then Delta ⊙= f'(Z) in one kernel."""
    _gemm("N", "N", Delta_next, W_next, Delta, 1.0, stream)
    _kernels(Delta.dtype).times_fprime[_grid2(Delta.shape[0], Delta.shape[1]), _BLOCK2, stream](Z, A, Delta, act)


def weight_gradient_cublas(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4: nabla_w = scale Delta^T A_prev, one cuBLAS GEMM (overwrites nabla_w)."""
    _gemm("T", "N", Delta, A_prev, nabla_w, scale, stream)


def forward_naive(A_prev, W, b, Z, A, act: int, stream=0) -> None:
    """Feedforward for one layer, one thread per output element (the reference for ``forward``)."""
    k = _kernels(Z.dtype)
    k.forward_naive[_grid2(Z.shape[0], Z.shape[1]), _BLOCK2, stream](A_prev, W, b, Z, A, act)
    if act == SOFTMAX:
        k.softmax_rows[(Z.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](Z, A)


def output_error(Z, A, Y, Delta, loss: int, act: int, cost, stream=0) -> None:
    """BP1: Delta = grad_a C ⊙ f'(Z) for every row; cost[0] += sum of the rows' costs C_x."""
    _kernels(Z.dtype).output_error[(Z.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](Z, A, Y, Delta, loss, act, cost)


def hidden_error(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2: Delta = (Delta_next W_next) ⊙ f'(Z) (blocked or tiled by shape)."""
    if _blocked(Delta.shape[0], Delta.shape[1]):
        hidden_error_blocked(Delta_next, W_next, Z, A, Delta, act, stream)
    else:
        hidden_error_tiled(Delta_next, W_next, Z, A, Delta, act, stream)


def hidden_error_tiled(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2, 16 x 16 shared-memory tiles."""
    _kernels(Delta.dtype).hidden_error_tiled[_grid2(Delta.shape[0], Delta.shape[1]), _BLOCK2, stream](
        Delta_next, W_next, Z, A, Delta, act
    )


def hidden_error_naive(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> None:
    """BP2, one thread per output element (the reference for ``hidden_error``)."""
    _kernels(Delta.dtype).hidden_error_naive[_grid2(Delta.shape[0], Delta.shape[1]), _BLOCK2, stream](
        Delta_next, W_next, Z, A, Delta, act
    )


def weight_gradient(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4 summed over the batch: nabla_w = scale * Delta^T A_prev (blocked or tiled by shape;
    overwrites nabla_w)."""
    if _blocked(nabla_w.shape[0], nabla_w.shape[1]):
        weight_gradient_blocked(Delta, A_prev, scale, nabla_w, stream)
    else:
        weight_gradient_tiled(Delta, A_prev, scale, nabla_w, stream)


def weight_gradient_tiled(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4, 16 x 16 shared-memory tiles (overwrites nabla_w)."""
    _kernels(nabla_w.dtype).weight_gradient_tiled[_grid2(nabla_w.shape[0], nabla_w.shape[1]), _BLOCK2, stream](
        Delta, A_prev, scale, nabla_w
    )


def weight_gradient_naive(Delta, A_prev, scale: float, nabla_w, stream=0) -> None:
    """BP4, one thread per output element (the reference for ``weight_gradient``)."""
    _kernels(nabla_w.dtype).weight_gradient_naive[_grid2(nabla_w.shape[0], nabla_w.shape[1]), _BLOCK2, stream](
        Delta, A_prev, scale, nabla_w
    )


def bias_gradient(Delta, scale: float, nabla_b, stream=0) -> None:
    """BP3 summed over the batch: nabla_b = scale * sum_x Delta (overwrites nabla_b)."""
    _kernels(nabla_b.dtype).bias_gradient[(nabla_b.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](
        Delta, scale, nabla_b
    )


def sgd_update(P, nabla, velocity, lr: float, momentum: float, decay: float, stream=0) -> None:
    """SGD on flat arrays: v = momentum v - lr (nabla + decay P);  P += v."""
    _kernels(P.dtype).sgd_update[(P.shape[0] + FLAT - 1) // FLAT or 1, FLAT, stream](
        P, nabla, velocity, lr, momentum, decay
    )


def sgd_update_from(P, nabla, velocity, hyper, stream=0) -> None:
    """SGD on flat arrays with hyper = (lr, momentum, decay) on the device (float64)."""
    _kernels(P.dtype).sgd_update_from[(P.shape[0] + FLAT - 1) // FLAT or 1, FLAT, stream](P, nabla, velocity, hyper)


def gather_rows_at(src, perm, offset, dst, stream=0) -> None:
    """dst[i] = src[perm[offset[0] + i]]: the batch at a position held on the device (int64[1])."""
    _kernels(dst.dtype).gather_rows_at[(dst.shape[0] * dst.shape[1] + FLAT - 1) // FLAT or 1, FLAT, stream](
        src, perm, offset, dst
    )


def advance(offset, step: int, stream=0) -> None:
    """offset[0] += step on the device (offset: int64[1])."""
    _build(numba.float32).advance[1, 1, stream](offset, step)  # no dtype of its own: any build has it


def gather_rows(src, idx, dst, stream=0) -> None:
    """dst[i] = src[idx[i]]: copies a shuffled mini-batch into a work buffer."""
    _kernels(dst.dtype).gather_rows[(dst.shape[0] * dst.shape[1] + FLAT - 1) // FLAT or 1, FLAT, stream](src, idx, dst)


def count_nonfinite(P, out, stream=0) -> None:
    """out[0] += number of NaN/inf entries of the flat array P (out: int64, 1 element)."""
    blocks = min((P.shape[0] + FLAT - 1) // FLAT, NONFINITE_BLOCKS) or 1
    _kernels(P.dtype).count_nonfinite[blocks, FLAT, stream](P, out)


def count_correct(A, Y, correct, stream=0) -> None:
    """correct[0] += number of rows with argmax A[i] == argmax Y[i] (correct: int64, 1 element)."""
    _kernels(A.dtype).count_correct[(A.shape[0] + ROWS - 1) // ROWS or 1, ROWS, stream](A, Y, correct)


# ---- every kernel with an example signature, for compiling to PTX without a GPU ----------------


def train_batches(X, Y, perm, start: int, stop: int, batch_size: int, params, nabla, velocity, layout, units, acts,
                  loss: int, Abuf, Ybuf, Zbuf, Dbuf, lr: float, momentum: float, decay: float, cost,
                  stream=0) -> None:  # fmt: skip
    """Mini-batch SGD over rows perm[start:stop] in one launch (the contract of kernels.cpu.train_batches).

    Launches ``train_fused_v<FUSED_VERSION>``; v2 needs ``fused_fits(batch_size, sizes)``.
    """
    kernel = getattr(_kernels(params.dtype), f"train_fused_v{FUSED_VERSION}")
    kernel[1, FUSED_THREADS, stream](X, Y, perm, start, stop, batch_size, params, velocity, layout, units, acts, loss,
                                     Abuf, Zbuf, Dbuf, lr, momentum, decay, cost)  # fmt: skip


def fused_fits(batch_size: int, sizes: list[int]) -> bool:
    """Whether train_fused_v2 can stage every layer's product: at least one column of a batch of
    activations and of W^l fits in its shared buffer (in practice many more: see its chunk width)."""
    return all(FUSED_SHARED - n_out >= batch_size + n_out for n_out in sizes[1:])


def kernel_signatures() -> dict[str, list[tuple]]:
    """name -> [(kernel dispatcher, signature), ...] for float32 and float64, as the launchers call them.

    Compile with ``numba.cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))``. The signatures are
    those numba infers at launch: C-contiguous arrays, int64 codes and indices, float64 scalars.
    """
    i64 = numba.int64
    out = {}
    for T in (numba.float32, numba.float64):
        k = _build(T)
        M, V = T[:, ::1], T[::1]  # matrix, vector
        sigs = {
            "forward_naive": (M, M, V, M, M, i64),
            "forward_tiled": (M, M, V, M, M, i64),
            "forward_blocked": (M, M, V, M, M, i64),
            "softmax_rows": (M, M),
            "output_error": (M, M, M, M, i64, i64, numba.float64[::1]),  # the cost sums in float64
            "hidden_error_naive": (M, M, M, M, M, i64),
            "hidden_error_tiled": (M, M, M, M, M, i64),
            "hidden_error_blocked": (M, M, M, M, M, i64),
            "weight_gradient_naive": (M, M, numba.float64, M),
            "weight_gradient_tiled": (M, M, numba.float64, M),
            "weight_gradient_blocked": (M, M, numba.float64, M),
            "bias_activation": (M, V, M, i64),
            "times_fprime": (M, M, M, i64),
            "bias_gradient": (M, numba.float64, V),
            "sgd_update": (V, V, V, numba.float64, numba.float64, numba.float64),
            "gather_rows": (M, i64[::1], M),
            "gather_rows_at": (M, i64[::1], i64[::1], M),
            "advance": (i64[::1], i64),
            "sgd_update_from": (V, V, V, numba.float64[::1]),
            "count_nonfinite": (V, i64[::1]),
            "count_correct": (M, M, i64[::1]),
        }
        fused = (M, M, i64[::1], i64, i64, i64, V, V, i64[:, ::1], i64[::1], i64[::1], i64, V, V, V)
        fused += (numba.float64,) * 3 + (numba.float64[::1],)
        sigs["train_fused_v1"] = sigs["train_fused_v2"] = fused
        for name, sig in sigs.items():
            out.setdefault(name, []).append((getattr(k, name), sig))
    return out
