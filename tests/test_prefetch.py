"""The whole-epoch CPU path with the gather on a helper thread (gpubp/prefetch.py) trains exactly as
the plain path: the same rows in the same order, checked against the numpy float64 reference."""

import numpy as np
import reference as ref

import gpubp
from gpubp import prefetch


def test_prefetched_epoch_is_minibatch_sgd_in_the_shuffled_order(rng, monkeypatch):
    """Three chunks (the last one short, and with a short last batch) of shuffled rows: the
    parameters equal the reference's steps over the same permutation, batch by batch."""
    monkeypatch.setattr(prefetch, "CHUNK_ROWS", 40)
    monkeypatch.setattr(prefetch.cores, "threads", lambda: 2)  # a second core, even on a 1-core CI runner
    calls = []
    real = prefetch.whole_epoch
    monkeypatch.setattr(prefetch, "whole_epoch", lambda *a: calls.append(a[4:6]) or real(*a))
    n, batch, lr = 97, 10, 0.5
    kw = dict(activation="sigmoid", loss="quadratic", dtype="float64", device="cpu", seed=4)
    net = gpubp.Network([6, 5, 3], **kw)
    X, labels = rng.standard_normal((n, 6)), rng.integers(0, 3, n)
    Y = ref.onehot(labels, 3)
    weights, biases = net.weights, net.biases
    order = np.random.default_rng(11).permutation(n)
    net._rng = np.random.default_rng(11)  # fit's shuffle draws this same permutation
    net.fit(X, labels, epochs=1, batch_size=batch, lr=lr)
    assert calls == [(0, n)]  # the epoch went through the prefetching path
    for s in range(0, n, batch):
        idx = order[s : s + batch]
        _, gw, gb = ref.backprop(weights, biases, X[idx], Y[idx], ["sigmoid", "sigmoid"], "quadratic")
        weights = [w - lr * g for w, g in zip(weights, gw)]
        biases = [b - lr * g for b, g in zip(biases, gb)]
    for a, e in zip(net.weights + net.biases, weights + biases):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_not_for_one_thread_or_one_chunk(monkeypatch):
    from gpubp import cores

    monkeypatch.setattr(cores, "threads", lambda: 2)
    assert prefetch.worth_it(60_000, 10) and prefetch.worth_it(60_000, 128)  # BLAS runs on one thread
    assert not prefetch.worth_it(prefetch.CHUNK_ROWS, 10)  # one chunk: nothing to overlap
    monkeypatch.setattr(cores, "threads", lambda: 1)
    assert not prefetch.worth_it(60_000, 10)


def test_the_threads_gpubp_uses_follow_the_users_blas_limit():
    """gpubp trains with BLAS on one thread, gives the user's limit back, and uses no more threads
    than the user allowed the BLAS."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from gpubp import cores

    def blas_threads():
        return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

    before = blas_threads()
    with cores.one_blas_thread():
        assert blas_threads() == [1]
    assert blas_threads() == before
    with threadpool_limits(1, "blas"):
        assert cores.threads() == 1
        assert not prefetch.worth_it(60_000, 10)
    net = gpubp.Network([6, 5, 3], device="cpu", seed=0)
    X, y = np.random.default_rng(0).random((3000, 6)), np.arange(3000) % 3
    net.fit(X, y, epochs=1, batch_size=64)
    assert blas_threads() == before


def test_cpu_buffers_start_on_a_cache_line():
    """The CPU backend's arrays (parameters, gradients, work buffers) are 64-byte aligned and hold
    what they should: the kernels' vector loads would otherwise split across cache lines."""
    from gpubp.backends import CpuBackend, aligned_empty

    for shape, dtype in [((3, 5), np.float32), (7, np.float64), ((2, 3, 4), np.int64), (0, np.float32)]:
        a = aligned_empty(shape, dtype)
        assert (a.size == 0 or a.ctypes.data % 64 == 0) and a.shape == np.empty(shape).shape and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
    z = CpuBackend().zeros((4, 9), np.float32)
    assert z.ctypes.data % 64 == 0 and not z.any()
    net = gpubp.Network([7, 5, 3], dtype="float32", device="cpu", seed=2)
    s = net._schedule
    work = s.buffers(10)
    assert all(a.ctypes.data % 64 == 0 for a in (s.params, s.nabla, s.velocity, work.A, work.Z, work.D, work.Y))
    expected = np.concatenate([w.ravel() for w in net.weights] + [b.ravel() for b in net.biases])
    np.testing.assert_array_equal(s.params, expected)


def test_small_products_run_on_one_blas_thread_large_ones_keep_the_blas_threads():
    from gpubp import cores

    assert cores.small_products([784, 100, 10], 128)  # 10 M multiply-adds a product
    assert cores.small_products([784, 256, 128, 10], 128)
    assert not cores.small_products([784, 1024, 1024, 10], 1024)  # 1 G: the second core pays
    assert cores.small_products([784, 256, 128, 10], 512)  # 103 M: on two threads it stalls under load
