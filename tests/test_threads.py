"""One Network used from several threads: calls take turns and return what they would one after
another; a fit makes the others wait and never mixes its parameters with theirs. Also gpubp's own
checks of ``seed`` and of values that overflow the network's dtype."""

import threading

import numpy as np
import pytest

import gpubp


def _net(**kw):
    return gpubp.Network([6, 16, 3], activation="tanh", output_activation="softmax", loss="log_likelihood",
                         dtype="float64", device="cpu", seed=3, **kw)  # fmt: skip


def _in_threads(calls, rounds=3):
    """Run every call of ``calls`` at once, ``rounds`` times each, released together by a barrier."""
    barrier = threading.Barrier(len(calls))
    results, errors = [[] for _ in calls], []

    def run(i, call):
        try:
            for _ in range(rounds):
                barrier.wait()
                results[i].append(call())
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_concurrent_predict_evaluate_and_gradients_equal_sequential_calls(rng):
    """Batches of different sizes share the network's work buffers: without taking turns, one
    thread's rows land in another's result."""
    net = _net()
    inputs = [rng.standard_normal((n, 6)) for n in (7, 300, 33, 1500)]
    labels = [rng.integers(0, 3, len(X)) for X in inputs]
    want_predict = [net.predict(X) for X in inputs]
    want_eval = [net.evaluate(X, y) for X, y in zip(inputs, labels)]
    want_grad = [net.gradients(X, y) for X, y in zip(inputs, labels)]
    calls = [lambda X=X: net.predict(X) for X in inputs]
    calls += [lambda X=X, y=y: net.evaluate(X, y) for X, y in zip(inputs, labels)]
    calls += [lambda X=X, y=y: net.gradients(X, y) for X, y in zip(inputs, labels)]
    results = _in_threads(calls)
    n = len(inputs)
    for i in range(n):
        for got in results[i]:
            np.testing.assert_array_equal(got, want_predict[i])
        for got in results[n + i]:
            assert got == want_eval[i]
        for got in results[2 * n + i]:
            for a, b in zip(got[0] + got[1], want_grad[i][0] + want_grad[i][1]):
                np.testing.assert_array_equal(a, b)


def test_fit_makes_other_calls_wait_and_trains_as_alone(rng):
    """While one thread fits, others predict: each prediction is of the parameters before or after
    the whole fit (never of a half-trained epoch), and the fit ends where a fit alone ends."""
    X, labels = rng.standard_normal((400, 6)), rng.integers(0, 3, 400)
    alone = _net()
    before = alone.predict(X[:50])
    alone.fit(X, labels, epochs=1, batch_size=8, lr=0.1)
    after = alone.predict(X[:50])

    net = _net()
    started = threading.Event()
    seen = []

    def fit():
        started.set()
        net.fit(X, labels, epochs=1, batch_size=8, lr=0.1)

    def predict():
        started.wait()
        for _ in range(20):
            seen.append(net.predict(X[:50]))

    threads = [threading.Thread(target=fit), threading.Thread(target=predict)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for a, b in zip(net.weights + net.biases, alone.weights + alone.biases):
        np.testing.assert_array_equal(a, b)
    assert len(seen) == 20
    for p in seen:
        assert np.array_equal(p, before) or np.array_equal(p, after)


@pytest.mark.parametrize("seed", [-1, 1.5, "abc", True, np.float64(2.0)])
def test_seed_must_be_none_or_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match=r"seed must be None or a non-negative integer, got"):
        gpubp.Network([2, 2], device="cpu", seed=seed)
    with pytest.raises(ValueError, match=r"seed must be None or a non-negative integer"):
        gpubp.Network.from_params([np.zeros((2, 2))], [np.zeros(2)], device="cpu", seed=seed)


def test_seeds_that_are_integers_of_any_kind_work():
    a = gpubp.Network([3, 2], device="cpu", seed=np.int64(5))
    b = gpubp.Network([3, 2], device="cpu", seed=5)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    gpubp.Network([3, 2], device="cpu", seed=None)


def test_values_that_overflow_the_dtype_are_refused_as_such():
    """1e300 is finite in float64 but inf in float32: the message says so, not "NaN or inf"."""
    net = gpubp.Network([3, 2], device="cpu", dtype="float32")
    X = np.ones((4, 3))
    X[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"X row 2 holds 1e\+300, which overflows the network's float32"):
        net.predict(X)
    Y = np.full((4, 2), 0.5)
    Y[1, 0] = -1e300
    with pytest.raises(ValueError, match=r"Y row 1 holds a value that overflows the network's float32"):
        net.fit(np.ones((4, 3)), Y, epochs=1)
    X[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(first in row 2\)"):
        net.predict(X)
    assert np.isfinite(gpubp.Network([3, 2], device="cpu", dtype="float64").predict(np.full((1, 3), 1e300))).all()
