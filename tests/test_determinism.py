"""The same seed gives bitwise the same parameters on the CPU in every process.

Numba compiles the CPU kernels on first use and caches them on disk; later processes load that
cache. A callee linked into a caller is compiled twice (alone, and inside the caller), and a
process that compiled fresh may run the one copy where a process that loads the cache runs the
other. With reassociation allowed, the two copies could group a formula such as
(a - y) * (a (1 - a)) differently, and the first process rounded differently from every later one.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import sys
import numpy as np
import gpubp

rng = np.random.default_rng(0)
X, labels = rng.standard_normal((97, 12)), rng.integers(0, 4, 97)
out = {}
for dtype in ("float32", "float64"):
    for path in ("epoch", "layers"):
        for bs in (5, 10, 40):  # the blocked loops, the 10-row step, the BLAS branch
            for name, kw in (
                ("sigmoid", dict(sizes=[12, 6, 4])),
                ("cross_entropy", dict(sizes=[12, 6, 4], loss="cross_entropy")),
                ("softmax", dict(sizes=[12, 9, 7, 4], activation="tanh", output_activation="softmax",
                                 loss="log_likelihood")),
            ):
                sizes = kw.pop("sizes")
                net = gpubp.Network(sizes, device="cpu", seed=7, dtype=dtype, path=path, **kw)
                history = net.fit(X, labels, epochs=2, batch_size=bs, lr=0.5, momentum=0.5 if bs == 40 else 0.0)
                key = f"{dtype}-{path}-{bs}-{name}"
                for l, (w, b) in enumerate(zip(net.weights, net.biases)):
                    out[f"{key}/w{l}"], out[f"{key}/b{l}"] = w, b
                out[f"{key}/loss"] = np.array(history["loss"])
                out[f"{key}/grad"] = net.gradients(X[:7], labels[:7])[0][0]
                out[f"{key}/predict"] = net.predict(X[:7])
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_a_fresh_compile_and_the_cached_kernels_train_bitwise_alike(tmp_path):
    """Run the same fits twice with one new Numba cache folder: the first process compiles and
    writes the cache, the second loads it; every parameter, loss, gradient and prediction agrees
    bitwise."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    results = []
    for run in ("fresh", "cached"):
        out = tmp_path / f"{run}.npz"
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True, timeout=600)
        results.append(np.load(out))
        if run == "fresh":  # else the second run would compile too, and the test could not fail
            assert list(Path(env["NUMBA_CACHE_DIR"]).rglob("*step*.nbi")), "the first run wrote no cache"
    fresh, cached = results
    assert fresh.files == cached.files
    differ = [k for k in fresh.files if not np.array_equal(fresh[k], cached[k])]
    assert not differ, f"{len(differ)} of {len(fresh.files)} arrays differ, e.g. {differ[:4]}"
