"""The ``Network``: parameters, training by mini-batch SGD, and the API around it.

Notation follows Nielsen's *Neural Networks and Deep Learning*: layer l = 1..L has weights
``W^l`` of shape (sizes[l], sizes[l-1]) (``w^l_jk`` connects neuron k of layer l-1 to neuron j of
layer l) and biases ``b^l``. Rows of X are samples, so a batch's weighted inputs are
``Z^l = A^(l-1) (W^l)^T + b^l``. The kernels live in ``gpubp.kernels``; the order they run in,
in ``gpubp.schedule``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backends
from . import distributed as dist_mod  # distributed:
from .kernels import activations as act_codes
from .kernels import cpu as cpu_kernels
from .kernels import losses as loss_codes
from .losses import codes as layer_codes
from .losses import resolve
from .schedule import Schedule

log = logging.getLogger("gpubp")

INITS = ("scaled", "standard")
DTYPES = ("float32", "float64")
FORMAT = "gpubp-model-1"


class TrainingDiverged(ArithmeticError):
    """The cost or a parameter became NaN or inf during ``fit``."""


class History(dict):
    """Per-epoch records of ``fit``: lists under "epoch", "lr", "loss", "val_loss", "val_accuracy", "seconds".

    "loss" is the training cost C averaged over the epoch's samples, each sample's C_x measured by
    the forward pass that trained on it (before its batch's update). The first epoch's "seconds"
    include compiling the kernels, the first time a process uses them.

    The momentum state persists across ``fit`` calls on one network, like an optimizer's, and
    ``save`` stores it with the parameters, so a loaded model goes on with the velocity it had.
    """


def _check_positive(name: str, value: Any, integer: bool) -> None:
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _is_device_array(x: Any) -> bool:
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


class Network:
    """A multilayer perceptron trained by backpropagation and mini-batch SGD.

    ``Network([784, 30, 10])`` has 784 inputs, one hidden layer of 30 neurons and 10 outputs.
    ``activation`` is f for the hidden layers, ``output_activation`` (default: the same) for the
    output layer, ``loss`` the cost C. ``init="scaled"`` draws W from N(0, 1/n_in) and b from
    N(0, 1); ``"standard"`` draws both from N(0, 1). ``device`` is "auto" (CUDA on a real GPU,
    else the CPU kernels), "cuda" or "cpu". ``seed`` fixes the initial parameters and the
    shuffling: the same seed gives the same result on the CPU. ``path`` chooses how an epoch's
    kernels are run ("auto", "layers", "epoch", and on CUDA "graph" or, with CuPy, "cublas" and
    "cublas-graph"; see ``gpubp.schedule``): every path computes the same function.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str | None = None,
        loss: str = "quadratic",
        init: str = "scaled",
        dtype: str = "float32",
        device: str = "auto",
        seed: int | None = 0,
        path: str = "auto",
    ) -> None:
        sizes = self._check_sizes(sizes)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose 'scaled' or 'standard'")
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            scale = 1.0 / math.sqrt(n_in) if init == "scaled" else 1.0
            weights.append(rng.standard_normal((n_out, n_in)) * scale)
        biases = [rng.standard_normal(n) for n in sizes[1:]]
        self._setup(sizes, weights, biases, activation, output_activation, loss, dtype, device, path, rng)

    @classmethod
    def from_params(
        cls,
        weights: Sequence[Any],
        biases: Sequence[Any],
        activation: str = "sigmoid",
        output_activation: str | None = None,
        loss: str = "quadratic",
        dtype: str = "float32",
        device: str = "auto",
        seed: int | None = 0,
        path: str = "auto",
    ) -> Network:
        """A network with the given parameters: weights[l] is (sizes[l+1], sizes[l])."""
        if len(weights) != len(biases) or len(weights) == 0:
            raise ValueError(
                f"need one bias vector per weight matrix and at least one layer; "
                f"got {len(weights)} weight matrices and {len(biases)} bias vectors"
            )
        weights = [np.asarray(w) for w in weights]
        biases = [np.asarray(b) for b in biases]
        sizes = [weights[0].shape[1] if weights[0].ndim == 2 else -1] + [w.shape[0] for w in weights]
        for l, (w, b) in enumerate(zip(weights, biases)):
            if w.ndim != 2 or w.shape[1] != sizes[l] or b.shape != (w.shape[0],):
                raise ValueError(
                    f"layer {l + 1}: weights {w.shape} and biases {b.shape} do not chain; "
                    f"expected weights ({w.shape[0] if w.ndim else '?'}, {sizes[l]}) and biases ({w.shape[0]},)"
                )
            for name, p in (("weights", w), ("biases", b)):
                if p.dtype.kind not in "iuf" or not np.isfinite(p).all():
                    raise ValueError(f"layer {l + 1}: {name} must be finite real numbers")
        net = cls.__new__(cls)
        net._setup(
            cls._check_sizes(sizes),
            weights,
            biases,
            activation,
            output_activation,
            loss,
            dtype,
            device,
            path,
            np.random.default_rng(seed),
        )
        return net

    def _setup(
        self,
        sizes: list[int],
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        activation: str,
        output_activation: str | None,
        loss: str,
        dtype: str,
        device: str,
        path: str,
        rng: np.random.Generator,
    ) -> None:
        self.activation, self.output_activation, self.loss = resolve(activation, output_activation, loss)
        if self.output_activation == "softmax" and sizes[-1] < 2:
            raise ValueError("softmax over a single output is always 1: use two outputs, or a sigmoid output")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if self.dtype is None or self.dtype.name not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose 'float32' or 'float64'")
        self.sizes = sizes
        self.epochs_trained = 0  # epochs of fit these parameters have had (kept by save and load)
        self._rng = rng
        self._backend = backends.select(device)
        flat = np.concatenate([w.ravel() for w in weights] + [b.ravel() for b in biases])
        self._schedule = Schedule(
            self._backend,
            sizes,
            layer_codes(self.activation, self.output_activation, len(sizes) - 1),
            loss_codes.CODES[self.loss],
            flat.astype(self.dtype),
            path,
        )

    @staticmethod
    def _check_sizes(sizes: Sequence[int]) -> list[int]:
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"a network needs at least two layers (inputs and outputs), got sizes={sizes}")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
                raise ValueError(f"every layer size must be a positive integer, got sizes={sizes}")
        return [int(s) for s in sizes]

    # -- properties ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """ "cpu" or "cuda": where this network's kernels run."""
        return self._backend.name

    @property
    def path(self) -> str:
        """ "epoch" (a whole epoch per call), "layers" (launches per layer), "graph" (the layers
        path's launches recorded as a CUDA graph and replayed), "cublas" (launches per layer,
        products by cuBLAS), "cublas-graph" (the cublas path recorded and replayed) or "auto"
        (by batch size on CUDA)."""
        return self._schedule.path

    @property
    def weights(self) -> list[np.ndarray]:
        """W^1..W^L as numpy copies; weights[l].shape == (sizes[l+1], sizes[l])."""
        return self._split(self._schedule.host_params())[0]

    @property
    def biases(self) -> list[np.ndarray]:
        """b^1..b^L as numpy copies; biases[l].shape == (sizes[l+1],)."""
        return self._split(self._schedule.host_params())[1]

    def _split(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ws, bs = [], []
        for w_off, b_off, n_out, n_in in self._schedule.layout:
            ws.append(flat[w_off : w_off + n_out * n_in].reshape(n_out, n_in).copy())
            bs.append(flat[b_off : b_off + n_out].copy())
        return ws, bs

    def __repr__(self) -> str:
        return (
            f"Network({self.sizes}, activation={self.activation!r}, output_activation="
            f"{self.output_activation!r}, loss={self.loss!r}, dtype={self.dtype.name!r}, "
            f"device={self.device!r})"
        )

    # -- input checks: once, at the edge -------------------------------------------------------------
    def _inputs(self, X: Any, name: str = "X") -> Any:
        """X as a C-contiguous (n, sizes[0]) array of the network's dtype on its device."""
        if _is_device_array(X):
            if self.device != "cuda":
                raise TypeError(f"{name} is a GPU array but this network runs on the CPU; pass a numpy array")
            from numba import cuda

            X = cuda.as_cuda_array(X)
            self._check_shape(name, X.shape, X.ndim)
            if X.dtype != self.dtype:
                raise TypeError(f"{name} is {X.dtype} on the GPU but the network is {self.dtype}; convert it first")
            if not X.is_c_contiguous():
                raise ValueError(f"{name} on the GPU must be C-contiguous")
            count = self._backend.zeros(1, np.int64)  # checked on the GPU: only the count comes back
            self._schedule.k.count_nonfinite(X.reshape(X.size), count)
            if int(count.copy_to_host()[0]):
                raise ValueError(f"{name} contains NaN or inf")
            return X
        X = np.asarray(X)
        self._check_shape(name, X.shape, X.ndim)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = np.ascontiguousarray(X, dtype=self.dtype)
        count = np.zeros(1, np.int64)
        cpu_kernels.count_nonfinite(X.reshape(-1), count)  # one pass, no temporary array
        if count[0]:
            row = int(np.argwhere(~np.isfinite(X))[0][0])
            raise ValueError(f"{name} contains NaN or inf (first in row {row})")
        return self._backend.to_device(X)

    def _check_shape(self, name: str, shape: tuple[int, ...], ndim: int) -> None:
        if ndim != 2 or shape[1] != self.sizes[0] or shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (n, {self.sizes[0]}) with n >= 1 for a network with "
                f"{self.sizes[0]} inputs, got {tuple(shape)}"
            )

    def _targets(self, Y: Any, n: int, name: str = "Y") -> Any:
        """Y as (n, sizes[-1]) targets on the device; integer labels (n,) are one-hot encoded.

        Targets already on the GPU in the network's dtype are checked on a host copy (they are
        small) and then used in place, so repeated fits on the same arrays reuse a recorded graph."""
        on_gpu = None
        if _is_device_array(Y):
            from numba import cuda

            on_gpu = cuda.as_cuda_array(Y)
            Y = on_gpu.copy_to_host()
        Y = np.asarray(Y)
        k = self.sizes[-1]
        if Y.ndim == 0 or len(Y) != n:
            raise ValueError(f"{name} must have one row per sample: X has {n} rows, {name} has shape {Y.shape}")
        if Y.ndim == 1 and k == 1 and Y.dtype.kind in "biuf":
            Y = Y.reshape(n, 1)
        if Y.ndim == 1:
            if Y.dtype.kind not in "biu":
                raise TypeError(f"{name} as a 1-D array holds class labels and must be integers, got {Y.dtype}")
            bad = (Y < 0) | (Y >= k)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"label {Y[i]} at row {i} is out of range for {k} outputs (labels must be 0..{k - 1})")
            onehot = np.zeros((n, k), self.dtype)
            onehot[np.arange(n), Y.astype(np.int64)] = 1
            return self._backend.to_device(onehot)
        if Y.ndim != 2 or Y.shape[1] != k:
            raise ValueError(
                f"{name} must be integer labels of shape ({n},) or targets of shape ({n}, {k}), got {Y.shape}"
            )
        if Y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {Y.dtype}")
        Y = np.ascontiguousarray(Y, dtype=self.dtype)
        if not np.isfinite(Y).all():
            raise ValueError(f"{name} contains NaN or inf (first in row {int(np.argwhere(~np.isfinite(Y))[0][0])})")
        if self.loss in ("cross_entropy", "log_likelihood") and ((Y < 0) | (Y > 1)).any():
            raise ValueError(f"{name}: {self.loss} needs targets in [0, 1]")
        if self.loss == "log_likelihood" and not np.allclose(Y.sum(axis=1), 1, atol=1e-5):
            raise ValueError(f"{name}: log_likelihood needs each target row to sum to 1 (one-hot or probabilities)")
        if on_gpu is not None and self.device == "cuda" and on_gpu.dtype == self.dtype and on_gpu.is_c_contiguous():
            return on_gpu.reshape(Y.shape)  # a 1-D target vector of a one-output network becomes (n, 1)
        return self._backend.to_device(Y)

    # -- the API ------------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        Y: Any,
        epochs: int = 30,
        batch_size: int = 10,
        lr: float = 3.0,
        validation: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        callback: Callable[[int, dict], Any] | None = None,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        progress: Callable[[int, int], Any] | None = None,
        lr_decay: float = 1.0,
        comm: Any = None,
    ) -> History:
        """Train by mini-batch SGD and return the per-epoch ``History``.

        Each epoch shuffles the rows (if ``shuffle``) and, for every mini-batch of ``batch_size``
        rows, does ``W <- W - lr * dC/dW`` and ``b <- b - lr * dC/db`` for the cost averaged over
        the batch. With ``momentum`` mu and ``weight_decay`` lambda (L2, weights only):
        ``v <- mu v - lr (dC/dW + lambda W); W <- W + v``. ``callback(epoch, record)`` runs after
        each epoch and stops training by returning False; ``progress(done, total)`` is told the
        samples done a few dozen times an epoch. ``lr_decay`` multiplies the learning rate after
        every epoch (epoch e trains with lr * lr_decay**(e-1)). If the cost or a parameter becomes NaN or inf,
        training stops with ``TrainingDiverged`` and the network keeps the parameters it had at the
        end of the last finite epoch.

        ``comm`` (an mpi4py communicator, or a ``gpubp.distributed.Communicator`` from
        ``gpubp.distributed.init()``) trains data-parallel over its ranks: every rank calls ``fit``
        with the same data and settings, ``batch_size`` is the global batch, each rank computes the
        gradients of its share of every batch and one all-reduce sums them (see ``gpubp.distributed``).
        """
        _check_positive("epochs", epochs, integer=True)
        _check_positive("batch_size", batch_size, integer=True)
        _check_positive("lr", lr, integer=False)
        _check_positive("lr_decay", lr_decay, integer=False)
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        for name, fn in (("callback", callback), ("progress", progress)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {fn!r}")
        if not (0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not (0 < lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
        Xd = self._inputs(X)
        n = Xd.shape[0]
        Yd = self._targets(Y, n)
        val = None
        if validation is not None:
            if len(validation) != 2:
                raise ValueError("validation must be a pair (X_val, Y_val)")
            Xv = self._inputs(validation[0], "X_val")
            val = (Xv, self._targets(validation[1], Xv.shape[0], "Y_val"))

        batch_size = min(int(batch_size), n)
        dist = dist_mod.prepare_fit(  # distributed: None on one process
            comm, self._schedule, self.device, rows=n, val_rows=0 if val is None else val[0].shape[0],
            batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
            lr_decay=lr_decay, shuffle=shuffle,
        )  # fmt: skip
        self._schedule.path_for(batch_size)  # a path that cannot run this batch size fails here, not mid-epoch
        history = History(epoch=[], lr=[], loss=[], val_loss=[], val_accuracy=[], seconds=[])
        s = self._schedule
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            order = self._rng.permutation(n) if shuffle else np.arange(n)
            if dist is not None:  # distributed: rank 0's order on every rank
                dist.broadcast(order)
            s.save_snapshot()
            s.reset_cost()
            epoch_lr = float(lr) * float(lr_decay) ** (epoch - 1)
            s.train_epoch(Xd, Yd, order, batch_size, epoch_lr, float(momentum), float(weight_decay), progress)
            cost = s.read_cost()  # also waits for the epoch's kernels to finish
            if dist is not None:  # distributed: the sum over every rank's rows
                cost = dist.end_epoch(cost)
            loss = cost / n
            if not math.isfinite(loss) or s.nonfinite_params():
                s.restore_snapshot()
                since = f"the end of epoch {epoch - 1}" if epoch > 1 else "before this fit"
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the cost or a parameter became NaN or inf "
                    f"with lr={epoch_lr:g}; the network keeps its parameters from {since}. "
                    f"Try a smaller learning rate."
                )
            self.epochs_trained += 1
            record = {"epoch": epoch, "lr": epoch_lr, "loss": loss, "val_loss": None, "val_accuracy": None}
            if val is not None:
                record["val_loss"], record["val_accuracy"] = self._evaluate(*val, dist)  # distributed: dist
            record["seconds"] = time.perf_counter() - t0
            for key, value in record.items():
                history[key].append(value)
            log.info("epoch %d: %s", epoch, record)
            stop = callback is not None and callback(epoch, dict(record)) is False
            if dist is not None:  # distributed: every rank stops when one does
                stop = dist.any(stop)
            if stop:
                break
        return history

    def step(self, X: Any, Y: Any, lr: float) -> None:
        """One SGD step on one mini-batch: W <- W - lr * dC/dW, b <- b - lr * dC/db.

        Raises ``TrainingDiverged`` and leaves the network as it was if a parameter became NaN or inf.
        """
        _check_positive("lr", lr, integer=False)
        Xd = self._inputs(X)
        Yd = self._targets(Y, Xd.shape[0])
        s = self._schedule
        s.save_snapshot()
        s.gradients(Xd, Yd)
        s.update_layers(float(lr), 0.0, 0.0)
        if s.nonfinite_params():
            s.restore_snapshot()
            raise TrainingDiverged(f"the step with lr={lr:g} made a parameter NaN or inf; the network is unchanged")

    def gradients(self, X: Any, Y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(dC/dW, dC/db) for each layer, for the cost averaged over the rows of X."""
        Xd = self._inputs(X)
        Yd = self._targets(Y, Xd.shape[0])
        self._schedule.gradients(Xd, Yd)
        return self._split(self._schedule.backend.to_host(self._schedule.nabla))

    def predict(self, X: Any) -> np.ndarray:
        """The output activations a^L, shape (n, sizes[-1])."""
        return self._schedule.predict(self._inputs(X))

    def evaluate(self, X: Any, Y: Any, comm: Any = None) -> dict[str, float]:
        """{"loss": C averaged over the rows, "accuracy": fraction of rows whose argmax matches}.

        With a single output, a row counts as correct when a and y fall on the same side of 0.5.
        With ``comm`` (as in ``fit``), each rank evaluates its share of the rows and the sums are
        added over the ranks; every rank gets the whole result.
        """
        Xd = self._inputs(X)
        dist = dist_mod.communicator(comm)  # distributed:
        loss, accuracy = self._evaluate(Xd, self._targets(Y, Xd.shape[0]), dist)
        return {"loss": loss, "accuracy": accuracy}

    def _evaluate(self, Xd: Any, Yd: Any, dist: Any = None) -> tuple[float, float]:
        n = Xd.shape[0]
        if dist is not None:  # distributed: this rank's share of the rows; sums over every rank's below
            lo, hi = dist.share(0, n)
            Xd, Yd = Xd[lo:hi], Yd[lo:hi]
        cost, correct = self._schedule.evaluate(Xd, Yd) if Xd.shape[0] else (0.0, 0)
        if self.sizes[-1] == 1 and Xd.shape[0]:
            a = self._schedule.predict(Xd)[:, 0]
            y = self._schedule.backend.to_host(Yd)[:, 0]
            correct = int((((a > 0.5) == (y > 0.5)) & ~np.isnan(a)).sum())
        if dist is not None:  # distributed:
            cost, correct = dist.sum(cost, correct)
        return cost / n, correct / n

    def trace(self, x: Any, y: Any, lr: float = 0.5) -> dict[str, Any]:
        """Every quantity of one forward and one backward pass on one sample, in float64.

        Returns "x", "y", "weights", "biases", "z" and "a" per layer (a[0] is x), "cost",
        "delta" per layer, "nabla_w", "nabla_b", and the parameters after one SGD step with
        ``lr``: "weights_after", "biases_after". Computed by the CPU kernels.
        """
        k = cpu_kernels
        _check_positive("lr", lr, integer=False)
        f64 = Network.from_params(
            self.weights, self.biases, self.activation, self.output_activation, self.loss, dtype="float64", device="cpu"
        )
        x = np.asarray(x, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"x must be one sample: a vector of {self.sizes[0]} inputs, got shape {x.shape}")
        x = x.reshape(1, -1)
        X = f64._inputs(x, "x")
        Y = f64._targets(np.atleast_1d(np.asarray(y)).reshape(1, -1) if np.ndim(y) else np.array([y]), 1, "y")
        W, b, L = f64.weights, f64.biases, len(self.sizes) - 1
        acts = layer_codes(self.activation, self.output_activation, L)
        a, z = [X], []
        for l in range(L):
            z.append(np.empty((1, self.sizes[l + 1])))
            a.append(np.empty((1, self.sizes[l + 1])))
            k.forward(a[l], W[l], b[l], z[l], a[l + 1], acts[l])
        cost = np.zeros(1)
        delta = [np.empty((1, n)) for n in self.sizes[1:]]
        k.output_error(z[-1], a[-1], Y, delta[-1], loss_codes.CODES[self.loss], acts[-1], cost)
        for l in range(L - 2, -1, -1):
            k.hidden_error(delta[l + 1], W[l + 1], z[l], a[l + 1], delta[l], acts[l])
        nabla_w = [np.empty_like(w) for w in W]
        nabla_b = [np.empty_like(bb) for bb in b]
        for l in range(L):
            k.weight_gradient(delta[l], a[l], 1.0, nabla_w[l])
            k.bias_gradient(delta[l], 1.0, nabla_b[l])
        row = lambda m: m[0].copy()  # noqa: E731
        return {
            "x": row(X),
            "y": row(Y),
            "weights": W,
            "biases": b,
            "z": [row(v) for v in z],
            "a": [row(v) for v in a],
            "cost": float(cost[0]),
            "delta": [row(v) for v in delta],
            "nabla_w": nabla_w,
            "nabla_b": nabla_b,
            "weights_after": [w - lr * g for w, g in zip(W, nabla_w)],
            "biases_after": [bb - lr * g for bb, g in zip(b, nabla_b)],
            "lr": float(lr),
            "activations": [act_codes.NAMES[c] for c in acts],
            "loss": self.loss,
        }

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (.npz) atomically: a temporary file, then a rename.

        The file holds W^l and b^l and, once the network has trained, the velocity of the SGD
        update (``vw{l}``, ``vb{l}``; the momentum state), like an optimizer's state in a checkpoint."""
        path = os.fspath(path)
        config = {
            "sizes": self.sizes,
            "activation": self.activation,
            "output_activation": self.output_activation,
            "loss": self.loss,
            "dtype": self.dtype.name,
            "epochs_trained": self.epochs_trained,
        }
        arrays = {"format": np.array(FORMAT), "config": np.array(json.dumps(config))}
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{l}"], arrays[f"b{l}"] = w, b
        velocity = self._schedule.backend.to_host(self._schedule.velocity)
        if velocity.any():  # zero until the first update: no need to double the file
            for l, (vw, vb) in enumerate(zip(*self._split(velocity))):
                arrays[f"vw{l}"], arrays[f"vb{l}"] = vw, vb
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{path}: the folder {folder} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=".gpubp-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", seed: int | None = 0) -> Network:
        """Read a model written by ``save``; ``seed`` fixes the shuffling of later ``fit`` calls."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such model file")
        if not os.path.isfile(path):
            raise ValueError(f"{path}: not a file")
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != FORMAT:
                    raise KeyError(f"no '{FORMAT}' marker")
                config = json.loads(str(data["config"]))
                L = len(config["sizes"]) - 1
                weights = [data[f"w{l}"] for l in range(L)]
                biases = [data[f"b{l}"] for l in range(L)]
                velocity = [data[f"v{p}{l}"] for p in "wb" for l in range(L)] if "vw0" in data.files else None
            names = [config[k] for k in ("activation", "output_activation", "loss", "dtype")]
            epochs_trained = config.get("epochs_trained", 0)  # absent from files of gpubp 0.1
            if isinstance(epochs_trained, bool) or not isinstance(epochs_trained, int) or epochs_trained < 0:
                raise ValueError(f"epochs_trained must be a count, got {epochs_trained!r}")
            if [weights[0].shape[1]] + [w.shape[0] for w in weights] != config["sizes"]:
                raise ValueError(f"the weights do not match sizes {config['sizes']}")
            if velocity is not None:
                if [v.shape for v in velocity] != [p.shape for p in weights + biases]:
                    raise ValueError("the momentum state does not match the parameters")
                if not all(np.isfinite(v).all() for v in velocity):
                    raise ValueError("the momentum state holds NaN or inf")
        except (
            zipfile.BadZipFile,
            EOFError,
            OSError,
            KeyError,
            ValueError,
            IndexError,
            TypeError,
            AttributeError,
        ) as e:
            raise ValueError(f"{path}: not a gpubp model, or truncated or corrupt ({e})") from None
        activation, output_activation, loss, dtype = names
        net = cls.from_params(
            weights, biases, activation, output_activation, loss, dtype=dtype, device=device, seed=seed
        )
        net.epochs_trained = epochs_trained
        if velocity is not None:
            flat = np.concatenate([v.ravel() for v in velocity]).astype(net.dtype)
            net._schedule.backend.copy(net._backend.to_device(flat), net._schedule.velocity)
        return net


def check_gradients(
    net: Network, X: Any, Y: Any, eps: float = 1e-5, max_params: int | None = 2000, seed: int = 0
) -> float:
    """Largest relative error between ``net.gradients`` and central finite differences of C.

    The idea behind the method: nudge one parameter p by +-eps, watch the cost move, and compare
    (C(p + eps) - C(p - eps)) / (2 eps) with the backpropagated dC/dp. Runs on a float64 CPU copy
    of ``net``. Entries far below the largest gradient are measured against 1e-3 of it, where
    finite differences have no relative precision left. At most ``max_params`` parameters are
    checked (a random sample; all of them if None).
    """
    f64 = Network.from_params(
        net.weights, net.biases, net.activation, net.output_activation, net.loss, dtype="float64", device="cpu"
    )
    Xd = f64._inputs(X)
    Yd = f64._targets(Y, Xd.shape[0])
    s = f64._schedule
    s.gradients(Xd, Yd)
    analytic = s.nabla.copy()
    params = s.params
    idx = np.arange(params.size)
    if max_params is not None and params.size > max_params:
        idx = np.random.default_rng(seed).choice(params.size, max_params, replace=False)
    numeric = np.empty(idx.size)
    for j, i in enumerate(idx):
        p = params[i]
        params[i] = p + eps
        c_plus = f64._evaluate(Xd, Yd)[0]
        params[i] = p - eps
        c_minus = f64._evaluate(Xd, Yd)[0]
        params[i] = p
        numeric[j] = (c_plus - c_minus) / (2 * eps)
    g = analytic[idx]
    floor = 1e-3 * max(np.abs(g).max(), np.abs(numeric).max(), 1e-300)
    return float((np.abs(g - numeric) / np.maximum(np.maximum(np.abs(g), np.abs(numeric)), floor)).max())
