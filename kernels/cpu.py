"""@njit CPU kernels: the contracts listed in ``gpubp.kernels``, and the CPU engine (``step``:
one mini-batch in the order of backpropagation; ``train_batches``: an epoch of them in one call).

Loops are laid out so the innermost one runs along contiguous memory and the compiler can
vectorise it (``fastmath`` here allows reassociation and fused multiply-add only, so NaN and inf
still propagate and divergence stays detectable).
"""

import hashlib
from pathlib import Path

import numpy as np
from numba import njit

from .activations import SOFTMAX
from .activations import compile_for as _activations_for
from .losses import compile_for as _losses_for


def _drop_stale_cache() -> None:
    """Numba's on-disk cache checks only this file's timestamp, but these kernels inline the
    formulas of activations.py and losses.py: drop the cache when any of the three changed."""
    here = Path(__file__).parent
    sources = b"".join((here / name).read_bytes() for name in ("activations.py", "losses.py", "cpu.py"))
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

FASTMATH = {"reassoc", "contract", "nsz"}
jit = njit(cache=True, fastmath=FASTMATH, nogil=True)
# Batches of at least this many rows do their matrix products with BLAS (np.dot, multi-threaded);
# smaller ones with the register-blocked loops below, which beat a BLAS call at that size
# (benchmarks/NOTES.md has the measurements).
BLAS_ROWS = 32


@jit
def weighted_input(A_prev, W, b, Z):
    """Z = A_prev W^T + b with loops blocked 2 rows x 4 outputs: eight sums share six loads."""
    m, n_in = A_prev.shape
    n_out = W.shape[0]
    n4 = n_out - n_out % 4
    zero = Z.dtype.type(0)
    for i in range(0, m, 2):
        a, c = A_prev[i], A_prev[min(i + 1, m - 1)]  # an odd last row is done twice
        for j in range(0, n4, 4):
            w0, w1, w2, w3 = W[j], W[j + 1], W[j + 2], W[j + 3]
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = zero
            for k in range(n_in):
                s0 += a[k] * w0[k]
                s1 += a[k] * w1[k]
                s2 += a[k] * w2[k]
                s3 += a[k] * w3[k]
                t0 += c[k] * w0[k]
                t1 += c[k] * w1[k]
                t2 += c[k] * w2[k]
                t3 += c[k] * w3[k]
            Z[i, j], Z[i, j + 1], Z[i, j + 2], Z[i, j + 3] = s0 + b[j], s1 + b[j + 1], s2 + b[j + 2], s3 + b[j + 3]
            if i + 1 < m:
                Z[i + 1, j], Z[i + 1, j + 1] = t0 + b[j], t1 + b[j + 1]
                Z[i + 1, j + 2], Z[i + 1, j + 3] = t2 + b[j + 2], t3 + b[j + 3]
        for j in range(n4, n_out):
            w = W[j]
            s = t = zero
            for k in range(n_in):
                s += a[k] * w[k]
                t += c[k] * w[k]
            Z[i, j] = s + b[j]
            if i + 1 < m:
                Z[i + 1, j] = t + b[j]


@jit
def forward(A_prev, W, b, Z, A, act):
    """Feedforward for one layer: Z = A_prev W^T + b, A = f(Z)."""
    if A_prev.shape[0] >= BLAS_ROWS:
        np.dot(A_prev, W.T, Z)
        Z += b
    else:
        weighted_input(A_prev, W, b, Z)
    one = Z.dtype.type(1)
    for i in range(Z.shape[0]):
        if act == SOFTMAX:
            softmax_row(Z[i], A[i])
        else:
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
    m, n = Delta.shape
    if m >= BLAS_ROWS:
        np.dot(Delta_next, W_next, Delta)
    else:
        for i in range(m):  # row i of Delta_next W_next, accumulated row by row of W_next
            delta = Delta[i]
            delta[:] = 0
            for k in range(W_next.shape[0]):
                d, w = Delta_next[i, k], W_next[k]
                for j in range(n):
                    delta[j] += d * w[j]
    one = Delta.dtype.type(1)
    for i in range(m):
        for j in range(n):
            Delta[i, j] *= fprime(Z[i, j], A[i, j], act, one)


@jit
def weight_gradient_row(Delta, A_prev, j, g):
    """g = sum_x Delta[x, j] A_prev[x]: row j of Delta^T A_prev, four samples per pass over g."""
    m = Delta.shape[0]
    m4 = m - m % 4
    g[:] = 0
    for i in range(0, m4, 4):
        d0, d1, d2, d3 = Delta[i, j], Delta[i + 1, j], Delta[i + 2, j], Delta[i + 3, j]
        a0, a1, a2, a3 = A_prev[i], A_prev[i + 1], A_prev[i + 2], A_prev[i + 3]
        for k in range(g.shape[0]):
            g[k] += d0 * a0[k] + d1 * a1[k] + d2 * a2[k] + d3 * a3[k]
    for i in range(m4, m):
        d, a = Delta[i, j], A_prev[i]
        for k in range(g.shape[0]):
            g[k] += d * a[k]


@jit
def weight_gradient(Delta, A_prev, scale, nabla_w):
    """BP4 summed over the batch: nabla_w = scale * Delta^T A_prev (a sum of outer products)."""
    if Delta.shape[0] >= BLAS_ROWS:
        np.dot(Delta.T, A_prev, nabla_w)
    else:
        for j in range(nabla_w.shape[0]):
            weight_gradient_row(Delta, A_prev, j, nabla_w[j])
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
    P <- P - lr nabla, the update of the mission statement.
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
def sgd_layer(Delta, A_prev, W, b, nabla_w, nabla_b, vel_w, vel_b, lr, scale, momentum, decay):
    """BP3, BP4 and the SGD step of one layer, fused: each row of nabla_w is used while in cache.

    The same result as weight_gradient, bias_gradient and sgd_update in turn.
    """
    if Delta.shape[0] >= BLAS_ROWS:
        weight_gradient(Delta, A_prev, scale, nabla_w)
        sgd_update(W.ravel(), nabla_w.ravel(), vel_w.ravel(), lr, momentum, decay)
    else:
        s = nabla_w.dtype.type(scale)
        for j in range(W.shape[0]):
            g = nabla_w[j]
            weight_gradient_row(Delta, A_prev, j, g)
            g *= s
            sgd_update(W[j], g, vel_w[j], lr, momentum, decay)
    bias_gradient(Delta, scale, nabla_b)
    sgd_update(b, nabla_b, vel_b, lr, momentum, 0.0)


# ---------------------------------------------------------------------------------------------
# The engine. Parameters live in one flat array ``params``: all weights W^1..W^L, then all biases.
# ``layout`` row l holds (offset of W^l, offset of b^l, n_out, n_in); ``units[l]`` = sum(sizes[:l]).
# Work buffers (Abuf, Zbuf, Dbuf) hold slot l = rows of layer l for a batch of up to ``cap`` rows;
# slot 0 of Abuf is the input batch. The CUDA scheduler uses the same layout.


@njit(cache=True, inline="always")
def weights(params, layout, l):
    """Views (W^l, b^l) into the flat parameter array."""
    w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
    return params[w_off : w_off + n_out * n_in].reshape((n_out, n_in)), params[b_off : b_off + n_out]


@njit(cache=True, inline="always")
def slot(buf, units, l, cap, m):
    """View of layer l's rows (m, sizes[l]) in a work buffer; units[l] is sum(sizes[:l])."""
    off = cap * units[l]
    n = units[l + 1] - units[l]
    return buf[off : off + m * n].reshape((m, n))


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
    for i in range(idx.shape[0]):
        dst[i, :] = src[idx[i]]


@jit
def feedforward(params, layout, units, acts, Abuf, Zbuf, cap, m):
    """z^l = W^l a^(l-1) + b^l, a^l = f(z^l) for l = 1..L, on the batch in slot 0 of Abuf."""
    for l in range(layout.shape[0]):
        W, b = weights(params, layout, l)
        forward(
            slot(Abuf, units, l, cap, m),
            W,
            b,
            slot(Zbuf, units, l + 1, cap, m),
            slot(Abuf, units, l + 1, cap, m),
            acts[l],
        )


@jit
def step(params, nabla, velocity, layout, units, acts, loss, Y, Abuf, Zbuf, Dbuf, cap, m, scale, lr, momentum, decay,
         cost, update):  # fmt: skip
    """One mini-batch of backpropagation on the batch in slot 0 of Abuf: the CPU's layer order.

    Forward down the layers, BP1, then from layer L down: BP2 (reading W^l before it changes),
    then BP3/BP4 into ``nabla``, scaled by ``scale`` (1/m: the batch's mean), and, if ``update``,
    the SGD step of that layer fused with them (each row of nabla_w used while in cache). With ``update`` false the work
    buffers keep every z, a and delta and ``nabla`` the gradient, for an update elsewhere.
    """
    L = layout.shape[0]
    feedforward(params, layout, units, acts, Abuf, Zbuf, cap, m)
    D, Z, A = slot(Dbuf, units, L, cap, m), slot(Zbuf, units, L, cap, m), slot(Abuf, units, L, cap, m)
    output_error(Z, A, Y, D, loss, acts[L - 1], cost)  # BP1
    for l in range(L - 1, -1, -1):
        delta, A_prev = slot(Dbuf, units, l + 1, cap, m), slot(Abuf, units, l, cap, m)
        W, b = weights(params, layout, l)
        if l > 0:  # BP2: delta^(l-1) from W^l, before W^l is updated
            hidden_error(delta, W, slot(Zbuf, units, l, cap, m), A_prev, slot(Dbuf, units, l, cap, m), acts[l - 1])
        gW, gb = weights(nabla, layout, l)
        if update:  # BP4, BP3 and the update, fused
            vW, vb = weights(velocity, layout, l)
            sgd_layer(delta, A_prev, W, b, gW, gb, vW, vb, lr, scale, momentum, decay)
        else:
            weight_gradient(delta, A_prev, scale, gW)  # BP4
            bias_gradient(delta, scale, gb)  # BP3


@jit
def train_batches(
    X, Y, perm, start, stop, batch_size, params, nabla, velocity, layout, units, acts, loss, Abuf, Ybuf, Zbuf, Dbuf,
    lr, momentum, decay, cost,
):  # fmt: skip
    """Mini-batch SGD over rows perm[start:stop], batch_size rows at a time."""
    cap = batch_size
    for s in range(start, stop, batch_size):
        e = min(s + batch_size, stop)
        m = e - s
        gather_rows(X, perm[s:e], slot(Abuf, units, 0, cap, m))
        Yb = Ybuf[: m * Y.shape[1]].reshape((m, Y.shape[1]))
        gather_rows(Y, perm[s:e], Yb)
        step(params, nabla, velocity, layout, units, acts, loss, Yb, Abuf, Zbuf, Dbuf, cap, m, 1.0 / m,
             lr, momentum, decay, cost, True)  # fmt: skip
