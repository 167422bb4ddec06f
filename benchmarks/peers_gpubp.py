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
    """gpubp on ``device``; on CUDA ``path`` and ``fused_version`` force one way of running an epoch
    (version 1 of the fused kernel, from ``benchmarks/variants``, stands in for the library's
    around each of this peer's epochs), so one run can time every path; the peer is then named
    e.g. gpubp-cuda[epoch-v1].

    On CUDA the training data is copied to the GPU once, on the first epoch, and every ``fit``
    gets the GPU arrays, as the torch peer keeps its tensors on the device: an epoch's time is
    then training, not a 188 MB copy and host-side checks of X per call."""

    def __init__(self, cfg, weights, biases, device="cpu", seed=0, path="auto", fused_version=None):
        variant = path + (f"-v{fused_version}" if fused_version else "")
        self.name = f"gpubp-{device}" + ("" if path == "auto" else f"[{variant}]")
        self.device = device
        self.fused_version = fused_version
        self.net = gpubp.Network.from_params(
            weights,
            biases,
            activation=cfg.activation,
            output_activation=cfg.output_activation,
            loss=cfg.loss,
            dtype="float32",
            device=device,
            seed=seed,
            path=path,
        )
        self.last_fit_seconds = None  # the epoch as timed inside fit (no input checks or copies)
        self._data = None  # (X, Y, X on the GPU, Y on the GPU), made on the first CUDA epoch

    def _resident(self, X, Y):
        if self._data is None or self._data[0] is not X or self._data[1] is not Y:
            import numpy as np
            from numba import cuda

            as_gpu = lambda a: cuda.to_device(np.ascontiguousarray(a, np.float32))  # noqa: E731
            self._data = (X, Y, as_gpu(X), as_gpu(Y))
        return self._data[2:]

    def epoch(self, X, Y, batch_size, lr):
        if self.fused_version == 1:
            from gpubp.kernels import cuda as kc

            from .variants import cuda_fused_v1

            default, kc.train_batches = kc.train_batches, cuda_fused_v1.train_batches
        if self.device == "cuda":
            X, Y = self._resident(X, Y)
        try:
            history = self.net.fit(X, Y, epochs=1, batch_size=batch_size, lr=lr, shuffle=True)
            self.synchronize()
        finally:
            if self.fused_version == 1:
                kc.train_batches = default
        if isinstance(history, dict) and history.get("seconds"):
            self.last_fit_seconds = history["seconds"][-1]

    def synchronize(self):
        if self.device == "cuda":
            from numba import cuda

            cuda.synchronize()

    def params(self):
        return self.net.weights, self.net.biases


def cuda_variants(cfg) -> list[tuple[str, int | None]]:
    """(path, fused version) of the forced CUDA paths worth timing on ``cfg``: always the layers
    path; the graph path where numba-cuda can record graphs; the cublas path where CuPy is
    installed and batches have 128 rows or more, and cublas-graph where both hold; the fused
    kernels where they can run and the
    batch's work is within 8x of the bound under which "auto" picks them (so the bound itself
    can be checked from both sides)."""
    import gpubp
    from gpubp.graphs import check_graphs
    from gpubp.kernels import cuda as kc

    tuning = gpubp.Tuning()
    n_weights = sum(a * b for a, b in zip(cfg.sizes, cfg.sizes[1:]))
    out = [("layers", None)]

    def usable(*checks) -> bool:
        try:
            for check in checks:
                check()
            return True
        except ImportError:
            return False

    wide = cfg.batch_size >= 128  # a GEMM call per product: not for tiny batches
    for path, checks, worth in (
        ("graph", (check_graphs,), True),
        ("cublas", (kc.check_cublas,), wide),
        ("cublas-graph", (kc.check_cublas, check_graphs), wide),
    ):
        if worth and usable(*checks):
            out.append((path, None))
    if kc.fused.fits(cfg.batch_size, cfg.sizes) and cfg.batch_size * n_weights <= 8 * tuning.fused_work:
        out += [("epoch", 1), ("epoch", 2)]
    return out
