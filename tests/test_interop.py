"""README's PyTorch recipe, run from README.md itself: gpubp weights in nn.Linear layers give predict's outputs.

Skipped when PyTorch is not installed (it is not in [dev]: too large for CI)."""

import re
from pathlib import Path

import numpy as np
import pytest
import reference as ref

import gpubp

torch = pytest.importorskip("torch")

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_recipe() -> str:
    """The first python block under README's "## Into PyTorch" heading."""
    text = README.read_text()
    section = text.split("## Into PyTorch", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("hidden", ref.ACTIVATIONS)
@pytest.mark.parametrize("loss,output", ref.LOSS_OUTPUTS)
def test_readme_recipe_gives_predicts_outputs(rng, dtype, tol, hidden, loss, output):
    net = gpubp.Network([5, 6, 4, 3], hidden, output, loss, dtype=dtype, device="cpu", seed=4)
    X = rng.standard_normal((8, 5))
    scope = {"gpubp": gpubp, "net": net, "X": X}
    exec(readme_recipe(), scope)
    out = scope["out"]
    assert out.dtype == net.dtype and out.shape == (8, 3)
    np.testing.assert_allclose(out, net.predict(X), rtol=tol, atol=tol)
    linears = [m for m in scope["model"] if isinstance(m, torch.nn.Linear)]
    for linear, W, b in zip(linears, net.weights, net.biases):  # the same (n_out, n_in) layout
        np.testing.assert_array_equal(linear.weight.detach().numpy(), W)
        np.testing.assert_array_equal(linear.bias.detach().numpy(), b)


def test_back_from_torch(rng):
    """README's way back: nn.Linear weights into Network.from_params compute the same function."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2), torch.nn.Sigmoid())
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    net = gpubp.Network.from_params(
        [lin.weight.detach().numpy() for lin in linears],
        [lin.bias.detach().numpy() for lin in linears],
        activation="tanh",
        output_activation="sigmoid",
        device="cpu",
    )
    X = rng.standard_normal((6, 4)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(net.predict(X), expected, rtol=1e-5, atol=1e-6)
