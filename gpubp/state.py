"""What a network has learned, as one typed value: ``State`` (PyTorch's ``state_dict()``).

``Network.state_dict()`` returns it and ``Network.load_state_dict()`` takes it; saving, checkpoints,
the best-epoch restore, pickling and the export all move a network's state this way, beside its
settings (``gpubp.config.Config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class State:
    """A network's parameters and training state, as host (numpy) arrays.

    ``weights[l]`` is W^(l+1), shape (sizes[l+1], sizes[l]); ``biases[l]`` is b^(l+1).
    ``velocity`` is the momentum state (v_W per layer, v_b per layer), or None where it is zero.
    ``epochs_trained``: epochs of ``fit`` these parameters have had. ``rng``: the state of the
    generator that shuffles ``fit``'s rows (``numpy.random.Generator.bit_generator.state``), so a
    network restored from it shuffles on as the original would; None leaves a network's own.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    velocity: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    epochs_trained: int = 0
    rng: dict[str, Any] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by the model file's names: w0, b0, ... and, if any, vw0, vb0, ..."""
        named = {}
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            named[f"w{l}"], named[f"b{l}"] = w, b
        if self.velocity is not None:
            for l, (vw, vb) in enumerate(zip(*self.velocity)):
                named[f"vw{l}"], named[f"vb{l}"] = vw, vb
        return named

    def flat(self, which: str = "params") -> np.ndarray:
        """ "params" or "velocity" as one flat array in the kernels' layout: all W^l, then all b^l."""
        ws, bs = (self.weights, self.biases) if which == "params" else self.velocity
        return np.concatenate([w.ravel() for w in ws] + [b.ravel() for b in bs])
