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

from numba import cuda

from ..activations import SOFTMAX
from .common import f, fprime, numba_type, output_error_row, softmax_row

THREADS = 512  # the one block's threads
SHARED = 4096  # elements of the shared buffer the forward products are staged through


@functools.cache
def build(T, shared: int = SHARED):
    """The fused epoch's kernel and device functions for element type ``T`` and a shared buffer
    of ``shared`` elements (a compile-time size)."""

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
    def _gather(X, perm, s, m, Abuf, t, nt):
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
    def _forward(net, work, m, sbuf, t, nt):
        """Forward, z = W a + b and a = f(z), the product staged through shared memory.

        For each chunk of kc input columns, the block copies the batch's a^(l-1)[:, chunk] and
        W[:, chunk] into ``sbuf`` (coalesced, along the rows), then each thread adds kc products
        per output from shared memory to its partial sums, kept in work.Z until the last chunk.
        W's rows are padded to an odd stride so the threads of a warp, which read one column of
        W at different rows j, hit different banks.
        """
        one = T(1)
        params, layout, acts, Abuf, Zbuf = net.params, net.layout, net.act_codes, work.A, work.Z
        for l in range(layout.shape[0]):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            a_in, out = work.cap * net.row_offsets[l], work.cap * net.row_offsets[l + 1]
            kc = min(n_in, (sbuf.shape[0] - n_out) // (m + n_out))  # chunk width (>= 1: see fits)
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
    def _backward_update(Y, perm, s, m, net, work, lr, momentum, decay, t, nt):
        """BP1, then from layer L down: BP2 into delta^(l-1) (reading W^l before it changes), then
        BP4/BP3 and the SGD update of W^l and b^l, one parameter per step (coalesced along rows)."""
        params, velocity, layout, acts = net.params, net.velocity, net.layout, net.act_codes
        Abuf, Zbuf, Dbuf, cap = work.A, work.Z, work.D, work.cap
        L = layout.shape[0]
        one = T(1)
        scale = one / T(m)
        lr_, mom, dec = T(lr), T(momentum), T(decay)
        n_L, o_L = layout[L - 1, 2], cap * net.row_offsets[L]
        for i in range(t, m, nt):  # BP1, one thread per row
            r = o_L + i * n_L
            Z, A, D = Zbuf[r : r + n_L], Abuf[r : r + n_L], Dbuf[r : r + n_L]
            cuda.atomic.add(work.cost, 0, output_error_row(Z, A, Y[perm[s + i]], D, net.loss, acts[L - 1]))
        cuda.syncthreads()
        for l in range(L - 1, -1, -1):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            d, a_in = cap * net.row_offsets[l + 1], cap * net.row_offsets[l]
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
    def train_fused(X, Y, perm, start, stop, net, work, lr, momentum, decay):
        """Mini-batch SGD over rows perm[start:stop], work.cap rows at a time, in one thread block:
        for each batch, gather, forward staged through shared memory (W read coalesced), then BP1,
        BP2, BP3/BP4 and the update."""
        sbuf = cuda.shared.array(shared, T)
        t, nt = cuda.threadIdx.x, cuda.blockDim.x
        for s in range(start, stop, work.cap):
            m = min(work.cap, stop - s)
            _gather(X, perm, s, m, work.A, t, nt)
            cuda.syncthreads()
            _forward(net, work, m, sbuf, t, nt)
            _backward_update(Y, perm, s, m, net, work, lr, momentum, decay, t, nt)

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
