"""Data sets for gpubp: IDX files (the MNIST format), Fashion-MNIST, scikit-learn's digits, .npz files.

Every loader returns a :class:`Dataset` of three splits. Inputs are float32 rows of shape
``(n, features)``: image data (uint8 pixels) is scaled to [0, 1]; float data from an .npz or IDX
file is taken as given. Labels are int64 class indices ``0 .. n_classes-1``.

Splits:

- Fashion-MNIST / any MNIST-layout IDX folder: the LAST ``validation`` training images are the
  validation set (10,000 for Fashion-MNIST: the textbook 50,000 / 10,000 split); the t10k files
  are the test set.
- digits (scikit-learn, 1,797 8x8 images, pixels /16): a fixed permutation (seed 0) split into
  1,297 training, 250 validation and 250 test images.
- .npz: ``X`` and ``y`` are permuted with a fixed seed (0) and split 80% / 10% / 10%
  (training / validation / test; a nonzero fraction holds at least one row). If the file also
  has ``X_test``/``y_test`` (and/or ``X_val``/``y_val``), those are used as given and the rest of
  ``X``/``y`` becomes training data.

Every problem with a file raises :class:`DataError` (a ``ValueError``) whose message names the file;
a file that is refused as such (not a regular file, malformed, declaring more than it holds) raises
:class:`DataFileError`, which is also a :class:`gpubp.BadFile`. Files are read as untrusted
(``gpubp.untrusted``): only regular files are opened, a FIFO or device never waited on; each
declared shape is checked against the bytes really there, or decompression stops as soon as it
passes the declared size; labels above ``MAX_CLASSES - 1`` are refused before anything is sized
from them.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .untrusted import MAX_NDIM, BadFile, Npz, allocate, file_size, fill, open_regular, read_npy, read_upto

__all__ = [
    "DataError",
    "DataFileError",
    "DatasetNotFoundError",
    "Dataset",
    "read_idx",
    "write_idx",
    "load",
    "load_fashion_mnist",
    "load_idx_folder",
    "load_npz",
    "load_digits",
    "load_features",
    "DATASETS",
    "FASHION_MNIST_DIR",
    "MAX_CLASSES",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four IDX files."""

ENV_FASHION_MNIST = "GPUBP_FASHION_MNIST"

DATASETS = ("fashion-mnist", "digits")
"""Names :func:`load` accepts besides a folder or an .npz path."""

# The four files of the MNIST layout, by role.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPE_NAMES = {code: dt.name for code, dt in _IDX_DTYPES.items()}  # 0x0B: "int16", ...
_IDX_CODES = {np.dtype(dt).newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}

DIGITS_SPLIT = (1297, 250, 250)
"""Training / validation / test sizes of :func:`load_digits` (fixed permutation, seed 0)."""

MAX_CLASSES = 65536
"""Most classes a data set may have: a larger label is refused (it would size the output layer and
the one-hot targets). A data set also may not have more classes than labelled rows."""

NPZ_VALIDATION = 0.1
NPZ_TEST = 0.1
SPLIT_SEED = 0


class DataError(ValueError):
    """A data file or data set is missing, corrupt or of the wrong shape; the message names the file."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A data set's files are not where they were looked for; the message says how to get them."""


class DataFileError(DataError, BadFile):
    """A data file is refused: not a regular file, malformed, or declaring more than it holds."""


# ----------------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed: detected by its first bytes, not its name).

    Checks the magic number (two zero bytes, a type code, the number of dimensions), the
    dimensions and the exact length: a raw file's size against its header before reading the
    data; a compressed file is inflated a chunk at a time and stopped one byte past the declared
    length. Returns the array in native byte order, of the file's element type (uint8 for MNIST).
    Raises :class:`DataError` naming the file and the problem.
    """
    path = Path(path)
    with open_regular(path, DataFileError, DatasetNotFoundError) as f:
        return _idx_from(f, path)


def _idx_from(f: BinaryIO, path: Path) -> np.ndarray:
    """The IDX array in the open regular file ``f``, raw or gzip-compressed."""
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(0)
    if not gz:
        return _read_idx(f, path, file_size(f))
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            return _read_idx(stream, path, None)
    except (EOFError, OSError, zlib.error) as e:
        raise DataFileError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except MemoryError:  # a declared length that is honest, and larger than the memory there is
        raise DataFileError(f"{path}: not enough memory for its decompressed data") from None


def _read_idx(f: BinaryIO, path: Path, size: int | None) -> np.ndarray:
    """The IDX array in ``f``: a raw file of ``size`` bytes, or (size None) a decompressed stream."""
    what = "file" if size is not None else "decompressed data"
    head = read_upto(f, 4)
    if len(head) < 4:
        raise DataFileError(f"{path}: {what} is {len(head)} bytes, too short for an IDX header (4 bytes or more)")
    if head[0] != 0 or head[1] != 0:
        raise DataFileError(f"{path}: not an IDX file (magic number starts with {head[:2].hex(' ')}, expected 00 00)")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {n}" for c, n in _IDX_TYPE_NAMES.items())
        raise DataFileError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0 or ndim > MAX_NDIM:
        raise DataFileError(f"{path}: IDX header says {ndim} dimensions (1 to {MAX_NDIM})")
    header = 4 + 4 * ndim
    dims = read_upto(f, 4 * ndim)
    if len(dims) < 4 * ndim:
        have = size if size is not None else 4 + len(dims)
        raise DataFileError(
            f"{path}: {what} is {have} bytes, too short for the {header}-byte header "
            f"of a {ndim}-dimensional IDX file (truncated?)"
        )
    shape = tuple(int(d) for d in np.frombuffer(bytes(dims), dtype=">u4"))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    shown = "x".join(str(d) for d in shape)
    if size is not None:  # raw: the size is known before any data is read
        have, longer = size, size > expected
        if size == expected:
            body = allocate(expected - header, str(path), DataFileError)
            have = header + fill(f, body)
    else:  # compressed: inflate no further than one byte past the declared length
        body = read_upto(f, expected - header + 1)
        have, longer = header + len(body), header + len(body) > expected
    if have != expected:
        hint = "trailing data, or wrong dimensions?" if longer else "truncated?"
        amount = f"more than {expected}" if longer and size is None else str(have)
        raise DataFileError(
            f"{path}: {what} is {amount} bytes, expected {expected} for {shown} {_IDX_TYPE_NAMES[code]} ({hint})"
        )
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    if not dtype.isnative:  # big-endian on disk: swap in place rather than copy
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def write_idx(path: str | os.PathLike[str], array: Any) -> None:
    """Write ``array`` as an IDX file; gzip-compressed if ``path`` ends in ``.gz``.

    Element types: uint8, int8, int16, int32, float32, float64. Other integer types (e.g. int64
    labels) are stored as int32 when their values fit, else uint8 when they fit that.
    """
    path = Path(path)
    a = np.asarray(array)
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"{path}: an IDX file holds 1 to 255 dimensions, got {a.ndim}")
    dt = a.dtype.newbyteorder("=") if a.dtype.byteorder not in ("=", "|") else a.dtype
    if dt == np.bool_:
        a, dt = a.astype(np.uint8), np.dtype(np.uint8)
    elif dt not in _IDX_CODES and np.issubdtype(dt, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if 0 <= lo and hi <= 255:
            dt = np.dtype(np.uint8)
        elif -(2**31) <= lo and hi < 2**31:
            dt = np.dtype(np.int32)
        else:
            raise ValueError(f"{path}: values of {a.dtype} do not fit in an IDX int32")
    if dt not in _IDX_CODES:
        raise ValueError(f"{path}: IDX cannot store {a.dtype} (uint8, int8, int16, int32, float32, float64)")
    code = _IDX_CODES[dt]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(a, dtype=_IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(header + body)
    else:
        path.write_bytes(header + body)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """Training, validation and test splits: X float32 ``(n, n_features)``, y int64 labels.

    The validation split may be empty (``len(y_val) == 0``). Checked on construction: 2-D inputs
    with the same number of columns in every split, as many labels as rows, integer labels
    ``0 <= y < n_classes``, no NaN or infinity.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str = "data"
    n_classes: int = 0
    """Number of classes; 0 (the default) means one more than the largest label."""

    def __post_init__(self) -> None:
        splits = {}
        n_features = None
        for split in ("train", "val", "test"):
            X = _as_inputs(getattr(self, f"X_{split}"), f"{self.name}: X_{split}")
            y = _as_labels(getattr(self, f"y_{split}"), f"{self.name}: y_{split}")
            if len(X) != len(y):
                raise DataError(f"{self.name}: X_{split} has {len(X)} rows but y_{split} has {len(y)} labels")
            n_features = n_features or X.shape[1]  # X_train's (every X has a column)
            if X.shape[1] != n_features:
                raise DataError(f"{self.name}: X_{split} has {X.shape[1]} features per row, X_train has {n_features}")
            splits[split] = (X, y)
        if len(splits["train"][1]) == 0:
            raise DataError(f"{self.name}: the training split is empty")
        largest = max((int(y.max()) for _, y in splits.values() if len(y)), default=-1)
        n_classes = int(self.n_classes) or largest + 1
        if largest >= n_classes:
            raise DataError(f"{self.name}: label {largest} is out of range for {n_classes} classes")
        if n_classes > MAX_CLASSES:
            raise DataError(f"{self.name}: {n_classes} classes, more than gpubp takes ({MAX_CLASSES})")
        rows = sum(len(y) for _, y in splits.values())
        if not self.n_classes and n_classes > rows:
            raise DataError(
                f"{self.name}: label {largest} implies {n_classes} classes, more than the {rows} labelled rows "
                "(labels are class indices 0, 1, 2, ...)"
            )
        for split, (X, y) in splits.items():
            object.__setattr__(self, f"X_{split}", X)
            object.__setattr__(self, f"y_{split}", y)
        object.__setattr__(self, "n_classes", n_classes)

    @property
    def n_features(self) -> int:
        """Number of inputs per sample (columns of X)."""
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: {len(self.y_train)} train / {len(self.y_val)} validation / "
            f"{len(self.y_test)} test, {self.n_features} features, {self.n_classes} classes)"
        )


def _as_inputs(X: Any, what: str) -> np.ndarray:
    """Rows as float32 ``(n, features)``: uint8 pixels scaled to [0, 1], trailing axes flattened."""
    X = np.asarray(X)
    try:
        if X.dtype == np.uint8:
            X = X.astype(np.float32)
            X /= np.float32(255.0)  # in place: no second float32 copy
        elif X.dtype == np.bool_ or np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float32)
        else:
            raise DataError(f"{what}: expected numbers, got {X.dtype}")
    except MemoryError:
        raise DataError(f"{what}: not enough memory for {X.size} inputs as float32") from None
    if X.ndim < 2:
        raise DataError(f"{what}: expected rows of features (2 or more dimensions), got shape {X.shape}")
    if X.ndim > 2:
        X = X.reshape(len(X), -1)
    if X.shape[1] == 0:
        raise DataError(f"{what}: rows have no features (shape {X.shape})")
    if not np.isfinite(X).all():
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise DataError(f"{what}: {bad} NaN or infinite values")
    return np.ascontiguousarray(X)


def _as_labels(y: Any, what: str) -> np.ndarray:
    """Labels as int64 ``(n,)``; refuses non-integers and negatives."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: expected one integer label per row (1-D), got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise DataError(f"{what}: labels contain NaN or infinity")
        if (y != np.round(y)).any():
            raise DataError(f"{what}: labels must be integers, got non-integer values like {y[y != np.round(y)][0]}")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{what}: labels must be integers, got {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, found {_label(y.min())}")
    if len(y) and y.max() >= MAX_CLASSES:  # checked before int64: 1e300 or 2**64-1 would wrap
        raise DataError(
            f"{what}: label {_label(y.max())} is out of range: gpubp takes at most {MAX_CLASSES} classes "
            f"(labels 0 to {MAX_CLASSES - 1})"
        )
    return y.astype(np.int64)


def _label(value: Any) -> str:
    """A label as the user wrote it: 1000000000, or 1e+300 for a float too large to spell out."""
    value = value.item()
    return str(int(value)) if isinstance(value, bool) or abs(value) < 1e16 else f"{value:g}"


# ----------------------------------------------------------------------------------------------
# IDX folders and Fashion-MNIST
# ----------------------------------------------------------------------------------------------


def _find_file(folder: Path, base: str) -> Path | None:
    """``base`` in ``folder``: raw or .gz, with '-idx' or '.idx' (both spellings circulate).

    A regular file first; else an entry of that name that is not one (a FIFO, a device, a link to
    one), which :func:`read_idx` then refuses by name rather than it being reported missing."""
    odd = None
    for stem in (base, base.replace("-idx", ".idx")):
        for name in (stem, stem + ".gz"):
            p = folder / name
            if p.is_file():
                return p
            if odd is None and os.path.lexists(p) and os.path.exists(p):
                odd = p
    return odd


def _idx_files(folder: Path, what: str) -> dict[str, Path]:
    """The four MNIST-layout files in ``folder``, or :class:`DatasetNotFoundError`."""
    if not folder.exists():
        raise DatasetNotFoundError(f"{what}: folder {folder} does not exist")
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{what}: {folder} is not a folder")
    found = {role: _find_file(folder, base) for role, base in MNIST_FILES.items()}
    missing = [MNIST_FILES[role] for role, p in found.items() if p is None]
    if missing:
        raise DatasetNotFoundError(f"{what}: {folder} lacks {', '.join(f'{m}[.gz]' for m in missing)}")
    return found  # type: ignore[return-value]


def _read_images(path: Path) -> np.ndarray:
    X = read_idx(path)
    if X.ndim not in (2, 3):
        raise DataError(f"{path}: expected images (n x rows x cols) or rows (n x features), got shape {X.shape}")
    return X.reshape(len(X), -1)


def _read_labels(path: Path, n_images: int, images: Path) -> np.ndarray:
    y = read_idx(path)
    if y.ndim != 1:
        raise DataError(f"{path}: expected labels (1 dimension), got shape {y.shape}")
    if len(y) != n_images:
        raise DataError(f"{path}: {len(y)} labels, but {images.name} has {n_images} images")
    return _as_labels(y, str(path))


def load_idx_folder(path: str | os.PathLike[str], validation: int | None = None, name: str | None = None) -> Dataset:
    """Load a folder of IDX files in the MNIST layout (train-images…, train-labels…, t10k-…).

    Images become rows of ``rows*cols`` inputs, uint8 pixels scaled to [0, 1]. The LAST
    ``validation`` training images are the validation set; by default a sixth of them (10,000 of
    MNIST's 60,000). The t10k files are the test set.
    """
    folder = Path(path)
    what = name or str(folder)
    files = _idx_files(folder, what)
    X_train = _read_images(files["train_images"])
    y_train = _read_labels(files["train_labels"], len(X_train), files["train_images"])
    X_test = _read_images(files["test_images"])
    y_test = _read_labels(files["test_labels"], len(X_test), files["test_images"])
    if X_test.shape[1] != X_train.shape[1]:
        raise DataError(
            f"{files['test_images']}: images have {X_test.shape[1]} pixels, "
            f"{files['train_images'].name} has {X_train.shape[1]}"
        )
    if validation is None:
        validation = len(y_train) // 6
    n = len(y_train)
    if not 0 <= validation < n:
        raise DataError(f"{what}: validation={validation} must be from 0 to {n - 1} ({n} training rows)")
    cut = n - validation  # the last ``validation`` rows are held out
    return Dataset(X_train[:cut], y_train[:cut], X_train[cut:], y_train[cut:], X_test, y_test, name=name or folder.name)


def load_fashion_mnist(path: str | os.PathLike[str] | None = None, validation: int = 10_000) -> Dataset:
    """Fashion-MNIST: 50,000 training, 10,000 validation (the LAST 10,000 of the 60,000 training
    images) and 10,000 test images of 28x28 = 784 pixels in [0, 1]; 10 classes.

    Looks in ``path``, else the folder named by the environment variable GPUBP_FASHION_MNIST, else
    /usr/share/datasets/fashion-mnist/ (Debian's ``dataset-fashion-mnist`` package). File names
    may end in .gz or not.
    """
    if path is None:
        path = os.environ.get(ENV_FASHION_MNIST) or FASHION_MNIST_DIR
    try:
        return load_idx_folder(path, validation=validation, name="fashion-mnist")
    except DatasetNotFoundError as e:
        names = ", ".join(f"{b}[.gz]" for b in MNIST_FILES.values())
        raise DatasetNotFoundError(
            f"{e}. Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files go to "
            f"{FASHION_MNIST_DIR}/), or point --data or {ENV_FASHION_MNIST} at a folder holding the "
            f"four IDX files {names}"
        ) from None


# ----------------------------------------------------------------------------------------------
# .npz files and scikit-learn's digits
# ----------------------------------------------------------------------------------------------


def load_npz(
    path: str | os.PathLike[str], validation: float = NPZ_VALIDATION, test: float = NPZ_TEST, seed: int = SPLIT_SEED
) -> Dataset:
    """Load an .npz holding ``X`` (rows; extra axes are flattened) and ``y`` (integer labels).

    The rows are permuted with a fixed seed and split into training, validation (a fraction
    ``validation``, default 10%) and test (``test``, default 10%) sets, the same way every time.
    Arrays ``X_test``/``y_test`` or ``X_val``/``y_val`` in the file replace those splits.
    uint8 inputs are scaled to [0, 1]; other numbers are taken as given.
    """
    path = Path(path)
    with open_regular(path, DataFileError, DatasetNotFoundError) as f:
        if f.read(6) == b"\x93NUMPY":
            raise DataFileError(f"{path}: a single .npy array, expected an .npz archive with X and y")
        npz = Npz(f, str(path), DataFileError)  # its members' headers checked, no array read yet
        arrays = {k: npz.read(k) for k in ("X", "y", "X_test", "y_test", "X_val", "y_val") if k in npz.names}
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(f"{path}: no array '{key}' (has: {', '.join(sorted(npz.names)) or 'nothing'})")
    for a, b in (("X_test", "y_test"), ("X_val", "y_val")):
        if (a in arrays) != (b in arrays):
            raise DataError(f"{path}: has {a if a in arrays else b} but not {b if a in arrays else a}")
    X = _as_inputs(arrays["X"], f"{path}: X")
    y = _as_labels(arrays["y"], f"{path}: y")
    if len(X) != len(y):
        raise DataError(f"{path}: X has {len(X)} rows but y has {len(y)} labels")
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    if not (0 <= validation < 1 and 0 <= test < 1):
        raise ValueError(f"validation={validation} and test={test} must be fractions in [0, 1)")
    # A nonzero fraction holds out at least one row.
    n_test = 0 if "X_test" in arrays or test == 0 else max(1, round(test * n))
    n_val = 0 if "X_val" in arrays or validation == 0 else max(1, round(validation * n))
    if n - n_test - n_val < 1:
        raise DataError(f"{path}: {n} rows are too few to split into training, validation and test sets")
    test_idx, val_idx, train_idx = np.split(order, [n_test, n_test + n_val])
    X_test, y_test = (arrays["X_test"], arrays["y_test"]) if "X_test" in arrays else (X[test_idx], y[test_idx])
    X_val, y_val = (arrays["X_val"], arrays["y_val"]) if "X_val" in arrays else (X[val_idx], y[val_idx])
    return Dataset(X[train_idx], y[train_idx], X_val, y_val, X_test, y_test, name=path.name)


def load_digits() -> Dataset:
    """scikit-learn's handwritten digits: 1,797 8x8 images (64 inputs, pixels /16 in [0, 1]), 10 classes.

    A fixed permutation (seed 0) splits them into 1,297 training, 250 validation and 250 test
    images. Needs scikit-learn (``pip install scikit-learn``).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise DataError(
            "digits: the digits data set comes with scikit-learn, which is not installed: pip install scikit-learn"
        ) from None
    bunch = sk_load_digits()
    X = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    n_train, n_val, _ = DIGITS_SPLIT
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    tr, va, te = np.split(order, [n_train, n_train + n_val])
    return Dataset(X[tr], y[tr], X[va], y[va], X[te], y[te], name="digits", n_classes=10)


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------


def load(name_or_path: str | os.PathLike[str], **kwargs: Any) -> Dataset:
    """Load a data set by name ("fashion-mnist", "digits"), an MNIST-layout IDX folder, or an .npz file.

    Keyword arguments go to the loader (e.g. ``validation``).
    """
    key = str(name_or_path)
    if key.lower().replace("_", "-") in ("fashion-mnist", "fashion"):
        return load_fashion_mnist(**kwargs)
    if key.lower() == "digits":
        return load_digits(**kwargs)
    path = Path(name_or_path)
    if path.is_dir():
        return load_idx_folder(path, **kwargs)
    if path.suffix.lower() == ".npz":
        return load_npz(path, **kwargs)
    if not path.exists():
        raise DatasetNotFoundError(
            f"{key}: no such data set, folder or file (names: {', '.join(DATASETS)}; "
            "or a folder of MNIST-layout IDX files, or an .npz with X and y)"
        )
    raise DataError(f"{key}: expected a folder of MNIST-layout IDX files or an .npz file with X and y")


def load_features(path: str | os.PathLike[str]) -> np.ndarray:
    """Rows to predict on, as float32 ``(n, features)``, from an .npy, an .npz or an IDX file.

    From an .npz: the array ``X`` (else ``X_test``, else its only array). uint8 values (image
    pixels) are scaled to [0, 1]; IDX images of n x rows x cols become rows of rows*cols.
    """
    path = Path(path)
    with open_regular(path, DataFileError, DatasetNotFoundError) as f:
        head = f.read(6)
        f.seek(0)
        what = str(path)
        if head.startswith(b"PK"):
            npz = Npz(f, str(path), DataFileError)
            key = next((k for k in ("X", "X_test") if k in npz.names), None)
            if key is None and len(npz.names) == 1:
                key = next(iter(npz.names))
            if key is None:
                raise DataError(f"{path}: no array 'X' (has: {', '.join(sorted(npz.names)) or 'nothing'})")
            X, what = npz.read(key), f"{path}: {key}"
        elif head.startswith(b"\x93NUMPY"):
            X = read_npy(f, what, DataFileError)
        else:
            X = _idx_from(f, path)
    if X.ndim == 1:
        X = X[None, :]
    return _as_inputs(X, what)
