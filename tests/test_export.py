"""ONNX export (gpubp.export, Network.to_onnx, `gpubp export`): run by onnxruntime, held to predict and
to the numpy float64 reference, and checked by onnx.checker."""

import os
import sys

import numpy as np
import pytest
import reference as ref

import gpubp
from gpubp.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}


def assert_close(actual, expected, dtype):
    """Equal within the dtype's tolerance, absolute errors measured against the largest output (sums of
    products lose digits to cancellation in proportion to their terms, not to their result)."""
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (Y,) = session.run(["Y"], {"X": X})
    return Y


def reference_outputs(net, X):
    a = np.asarray(X, dtype=np.float64)
    acts = [net.activation] * (len(net.sizes) - 2) + [net.output_activation]
    for W, b, name in zip(net.weights, net.biases, acts):
        a = ref.f(a @ W.astype(np.float64).T + b, name)
    return a


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", ref.ACTIVATIONS)
@pytest.mark.parametrize("loss,output", ref.LOSS_OUTPUTS)
def test_onnxruntime_matches_predict(tmp_path, rng, dtype, hidden, loss, output):
    net = gpubp.Network([5, 7, 6, 4], hidden, output, loss, init="standard", dtype=dtype, device="cpu", seed=3)
    X = rng.standard_normal((9, 5)).astype(dtype)
    path = tmp_path / "m.onnx"
    net.to_onnx(path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    Y = run_onnx(path, X)
    assert Y.dtype == np.dtype(dtype) and Y.shape == (9, 4)
    assert_close(Y, net.predict(X), dtype)
    assert_close(Y, reference_outputs(net, X), dtype)


def test_graph_is_one_gemm_and_activation_per_layer(tmp_path):
    net = gpubp.Network([3, 4, 5, 2], "relu", "softmax", "log_likelihood", device="cpu")
    net.to_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    g = model.graph
    assert [n.op_type for n in g.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"Gemm": {"transB": 1}, "Softmax": {"axis": -1}}.get(node.op_type, {})
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for l, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        np.testing.assert_array_equal(inits[f"W{l}"], W)  # (n_out, n_in), as gpubp stores it
        np.testing.assert_array_equal(inits[f"b{l}"], b)
    assert [i.name for i in g.input] == ["X"] and [o.name for o in g.output] == ["Y"]
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 3


def test_linear_layers_have_no_activation_node(tmp_path, rng):
    net = gpubp.Network([3, 4, 2], "linear", device="cpu", dtype="float64")
    net.to_onnx(tmp_path / "m.onnx")
    assert [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node] == ["Gemm", "Gemm"]
    X = rng.standard_normal((4, 3))
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", X), net.predict(X), rtol=1e-12)


def test_dtype_override(tmp_path, rng):
    net = gpubp.Network([3, 4, 2], "tanh", dtype="float64", device="cpu")
    net.to_onnx(tmp_path / "m.onnx", dtype="float32")
    X = rng.standard_normal((5, 3)).astype(np.float32)
    Y = run_onnx(tmp_path / "m.onnx", X)
    assert Y.dtype == np.float32
    np.testing.assert_allclose(Y, net.predict(X), **TOL["float32"])
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        net.to_onnx(tmp_path / "h.onnx", dtype="float16")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous model")
    net = gpubp.Network([3, 4, 2], device="cpu")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        net.to_onnx(path)
    assert path.read_bytes() == b"the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left


def test_bad_paths(tmp_path):
    net = gpubp.Network([3, 4, 2], device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        net.to_onnx(tmp_path / "no" / "m.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        net.to_onnx(tmp_path)


def test_cli_export(tmp_path, capsys, rng):
    net = gpubp.Network([6, 5, 3], "sigmoid", "softmax", "log_likelihood", device="cpu", seed=2)
    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    net.save(model)
    assert main(["export", str(model), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    X = rng.standard_normal((7, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, X), net.predict(X), **TOL["float32"])
    assert main(["export", str(model), str(out), "--dtype", "float64"]) == 0
    np.testing.assert_allclose(run_onnx(out, X.astype(np.float64)), net.predict(X), **TOL["float32"])


def test_cli_export_refusals(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.npz"
    gpubp.Network([3, 4, 2], device="cpu").save(model)
    before = model.read_bytes()
    assert main(["export", str(model), str(model)]) == 2
    assert "is the model itself" in capsys.readouterr().err
    assert model.read_bytes() == before
    assert main(["export", str(tmp_path / "none.npz"), str(tmp_path / "x.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["export", str(model), str(tmp_path / "no" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert main(["export", str(model), str(tmp_path / "x.onnx")]) == 2
    assert "gpubp[onnx]" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("after_rename", [False, True])
def test_cli_export_interrupted_around_its_rename(tmp_path, capsys, monkeypatch, after_rename):
    """Ctrl-C just before or just after the rename: the old file or the whole new one, exit 130, and
    no complaint about a temporary file already renamed (the export writes through modelfile's writer)."""
    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    net = gpubp.Network([3, 4, 2], device="cpu", seed=1)
    net.save(model)
    out.write_bytes(b"the previous model")
    real = os.replace

    def interrupted(src, dst):
        if after_rename:
            real(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    assert main(["export", str(model), str(out)]) == 130
    err = capsys.readouterr().err
    assert err == "gpubp: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.onnx"]  # no temporary file left
    if after_rename:
        X = np.eye(3, dtype=np.float32)
        np.testing.assert_allclose(run_onnx(out, X), net.predict(X), **TOL["float32"])
    else:
        assert out.read_bytes() == b"the previous model"
