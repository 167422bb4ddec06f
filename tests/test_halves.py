"""Batches of at least kernels.cpu.SPLIT_ROWS rows are backpropagated in two halves, the second on
a helper thread when there is a second core (gpubp.cores.whole_epoch_in_halves): the epoch is
still mini-batch SGD (against the numpy float64 reference), and the parameters do not depend on
which thread computed a half, nor on whether the helper came in time."""

import numpy as np
import pytest
import reference as ref

import gpubp
from gpubp import cores
from kernels import cpu


def _fit(monkeypatch, threads, **fit):
    monkeypatch.setattr(cores, "threads", lambda: threads)
    kw = dict(activation="tanh", output_activation="softmax", loss="log_likelihood", dtype="float64", device="cpu")
    net = gpubp.Network([6, 5, 3], seed=4, **kw)
    rng = np.random.default_rng(3)
    X, labels = rng.standard_normal((300, 6)), rng.integers(0, 3, 300)
    before = (net.weights, net.biases)
    history = net.fit(X, labels, epochs=2, batch_size=cpu.SPLIT_ROWS + 6, shuffle=False, **fit)
    return net, before, X, labels, history


def test_an_epoch_in_halves_is_minibatch_sgd(monkeypatch):
    """Two epochs of batches of SPLIT_ROWS + 6 rows (the last one short, under SPLIT_ROWS, taken
    whole), the halves on the helper thread: the reference's plain SGD steps over the same batches."""
    calls = []
    real = cores.whole_epoch_in_halves
    monkeypatch.setattr(cores, "whole_epoch_in_halves", lambda *a: calls.append(a[6]) or real(*a))
    lr, batch = 0.2, cpu.SPLIT_ROWS + 6
    net, (weights, biases), X, labels, _ = _fit(monkeypatch, 2, lr=lr)
    assert calls == [batch, batch]
    assert cores.halves(net._schedule, batch).flags[cpu.DONE] > 0  # the helper thread took some halves
    Y = ref.onehot(labels, 3)
    for _ in range(2):
        for s in range(0, 300, batch):
            rows = slice(s, s + batch)
            _, gw, gb = ref.backprop(weights, biases, X[rows], Y[rows], ["tanh", "softmax"], "log_likelihood")
            weights = [w - lr * g for w, g in zip(weights, gw)]
            biases = [b - lr * g for b, g in zip(biases, gb)]
    for a, e in zip(net.weights + net.biases, weights + biases):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fit", [dict(lr=0.2), dict(lr=0.2, momentum=0.9, weight_decay=1e-3)])
def test_one_core_or_two_train_to_the_same_bits(monkeypatch, fit):
    """The second halves on the helper thread, or all on this one: the same parameters, momentum
    state and costs, bit for bit."""
    two, *_, two_history = _fit(monkeypatch, 2, **fit)
    one, *_, one_history = _fit(monkeypatch, 1, **fit)
    a, b = two.state_dict(), one.state_dict()
    flat = [state.weights + state.biases + sum(state.velocity, []) for state in (a, b)]
    for x, y in zip(*flat, strict=True):
        np.testing.assert_array_equal(x, y)
    assert two_history["loss"] == one_history["loss"]


def test_a_helper_that_does_not_start_in_time_changes_nothing():
    """halves_step asked to hand the second half to a helper that never comes: it waits a quarter
    of its own half's time, does the half itself (returns 2) and steps to the same bits as when
    not asking."""
    rng = np.random.default_rng(0)
    m = cpu.SPLIT_ROWS + 3
    X, Y = rng.standard_normal((m, 6)), ref.onehot(rng.integers(0, 3, m), 3)
    got = []
    for ask in (False, True):
        net = gpubp.Network([6, 5, 3], dtype="float64", device="cpu", seed=1)
        w = net._schedule
        halves = cores.halves(w, m)
        late = cpu.halves_step(X, Y, np.arange(m), 0, m, w.net, w.buffers(m), halves, (0.5, 0.0, 0.0), False, ask)
        assert late == (2 if ask else 0)
        got.append(w.params.copy())
    np.testing.assert_array_equal(got[0], got[1])


def test_a_fit_hands_halves_to_the_helper_when_the_process_has_two_cores():
    """Asked as a user's fit asks it (gpubp.cores.threads not replaced): with two cores the helper
    takes halves. (Asked inside the one-BLAS-thread limit, threads() would say 1, and no helper.)"""
    if cores.threads() < 2:
        pytest.skip("this process may use one core")
    net = gpubp.Network([6, 5, 3], seed=4, device="cpu")
    rng = np.random.default_rng(3)
    net.fit(rng.standard_normal((300, 6)), rng.integers(0, 3, 300), epochs=1, batch_size=2 * cpu.SPLIT_ROWS)
    assert cores.halves(net._schedule, 2 * cpu.SPLIT_ROWS).flags[cpu.DONE] > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plain_sgd_from_two_halves_has_the_same_bits_with_or_without_the_record(dtype):
    """sgd_update_sum (the halves' plain SGD in one pass) gives P the bits that summing the halves
    and then sgd_update gives, whether it leaves nabla and v as that does (keep) or writes neither."""
    rng = np.random.default_rng(2)
    P, g, other, v = (rng.standard_normal(1003).astype(dtype) for _ in range(4))
    lr = 0.37
    want_P, want_g, want_v = P.copy(), g + other, v.copy()
    cpu.sgd_update(want_P, want_g, want_v, lr, 0.0, 0.0)
    for keep in (True, False):
        got_P, got_g, got_v = P.copy(), g.copy(), v.copy()
        cpu.sgd_update_sum(got_P, got_g, other, got_v, lr, keep)
        np.testing.assert_array_equal(got_P, want_P)
        np.testing.assert_array_equal(got_g, want_g if keep else g)
        np.testing.assert_array_equal(got_v, want_v if keep else v)
