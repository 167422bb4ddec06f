"""End-to-end tests of the ``gpubp`` command, run in-process through ``gpubp.cli.main``.

Small data only (scikit-learn's digits, or tiny IDX folders and .npz files written here), small
networks, 1-2 epochs, the CPU kernels.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import gpubp
from gpubp import data
from gpubp.cli import main
from gpubp.config import PARAMETERS

CPU = ["--device", "cpu"]


def run(capsys, *argv):
    """main(argv) -> (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def idx_folder(tmp_path):
    """A tiny MNIST-layout folder: 4x3-pixel images of 3 classes, 60 train / 12 test."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, n in (("train", 60), ("t10k", 12)):
        labels = np.arange(n) % 3
        images = (rng.random((n, 4, 3)) * 60 + labels[:, None, None] * 90).astype(np.uint8)
        data.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        data.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder


@pytest.fixture
def npz_file(tmp_path):
    rng = np.random.default_rng(1)
    y = np.arange(80) % 2
    X = rng.random((80, 5)) + y[:, None]
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A 64,16,10 model trained for 2 epochs on digits, saved by `gpubp train --save`."""
    pytest.importorskip("sklearn")
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    assert main(["train", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--save", str(path)] + CPU) == 0
    return path


# ------------------------------------------------------------------------------------------ train


def test_train_digits_json_save_plot(capsys, tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    model, png = tmp_path / "best.npz", tmp_path / "curves.png"
    code, out, err = run(
        capsys, "train", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--seed", "3",
        "--save", model, "--plot", png, "--json", *CPU,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)  # stdout holds the JSON summary alone
    assert summary["device"] == "cpu" and summary["sizes"] == [64, 16, 10]
    assert summary["dataset"] == "digits"
    assert summary["history"]["epoch"] == [1, 2]
    for key in ("loss", "val_loss", "val_accuracy", "seconds"):
        assert len(summary["history"][key]) == 2
    assert 0.5 < summary["test_accuracy"] <= 1 and summary["test_loss"] > 0
    assert summary["best_epoch"] in (1, 2) and summary["saved"] == str(model)
    assert summary["seconds"] > 0 and summary["interrupted"] is False
    # the human-readable lines went to stderr
    assert "epoch 1/2" in err and "test: loss" in err and "best epoch" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    net = gpubp.Network.load(model, device="cpu")
    assert net.sizes == [64, 16, 10]


def test_train_idx_folder_text_output(capsys, idx_folder):
    code, out, err = run(capsys, "train", "--data", idx_folder, "--epochs", "2", "--lr", "1.0", *CPU)
    assert code == 0, err
    assert "network 12,30,3" in out  # 4x3 pixels in, 3 classes out, the textbook hidden 30
    assert "10 validation" in out  # a sixth of 60 training images
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val_acc" in out
    assert "test: loss" in out and "accuracy" in out
    assert "best epoch" in out and "device cpu" in out


def test_train_default_dataset_via_env(capsys, idx_folder, monkeypatch):
    # the default data set is Fashion-MNIST, found through GPUBP_FASHION_MNIST: here a folder too
    # small for its 10,000 validation images
    monkeypatch.setenv(data.ENV_FASHION_MNIST, str(idx_folder))
    code, out, err = run(capsys, "train", "--epochs", "1", *CPU)
    assert_usage_error(code, err, "fashion-mnist: validation=10000 must be from 0 to 59")


def test_train_npz_options(capsys, npz_file):
    code, out, err = run(
        capsys, "train", "--data", npz_file, "--hidden", "4,3", "--epochs", "2", "--activation", "tanh",
        "--output-activation", "softmax", "--loss", "log-likelihood", "--momentum", "0.5",
        "--weight-decay", "1e-4", "--dtype", "float32", "--init", "standard", "--lr", "0.1", "--json", *CPU,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sizes"] == [5, 4, 3, 2] and summary["dtype"] == "float32"
    assert summary["output_activation"] == "softmax" and summary["loss_function"] == "log_likelihood"


def test_save_and_resume(capsys, tmp_path, digits_model):
    model = tmp_path / "resumed.npz"
    code, out, err = run(
        capsys, "train", "--dataset", "digits", "--resume", digits_model, "--epochs", "1", "--save", model,
        "--json", *CPU,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sizes"] == [64, 16, 10] and summary["resumed_from"] == str(digits_model)
    assert "resumed from" in err
    assert model.exists()


def test_resume_goes_on_with_the_lr_schedule(capsys, tmp_path):
    """2 epochs, then 1 resumed, trains with lr, lr d, lr d^2: as 3 epochs in one run."""
    first = tmp_path / "first.npz"
    settings = ["--dataset", "digits", "--lr", "0.4", "--lr-decay", "0.5", "--momentum", "0.5", "--json", *CPU]
    code, out, err = run(capsys, "train", "--hidden", "8", "--epochs", "2", "--save", first, *settings)
    assert code == 0, err
    saved_epoch = json.loads(out)["best_epoch"]
    assert gpubp.Network.load(first, device="cpu").epochs_trained == saved_epoch
    code, out, err = run(capsys, "train", "--resume", first, "--epochs", "1", *settings)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs_before"] == saved_epoch
    assert summary["history"]["lr"] == [pytest.approx(0.4 * 0.5**saved_epoch)]
    assert f"after {saved_epoch} epochs, lr starts at {0.4 * 0.5**saved_epoch:.6g}" in err


def test_resume_refuses_a_model_that_does_not_fit(capsys, idx_folder, digits_model):
    code, out, err = run(capsys, "train", "--data", idx_folder, "--resume", digits_model, *CPU)
    assert_usage_error(code, err, "gpubp: error:", "64 inputs", "12 features")
    assert "epoch" not in out  # refused before training


def test_resume_with_architecture_options(capsys, digits_model):
    code, _, err = run(capsys, "train", "--dataset", "digits", "--resume", digits_model, "--hidden", "5")
    assert_usage_error(code, err, "usage:", "--resume", "drop --hidden")


def test_sizes_that_do_not_fit_the_data(capsys, idx_folder):
    code, out, err = run(capsys, "train", "--data", idx_folder, "--sizes", "784,30,10", *CPU)
    assert_usage_error(code, err, "784 inputs", "12 features")
    code, out, err = run(capsys, "train", "--data", idx_folder, "--sizes", "12,30,2", *CPU)
    assert_usage_error(code, err, "2 outputs", "3 classes")


def test_ctrl_c_stops_cleanly_after_saving(capsys, tmp_path, idx_folder, monkeypatch):
    fit = gpubp.Network.fit

    def interrupted_fit(self, *args, callback=None, **kwargs):
        def cb(epoch, record):
            callback(epoch, record)
            if epoch == 2:
                raise KeyboardInterrupt

        return fit(self, *args, callback=cb, **kwargs)

    monkeypatch.setattr(gpubp.Network, "fit", interrupted_fit)
    model = tmp_path / "m.npz"
    code, out, err = run(capsys, "train", "--data", idx_folder, "--epochs", "5", "--save", model, "--json", *CPU)
    assert code == 130
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["history"]["epoch"] == [1, 2]
    assert "interrupted during epoch 3" in err
    assert gpubp.Network.load(model, device="cpu").sizes == [12, 30, 3]


def test_diverging_training(capsys, idx_folder):
    code, out, err = run(
        capsys, "train", "--data", idx_folder, "--activation", "linear", "--lr", "1e30", "--epochs", "2", *CPU
    )
    assert code == 1
    assert "diverged" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ evaluate, predict


def test_evaluate(capsys, digits_model):
    code, out, err = run(capsys, "evaluate", digits_model, "--dataset", "digits", *CPU)
    assert code == 0, err
    assert "digits test: loss" in out and "accuracy" in out and "250 samples" in out
    code, out, err = run(capsys, "evaluate", digits_model, "--dataset", "digits", "--split", "val", "--json", *CPU)
    result = json.loads(out)
    assert result["n"] == 250 and result["split"] == "val" and 0 <= result["accuracy"] <= 1


def test_evaluate_model_that_does_not_fit(capsys, digits_model, npz_file):
    code, _, err = run(capsys, "evaluate", digits_model, "--data", npz_file, *CPU)
    assert_usage_error(code, err, "64 inputs", "5 features")


def test_predict(capsys, tmp_path, digits_model):
    X = data.load_digits().X_test[:7]
    np.save(tmp_path / "rows.npy", X)
    code, out, err = run(capsys, "predict", digits_model, "--data", tmp_path / "rows.npy", *CPU)
    assert code == 0, err
    labels = [int(v) for v in out.split()]
    assert len(labels) == 7 and all(0 <= v < 10 for v in labels)
    expected = np.argmax(gpubp.Network.load(digits_model, device="cpu").predict(X), axis=1)
    assert labels == expected.tolist()

    code, out, _ = run(capsys, "predict", digits_model, "--data", tmp_path / "rows.npy", "--out", tmp_path / "p.npy")
    assert code == 0 and out == ""
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), expected)
    code, _, _ = run(capsys, "predict", digits_model, "--data", tmp_path / "rows.npy", "--out", tmp_path / "p.txt")
    assert (tmp_path / "p.txt").read_text().split() == [str(v) for v in expected]


def test_predict_idx_images(capsys, tmp_path, digits_model):
    data.write_idx(tmp_path / "imgs", np.full((3, 8, 8), 255, dtype=np.uint8))
    code, out, err = run(capsys, "predict", digits_model, "--data", tmp_path / "imgs", *CPU)
    assert code == 0, err
    assert len(out.split()) == 3


def test_predict_wrong_width(capsys, tmp_path, digits_model):
    np.save(tmp_path / "rows.npy", np.zeros((2, 10)))
    code, _, err = run(capsys, "predict", digits_model, "--data", tmp_path / "rows.npy", *CPU)
    assert_usage_error(code, err, "64 inputs", "10 values per row", "rows.npy")


# ------------------------------------------------------------------------------------------ trace, info


def test_trace_worked_example(capsys):
    code, out, err = run(capsys, "trace")
    assert code == 0, err
    # Mazur's worked example: total error 0.298371109, w5 -> 0.35891648, w1 -> 0.149780716
    assert "C = 0.29837111" in out
    assert "[0.35891648, 0.40866619]" in out and "[0.14978072, 0.19956143]" in out
    assert "a^1 = sigma(z^1) = [0.59326999, 0.59688438]" in out
    for word in ("z^2", "delta^2", "delta^1", "dC/dW^1", "dC/db^2", "(BP1)", "(BP2)", "(BP3)", "(BP4)"):
        assert word in out


def test_trace_seed_and_weights_file(capsys, tmp_path, digits_model):
    code, out, err = run(capsys, "trace", "--sizes", "3,4,2", "--seed", "1", "--x", "1,0,0.5", "--lr", "0.1")
    assert code == 0, err
    assert "network 3,4,2" in out and "W^2" in out
    np.savez(tmp_path / "w.npz", w0=np.eye(2), b0=np.zeros(2))
    code, out, err = run(capsys, "trace", "--weights", tmp_path / "w.npz", "--loss", "cross-entropy")
    assert code == 0, err
    assert "network 2,2" in out and "cross_entropy" in out
    x = ",".join(["0.5"] * 64)
    y = ",".join(["0"] * 9 + ["1"])
    code, out, err = run(capsys, "trace", "--weights", digits_model, "--x", x, "--y", y, "--precision", "3")
    assert code == 0, err
    assert "network 64,16,10" in out


def test_trace_errors(capsys, tmp_path):
    code, _, err = run(capsys, "trace", "--x", "1,2,3")
    assert_usage_error(code, err, "--x needs 2")
    code, _, err = run(capsys, "trace", "--weights", "w.npz", "--seed", "1")
    assert_usage_error(code, err, "not allowed with")
    np.savez(tmp_path / "bad.npz", a=np.zeros(2))
    code, _, err = run(capsys, "trace", "--weights", tmp_path / "bad.npz")
    assert_usage_error(code, err, "bad.npz", "w0, b0")


def test_info(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0, err
    for word in ("gpubp", "numba", "numba-cuda", "numpy", "cupy", "GPU", "device='auto' runs on"):
        assert word in out
    code, out, _ = run(capsys, "info", "--json")
    report = json.loads(out)
    assert report["auto_device"] in ("cpu", "cuda") and "numba" in report


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "gpubp", "info"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "device='auto' runs on" in result.stdout


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--sizes", "784,30,10", "--hidden", "30"], "not allowed with"),
        (["train", "--dataset", "digits", "--data", "x"], "not allowed with"),
        (["train", "--dataset", "cifar"], "invalid choice"),
        # numbers are refused in Network.fit's words (gpubp.config.PARAMETERS)
        (["train", "--epochs", "0"], "argument --epochs: epochs must be a positive integer, got '0'"),
        (["train", "--batch-size", "x"], "batch_size must be a positive integer, got 'x'"),
        (["train", "--lr", "-1"], "lr must be a positive number, got '-1'"),
        (["train", "--lr", "nan"], "lr must be a positive number, got 'nan'"),
        (["train", "--momentum", "1"], "momentum must be a number in [0, 1), got '1'"),
        (["train", "--lr-decay", "0"], "lr_decay must be a number in (0, 1]"),
        (["train", "--weight-decay", "-1"], "weight_decay must be a number >= 0"),
        (["train", "--seed", "-1"], "seed must be None or a non-negative integer, got '-1'"),
        (["train", "--early-stopping", "0"], "early_stopping must be None or a positive integer"),
        (["trace", "--precision", "0"], "precision must be a positive integer"),
        (["trace", "--lr", "0"], "lr must be a positive number"),
        (["train", "--activation", "softmax"], "invalid choice"),  # softmax is an output's only
        (["train", "--loss", "cross-entropy", "--init", "glorot"], "invalid choice"),
        (["train", "--hidden", "30,x"], "expected integers"),
        (["train", "--activation", "swish"], "invalid choice"),
        (["train", "--device", "tpu"], "invalid choice"),
        (["train", "--dtype", "float16"], "invalid choice"),
        (["predict", "model.npz"], "--data"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors(capsys, argv, fragment):
    code, _, err = run(capsys, *argv)
    assert_usage_error(code, err, "usage:", fragment)


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--hidden" in out and "textbook" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"gpubp {gpubp.__version__}"


@pytest.mark.parametrize(
    "option, text",
    [("--epochs", "0"), ("--batch-size", "-3"), ("--lr", "-1"), ("--lr-decay", "2"), ("--momentum", "1"),
     ("--weight-decay", "-0.5"), ("--early-stopping", "0")],
)  # fmt: skip
def test_a_bad_number_is_refused_in_fits_words(capsys, option, text):
    """The command line and Network.fit check against the one table, gpubp.config.PARAMETERS."""
    key = option[2:].replace("-", "_")
    code, _, err = run(capsys, "train", option, text)
    value = int(text) if PARAMETERS[key].kind == "int" else float(text)
    net = gpubp.Network([2, 2], device="cpu")
    with pytest.raises(ValueError) as refused:
        net.fit(np.zeros((4, 2)), np.zeros((4, 2)), **{key: value})
    words = str(refused.value).split(", got ")[0]  # the CLI shows the text it was given
    assert_usage_error(code, err, f"argument {option}: {words}, got {text!r}")


def test_corrupt_idx_file(capsys, idx_folder):
    path = idx_folder / "train-images-idx3-ubyte.gz"
    images = data.read_idx(path)
    path.write_bytes(b"\x01\x02" + images.tobytes())  # no IDX magic number
    code, out, err = run(capsys, "train", "--data", idx_folder, *CPU)
    assert_usage_error(code, err, "gpubp: error:", str(path), "not an IDX file")
    assert err.count("\n") == 1  # one line


def test_truncated_idx_file(capsys, idx_folder):
    path = idx_folder / "t10k-images-idx3-ubyte.gz"
    data.write_idx(path.with_suffix(""), data.read_idx(path))
    path.unlink()
    raw = path.with_suffix("")
    raw.write_bytes(raw.read_bytes()[:-7])
    code, _, err = run(capsys, "evaluate", "model.npz", "--data", idx_folder)
    assert_usage_error(code, err, str(raw), "truncated")


def test_bad_npz_and_missing_paths(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((10, 2)), y=np.zeros(9))
    code, _, err = run(capsys, "train", "--data", bad, *CPU)
    assert_usage_error(code, err, str(bad), "10 rows but y has 9")
    code, _, err = run(capsys, "train", "--data", tmp_path / "nothing-here", *CPU)
    assert_usage_error(code, err, "nothing-here", "no such data set")
    code, _, err = run(capsys, "evaluate", tmp_path / "no-model.npz", "--dataset", "digits", *CPU)
    assert_usage_error(code, err, "no-model.npz", "no such model file")
    code, _, err = run(capsys, "evaluate", bad, "--dataset", "digits", *CPU)
    assert_usage_error(code, err, "bad.npz", "not a gpubp model")


def test_fashion_mnist_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_FASHION_MNIST, str(tmp_path / "empty"))
    code, _, err = run(capsys, "train", *CPU)
    assert_usage_error(code, err, "sudo apt-get install dataset-fashion-mnist", "--data", "GPUBP_FASHION_MNIST")


def test_library_value_error_is_one_line(capsys, idx_folder):
    code, _, err = run(capsys, "train", "--data", idx_folder, "--loss", "log_likelihood", *CPU)
    assert_usage_error(code, err, "gpubp: error: loss 'log_likelihood' does not fit")
    assert err.count("\n") == 1


def test_plot_without_matplotlib(capsys, idx_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run(capsys, "train", "--data", idx_folder, "--plot", tmp_path / "p.png", *CPU)
    assert_usage_error(code, err, "pip install matplotlib")
    assert "epoch" not in out


def test_save_into_missing_folder(capsys, idx_folder, tmp_path):
    code, out, err = run(capsys, "train", "--data", idx_folder, "--save", tmp_path / "no" / "m.npz", *CPU)
    assert_usage_error(code, err, "--save", "does not exist")


def test_trace_uses_a_saved_models_settings(capsys, tmp_path):
    model = tmp_path / "relu.npz"
    gpubp.Network([3, 4, 2], activation="relu", output_activation="softmax", loss="log_likelihood", device="cpu").save(
        model
    )
    code, out, err = run(capsys, "trace", "--weights", model, "--x", "1,2,3", "--y", "0,1")
    assert code == 0, err
    assert "relu hidden, softmax output, log_likelihood cost" in out


def test_early_stopping_keeps_the_best_model_in_save(capsys, tmp_path):
    """--early-stopping stops after that many epochs without a better validation accuracy; --save
    (fit's checkpoint) holds the best epoch, whose accuracy the saved model scores again."""
    path = tmp_path / "best.npz"
    code, out, err = run(capsys, "train", "--dataset", "digits", "--epochs", "40", "--lr", "8", "--batch-size", "200",
                         "--early-stopping", "2", "--save", path, "--json", *CPU)  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    accuracies = summary["history"]["val_accuracy"]
    best = int(np.argmax(accuracies)) + 1  # the first of equal maxima: only a better one replaces it
    assert len(accuracies) < 40 and len(accuracies) - best == 2  # stopped two epochs after the best
    assert summary["best_epoch"] == summary["saved_epoch"] == best
    saved = gpubp.Network.load(path, device="cpu")
    assert saved.epochs_trained == best
    ds = data.load_digits()
    assert saved.evaluate(ds.X_val, ds.y_val)["accuracy"] == pytest.approx(accuracies[best - 1], abs=1e-12)


def test_early_stopping_needs_validation(capsys, tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "no-val.npz"  # an empty validation set given: none is held out
    np.savez(path, X=rng.random((30, 4)), y=np.arange(30) % 2, X_val=np.empty((0, 4)), y_val=np.empty(0, np.int64))
    code, _, err = run(capsys, "train", "--data", path, "--early-stopping", "2", *CPU)
    assert_usage_error(code, err, "--early-stopping", "no validation set")


def test_a_save_folder_that_cannot_be_written_is_refused_before_training(capsys, idx_folder, tmp_path, monkeypatch):
    """As os.access says for the user (root writes anywhere, so the test asks it to say no)."""
    monkeypatch.setattr("gpubp.training.os.access", lambda path, mode: False)
    code, out, err = run(capsys, "train", "--data", idx_folder, "--save", tmp_path / "m.npz", *CPU)
    assert code == 1 and err.count("\n") == 1, err  # one line, as any file the command cannot write
    assert "is not writable" in err and "epoch 1" not in out
