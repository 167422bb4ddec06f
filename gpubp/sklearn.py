"""scikit-learn estimators around ``gpubp.Network``: ``MLPClassifier`` and ``MLPRegressor``.

They fit in a ``Pipeline``, ``GridSearchCV`` or ``cross_val_score`` like scikit-learn's own MLPs,
and pass scikit-learn's estimator checks. Training is ``Network.fit``: mini-batch SGD with
momentum, L2 weight decay and a per-epoch learning-rate decay, on the GPU when there is one
(``device="auto"``), and, with ``early_stopping=True``, stops when the validation loss on a held-out
``validation_fraction`` of the rows has not improved by ``tol`` for ``n_iter_no_change`` epochs and
keeps the best epoch's parameters.

``MLPClassifier`` takes labels of any type (``classes_`` holds them, sorted) and trains a network
with one output per class: softmax outputs and the log-likelihood cost by default, or sigmoid
outputs with the cross-entropy or quadratic cost. ``predict_proba`` is the outputs, normalised to
sum to 1 for sigmoid outputs. ``MLPRegressor`` trains linear outputs with the quadratic cost by
default, one per target column.

Needs scikit-learn >= 1.6: ``pip install "gpubp[sklearn]"``. Inputs are host arrays (numpy,
pandas, lists); for arrays already on the GPU use ``gpubp.Network`` directly.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data  # validate_data: scikit-learn 1.6
except ImportError as e:
    raise ImportError(f'gpubp.sklearn needs scikit-learn >= 1.6 ({e}): pip install "gpubp[sklearn]"') from None

from .config import InvalidParameter, check, check_sizes
from .network import Network
from .training import decayed_lr

__all__ = ["MLPClassifier", "MLPRegressor"]

# The parameters checked against gpubp.config.PARAMETERS before a fit changes anything.
CHECKED = ("activation", "output_activation", "init", "dtype", "device", "epochs", "batch_size", "lr", "momentum")
CHECKED += ("weight_decay", "lr_decay", "shuffle", "validation_fraction", "n_iter_no_change", "tol", "warm_start")


def _hidden_sizes(hidden_layer_sizes: Any) -> list[int]:
    sizes = [hidden_layer_sizes] if isinstance(hidden_layer_sizes, numbers.Integral) else hidden_layer_sizes
    try:
        return list(check_sizes([1, *sizes, 1])[1:-1])
    except (TypeError, ValueError):
        raise InvalidParameter(f"hidden_layer_sizes must hold positive integers, got {hidden_layer_sizes!r}") from None


class _MLPBase(BaseEstimator):
    """The parameters and the training loop shared by both estimators."""

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str = "relu",
        *,
        output_activation: str | None = None,
        loss: str | None = None,
        init: str = "scaled",
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_decay: float = 1.0,
        shuffle: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        warm_start: bool = False,
        dtype: str = "float32",
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.output_activation = output_activation
        self.loss = loss
        self.init = init
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_decay = lr_decay
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    # -- training (what differs: each subclass's _outputs_and_loss and _targets) -----------------------
    def _check_params(self) -> list[int]:
        """Every parameter against ``gpubp.config.PARAMETERS``, before anything changes, so a refused
        refit leaves the estimator as it was; the hidden layer sizes."""
        check("MLP.early_stopping", self.early_stopping, "early_stopping")
        for name in CHECKED:
            check(name, getattr(self, name))
        return _hidden_sizes(self.hidden_layer_sizes)

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> _MLPBase:
        """``_train``; an estimator whose fit is refused (a bad parameter, bad data) is left as it was."""
        before = dict(self.__dict__)
        try:
            return self._train(X, y, incremental, classes)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _train(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> _MLPBase:
        hidden = self._check_params()
        first = not hasattr(self, "network_") or not (incremental or self.warm_start)
        X, y = validate_data(
            self,
            X,
            y,
            reset=first,
            dtype=(np.float64, np.float32),
            multi_output=isinstance(self, RegressorMixin),
            y_numeric=isinstance(self, RegressorMixin),
        )
        if not X.flags.writeable:  # a read-only memmap: the kernels take writable arrays
            X = X.copy()
        Y = self._targets(y, first, classes)
        rs = check_random_state(self.random_state)
        if first:
            output_activation, loss = self._outputs_and_loss()
            seed = self.random_state if isinstance(self.random_state, numbers.Integral) else rs.randint(2**31 - 1)
            net = Network(
                [X.shape[1], *hidden, Y.shape[1] if Y.ndim == 2 else len(self.classes_)],  # targets or class codes
                self.activation,
                output_activation,
                loss,
                init=self.init,
                dtype=self.dtype,
                device=self.device,
                seed=int(seed),
            )
            n_iter, loss_curve, val_curve, best_epoch = 0, [], [], None
        else:
            net = self.network_
            n_iter, loss_curve = self.n_iter_, list(self.loss_curve_)
            val_curve, best_epoch = list(self.validation_loss_curve_ or []), self.best_epoch_

        validation, patience = None, None
        if self.early_stopping and not incremental:
            stratify = Y if isinstance(self, ClassifierMixin) else None
            X, X_val, Y, Y_val = train_test_split(
                X, Y, test_size=self.validation_fraction, random_state=rs, stratify=stratify
            )
            validation, patience = (X_val, Y_val), self.n_iter_no_change
        sgd = {name: getattr(self, name) for name in ("shuffle", "momentum", "weight_decay", "lr_decay")}
        history = net.fit(
            X,
            Y,
            epochs=1 if incremental else self.epochs,
            batch_size=self.batch_size,
            lr=decayed_lr(self.lr, self.lr_decay, net.epochs_trained),  # on where an earlier fit left the decay
            validation=validation,
            **sgd,
            early_stopping=patience,
            monitor="val_loss" if validation is not None else "auto",
            min_delta=self.tol,
        )
        if validation is not None:
            val_curve += history["val_loss"]
            best_epoch = n_iter + history.best_epoch
        self.network_ = net
        self.n_iter_ = n_iter + len(history["epoch"])
        self.loss_curve_ = loss_curve + history["loss"]
        self.validation_loss_curve_ = val_curve or None
        self.best_epoch_ = best_epoch
        return self

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        if not X.flags.writeable:
            X = X.copy()
        return np.asarray(self.network_.predict(X), dtype=np.float64)


class MLPClassifier(ClassifierMixin, _MLPBase):
    """A multilayer perceptron classifier trained by gpubp (backpropagation, mini-batch SGD).

    ``hidden_layer_sizes`` are the widths of the hidden layers (``()``: none), ``activation`` their f
    ("relu", "sigmoid", "tanh", "linear"). The network has one output per class; ``output_activation``
    is "softmax" (default) or "sigmoid", ``loss`` "log_likelihood" (the default for softmax),
    "cross_entropy" (the default for sigmoid) or "quadratic". ``epochs`` passes over the data in
    mini-batches of ``batch_size`` with learning rate ``lr`` (times ``lr_decay`` after every epoch),
    ``momentum`` and L2 ``weight_decay``. ``early_stopping``: hold out ``validation_fraction`` of the
    rows (stratified) and stop after ``n_iter_no_change`` epochs without the validation loss falling
    by more than ``tol``, keeping the best epoch. ``warm_start``: ``fit`` goes on from the last fit.
    ``dtype`` ("float32"/"float64"), ``device`` ("auto"/"cpu"/"cuda") and ``init`` are
    ``gpubp.Network``'s; ``random_state`` fixes the initial weights, the shuffling and the split.

    Attributes after ``fit``: ``classes_``, ``n_features_in_``, ``network_`` (the ``gpubp.Network``),
    ``n_iter_`` (epochs run), ``loss_curve_`` (training loss per epoch), ``validation_loss_curve_`` and
    ``best_epoch_`` (with early stopping, else None).
    """

    def _outputs_and_loss(self) -> tuple[str, str]:
        output = self.output_activation or "softmax"
        if output not in ("softmax", "sigmoid"):
            raise ValueError(
                f"MLPClassifier needs output_activation 'softmax' or 'sigmoid' (outputs read as class "
                f"probabilities), got {output!r}; for other outputs use MLPRegressor or gpubp.Network"
            )
        return output, self.loss or ("log_likelihood" if output == "softmax" else "cross_entropy")

    def _targets(self, y: np.ndarray, first: bool, classes: Any = None) -> np.ndarray:
        check_classification_targets(y)
        if first:
            found = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(found) < 2:
                raise ValueError(
                    f"MLPClassifier needs samples of at least two classes; y has only one class ({found[0]!r})"
                )
            self.classes_ = found
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first fit, {self.classes_!r}")
        codes = np.searchsorted(self.classes_, y)
        unseen = (codes >= len(self.classes_)) | (self.classes_[np.minimum(codes, len(self.classes_) - 1)] != y)
        if unseen.any():
            raise ValueError(f"y holds labels not among classes_ {self.classes_!r}: {np.unique(y[unseen])!r}")
        return codes.astype(np.int64)

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on rows X (n, n_features) with labels y (n,); returns self."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch on (X, y). The first call needs ``classes``, every label there will be."""
        if not hasattr(self, "network_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit (all the labels there will be)")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, n_classes): the softmax outputs, or the sigmoid outputs divided by their sum."""
        a = self._outputs(X)
        if self.network_.output_activation == "softmax":
            return a
        total = a.sum(axis=1, keepdims=True)
        return np.divide(a, total, out=np.full_like(a, 1 / a.shape[1]), where=total > 0)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The label of the most probable class of each row."""
        proba = self.predict_proba(X)  # first: it says NotFittedError before classes_ is missed
        return self.classes_[np.argmax(proba, axis=1)]


class MLPRegressor(RegressorMixin, _MLPBase):
    """A multilayer perceptron regressor trained by gpubp (backpropagation, mini-batch SGD).

    As ``MLPClassifier``, with one output per target column: ``output_activation`` "linear" and
    ``loss`` "quadratic" (C = 1/2n sum ||y - a||^2) by default; any pair ``gpubp.Network`` accepts
    (e.g. "sigmoid" outputs for targets in [0, 1]). ``predict`` returns (n,) for a 1-D ``y``, else
    (n, n_targets). Early stopping splits the rows at random (not stratified).
    """

    def _outputs_and_loss(self) -> tuple[str, str]:
        return self.output_activation or "linear", self.loss or "quadratic"

    def _targets(self, y: np.ndarray, first: bool, classes: Any = None) -> np.ndarray:
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if first:
            self.n_outputs_, self._y_1d = Y.shape[1], np.ndim(y) == 1
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} targets per row but the first fit had {self.n_outputs_}")
        return Y

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on rows X (n, n_features) with targets y (n,) or (n, n_targets); returns self."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch on (X, y)."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """The output activations: (n,) when fitted on a 1-D y, else (n, n_targets)."""
        a = self._outputs(X)
        return a[:, 0] if self._y_1d else a

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
