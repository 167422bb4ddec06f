"""An independent numpy float64 reference of the network's math, written plainly from the equations."""

import numpy as np

ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear"]
# (loss, output activation) pairs the library accepts.
LOSS_OUTPUTS = [("quadratic", a) for a in ACTIVATIONS + ["softmax"]] + [
    ("cross_entropy", "sigmoid"),
    ("log_likelihood", "softmax"),
]


def f(z, name):
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "linear":
        return z.copy()
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(name)


def fprime(z, name):
    if name == "sigmoid":
        s = f(z, "sigmoid")
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(float)
    return np.ones_like(z)


def cost_rows(a, y, loss):
    """C_x for each row."""
    if loss == "quadratic":
        return 0.5 * ((a - y) ** 2).sum(axis=1)
    if loss == "cross_entropy":
        return -(y * np.log(a) + (1 - y) * np.log(1 - a)).sum(axis=1)
    return -(y * np.log(a)).sum(axis=1)


def grad_a(a, y, loss):
    if loss == "quadratic":
        return a - y
    if loss == "cross_entropy":
        return (a - y) / (a * (1 - a))
    return -y / a


def output_error(z, a, y, loss, act):
    """BP1 from the general formula: delta = J_f(z)^T grad_a C (no simplification)."""
    g = grad_a(a, y, loss)
    if act == "softmax":  # J_jk = a_j (delta_jk - a_k)
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    return g * fprime(z, act)


def forward(weights, biases, X, acts):
    zs, as_ = [], [X]
    for W, b, act in zip(weights, biases, acts):
        zs.append(as_[-1] @ W.T + b)
        as_.append(f(zs[-1], act))
    return zs, as_


def backprop(weights, biases, X, Y, acts, loss):
    """Mean cost and (dC/dW, dC/db) averaged over the rows of X."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    weights = [np.asarray(w, float) for w in weights]
    biases = [np.asarray(b, float) for b in biases]
    zs, as_ = forward(weights, biases, X, acts)
    n = len(X)
    delta = output_error(zs[-1], as_[-1], Y, loss, acts[-1])
    nabla_w, nabla_b = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        nabla_w[l] = delta.T @ as_[l] / n
        nabla_b[l] = delta.sum(axis=0) / n
        if l > 0:
            delta = (delta @ weights[l]) * fprime(zs[l - 1], acts[l - 1])
    return cost_rows(as_[-1], Y, loss).mean(), nabla_w, nabla_b


def onehot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1
    return out


def targets(rng, n, k, loss, act):
    """Random targets fitting a loss: one-hot rows for softmax/log-likelihood, [0,1] otherwise."""
    if loss == "log_likelihood" or act == "softmax":
        return onehot(rng.integers(0, k, n), k)
    if loss == "cross_entropy" or act == "sigmoid":
        return rng.uniform(0.05, 0.95, (n, k))
    return rng.standard_normal((n, k))
