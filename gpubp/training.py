"""Early stopping and checkpoints for ``Network.fit``: find the best epoch, keep it, stop when nothing improves.

``BestModel`` watches one value of each epoch's record: "val_loss" or "loss" (lower is better),
"val_accuracy" (higher is better), or "epoch", which makes the latest epoch the best. An epoch
*improves* when its value beats the best so far by more than ``min_delta``. On every improvement
the tracker

- copies the network's state (parameters, momentum state, ``epochs_trained``) into a buffer on the
  network's device, and
- with ``checkpoint``, has ``fit`` write the model to that path as ``Network.save`` does, atomically:
  the file always holds one whole model, the best so far, even if training is killed.

With ``patience`` p, training stops after p epochs in a row without an improvement. With
``restore_best``, the network ends ``fit`` with the best epoch's state, so it equals the checkpoint
file. ``baseline`` is the value the starting model scores: an epoch must beat it to count as best, and
if none does, ``restore_best`` returns the network to its state before ``fit`` (``best_epoch`` 0).

``split_validation`` holds out the last rows of the data for ``fit(validation_split=...)``.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .modelfile import SavedEpoch

if TYPE_CHECKING:  # pragma: no cover
    from .network import History, Network

# The values a tracker can watch, and whether lower ("min") or higher ("max") is better. "epoch"
# makes every epoch an improvement: the latest model is the one kept (a checkpoint every epoch).
MONITORS = {"val_loss": "min", "val_accuracy": "max", "loss": "min", "epoch": "max"}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def split_validation(X: Any, Y: Any, validation: Any, validation_split: float | None) -> tuple[Any, Any, Any]:
    """(X_train, Y_train, validation): with ``validation_split`` f, the last round(f n) rows are held out.

    The rows are taken from the end before any shuffling (as Keras does), so shuffle rows that are
    ordered, e.g. by class, first. Slices of numpy, CuPy and Numba device arrays are views: nothing
    is copied here."""
    if validation_split is None:
        return X, Y, validation
    if validation is not None:
        raise ValueError("pass either validation=(X_val, Y_val) or validation_split, not both")
    fraction = _number("validation_split", validation_split)
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {validation_split!r}")
    X = X if hasattr(X, "shape") else np.asarray(X)
    Y = Y if hasattr(Y, "shape") else np.asarray(Y)
    n = X.shape[0] if len(X.shape) else 0
    if len(Y.shape) == 0 or Y.shape[0] != n:
        raise ValueError(f"Y must have one row per sample: X has {n} rows, Y has shape {tuple(Y.shape)}")
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"validation_split={validation_split!r} of {n} rows leaves {n_val} for validation and "
            f"{n - n_val} for training; each needs at least one"
        )
    k = n - n_val
    return X[:k], Y[:k], (X[k:], Y[k:])


class BestModel:
    """Tracks the best epoch of ``fit`` by one monitored value; keeps it, saves it, stops after ``patience``.

    ``monitor``: "val_loss", "val_accuracy", "loss" or "epoch" (the latest is best). ``patience``:
    stop after this many epochs in a row without improvement (None: never stop early). ``min_delta``:
    how much a value must beat the best by to count as an improvement. ``restore_best``: end with
    the best epoch's state. ``checkpoint``: a path (.npz) that always holds the best model so far,
    or a ``gpubp.modelfile.SavedEpoch`` for one (which then tells, whatever interrupts a save,
    which epoch the file really holds).
    ``baseline``: the value of the starting model, to beat (None: the first epoch is the first best).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
        checkpoint: str | os.PathLike | SavedEpoch | None = None,
        baseline: float | None = None,
    ) -> None:
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; choose one of {', '.join(map(repr, MONITORS))}")
        if patience is not None:
            if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)):
                raise TypeError(f"early_stopping (the patience) must be a number of epochs, got {patience!r}")
            if patience < 1:
                raise ValueError(f"early_stopping (the patience) must be at least 1 epoch, got {patience!r}")
        self.min_delta = _number("min_delta", min_delta)
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if not isinstance(restore_best, (bool, np.bool_)):
            raise TypeError(f"restore_best must be True or False, got {restore_best!r}")
        if checkpoint is not None and not isinstance(checkpoint, SavedEpoch):
            path = os.fspath(checkpoint)
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"checkpoint {path}: the folder {folder} does not exist")
            if os.path.isdir(path):
                raise ValueError(f"checkpoint {path} is a folder; give a file name such as best.npz")
            checkpoint = SavedEpoch(path)
        self.monitor = monitor
        self.patience = None if patience is None else int(patience)
        self.restore_best = bool(restore_best)
        self.checkpoint = checkpoint
        self.baseline = None if baseline is None else _number("baseline", baseline)
        self.lower_is_better = MONITORS[monitor] == "min"
        self.best_value = math.nan
        self.best_epoch: int | None = None
        self.waited = 0  # epochs since the last improvement
        self.stopped_early = False
        self._best_state: tuple[Any, Any, int] | None = None

    @classmethod
    def for_fit(
        cls,
        net: Network,
        early_stopping: int | None,
        monitor: str,
        min_delta: float,
        restore_best: bool,
        checkpoint: str | os.PathLike | None,
        baseline: float | None,
        has_validation: bool,
    ) -> BestModel | None:
        """The tracker for ``fit``'s arguments, ready to watch ``net``; None when none of them asks for one.

        ``monitor="auto"`` watches "val_loss" when there is validation data, else "loss"."""
        if early_stopping is None and checkpoint is None and monitor == "auto" and baseline is None:
            if not isinstance(restore_best, (bool, np.bool_)):
                raise TypeError(f"restore_best must be True or False, got {restore_best!r}")
            _number("min_delta", min_delta)
            return None
        if monitor == "auto":
            monitor = "val_loss" if has_validation else "loss"
        if monitor in ("val_loss", "val_accuracy") and not has_validation:
            raise ValueError(
                f"monitor={monitor!r} needs validation data: pass validation=(X_val, Y_val) or validation_split"
            )
        tracker = cls(monitor, early_stopping, min_delta, restore_best, checkpoint, baseline)
        tracker.begin(net)
        return tracker

    def begin(self, net: Network) -> None:
        """Start watching: with a baseline, the starting model is the best so far (epoch 0)."""
        self.best_value = math.nan
        self.best_epoch = None
        self.waited = 0
        self.stopped_early = False
        self._best_state = None
        if self.baseline is not None:
            self.best_value, self.best_epoch = self.baseline, 0
            if self.restore_best:
                self._best_state = _copy_state(net)

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` beats the best so far by more than min_delta (NaN and None never do)."""
        if value is None or not math.isfinite(value):
            return False
        if math.isnan(self.best_value):
            return True
        if self.lower_is_better:
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def update(self, net: Network, record: dict) -> bool:
        """Judge one epoch's ``record`` (adds ``record["improved"]``); keep its state if best. True: stop now."""
        value = record[self.monitor]
        improved = self.improves(value)
        record["improved"] = improved
        if improved:
            self.best_value, self.best_epoch, self.waited = float(value), int(record["epoch"]), 0
            if self.restore_best:
                self._best_state = _copy_state(net, self._best_state)
        else:
            self.waited += 1
        self.stopped_early = self.patience is not None and self.waited >= self.patience
        return self.stopped_early

    def finish(self, net: Network, history: History) -> None:
        """Write the outcome into ``history`` and, with restore_best, put the best state back into ``net``."""
        history.monitor = self.monitor
        history.best_epoch = self.best_epoch
        history.best_value = None if math.isnan(self.best_value) else self.best_value
        history.stopped_early = self.stopped_early
        if self.restore_best and self._best_state is not None:
            _put_state(net, self._best_state)


# The network's whole training state, copied on its own device (no trip through host memory on a GPU).
def _copy_state(net: Network, into: tuple[Any, Any, int] | None = None) -> tuple[Any, Any, int]:
    return (*net._schedule.state(None if into is None else into[:2]), net.epochs_trained)


def _put_state(net: Network, state: tuple[Any, Any, int]) -> None:
    net._schedule.set_state(state[:2])
    net.epochs_trained = state[2]
