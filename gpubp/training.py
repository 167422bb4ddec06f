"""Early stopping and checkpoints for ``Network.fit``: find the best epoch, keep it, stop when nothing improves.

``BestModel`` watches one value of each epoch's record: "val_loss" or "loss" (lower is better),
"val_accuracy" (higher is better), or "epoch", which makes the latest epoch the best. An epoch
*improves* when its value beats the best so far by more than ``min_delta``. On every improvement
the tracker

- keeps the network's state (``Network.state_dict()``: parameters, momentum state,
  ``epochs_trained``), and
- with ``checkpoint``, has ``fit`` write the model to that path as ``Network.save`` does, atomically:
  the file always holds one whole model, the best so far, even if training is killed.

With ``patience`` p, training stops after p epochs in a row without an improvement. With
``restore_best``, the network ends ``fit`` with the best epoch's state, so it equals the checkpoint
file. ``baseline`` is the value the starting model scores: an epoch must beat it to count as best, and
if none does, ``restore_best`` returns the network to its state before ``fit`` (``best_epoch`` 0).

``split_validation`` holds out the last rows of the data for ``fit(validation_split=...)``;
``History`` is what ``fit`` returns.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .config import check
from .modelfile import SavedEpoch
from .state import State

# The values a tracker can watch, and whether lower ("min") or higher ("max") is better. "epoch"
# makes every epoch an improvement: the latest model is the one kept (a checkpoint every epoch).
MONITORS = {"val_loss": "min", "val_accuracy": "max", "loss": "min", "epoch": "max"}


class History(dict):
    """Per-epoch records of ``fit``: lists under "epoch", "lr", "loss", "val_loss", "val_accuracy", "seconds".

    "loss" is the training cost C averaged over the epoch's samples, each sample's C_x measured by
    the forward pass that trained on it (before its batch's update). The first epoch's "seconds"
    include compiling the kernels, the first time a process uses them.

    The momentum state persists across ``fit`` calls on one network, like an optimizer's, and
    ``save`` stores it with the parameters, so a loaded model goes on with the velocity it had.

    When ``fit`` tracks the best epoch (``early_stopping``, ``checkpoint``, ``monitor`` or
    ``baseline``), each record also has "improved" and these attributes say how it went.
    """

    # set by BestModel.finish
    monitor: str | None = None  # the value watched: "val_loss", "val_accuracy", "loss" or "epoch"
    best_epoch: int | None = None  # the best epoch of this fit (0: the starting model, with a baseline)
    best_value: float | None = None  # the monitored value of the best epoch
    stopped_early: bool = False  # whether early_stopping ended fit before `epochs`


def decayed_lr(lr: float, lr_decay: float, epochs_before: int) -> float:
    """The learning rate after ``epochs_before`` epochs of decay: lr * lr_decay**epochs_before."""
    return float(lr) * float(lr_decay) ** epochs_before


def split_validation(X: Any, Y: Any, validation: Any, validation_split: float | None) -> tuple[Any, Any, Any]:
    """(X_train, Y_train, validation): with ``validation_split`` f, the last round(f n) rows are held out.

    The rows are taken from the end before any shuffling (as Keras does), so shuffle rows that are
    ordered, e.g. by class, first. Slices of numpy, CuPy and Numba device arrays are views: nothing
    is copied here."""
    fraction = check("validation_split", validation_split)
    if fraction is None:
        return X, Y, validation
    if validation is not None:
        raise ValueError("pass either validation=(X_val, Y_val) or validation_split, not both")
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
    if len(Y.shape) == 1 and isinstance(Y, np.ndarray) and Y.dtype.kind in "iu":  # labels: every class may be seen
        classes = len(np.unique(Y))
        if n_val < classes:
            raise ValueError(
                f"validation_split={validation_split!r} of {n} rows leaves {n_val} for validation, fewer than "
                f"the {classes} classes of Y; use a larger split"
            )
    return X[:k], Y[:k], (X[k:], Y[k:])


class BestModel:
    """Tracks the best epoch of ``fit`` by one monitored value; keeps it, stops after ``patience``.

    ``monitor``: "val_loss", "val_accuracy", "loss" or "epoch" (the latest is best). ``patience``:
    stop after this many epochs in a row without improvement (None: never stop early). ``min_delta``:
    how much a value must beat the best by to count as an improvement. ``restore_best``: end with
    the best epoch's state. ``checkpoint``: a path (.npz) that always holds the best model so far,
    or a ``gpubp.modelfile.SavedEpoch`` for one (which then tells, whatever interrupts a save,
    which epoch the file really holds); ``fit`` writes it at each improvement.
    ``baseline``: the value of the starting model, to beat (None: the first epoch is the first best).

    The tracker never touches a network: it is handed the state (a ``gpubp.state.State``) by a
    callable when it needs one, and gives the best one back through another in ``finish``.
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
        self.patience = check("early_stopping", patience)
        self.min_delta = check("min_delta", min_delta)
        self.restore_best = check("restore_best", restore_best)
        self.baseline = check("baseline", baseline)
        if checkpoint is not None:
            path = checkpoint.path if isinstance(checkpoint, SavedEpoch) else os.fspath(check("checkpoint", checkpoint))
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"checkpoint {path}: the folder {folder} does not exist")
            if os.path.isdir(path):
                raise ValueError(f"checkpoint {path} is a folder; give a file name such as best.npz")
            if not os.access(folder, os.W_OK | os.X_OK):  # refused now, not after the first epoch
                raise PermissionError(f"checkpoint {path}: the folder {folder} is not writable")
            checkpoint = checkpoint if isinstance(checkpoint, SavedEpoch) else SavedEpoch(path)
        self.monitor = monitor
        self.checkpoint = checkpoint
        self.lower_is_better = MONITORS[monitor] == "min"
        self.best_value = math.nan
        self.best_epoch: int | None = None
        self.best_state: State | None = None  # kept for restore_best and the checkpoint
        self.waited = 0  # epochs since the last improvement
        self.stopped_early = False

    @classmethod
    def for_fit(
        cls,
        early_stopping: int | None,
        monitor: str,
        min_delta: float,
        restore_best: bool,
        checkpoint: str | os.PathLike | None,
        baseline: float | None,
        has_validation: bool,
    ) -> BestModel | None:
        """The tracker for ``fit``'s arguments; None when none of them asks for one.

        ``monitor="auto"`` watches "val_loss" when there is validation data, else "loss"."""
        check("monitor", monitor)
        if early_stopping is None and checkpoint is None and monitor == "auto" and baseline is None:
            check("restore_best", restore_best)
            check("min_delta", min_delta)
            return None
        if monitor == "auto":
            monitor = "val_loss" if has_validation else "loss"
        if monitor in ("val_loss", "val_accuracy") and not has_validation:
            raise ValueError(
                f"monitor={monitor!r} needs validation data: pass validation=(X_val, Y_val) or validation_split"
            )
        return cls(monitor, early_stopping, min_delta, restore_best, checkpoint, baseline)

    @staticmethod
    def settings(tracker: BestModel | None) -> dict[str, Any]:
        """What a tracker (or None) decides by, as JSON values: the same on every rank of a distributed fit."""
        if tracker is None:
            return {"monitor": None, "early_stopping": None, "checkpoint": False}
        t = tracker
        given = {"checkpoint": t.checkpoint is not None, "min_delta": t.min_delta, "baseline": t.baseline}
        return {"monitor": t.monitor, "early_stopping": t.patience, "restore_best": t.restore_best, **given}

    def begin(self, state: Callable[[], State]) -> None:
        """Start watching: with a baseline, the starting model (``state()``) is the best so far (epoch 0)."""
        self.best_value, self.best_epoch, self.best_state = math.nan, None, None
        self.waited, self.stopped_early = 0, False
        if self.baseline is not None:
            self.best_value, self.best_epoch = self.baseline, 0
            if self.restore_best:
                self.best_state = state()

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` beats the best so far by more than min_delta (NaN and None never do)."""
        if value is None or not math.isfinite(value):
            return False
        if math.isnan(self.best_value):
            return True
        if self.lower_is_better:
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def update(self, record: dict, state: Callable[[], State]) -> bool:
        """Judge one epoch's ``record`` (adds ``record["improved"]``); keep ``state()`` if it is the
        best (for restore_best or the checkpoint). True: stop now."""
        value = record[self.monitor]
        improved = record["improved"] = self.improves(value)
        if improved:
            self.best_value, self.best_epoch, self.waited = float(value), int(record["epoch"]), 0
            if self.restore_best or self.checkpoint is not None:
                self.best_state = state()
        else:
            self.waited += 1
        self.stopped_early = self.patience is not None and self.waited >= self.patience
        return self.stopped_early

    def finish(self, history: History, restore: Callable[[State], None]) -> None:
        """Write the outcome into ``history`` and, with restore_best, hand the best state to ``restore``."""
        history.monitor = self.monitor
        history.best_epoch = self.best_epoch
        history.best_value = None if math.isnan(self.best_value) else self.best_value
        history.stopped_early = self.stopped_early
        if self.restore_best and self.best_state is not None:
            restore(self.best_state)
