"""A network as two typed values: its Config and its State (state_dict / load_state_dict), and the
ways they travel: a model file (also one written before Config had ``init``), pickle, a second network."""

import json
import pickle

import numpy as np
import pytest

import gpubp
from gpubp.config import PARAMETERS, Config, InvalidParameter, check, parse

TRAIN = dict(batch_size=4, lr=0.5, momentum=0.9, weight_decay=0.01)


def trained(rng, **kw):
    X, labels = rng.uniform(0, 1, (12, 4)), rng.integers(0, 3, 12)
    net = gpubp.Network([4, 5, 3], dtype="float64", device="cpu", seed=3, **kw)
    net.fit(X, labels, epochs=2, **TRAIN)
    return net, X, labels


def assert_same_network(a, b):
    assert a.config == b.config and a.epochs_trained == b.epochs_trained
    sa, sb = a.state_dict(include_rng=False), b.state_dict(include_rng=False)
    for x, y in zip(sa.arrays().values(), sb.arrays().values(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_network_is_its_config_and_its_state(rng):
    net, X, labels = trained(rng, init="standard")
    assert net.config == Config((4, 5, 3), "sigmoid", "sigmoid", "quadratic", "float64", "standard")
    state = net.state_dict()
    assert state.epochs_trained == 2 and state.velocity is not None and state.rng is not None
    copy = gpubp.Network.from_config(net.config, state, device="cpu")
    assert_same_network(copy, net)
    # the generator's state travels too: both go on to shuffle, and so train, the same way
    net.fit(X, labels, epochs=1, **TRAIN)
    copy.fit(X, labels, epochs=1, **TRAIN)
    assert_same_network(copy, net)


def test_state_dict_is_a_copy(rng):
    net, _, _ = trained(rng)
    state = net.state_dict()
    state.weights[0][...] = 0
    assert np.abs(net.weights[0]).max() > 0


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda s: s.weights.pop(), "weights: 1 layers, but the network has 2"),
        (
            lambda s: s.weights.__setitem__(0, np.zeros((4, 5))),
            r"layer 1: weights of shape \(4, 5\), expected \(5, 4\)",
        ),
        (lambda s: s.biases[1].__setitem__(0, np.nan), "layer 2: biases must be finite"),
        (lambda s: s.velocity[0][1].__setitem__((0, 0), np.inf), "layer 2: velocity_w must be finite"),
        (lambda s: setattr(s, "epochs_trained", -1), "epochs_trained must be a non-negative integer"),
        (lambda s: s.rng.__setitem__("bit_generator", "os.system"), "unknown bit generator"),
    ],
)
def test_load_state_dict_refuses_a_state_that_does_not_fit(rng, change, match):
    net, _, _ = trained(rng)
    before = net.state_dict()
    bad = net.state_dict()
    change(bad)
    with pytest.raises(ValueError, match=match):
        net.load_state_dict(bad)
    assert_same_network(net, gpubp.Network.from_config(net.config, before, device="cpu"))


def test_pickle_round_trips_to_the_same_network(rng):
    net, X, labels = trained(rng, activation="tanh", output_activation="softmax", loss="log_likelihood")
    back = pickle.loads(pickle.dumps(net))
    assert_same_network(back, net)
    assert back.device == "cpu"
    net.fit(X, labels, epochs=1, **TRAIN)
    back.fit(X, labels, epochs=1, **TRAIN)
    assert_same_network(back, net)


def test_a_model_file_from_before_init_was_saved_still_loads(tmp_path, rng):
    """Files written by earlier gpubp have no "init" in their config (nor "epochs_trained" in 0.1)."""
    net, _, _ = trained(rng)
    old = {"sizes": [4, 5, 3], "activation": "sigmoid", "output_activation": "sigmoid", "loss": "quadratic"}
    arrays = net.state_dict().arrays()
    config = np.array(json.dumps({**old, "dtype": "float64"}))
    np.savez(tmp_path / "old.npz", format=np.array("gpubp-model-1"), config=config, **arrays)
    back = gpubp.Network.load(tmp_path / "old.npz", device="cpu")
    assert back.config.init == "scaled" and back.epochs_trained == 0
    np.testing.assert_array_equal(back.weights[1], net.weights[1])


def test_saved_config_is_the_config(tmp_path, rng):
    net, _, _ = trained(rng, init="standard")
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        saved = json.loads(str(data["config"]))
    assert saved == {**net.config.to_dict(), "epochs_trained": 2}
    assert gpubp.Network.load(tmp_path / "m.npz", device="cpu").config == net.config


# -- the table of parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,good,bad,words",
    [
        ("lr", 0.1, 0, "lr must be a positive number, got 0"),
        ("momentum", 0.0, 1, r"momentum must be a number in \[0, 1\), got 1"),
        ("lr_decay", 1.0, 0.0, r"lr_decay must be a number in \(0, 1\], got 0.0"),
        ("epochs", 3, True, "epochs must be a positive integer, got True"),
        ("seed", None, -1, "seed must be None or a non-negative integer, got -1"),
        ("weight_decay", 0, float("inf"), "weight_decay must be a number >= 0, got inf"),
        ("dtype", "float32", "float16", "unknown dtype 'float16'; choose one of 'float32', 'float64'"),
    ],
)
def test_one_table_one_wording(key, good, bad, words):
    assert check(key, good) == good
    with pytest.raises(InvalidParameter, match=words):
        check(key, bad)
    if PARAMETERS[key].kind in ("int", "real") and not isinstance(bad, bool):  # the command line's words too
        with pytest.raises(InvalidParameter, match=words.replace(f"got {bad!r}", f"got '{bad}'")):
            parse(key, str(bad))


def test_every_entry_point_says_the_same_words():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    words = r"momentum must be a number in \[0, 1\), got 1.5"
    with pytest.raises(InvalidParameter, match=words):
        gpubp.Network([2, 2], device="cpu").fit(X, y, momentum=1.5)
    sklearn = pytest.importorskip("gpubp.sklearn")
    with pytest.raises(InvalidParameter, match=words):
        sklearn.MLPClassifier((3,), momentum=1.5, device="cpu").fit(X, y)
