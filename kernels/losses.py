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


def _make_output_error_row(fprime, index):
    """``output_error_row`` calling ``fprime``, its indices of Numba type ``index`` (numba.uint64:
    unsigned indices in ``while`` loops, as ``activations.softmax_row``)."""

    def output_error_row(z, a, y, delta, loss, act):
        """BP1 for one sample: fill ``delta`` and return the sample's cost C_x.

        All arithmetic is in the arrays' precision (float32 on a consumer GPU runs float64 at
        1/32 to 1/64 of the rate); the kernels sum the per-sample costs in float64."""
        n, one_ = index(z.shape[0]), index(1)
        zero, half, one = z.dtype.type(0), z.dtype.type(0.5), z.dtype.type(1)
        cost = zero
        if loss == QUADRATIC:  # C_x = 1/2 ||g||^2 and BP1, from g = a - y
            # One pass for the cost and g, two FFMA per element (the cost halved at the end: exact
            # short of subnormals and overflow). A loop of one FFMA per element spends more SASS
            # instructions on its 64-bit index, count and addresses than on arithmetic (7.75 to
            # 10.5 per FFMA on sm_90).
            ga = zero  # sum_k g_k a_k, for softmax outputs
            j = index(0)
            while j < n:
                aj = a[j]
                g = aj - y[j]
                delta[j] = g
                cost += g * g
                ga += g * aj
                j += one_
            j = index(0)
            if act == SOFTMAX:  # f' is the softmax Jacobian: delta_j = a_j (g_j - sum_k g_k a_k)
                while j < n:
                    delta[j] = a[j] * (delta[j] - ga)
                    j += one_
            else:  # delta = g ⊙ f'(z)
                while j < n:
                    delta[j] *= fprime(z[j], a[j], act, one)
                    j += one_
            return half * cost

        # The cost C_x, from z where ln a would lose precision.
        if act == SOFTMAX:  # LOG_LIKELIHOOD: ln a_j = z_j - ln sum_k e^(z_k)
            zmax = z[0]
            j = one_
            while j < n:
                zmax = max(zmax, z[j])
                j += one_
            total = zero
            j = index(0)
            while j < n:
                total += math.exp(z[j] - zmax)
                j += one_
            log_sum = zmax + math.log(total)
            # Two elements a trip, for the same reason; y_j = 0 adds nothing, even where z_j = -inf.
            j = index(0)
            while j + one_ < n:
                y0, y1 = y[j], y[j + one_]
                if y0 != 0:
                    cost -= y0 * (z[j] - log_sum)
                if y1 != 0:
                    cost -= y1 * (z[j + one_] - log_sum)
                j += one_ + one_
            if j < n:  # the last element of an odd row
                yj = y[j]
                if yj != 0:
                    cost -= yj * (z[j] - log_sum)
        elif act == SIGMOID:  # CROSS_ENTROPY with sigmoid outputs
            j = index(0)
            while j < n:
                # -ln sigma(z) = softplus(-z), -ln(1 - sigma(z)) = softplus(z), where without
                # overflow softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): one exp, one log1p
                zj, yj = z[j], y[j]
                l1pe = math.log1p(math.exp(-abs(zj)))
                cost += yj * (max(-zj, zero) + l1pe) + (one - yj) * (max(zj, zero) + l1pe)
                j += one_
        else:  # not reached: the network refuses other combinations
            cost = z.dtype.type(math.nan)

        # BP1: delta = a - y, where the math cancels (log-likelihood with softmax outputs,
        # cross-entropy with sigmoid outputs).
        j = index(0)
        while j < n:
            delta[j] = a[j] - y[j]
            j += one_
        return cost

    return output_error_row


@functools.cache
def compile_for(target: str):
    """Return ``output_error_row`` compiled for ``target``: "cpu" (@njit) or "cuda" (device function)."""
    import numba

    _, fprime, _ = _activations_for(target)
    output_error_row = _make_output_error_row(fprime, numba.uint64)
    if target == "cpu":
        return numba.njit(inline="always")(output_error_row)
    from numba import cuda

    return cuda.jit(device=True)(output_error_row)
