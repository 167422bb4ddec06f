"""Test set-up: CUDA kernels run in Numba's CUDA simulator unless a real NVIDIA GPU is present.

The environment variable must be set before numba is imported. Set NUMBA_ENABLE_CUDASIM
yourself to override (0: the real GPU, 1: the simulator).
"""

import ctypes
import os
import zlib


def _real_gpu_present() -> bool:
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0" if _real_gpu_present() else "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: each test draws its own inputs, the same every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
