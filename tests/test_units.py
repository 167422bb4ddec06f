"""Batches of kernels.cpu.UNIT_ROWS to SPLIT_ROWS - 1 rows are backpropagated in phases split by
units, the second part of each on a helper thread when it claims it first
(gpubp.cores.whole_epoch_by_units): the epoch is still mini-batch SGD (against the numpy float64
reference), and the parameters do not depend on which thread computed a part."""

import threading

import numpy as np
import pytest
import reference as ref
from numba import njit

import gpubp
from gpubp import cores
from kernels import cpu
from kernels.sync import claim, load_acquire

SIZES, ACTS = [6, 9, 7, 3], ["tanh", "tanh", "softmax"]  # cuts 8 of 9, 4 of 7, all 3: a part can be empty


def _fit(monkeypatch, threads, batch, **fit):
    monkeypatch.setattr(cores, "threads", lambda: threads)
    kw = dict(activation="tanh", output_activation="softmax", loss="log_likelihood", dtype="float64", device="cpu")
    net = gpubp.Network(SIZES, seed=4, **kw)
    rng = np.random.default_rng(3)
    X, labels = rng.standard_normal((300, 6)), rng.integers(0, 3, 300)
    before = (net.weights, net.biases)
    history = net.fit(X, labels, epochs=2, batch_size=batch, shuffle=False, **fit)
    return net, before, X, labels, history


@pytest.mark.parametrize("batch", [cpu.UNIT_ROWS + 4, cpu.BLAS_ROWS + 8])  # 16, 40: the loops, past BLAS_ROWS too
def test_an_epoch_split_by_units_is_minibatch_sgd(monkeypatch, batch):
    """Two epochs split by units, the second parts offered to the helper thread: the reference's
    plain SGD steps over the same batches (the last, short one included)."""
    calls = []
    real = cores.whole_epoch_by_units
    monkeypatch.setattr(cores, "whole_epoch_by_units", lambda *a: calls.append(a[6]) or real(*a))
    lr = 0.2
    net, (weights, biases), X, labels, _ = _fit(monkeypatch, 2, batch, lr=lr)
    assert calls == [batch, batch]
    Y = ref.onehot(labels, 3)
    for _ in range(2):
        for s in range(0, 300, batch):
            rows = slice(s, s + batch)
            _, gw, gb = ref.backprop(weights, biases, X[rows], Y[rows], ACTS, "log_likelihood")
            weights = [w - lr * g for w, g in zip(weights, gw)]
            biases = [b - lr * g for b, g in zip(biases, gb)]
    for a, e in zip(net.weights + net.biases, weights + biases):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fit", [dict(lr=0.2), dict(lr=0.2, momentum=0.9, weight_decay=1e-3)])
def test_one_core_or_two_train_to_the_same_bits(monkeypatch, fit):
    """The second parts on the helper thread, or all on this one: the same parameters, momentum
    state and costs, bit for bit."""
    two, *_, two_history = _fit(monkeypatch, 2, 20, **fit)
    one, *_, one_history = _fit(monkeypatch, 1, 20, **fit)
    a, b = two.state_dict(), one.state_dict()
    flat = [state.weights + state.biases + sum(state.velocity, []) for state in (a, b)]
    for x, y in zip(*flat, strict=True):
        np.testing.assert_array_equal(x, y)
    assert two_history["loss"] == one_history["loss"]


def test_a_helper_that_never_comes_changes_nothing():
    """units_step offering its parts to a helper that never comes claims each itself, does not
    wait, and steps to the same bits as when not offering."""
    rng = np.random.default_rng(0)
    m = cpu.UNIT_ROWS + 5
    X, Y = rng.standard_normal((m, 6)), ref.onehot(rng.integers(0, 3, m), 3)
    got = []
    for ask in (False, True):
        net = gpubp.Network(SIZES, dtype="float64", device="cpu", seed=1)
        w = net._schedule
        units = cores.units(w)
        units.flags[:] = 0
        late = cpu.units_step(X, Y, np.arange(m), 0, m, w.net, w.buffers(m), units, (0.5, 0.0, 0.0), False, ask)
        assert not late
        assert units.flags[cpu.CLAIMED] == (2 + 2 * (len(SIZES) - 2) if ask else 0)  # gather, 2 (L - 1), update
        got.append(w.params.copy())
    np.testing.assert_array_equal(got[0], got[1])


@njit(nogil=True)
def _race(flags, won, n):
    for t in range(1, n + 1):
        while load_acquire(flags, 0) < t - 1:  # until ticket t - 1 is taken
            pass
        won[t - 1] = claim(flags, 0, t - 1, t)


def test_two_threads_claiming_one_task_never_both_win():
    """The compare-and-swap behind a claim: of two threads racing for each of 20,000 tickets,
    exactly one wins every time."""
    flags, n = np.zeros(1, np.int64), 20_000
    wins = [np.zeros(n, np.int64), np.zeros(n, np.int64)]
    threads = [threading.Thread(target=_race, args=(flags, won, n)) for won in wins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(wins[0] + wins[1], np.ones(n))


def test_the_split_needs_a_hidden_layer_that_is_not_softmax():
    """Without a hidden layer there is nothing to split before the output layer, which is computed
    whole; a softmax hidden layer needs its whole row."""
    plain = gpubp.Network([6, 3], device="cpu")._schedule
    hidden = gpubp.Network([6, 5, 3], device="cpu")._schedule
    assert not cores.by_units(plain, 16) and cores.by_units(hidden, 16)
    assert not cores.by_units(hidden, cpu.UNIT_ROWS - 1) and not cores.by_units(hidden, cpu.SPLIT_ROWS)


def test_a_fit_offers_parts_to_the_helper_when_the_process_has_two_cores():
    """Asked as a user's fit asks it (gpubp.cores.threads not replaced): with two cores the helper
    takes parts, in the first epoch of a fit in a new dtype too (the helper's loop compiled before
    it starts)."""
    if cores.threads() < 2:
        pytest.skip("this process may use one core")
    net = gpubp.Network([64, 128, 64, 3], seed=4, device="cpu")
    rng = np.random.default_rng(3)
    net.fit(rng.standard_normal((2000, 64)), rng.integers(0, 3, 2000), epochs=1, batch_size=16)
    assert cores.units(net._schedule).flags[cpu.DONE] > 0


def test_the_backoff_after_a_late_helper():
    """Hand-worked: each late batch sends this thread alone for the current wait (1, 2, 4, ... up
    to 1024 batches) and doubles it; the wait halves only after ON_TIME batches in a row on time."""
    state = np.array([0, 1, 0])

    def late_then_alone():
        assert not cpu.backoff(state, True, True)  # late: the next batch is not offered
        alone = 1
        while not cpu.backoff(state, False, False):
            alone += 1
        return alone

    assert [late_then_alone() for _ in range(3)] == [1, 2, 4]
    assert state[1] == 8
    for _ in range(cpu.ON_TIME - 1):
        assert cpu.backoff(state, True, False)
    assert state[1] == 8  # one batch short of ON_TIME on time: not halved yet
    assert cpu.backoff(state, True, False)
    assert state[1] == 4
    assert late_then_alone() == 4
    for _ in range(12):
        late_then_alone()
    assert state[1] == 1024 and late_then_alone() == 1024
