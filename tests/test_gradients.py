"""Backpropagation against finite differences and the numpy reference, every activation x loss."""

import numpy as np
import pytest
import reference as ref

import gpubp

COMBOS = [(h, loss, out) for h in ref.ACTIVATIONS for loss, out in ref.LOSS_OUTPUTS]


def small_net(hidden, loss, out, seed=0):
    return gpubp.Network(
        [4, 5, 3, 3], activation=hidden, output_activation=out, loss=loss, dtype="float64", device="cpu", seed=seed
    )


@pytest.mark.parametrize("hidden,loss,out", COMBOS)
def test_gradients_match_finite_differences(rng, hidden, loss, out):
    net = small_net(hidden, loss, out, seed=int(rng.integers(1 << 30)))
    X = rng.standard_normal((6, 4))
    Y = ref.targets(rng, 6, 3, loss, out)
    assert gpubp.check_gradients(net, X, Y, max_params=None) <= 1e-6


@pytest.mark.parametrize("hidden,loss,out", COMBOS)
def test_gradients_match_reference(rng, hidden, loss, out):
    net = small_net(hidden, loss, out, seed=int(rng.integers(1 << 30)))
    X = rng.standard_normal((7, 4))
    Y = ref.targets(rng, 7, 3, loss, out)
    gw, gb = net.gradients(X, Y)
    cost, rw, rb = ref.backprop(net.weights, net.biases, X, Y, [hidden, hidden, out], loss)
    for a, b in zip(gw + gb, rw + rb):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert net.evaluate(X, Y)["loss"] == pytest.approx(cost, rel=1e-10)


def test_labels_are_one_hot_targets(rng):
    net = small_net("sigmoid", "log_likelihood", "softmax")
    X, labels = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    for a, b in zip(net.gradients(X, labels)[0], net.gradients(X, ref.onehot(labels, 3))[0]):
        np.testing.assert_array_equal(a, b)


def test_check_gradients_detects_a_wrong_gradient(rng, monkeypatch):
    """The checker itself can fail: corrupt one backpropagated entry and it must notice."""
    net = small_net("tanh", "quadratic", "linear")
    X, Y = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    from gpubp import schedule

    original = schedule.Schedule.gradients

    def corrupted(self, X, Y):
        original(self, X, Y)
        self.nabla[0] *= 1.01

    monkeypatch.setattr(schedule.Schedule, "gradients", corrupted)
    assert gpubp.check_gradients(net, X, Y, max_params=None) > 1e-3
