"""The scikit-learn peer: MLPClassifier(solver="sgd", momentum=0, alpha=0), one epoch per fit call.

MLPClassifier always puts a softmax output layer under the log-loss (cross-entropy) cost: it has no
quadratic-cost classifier. For the quadratic/sigmoid configurations it therefore trains sigmoid
("logistic") hidden layers with a softmax + log-likelihood output: the same shapes and so the same
matrix products, but not the same cost. That is noted in the results.
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
except ImportError:  # the peer is optional
    sklearn = None


def available() -> tuple[bool, str]:
    if sklearn is None:
        return False, "scikit-learn is not installed"
    return True, f"scikit-learn {sklearn.__version__}"


_ACTIVATIONS = {"sigmoid": "logistic", "tanh": "tanh", "relu": "relu", "linear": "identity"}


def what_it_computes(activations, loss) -> str | None:
    """A note when scikit-learn's model differs from the configuration, else None."""
    hidden = set(activations[:-1])
    if len(hidden) > 1:
        return "mixed hidden activations are not supported by MLPClassifier"
    if activations[-1] == "softmax" and loss == "log_likelihood":
        return None
    return (
        f"no {loss}-cost classifier in scikit-learn: computes {_ACTIVATIONS[activations[0]]} hidden "
        f"layers + softmax outputs with the log-loss (same matrix products, different cost)"
    )


class SklearnMLP:
    name = "sklearn"
    device = "cpu"

    def __init__(self, weights, biases, activations, loss, batch_size, lr, X, y, seed=0):
        self.model = MLPClassifier(
            hidden_layer_sizes=[W.shape[0] for W in weights[:-1]],
            activation=_ACTIVATIONS[activations[0]],
            solver="sgd",
            alpha=0.0,
            batch_size=batch_size,
            learning_rate="constant",
            learning_rate_init=lr,
            momentum=0.0,
            nesterovs_momentum=False,
            max_iter=1,
            shuffle=True,
            warm_start=True,
            early_stopping=False,
            random_state=np.random.RandomState(seed),  # an instance: a new shuffle every fit
        )
        # A fit on a few rows (holding every class) builds the model's state; then the shared
        # initial weights go in. sklearn stores coefs_[l] as (n_in, n_out), gpubp's W^l transposed.
        first = np.concatenate([np.flatnonzero(y == c)[:10] for c in np.unique(y)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.fit(X[first], y[first])
        self.model.coefs_ = [np.array(W, np.float32).T.copy() for W in weights]
        self.model.intercepts_ = [np.array(b, np.float32) for b in biases]

    def epoch(self, X, y, batch_size, lr):
        """One epoch: fit with max_iter=1 and warm_start continues from the current weights."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(X, y)

    def params(self):
        return [c.T for c in self.model.coefs_], list(self.model.intercepts_)
