"""@njit CPU kernels: the contracts listed in ``gpubp.kernels``, and the CPU engine (``step``:
one mini-batch in the order of backpropagation; ``train_batches``: an epoch of them in one call).

Loops are laid out so the innermost one runs along contiguous memory and the compiler can
vectorise it (``fastmath`` here allows fused multiply-add, and reassociation in the forward dot
products only, so NaN and inf still propagate and divergence stays detectable).
"""

import hashlib
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numba import njit, typeof, types
from numba.extending import overload

from .activations import SIGMOID, SOFTMAX
from .activations import compile_for as _activations_for
from .losses import compile_for as _losses_for
from .sync import claim, cycles, load_acquire, nap, store_release, yield_core


def _drop_stale_cache() -> None:
    """Numba's on-disk cache checks only this file's timestamp, but these kernels inline the
    formulas of activations.py and losses.py: drop the cache when any of the three changed."""
    here = Path(__file__).parent
    sources = b"".join((here / name).read_bytes() for name in ("activations.py", "losses.py", "sync.py", "cpu.py"))
    stamp, marker = hashlib.sha256(sources).hexdigest(), here / "__pycache__" / "gpubp-kernels.stamp"
    try:
        if marker.read_text() == stamp:
            return
    except OSError:  # no marker yet: the cache may be from any version
        pass
    try:
        for stale in marker.parent.glob("cpu.*.nb[ic]"):
            stale.unlink(missing_ok=True)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(stamp)
    except OSError:  # a read-only install: Numba then caches elsewhere
        pass


_drop_stale_cache()


f, fprime, softmax_row = _activations_for("cpu")
output_error_row = _losses_for("cpu")

# Fused multiply-add and no signed zeros everywhere; reassociation only in the dot products of
# the forward pass, which need it to vectorise their sums along k. Elsewhere it would let LLVM
# regroup a formula such as (a - y) * (a (1 - a)) differently in each copy of a kernel it links
# into a caller: a process compiling fresh and one loading Numba's cache would then round differently.
FASTMATH = {"contract", "nsz"}
jit = njit(cache=True, fastmath=FASTMATH, nogil=True)
dot_jit = njit(cache=True, fastmath=FASTMATH | {"reassoc"}, nogil=True)
# Batches of at least this many rows do their matrix products with BLAS (np.dot, multi-threaded);
# smaller ones with the register-blocked loops below, which beat a BLAS call at that size
# (benchmarks/NOTES.md has the measurements).
BLAS_ROWS = 32


@dot_jit
def weighted_input(A_prev, W, b, Z):
    """Z = A_prev W^T + b, blocked 5 rows x 4 outputs: twenty sums (vectors along k) share nine
    loads, so each loaded value feeds 4-5 multiply-adds. Rows past the last whole block of five
    go through the same block with the last row repeated (and not stored twice), so every row is
    summed by the same code: a row's z does not depend on the rows batched with it."""
    m, n_in = A_prev.shape
    n_out = W.shape[0]
    n4 = n_out - n_out % 4
    zero = Z.dtype.type(0)
    last = m - 1
    for i in range(0, m, 5):
        a0, a1, a2 = A_prev[i], A_prev[min(i + 1, last)], A_prev[min(i + 2, last)]
        a3, a4 = A_prev[min(i + 3, last)], A_prev[min(i + 4, last)]
        rows = min(5, m - i)
        for j in range(0, n4, 4):
            w0, w1, w2, w3 = W[j], W[j + 1], W[j + 2], W[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = zero
            s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = zero
            for k in range(n_in):
                x0, x1, x2, x3 = w0[k], w1[k], w2[k], w3[k]
                s00 += a0[k] * x0
                s01 += a0[k] * x1
                s02 += a0[k] * x2
                s03 += a0[k] * x3
                s10 += a1[k] * x0
                s11 += a1[k] * x1
                s12 += a1[k] * x2
                s13 += a1[k] * x3
                s20 += a2[k] * x0
                s21 += a2[k] * x1
                s22 += a2[k] * x2
                s23 += a2[k] * x3
                s30 += a3[k] * x0
                s31 += a3[k] * x1
                s32 += a3[k] * x2
                s33 += a3[k] * x3
                s40 += a4[k] * x0
                s41 += a4[k] * x1
                s42 += a4[k] * x2
                s43 += a4[k] * x3
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            Z[i, j], Z[i, j + 1], Z[i, j + 2], Z[i, j + 3] = s00 + b0, s01 + b1, s02 + b2, s03 + b3
            if rows > 1:
                Z[i + 1, j], Z[i + 1, j + 1], Z[i + 1, j + 2], Z[i + 1, j + 3] = s10 + b0, s11 + b1, s12 + b2, s13 + b3
            if rows > 2:
                Z[i + 2, j], Z[i + 2, j + 1], Z[i + 2, j + 2], Z[i + 2, j + 3] = s20 + b0, s21 + b1, s22 + b2, s23 + b3
            if rows > 3:
                Z[i + 3, j], Z[i + 3, j + 1], Z[i + 3, j + 2], Z[i + 3, j + 3] = s30 + b0, s31 + b1, s32 + b2, s33 + b3
            if rows > 4:
                Z[i + 4, j], Z[i + 4, j + 1], Z[i + 4, j + 2], Z[i + 4, j + 3] = s40 + b0, s41 + b1, s42 + b2, s43 + b3
        for j in range(n4, n_out):
            w = W[j]
            t0 = t1 = t2 = t3 = t4 = zero
            for k in range(n_in):
                t0 += a0[k] * w[k]
                t1 += a1[k] * w[k]
                t2 += a2[k] * w[k]
                t3 += a3[k] * w[k]
                t4 += a4[k] * w[k]
            c = b[j]
            Z[i, j] = t0 + c
            if rows > 1:
                Z[i + 1, j] = t1 + c
            if rows > 2:
                Z[i + 2, j] = t2 + c
            if rows > 3:
                Z[i + 3, j] = t3 + c
            if rows > 4:
                Z[i + 4, j] = t4 + c


def sigmoid_row(z, a, bits):
    """a = 1 / (1 + e^-z) along one row; ``bits`` is an int32 scratch row at least as long."""
    raise NotImplementedError  # compiled through the overload below, per dtype


def _sigmoid_row_f32(z, a, bits):
    """float32: e^x as 2^k e^r with k = round(x / ln 2), |r| <= ln(2)/2, e^r by Cephes' expf
    polynomial (within ~1e-7 relative), 2^k made from its bits. Unlike math.exp, these loops
    vectorise: a row of 30 sigmoids costs ~4x less. z < -88 gives 0 (as 1 / (1 + inf) would) and NaN stays NaN."""
    f32 = np.float32
    scale = bits.view(np.float32)
    for j in range(z.shape[0]):
        x = -z[j]
        x = x if x < f32(88.0) else f32(88.0)  # NaN becomes 88 here and is put back below
        x = x if x > f32(-88.0) else f32(-88.0)
        k = math.floor(x * f32(1.44269504) + f32(0.5))
        r = x - k * f32(0.693359375) + k * f32(2.12194440e-4)
        p = f32(1.9875691500e-4)
        p = p * r + f32(1.3981999507e-3)
        p = p * r + f32(8.3334519073e-3)
        p = p * r + f32(4.1665795894e-2)
        p = p * r + f32(1.6666665459e-1)
        p = p * r + f32(5.0000001201e-1)
        a[j] = p * r * r + r + f32(1)  # e^r
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)  # the float 2^k
    for j in range(z.shape[0]):
        s = f32(1) / (f32(1) + a[j] * scale[j])
        s = s if z[j] > f32(-88.0) else f32(0)
        a[j] = s if z[j] == z[j] else z[j]


@overload(sigmoid_row, jit_options={"fastmath": FASTMATH})
def _sigmoid_row(z, a, bits):
    if z.dtype == types.float32:
        return _sigmoid_row_f32

    def exact(z, a, bits):  # float64: math.exp, as the other activations
        one = z.dtype.type(1)
        for j in range(z.shape[0]):
            a[j] = f(z[j], SIGMOID, one)

    return exact


@jit
def forward(A_prev, W, b, Z, A, act):
    """Feedforward for one layer: Z = A_prev W^T + b, A = f(Z)."""
    if A_prev.shape[0] >= BLAS_ROWS:
        np.dot(A_prev, W.T, Z)
        Z += b
    else:
        weighted_input(A_prev, W, b, Z)
    one = Z.dtype.type(1)
    if act == SOFTMAX:
        for i in range(Z.shape[0]):
            softmax_row(Z[i], A[i])
    elif act == SIGMOID:  # over all m x n at once (Z and A are contiguous): rows are too short to vectorise
        sigmoid_row(Z.reshape(Z.size), A.reshape(A.size), np.empty(Z.size, np.int32))
    else:
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                A[i, j] = f(Z[i, j], act, one)


@jit
def output_error(Z, A, Y, Delta, loss, act, cost):
    """BP1: Delta = grad_a C ⊙ f'(Z) for every row; cost[0] += sum of the rows' costs C_x."""
    total = 0.0
    for i in range(Z.shape[0]):
        total += output_error_row(Z[i], A[i], Y[i], Delta[i], loss, act)
    cost[0] += total


@jit
def hidden_error(Delta_next, W_next, Z, A, Delta, act):
    """BP2: Delta = (Delta_next W_next) ⊙ f'(Z), the Hadamard product fused with the product."""
    if Delta.shape[0] >= BLAS_ROWS:
        np.dot(Delta_next, W_next, Delta)
        times_fprime(Z, A, Delta, act)
    else:
        hidden_error_loops(Delta_next, W_next, Z, A, Delta, act, 0, Delta.shape[1])


@jit
def hidden_error_loops(Delta_next, W_next, Z, A, Delta, act, j0, j1):
    """BP2 for a small batch, for units j0..j1: row i of Delta_next W_next accumulated row by
    row of W_next (rows sliced here, so that the loop runs along contiguous memory), then ⊙ f'(Z)."""
    for i in range(Delta.shape[0]):
        delta = Delta[i, j0:j1]
        delta[:] = 0
        for k in range(W_next.shape[0]):
            d, w = Delta_next[i, k], W_next[k, j0:j1]
            for j in range(j1 - j0):
                delta[j] += d * w[j]
    times_fprime(Z[:, j0:j1], A[:, j0:j1], Delta[:, j0:j1], act)


@jit
def times_fprime(Z, A, Delta, act):
    """Delta ⊙= f'(Z): BP1's and BP2's Hadamard product."""
    one = Delta.dtype.type(1)
    for i in range(Delta.shape[0]):
        for j in range(Delta.shape[1]):
            Delta[i, j] *= fprime(Z[i, j], A[i, j], act, one)


@jit
def weight_gradient(Delta, A_prev, scale, nabla_w):
    """BP4 summed over the batch: nabla_w = scale * Delta^T A_prev (a sum of outer products)."""
    if Delta.shape[0] >= BLAS_ROWS:
        np.dot(Delta.T, A_prev, nabla_w)
    else:
        gradient_step(Delta, A_prev, nabla_w, nabla_w, 0.0, scale, False)
        return
    nabla_w *= nabla_w.dtype.type(scale)


@jit
def bias_gradient(Delta, scale, nabla_b):
    """BP3 summed over the batch: nabla_b = scale * sum_x Delta."""
    nabla_b[:] = 0
    for i in range(Delta.shape[0]):
        for j in range(Delta.shape[1]):
            nabla_b[j] += Delta[i, j]
    for j in range(nabla_b.shape[0]):
        nabla_b[j] *= scale


@jit
def sgd_update(P, nabla, velocity, lr, momentum, decay):
    """SGD with momentum and L2 weight decay on a flat parameter array P.

    v <- momentum v - lr (nabla + decay P);  P <- P + v.  With momentum = decay = 0 this is
    plain SGD, P <- P - lr nabla.
    """
    t = P.dtype.type  # keep float32 arithmetic in float32
    lr, momentum, decay = t(lr), t(momentum), t(decay)
    if momentum == 0 and decay == 0:  # plain SGD: the velocity is just this step
        for k in range(P.shape[0]):
            velocity[k] = -lr * nabla[k]
            P[k] += velocity[k]
        return
    for k in range(P.shape[0]):
        v = momentum * velocity[k] - lr * (nabla[k] + decay * P[k])
        velocity[k] = v
        P[k] += v


@jit
def rows5_outputs4(Delta, A_prev, i, j, G, W, lrs, first, final):
    """Five samples (rows i..i+4) into four outputs (j..j+3) per pass along k: 20 FMAs per 9 loads.

    G[q] = (0 if first else G[q]) + sum_r Delta[i+r, j+q] A_prev[i+r]; with ``final`` instead
    W[j+q] -= lrs * that (the plain SGD step; G is then left as it was)."""
    a0, a1, a2, a3, a4 = A_prev[i], A_prev[i + 1], A_prev[i + 2], A_prev[i + 3], A_prev[i + 4]
    g0, g1, g2, g3 = G[0], G[1], G[2], G[3]
    w0, w1, w2, w3 = W[j], W[j + 1], W[j + 2], W[j + 3]
    e0, e1, e2, e3, e4 = Delta[i], Delta[i + 1], Delta[i + 2], Delta[i + 3], Delta[i + 4]
    p0, p1, p2, p3, p4 = e0[j], e1[j], e2[j], e3[j], e4[j]
    q0, q1, q2, q3, q4 = e0[j + 1], e1[j + 1], e2[j + 1], e3[j + 1], e4[j + 1]
    r0, r1, r2, r3, r4 = e0[j + 2], e1[j + 2], e2[j + 2], e3[j + 2], e4[j + 2]
    s0, s1, s2, s3, s4 = e0[j + 3], e1[j + 3], e2[j + 3], e3[j + 3], e4[j + 3]
    n = a0.shape[0]
    if first:  # (never with final: gradient_step takes that step in a separate pass)
        for k in range(n):
            x0, x1, x2, x3, x4 = a0[k], a1[k], a2[k], a3[k], a4[k]
            g0[k] = p0 * x0 + p1 * x1 + p2 * x2 + p3 * x3 + p4 * x4
            g1[k] = q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3 + q4 * x4
            g2[k] = r0 * x0 + r1 * x1 + r2 * x2 + r3 * x3 + r4 * x4
            g3[k] = s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3 + s4 * x4
    elif not final:
        for k in range(n):
            x0, x1, x2, x3, x4 = a0[k], a1[k], a2[k], a3[k], a4[k]
            g0[k] += p0 * x0 + p1 * x1 + p2 * x2 + p3 * x3 + p4 * x4
            g1[k] += q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3 + q4 * x4
            g2[k] += r0 * x0 + r1 * x1 + r2 * x2 + r3 * x3 + r4 * x4
            g3[k] += s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3 + s4 * x4
    else:
        for k in range(n):
            x0, x1, x2, x3, x4 = a0[k], a1[k], a2[k], a3[k], a4[k]
            w0[k] -= lrs * (g0[k] + p0 * x0 + p1 * x1 + p2 * x2 + p3 * x3 + p4 * x4)
            w1[k] -= lrs * (g1[k] + q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3 + q4 * x4)
            w2[k] -= lrs * (g2[k] + r0 * x0 + r1 * x1 + r2 * x2 + r3 * x3 + r4 * x4)
            w3[k] -= lrs * (g3[k] + s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3 + s4 * x4)


@jit
def rows5_output1(Delta, A_prev, i, j, g, first):
    """Five samples into one output: g = (0 if first else g) + sum_r Delta[i+r, j] A_prev[i+r]."""
    a0, a1, a2, a3, a4 = A_prev[i], A_prev[i + 1], A_prev[i + 2], A_prev[i + 3], A_prev[i + 4]
    d0, d1, d2, d3, d4 = Delta[i, j], Delta[i + 1, j], Delta[i + 2, j], Delta[i + 3, j], Delta[i + 4, j]
    if first:
        for k in range(g.shape[0]):
            g[k] = d0 * a0[k] + d1 * a1[k] + d2 * a2[k] + d3 * a3[k] + d4 * a4[k]
    else:
        for k in range(g.shape[0]):
            g[k] += d0 * a0[k] + d1 * a1[k] + d2 * a2[k] + d3 * a3[k] + d4 * a4[k]


@jit
def row_outputs(Delta, A_prev, i, j, nj, G, first):
    """One sample into outputs j..j+nj-1: G[q] = (0 if first else G[q]) + Delta[i, j+q] A_prev[i]."""
    a = A_prev[i]
    for q in range(nj):
        g, d = G[q], Delta[i, j + q]
        if first:
            for k in range(a.shape[0]):
                g[k] = d * a[k]
        else:
            for k in range(a.shape[0]):
                g[k] += d * a[k]


@jit
def step_rows10(Delta, A_prev, W, lrs):
    """The plain SGD step W -= lrs Delta^T A_prev for a batch of exactly 10 rows (``fit``'s default),
    one output at a time over all ten samples in one pass: ten multiply-adds per loaded W value,
    no gradient row written. Measured faster than the 5 x 4 blocks, whose scratch rows cost more
    in stores than their shared loads save."""
    a0, a1, a2, a3, a4 = A_prev[0], A_prev[1], A_prev[2], A_prev[3], A_prev[4]
    a5, a6, a7, a8, a9 = A_prev[5], A_prev[6], A_prev[7], A_prev[8], A_prev[9]
    for j in range(W.shape[0]):
        w = W[j]
        d0, d1, d2, d3, d4 = Delta[0, j], Delta[1, j], Delta[2, j], Delta[3, j], Delta[4, j]
        d5, d6, d7, d8, d9 = Delta[5, j], Delta[6, j], Delta[7, j], Delta[8, j], Delta[9, j]
        for k in range(w.shape[0]):
            g = d0 * a0[k] + d1 * a1[k] + d2 * a2[k] + d3 * a3[k] + d4 * a4[k]
            g += d5 * a5[k] + d6 * a6[k] + d7 * a7[k] + d8 * a8[k] + d9 * a9[k]
            w[k] -= lrs * g


@jit
def gradient_step(Delta, A_prev, W, nabla_w, lr, scale, plain):
    """BP4 for a small batch, blocked 5 samples x 4 outputs: nabla_w = scale Delta^T A_prev.

    With ``plain``, the plain SGD step W -= lr nabla_w is taken instead, in the same pass as the
    last block of samples where it can; nabla_w then holds partial sums (a scratch row per output)."""
    m = Delta.shape[0]
    n_out = W.shape[0]
    m5 = m - m % 5
    lrs = W.dtype.type(lr * scale)
    s = W.dtype.type(scale)
    if plain and m == 10:
        step_rows10(Delta, A_prev, W, lrs)
        return
    for j in range(0, n_out, 4):
        nj = min(4, n_out - j)
        G = nabla_w[j : j + nj]
        first, final = True, False
        for i in range(0, m5, 5):
            if nj == 4:
                final = plain and not first and i + 5 == m  # the step taken in this pass
                rows5_outputs4(Delta, A_prev, i, j, G, W, lrs, first, final)
            else:
                for q in range(nj):
                    rows5_output1(Delta, A_prev, i, j + q, G[q], first)
            first = False
        if final:
            continue
        for i in range(m5, m):
            row_outputs(Delta, A_prev, i, j, nj, G, first)
            first = False
        for q in range(nj):
            g = G[q]
            if plain:
                w = W[j + q]
                for k in range(g.shape[0]):
                    w[k] -= lrs * g[k]
            else:
                for k in range(g.shape[0]):
                    g[k] *= s


# ---------------------------------------------------------------------------------------------
# The engine. A network's arrays and its work buffers travel as two named tuples, built once per
# network by ``gpubp.workspace``; kernels.cuda.fused takes the same two.


class NetArrays(NamedTuple):
    """A network's arrays. Parameters live in one flat array: all weights W^1..W^L, then all
    biases; the gradient and the momentum state are laid out the same way."""

    params: Any
    nabla: Any
    velocity: Any
    layout: Any  # int64 (L, 4): row l-1 = (offset of W^l, offset of b^l, n_out, n_in)
    row_offsets: Any  # int64 (L + 2,): sum(sizes[:l]); slot l of a work buffer starts at cap * row_offsets[l]
    act_codes: Any  # int64 (L,): the activation of layer l at l-1 (``activations.CODES``)
    loss: int  # ``losses.CODES``


class WorkBuffers(NamedTuple):
    """Flat buffers for batches of up to ``cap`` rows: slot l of A, Z and D holds layer l's
    (m, sizes[l]) rows of a, z and delta; slot 0 of A is the input batch."""

    A: Any
    Z: Any
    D: Any
    Y: Any  # the batch's targets, (m, sizes[-1]) from the start
    cost: Any  # float64 (1,): += the sum of the rows' costs
    cap: int


def bind(kernel, *args):
    """``kernel`` compiled for the Numba types of ``args`` (loaded from Numba's cache, or compiled
    now), called without the dispatcher, which types every argument on every call: each named
    tuple takes it ~1.2 us. Scalars are converted to those types; arrays and named tuples must
    have them (nothing checks). Under NUMBA_DISABLE_JIT, the kernel itself."""
    return kernel.compile(tuple(typeof(a) for a in args)) if hasattr(kernel, "compile") else kernel


@njit(cache=True, inline="always")
def weights(params, layout, l):
    """Views (W, b) of the layer in row l of ``layout``, in a flat array laid out as the parameters."""
    w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
    return params[w_off : w_off + n_out * n_in].reshape((n_out, n_in)), params[b_off : b_off + n_out]


@njit(cache=True, inline="always")
def slot(buf, row_offsets, l, cap, m):
    """View of layer l's rows (m, sizes[l]) in a work buffer for up to ``cap`` rows."""
    off = cap * row_offsets[l]
    n = row_offsets[l + 1] - row_offsets[l]
    return buf[off : off + m * n].reshape((m, n))


@njit(cache=True, inline="always")
def targets(work, n, m):
    """View of the batch's m targets of n outputs in work.Y."""
    return work.Y[: m * n].reshape((m, n))


@jit
def sgd_layer(net, l, Delta, A_prev, lr, scale, momentum, decay, keep, j0, j1):
    """BP3, BP4 and the SGD step of units j0..j1 of the layer in row l of net.layout (all of
    them, or a part of a batch split by units: ``units_step``), fused: each row of nabla_w is used
    while in cache. Delta is the whole layer's; BLAS is called for whole layers only, parts take
    the loops at any batch size.

    Plain SGD (momentum = decay = 0) steps by W -= (lr scale) sum_x delta a^T from the unscaled
    sum, in the gradient's own pass, whatever ``keep`` says: every batch of ``fit`` and every
    ``step()`` take the same arithmetic. With ``keep`` nabla_w and vel_w are then written as
    weight_gradient and sgd_update would leave them (the last batch of an epoch); without, they
    are scratch. Otherwise: weight_gradient, then sgd_update with momentum and weight decay.
    """
    W, b = weights(net.params, net.layout, l)
    nabla_w, nabla_b = weights(net.nabla, net.layout, l)
    vel_w, vel_b = weights(net.velocity, net.layout, l)
    W, b, nabla_w, nabla_b = W[j0:j1], b[j0:j1], nabla_w[j0:j1], nabla_b[j0:j1]
    vel_w, vel_b = vel_w[j0:j1], vel_b[j0:j1]
    D, blas = Delta[:, j0:j1], Delta.shape[0] >= BLAS_ROWS and j1 - j0 == Delta.shape[1]
    if blas:  # the whole layer's unscaled sum Delta^T A_prev (scaled or stepped by below)
        np.dot(Delta.T, A_prev, nabla_w)
    if momentum == 0 and decay == 0:
        if blas:  # W -= (lr scale) sum in one pass
            w, g, lrs = W.ravel(), nabla_w.ravel(), W.dtype.type(lr * scale)
            for k in range(w.shape[0]):
                w[k] -= lrs * g[k]
        else:
            gradient_step(D, A_prev, W, nabla_w, lr, scale, True)
        if keep:  # the record of this step: nabla = dC/dW, v = -lr nabla
            scaled_gradient(D, A_prev, scale, nabla_w, blas)
            g, v, t = nabla_w.ravel(), vel_w.ravel(), W.dtype.type(lr)
            for k in range(g.shape[0]):
                v[k] = -t * g[k]
    else:
        scaled_gradient(D, A_prev, scale, nabla_w, blas)
        sgd_update(W.ravel(), nabla_w.ravel(), vel_w.ravel(), lr, momentum, decay)
    bias_gradient(D, scale, nabla_b)
    sgd_update(b, nabla_b, vel_b, lr, momentum, 0.0)


@jit
def scaled_gradient(D, A_prev, scale, nabla_w, summed):
    """BP4 as weight_gradient leaves it: nabla_w = scale D^T A_prev, from the sum already in
    nabla_w if ``summed`` (by BLAS), else by the small batch's loops."""
    if summed:
        nabla_w *= nabla_w.dtype.type(scale)
    else:
        gradient_step(D, A_prev, nabla_w, nabla_w, 0.0, scale, False)


@jit
def count_nonfinite(P, out):
    """out[0] += number of NaN or inf entries of the flat array P (divergence check)."""
    bad = 0
    for k in range(P.shape[0]):
        if not np.isfinite(P[k]):
            bad += 1
    out[0] += bad


@jit
def count_correct(A, Y, correct):
    """correct[0] += number of rows whose largest output is where Y's largest entry is (the first
    of equal maxima); a row with a NaN output never counts."""
    hits = 0
    for i in range(A.shape[0]):
        k = np.argmax(A[i])  # the first NaN if the row has one
        if k == np.argmax(Y[i]) and A[i, k] == A[i, k]:
            hits += 1
    correct[0] += hits


@jit
def gather_rows(src, idx, dst):
    """dst[i] = src[idx[i]]: copies a shuffled mini-batch into a work buffer."""
    for i in range(idx.shape[0]):  # an explicit loop: measured 3.5x faster than dst[i, :] = src[idx[i]]
        row, out = src[idx[i]], dst[i]
        for k in range(row.shape[0]):
            out[k] = row[k]


@jit
def feedforward(net, work, m):
    """z^l = W^l a^(l-1) + b^l, a^l = f(z^l) for l = 1..L, on the batch of m rows in slot 0 of work.A."""
    offsets, cap = net.row_offsets, work.cap
    for l in range(net.layout.shape[0]):
        W, b = weights(net.params, net.layout, l)
        A_prev, A = slot(work.A, offsets, l, cap, m), slot(work.A, offsets, l + 1, cap, m)
        forward(A_prev, W, b, slot(work.Z, offsets, l + 1, cap, m), A, net.act_codes[l])


@jit
def step(net, work, m, scale, lr, momentum, decay, update, keep):
    """One mini-batch of backpropagation on the m rows in slot 0 of work.A and their targets in
    work.Y: the CPU's layer order.

    Forward down the layers, BP1, then from layer L down: BP2 (reading W^l before it changes),
    then BP3/BP4 into ``nabla``, scaled by ``scale`` (1/m: the batch's mean), and, if ``update``,
    the SGD step of that layer fused with them (each row of nabla_w used while in cache; ``keep``:
    see sgd_layer). With ``update`` false the work buffers keep every z, a and delta and ``nabla``
    the gradient, for an update elsewhere.
    """
    L, offsets, cap = net.layout.shape[0], net.row_offsets, work.cap
    feedforward(net, work, m)
    D, Z, A = slot(work.D, offsets, L, cap, m), slot(work.Z, offsets, L, cap, m), slot(work.A, offsets, L, cap, m)
    output_error(Z, A, targets(work, A.shape[1], m), D, net.loss, net.act_codes[L - 1], work.cost)  # BP1
    for l in range(L - 1, -1, -1):
        delta, A_prev = slot(work.D, offsets, l + 1, cap, m), slot(work.A, offsets, l, cap, m)
        if l > 0:  # BP2: delta^(l-1) from W^l, before W^l is updated
            W = weights(net.params, net.layout, l)[0]
            Z_prev, D_prev = slot(work.Z, offsets, l, cap, m), slot(work.D, offsets, l, cap, m)
            hidden_error(delta, W, Z_prev, A_prev, D_prev, net.act_codes[l - 1])
        if update:  # BP4, BP3 and the update, fused
            sgd_layer(net, l, delta, A_prev, lr, scale, momentum, decay, keep, 0, delta.shape[1])
        else:
            gW, gb = weights(net.nabla, net.layout, l)
            weight_gradient(delta, A_prev, scale, gW)  # BP4
            bias_gradient(delta, scale, gb)  # BP3


@jit
def train_batches(X, Y, perm, start, stop, net, work, lr, momentum, decay):
    """Mini-batch SGD over rows perm[start:stop], work.cap rows at a time."""
    for s in range(start, stop, work.cap):
        e = min(s + work.cap, stop)
        batch_step(X, Y, perm, s, e, net, work, (lr, momentum, decay), e == stop)


@jit
def batch_step(X, Y, perm, s, e, net, work, hyper, keep):
    """One step of mini-batch SGD (``step``) on rows perm[s:e] of (X, Y), gathered into the work
    buffers; ``keep`` for the last batch of an epoch, which leaves nabla and velocity as a step by
    step() would."""
    m, (lr, momentum, decay) = e - s, hyper
    gather_rows(X, perm[s:e], slot(work.A, net.row_offsets, 0, work.cap, m))
    gather_rows(Y, perm[s:e], targets(work, Y.shape[1], m))
    step(net, work, m, 1.0 / m, lr, momentum, decay, True, keep)


# ---------------------------------------------------------------------------------------------
# A batch in two halves. A batch of at least SPLIT_ROWS rows is backpropagated as two halves of
# rows, and its gradient is the first half's plus the second's, in that order, whichever thread
# computed the second: a helper thread (``serve_halves``) on the second core when it is there and
# on time, else this one. The parameters a seed trains to therefore do not depend on the cores.

SPLIT_ROWS = 64

# The int64 flags the two threads hand a batch over with: a ticket posted, started and done, the
# batch as one word (its first row in the order << 32 | its rows: read whole, never half of one
# batch and half of the next), QUIT, and AWAKE (this batch or the next is offered: do not nap).
POSTED, STARTED, DONE, BATCH, QUIT, AWAKE = range(6)


class Halves(NamedTuple):
    """Where the second half of a batch is computed: on the helper thread, in network arrays with
    a nabla of its own and work buffers of its own (and a cost); on this thread, in network arrays
    with a spare nabla and this thread's work buffers with a spare cost; and the flags."""

    helper_net: Any  # NetArrays
    helper_work: Any  # WorkBuffers
    solo_net: Any
    solo_work: Any
    flags: Any  # int64 (AWAKE + 1,)


@jit
def half_gradient(X, Y, idx, scale, net, work):
    """nabla = scale sum_x dC_x/dp over rows idx of (X, Y) (BP1-BP4, no update); cost += theirs."""
    m = idx.shape[0]
    gather_rows(X, idx, slot(work.A, net.row_offsets, 0, work.cap, m))
    gather_rows(Y, idx, targets(work, Y.shape[1], m))
    step(net, work, m, scale, 0.0, 0.0, 0.0, False, False)


# Empty polls in a row after which an idle helper naps (~0.1-0.3 ms of yields), unless AWAKE says
# work is coming: its partner is then working alone (backing off, or between epochs), and on a
# busy machine a helper that only yields still takes a share of a core from it and from the others.
IDLE_POLLS = 256


@jit
def next_post(flags, seen):
    """The helper's wait for a ticket other than ``seen`` in flags[POSTED], returned; -1 once QUIT
    is set. It yields the core between polls, and after IDLE_POLLS empty ones naps 50 us at a
    time while flags[AWAKE] is 0 (a nap's wake-up, 50-100 us, would miss a half's start)."""
    polls = 0
    while True:
        ticket = load_acquire(flags, POSTED)
        if ticket != seen:
            return ticket
        if load_acquire(flags, QUIT) != 0:
            return -1
        if polls < IDLE_POLLS or load_acquire(flags, AWAKE) != 0:
            yield_core()
        else:
            nap(50)
        polls += 1


@jit
def serve_halves(X, Y, perm, halves):
    """The helper thread: the second half of every batch posted in halves.flags, until QUIT."""
    f, net, work = halves.flags, halves.helper_net, halves.helper_work
    done = load_acquire(f, DONE)
    while True:
        ticket = next_post(f, done)
        if ticket < 0:
            return
        batch = load_acquire(f, BATCH)  # a later ticket's batch, if posted meanwhile: not used then
        s, m = batch >> 32, batch & 0xFFFFFFFF
        store_release(f, STARTED, ticket)
        work.cost[0] = 0.0
        half_gradient(X, Y, perm[s + m // 2 : s + m], 1.0 / m, net, work)
        store_release(f, DONE, ticket)
        done = ticket


@jit
def halves_step(X, Y, perm, s, e, net, work, halves, hyper, keep, ask):
    """One step of mini-batch SGD on rows perm[s:e] of (X, Y), as two halves: the first here,
    the second on the helper thread if ``ask`` (and it starts in time), else here too; then
    nabla = first + second and the SGD step on all parameters (weights with decay).

    Returns 0 if the helper was on time (or not asked), 1 if this thread waited for it longer
    than its own half took (doing the half here would have been faster: a lost core, not a helper
    slowed by fetching W from this core's cache, which still saves time), 2 if it did not start in
    time and this thread did the half."""
    (lr, momentum, decay), m = hyper, e - s
    h, f, scale, ticket = s + m // 2, halves.flags, 1.0 / m, 0
    if ask:
        ticket = f[POSTED] + 1
        f[BATCH] = (s << 32) | m
        store_release(f, POSTED, ticket)
    t0 = cycles()
    half_gradient(X, Y, perm[s:h], scale, net, work)
    t1 = cycles()
    late = 0
    if ask:
        while load_acquire(f, DONE) != ticket:
            if load_acquire(f, STARTED) != ticket and cycles() - t1 > (t1 - t0) // 4:
                late = 2
                break
            yield_core()
        if late == 0 and cycles() - t1 > t1 - t0:
            late = 1
    if ask and late != 2:
        second, cost = halves.helper_net.nabla, halves.helper_work.cost
    else:
        second, cost = halves.solo_net.nabla, halves.solo_work.cost
        cost[0] = 0.0
        half_gradient(X, Y, perm[h:e], scale, halves.solo_net, halves.solo_work)
    work.cost[0] += cost[0]
    g = net.nabla
    if momentum == 0 and decay == 0:
        sgd_update_sum(net.params, g, second, net.velocity, lr, keep)
        return late
    for k in range(g.shape[0]):
        g[k] += second[k]
    nw = net.layout[0, 1]
    sgd_update(net.params[:nw], g[:nw], net.velocity[:nw], lr, momentum, decay)
    sgd_update(net.params[nw:], g[nw:], net.velocity[nw:], lr, momentum, 0.0)
    return late


@njit(cache=True, fastmath={"nsz"}, nogil=True)  # no "contract": P + (-lr g) rounds twice, with or without keep
def sgd_update_sum(P, nabla, other, velocity, lr, keep):
    """Plain SGD from two halves' gradients in one pass: P <- P - lr (nabla + other). With
    ``keep``, nabla and velocity are then left as sgd_update leaves them (nabla the sum, v = -lr
    nabla); without, neither is written (a pass over two arrays saved: ~45 of ~80 us a step at
    784-256-128-10), and P gets the same bits."""
    t = P.dtype.type(lr)
    if keep:
        for k in range(P.shape[0]):
            g = nabla[k] + other[k]
            v = -t * g
            nabla[k], velocity[k] = g, v
            P[k] += v
    else:
        for k in range(P.shape[0]):
            P[k] += -t * (nabla[k] + other[k])


# After a batch the helper was late for, this thread works alone for 1, 2, 4, ... up to 1024
# batches (the helper's core is likely taken); that wait halves only after ON_TIME batches in a
# row on time. Under load a late helper is common and each costs a scheduler slice (milliseconds)
# against a step of ~0.1 ms: halving after each batch on time, the units at batch 16 took 2.3-2.6
# times their idle epoch with one busy process.
ON_TIME = 64


@jit
def backoff(state, asked, late):
    """Whether to offer the next batch to the helper, after a batch offered (``asked``) and
    ``late``, or not. state: int64 [batches still alone, the next wait, batches on time in a row]."""
    if not asked:
        state[0] = max(0, state[0] - 1)
    elif late:
        state[0], state[1], state[2] = state[1], min(2 * state[1], 1024), 0
    else:
        state[2] += 1
        if state[2] >= ON_TIME:
            state[1], state[2] = max(1, state[1] // 2), 0
    return state[0] == 0


@jit
def stay_awake(flags, ask, state):
    """Tell the helper whether to keep polling (this batch or, ``state`` says, the next is offered
    to it: a batch gives a napping helper time to wake) or may nap (this thread works alone)."""
    store_release(flags, AWAKE, 1 if ask or state[0] <= 1 else 0)


@jit
def train_batches_in_halves(X, Y, perm, start, stop, net, work, halves, lr, momentum, decay, helper):
    """Mini-batch SGD over rows perm[start:stop], work.cap (>= SPLIT_ROWS) rows at a time, each
    batch in two halves (``halves_step``; a last batch under SPLIT_ROWS rows whole). With
    ``helper``, the second halves go to the helper thread; after a batch it was late for, this
    thread does them itself for a while (``backoff``)."""
    cap, state, ask = work.cap, np.array([0, 1, 0]), helper
    for s in range(start, stop, cap):
        e = min(s + cap, stop)
        keep = e == stop  # the last batch leaves nabla and velocity as a step by step() would
        stay_awake(halves.flags, ask, state)
        if e - s < SPLIT_ROWS:
            batch_step(X, Y, perm, s, e, net, work, (lr, momentum, decay), keep)
            continue
        late = halves_step(X, Y, perm, s, e, net, work, halves, (lr, momentum, decay), keep, ask)
        ask = helper and backoff(state, ask, late != 0)


# ---------------------------------------------------------------------------------------------
# A small batch split by units. A batch of UNIT_ROWS to BLAS_ROWS - 1 rows is backpropagated in
# phases, each in two parts: of each layer's units (the first ``Units.cuts[l]`` of layer l + 1,
# then the rest) or, for the gather, of the batch's rows. The first part is computed here, the
# second on a helper thread (``serve_units``) if it claims it first, else here too: whoever
# computes a part computes it the same way, so the parameters a seed trains to do not depend on
# the cores. Unlike two halves of rows, two parts of units need no sum of two gradients: each
# thread updates its own rows of W^l. The output layer's feedforward and BP1 are computed whole,
# here. A step, for L layers: gather | F 1 | ... | F L-1 | (F L, BP1) | BP2 L-1 | ... | BP2 1 | update.

UNIT_ROWS = 12

# What a phase does (``Units.flags[TASK]``: kind << 40 | keep << 32 | l).
GATHER, FORWARD, BACKWARD, UPDATE = range(4)
# Beside the halves' flags: the last ticket claimed (by either thread) and the posted task.
CLAIMED, TASK = STARTED, AWAKE + 1


class Units(NamedTuple):
    """How a batch is split by units: cuts[l] units of layer l + 1 in the first part (a multiple of
    4, the blocks of weighted_input and gradient_step), the rest in the second; and the flags."""

    cuts: Any  # int64 (L,)
    flags: Any  # int64 (TASK + 1,)


@jit
def forward_units(A_prev, W, b, Z, A, act, j0, j1):
    """Feedforward for units j0..j1 of one layer (not softmax), under BLAS_ROWS rows:
    Z[:, j0:j1] = A_prev W[j0:j1]^T + b[j0:j1], A[:, j0:j1] = f(Z[:, j0:j1])."""
    weighted_input(A_prev, W[j0:j1], b[j0:j1], Z[:, j0:j1])
    one, bits = Z.dtype.type(1), np.empty(j1 - j0, np.int32)
    for i in range(Z.shape[0]):
        z, a = Z[i, j0:j1], A[i, j0:j1]  # contiguous: the loops vectorise
        if act == SIGMOID:
            sigmoid_row(z, a, bits)
        else:
            for j in range(j1 - j0):
                a[j] = f(z[j], act, one)


@jit
def unit_task(X, Y, perm, net, work, units, task, batch, part, hyper):
    """Part ``part`` (0 or 1) of one phase of a step split by units, on the batch rows
    perm[s:s + m] (batch = s << 32 | m)."""
    kind, keep, l = task >> 40, (task >> 32) & 1 == 1, task & 0xFFFFFFFF
    s, m = batch >> 32, batch & 0xFFFFFFFF
    offsets, cap = net.row_offsets, work.cap
    if kind == GATHER:  # rows 0..m/2 or m/2..m of the batch
        r0, r1 = (0, m // 2) if part == 0 else (m // 2, m)
        gather_rows(X, perm[s + r0 : s + r1], slot(work.A, offsets, 0, cap, m)[r0:r1])
        gather_rows(Y, perm[s + r0 : s + r1], targets(work, Y.shape[1], m)[r0:r1])
    elif kind == UPDATE:  # BP3, BP4 and the SGD step of every layer's part
        lr, momentum, decay = hyper
        for k in range(net.layout.shape[0]):
            j0, j1 = (0, units.cuts[k]) if part == 0 else (units.cuts[k], net.layout[k, 2])
            delta, A_prev = slot(work.D, offsets, k + 1, cap, m), slot(work.A, offsets, k, cap, m)
            sgd_layer(net, k, delta, A_prev, lr, 1.0 / m, momentum, decay, keep, j0, j1)
    else:
        j0, j1 = (0, units.cuts[l]) if part == 0 else (units.cuts[l], net.layout[l, 2])
        Z, A = slot(work.Z, offsets, l + 1, cap, m), slot(work.A, offsets, l + 1, cap, m)
        if kind == FORWARD:  # layer l + 1's units j0..j1
            W, b = weights(net.params, net.layout, l)
            forward_units(slot(work.A, offsets, l, cap, m), W, b, Z, A, net.act_codes[l], j0, j1)
        else:  # BACKWARD: BP2 for layer l + 1's units j0..j1, from W^(l+2)'s columns j0..j1
            W_next, D = weights(net.params, net.layout, l + 1)[0], slot(work.D, offsets, l + 1, cap, m)
            D_next = slot(work.D, offsets, l + 2, cap, m)
            hidden_error_loops(D_next, W_next, Z, A, D, net.act_codes[l], j0, j1)


@jit
def serve_units(X, Y, perm, net, work, units, hyper):
    """The helper thread: the second part of every phase posted in units.flags that it claims
    first, until QUIT."""
    f = units.flags
    ticket = load_acquire(f, POSTED)
    while True:
        ticket = next_post(f, ticket)
        if ticket < 0:
            return
        task, batch = load_acquire(f, TASK), load_acquire(f, BATCH)  # a later phase's if posted meanwhile:
        if claim(f, CLAIMED, ticket - 1, ticket):  # then this claim fails
            unit_task(X, Y, perm, net, work, units, task, batch, 1, hyper)
            store_release(f, DONE, ticket)


@jit
def unit_phase(X, Y, perm, net, work, units, task, batch, hyper, ask):
    """Both parts of one phase: the first here; the second posted to the helper if ``ask``, and
    computed here if this thread claims it first. Returns the cycles this thread then waited."""
    f = units.flags
    if not ask:
        unit_task(X, Y, perm, net, work, units, task, batch, 0, hyper)
        unit_task(X, Y, perm, net, work, units, task, batch, 1, hyper)
        return 0
    ticket = f[POSTED] + 1
    f[TASK], f[BATCH] = task, batch
    store_release(f, POSTED, ticket)
    unit_task(X, Y, perm, net, work, units, task, batch, 0, hyper)
    if claim(f, CLAIMED, ticket - 1, ticket):
        unit_task(X, Y, perm, net, work, units, task, batch, 1, hyper)
        return 0
    t0 = cycles()
    while load_acquire(f, DONE) != ticket:
        yield_core()
    return cycles() - t0


@jit
def units_step(X, Y, perm, s, e, net, work, units, hyper, keep, ask):
    """One step of mini-batch SGD on rows perm[s:e] of (X, Y), each phase split by units
    (``unit_phase``; the second parts offered to the helper if ``ask``). True if this thread
    waited for the helper for over half of the step (it lost its core in a part: a scheduler
    slice is milliseconds, a step tens of microseconds)."""
    L, offsets, cap, m = net.layout.shape[0], net.row_offsets, work.cap, e - s
    batch, kept, t0 = (s << 32) | m, np.int64(keep) << 32, cycles()
    waited = unit_phase(X, Y, perm, net, work, units, GATHER << 40, batch, hyper, ask)
    for l in range(L - 1):
        waited += unit_phase(X, Y, perm, net, work, units, (FORWARD << 40) | l, batch, hyper, ask)
    W, b = weights(net.params, net.layout, L - 1)  # the output layer, whole: feedforward and BP1
    Z, A, D = slot(work.Z, offsets, L, cap, m), slot(work.A, offsets, L, cap, m), slot(work.D, offsets, L, cap, m)
    forward(slot(work.A, offsets, L - 1, cap, m), W, b, Z, A, net.act_codes[L - 1])
    output_error(Z, A, targets(work, A.shape[1], m), D, net.loss, net.act_codes[L - 1], work.cost)
    for l in range(L - 2, -1, -1):
        waited += unit_phase(X, Y, perm, net, work, units, (BACKWARD << 40) | l, batch, hyper, ask)
    waited += unit_phase(X, Y, perm, net, work, units, (UPDATE << 40) | kept, batch, hyper, ask)
    return 2 * waited > cycles() - t0


@jit
def train_batches_by_units(X, Y, perm, start, stop, net, work, units, hyper, helper):
    """Mini-batch SGD over rows perm[start:stop], work.cap rows at a time, each batch split by
    units (``units_step``; a last batch under UNIT_ROWS rows whole). With ``helper``, the second
    parts are offered to the helper thread; after a batch it was late for, this thread takes them
    all for a while (``backoff``)."""
    cap, state, ask = work.cap, np.array([0, 1, 0]), helper
    for s in range(start, stop, cap):
        e = min(s + cap, stop)
        keep = e == stop  # the last batch leaves nabla and velocity as a step by step() would
        stay_awake(units.flags, ask, state)
        if e - s < UNIT_ROWS:
            batch_step(X, Y, perm, s, e, net, work, hyper, keep)
            continue
        late = units_step(X, Y, perm, s, e, net, work, units, hyper, keep, ask)
        ask = helper and backoff(state, ask, late)
