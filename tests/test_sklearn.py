"""gpubp.sklearn: scikit-learn's own estimator checks, and the estimators held to gpubp.Network itself.

The wrapper is checked against the Network it wraps: the same seed and settings must give the same
parameters (the CPU kernels are deterministic), partial_fit and warm_start must continue exactly as
one longer fit, and a pickled estimator must train on as the original does.
"""

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import gpubp  # noqa: E402
from gpubp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

SMALL = dict(hidden_layer_sizes=(10,), epochs=20, batch_size=16, lr=0.05, dtype="float64", device="cpu")
CHECKED = [
    MLPClassifier(device="cpu"),  # the defaults: float32, 200 epochs, lr 0.001, momentum 0.9
    MLPRegressor(device="cpu"),
    MLPClassifier(**SMALL, random_state=0),
    MLPClassifier(**{**SMALL, "output_activation": "sigmoid"}, activation="tanh"),  # cross-entropy
    MLPRegressor(**{**SMALL, "lr": 0.001}, early_stopping=True, validation_fraction=0.2),
]


def expected_failed_checks(estimator):
    """Checks that cannot apply, with the reason. None so far: every check of scikit-learn passes."""
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=90, k=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return rng.standard_normal((n, d)) * 0.5 + np.eye(k, d)[y] * 3, y


def net_params(net):
    return net.weights + net.biases


def assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_classifier_is_the_network_it_wraps():
    X, y = blobs()
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = MLPClassifier((6,), "tanh", epochs=4, batch_size=8, lr=0.1, momentum=0.5, weight_decay=1e-3, lr_decay=0.9)
    clf.set_params(dtype="float64", device="cpu", random_state=7).fit(X, labels)
    net = gpubp.Network([4, 6, 3], "tanh", "softmax", "log_likelihood", dtype="float64", device="cpu", seed=7)
    history = net.fit(X, y, epochs=4, batch_size=8, lr=0.1, momentum=0.5, weight_decay=1e-3, lr_decay=0.9)
    assert_same(net_params(clf.network_), net_params(net))
    assert clf.loss_curve_ == history["loss"] and clf.n_iter_ == 4
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba, net.predict(X), rtol=1e-15)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[net.predict(X).argmax(axis=1)])
    assert clf.score(X, labels) == np.mean(clf.predict(X) == labels) > 0.9


def test_regressor_is_the_network_it_wraps(rng):
    X = rng.standard_normal((40, 3))
    Y = np.c_[X @ [1.0, -2.0, 0.5], np.sin(X[:, 0])]
    reg = MLPRegressor((5,), "sigmoid", epochs=3, batch_size=10, lr=0.05, dtype="float64", device="cpu", random_state=2)
    reg.fit(X, Y)
    net = gpubp.Network([3, 5, 2], "sigmoid", "linear", "quadratic", dtype="float64", device="cpu", seed=2)
    net.fit(X, Y, epochs=3, batch_size=10, lr=0.05, momentum=0.9)
    assert_same(net_params(reg.network_), net_params(net))
    assert reg.predict(X).shape == (40, 2) and reg.n_outputs_ == 2
    np.testing.assert_allclose(reg.predict(X), net.predict(X), rtol=1e-15)
    reg.fit(X, Y[:, 0])
    assert reg.predict(X).shape == (40,)


def test_partial_fit_and_warm_start_continue_one_fit():
    X, y = blobs()
    kw = dict(hidden_layer_sizes=(5,), epochs=2, batch_size=8, lr=0.05, lr_decay=0.8, dtype="float64", device="cpu")
    whole = MLPClassifier(**{**kw, "epochs": 6}, random_state=3).fit(X, y)
    parts = MLPClassifier(**kw, random_state=3)
    for _ in range(6):
        parts.partial_fit(X, y, classes=[0, 1, 2])
    warm = MLPClassifier(**kw, random_state=3, warm_start=True)
    for _ in range(3):
        warm.fit(X, y)
    for est in (parts, warm):
        assert_same(net_params(est.network_), net_params(whole.network_))
        assert est.n_iter_ == 6 and est.loss_curve_ == whole.loss_curve_
    cold = MLPClassifier(**kw, random_state=3).fit(X, y).fit(X, y)  # without warm_start a fit starts afresh
    assert cold.n_iter_ == 2


def test_pickled_estimator_trains_on_alike():
    X, y = blobs()
    clf = MLPClassifier((5,), epochs=2, lr=0.05, momentum=0.9, dtype="float64", device="cpu", random_state=1)
    clf.fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    for est in (clf, copy):  # the momentum state and the shuffling generator travel too
        est.partial_fit(X, y)
    assert_same(net_params(copy.network_), net_params(clf.network_))


def test_early_stopping_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = rng.integers(0, 2, 60)  # noise: the validation loss cannot keep falling
    clf = MLPClassifier((30,), epochs=300, lr=0.5, early_stopping=True, n_iter_no_change=4, tol=0.0)
    clf.set_params(dtype="float64", device="cpu", random_state=0).fit(X, y)
    curve = clf.validation_loss_curve_
    assert clf.n_iter_ < 300 and len(curve) == clf.n_iter_ == len(clf.loss_curve_)
    best = int(np.argmin(curve))
    assert clf.best_epoch_ == best + 1 and clf.n_iter_ == best + 1 + 4
    assert clf.network_.epochs_trained == clf.best_epoch_  # the best epoch's parameters are kept


def test_pipeline_and_grid_search_on_digits():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((32,), epochs=10, lr=0.01, device="cpu", random_state=0))
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.9
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (32,)]}, cv=2).fit(X[:600], y[:600])
    assert grid.best_params_ == {"mlpclassifier__hidden_layer_sizes": (32,)}


@pytest.mark.parametrize(
    "estimator,fit_args,error,match",
    [
        (MLPClassifier(hidden_layer_sizes=(4, 0)), {}, ValueError, "hidden_layer_sizes must hold positive"),
        (MLPClassifier(hidden_layer_sizes="wide"), {}, ValueError, "hidden_layer_sizes must hold positive"),
        (MLPClassifier(output_activation="linear"), {}, ValueError, "'softmax' or 'sigmoid'"),
        (MLPClassifier(activation="swish"), {}, ValueError, "unknown activation 'swish'"),
        (MLPClassifier(dtype="float16"), {}, ValueError, "unknown dtype 'float16'"),
        (MLPClassifier(validation_fraction=1.0), {}, ValueError, "validation_fraction"),
        (MLPClassifier(n_iter_no_change=0), {}, ValueError, "n_iter_no_change"),
        (MLPClassifier(early_stopping="yes"), {}, TypeError, "early_stopping must be True or False"),
        (MLPClassifier(lr=-1.0), {}, ValueError, "lr must be a positive number"),
        (MLPClassifier(lr="0.1"), {}, TypeError, "lr must be a positive number, got '0.1'"),
        (MLPClassifier(), {"y": np.zeros(6)}, ValueError, "only one class"),
        (MLPClassifier(), {"y": np.linspace(0, 1, 6)}, ValueError, "Unknown label type"),
        (MLPRegressor(output_activation="softmax"), {}, ValueError, "softmax over a single output"),
    ],
)
def test_bad_settings_are_clear_errors(estimator, fit_args, error, match):
    X = np.arange(12.0).reshape(6, 2)
    y = fit_args.get("y", np.array([0, 1, 0, 1, 0, 1]))
    with pytest.raises(error, match=match):
        estimator.set_params(device="cpu").fit(X, y)
    assert not hasattr(estimator, "network_")


def test_partial_fit_labels():
    X, y = blobs()
    clf = MLPClassifier((4,), device="cpu")
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # a batch need not hold every class
    assert list(clf.classes_) == [0, 1, 2] and clf.predict_proba(X).shape == (90, 3)
    with pytest.raises(ValueError, match=r"labels not among classes_ .*\[7\]"):
        clf.partial_fit(X[:2], [0, 7])
    with pytest.raises(ValueError, match="differs from the classes of the first fit"):
        clf.partial_fit(X, y, classes=[0, 1])


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(momentum=2.0), dict(batch_size=0), dict(activation="swish")])
def test_a_refused_refit_leaves_the_estimator_as_it_was(bad):
    """Refit with new labels and a bad setting: refused before classes_ or network_ change."""
    X = np.arange(12.0).reshape(6, 2)
    est = MLPClassifier((3,), epochs=2, device="cpu", random_state=0).fit(X, np.array([0, 1, 0, 1, 0, 1]))
    classes, network = est.classes_, est.network_
    with pytest.raises(ValueError):
        est.set_params(**bad).fit(X, np.array([5, 6, 7, 5, 6, 7]))
    assert est.classes_ is classes and est.network_ is network
