"""A network's settings as one frozen value, and the one table of every user-facing parameter.

``Config`` is what a network *is*: its layer sizes, activations, cost, dtype and initialisation.
``PARAMETERS`` declares each number or choice a user passes (to ``Network``, ``fit``, the estimators
and the command line) once, with its type and range, as scikit-learn's ``_parameter_constraints``
do; ``check(name, value)`` is the only place those are checked, so every entry point refuses a bad
value with the same words: "lr must be a positive number, got -1".
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .losses import ACTIVATIONS, LOSSES, resolve


class InvalidParameter(ValueError, TypeError):
    """A parameter of the wrong type or out of its range. Both a ValueError and a TypeError (as
    scikit-learn's InvalidParameterError), so code catching either keeps working."""


@dataclass(frozen=True)
class Param:
    """One parameter's type and range, and the words that say them.

    ``kind``: "int", "real" (always finite), "bool", "choice", "callable" or "path". ``low``/``high``
    bound a number (``open``: which bounds are excluded, "low", "high" or "both"); ``choices`` for
    "choice"; ``none``: None is accepted too (and means "not used").
    """

    kind: str
    words: str = ""
    low: float | None = None
    high: float | None = None
    open: str = ""
    choices: tuple[Any, ...] = ()
    none: bool = False

    @property
    def what(self) -> str:
        """The accepted values in words: "a positive integer", "a number in [0, 1)", ..."""
        words = self.words or "one of " + ", ".join(repr(c) for c in self.choices)
        return f"None or {words}" if self.none else words


def _choice(*choices: Any, none: bool = False) -> Param:
    return Param("choice", choices=choices, none=none)


_positive_int = Param("int", "a positive integer", low=1)
_flag = Param("bool", "True or False")

# Every user-facing parameter, declared once. The estimators' and the command line's names for
# the same quantity map onto these (``check(..., name=...)`` keeps the caller's name in the error).
PARAMETERS: dict[str, Param] = {
    # the network
    "activation": _choice(*(a for a in ACTIVATIONS if a != "softmax")),
    "output_activation": _choice(*ACTIVATIONS, none=True),
    "loss": _choice(*LOSSES),
    "init": _choice("scaled", "standard"),
    "dtype": _choice("float32", "float64"),
    "device": _choice("auto", "cpu", "cuda"),
    "seed": Param("int", "a non-negative integer", low=0, none=True),
    # training
    "epochs": _positive_int,
    "batch_size": _positive_int,
    "lr": Param("real", "a positive number", low=0, open="low"),
    "lr_decay": Param("real", "a number in (0, 1]", low=0, high=1, open="low"),
    "momentum": Param("real", "a number in [0, 1)", low=0, high=1, open="high"),
    "weight_decay": Param("real", "a number >= 0", low=0),
    "shuffle": _flag,
    "callback": Param("callable", "a callable", none=True),
    "progress": Param("callable", "a callable", none=True),
    # validation, early stopping and checkpoints (gpubp.training)
    "validation_split": Param("real", "a number in (0, 1)", low=0, high=1, open="both", none=True),
    "early_stopping": Param("int", "a positive integer", low=1, none=True),  # the patience, in epochs
    "monitor": _choice("auto", "val_loss", "val_accuracy", "loss", "epoch"),
    "min_delta": Param("real", "a number >= 0", low=0),
    "restore_best": _flag,
    "baseline": Param("real", "a finite number", none=True),
    "checkpoint": Param("path", "a file path", none=True),
    # the estimators' own (gpubp.sklearn); their early_stopping is a switch, not a patience
    "MLP.early_stopping": _flag,
    "validation_fraction": Param("real", "a number in (0, 1)", low=0, high=1, open="both"),
    "n_iter_no_change": _positive_int,
    "tol": Param("real", "a number >= 0", low=0),
    "warm_start": _flag,
    # the command line's own
    "precision": _positive_int,
}


def check(key: str, value: Any, name: str | None = None, text: str | None = None) -> Any:
    """``value`` checked against ``PARAMETERS[key]`` and normalised (a Python int, float or bool);
    ``InvalidParameter`` naming ``name`` (default: the key), what it accepts and what it got (the
    ``text`` the value was read from, if any) otherwise."""
    p, name = PARAMETERS[key], name or key
    got = repr(value) if text is None else repr(text)
    if value is None and p.none:
        return None
    if p.kind == "choice":
        if isinstance(value, str) and value in p.choices:
            return value
        raise InvalidParameter(f"unknown {name} {value!r}; choose {p.what}")
    boolean = isinstance(value, (bool, np.bool_))
    integral = isinstance(value, (int, np.integer)) and not boolean
    accepted = {
        "path": isinstance(value, (str, os.PathLike)),
        "callable": callable(value),
        "bool": boolean,
        "int": integral,
        "real": integral or isinstance(value, (float, np.floating)),
    }
    if not accepted[p.kind]:
        raise InvalidParameter(f"{name} must be {p.what}, got {got}")
    if p.kind in ("path", "callable", "bool"):
        return bool(value) if boolean else value
    v = int(value) if p.kind == "int" else float(value)
    ok = math.isfinite(v)
    if ok and p.low is not None:
        ok = v > p.low if p.open in ("low", "both") else v >= p.low
    if ok and p.high is not None:
        ok = v < p.high if p.open in ("high", "both") else v <= p.high
    if not ok:
        raise InvalidParameter(f"{name} must be {p.what}, got {got}")
    return v


def parse(key: str, text: str, name: str | None = None) -> Any:
    """A command-line string read as ``PARAMETERS[key]`` and checked like ``check``."""
    p = PARAMETERS[key]
    value: Any = text
    if p.kind in ("int", "real"):
        try:
            value = int(text) if p.kind == "int" else float(text)
        except ValueError:
            raise InvalidParameter(f"{name or key} must be {p.what}, got {text!r}") from None
    return check(key, value, name, text)


def check_sizes(sizes: Any) -> tuple[int, ...]:
    """The layer widths as a tuple of at least two positive integers."""
    try:
        sizes = list(sizes)
    except TypeError:
        raise InvalidParameter(f"sizes must be a list of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise InvalidParameter(f"a network needs at least two layers (inputs and outputs), got sizes={sizes}")
    for s in sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1:
            raise InvalidParameter(f"every layer size must be a positive integer, got sizes={sizes}")
    return tuple(int(s) for s in sizes)


@dataclass(frozen=True)
class Config:
    """What a network is: ``sizes`` (inputs, hidden widths, outputs), the hidden layers'
    ``activation`` f, the ``output_activation`` (resolved: never None), the cost ``loss``, the
    ``dtype`` and the ``init`` its parameters were drawn with. Checked when made."""

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    loss: str = "quadratic"
    dtype: str = "float32"
    init: str = "scaled"

    @classmethod
    def make(
        cls,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str | None = None,
        loss: str = "quadratic",
        dtype: Any = "float32",
        init: str = "scaled",
    ) -> Config:
        """A checked Config; ``output_activation=None`` means the same as ``activation``."""
        sizes = check_sizes(sizes)
        activation, output_activation, loss = resolve(activation, output_activation, loss)
        if output_activation == "softmax" and sizes[-1] < 2:
            raise InvalidParameter("softmax over a single output is always 1: use two outputs, or a sigmoid output")
        with contextlib.suppress(TypeError):
            dtype = np.dtype(dtype).name
        check("dtype", dtype)
        check("init", init)
        return cls(sizes, activation, output_activation, loss, dtype, init)

    @property
    def layer_activations(self) -> list[str]:
        """f of each layer l = 1..L."""
        return [self.activation] * (len(self.sizes) - 2) + [self.output_activation]

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        return dict(asdict(self), sizes=list(self.sizes))
