"""Version 1 of the fused epoch: the reference of kernels/cuda/fused.py, with the gather and the
forward products reading every operand from global memory (one thread per output, walking a row
of W: neighbouring threads read rows n_in apart, uncoalesced). The backward pass and update are
the library's own stages. Launched like ``kernels.cuda.fused.train_batches``."""

import functools

from numba import cuda

from gpubp.kernels.activations import SOFTMAX
from gpubp.kernels.cuda import fused
from gpubp.kernels.cuda.common import f, numba_type


@functools.cache
def build(T):
    """The v1 fused kernel for element type ``T``."""
    stages, U = fused.build(T, fused.SHARED).stages, fused.U
    _softmax_layer, _backward_update = stages.softmax_layer, stages.backward_update

    @cuda.jit(device=True)
    def _gather_v1(X, perm, s, m, Abuf, t, nt):
        """The shuffled batch into slot 0: Abuf[i, c] = X[perm[s + i], c], one element per step."""
        n0 = X.shape[1]
        for e in range(t, m * n0, nt):
            i = e // n0
            Abuf[e] = X[perm[s + i], e - i * n0]

    @cuda.jit(device=True)
    def _forward_v1(net, work, m, t, nt):
        """Forward, z = W a + b and a = f(z): one thread per output, operands from global memory."""
        one = T(1)
        params, layout, acts, Abuf, Zbuf = net.params, net.layout, net.act_codes, work.A, work.Z
        for l in range(layout.shape[0]):
            w_off, b_off, n_out, n_in = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            a_in, out = work.cap * net.row_offsets[l], work.cap * net.row_offsets[l + 1]
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
            _softmax_layer(acts[l], U(m), U(n_out), U(out), Zbuf, Abuf, U(t), U(nt))  # the stages' unsigned indices

    @cuda.jit
    def train_fused_v1(X, Y, perm, start, stop, net, work, lr, momentum, decay):
        """v1, the reference: the fused epoch with every operand read from global memory."""
        t, nt = cuda.threadIdx.x, cuda.blockDim.x
        for s in range(start, stop, work.cap):
            m = min(work.cap, stop - s)
            _gather_v1(X, perm, s, m, work.A, t, nt)
            cuda.syncthreads()
            _forward_v1(net, work, m, t, nt)
            _backward_update(Y, perm, U(s), U(m), net, work, lr, momentum, decay, U(t), U(nt))

    return train_fused_v1


def train_batches(
    X, Y, perm, start, stop, net, work, lr, momentum, decay, *, stream=0, threads=fused.THREADS, shared=0
):
    """The contract of ``kernels.cuda.fused.train_batches``, run by train_fused_v1 (which stages
    nothing through shared memory: ``shared`` is ignored)."""
    kernel = build(numba_type(net.params.dtype))
    kernel[1, threads, stream](X, Y, perm, start, stop, net, work, lr, momentum, decay)
