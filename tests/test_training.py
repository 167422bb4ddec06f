"""Early stopping, checkpoints and validation_split of ``Network.fit`` (gpubp.training).

The expected best epoch, stopping epoch and "improved" flags are worked out here from the recorded
per-epoch values by the rule itself; restored parameters are checked against a fresh network of the
same seed trained for exactly the best number of epochs (the CPU kernels are deterministic).
"""

import numpy as np
import pytest

import gpubp
from gpubp.training import BestModel

KW = dict(activation="tanh", output_activation="softmax", loss="log_likelihood", dtype="float64", device="cpu")
FIT = dict(batch_size=5, lr=0.5)


def make_data(n=40, k=3, d=4, seed=0):
    """Separable blobs, and a validation set of the same rows with the labels shifted by one: the better
    the network fits the training rows, the worse its validation loss, so early stopping must act."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.standard_normal((n, d)) * 0.3 + np.eye(k, d)[y] * 2
    return X, y, (X, (y + 1) % k)


def params(net):
    return net.weights + net.biases


def assert_same(a, b, tol=0.0):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def expected_run(values, lower_is_better, patience, min_delta=0.0, baseline=None):
    """(improved flags, best epoch, number of epochs run) by the rule, from the per-epoch values."""
    best, best_epoch, waited, flags = baseline, (0 if baseline is not None else None), 0, []
    for epoch, v in enumerate(values, start=1):
        if best is None:
            better = True
        elif lower_is_better:
            better = v < best - min_delta
        else:
            better = v > best + min_delta
        flags.append(better)
        if better:
            best, best_epoch, waited = v, epoch, 0
        else:
            waited += 1
        if patience is not None and waited >= patience:
            return flags, best_epoch, epoch
    return flags, best_epoch, len(values)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(tmp_path):
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    ckpt = tmp_path / "best.npz"
    history = net.fit(X, y, epochs=40, validation=val, early_stopping=3, checkpoint=ckpt, **FIT)

    flags, best_epoch, ran = expected_run(history["val_loss"], True, patience=3)
    assert ran < 40 and history.stopped_early  # the validation loss rises: it must stop
    assert history["epoch"] == list(range(1, ran + 1))
    assert history["improved"] == flags
    assert history.monitor == "val_loss" and history.best_epoch == best_epoch
    assert history.best_value == min(history["val_loss"])

    reference = gpubp.Network([4, 6, 3], seed=1, **KW)
    reference.fit(X, y, epochs=best_epoch, **FIT)  # the same shuffles: the best epoch's parameters exactly
    assert_same(params(net), params(reference))
    assert net.epochs_trained == best_epoch
    assert net.evaluate(*val)["loss"] == pytest.approx(history.best_value, rel=1e-12)
    saved = gpubp.Network.load(ckpt, device="cpu")
    assert_same(params(saved), params(reference))
    assert saved.epochs_trained == best_epoch


def test_restore_best_false_keeps_the_last_epoch():
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    history = net.fit(X, y, epochs=40, validation=val, early_stopping=3, restore_best=False, **FIT)
    ran = len(history["epoch"])
    assert history.best_epoch < ran
    reference = gpubp.Network([4, 6, 3], seed=1, **KW)
    reference.fit(X, y, epochs=ran, **FIT)
    assert_same(params(net), params(reference))
    assert net.epochs_trained == ran


def test_momentum_state_is_restored_too(tmp_path):
    """After restore_best the network trains on exactly as the best epoch's checkpoint does."""
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    history = net.fit(
        X, y, epochs=40, validation=val, early_stopping=2, momentum=0.9, checkpoint=tmp_path / "m.npz", **FIT
    )
    assert history.stopped_early
    loaded = gpubp.Network.load(tmp_path / "m.npz", device="cpu", seed=5)
    net._rng = np.random.default_rng(5)  # the same shuffles from here on
    for n in (net, loaded):
        n.fit(X, y, epochs=2, momentum=0.9, **FIT)
    assert_same(params(net), params(loaded))


@pytest.mark.parametrize("monitor,lower", [("val_accuracy", False), ("loss", True), ("val_loss", True)])
@pytest.mark.parametrize("min_delta", [0.0, 0.02])
def test_improved_flags_follow_the_rule(monitor, lower, min_delta):
    X, y, val = make_data(seed=2)
    net = gpubp.Network([4, 5, 3], seed=3, **KW)
    history = net.fit(X, y, epochs=12, validation=val, monitor=monitor, min_delta=min_delta, restore_best=False, **FIT)
    flags, best_epoch, ran = expected_run(history[monitor], lower, patience=None, min_delta=min_delta)
    assert ran == 12 and not history.stopped_early
    assert history["improved"] == flags and history.best_epoch == best_epoch


def test_checkpoint_holds_the_best_model_after_every_epoch(tmp_path):
    X, y, _ = make_data()
    path = tmp_path / "ckpt.npz"
    net = gpubp.Network([4, 6, 3], seed=4, **KW)
    best = {}

    def callback(epoch, record):
        if record["improved"]:
            best["params"] = params(net)
        assert_same(params(gpubp.Network.load(path, device="cpu")), best["params"])

    history = net.fit(X, y, epochs=6, validation_split=0.25, checkpoint=path, callback=callback, **FIT)
    assert history.monitor == "val_loss"  # "auto" with validation data
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left behind


def test_no_validation_watches_the_training_loss(tmp_path):
    X, y, _ = make_data()
    net = gpubp.Network([4, 6, 3], seed=4, **KW)
    history = net.fit(X, y, epochs=5, checkpoint=tmp_path / "c.npz", **FIT)
    assert history.monitor == "loss" and history.best_value == min(history["loss"])


def test_monitor_epoch_keeps_the_latest_model(tmp_path):
    X, y, _ = make_data()
    net = gpubp.Network([4, 6, 3], seed=4, **KW)
    history = net.fit(X, y, epochs=4, monitor="epoch", checkpoint=tmp_path / "c.npz", **FIT)
    assert history["improved"] == [True] * 4 and history.best_epoch == 4
    assert_same(params(gpubp.Network.load(tmp_path / "c.npz", device="cpu")), params(net))


def test_a_baseline_nothing_beats_returns_the_starting_model():
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    net.epochs_trained = 7  # as if loaded from a file
    start = params(net)
    history = net.fit(X, y, epochs=10, validation=val, early_stopping=2, baseline=0.0, **FIT)  # a loss is >= 0
    assert history["epoch"] == [1, 2] and history.stopped_early
    assert history.best_epoch == 0 and history.best_value == 0.0 and history["improved"] == [False, False]
    assert_same(params(net), start)
    assert net.epochs_trained == 7


def test_callback_stop_still_restores_the_best():
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    history = net.fit(X, y, epochs=40, validation=val, monitor="val_loss", callback=lambda e, r: e < 6, **FIT)
    assert len(history["epoch"]) == 6 and not history.stopped_early
    assert net.evaluate(*val)["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-12)


def test_plain_fit_is_unchanged():
    X, y, val = make_data()
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    history = net.fit(X, y, epochs=3, validation=val, **FIT)
    assert "improved" not in history and history.best_epoch is None and history.monitor is None
    assert net.epochs_trained == 3


def test_validation_split_holds_out_the_last_rows():
    X, y, _ = make_data(n=20)
    a = gpubp.Network([4, 6, 3], seed=1, **KW)
    b = gpubp.Network([4, 6, 3], seed=1, **KW)
    ha = a.fit(X, y, epochs=3, validation_split=0.25, **FIT)
    hb = b.fit(X[:15], y[:15], epochs=3, validation=(X[15:], y[15:]), **FIT)
    assert_same(params(a), params(b))
    assert ha["val_loss"] == hb["val_loss"] and ha["loss"] == hb["loss"]


@pytest.mark.cuda
def test_restore_on_the_gpu_keeps_the_best_epoch():
    X, y, val = make_data(n=12)
    net = gpubp.Network([4, 3, 3], seed=1, **{**KW, "device": "cuda"})
    history = net.fit(X, y, epochs=6, validation=val, early_stopping=2, **FIT)
    assert history.best_epoch is not None
    assert net.evaluate(*val)["loss"] == pytest.approx(history.best_value, rel=1e-10)
    assert net.epochs_trained == history.best_epoch


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(validation_split=0.2, validation=(np.zeros((2, 4)), [0, 1])), ValueError, "not both"),
        (dict(validation_split=0.0), ValueError, r"validation_split must be None or a number in \(0, 1\)"),
        (dict(validation_split=1.0), ValueError, r"validation_split must be None or a number in \(0, 1\)"),
        (dict(validation_split="0.2"), TypeError, "validation_split must be None or a number"),
        (dict(validation_split=0.01), ValueError, "leaves 0 for validation"),
        (dict(validation_split=0.1), ValueError, "leaves 2 for validation, fewer than the 3 classes"),
        (dict(early_stopping=3, monitor="val_loss"), ValueError, "monitor='val_loss' needs validation data"),
        (dict(monitor="val_accuracy"), ValueError, "needs validation data"),
        (dict(monitor="accuracy"), ValueError, "unknown monitor 'accuracy'"),
        (dict(early_stopping=0, monitor="loss"), ValueError, "early_stopping must be None or a positive integer"),
        (dict(early_stopping=2.5, monitor="loss"), TypeError, "early_stopping must be None or a positive integer"),
        (dict(early_stopping=True, monitor="loss"), TypeError, "early_stopping must be None or a positive integer"),
        (dict(monitor="loss", min_delta=-1), ValueError, "min_delta must be a number >= 0"),
        (dict(monitor="loss", baseline=float("nan")), ValueError, "baseline must be None or a finite number"),
        (dict(restore_best="yes"), TypeError, "restore_best must be True or False"),
        (dict(checkpoint="/no/such/folder/m.npz"), FileNotFoundError, "does not exist"),
        (dict(checkpoint=True), TypeError, "checkpoint must be None or a file path, got True"),
        (dict(monitor=["loss"]), ValueError, r"unknown monitor \['loss'\]"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs, error, match, tmp_path):
    X, y, _ = make_data(n=20)
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    start = params(net)
    with pytest.raises(error, match=match):
        net.fit(X, y, epochs=2, **FIT, **kwargs)
    assert_same(params(net), start)
    assert net.epochs_trained == 0


def test_checkpoint_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        BestModel("loss", checkpoint=tmp_path)


def test_a_checkpoint_folder_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    """As os.access says for the user (root writes anywhere, so the test asks it to say no)."""
    X, y, _ = make_data(n=20)
    net = gpubp.Network([4, 6, 3], seed=1, **KW)
    monkeypatch.setattr("gpubp.training.os.access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="is not writable"):
        net.fit(X, y, epochs=2, **FIT, checkpoint=tmp_path / "best.npz")
    assert net.epochs_trained == 0
