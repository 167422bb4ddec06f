"""The end-to-end configurations and the named sets of them (imports nothing heavy: the peers'
worker processes read their configuration from here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    name: str
    sizes: list[int]
    activation: str
    output_activation: str | None
    loss: str
    batch_size: int
    lr: float

    def layer_activations(self) -> list[str]:
        out = self.output_activation or self.activation
        return [self.activation] * (len(self.sizes) - 2) + [out]


def _sigmoid(hidden: int, batch: int, name: str | None = None) -> Config:
    return Config(name or f"784-{hidden}-10 b{batch}", [784, hidden, 10], "sigmoid", None, "quadratic", batch, 3.0)


def _relu(sizes: list[int], batch: int, lr: float = 0.1) -> Config:
    name = "-".join(map(str, sizes)) + f" relu/softmax b{batch}"
    return Config(name, sizes, "relu", "softmax", "log_likelihood", batch, lr)


# Issue 22: the batch sizes people train at (Keras 32, PyTorch tutorials 64, scikit-learn 200,
# most recipes 128-256), on a sigmoid/quadratic and a relu/softmax/log-likelihood network.
COMMON_BATCHES = (16, 32, 64, 128, 256, 512)

CONFIGS = {
    c.name: c
    for c in [
        _sigmoid(30, 10, "textbook 784-30-10 b10"),
        _sigmoid(100, 10),
        _sigmoid(100, 128),
        _relu([784, 1024, 1024, 10], 1024),
        *[_sigmoid(100, b) for b in COMMON_BATCHES if b != 128],
        *[_relu([784, 256, 128, 10], b) for b in COMMON_BATCHES],
    ]
}

SETS = {
    "quick": ["textbook 784-30-10 b10", "784-100-10 b128"],
    "full": [
        "textbook 784-30-10 b10",
        "784-100-10 b10",
        "784-100-10 b128",
        "784-1024-1024-10 relu/softmax b1024",
    ],
    # issue 22: every listed configuration, plus the two that must not lose (item 5)
    "issue22": [
        *[f"784-100-10 b{b}" for b in COMMON_BATCHES],
        *[f"784-256-128-10 relu/softmax b{b}" for b in COMMON_BATCHES],
        "textbook 784-30-10 b10",
        "784-1024-1024-10 relu/softmax b1024",
    ],
}
DEFAULT_REPEATS = {"quick": 2, "full": 5, "issue22": 5}
