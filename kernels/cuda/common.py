"""What every CUDA kernel family shares: launch shapes, the formulas as device functions, grids."""

import numba

from ..activations import compile_for as _activations_for
from ..losses import compile_for as _losses_for

try:  # small-batch launches fill few blocks by design; Numba would warn on every one of them
    from numba.cuda.core import config as _cuda_config

    _cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
except ImportError:  # the simulator, or an older numba-cuda
    pass

TILE = 16  # side of a shared-memory tile and of the 2-D thread blocks
TILE_PAD = TILE + 1  # a padded row (shapes of shared arrays must be constants, not expressions)
ROWS = 128  # threads per block of the one-thread-per-row / per-column kernels
FLAT = 256  # threads per block of the elementwise kernels
BLOCK2 = (TILE, TILE)

f, fprime, softmax_row = _activations_for("cuda")
output_error_row = _losses_for("cuda")


def numba_type(dtype):
    """numba.float32 or numba.float64 for a numpy dtype: the element type kernels are built for."""
    return numba.from_dtype(dtype)


def grid2(rows: int, cols: int, side: int = TILE) -> tuple[int, int]:
    """Blocks covering a (rows, cols) output with side x side tiles; x runs along the columns."""
    return ((cols + side - 1) // side or 1, (rows + side - 1) // side or 1)


def grid1(n: int, threads: int) -> int:
    """Blocks of ``threads`` covering n items."""
    return (n + threads - 1) // threads or 1
