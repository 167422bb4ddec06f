"""The ``Network``: parameters, training by mini-batch SGD, and the API around it.

Notation follows Nielsen's *Neural Networks and Deep Learning*: layer l = 1..L has weights
``W^l`` of shape (sizes[l], sizes[l-1]) (``w^l_jk`` connects neuron k of layer l-1 to neuron j of
layer l) and biases ``b^l``. Rows of X are samples, so a batch's weighted inputs are
``Z^l = A^(l-1) (W^l)^T + b^l``. A network is two typed values: its settings (``config``, a
``gpubp.config.Config``) and its state (``state_dict()``, a ``gpubp.state.State``). The kernels
live in ``gpubp.kernels``; the order they run in, in ``gpubp.schedule``.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backends, modelfile, training
from . import distributed as dist_mod
from .config import Config, check
from .losses import codes as layer_codes
from .losses import loss_code
from .schedule import Execution, Schedule, Tuning, path_name
from .state import State
from .training import History

log = logging.getLogger("gpubp")

BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")  # numpy's, for a State's rng


class TrainingDiverged(ArithmeticError):
    """The cost or a parameter became NaN or inf during ``fit``."""


def _locked(method: Callable) -> Callable:
    """Run a method holding the network's lock: calls from several threads take turns, since
    they share the parameters and the work buffers (a fit makes the others wait)."""

    @functools.wraps(method)
    def run(self: Network, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


def _checked(**values: Any) -> dict[str, Any]:
    """Each value checked against its entry of ``gpubp.config.PARAMETERS``."""
    return {key: check(key, value) for key, value in values.items()}


class Network:
    """A multilayer perceptron trained by backpropagation and mini-batch SGD.

    ``Network([784, 30, 10])`` has 784 inputs, one hidden layer of 30 neurons and 10 outputs.
    ``activation`` is f for the hidden layers, ``output_activation`` (default: the same) for the
    output layer, ``loss`` the cost C. ``init="scaled"`` draws W from N(0, 1/n_in) and b from
    N(0, 1); ``"standard"`` draws both from N(0, 1). ``device`` is "auto" (CUDA on a real GPU,
    else the CPU kernels), "cuda" or "cpu". ``seed`` fixes the initial parameters and the
    shuffling: the same seed gives the same result on the CPU. ``path`` chooses how an epoch's
    kernels are run: "auto", a ``gpubp.Execution`` (how products are computed, whether steps are
    recorded as CUDA graphs and replayed, whether the whole epoch is one call), or one of the names
    "layers", "epoch", "graph", "cublas", "cublas-graph" (see ``gpubp.schedule.PATHS``); every
    path computes the same function. ``tuning`` (a ``gpubp.Tuning``) sets launch sizes on CUDA.

    A network may be shared between threads: its methods take turns (a ``fit`` makes the others
    wait), since they share the parameters and the device's work buffers.
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
        path: str | Execution = "auto",
        tuning: Tuning | None = None,
    ) -> None:
        config = Config.make(sizes, activation, output_activation, loss, dtype, init)
        rng = np.random.default_rng(check("seed", seed))
        weights = []
        for n_in, n_out in zip(config.sizes[:-1], config.sizes[1:]):
            scale = 1.0 / math.sqrt(n_in) if init == "scaled" else 1.0
            weights.append(rng.standard_normal((n_out, n_in)) * scale)
        biases = [rng.standard_normal(n) for n in config.sizes[1:]]
        self._setup(config, State(weights, biases), device, rng, path, tuning)

    @classmethod
    def from_config(
        cls,
        config: Config,
        state: State,
        device: str = "auto",
        seed: int | None = 0,
        path: str | Execution = "auto",
        tuning: Tuning | None = None,
    ) -> Network:
        """A network of ``config``'s settings holding ``state`` (e.g. another's ``state_dict()``)."""
        net = cls.__new__(cls)
        net._setup(config, state, device, np.random.default_rng(check("seed", seed)), path, tuning)
        return net

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
        path: str | Execution = "auto",
        tuning: Tuning | None = None,
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
        config = Config.make(sizes, activation, output_activation, loss, dtype)
        return cls.from_config(config, State(weights, biases), device, seed, path, tuning)

    def _setup(
        self, config: Config, state: State, device: str, rng: np.random.Generator, path: Any, tuning: Any
    ) -> None:
        self.config = config
        self._device = device  # as asked ("auto" stays "auto": a pickled network runs where it lands)
        self.epochs_trained = 0  # epochs of fit these parameters have had (kept by save and load)
        self._rng = rng
        self._lock = threading.RLock()
        n_params = sum(a * b + b for a, b in zip(config.sizes[:-1], config.sizes[1:]))
        self._schedule = Schedule(
            backends.select(check("device", device)),
            list(config.sizes),
            layer_codes(config.activation, config.output_activation, len(config.sizes) - 1),
            loss_code(config.loss),
            np.zeros(n_params, config.dtype),
            path,
            tuning,
        )
        self.load_state_dict(state)

    # -- properties: the settings are the Config's --------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        """Layer widths, inputs first."""
        return list(self.config.sizes)

    @property
    def activation(self) -> str:
        return self.config.activation

    @property
    def output_activation(self) -> str:
        return self.config.output_activation

    @property
    def loss(self) -> str:
        return self.config.loss

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.config.dtype)

    @property
    def device(self) -> str:
        """ "cpu" or "cuda": where this network's kernels run."""
        return self._schedule.backend.name

    @property
    def path(self) -> str | Execution:
        """The ``path`` asked for: "auto" (chosen by batch size), a name of ``gpubp.schedule.PATHS``
        ("layers", "epoch", "graph", "cublas", "cublas-graph") or an ``Execution``."""
        return path_name(self._schedule.path)

    @property
    def weights(self) -> list[np.ndarray]:
        """W^1..W^L as numpy copies; weights[l].shape == (sizes[l+1], sizes[l])."""
        with self._lock:
            return self._schedule.split(self._schedule.host("params"))[0]

    @property
    def biases(self) -> list[np.ndarray]:
        """b^1..b^L as numpy copies; biases[l].shape == (sizes[l+1],)."""
        with self._lock:
            return self._schedule.split(self._schedule.host("params"))[1]

    def __repr__(self) -> str:
        return (
            f"Network({self.sizes}, activation={self.activation!r}, output_activation="
            f"{self.output_activation!r}, loss={self.loss!r}, dtype={self.dtype.name!r}, "
            f"device={self.device!r})"
        )

    # -- the state: one typed value -------------------------------------------------------------------
    @_locked
    def state_dict(self, include_rng: bool = True) -> State:
        """A copy of what this network has learned (a ``gpubp.state.State``): the parameters, the
        momentum state (None while zero), ``epochs_trained`` and, with ``include_rng``, the state of
        the generator that shuffles ``fit``'s rows."""
        s = self._schedule
        weights, biases = s.split(s.host("params"))
        velocity = s.host("velocity")
        rng = copy.deepcopy(self._rng.bit_generator.state) if include_rng else None
        return State(weights, biases, s.split(velocity) if velocity.any() else None, self.epochs_trained, rng)

    @_locked
    def load_state_dict(self, state: State) -> None:
        """Take ``state`` (from ``state_dict()``, a checkpoint, a model file): its arrays must fit
        ``config.sizes`` and be finite. A state without ``rng`` leaves the shuffling as it is."""
        sizes, L = self.config.sizes, len(self.config.sizes) - 1
        groups = {"weights": state.weights, "biases": state.biases}
        if state.velocity is not None:
            groups.update(velocity_w=state.velocity[0], velocity_b=state.velocity[1])
        for name, arrays in groups.items():
            if len(arrays) != L:
                raise ValueError(f"{name}: {len(arrays)} layers, but the network has {L}")
            for l, a in enumerate(arrays):
                shape = (sizes[l + 1], sizes[l]) if name.endswith(("weights", "_w")) else (sizes[l + 1],)
                a = np.asarray(a)
                if a.shape != shape:
                    raise ValueError(
                        f"layer {l + 1}: {name} of shape {a.shape}, expected {shape} for sizes {list(sizes)}"
                    )
                if a.dtype.kind not in "iuf" or not np.isfinite(a).all():
                    raise ValueError(f"layer {l + 1}: {name} must be finite real numbers")
        epochs = state.epochs_trained
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs_trained must be a non-negative integer, got {epochs!r}")
        s = self._schedule
        s.set_host("params", state.flat("params"))
        s.set_host("velocity", state.flat("velocity") if state.velocity is not None else np.zeros(s.params.shape))
        self.epochs_trained = int(epochs)
        if state.rng is not None:
            if state.rng.get("bit_generator") not in BIT_GENERATORS:
                raise ValueError(f"rng: unknown bit generator {state.rng.get('bit_generator')!r}")
            generator = getattr(np.random, state.rng["bit_generator"])()
            generator.state = state.rng
            self._rng = np.random.Generator(generator)

    # -- input checks: once, at the edge -------------------------------------------------------------
    def _inputs(self, X: Any, name: str = "X") -> Any:
        """X as a C-contiguous (n, sizes[0]) array of the network's dtype on its device."""
        on_gpu = backends.gpu_array(X)
        if on_gpu is not None:
            if self.device != "cuda":
                raise TypeError(f"{name} is a GPU array but this network runs on the CPU; pass a numpy array")
            X = on_gpu
            self._check_shape(name, X.shape, X.ndim)
            if X.dtype != self.dtype:
                raise TypeError(f"{name} is {X.dtype} on the GPU but the network is {self.dtype}; convert it first")
            if not X.is_c_contiguous():
                raise ValueError(f"{name} on the GPU must be C-contiguous")
            if self._schedule.nonfinite(X):  # counted on the GPU: only the count comes back
                raise ValueError(f"{name} contains NaN or inf")
            return X
        X = np.asarray(X)
        self._check_shape(name, X.shape, X.ndim)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        original = X
        with np.errstate(over="ignore"):
            X = np.ascontiguousarray(X, dtype=self.dtype)
        if self._schedule.nonfinite(X):
            row = int(np.argwhere(~np.isfinite(X))[0][0])
            if np.isfinite(original[row]).all():
                big = original[row][np.argmax(np.abs(original[row]))]
                raise ValueError(f"{name} row {row} holds {big:g}, which overflows the network's {self.dtype}")
            raise ValueError(f"{name} contains NaN or inf (first in row {row})")
        return self._schedule.backend.to_device(X)

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
        on_gpu = backends.gpu_array(Y)
        Y = np.asarray(Y if on_gpu is None else on_gpu.copy_to_host())
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
            return self._schedule.backend.to_device(onehot)
        if Y.ndim != 2 or Y.shape[1] != k:
            raise ValueError(
                f"{name} must be integer labels of shape ({n},) or targets of shape ({n}, {k}), got {Y.shape}"
            )
        if Y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {Y.dtype}")
        original = Y
        with np.errstate(over="ignore"):
            Y = np.ascontiguousarray(Y, dtype=self.dtype)
        if not np.isfinite(Y).all():
            row = int(np.argwhere(~np.isfinite(Y))[0][0])
            if np.isfinite(original[row]).all():
                raise ValueError(f"{name} row {row} holds a value that overflows the network's {self.dtype}")
            raise ValueError(f"{name} contains NaN or inf (first in row {row})")
        if self.loss in ("cross_entropy", "log_likelihood") and ((Y < 0) | (Y > 1)).any():
            raise ValueError(f"{name}: {self.loss} needs targets in [0, 1]")
        if self.loss == "log_likelihood" and not np.allclose(Y.sum(axis=1), 1, atol=1e-5):
            raise ValueError(f"{name}: log_likelihood needs each target row to sum to 1 (one-hot or probabilities)")
        if on_gpu is not None and self.device == "cuda" and on_gpu.dtype == self.dtype and on_gpu.is_c_contiguous():
            return on_gpu.reshape(Y.shape)  # a 1-D target vector of a one-output network becomes (n, 1)
        return self._schedule.backend.to_device(Y)

    # -- the API ------------------------------------------------------------------------------------
    @_locked
    def fit(
        self,
        X: Any,
        Y: Any,
        epochs: int = 30,
        batch_size: int = 10,
        lr: float = 3.0,
        *,
        validation: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        callback: Callable[[int, dict], Any] | None = None,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        progress: Callable[[int, int], Any] | None = None,
        lr_decay: float = 1.0,
        # validation split, early stopping, checkpoints (gpubp.training)
        validation_split: float | None = None,
        early_stopping: int | None = None,
        monitor: str = "auto",
        min_delta: float = 0.0,
        restore_best: bool = True,
        checkpoint: str | os.PathLike | None = None,
        baseline: float | None = None,
        comm: Any = None,
    ) -> History:
        """Train by mini-batch SGD and return the per-epoch ``History``.

        Each epoch shuffles the rows (if ``shuffle``) and, for every mini-batch of ``batch_size``
        rows, does ``W <- W - lr * dC/dW`` and ``b <- b - lr * dC/db`` for the cost averaged over
        the batch; with ``momentum`` mu and ``weight_decay`` lambda (L2, weights only),
        ``v <- mu v - lr (dC/dW + lambda W); W <- W + v``. Epoch e trains with lr * lr_decay**(e-1).
        ``callback(epoch, record)`` runs after each epoch and stops training by returning False;
        ``progress(done, total)`` hears of the samples done a few dozen times an epoch. Arguments are
        checked against ``gpubp.config.PARAMETERS`` before any work. If the cost or a parameter
        becomes NaN or inf: ``TrainingDiverged``, and the parameters of the last finite epoch.

        ``validation_split`` f holds out the last round(f n) rows (before shuffling). ``early_stopping``
        (a patience), ``checkpoint`` (a path: the best model so far, saved atomically), ``monitor``
        ("val_loss", "val_accuracy", "loss", "epoch"; "auto": "val_loss" with validation data, else
        "loss"), ``min_delta``, ``restore_best`` and ``baseline`` track the best epoch: see
        ``gpubp.training``. ``comm`` (mpi4py, or ``gpubp.distributed.init()``) trains data-parallel:
        every rank calls ``fit`` with the same data and settings, ``batch_size`` is the global batch
        and one all-reduce sums the ranks' gradients (see ``gpubp.distributed``).
        """
        h = _checked(epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, momentum=momentum)
        h |= _checked(weight_decay=weight_decay, shuffle=shuffle, callback=callback, progress=progress)
        X, Y, validation = training.split_validation(X, Y, validation, validation_split)
        tracker = training.BestModel.for_fit(  # None unless one of these asks for it
            early_stopping, monitor, min_delta, restore_best, checkpoint, baseline, validation is not None
        )
        Xd, Yd, val = self._training_data(X, Y, validation)
        n = Xd.shape[0]
        h["batch_size"] = min(h["batch_size"], n)
        dist = self._distributed(comm, n, 0 if val is None else val[0].shape[0], h, tracker)
        self._schedule.execution(h["batch_size"])  # a path that cannot run this batch size fails here, not mid-epoch
        best_state = functools.partial(self.state_dict, include_rng=False)
        if tracker is not None:
            tracker.begin(best_state)
        history = History(epoch=[], lr=[], loss=[], val_loss=[], val_accuracy=[], seconds=[])
        for epoch in range(1, h["epochs"] + 1):
            t0 = time.perf_counter()
            record = self._train_epoch(Xd, Yd, epoch, h, dist)
            if val is not None:
                record["val_loss"], record["val_accuracy"] = self._evaluate(*val, dist)
            record["seconds"] = time.perf_counter() - t0
            if self._end_epoch(record, history, tracker, best_state, h["callback"], dist):
                break
        if tracker is not None:  # the best epoch into history; restore_best
            tracker.finish(history, self.load_state_dict)
        return history

    def _distributed(self, comm: Any, rows: int, val_rows: int, arguments: dict[str, Any], tracker: Any) -> Any:
        """The Communicator of a distributed fit, every rank checked to have the same network, data
        sizes and training ``arguments``, and rank 0's parameters and momentum state taken; None on
        one process. (Every rank then makes the same early-stopping decisions from the same summed
        values; only rank 0 writes the checkpoint.)"""
        settings = {k: v for k, v in arguments.items() if k not in ("callback", "progress")}
        settings.update({k: v for k, v in self.config.to_dict().items() if k != "init"})
        settings.update(training.BestModel.settings(tracker))
        dist = dist_mod.prepare_fit(comm, self._schedule, self.device, rows=rows, val_rows=val_rows, **settings)
        if dist is not None:
            self.load_state_dict(dist.broadcast_state(self.state_dict(include_rng=False)))
        return dist

    def _end_epoch(
        self, record: dict, history: History, tracker: Any, best_state: Callable, callback: Any, dist: Any
    ) -> bool:
        """Judge the epoch (early stopping, the checkpoint), add it to ``history``, tell ``callback``;
        True: stop (on every rank when one stops)."""
        stop = tracker is not None and tracker.update(record, best_state)  # adds "improved"
        if record.get("improved") and tracker.checkpoint is not None and (dist is None or dist.rank == 0):
            tracker.checkpoint.save(self.config, tracker.best_state, record["epoch"])
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        log.info("epoch %d: %s", record["epoch"], record)
        stop = (callback is not None and callback(record["epoch"], dict(record)) is False) or stop
        return dist.any(stop) if dist is not None else stop

    def _training_data(self, X: Any, Y: Any, validation: Any) -> tuple[Any, Any, tuple[Any, Any] | None]:
        """(X, Y, validation) checked and on the device."""
        Xd = self._inputs(X)
        Yd = self._targets(Y, Xd.shape[0])
        if validation is None:
            return Xd, Yd, None
        if len(validation) != 2:
            raise ValueError("validation must be a pair (X_val, Y_val)")
        Xv = self._inputs(validation[0], "X_val")
        return Xd, Yd, (Xv, self._targets(validation[1], Xv.shape[0], "Y_val"))

    def _train_epoch(self, Xd: Any, Yd: Any, epoch: int, h: dict[str, Any], dist: Any) -> dict[str, Any]:
        """One epoch of mini-batch SGD; its record. Diverged: the parameters go back to the epoch's start."""
        n, s = Xd.shape[0], self._schedule
        order = self._rng.permutation(n) if h["shuffle"] else np.arange(n)
        if dist is not None:  # rank 0's order on every rank
            dist.broadcast(order)
        s.save_snapshot()
        s.reset_cost()
        lr = training.decayed_lr(h["lr"], h["lr_decay"], epoch - 1)
        s.train_epoch(Xd, Yd, order, h["batch_size"], lr, h["momentum"], h["weight_decay"], h["progress"])
        cost = s.read_cost()  # also waits for the epoch's kernels to finish
        if dist is not None:  # the sum over every rank's rows
            cost = dist.end_epoch(cost)
        loss = cost / n
        if not math.isfinite(loss) or s.nonfinite(s.params):
            s.restore_snapshot()
            since = f"the end of epoch {epoch - 1}" if epoch > 1 else "before this fit"
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}: the cost or a parameter became NaN or inf "
                f"with lr={lr:g}; the network keeps its parameters from {since}. "
                f"Try a smaller learning rate."
            )
        self.epochs_trained += 1
        return {"epoch": epoch, "lr": lr, "loss": loss, "val_loss": None, "val_accuracy": None}

    @_locked
    def step(self, X: Any, Y: Any, lr: float) -> None:
        """One plain SGD step on one mini-batch: W <- W - lr * dC/dW, b <- b - lr * dC/db, for the
        cost averaged over the batch.

        No momentum and no weight decay: the momentum state that ``fit`` keeps (and ``save``
        stores) is neither read nor changed, so a later ``fit`` goes on with the velocity it had.
        Raises ``TrainingDiverged`` and leaves the network as it was if a parameter became NaN or inf.
        """
        check("lr", lr)
        Xd = self._inputs(X)
        Yd = self._targets(Y, Xd.shape[0])
        s = self._schedule
        s.save_snapshot()
        s.step(Xd, Yd, float(lr))
        if s.nonfinite(s.params):
            s.restore_snapshot()
            raise TrainingDiverged(f"the step with lr={lr:g} made a parameter NaN or inf; the network is unchanged")

    @_locked
    def gradients(self, X: Any, Y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(dC/dW, dC/db) for each layer, for the cost averaged over the rows of X."""
        Xd = self._inputs(X)
        Yd = self._targets(Y, Xd.shape[0])
        self._schedule.gradients(Xd, Yd)
        return self._schedule.split(self._schedule.host("nabla"))

    @_locked
    def predict(self, X: Any) -> Any:
        """The output activations a^L, shape (n, sizes[-1]): a numpy array, or for X on the GPU
        (CuPy, PyTorch, JAX, Numba) a GPU array with no trip through host memory (CuPy when it is
        installed, else a Numba device array)."""
        on_gpu = self.device == "cuda" and backends.gpu_array(X) is not None
        out = self._schedule.predict(self._inputs(X), on_device=on_gpu)
        return backends.as_cupy(out) if on_gpu else out

    @_locked
    def device_parameters(self) -> tuple[list[Any], list[Any]]:
        """(W^1..W^L, b^1..b^L) as copies on the GPU (CuPy arrays when CuPy is installed, else Numba
        device arrays), for a network on CUDA: to hand the trained model to other GPU code without
        a trip through host memory. On the CPU, use ``weights`` and ``biases``."""
        if self.device != "cuda":
            raise TypeError("device_parameters() is for a network on CUDA; on the CPU use weights and biases")
        s = self._schedule
        copy = s.backend.empty(s.params.shape, s.dtype)
        s.backend.copy(s.params, copy)
        weights, biases = s.layer_views(copy)
        return [backends.as_cupy(w) for w in weights], [backends.as_cupy(b) for b in biases]

    @_locked
    def evaluate(self, X: Any, Y: Any, comm: Any = None) -> dict[str, float]:
        """{"loss": C averaged over the rows, "accuracy": fraction of rows whose argmax matches}.

        With a single output, a row counts as correct when a and y fall on the same side of 0.5.
        With ``comm`` (as in ``fit``), each rank evaluates its share of the rows and the sums are
        added over the ranks; every rank gets the whole result.
        """
        Xd = self._inputs(X)
        dist = dist_mod.communicator(comm)
        if dist is not None:  # each rank divides the summed counts by the rows: the same on every rank
            dist.agree(rows=Xd.shape[0])
        loss, accuracy = self._evaluate(Xd, self._targets(Y, Xd.shape[0]), dist)
        return {"loss": loss, "accuracy": accuracy}

    def _evaluate(self, Xd: Any, Yd: Any, dist: Any = None) -> tuple[float, float]:
        n = Xd.shape[0]
        if dist is not None:  # this rank's share of the rows; sums over every rank's below
            lo, hi = dist.share(0, n)
            Xd, Yd = Xd[lo:hi], Yd[lo:hi]
        cost, correct = self._schedule.evaluate(Xd, Yd) if Xd.shape[0] else (0.0, 0)
        if self.sizes[-1] == 1 and Xd.shape[0]:
            a = self._schedule.predict(Xd)[:, 0]
            y = self._schedule.backend.to_host(Yd)[:, 0]
            correct = int((((a > 0.5) == (y > 0.5)) & ~np.isnan(a)).sum())
        if dist is not None:
            cost, correct = dist.sum(cost, correct)
        return cost / n, correct / n

    def _float64_cpu_copy(self) -> Network:
        return Network.from_params(
            self.weights, self.biases, self.activation, self.output_activation, self.loss, dtype="float64", device="cpu"
        )

    def trace(self, x: Any, y: Any, lr: float = 0.5) -> dict[str, Any]:
        """Every quantity of one forward and one backward pass on one sample, in float64.

        Returns "x", "y", "weights", "biases", "z" and "a" per layer (a[0] is x), "cost",
        "delta" per layer, "nabla_w", "nabla_b", and the parameters after one SGD step with
        ``lr``: "weights_after", "biases_after". Computed by the CPU engine (``kernels.cpu.step``)
        on a float64 copy of the network, the same call that trains it.
        """
        check("lr", lr)
        f64 = self._float64_cpu_copy()
        x = np.asarray(x, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"x must be one sample: a vector of {self.sizes[0]} inputs, got shape {x.shape}")
        X = f64._inputs(x.reshape(1, -1), "x")
        Y = f64._targets(np.atleast_1d(np.asarray(y)).reshape(1, -1) if np.ndim(y) else np.array([y]), 1, "y")
        s = f64._schedule
        s.reset_cost()
        v = s.gradients(X, Y)
        W, b = f64.weights, f64.biases
        nabla_w, nabla_b = s.split(s.host("nabla"))
        row = lambda m: np.array(m[0])  # noqa: E731
        L = len(self.sizes) - 1
        return {
            "x": row(X),
            "y": row(Y),
            "weights": W,
            "biases": b,
            "z": [row(v.Z[l]) for l in range(1, L + 1)],
            "a": [row(v.A[l]) for l in range(L + 1)],
            "cost": s.read_cost(),
            "delta": [row(v.D[l]) for l in range(1, L + 1)],
            "nabla_w": nabla_w,
            "nabla_b": nabla_b,
            "weights_after": [w - lr * g for w, g in zip(W, nabla_w)],
            "biases_after": [bb - lr * g for bb, g in zip(b, nabla_b)],
            "lr": float(lr),
            "activations": self.config.layer_activations,
            "loss": self.loss,
        }

    # -- files ----------------------------------------------------------------------------------------
    @_locked
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (.npz) atomically: a temporary file, then a rename.

        The file holds ``config`` and ``state_dict()`` but the generator: W^l and b^l, ``epochs_trained``
        and, once the network has trained, the velocity of the SGD update (``vw{l}``, ``vb{l}``; the
        momentum state), like an optimizer's state in a checkpoint. The format is ``gpubp.modelfile``'s."""
        modelfile.write(path, self.config, self.state_dict(include_rng=False))

    def to_onnx(self, path: str | os.PathLike, dtype: str | None = None) -> None:
        """Write the network to ``path`` as an ONNX model, atomically: one Gemm (Z = A W^T + b) and its
        activation per layer, in the network's dtype unless ``dtype`` says otherwise. Needs the
        ``onnx`` extra; see ``gpubp.export``."""
        from .export import to_onnx

        to_onnx(self.config, self.state_dict(include_rng=False), path, dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", seed: int | None = 0) -> Network:
        """Read a model written by ``save``; ``seed`` fixes the shuffling of later ``fit`` calls.

        The file is checked before any array is read (``gpubp.modelfile.read``): a file that is
        not a gpubp model raises ``gpubp.BadFile`` (a ValueError) naming it and the problem."""
        model = modelfile.read(path)
        return cls.from_config(model.settings(), model.state(), device=device, seed=seed)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its settings, its state (the generator's too) and the choices made at
        construction; device buffers and kernels are made again on unpickling."""
        s = self._schedule
        return {
            "config": self.config,
            "state": self.state_dict(),
            "device": self._device,
            "path": s.path,
            "tuning": s.tuning,
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        rng = np.random.default_rng()
        self._setup(saved["config"], saved["state"], saved["device"], rng, saved["path"], saved["tuning"])


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
    f64 = net._float64_cpu_copy()
    Xd = f64._inputs(X)
    Yd = f64._targets(Y, Xd.shape[0])
    s = f64._schedule
    s.gradients(Xd, Yd)
    analytic = s.host("nabla")
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
