"""The Network API: steps against the reference, paths agreeing, seeds, files, learning, errors."""

import json
import os

import numpy as np
import pytest
import reference as ref

import gpubp
from gpubp import backends


def reference_step(net, X, Y, lr, acts):
    _, gw, gb = ref.backprop(net.weights, net.biases, X, Y, acts, net.loss)
    return [w - lr * g for w, g in zip(net.weights, gw)], [b - lr * g for b, g in zip(net.biases, gb)]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_step_matches_reference(rng, dtype, tol):
    net = gpubp.Network(
        [5, 7, 4],
        activation="tanh",
        output_activation="softmax",
        loss="log_likelihood",
        dtype=dtype,
        device="cpu",
        seed=3,
    )
    X, labels = rng.standard_normal((9, 5)), rng.integers(0, 4, 9)
    W, b = reference_step(net, X, ref.onehot(labels, 4), 0.7, ["tanh", "softmax"])
    net.step(X, labels, lr=0.7)
    for a, e in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


def test_fit_is_minibatch_sgd(rng):
    """fit without shuffling = the reference's step on each consecutive batch (last one short)."""
    kw = dict(activation="sigmoid", loss="cross_entropy", dtype="float64", device="cpu", seed=5)
    net = gpubp.Network([3, 4, 2], **kw)
    X, Y = rng.standard_normal((11, 3)), rng.uniform(0, 1, (11, 2))
    expected = gpubp.Network([3, 4, 2], **kw)
    for s in range(0, 11, 4):
        W, b = reference_step(expected, X[s : s + 4], Y[s : s + 4], 0.5, ["sigmoid", "sigmoid"])
        expected = gpubp.Network.from_params(W, b, loss="cross_entropy", dtype="float64", device="cpu")
    net.fit(X, Y, epochs=1, batch_size=4, lr=0.5, shuffle=False)
    for a, e in zip(net.weights + net.biases, expected.weights + expected.biases):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def train_params(device, path="auto", dtype="float64", tuning=None, rows=23, epochs=3, **fit):
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((rows, 6)), rng.integers(0, 3, rows)
    net = gpubp.Network(
        [6, 5, 3],
        activation="relu",
        output_activation="softmax",
        loss="log_likelihood",
        dtype=dtype,
        device=device,
        seed=11,
        path=path,
        tuning=tuning,
    )
    history = net.fit(X, labels, epochs=epochs, batch_size=5, lr=0.3, **fit)
    return net.weights + net.biases, history


def test_layers_path_equals_epoch_path():
    a, ha = train_params("cpu", "epoch", momentum=0.9, weight_decay=0.01)
    b, hb = train_params("cpu", "layers", momentum=0.9, weight_decay=0.01)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "path,fused_shared",
    [("layers", 4096), ("cublas", 4096), ("graph", 4096), ("cublas-graph", 4096), ("epoch", 4096), ("epoch", 33),
     ("epoch-v1", 4096)],
    ids=["layers", "cublas", "graph", "cublas-graph", "epoch", "epoch-chunked", "epoch-v1"],
)  # fmt: skip
# float64 too in the full run; the quick loop (-m "not slow") takes every path in float32
@pytest.mark.parametrize("dtype,tol", [pytest.param("float64", 1e-10, marks=pytest.mark.slow), ("float32", 2e-4)])
def test_cuda_paths_agree_with_cpu(dtype, tol, path, fused_shared, monkeypatch):
    """Every way an epoch runs on CUDA trains as the CPU does. A shared buffer of 33 elements stages
    each fused product in chunks of 2-3 columns, with a padded row and a short last chunk; "epoch-v1"
    runs the fused kernel's reference version from benchmarks/variants in its place. 17 rows in
    batches of 5, two epochs (the simulator runs a Python thread per CUDA thread): one replay of 2
    batches, one of the 3rd, then a short batch."""
    from numba import config

    from gpubp.kernels import cuda as kc

    if path == "epoch-v1":
        from benchmarks.variants import cuda_fused_v1

        monkeypatch.setattr(kc, "train_batches", cuda_fused_v1.train_batches)
        path = "epoch"
    if "cublas" in path:
        try:
            kc.check_cublas()
        except ImportError as e:
            pytest.skip(str(e))
    # in the simulator one Python thread per CUDA thread: fewer, and not a multiple of a warp
    threads = 37 if config.ENABLE_CUDASIM else 512
    tuning = gpubp.Tuning(graph_batches=2, fused_shared=fused_shared, fused_threads=threads)
    fit = dict(rows=17, epochs=2, momentum=0.5, weight_decay=0.01, lr_decay=0.5)
    a, ha = train_params("cpu", dtype=dtype, **fit)
    b, hb = train_params("cuda", path, dtype=dtype, tuning=tuning, **fit)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=tol)


def test_cublas_and_graph_paths_run_on_cuda_only():
    with pytest.raises(ValueError, match="cuBLAS products run on CUDA only"):
        gpubp.Network([4, 3], device="cpu", path="cublas")
    with pytest.raises(ValueError, match="CUDA graphs runs on CUDA only"):
        gpubp.Network([4, 3], device="cpu", path="graph")
    with pytest.raises(ValueError, match="cuBLAS products run on CUDA only"):
        gpubp.Network([4, 3], device="cpu", path=gpubp.Execution(products="cublas", replay=True))
    with pytest.raises(ValueError, match="unknown path 'fast'.*'cublas'"):
        gpubp.Network([4, 3], device="cpu", path="fast")
    with pytest.raises(ValueError, match="whole epoch in one call runs the Numba kernels"):
        gpubp.Execution(products="cublas", whole_epoch=True)


@pytest.mark.cuda
def test_epoch_path_refuses_layers_too_wide_for_it(rng):
    from gpubp.kernels import cuda as kc

    shared = gpubp.Tuning().fused_shared
    X, labels = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    wide = gpubp.Network([4, shared, 3], device="cuda", path="epoch", seed=0)
    before = wide.weights
    with pytest.raises(ValueError, match=r"path='epoch'\) cannot train layers of \[4, 4096, 3\] with batches of 8"):
        wide.fit(X, labels, epochs=1, batch_size=8)
    for a, b in zip(wide.weights, before):
        np.testing.assert_array_equal(a, b)
    auto = gpubp.Network([4, shared, 3], device="cuda", seed=0)
    assert auto._schedule.execution(8) == gpubp.Execution()
    assert kc.fused.fits(8, [4, 2000, 3]) and not kc.fused.fits(100, [4, 2000, 3])


@pytest.mark.cuda
def test_cuda_api_matches_cpu(rng):
    X, labels = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    nets = [gpubp.Network([4, 3, 3], dtype="float64", device=d, seed=2) for d in ("cpu", "cuda")]
    assert nets[1].device == "cuda"
    for g_cpu, g_cuda in zip(*(n.gradients(X, labels)[0] for n in nets)):
        np.testing.assert_allclose(g_cuda, g_cpu, rtol=1e-10)
    np.testing.assert_allclose(nets[1].predict(X), nets[0].predict(X), rtol=1e-12)
    for key in ("loss", "accuracy"):
        assert nets[1].evaluate(X, labels)[key] == pytest.approx(nets[0].evaluate(X, labels)[key], rel=1e-10)
    for n in nets:
        n.step(X, labels, lr=1.0)
    np.testing.assert_allclose(nets[1].weights[0], nets[0].weights[0], rtol=1e-10)


def test_same_seed_same_result():
    a, ha = train_params("cpu", dtype="float32")
    b, hb = train_params("cpu", dtype="float32")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert ha["loss"] == hb["loss"]
    c, _ = train_params("cpu", dtype="float32", shuffle=False)
    assert not np.array_equal(a[0], c[0])


def test_init_statistics():
    net = gpubp.Network([400, 300, 10], init="scaled", seed=1, device="cpu", dtype="float64")
    assert net.weights[0].shape == (300, 400) and net.biases[0].shape == (300,)
    assert np.std(net.weights[0]) == pytest.approx(1 / np.sqrt(400), rel=0.02)
    assert np.std(net.biases[0]) == pytest.approx(1, rel=0.1)
    net = gpubp.Network([400, 300, 10], init="standard", seed=1, device="cpu")
    assert np.std(net.weights[0]) == pytest.approx(1, rel=0.02)


def test_learns_xor():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    Y = np.array([0, 1, 1, 0])
    net = gpubp.Network(
        [2, 4, 1], activation="tanh", output_activation="sigmoid", loss="cross_entropy", device="cpu", seed=0
    )
    net.fit(X, Y, epochs=2000, batch_size=4, lr=1.0)
    out = net.predict(X)[:, 0]
    assert net.evaluate(X, Y)["accuracy"] == 1.0
    assert (np.abs(out - Y) < 0.2).all(), out


def test_learns_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X, y = digits.data / 16.0, digits.target
    net = gpubp.Network([64, 30, 10], device="cpu", seed=0)
    history = net.fit(X[:1500], y[:1500], epochs=20, batch_size=10, lr=3.0, validation=(X[1500:], y[1500:]))
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["val_accuracy"]) == 20 and all(s > 0 for s in history["seconds"])
    # the textbook network on digits scores about 0.93-0.95 on the held-out rows
    assert net.evaluate(X[1500:], y[1500:])["accuracy"] >= 0.9


def test_callback_stops_training(rng):
    net = gpubp.Network([3, 2], device="cpu")
    seen = []
    history = net.fit(
        rng.standard_normal((8, 3)),
        rng.integers(0, 2, 8),
        epochs=10,
        callback=lambda epoch, rec: seen.append(rec["loss"]) or epoch < 3,
    )
    assert len(seen) == 3 and history["epoch"] == [1, 2, 3]


def test_progress_reports_samples(rng):
    calls = []
    net = gpubp.Network([3, 2], device="cpu")
    net.fit(
        rng.standard_normal((1000, 3)),
        rng.integers(0, 2, 1000),
        epochs=1,
        batch_size=7,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (1000, 1000) and len(calls) > 10
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


def test_divergence_stops_with_last_finite_parameters(rng):
    X, Y = rng.standard_normal((50, 4)) * 10, rng.standard_normal((50, 2)) * 10
    net = gpubp.Network([4, 16, 2], activation="relu", output_activation="linear", device="cpu", seed=0)
    net.fit(X, Y, epochs=1, batch_size=5, lr=1e-4)
    before = net.weights
    with pytest.raises(gpubp.TrainingDiverged, match="epoch 1.*smaller learning rate"):
        net.fit(X, Y, epochs=5, batch_size=5, lr=1e3)
    for a, b in zip(net.weights, before):
        np.testing.assert_array_equal(a, b)


# -- device selection ------------------------------------------------------------------------------


def test_auto_never_picks_the_simulator(monkeypatch):
    monkeypatch.setattr(backends, "simulator_enabled", lambda: True)
    monkeypatch.setattr(backends, "cuda_status", lambda: (True, "Numba's CUDA simulator"))
    assert gpubp.Network([2, 2]).device == "cpu"


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backends, "cuda_status", lambda: (False, "no CUDA driver or GPU found by Numba"))
    with pytest.raises(RuntimeError, match="device='cuda' but no CUDA driver"):
        gpubp.Network([2, 2], device="cuda")
    assert gpubp.Network([2, 2], device="auto").device == "cpu"


def test_auto_logs_its_choice(caplog):
    with caplog.at_level("INFO", logger="gpubp"):
        gpubp.Network([2, 2])
    assert "device='auto' uses cpu" in caplog.text


# -- files -------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, rng):
    net = gpubp.Network(
        [5, 4, 3],
        activation="relu",
        output_activation="softmax",
        loss="log_likelihood",
        dtype="float64",
        device="cpu",
        seed=4,
    )
    path = tmp_path / "model.npz"
    net.save(path)
    back = gpubp.Network.load(path, device="cpu")
    assert (back.sizes, back.activation, back.output_activation, back.loss, back.dtype) == (
        net.sizes,
        net.activation,
        net.output_activation,
        net.loss,
        net.dtype,
    )
    X = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_saved_momentum_state_resumes_training_exactly(tmp_path, rng, device):
    """fit 2 epochs == fit 1, save, load, fit 1: the velocity travels with the parameters."""
    X, labels = rng.uniform(0, 1, (12, 4)), rng.integers(0, 3, 12)
    settings = dict(batch_size=4, lr=0.5, momentum=0.9, weight_decay=0.01, shuffle=False)
    whole = gpubp.Network([4, 5, 3], dtype="float64", device=device, seed=3)
    whole.fit(X, labels, epochs=2, **settings)
    half = gpubp.Network([4, 5, 3], dtype="float64", device=device, seed=3)
    half.fit(X, labels, epochs=1, **settings)
    half.save(tmp_path / "half.npz")
    with np.load(tmp_path / "half.npz") as data:
        assert {"vw0", "vw1", "vb0", "vb1"} <= set(data.files)
        assert np.abs(data["vw1"]).max() > 0
    resumed = gpubp.Network.load(tmp_path / "half.npz", device=device)
    assert resumed.epochs_trained == 1
    resumed.fit(X, labels, epochs=1, **settings)
    assert resumed.epochs_trained == whole.epochs_trained == 2
    for a, b in zip(resumed.weights + resumed.biases, whole.weights + whole.biases):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # An untrained network has no momentum state to keep: the file holds the parameters only.
    gpubp.Network([4, 5, 3], device="cpu", seed=3).save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        assert sorted(data.files) == ["b0", "b1", "config", "format", "w0", "w1"]


def test_load_rejects_a_training_state_that_does_not_fit(tmp_path):
    net = gpubp.Network([3, 2], device="cpu", seed=0)
    net.fit(np.eye(3), [0, 1, 0], epochs=1, batch_size=3, momentum=0.5)
    net.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as data:
        arrays = dict(data)
    config = json.loads(str(arrays["config"]))
    for name, value, problem in (
        ("vw0", np.zeros((3, 2)), "momentum state"),
        ("vb0", np.array([np.nan, 0.0]), "momentum state"),
        ("config", np.array(json.dumps({**config, "epochs_trained": -1})), "epochs_trained"),
    ):
        np.savez(tmp_path / "bad.npz", **{**arrays, name: value})
        with pytest.raises(ValueError, match=f"not a gpubp model.*{problem}"):
            gpubp.Network.load(tmp_path / "bad.npz", device="cpu")


def test_failed_save_leaves_existing_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    gpubp.Network([2, 3, 1], device="cpu", seed=1).save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        gpubp.Network([2, 3, 1], device="cpu", seed=2).save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.npz"]


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        gpubp.Network.load(tmp_path / "missing.npz")
    good = tmp_path / "good.npz"
    gpubp.Network([3, 2], device="cpu").save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, X=np.zeros(3))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    for bad in (truncated, foreign, junk):
        with pytest.raises(ValueError, match="not a gpubp model"):
            gpubp.Network.load(bad)


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(sizes=[3]), ValueError, "at least two layers"),
        (dict(sizes=[3, 0]), ValueError, "positive integer"),
        (dict(sizes=[3, 2.5]), ValueError, "positive integer"),
        (dict(sizes=[3, 2], activation="swish"), ValueError, "unknown activation 'swish'"),
        (dict(sizes=[3, 2], output_activation="gelu"), ValueError, "unknown output_activation 'gelu'"),
        (dict(sizes=[3, 2], loss="hinge"), ValueError, "unknown loss 'hinge'"),
        (dict(sizes=[3, 2], init="xavier"), ValueError, "unknown init 'xavier'"),
        (dict(sizes=[3, 2], dtype="float16"), ValueError, "unknown dtype"),
        (dict(sizes=[3, 2], device="tpu"), ValueError, "unknown device 'tpu'"),
        (dict(sizes=[3, 2, 2], activation="softmax"), ValueError, "output layer only"),
        (dict(sizes=[3, 2], loss="log_likelihood"), ValueError, "does not fit output_activation 'sigmoid'"),
        (dict(sizes=[3, 2], loss="cross_entropy", output_activation="relu"), ValueError, "does not fit"),
    ],
)
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        gpubp.Network(**kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="do not chain"):
        gpubp.Network.from_params([np.zeros((3, 2)), np.zeros((2, 4))], [np.zeros(3), np.zeros(2)])
    with pytest.raises(ValueError, match="finite"):
        gpubp.Network.from_params([np.full((3, 2), np.nan)], [np.zeros(3)])


@pytest.fixture
def net():
    return gpubp.Network([3, 4, 2], device="cpu")


X_OK = np.zeros((5, 3))


@pytest.mark.parametrize(
    "X,Y,error,match",
    [
        (np.zeros((5, 4)), np.zeros(5, int), ValueError, r"shape \(n, 3\)"),
        (np.zeros(3), np.zeros(1, int), ValueError, r"shape \(n, 3\)"),
        (np.zeros((0, 3)), np.zeros(0, int), ValueError, r"n >= 1"),
        (np.array([[0, np.nan, 0]] * 5), np.zeros(5, int), ValueError, "X contains NaN or inf"),
        (np.array([["a", "b", "c"]] * 5), np.zeros(5, int), TypeError, "real numbers"),
        (X_OK, np.zeros(4, int), ValueError, "one row per sample"),
        (X_OK, np.array([0, 1, 2, 0, 1]), ValueError, "label 2 at row 2 is out of range for 2 outputs"),
        (X_OK, np.array([0, 1, -1, 0, 1]), ValueError, "label -1 at row 2 is out of range"),
        (X_OK, np.zeros(5), TypeError, "must be integers"),
        (X_OK, np.zeros((5, 3)), ValueError, r"targets of shape \(5, 2\)"),
        (X_OK, np.full((5, 2), np.inf), ValueError, "Y contains NaN or inf"),
    ],
)
def test_bad_data(net, X, Y, error, match):
    for call in (lambda: net.fit(X, Y, epochs=1), lambda: net.gradients(X, Y), lambda: net.evaluate(X, Y)):
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=0), "lr must be a positive number, got 0"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(lr=float("nan")), "lr must be a positive number"),
        (dict(lr="0.1"), "lr must be a positive number, got '0.1'"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=2.5), "batch_size must be a positive integer, got 2.5"),
        (dict(momentum=1.0), r"momentum must be a number in \[0, 1\), got 1.0"),
        (dict(weight_decay=-1.0), "weight_decay must be a number >= 0"),
        (dict(shuffle="yes"), "shuffle must be True or False"),
        (dict(callback=3), "callback must be None or a callable"),
        (dict(validation=(np.zeros((2, 3)), np.array([0, 5]))), "label 5"),
    ],
)
def test_bad_training_settings(net, kwargs, match):
    before = net.weights
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X_OK, np.zeros(5, int), **kwargs)
    for a, b in zip(net.weights, before):  # refused before any work started
        np.testing.assert_array_equal(a, b)


def test_targets_must_fit_the_loss():
    net = gpubp.Network([3, 2], loss="cross_entropy", device="cpu")
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]"):
        net.gradients(X_OK, np.full((5, 2), 2.0))
    net = gpubp.Network([3, 2], output_activation="softmax", loss="log_likelihood", device="cpu")
    with pytest.raises(ValueError, match="sum to 1"):
        net.gradients(X_OK, np.full((5, 2), 0.2))


def test_lr_decay_scales_each_epoch(rng):
    """Epoch e with lr * decay**(e-1) equals a fresh fit at that learning rate, epoch by epoch."""
    X, labels = rng.standard_normal((12, 3)), rng.integers(0, 2, 12)
    kw = dict(device="cpu", dtype="float64", seed=9)
    net = gpubp.Network([3, 4, 2], **kw)
    history = net.fit(X, labels, epochs=3, batch_size=4, lr=0.8, lr_decay=0.5, shuffle=False)
    assert history["lr"] == [0.8, 0.4, 0.2]
    stepwise = gpubp.Network([3, 4, 2], **kw)
    for lr in (0.8, 0.4, 0.2):
        stepwise.fit(X, labels, epochs=1, batch_size=4, lr=lr, shuffle=False)
    for a, b in zip(net.weights, stepwise.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="lr_decay"):
        net.fit(X, labels, lr_decay=1.5)


@pytest.mark.cuda
def test_gpu_arrays_are_used_in_place(rng):
    """X already on the GPU (a Numba device array, or CuPy if installed) trains like host X."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        pytest.skip("the CUDA simulator has no __cuda_array_interface__; runs on a real GPU")
    X, labels = rng.standard_normal((23, 6)).astype(np.float32), rng.integers(0, 3, 23)
    host = gpubp.Network([6, 5, 3], device="cuda", seed=1)
    host.fit(X, labels, epochs=2, batch_size=5)
    inputs = [cuda.to_device(X)]
    try:
        import cupy

        inputs.append(cupy.asarray(X))
    except ImportError:
        pass
    for X_gpu in inputs:
        net = gpubp.Network([6, 5, 3], device="cuda", seed=1)
        net.fit(X_gpu, labels, epochs=2, batch_size=5)
        np.testing.assert_allclose(net.weights[0], host.weights[0], rtol=1e-6)
        np.testing.assert_allclose(net.predict(X_gpu), host.predict(X), rtol=1e-6)
    with pytest.raises(TypeError, match="float64 on the GPU"):
        gpubp.Network([6, 5, 3], device="cuda").fit(cuda.to_device(X.astype(np.float64)), labels)
    with pytest.raises(TypeError, match="GPU array but this network runs on the CPU"):
        gpubp.Network([6, 5, 3], device="cpu").fit(cuda.to_device(X), labels)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gpubp.Network([6, 5, 3], device="cuda").fit(cuda.to_device(bad), labels)


@pytest.mark.cuda
def test_gpu_targets_are_used_in_place_and_a_graph_serves_every_fit_on_them(rng, monkeypatch):
    """Fits on the same GPU arrays (each fit wraps them anew) replay one recording, and train as
    host arrays do."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        pytest.skip("the CUDA simulator has no __cuda_array_interface__; runs on a real GPU")
    X, labels = rng.standard_normal((23, 6)), rng.integers(0, 3, 23)
    Y = np.eye(3)[labels]
    X_gpu, Y_gpu = cuda.to_device(X), cuda.to_device(Y)
    tuning = gpubp.Tuning(graph_batches=2)
    net = gpubp.Network([6, 5, 3], dtype="float64", device="cuda", seed=1, path="graph", tuning=tuning)
    used = net._targets(Y_gpu, 23)
    assert used.__cuda_array_interface__["data"][0] == Y_gpu.__cuda_array_interface__["data"][0]
    net.fit(X_gpu, Y_gpu, epochs=1, batch_size=5)
    graphs = dict(net._schedule.graphs.graphs)
    net.fit(X_gpu, Y_gpu, epochs=1, batch_size=5)
    assert set(graphs) == {2} and net._schedule.graphs.graphs[2] is graphs[2]  # 4 full batches: 2 replays of 2
    host = gpubp.Network([6, 5, 3], dtype="float64", device="cuda", seed=1, path="graph", tuning=tuning)
    host.fit(X, labels, epochs=1, batch_size=5)
    host.fit(X, labels, epochs=1, batch_size=5)
    for a, b in zip(net.weights + net.biases, host.weights + host.biases):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_training_recovers_after_divergence(rng):
    """The momentum state is restored with the parameters, so a smaller lr then trains normally."""
    X, Y = rng.uniform(0, 1, (60, 4)), rng.uniform(0, 100, (60, 2))
    net = gpubp.Network([4, 8, 2], activation="linear", device="cpu", seed=0)
    with pytest.raises(gpubp.TrainingDiverged):
        net.fit(X, Y, epochs=3, lr=10.0, momentum=0.9)
    history = net.fit(X, Y / 100, epochs=2, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    assert all(np.isfinite(history["loss"]))
    assert all(np.isfinite(w).all() for w in net.weights)


def test_step_that_diverges_changes_nothing(rng):
    X, Y = rng.uniform(0, 1, (5, 4)), rng.uniform(0, 1, (5, 2))
    net = gpubp.Network([4, 3, 2], activation="linear", device="cpu", dtype="float32", seed=0)
    before = net.weights
    with pytest.raises(gpubp.TrainingDiverged, match="unchanged"):
        net.step(X * 1e30, Y * 1e30, lr=1e30)
    for a, b in zip(net.weights, before):
        np.testing.assert_array_equal(a, b)


def test_softmax_needs_two_outputs():
    with pytest.raises(ValueError, match="single output"):
        gpubp.Network([4, 1], output_activation="softmax", loss="log_likelihood")


def test_load_rejects_arrays_directories_and_malformed_models(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a gpubp model"):
        gpubp.Network.load(tmp_path / "array.npy")
    with pytest.raises(ValueError, match="not a file"):
        gpubp.Network.load(tmp_path)
    for config in ('{"sizes": [4]}', "[1, 2]", '{"sizes": [2, 1], "loss": "quadratic"}'):
        path = tmp_path / "bad.npz"
        np.savez(path, format=np.array("gpubp-model-1"), config=np.array(config), w0=np.zeros((1, 2)), b0=np.zeros(1))
        with pytest.raises(ValueError, match="not a gpubp model"):
            gpubp.Network.load(path)


def test_saved_model_is_readable_by_others(tmp_path):
    path = tmp_path / "model.npz"
    old = os.umask(0o022)
    try:
        gpubp.Network([2, 2], device="cpu").save(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpubp.Network([2, 2], device="cpu").save(tmp_path / "missing" / "model.npz")


@pytest.mark.cuda
def test_auto_path_fuses_small_networks_on_cuda():
    small = gpubp.Network([784, 30, 10], device="cuda")
    assert small.path == "auto" and small._schedule.execution(10) == gpubp.Execution(whole_epoch=True)
    big = gpubp.Network([784, 1024, 1024, 10], device="cuda")
    assert 1024 * big._schedule.n_weights > gpubp.Tuning().fused_work
    assert big._schedule.execution(1024) == gpubp.Execution()
    cpu = gpubp.Network([4, 3], device="cpu")
    assert cpu.path == "auto" and cpu._schedule.execution(1000) == gpubp.Execution(whole_epoch=True)
    with pytest.raises(ValueError, match="unknown path 'fast'"):
        gpubp.Network([4, 3], device="cpu", path="fast")


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_nan_output_is_never_correct(outputs):
    """float32 overflow: z^1 = 1e30 x 1e10 = inf, so z^2 = inf - inf = NaN for every output."""
    W = [np.array([[1e30], [1e30]]), np.array([[1.0, -1.0]] * outputs)]
    b = [np.zeros(2), np.zeros(outputs)]
    net = gpubp.Network.from_params(W, b, activation="linear", dtype="float32", device="cpu")
    X = np.full((3, 1), 1e10)
    assert np.isnan(net.predict(X)).all()
    labels = np.zeros((3, 1)) if outputs == 1 else np.array([0, 1, 0])
    assert net.evaluate(X, labels)["accuracy"] == 0


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["graph", "cublas-graph"])
def test_every_launch_of_a_recording_goes_to_the_recording_stream(path, rng, monkeypatch):
    """A launch (or GEMM) that forgot the stream would run once while recording, not be recorded,
    and silently be missing from every replay; the simulator, which records nothing, cannot show
    that by results, so this spies on the stream each launch is given."""
    from numba import config

    if not config.ENABLE_CUDASIM:
        pytest.skip("spies on the simulator's kernel launches")
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from gpubp.graphs import Recordings
    from gpubp.kernels.cuda import cublas

    X, labels = rng.standard_normal((12, 6)), rng.integers(0, 3, 12)
    net = gpubp.Network([6, 5, 4, 3], activation="tanh", output_activation="softmax", loss="log_likelihood",
                        dtype="float64", device="cuda", path=path)  # fmt: skip
    s = net._schedule
    Xd, Yd = net._inputs(X), net._targets(labels, 12)
    recordings = Recordings(s)
    recordings.order = s.backend.to_device(np.arange(12, dtype=np.int64))

    streams = []
    launch, gemm = FakeCUDAKernel.__getitem__, cublas._gemm

    def spy_launch(kernel, configuration):
        streams.append(configuration[2] if len(configuration) > 2 else 0)
        return launch(kernel, configuration)

    def spy_gemm(*args):
        streams.append(args[6] if len(args) > 6 else 0)
        gemm(*args)

    monkeypatch.setattr(FakeCUDAKernel, "__getitem__", spy_launch)
    monkeypatch.setattr(cublas, "_gemm", spy_gemm)
    recording = object()
    recordings.batches(s.engine("cublas" if "cublas" in path else "numba"), Xd, Yd, 4, 2, recording)
    # per batch: one gather, advance, 3 forwards and a softmax, BP1, 3 x BP4 with BP3, 2 BP2, one update
    assert len(streams) >= 2 * 13
    assert all(stream is recording for stream in streams)


@pytest.mark.cuda
@pytest.mark.slow
def test_graph_path_records_once_per_fit_even_with_validation(rng, monkeypatch):
    """Evaluating the validation set between epochs must not evict the buffers the graphs read."""
    X, labels = rng.standard_normal((23, 6)), rng.integers(0, 3, 23)
    net = gpubp.Network([6, 5, 3], dtype="float64", device="cuda", seed=1, path="graph",
                        tuning=gpubp.Tuning(graph_batches=3))  # fmt: skip
    graphs = []
    net.fit(X, labels, epochs=3, batch_size=5, validation=(X[:7], labels[:7]),
            callback=lambda epoch, record: graphs.append(dict(net._schedule.graphs.graphs)))  # fmt: skip
    assert set(graphs[0]) == {3, 1}  # 4 full batches: a replay of 3, then one of the last full batch
    assert all(g[b] is graphs[0][b] for g in graphs for b in (3, 1))


@pytest.mark.parametrize(
    "path,batch_size,pinned",
    [
        ("epoch", 5, ([0.023407452545173058, 0.029189980514718994, 0.03443335628956166],
                      [0.253193135061606, -0.06992222657385305], [0.2608363279720453, -1.0016696396854547])),
        ("layers", 40, ([0.0009660876364509857, 0.08530178500734982, -0.07298381046312027],
                        [0.20719601140325425, -0.06129629588146983], [0.8368084452759662, -1.0269060023891499])),
    ],
)  # fmt: skip
def test_the_same_seed_trains_to_the_same_parameters_as_gpubp_0_1(path, batch_size, pinned):
    """Parameters gpubp 0.1 (before the scheduler was restructured) trained to from this seed, on
    the small-batch loops and on the BLAS branch (40 rows), with momentum, weight decay and lr decay.
    The restructure reproduced them bitwise on the machine that pinned them; 1e-12 leaves room for
    another CPU's vector width and BLAS."""
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((97, 12)), rng.integers(0, 4, 97)
    net = gpubp.Network([12, 9, 7, 4], activation="tanh", output_activation="softmax", loss="log_likelihood",
                        dtype="float64", device="cpu", seed=7, path=path)  # fmt: skip
    net.fit(X, labels, epochs=2, batch_size=batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3, lr_decay=0.9)
    got = (net.weights[0][0, :3], net.weights[2][3, -2:], net.biases[1][:2])
    for g, p in zip(got, pinned):
        np.testing.assert_allclose(g, p, rtol=1e-12, atol=1e-15)


def test_step_is_plain_sgd_and_leaves_the_momentum_state(rng):
    """step() = W - lr dC/dW with no momentum or decay, and the velocity fit keeps is untouched."""
    X, labels = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    net = gpubp.Network([5, 4, 3], dtype="float64", device="cpu", seed=1)
    net.fit(X, labels, epochs=1, batch_size=3, lr=0.5, momentum=0.9)
    velocity = net._schedule.host("velocity")
    assert np.abs(velocity).max() > 0
    W, b = reference_step(net, X[:4], ref.onehot(labels[:4], 3), 0.3, ["sigmoid", "sigmoid"])
    net.step(X[:4], labels[:4], lr=0.3)
    for a, e in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(net._schedule.host("velocity"), velocity)


@pytest.mark.cuda
def test_gpu_input_gives_gpu_output_and_parameters_come_out_on_the_gpu(rng):
    """predict on X that lives on the GPU returns a GPU array (no host copy of the result), equal to
    predict on the same X from the host; device_parameters are copies on the GPU."""
    from numba import cuda

    X = rng.standard_normal((40, 6))
    net = gpubp.Network([6, 5, 3], output_activation="softmax", loss="log_likelihood", dtype="float64",
                        device="cuda", seed=4)  # fmt: skip
    out = net.predict(cuda.to_device(X))
    assert not isinstance(out, np.ndarray) and out.shape == (40, 3)
    host = out.get() if hasattr(out, "get") else out.copy_to_host()
    np.testing.assert_array_equal(host, net.predict(X))
    # in chunks of 16 rows (1024 in predict): each chunk lands in its rows of the device output
    chunked = net._schedule.predict(net._inputs(cuda.to_device(X)), cap=16, on_device=True)
    np.testing.assert_array_equal(chunked.copy_to_host(), host)
    np.testing.assert_allclose(host, ref.forward(net.weights, net.biases, X, ["sigmoid", "softmax"])[1][-1], rtol=1e-12)
    weights, biases = net.device_parameters()
    for got, want in zip(weights + biases, net.weights + net.biases):
        np.testing.assert_array_equal(got.get() if hasattr(got, "get") else got.copy_to_host(), want)
    with pytest.raises(TypeError, match="GPU array but this network runs on the CPU"):
        gpubp.Network([6, 5, 3], device="cpu").predict(cuda.to_device(X))
    with pytest.raises(TypeError, match="for a network on CUDA"):
        gpubp.Network([6, 5, 3], device="cpu").device_parameters()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 7, 10, 16, 40, 70, 75])  # whole, by units (16, 40), halves (75: last kept)
def test_fit_is_a_loop_of_step_bitwise(dtype, batch):
    """On the CPU, fit(shuffle=False) over 3 epochs equals step() over the same batches, bit for bit
    (a 4-layer net, a short last batch), and step leaves the momentum state as it was."""
    rng = np.random.default_rng(5)
    X, labels = rng.random((150, 6)), rng.integers(0, 3, 150)
    kw = dict(activation="tanh", output_activation="softmax", loss="log_likelihood", dtype=dtype, device="cpu")
    fitted = gpubp.Network([6, 9, 7, 3], seed=4, **kw)
    fitted.fit(X, labels, epochs=3, batch_size=batch, lr=0.3, shuffle=False)
    stepped = gpubp.Network([6, 9, 7, 3], seed=4, **kw)
    for _ in range(3):
        for s in range(0, 150, batch):
            stepped.step(X[s : s + batch], labels[s : s + batch], 0.3)
    for a, b in zip(fitted.weights + fitted.biases, stepped.weights + stepped.biases, strict=True):
        np.testing.assert_array_equal(a, b)
    assert stepped.state_dict().velocity is None  # step() never touched it
