"""Shared pieces: timing, the data, activations in numpy, machine description, library versions."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import importlib
import importlib.metadata as md
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
N_CLASSES = 10
SETTLE_S = 0.2  # pause before timing another implementation, so idle BLAS/OpenMP threads stop spinning


# ---------------------------------------------------------------------------------------------
# Timing


def median_time(fn, warmup: int = 1, repeats: int = 5, budget_s: float | None = None) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then time it with perf_counter ``repeats`` times.

    With ``budget_s`` the timed loop stops early once that many seconds are spent (after at least
    three calls), so very slow shapes do not dominate a run. Returns median, min and all times (s).
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def settle() -> None:
    """Sleep briefly so worker threads left spinning by the previous implementation go idle.

    OpenBLAS, torch's OpenMP pool and Numba's parallel kernels keep their threads spinning for a
    while after each call; on a machine with few cores they would steal time from the next one.
    """
    time.sleep(SETTLE_S)


def sources_digest() -> str:
    """A digest of gpubp's and its kernels' source files: shows whether they changed during a run."""
    h = hashlib.sha1()
    for folder in ("gpubp", "kernels"):
        for path in sorted((REPO / folder).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall time, CPU seconds busy on the whole machine, CPU seconds of this process) for
    :func:`others_busy`. The machine's figure comes from /proc/stat (nan where there is none)."""
    busy = float("nan")
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return time.perf_counter(), busy, time.process_time()


def others_busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Share of the machine's cores other processes kept busy between two snapshots (0 = idle)."""
    wall = after[0] - before[0]
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    X: np.ndarray  # (n, 784) float32 in [0, 1]: the training rows every peer sees
    y: np.ndarray  # (n,) int64 labels
    Y: np.ndarray  # (n, 10) float32 one-hot
    X_test: np.ndarray
    y_test: np.ndarray
    source: str  # where it came from; says "synthetic" when it is not Fashion-MNIST
    synthetic: bool


def one_hot(y: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    Y = np.zeros((len(y), n_classes), np.float32)
    Y[np.arange(len(y)), y] = 1
    return Y


def _read_idx_gz(path: Path) -> np.ndarray:
    """Minimal IDX reader for the unsigned-byte files of (Fashion-)MNIST."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(n_train: int = 60_000) -> Data:
    """Fashion-MNIST's 60,000 training images (gpubp's 50k train + 10k validation) and its test set.

    Uses ``gpubp.data.load_fashion_mnist`` when importable, else reads the IDX .gz files itself,
    else makes synthetic data of the same shape (and says so in ``source``).
    """
    try:
        from gpubp.data import load_fashion_mnist

        ds = load_fashion_mnist()
        X = np.concatenate([ds.X_train, ds.X_val]).astype(np.float32, copy=False)
        y = np.concatenate([ds.y_train, ds.y_val]).astype(np.int64)
        X_test, y_test = ds.X_test.astype(np.float32, copy=False), ds.y_test.astype(np.int64)
        source = "Fashion-MNIST via gpubp.data.load_fashion_mnist (train + validation rows)"
        synthetic = False
    except Exception as e:
        try:
            X = _read_idx_gz(FASHION_DIR / "train-images-idx3-ubyte.gz").reshape(-1, 784) / np.float32(255)
            y = _read_idx_gz(FASHION_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64)
            X_test = _read_idx_gz(FASHION_DIR / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / np.float32(255)
            y_test = _read_idx_gz(FASHION_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
            source = f"Fashion-MNIST read from {FASHION_DIR} (gpubp.data unavailable: {e})"
            synthetic = False
        except Exception as e2:
            rng = np.random.default_rng(0)
            X = rng.random((60_000, 784), dtype=np.float32)
            y = rng.integers(0, N_CLASSES, 60_000)
            X_test = rng.random((10_000, 784), dtype=np.float32)
            y_test = rng.integers(0, N_CLASSES, 10_000)
            source = f"SYNTHETIC uniform data of Fashion-MNIST's shape (no data set: {e2}); accuracy is chance"
            synthetic = True
    X, y = np.ascontiguousarray(X[:n_train], np.float32), y[:n_train]
    return Data(X, y, one_hot(y), np.ascontiguousarray(X_test, np.float32), y_test, source, synthetic)


# ---------------------------------------------------------------------------------------------
# Activations and the common accuracy check, in numpy


def act_numpy(name: str, z: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z  # linear


def accuracy(weights, biases, activations, X, y) -> float:
    """Fraction of rows of X whose arg-max output is the label; ``activations[l]`` is layer l+1's."""
    a = X
    for W, b, act in zip(weights, biases, activations, strict=True):
        a = act_numpy(act, a @ np.asarray(W, np.float32).T + np.asarray(b, np.float32))
    return float(np.mean(np.argmax(a, axis=1) == y))


# ---------------------------------------------------------------------------------------------
# Devices and kernels


def cuda_available() -> bool:
    """True for a real CUDA GPU usable by Numba (never for the CUDA simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


def import_kernels(target: str):
    """gpubp's kernel module for "cpu" or "cuda": ``gpubp.kernels.<target>`` when installed, else the
    ``kernels`` folder of this checkout."""
    try:
        return importlib.import_module(f"gpubp.kernels.{target}")
    except ImportError:
        return importlib.import_module(f"kernels.{target}")


def import_kernel_codes():
    """(activations, losses) code modules, from the same place as :func:`import_kernels`."""
    try:
        return importlib.import_module("gpubp.kernels.activations"), importlib.import_module("gpubp.kernels.losses")
    except ImportError:
        return importlib.import_module("kernels.activations"), importlib.import_module("kernels.losses")


# ---------------------------------------------------------------------------------------------
# Machine and versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    if not cuda_available():
        return None
    try:
        from numba import cuda

        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else name
    except Exception:
        return None


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_threads": os.cpu_count(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def machine_slug(info: dict) -> str:
    """A file-name-safe machine name: the GPU name if any, else the CPU model, with the thread count."""
    name = info["gpu"] or info["cpu"]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{slug}-{info['cpu_threads']}t"


def today() -> str:
    return datetime.date.today().isoformat()


def versions() -> dict:
    out = {}
    for dist in (
        "gpubp",
        "numpy",
        "numba",
        "numba-cuda",
        "scipy",
        "torch",
        "scikit-learn",
        "jax",
        "jaxlib",
        "cupy",
        "cupy-cuda12x",
        "matplotlib",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    try:
        out["gpubp_git"] = (
            subprocess.run(
                ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        out["gpubp_git"] = None
    out["gpubp_sources"] = sources_digest()
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        out["numpy_blas"] = None
    return out
