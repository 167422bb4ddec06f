"""The PyTorch peer: eager nn.Linear + activation layers, optim.SGD, the same cost as gpubp.

Quadratic cost: C = 1/(2m) sum ||a - y||^2 on sigmoid (etc.) outputs. Log-likelihood with softmax
outputs: nn.functional.cross_entropy on the logits (the same gradient, a - y, computed stably).
"""

from __future__ import annotations

import os

import numpy as np

try:
    import torch
except ImportError:  # the peer is optional
    torch = None


def available() -> tuple[bool, str]:
    if torch is None:
        return False, "torch is not installed (pip install torch)"
    return True, f"torch {torch.__version__}"


def cuda_available() -> bool:
    return torch is not None and torch.cuda.is_available()


_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU"}


class TorchMLP:
    def __init__(self, weights, biases, activations, loss, device="cpu", seed=0, threads=None):
        self.threads = threads or os.cpu_count() or 1
        torch.set_num_threads(self.threads)
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"
        self.activations = list(activations)
        self.loss = loss
        layers = []
        for layer, (W, b) in enumerate(zip(weights, biases, strict=True)):
            linear = torch.nn.Linear(W.shape[1], W.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.asarray(W, np.float32)))
                linear.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
            layers.append(linear)
            act = self.activations[layer]
            last = layer == len(weights) - 1
            if last and act == "softmax":
                continue  # cross_entropy takes the logits
            if act != "linear":
                layers.append(getattr(torch.nn, _ACTIVATIONS[act])())
        self.model = torch.nn.Sequential(*layers).to(self.device)
        # The shuffle order comes from a numpy Generator seeded like gpubp's, so this peer sees the
        # same mini-batches as gpubp and the numpy peer (one permutation per epoch).
        self.rng = np.random.default_rng(seed)
        self._data = None  # (X, Y, labels) on the device, made on the first epoch

    def _tensors(self, X, Y):
        if self._data is None or self._data[0] is not X:
            tx = torch.from_numpy(X).to(self.device)
            ty = torch.from_numpy(Y).to(self.device)
            labels = ty.argmax(dim=1)
            self._data = (X, tx, ty, labels)
        return self._data[1:]

    def epoch(self, X, Y, batch_size, lr):
        tx, ty, labels = self._tensors(X, Y)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        perm = torch.from_numpy(self.rng.permutation(len(tx))).to(self.device)
        for start in range(0, len(tx), batch_size):
            idx = perm[start : start + batch_size]
            out = self.model(tx[idx])
            if self.loss == "log_likelihood":
                loss = torch.nn.functional.cross_entropy(out, labels[idx])
            else:  # quadratic
                loss = 0.5 * ((out - ty[idx]) ** 2).sum() / len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.synchronize()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def params(self):
        linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        weights = [m.weight.detach().cpu().numpy().copy() for m in linears]
        biases = [m.bias.detach().cpu().numpy().copy() for m in linears]
        return weights, biases
