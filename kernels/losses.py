"""Cost functions and BP1, the output error, written once for both targets.

``output_error_row`` works on one sample (one row of Z, A, Y) and is compiled for the CPU and
as a CUDA device function by ``compile_for``, like the activations.

Costs (the network averages the per-sample cost C_x over the n rows):
- QUADRATIC      C_x = 1/2 ||y - a||^2
- CROSS_ENTROPY  C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]
- LOG_LIKELIHOOD C_x = -sum_j y_j ln a_j   (= -ln a_{y(x)} for a one-hot y)

Cross-entropy takes sigmoid outputs and log-likelihood softmax outputs; the quadratic cost takes
any output activation (``gpubp.losses`` refuses other pairs).

BP1: delta^L = grad_a C ⊙ f'(z^L). Where the math cancels the result is delta^L = a - y:
cross-entropy with sigmoid outputs and log-likelihood with softmax outputs. For the quadratic
cost with softmax, f' is the softmax Jacobian: delta_j = a_j (g_j - sum_k g_k a_k), g = a - y.
"""

import functools
import math

from .activations import SIGMOID, SOFTMAX
from .activations import compile_for as _activations_for

QUADRATIC = 0
CROSS_ENTROPY = 1
LOG_LIKELIHOOD = 2

CODES = {"quadratic": QUADRATIC, "cross_entropy": CROSS_ENTROPY, "log_likelihood": LOG_LIKELIHOOD}
NAMES = {code: name for name, code in CODES.items()}


def softplus(x, zero):
    """ln(1 + e^x) without overflow; -ln(sigma(z)) = softplus(-z), -ln(1 - sigma(z)) = softplus(z).

    ``zero`` is 0 in x's precision, so float32 stays float32."""
    return max(x, zero) + math.log1p(math.exp(-abs(x)))


def _make_output_error_row(fprime, softplus):
    def output_error_row(z, a, y, delta, loss, act):
        """BP1 for one sample: fill ``delta`` and return the sample's cost C_x.

        All arithmetic is in the arrays' precision (float32 on a consumer GPU runs float64 at
        1/32 to 1/64 of the rate); the kernels sum the per-sample costs in float64."""
        n = z.shape[0]
        zero, half, one = z.dtype.type(0), z.dtype.type(0.5), z.dtype.type(1)
        cost = zero
        # The cost C_x, from z where ln a would lose precision.
        if loss == QUADRATIC:
            for j in range(n):
                d = a[j] - y[j]
                cost += half * d * d
        elif act == SOFTMAX:  # LOG_LIKELIHOOD: ln a_j = z_j - ln sum_k e^(z_k)
            zmax = z[0]
            for j in range(1, n):
                zmax = max(zmax, z[j])
            total = zero
            for j in range(n):
                total += math.exp(z[j] - zmax)
            log_sum = zmax + math.log(total)
            for j in range(n):
                if y[j] != 0:
                    cost -= y[j] * (z[j] - log_sum)
        elif act == SIGMOID:  # CROSS_ENTROPY with sigmoid outputs
            for j in range(n):
                cost += y[j] * softplus(-z[j], zero) + (one - y[j]) * softplus(z[j], zero)
        else:  # not reached: the network refuses other combinations
            cost = z.dtype.type(math.nan)

        # BP1: delta = grad_a C ⊙ f'(z).
        if (loss == CROSS_ENTROPY and act == SIGMOID) or (loss == LOG_LIKELIHOOD and act == SOFTMAX):
            for j in range(n):
                delta[j] = a[j] - y[j]
        elif act == SOFTMAX:  # QUADRATIC: delta_j = a_j (g_j - sum_k g_k a_k), g = a - y
            ga = zero
            for j in range(n):
                g = a[j] - y[j]
                delta[j] = g
                ga += g * a[j]
            for j in range(n):
                delta[j] = a[j] * (delta[j] - ga)
        else:  # QUADRATIC with an elementwise activation: (a - y) ⊙ f'(z)
            for j in range(n):
                delta[j] = (a[j] - y[j]) * fprime(z[j], a[j], act, one)
        return cost

    return output_error_row


@functools.cache
def compile_for(target: str):
    """Return ``output_error_row`` compiled for ``target``: "cpu" (@njit) or "cuda" (device function)."""
    _, fprime, _ = _activations_for(target)
    if target == "cpu":
        from numba import njit

        return njit(inline="always")(_make_output_error_row(fprime, njit(inline="always")(softplus)))
    from numba import cuda

    return cuda.jit(device=True)(_make_output_error_row(fprime, cuda.jit(device=True)(softplus)))
