"""Test set-up: CUDA kernels run in Numba's CUDA simulator unless a real NVIDIA GPU is present.

This must run before numba is imported. Set NUMBA_ENABLE_CUDASIM yourself to override
(0: the real GPU, 1: the simulator).
"""

import ctypes
import os


def _real_gpu_present() -> bool:
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0" if _real_gpu_present() else "1")
