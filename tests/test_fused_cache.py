"""The whole-epoch kernel is cached on disk like the other CUDA kernels (issue 20 item 1).

``train_fused`` closes over its element type, its shared buffer's size and the stage device
functions: numba-cuda keys a cached kernel by its code and the pickled contents of its closure, so
each (T, shared) is its own entry, and the formulas of ``kernels/losses.py`` and
``kernels/activations.py`` the stages call are in that key too (a change to them is a new entry,
not a stale hit). Checked outside the simulator, which has no cache.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib
    import numba
    from numba.core.serialize import dumps
    from gpubp.kernels.cuda import fused
    for T in (numba.float32, numba.float64):
        for shared in (fused.SHARED, 1024):
            k = fused.build(T, shared).train_fused
            cells = dumps(tuple(c.cell_contents for c in k.py_func.__closure__))
            formulas = all(name in cells for name in (b"output_error_row", b"softmax_row", b"log1p"))
            print(T, shared, type(k._cache).__name__, hashlib.sha256(cells).hexdigest(), formulas)
    """
)


@pytest.mark.slow
def test_whole_epoch_kernel_is_cached_on_disk_per_type_and_shared_size():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert len(rows) == 4
    assert {kind for _, _, kind, _, _ in rows} == {"CUDACache"}
    assert len({key for _, _, _, key, _ in rows}) == 4  # a cache entry per (T, shared)
    assert {formulas for *_, formulas in rows} == {"True"}  # the row formulas are in the key
