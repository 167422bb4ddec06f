"""The numpy peer: the same vectorised mini-batch SGD as gpubp, written as a careful numpy user would.

One matrix product per layer per mini-batch (forward, BP2 and BP4 each), float32 throughout, no
preallocated buffers or other tricks. Costs as in gpubp: quadratic C = 1/(2m) sum ||a - y||^2 with
delta^L = (a - y) f'(z), or log-likelihood with softmax outputs, delta^L = a - y.
"""

from __future__ import annotations

import numpy as np

from .common import act_numpy


def _act_prime(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return np.ones_like(z)


class NumpyMLP:
    name = "numpy"
    device = "cpu"

    def __init__(self, weights, biases, activations, loss, seed=0):
        self.weights = [np.array(W, np.float32) for W in weights]
        self.biases = [np.array(b, np.float32) for b in biases]
        self.activations = list(activations)  # activations[l] is layer l+1's
        self.loss = loss
        self.rng = np.random.default_rng(seed)
        if activations[-1] == "softmax" and loss != "log_likelihood":
            raise ValueError("the numpy peer pairs softmax outputs with the log-likelihood cost only")

    def epoch(self, X, Y, batch_size, lr):
        """One pass over (X, Y) in shuffled mini-batches: w <- w - lr/m sum_x nabla_w C_x."""
        lr = np.float32(lr)
        perm = self.rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            idx = perm[start : start + batch_size]
            self.step(X[idx], Y[idx], lr)

    def step(self, x, y, lr):
        m = len(x)
        zs, activations = [], [x]
        for W, b, act in zip(self.weights, self.biases, self.activations, strict=True):
            z = activations[-1] @ W.T + b
            zs.append(z)
            activations.append(act_numpy(act, z))
        a = activations[-1]
        if self.loss == "log_likelihood" or (self.loss == "cross_entropy" and self.activations[-1] == "sigmoid"):
            delta = a - y
        else:  # quadratic
            delta = (a - y) * _act_prime(self.activations[-1], zs[-1], a)
        for layer in range(len(self.weights) - 1, -1, -1):
            nabla_w = delta.T @ activations[layer]
            nabla_b = delta.sum(axis=0)
            if layer > 0:  # BP2 with the weights before this batch's update
                delta = (delta @ self.weights[layer]) * _act_prime(
                    self.activations[layer - 1], zs[layer - 1], activations[layer]
                )
            self.weights[layer] -= (lr / m) * nabla_w
            self.biases[layer] -= (lr / m) * nabla_b

    def params(self):
        return self.weights, self.biases
