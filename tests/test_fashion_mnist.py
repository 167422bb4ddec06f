"""The README's Fashion-MNIST claims, trained for real (about a minute on 2 cores)."""

import pytest

import gpubp
from gpubp import data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion():
    try:
        return data.load_fashion_mnist()
    except data.DatasetNotFoundError as e:
        pytest.skip(str(e))


def test_textbook_run_reaches_084(fashion):
    net = gpubp.Network([784, 30, 10], device="cpu", seed=0)
    net.fit(fashion.X_train, fashion.y_train, epochs=30, batch_size=10, lr=3.0)
    assert net.evaluate(fashion.X_test, fashion.y_test)["accuracy"] >= 0.84


def test_recipe_reaches_089(fashion):
    net = gpubp.Network(
        [784, 512, 256, 10], activation="relu", output_activation="softmax", loss="log_likelihood", device="cpu"
    )
    net.fit(
        fashion.X_train, fashion.y_train, epochs=30, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4,
        lr_decay=0.9,
    )  # fmt: skip
    assert net.evaluate(fashion.X_test, fashion.y_test)["accuracy"] >= 0.89
