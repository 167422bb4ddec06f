"""@njit CPU kernels: the contracts listed in ``gpubp.kernels``, plus whole-step drivers.

Loops are laid out so the innermost one runs along contiguous memory and the compiler can
vectorise it (``fastmath`` here allows reassociation and fused multiply-add only, so NaN and inf
still propagate and divergence stays detectable).
"""

import numpy as np
from numba import njit

from .activations import SOFTMAX
from .activations import compile_for as _activations_for
from .losses import compile_for as _losses_for

f, fprime, softmax_row = _activations_for("cpu")
output_error_row = _losses_for("cpu")

FASTMATH = {"reassoc", "contract", "nsz"}
jit = njit(cache=True, fastmath=FASTMATH, nogil=True)


@jit
def forward(A_prev, W, b, Z, A, act):
    """Feedforward for one layer: Z = A_prev W^T + b, A = f(Z)."""
    m, n_in = A_prev.shape
    n_out = W.shape[0]
    for i in range(m):
        for j in range(n_out):
            s = Z.dtype.type(0)
            for k in range(n_in):
                s += A_prev[i, k] * W[j, k]
            Z[i, j] = s + b[j]
        if act == SOFTMAX:
            softmax_row(Z[i], A[i])
        else:
            for j in range(n_out):
                A[i, j] = f(Z[i, j], act)


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
    n_next = W_next.shape[0]
    for i in range(m):
        for j in range(n):
            Delta[i, j] = 0
        for k in range(n_next):  # row i of Delta_next W_next, accumulated row by row of W_next
            d = Delta_next[i, k]
            for j in range(n):
                Delta[i, j] += d * W_next[k, j]
        for j in range(n):
            Delta[i, j] *= fprime(Z[i, j], A[i, j], act)


@jit
def weight_gradient(Delta, A_prev, scale, nabla_w):
    """BP4 summed over the batch: nabla_w = scale * Delta^T A_prev (a sum of outer products)."""
    m, n_out = Delta.shape
    n_in = A_prev.shape[1]
    nabla_w[:, :] = 0
    for i in range(m):
        for j in range(n_out):
            d = scale * Delta[i, j]
            for k in range(n_in):
                nabla_w[j, k] += d * A_prev[i, k]


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
    for k in range(P.shape[0]):
        v = momentum * velocity[k] - lr * (nabla[k] + decay * P[k])
        velocity[k] = v
        P[k] += v


# ---------------------------------------------------------------------------------------------
# Drivers. Parameters live in one flat array ``params``: all weights W^1..W^L, then all biases.
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
    """correct[0] += number of rows whose largest output is where Y's largest entry is."""
    hits = 0
    for i in range(A.shape[0]):
        if np.argmax(A[i]) == np.argmax(Y[i]):
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
        forward(slot(Abuf, units, l, cap, m), W, b, slot(Zbuf, units, l + 1, cap, m),
                slot(Abuf, units, l + 1, cap, m), acts[l])


@jit
def backprop(params, nabla, layout, units, acts, loss, Y, Abuf, Zbuf, Dbuf, cap, m, scale, cost):
    """Fill ``nabla`` with scale * (dC/dW, dC/db) summed over the batch; cost[0] += sum_x C_x."""
    L = layout.shape[0]
    feedforward(params, layout, units, acts, Abuf, Zbuf, cap, m)
    output_error(slot(Zbuf, units, L, cap, m), slot(Abuf, units, L, cap, m), Y,
                 slot(Dbuf, units, L, cap, m), loss, acts[L - 1], cost)
    for l in range(L - 1, -1, -1):
        delta = slot(Dbuf, units, l + 1, cap, m)
        gW, gb = weights(nabla, layout, l)
        weight_gradient(delta, slot(Abuf, units, l, cap, m), scale, gW)
        bias_gradient(delta, scale, gb)
        if l > 0:  # BP2 reads W^(l+1) (here index l); nothing is updated until the batch is done
            W, _ = weights(params, layout, l)
            hidden_error(delta, W, slot(Zbuf, units, l, cap, m), slot(Abuf, units, l, cap, m),
                         slot(Dbuf, units, l, cap, m), acts[l - 1])


@jit
def train_batches(X, Y, perm, start, stop, batch_size, params, nabla, velocity, layout, units,
                  acts, loss, Abuf, Ybuf, Zbuf, Dbuf, lr, momentum, decay, cost):
    """Mini-batch SGD over rows perm[start:stop], batch_size rows at a time."""
    cap = batch_size
    for s in range(start, stop, batch_size):
        e = min(s + batch_size, stop)
        m = e - s
        gather_rows(X, perm[s:e], slot(Abuf, units, 0, cap, m))
        Yb = Ybuf[: m * Y.shape[1]].reshape((m, Y.shape[1]))
        gather_rows(Y, perm[s:e], Yb)
        backprop(params, nabla, layout, units, acts, loss, Yb, Abuf, Zbuf, Dbuf, cap, m, 1.0 / m, cost)
        update(params, nabla, velocity, layout, lr, momentum, decay)


@jit
def update(params, nabla, velocity, layout, lr, momentum, decay):
    """SGD on all layers: the weights (stored first) with weight decay, the biases without."""
    nw = layout[0, 1]  # the biases start where the weights end
    sgd_update(params[:nw], nabla[:nw], velocity[:nw], lr, momentum, decay)
    sgd_update(params[nw:], nabla[nw:], velocity[nw:], lr, momentum, 0.0)
