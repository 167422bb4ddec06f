"""Names of activations and losses, their kernel codes, and which combinations make sense."""

from .kernels import activations, losses

ACTIVATIONS = tuple(activations.CODES)  # sigmoid, tanh, relu, linear, softmax
LOSSES = tuple(losses.CODES)  # quadratic, cross_entropy, log_likelihood

# Output activations each loss accepts: cross-entropy treats each output as an independent
# probability in (0, 1); log-likelihood needs outputs that form one distribution.
FITTING_OUTPUTS = {
    "quadratic": ACTIVATIONS,
    "cross_entropy": ("sigmoid",),
    "log_likelihood": ("softmax",),
}


def resolve(activation: str, output_activation: str | None, loss: str) -> tuple[str, str, str]:
    """Check the names and their combination; return (activation, output_activation, loss)."""
    for what, name, known in (
        ("activation", activation, ACTIVATIONS),
        ("output_activation", output_activation, ACTIVATIONS + (None,)),
        ("loss", loss, LOSSES),
    ):
        if name not in known:
            names = ", ".join(repr(k) for k in known if k is not None)
            raise ValueError(f"unknown {what} {name!r}; choose one of {names}")
    if activation == "softmax":
        raise ValueError(
            "softmax is for the output layer only: use activation='sigmoid' (or tanh, relu, linear) "
            "with output_activation='softmax'"
        )
    output_activation = output_activation or activation
    if output_activation not in FITTING_OUTPUTS[loss]:
        fits = " or ".join(repr(a) for a in FITTING_OUTPUTS[loss])
        raise ValueError(f"loss {loss!r} does not fit output_activation {output_activation!r}: use {fits} outputs")
    return activation, output_activation, loss


def codes(activation: str, output_activation: str, n_layers: int) -> list[int]:
    """Activation code of each layer l = 1..L (the last one is the output layer's)."""
    return [activations.CODES[activation]] * (n_layers - 1) + [activations.CODES[output_activation]]


def loss_code(loss: str) -> int:
    """The kernels' code of a loss name."""
    return losses.CODES[loss]
