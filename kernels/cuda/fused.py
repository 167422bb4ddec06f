"""A whole epoch of mini-batch SGD in one launch: the fused path for small networks.

One thread block runs every mini-batch of rows perm[start:stop]: gather the batch, forward, BP1,
then down the layers BP2 and BP3/BP4 with the update, separated by __syncthreads. Buffers and
parameters are the flat arrays of ``kernels.cpu``'s engine (same layout). One launch per epoch
instead of about a dozen per mini-batch: meant for small networks, whose mini-batches are too
small to fill a GPU anyway. The stages are device functions that every thread of the block calls
(t = this thread, nt = threads in the block). The forward products are staged through a shared
buffer of ``shared`` elements; the plain version that reads every operand from global memory, its
reference, is ``benchmarks/variants/cuda_fused_v1.py``. The network's arrays and the work buffers
come as ``kernels.cpu``'s two named tuples, ``NetArrays`` and ``WorkBuffers``.
"""

import functools
from types import SimpleNamespace

import numba
from numba import cuda

from ..activations import SOFTMAX
from .common import f, fprime, numba_type, output_error_row, softmax_row

THREADS = 512  # the one block's threads
SHARED = 4096  # elements of the shared buffer the forward products are staged through

# Indices are unsigned: Numba wraps a negative signed index around (a compare and a select on
# every index), and divides signed 64-bit integers by a call. Every index below is a uint64
# (never mixed with a signed integer, which Numba would promote to float64), and a quotient is
# taken of two uint32, which LLVM narrows to a 32-bit division (a few instructions, no call).
U = numba.uint64
U32 = numba.uint32


@functools.cache
def build(T, shared: int = SHARED):
    """The fused epoch's kernel and device functions for element type ``T`` and a shared buffer
    of ``shared`` elements (a compile-time size)."""

    @cuda.jit(device=True)
    def _softmax_layer(act, m, n_out, out, Zbuf, Abuf, t, nt):
        """a = softmax(z) for each row of a softmax layer (a no-op for other activations)."""
        if act == SOFTMAX:
            i = t
            while i < m:  # not range(t, m, nt): Numba counts its trips by a 64-bit division
                r = out + i * n_out
                softmax_row(Zbuf[r : r + n_out], Abuf[r : r + n_out])
                i += nt
            cuda.syncthreads()

    @cuda.jit(device=True)
    def _dot(x, i, di, y, j, dj, n, acc):
        """acc + sum over k < n of x[i + k di] y[j + k dj]: the multiply-adds of every product of
        the epoch (z = W a + b, BP2, BP4). Unsigned indices bumped by their strides: each step is two
        loads and an FFMA, and LLVM unrolls it."""
        end = i + n * di
        while i < end:
            acc += x[i] * y[j]
            i += di
            j += dj
        return acc

    @cuda.jit(device=True)
    def _dot4(x, i, di, y, j, dj, n):
        """The four sums over k < n of x[i + k di] y[j + q + k dj], q = 0..3: four outputs of a
        product that share the x operand (register blocking: 5 loads for 4 FFMA, one pointer bump
        per operand, the y loads at constant offsets)."""
        a0 = a1 = a2 = a3 = T(0)
        end = i + n * di
        while i < end:
            xi = x[i]
            a0 += xi * y[j]
            a1 += xi * y[j + U(1)]
            a2 += xi * y[j + U(2)]
            a3 += xi * y[j + U(3)]
            i += di
            j += dj
        return a0, a1, a2, a3

    @cuda.jit(device=True)
    def _div(e, n):
        """(e // n, e % n) for unsigned e, n below 2^32, by a 32-bit division."""
        q = U(U32(e) // U32(n))
        return q, e - q * n

    @cuda.jit(device=True)
    def _stage(src, off, stride, rows, k0, w, dst, dst_stride, t, nt):
        """dst[r * dst_stride + c] = src[off + r * stride + k0 + c] for r < rows, c < w (unsigned).

        Consecutive threads copy consecutive c (coalesced); each thread issues four loads before
        its first store, so four loads per thread are in flight instead of one.
        """
        total = rows * w
        zero = T(0)
        e0 = t
        while e0 < total:
            e1, e2, e3 = e0 + nt, e0 + U(2) * nt, e0 + U(3) * nt
            r0, c0 = _div(e0, w)
            r1, c1 = _div(e1, w)
            r2, c2 = _div(e2, w)
            r3, c3 = _div(e3, w)
            v0 = src[off + r0 * stride + k0 + c0]
            v1 = src[off + r1 * stride + k0 + c1] if e1 < total else zero
            v2 = src[off + r2 * stride + k0 + c2] if e2 < total else zero
            v3 = src[off + r3 * stride + k0 + c3] if e3 < total else zero
            dst[r0 * dst_stride + c0] = v0
            if e1 < total:
                dst[r1 * dst_stride + c1] = v1
            if e2 < total:
                dst[r2 * dst_stride + c2] = v2
            if e3 < total:
                dst[r3 * dst_stride + c3] = v3
            e0 += U(4) * nt

    @cuda.jit(device=True)
    def _gather(X, perm, s, m, Abuf, t, nt):
        """The shuffled batch into slot 0, four rows' loads in flight per thread (rows of X are
        scattered through a large array: each load waits on device memory)."""
        n0 = U(X.shape[1])
        zero = T(0)
        total = m * n0
        e0 = t
        while e0 < total:
            e1, e2, e3 = e0 + nt, e0 + U(2) * nt, e0 + U(3) * nt
            i0, c0 = _div(e0, n0)
            i1, c1 = _div(e1, n0)
            i2, c2 = _div(e2, n0)
            i3, c3 = _div(e3, n0)
            v0 = X[U(perm[s + i0]), c0]
            v1 = X[U(perm[s + i1]), c1] if e1 < total else zero
            v2 = X[U(perm[s + i2]), c2] if e2 < total else zero
            v3 = X[U(perm[s + i3]), c3] if e3 < total else zero
            Abuf[e0] = v0
            if e1 < total:
                Abuf[e1] = v1
            if e2 < total:
                Abuf[e2] = v2
            if e3 < total:
                Abuf[e3] = v3
            e0 += U(4) * nt

    @cuda.jit(device=True)
    def _forward(net, work, m, sbuf, t, nt):
        """Forward, z = W a + b and a = f(z), the product staged through shared memory.

        For each chunk of kc input columns, the block copies the batch's a^(l-1)[:, chunk] and
        W[:, chunk] into ``sbuf`` (coalesced, along the rows), then each thread adds kc products
        per output from shared memory to its partial sums, kept in work.Z until the last chunk.
        W's rows are padded to an odd stride so the threads of a warp, which read one column of
        W at different rows j, hit different banks.
        """
        one, u1 = T(1), U(1)
        params, layout, acts, Abuf, Zbuf = net.params, net.layout, net.act_codes, work.A, work.Z
        for l in range(layout.shape[0]):
            w_off, b_off, n_out, n_in = U(layout[l, 0]), U(layout[l, 1]), U(layout[l, 2]), U(layout[l, 3])
            a_in, out = U(work.cap * net.row_offsets[l]), U(work.cap * net.row_offsets[l + 1])
            kc = min(n_in, U(U32(U(sbuf.shape[0]) - n_out) // U32(m + n_out)))  # chunk width (>= 1: see fits)
            kcp = kc | u1  # W's padded row stride in sbuf
            sW = m * kc  # W's chunk starts after the activations' chunk
            act = acts[l]
            k0 = U(0)
            while k0 < n_in:
                w = min(kc, n_in - k0)
                _stage(Abuf, a_in, n_in, m, k0, w, sbuf, kc, t, nt)
                _stage(params, w_off, n_in, n_out, k0, w, sbuf[sW:], kcp, t, nt)
                cuda.syncthreads()
                last = k0 + w == n_in
                e = t
                while e < m * n_out:
                    i, j = _div(e, n_out)
                    acc = params[b_off + j] if k0 == U(0) else Zbuf[out + e]
                    acc = _dot(sbuf, i * kc, u1, sbuf, sW + j * kcp, u1, w, acc)
                    Zbuf[out + e] = acc
                    if last and act != SOFTMAX:
                        Abuf[out + e] = f(acc, act, one)
                    e += nt
                cuda.syncthreads()  # before the next chunk overwrites sbuf; a^l complete after the last
                k0 += kc
            _softmax_layer(act, m, n_out, out, Zbuf, Abuf, t, nt)

    @cuda.jit(device=True)
    def _sgd(params, velocity, p, g, lr_, mom, dec):
        """The SGD step of parameter p with momentum and L2 decay: v = mu v - eta (g + lambda p), p += v."""
        v = mom * velocity[p] - lr_ * (g + dec * params[p])
        velocity[p] = v
        params[p] += v

    @cuda.jit(device=True)
    def _update_layer(l, m, net, work, lr_, mom, dec, t, nt):
        """BP4 and BP3 of layer l and the SGD update of W^l and b^l, one parameter per step
        (coalesced along rows): v = mu v - eta (dC/dp + lambda p), p += v."""
        params, velocity, layout, cap = net.params, net.velocity, net.layout, U(work.cap)
        w_off, b_off, n_out, n_in = U(layout[l, 0]), U(layout[l, 1]), U(layout[l, 2]), U(layout[l, 3])
        d, a_in = cap * U(net.row_offsets[l + 1]), cap * U(net.row_offsets[l])
        scale = T(1) / T(m)
        wide = n_in >= U(4)  # else one weight per step
        nb = (n_in + U(3)) >> U(2) if wide else n_in  # blocks of four weights along a row of W^l
        e = t
        while e < n_out * nb:  # BP4: dC/dW^l_jk = (1/m) sum_i delta^l_ij a^(l-1)_ik
            j, b = _div(e, nb)
            if wide:  # k = k4..k4+3; the row's last block overlaps the one before, updates from 4b on
                k, k4 = b << U(2), min(b << U(2), n_in - U(4))
                g0, g1, g2, g3 = _dot4(work.D, d + j, n_out, work.A, a_in + k4, n_in, m)
                p = w_off + j * n_in + k4
                if k4 == k:
                    _sgd(params, velocity, p, scale * g0, lr_, mom, dec)
                if k4 + U(1) >= k:
                    _sgd(params, velocity, p + U(1), scale * g1, lr_, mom, dec)
                if k4 + U(2) >= k:
                    _sgd(params, velocity, p + U(2), scale * g2, lr_, mom, dec)
                _sgd(params, velocity, p + U(3), scale * g3, lr_, mom, dec)
            else:
                g = _dot(work.D, d + j, n_out, work.A, a_in + b, n_in, m, T(0))
                _sgd(params, velocity, w_off + e, scale * g, lr_, mom, dec)
            e += nt
        j = t
        while j < n_out:  # BP3: dC/db^l_j = (1/m) sum_i delta^l_ij
            g = T(0)
            r = d + j
            for _ in range(m):
                g += work.D[r]
                r += n_out
            velocity[b_off + j] = v = mom * velocity[b_off + j] - lr_ * scale * g
            params[b_off + j] += v
            j += nt

    @cuda.jit(device=True)
    def _hidden_error4(Dbuf, r, params, w_off, n_out, n_in, j, o, work, act):
        """BP2 for four hidden units j4..j4+3 of one row, delta^(l-1)_j = (sum_k delta^l_k W^l_kj)
        f'(z^(l-1)_j), delta^l's row at r, delta^(l-1)'s at o; j4 = min(j, n_in - 4): the row's last
        block overlaps the one before it and writes only its units from j on (n_in >= 4)."""
        one = T(1)
        j4 = min(j, n_in - U(4))
        s0, s1, s2, s3 = _dot4(Dbuf, r, U(1), params, w_off + j4, n_in, n_out)
        p = o + j4
        if j4 == j:
            Dbuf[p] = s0 * fprime(work.Z[p], work.A[p], act, one)
        if j4 + U(1) >= j:
            Dbuf[p + U(1)] = s1 * fprime(work.Z[p + U(1)], work.A[p + U(1)], act, one)
        if j4 + U(2) >= j:
            Dbuf[p + U(2)] = s2 * fprime(work.Z[p + U(2)], work.A[p + U(2)], act, one)
        Dbuf[p + U(3)] = s3 * fprime(work.Z[p + U(3)], work.A[p + U(3)], act, one)

    @cuda.jit(device=True)
    def _hidden_error(Dbuf, r, params, w_off, n_out, n_in, j, o, work, act):
        """BP2 for one hidden unit j of one row (layers of fewer than four units)."""
        acc = _dot(Dbuf, r, U(1), params, w_off + j, n_in, n_out, T(0))
        Dbuf[o + j] = acc * fprime(work.Z[o + j], work.A[o + j], act, T(1))

    @cuda.jit(device=True)
    def _backward_update(Y, perm, s, m, net, work, lr, momentum, decay, t, nt):
        """BP1, then from layer L down: BP2 into delta^(l-1) (reading W^l before it changes), then
        BP4/BP3 and the SGD update of W^l and b^l."""
        params, layout, acts = net.params, net.layout, net.act_codes
        Abuf, Zbuf, Dbuf, cap = work.A, work.Z, work.D, U(work.cap)
        L = layout.shape[0]
        one = T(1)  # noqa: F841
        lr_, mom, dec = T(lr), T(momentum), T(decay)
        n_L, o_L = U(layout[L - 1, 2]), cap * U(net.row_offsets[L])
        i = t
        while i < m:  # BP1, one thread per row
            r = o_L + i * n_L
            Z, A, D = Zbuf[r : r + n_L], Abuf[r : r + n_L], Dbuf[r : r + n_L]
            cuda.atomic.add(work.cost, 0, output_error_row(Z, A, Y[U(perm[s + i])], D, net.loss, acts[L - 1]))
            i += nt
        cuda.syncthreads()
        for l in range(L - 1, -1, -1):
            w_off, n_out, n_in = U(layout[l, 0]), U(layout[l, 2]), U(layout[l, 3])
            d, a_in = cap * U(net.row_offsets[l + 1]), cap * U(net.row_offsets[l])
            if l > 0:  # BP2: delta^(l-1) = (W^l)^T delta^l ⊙ f'(z^(l-1))
                act = acts[l - 1]
                wide = n_in >= U(4)
                nb = (n_in + U(3)) >> U(2) if wide else n_in  # blocks of four units j = 4b..4b+3
                e = t
                while e < m * nb:
                    i, b = _div(e, nb)
                    r, o = d + i * n_out, a_in + i * n_in
                    if wide:
                        _hidden_error4(Dbuf, r, params, w_off, n_out, n_in, b << U(2), o, work, act)
                    else:
                        _hidden_error(Dbuf, r, params, w_off, n_out, n_in, b, o, work, act)
                    e += nt
                cuda.syncthreads()
            _update_layer(l, m, net, work, lr_, mom, dec, t, nt)
        cuda.syncthreads()  # the next batch overwrites the buffers this one read

    @cuda.jit(cache=True)  # the shared buffer's size is a closure cell: each (T, shared) its own cache entry
    def train_fused(X, Y, perm, start, stop, net, work, lr, momentum, decay):
        """Mini-batch SGD over rows perm[start:stop], work.cap rows at a time, in one thread block:
        for each batch, gather, forward staged through shared memory (W read coalesced), then BP1,
        BP2, BP3/BP4 and the update."""
        sbuf = cuda.shared.array(shared, T)
        t, nt, cap = U(cuda.threadIdx.x), U(cuda.blockDim.x), U(work.cap)
        s, stop_ = U(start), U(stop)
        while s < stop_:
            m = min(cap, stop_ - s)
            _gather(X, perm, s, m, work.A, t, nt)
            cuda.syncthreads()
            _forward(net, work, m, sbuf, t, nt)
            _backward_update(Y, perm, s, m, net, work, lr, momentum, decay, t, nt)
            s += cap

    # the stages too, for the numbered variants beside the benchmarks
    stages = SimpleNamespace(softmax_layer=_softmax_layer, backward_update=_backward_update)
    return SimpleNamespace(train_fused=train_fused, stages=stages)


def fits(batch_size: int, sizes: list[int], shared: int = SHARED) -> bool:
    """Whether the fused kernel can stage every layer's product: at least one column of a batch of
    activations and of W^l fits in its shared buffer (in practice many more: see the chunk width)."""
    return all(shared - n_out >= batch_size + n_out for n_out in sizes[1:])


def train_batches(X, Y, perm, start, stop, net, work, lr, momentum, decay, *, stream=0, threads=THREADS, shared=SHARED):
    """Mini-batch SGD over rows perm[start:stop] in one launch (the contract of kernels.cpu.train_batches);
    needs ``fits(work.cap, sizes, shared)``."""
    kernel = build(numba_type(net.params.dtype), shared).train_fused
    kernel[1, threads, stream](X, Y, perm, start, stop, net, work, lr, momentum, decay)
