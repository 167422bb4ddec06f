"""FLOP counts of one training epoch: the floors every implementation has to compute.

For layer sizes n_0 .. n_L, N samples and mini-batches of B rows, one epoch of mini-batch SGD does

- forward       2 N sum_l n_(l-1) n_l      (Z = A_prev W^T: one multiply-add per weight per sample)
- weight grad   2 N sum_l n_(l-1) n_l      (BP4: nabla_w = Delta^T A_prev)
- hidden error  2 N sum_(l>=2) n_(l-1) n_l (BP2: Delta_next W_next; none for the first layer)
- update        2 P ceil(N / B)            (P -= lr nabla over all P parameters, once per batch)

Elementwise work (bias, activation, BP1, BP3) is O(N sum n_l) and left out. The issue's floor for
the textbook run (~5.6 GFLOP/epoch) is forward + weight gradient.
"""

from __future__ import annotations

import math


def epoch_flops(sizes: list[int], n_samples: int, batch_size: int) -> dict:
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    gemm = 2 * n_samples * sum(a * b for a, b in pairs)
    bp2 = 2 * n_samples * sum(a * b for a, b in pairs[1:])
    params = sum(a * b + b for a, b in pairs)
    update = 2 * params * math.ceil(n_samples / batch_size)
    return {
        "forward": gemm,
        "weight_gradient": gemm,
        "hidden_error": bp2,
        "update": update,
        "floor": 2 * gemm,  # forward + weight gradient, the definition
        "total": 2 * gemm + bp2 + update,
    }
