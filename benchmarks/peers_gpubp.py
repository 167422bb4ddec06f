"""gpubp itself as a peer: ``Network.fit(X, Y, epochs=1, ...)`` once per timed epoch."""

from __future__ import annotations

try:
    import gpubp
except ImportError as e:  # reported as a skipped peer
    gpubp = None
    _import_error = str(e)


def available() -> tuple[bool, str]:
    if gpubp is None:
        return False, f"gpubp is not importable ({_import_error})"
    if not hasattr(gpubp, "Network"):
        return False, "gpubp.Network does not exist yet"
    return True, f"gpubp {getattr(gpubp, '__version__', '?')}"


def initial_params(cfg, seed=0):
    """gpubp's own initial weights and biases for ``cfg``: the starting point every peer copies."""
    net = gpubp.Network(
        cfg.sizes,
        activation=cfg.activation,
        output_activation=cfg.output_activation,
        loss=cfg.loss,
        dtype="float32",
        device="cpu",
        seed=seed,
    )
    return net.weights, net.biases


class GpubpMLP:
    def __init__(self, cfg, weights, biases, device="cpu", seed=0):
        self.name = f"gpubp-{device}"
        self.device = device
        self.net = gpubp.Network.from_params(
            weights,
            biases,
            activation=cfg.activation,
            output_activation=cfg.output_activation,
            loss=cfg.loss,
            dtype="float32",
            device=device,
            seed=seed,
        )
        self.last_fit_seconds = None  # the epoch as timed inside fit (no input checks or copies)

    def epoch(self, X, Y, batch_size, lr):
        history = self.net.fit(X, Y, epochs=1, batch_size=batch_size, lr=lr, shuffle=True)
        self.synchronize()
        if isinstance(history, dict) and history.get("seconds"):
            self.last_fit_seconds = history["seconds"][-1]

    def synchronize(self):
        if self.device == "cuda":
            from numba import cuda

            cuda.synchronize()

    def params(self):
        return self.net.weights, self.net.biases
