"""Tests of gpubp.data: IDX reading and writing, the loaders, their splits and their error messages."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from gpubp import data
from gpubp.data import DataError, Dataset, DatasetNotFoundError

FASHION = data.FASHION_MNIST_DIR


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def make_mnist_folder(folder: Path, n_train=30, n_test=12, rows=4, cols=3, gz=True, seed=0) -> dict:
    """Write a tiny MNIST-layout folder; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        data.write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


# ------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 5], dtype=np.int8),
        np.array([[1, -2], [300, 4]], dtype=np.int16),
        np.array([70000, -1], dtype=np.int32),
        np.array([[0.5, -1.25]], dtype=np.float32),
        np.array([1e300, -2.5], dtype=np.float64),
    ],
    ids=["uint8", "int8", "int16", "int32", "float32", "float64"],
)
def test_idx_round_trip(tmp_path, name, array):
    path = tmp_path / name
    data.write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = data.read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_exact_bytes(tmp_path):
    path = tmp_path / "labels"
    data.write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_write_idx_int64_labels_fit_in_uint8(tmp_path):
    data.write_idx(tmp_path / "y", np.array([0, 9, 3], dtype=np.int64))
    back = data.read_idx(tmp_path / "y")
    assert back.dtype == np.uint8
    assert back.tolist() == [0, 9, 3]


def test_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    # gzip data under a plain name, raw data under a .gz name
    (tmp_path / "plain-name").write_bytes(gzip.compress(_header(8, (2, 3)) + a.tobytes()))
    (tmp_path / "raw.gz").write_bytes(_header(8, (2, 3)) + a.tobytes())
    np.testing.assert_array_equal(data.read_idx(tmp_path / "plain-name"), a)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "raw.gz"), a)


def test_truncated_file_message(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(8, (60000, 28, 28)) + bytes(1000 - 16)))
    with pytest.raises(DataError) as e:
        data.read_idx(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "1000 bytes, expected 47040016 for 60000x28x28 uint8 (truncated?)" in msg


def test_too_long_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(_header(8, (2, 2)) + bytes(5))
    with pytest.raises(DataError, match=r"file is 17 bytes, expected 16 for 2x2 uint8 \(trailing data"):
        data.read_idx(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "0 bytes, too short"),
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + bytes(8), "not an IDX file"),
        (b"PK\x03\x04" + bytes(20), "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "too short for the 16-byte header"),
        (_header(0x0D, (3,)) + bytes(8), "expected 20 for 3 float32"),
    ],
    ids=["empty", "short", "bad-magic", "zip", "bad-type", "zero-dims", "short-header", "float-short"],
)
def test_bad_idx_files(tmp_path, content, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(_header(8, (100,)) + bytes(range(100)))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_missing_idx_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        data.read_idx(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):  # also an OSError subclass
        data.read_idx(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ Dataset


def test_dataset_checks_and_converts():
    X = np.zeros((4, 3), dtype=np.float64)
    y = np.array([0, 1, 2, 1])
    ds = Dataset(X, y, X[:0], y[:0], X[:2], y[:2], name="t")
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.n_features == 3 and ds.n_classes == 3
    assert "4 train / 0 validation / 2 test" in repr(ds)
    with pytest.raises(dataclasses_frozen_error()):
        ds.name = "other"


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(y_train=np.array([0, 1, -1, 1])), ">= 0"),
        (dict(y_train=np.array([0, 1.5, 1, 1])), "must be integers"),
        (dict(y_train=np.array(["a", "b", "c", "d"])), "must be integers"),
        (dict(y_train=np.zeros((4, 2), dtype=int)), "1-D"),
        (dict(y_train=np.array([0, 1, 1])), "4 rows but y_train has 3"),
        (dict(X_train=np.array([[0, np.nan, 0]] * 4)), "NaN"),
        (dict(X_train=np.zeros(4)), "2 or more dimensions"),
        (dict(X_test=np.zeros((2, 5))), "5 features per row"),
        (dict(X_train=np.zeros((0, 3)), y_train=np.zeros(0, dtype=int)), "training split is empty"),
        (dict(n_classes=2), "label 2 is out of range for 2 classes"),
    ],
)
def test_dataset_validation(change, message):
    X = np.zeros((4, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 1])
    kwargs = dict(X_train=X, y_train=y, X_val=X[:1], y_val=y[:1], X_test=X[:2], y_test=y[:2], name="t")
    kwargs.update(change)
    with pytest.raises(DataError, match=message):
        Dataset(**kwargs)


def test_float_labels_that_are_integers_are_accepted():
    X = np.zeros((2, 1))
    ds = Dataset(X, np.array([0.0, 3.0]), X, np.array([1.0, 2.0]), X, np.array([0, 1]))
    assert ds.y_train.tolist() == [0, 3] and ds.n_classes == 4


# ------------------------------------------------------------------------------------------ IDX folders


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_folder(tmp_path, gz):
    arrays = make_mnist_folder(tmp_path, gz=gz)
    ds = data.load_idx_folder(tmp_path, validation=6)
    assert ds.X_train.shape == (24, 12) and ds.X_val.shape == (6, 12) and ds.X_test.shape == (12, 12)
    assert ds.X_train.dtype == np.float32
    images = arrays["train-images-idx3-ubyte"].reshape(30, 12) / 255.0
    # the LAST training images are the validation set
    np.testing.assert_allclose(ds.X_train, images[:24], rtol=1e-6)
    np.testing.assert_allclose(ds.X_val, images[24:], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_val, arrays["train-labels-idx1-ubyte"][24:])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.X_train.min() >= 0 and ds.X_train.max() <= 1


def test_load_idx_folder_default_validation_is_a_sixth(tmp_path):
    make_mnist_folder(tmp_path, n_train=60)
    ds = data.load_idx_folder(tmp_path)
    assert (len(ds.y_train), len(ds.y_val)) == (50, 10)


def test_load_idx_folder_dotted_names(tmp_path):
    make_mnist_folder(tmp_path, gz=False)
    for p in list(tmp_path.iterdir()):
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    assert len(data.load_idx_folder(tmp_path).y_test) == 12


def test_label_count_mismatch(tmp_path):
    make_mnist_folder(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match="29 labels, but train-images-idx3-ubyte.gz has 30 images") as e:
        data.load_idx_folder(tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(e.value)


def test_wrong_dims(tmp_path):
    make_mnist_folder(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((30, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected labels \(1 dimension\), got shape \(30, 2\)"):
        data.load_idx_folder(tmp_path)
    make_mnist_folder(tmp_path)
    data.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((12, 5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match="images have 25 pixels"):
        data.load_idx_folder(tmp_path)
    make_mnist_folder(tmp_path)
    data.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((12, 2, 2, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="expected images"):
        data.load_idx_folder(tmp_path)


def test_truncated_file_in_folder(tmp_path):
    make_mnist_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated") as e:
        data.load_idx_folder(tmp_path)
    assert str(path) in str(e.value)


def test_missing_file_in_folder(tmp_path):
    make_mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        data.load_idx_folder(tmp_path)


def test_validation_too_large(tmp_path):
    make_mnist_folder(tmp_path)
    with pytest.raises(DataError, match="validation=30 must be from 0 to 29"):
        data.load_idx_folder(tmp_path, validation=30)


# ------------------------------------------------------------------------------------------ Fashion-MNIST


def test_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_FASHION_MNIST, raising=False)
    with pytest.raises(DatasetNotFoundError) as e:
        data.load_fashion_mnist(tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg
    assert "--data" in msg and "GPUBP_FASHION_MNIST" in msg
    for name in data.MNIST_FILES.values():
        assert name in msg


def test_fashion_mnist_env_var(tmp_path, monkeypatch):
    make_mnist_folder(tmp_path, n_train=20)
    monkeypatch.setenv(data.ENV_FASHION_MNIST, str(tmp_path))
    ds = data.load_fashion_mnist(validation=5)
    assert ds.name == "fashion-mnist" and len(ds.y_val) == 5 and len(ds.y_train) == 15
    ds = data.load("fashion-mnist", validation=4)
    assert len(ds.y_val) == 4


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_files(monkeypatch):
    monkeypatch.delenv(data.ENV_FASHION_MNIST, raising=False)
    ds = data.load_fashion_mnist()
    assert ds.X_train.shape == (50000, 784)
    assert ds.X_val.shape == (10000, 784)
    assert ds.X_test.shape == (10000, 784)
    assert ds.n_features == 784 and ds.n_classes == 10
    for X in (ds.X_train, ds.X_val, ds.X_test):
        assert X.dtype == np.float32 and X.min() == 0.0 and X.max() == 1.0
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64 and set(np.unique(y).tolist()) == set(range(10))
    # the validation set is the last 10,000 training images, in file order
    raw = data.read_idx(FASHION / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(ds.y_val, raw[50000:])


# ------------------------------------------------------------------------------------------ npz, digits


def test_load_npz_split(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (100, 2, 3), dtype=np.uint8)
    y = np.arange(100) % 4
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = data.load_npz(tmp_path / "d.npz")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (80, 10, 10)
    assert ds.n_features == 6 and ds.n_classes == 4 and ds.X_train.max() <= 1
    again = data.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.y_test, again.y_test)  # same split every time
    # every row lands in exactly one split
    rows = np.concatenate([ds.X_train, ds.X_val, ds.X_test]) * 255
    assert sorted(map(tuple, np.rint(rows).astype(int))) == sorted(map(tuple, X.reshape(100, 6).astype(int)))


def test_load_npz_with_test_arrays(tmp_path):
    X = np.linspace(-1, 1, 40).reshape(20, 2)
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(20) % 2, X_test=X[:3], y_test=[0, 1, 0])
    ds = data.load_npz(tmp_path / "d.npz")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (18, 2, 3)
    assert ds.X_train.min() < 0  # float data taken as given


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(X=np.zeros((5, 2))), "no array 'y'"),
        (dict(X=np.zeros((5, 2)), y=np.zeros(4, dtype=int)), "X has 5 rows but y has 4"),
        (dict(X=np.zeros((5, 2)), y=[0, 1, 2, 3, -4]), ">= 0"),
        (dict(X=np.full((5, 2), np.nan), y=np.zeros(5, dtype=int)), "NaN"),
        (dict(X=np.zeros((5, 2)), y=np.zeros(5, dtype=int), X_test=np.zeros((1, 2))), "not y_test"),
        (dict(X=np.zeros((2, 2)), y=[0, 1]), "too few"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        data.load_npz(path)
    assert str(path) in str(e.value)


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz") as e:
        data.load(path)
    assert str(path) in str(e.value)


def test_digits_split():
    pytest.importorskip("sklearn")
    ds = data.load_digits()
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == data.DIGITS_SPLIT == (1297, 250, 250)
    assert ds.n_features == 64 and ds.n_classes == 10
    assert ds.X_train.min() >= 0 and ds.X_train.max() == 1.0
    np.testing.assert_array_equal(data.load("digits").y_test, ds.y_test)


def test_digits_without_sklearn(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        data.load_digits()


# ------------------------------------------------------------------------------------------ dispatch


def test_load_dispatch(tmp_path):
    make_mnist_folder(tmp_path / "mnist")
    assert data.load(tmp_path / "mnist").n_features == 12
    assert data.load(str(tmp_path / "mnist")).name == "mnist"
    with pytest.raises(DatasetNotFoundError, match="no such data set"):
        data.load("cifar-10")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="expected a folder"):
        data.load(tmp_path / "x.csv")


def test_load_features(tmp_path):
    X = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    data.write_idx(tmp_path / "img.gz", X)
    np.save(tmp_path / "a.npy", X.reshape(2, 6).astype(np.float64))
    np.savez(tmp_path / "b.npz", X=X)
    np.savez(tmp_path / "c.npz", rows=np.ones((3, 4)))
    assert data.load_features(tmp_path / "img.gz").shape == (2, 6)
    np.testing.assert_allclose(data.load_features(tmp_path / "img.gz"), X.reshape(2, 6) / 255, rtol=1e-6)
    np.testing.assert_array_equal(data.load_features(tmp_path / "a.npy"), X.reshape(2, 6))
    assert data.load_features(tmp_path / "b.npz").max() <= 1
    assert data.load_features(tmp_path / "c.npz").shape == (3, 4)
    np.save(tmp_path / "one.npy", np.ones(5))
    assert data.load_features(tmp_path / "one.npy").shape == (1, 5)
    with pytest.raises(DataError, match="not an IDX file"):
        (tmp_path / "t.txt").write_text("hello")
        data.load_features(tmp_path / "t.txt")
