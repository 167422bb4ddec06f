"""``gpubp trace``: one forward and one backward pass on one sample, every quantity printed, layer
by layer, as a textbook worked example (``Network.trace`` computes them; this module lays them out).

With neither ``--weights`` nor ``--seed``, the 2,2,2 network is Matt Mazur's worked example ("A Step
by Step Backpropagation Example"), with his input and target.
"""

from __future__ import annotations

from argparse import ArgumentError, Namespace
from typing import Any

import numpy as np

from . import Network, modelfile
from .config import Config

DEFAULT_SIZES = [2, 2, 2]
WORKED_EXAMPLE = {
    "weights": [[[0.15, 0.20], [0.25, 0.30]], [[0.40, 0.45], [0.50, 0.55]]],
    "biases": [[0.35, 0.35], [0.60, 0.60]],
}
DEFAULT_X, DEFAULT_Y = [0.05, 0.10], [0.01, 0.99]  # used where the network has 2 inputs, 2 outputs

COSTS = {
    "quadratic": "C = 1/2 sum_j (a_j - y_j)^2",
    "cross_entropy": "C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]",
    "log_likelihood": "C = -sum_j y_j ln a_j",
}


def cmd_trace(args: Namespace) -> int:
    """``gpubp trace``: print one forward and one backward pass of the network the options name."""
    net = _network(args)
    sizes = net.config.sizes
    x = args.x if args.x is not None else (DEFAULT_X if sizes[0] == 2 else None)
    y = args.y if args.y is not None else (DEFAULT_Y if sizes[-1] == 2 else None)
    for option, values, n, layer in (("--x", x, sizes[0], "inputs"), ("--y", y, sizes[-1], "outputs")):
        if values is None or len(values) != n:
            raise ArgumentError(None, f"{option} needs {n} comma-separated numbers for a network with {n} {layer}")
    t = net.trace(np.array(x, dtype=float), np.array(y, dtype=float), lr=args.lr)
    print("\n".join(format_trace(t, net.config, args.lr, args.precision)))
    return 0


def _network(args: Namespace) -> Network:
    """The float64 CPU network to trace: from --weights (a saved model's settings too), --seed, or
    the worked example; --activation, --output-activation and --loss override a model's."""
    sizes = args.sizes if args.sizes is not None else DEFAULT_SIZES
    if len(sizes) < 2:
        raise ArgumentError(None, "--sizes needs at least two layers, e.g. 2,2,2")
    if args.weights and args.sizes is not None:
        raise ArgumentError(None, "--weights sets the layer sizes; drop --sizes")
    saved: dict[str, Any] = {}
    if args.weights:
        saved, weights, biases, _ = modelfile.read(args.weights, plain=True)  # checked before any array is read
    elif args.seed is None and sizes == DEFAULT_SIZES:
        weights, biases = WORKED_EXAMPLE["weights"], WORKED_EXAMPLE["biases"]
    else:
        net = Network(sizes, seed=0 if args.seed is None else args.seed, dtype="float64", device="cpu")
        weights, biases = net.weights, net.biases
    return Network.from_params(
        [np.asarray(w, float) for w in weights],
        [np.asarray(b, float) for b in biases],
        activation=args.activation or saved.get("activation", "sigmoid"),
        output_activation=args.output_activation or saved.get("output_activation"),
        loss=args.loss or saved.get("loss", "quadratic"),
        dtype="float64",
        device="cpu",
    )


def format_trace(t: dict[str, Any], config: Config, lr: float, precision: int) -> list[str]:
    """The lines of ``Network.trace``'s result ``t`` as a worked example: the parameters, the forward
    pass, the cost, the backward pass (BP1-BP4) and the update, to ``precision`` digits."""
    p, L = precision, len(config.sizes) - 1
    f = ["sigma" if a == "sigmoid" else a for a in config.layer_activations]  # f of layer l is f[l - 1]
    lines = [
        f"network {','.join(map(str, config.sizes))}: {config.activation} hidden, "
        f"{config.output_activation} output, {config.loss} cost, lr {lr:g}",
        f"x = a^0 = {_vec(t['x'], p)}",
        f"y       = {_vec(t['y'], p)}",
        "",
        "Parameters (W^l is n_l x n_(l-1): w^l_jk joins neuron k of layer l-1 to neuron j of layer l)",
        *_parameters(t["weights"], t["biases"], p),
        "",
        "Forward pass",
    ]
    for i in range(1, L + 1):
        lines.append(f"  layer {i}:")
        lines.append(f"    z^{i} = W^{i} a^{i - 1} + b^{i} = {_vec(t['z'][i - 1], p)}")
        lines.append(f"    a^{i} = {f[i - 1]}(z^{i}) = {_vec(t['a'][i], p)}")
    lines += ["", f"Cost ({COSTS[config.loss]})", f"  C = {t['cost']:.{p}f}", "", "Backward pass"]
    lines.append(f"  delta^{L} = grad_a C (.) {f[L - 1]}'(z^{L}) = {_vec(t['delta'][L - 1], p)}   (BP1)")
    for i in range(L - 1, 0, -1):
        rule = f"((W^{i + 1})^T delta^{i + 1}) (.) {f[i - 1]}'(z^{i})"
        lines.append(f"  delta^{i} = {rule} = {_vec(t['delta'][i - 1], p)}   (BP2)")
    for i in range(L, 0, -1):
        indent = " " * len(f"  dC/dW^{i} = ")
        lines.append(f"  dC/dW^{i} = delta^{i} (a^{i - 1})^T =   (BP4)")
        lines.append(f"{indent}{_mat(t['nabla_w'][i - 1], p, indent)}")
        lines.append(f"  dC/db^{i} = delta^{i} = {_vec(t['nabla_b'][i - 1], p)}   (BP3)")
    lines += ["", f"Update: W^l <- W^l - {lr:g} dC/dW^l,  b^l <- b^l - {lr:g} dC/db^l"]
    return lines + _parameters(t["weights_after"], t["biases_after"], p)


def _parameters(weights: list[np.ndarray], biases: list[np.ndarray], p: int) -> list[str]:
    lines = []
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        lines += [f"  W^{i} = {_mat(w, p, ' ' * (7 + len(str(i))))}", f"  b^{i} = {_vec(b, p)}"]
    return lines


def _vec(v: np.ndarray, p: int) -> str:
    return "[" + ", ".join(f"{x:.{p}f}" for x in np.ravel(v)) + "]"


def _mat(m: np.ndarray, p: int, indent: str) -> str:
    """A matrix's rows, one per line, each after the first indented under the first."""
    return ("\n" + indent).join(_vec(r, p) for r in np.atleast_2d(m))
