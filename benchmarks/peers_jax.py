"""The JAX peer: a whole epoch compiled by XLA, what a performance-minded user would write.

``jax.jit`` of one function that runs ``jax.lax.scan`` over the epoch's mini-batches: each step
gathers its rows from the resident training set inside the scan (``X[idx]``), takes the gradient
of the cost with ``jax.grad`` and does the plain SGD update ``p <- p - lr dC/dp``. A last, shorter
batch (when the batch size does not divide the rows) is one more step after the scan, in the same
compiled function. Parameters are donated to the call, so XLA updates them in place.

Same network, initial parameters and mini-batches as gpubp and the numpy and torch peers: each
epoch's order is ``np.random.default_rng(seed).permutation(n)``, drawn as gpubp's ``fit`` draws it.
Costs as gpubp's: quadratic ``C = 1/(2m) sum ||a - y||^2``, or the log-likelihood of softmax outputs
(``-1/m sum y . log_softmax(z)``, whose gradient is ``(a - y)/m``). float32 throughout (JAX's default).

The compile (``jit(...).lower(...).compile()``) happens once, on the first epoch, and is timed on
its own: ``compile_s``. Every epoch's time includes moving the permutation (60,000 int32) to the
device and waiting for the result (``block_until_ready``).
"""

from __future__ import annotations

import time

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # the peer is optional
    jax = None


def available() -> tuple[bool, str]:
    if jax is None:
        return False, "jax is not installed (pip install jax)"
    return True, f"jax {jax.__version__}"


def _activation(name: str):
    return {
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "linear": lambda z: z,
    }[name]


def make_epoch(activations: list[str], loss: str, n: int, batch_size: int, lr: float):
    """The (not yet jitted) epoch ``(params, X, Y, perm) -> params`` for ``n`` rows."""
    full, rest = divmod(n, batch_size)
    softmax_out = activations[-1] == "softmax"
    if softmax_out and loss != "log_likelihood":
        raise ValueError("the JAX peer pairs softmax outputs with the log-likelihood cost only")

    def cost(params, x, y):
        a = x
        for layer, ((W, b), act) in enumerate(zip(params, activations, strict=True)):
            z = a @ W.T + b
            last = layer == len(params) - 1
            a = z if (last and softmax_out) else _activation(act)(z)
        m = x.shape[0]
        if softmax_out:
            return -jnp.sum(y * jax.nn.log_softmax(a, axis=1)) / m
        return 0.5 * jnp.sum((a - y) ** 2) / m

    grad = jax.grad(cost)

    def step(params, X, Y, idx):
        x, y = X[idx], Y[idx]  # the gather, inside the scan
        g = grad(params, x, y)
        return jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)

    def epoch(params, X, Y, perm):
        batches = perm[: full * batch_size].reshape(full, batch_size)
        params, _ = jax.lax.scan(lambda p, idx: (step(p, X, Y, idx), None), params, batches)
        if rest:
            params = step(params, X, Y, perm[full * batch_size :])
        return params

    return epoch


class JaxMLP:
    name = "jax"
    device = "cpu"

    def __init__(self, weights, biases, activations, loss, seed=0):
        self.activations = list(activations)  # activations[l] is layer l+1's
        self.loss = loss
        self._params = [
            (jnp.asarray(np.asarray(W, np.float32)), jnp.asarray(np.asarray(b, np.float32)))
            for W, b in zip(weights, biases, strict=True)
        ]
        self.rng = np.random.default_rng(seed)
        self.compile_s = None
        self._compiled = None  # (key, compiled epoch)
        self._data = None  # (X, Y, X on the device, Y on the device)

    def _resident(self, X, Y):
        if self._data is None or self._data[0] is not X or self._data[1] is not Y:
            self._data = (X, Y, jax.device_put(np.asarray(X, np.float32)), jax.device_put(np.asarray(Y, np.float32)))
            self._data[2].block_until_ready()
            self._data[3].block_until_ready()
        return self._data[2:]

    def compiled(self, X, Y, batch_size, lr):
        """The compiled epoch for these shapes (compiling it, timed into ``compile_s``, the first time)."""
        key = (len(X), batch_size, float(lr))
        if self._compiled is None or self._compiled[0] != key:
            tx, ty = self._resident(X, Y)
            fn = jax.jit(make_epoch(self.activations, self.loss, len(X), batch_size, lr), donate_argnums=0)
            perm = jnp.zeros(len(X), jnp.int32)
            t0 = time.perf_counter()
            compiled = fn.lower(self._params, tx, ty, perm).compile()
            self.compile_s = time.perf_counter() - t0
            self._compiled = (key, compiled)
        return self._compiled[1]

    def epoch(self, X, Y, batch_size, lr):
        epoch = self.compiled(X, Y, batch_size, lr)
        tx, ty = self._resident(X, Y)
        perm = jnp.asarray(self.rng.permutation(len(X)).astype(np.int32))
        self._params = epoch(self._params, tx, ty, perm)
        jax.block_until_ready(self._params)

    def params(self):
        return [np.array(W) for W, _ in self._params], [np.array(b) for _, b in self._params]
