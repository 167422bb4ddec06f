"""The CPU's per-call overhead of the kernel calls, two versions of gpubp interleaved (issue 19 item 2).

    python -m benchmarks.call_overhead --commits BEFORE AFTER [--rounds 8]
    python -m benchmarks.call_overhead --trees DIR DIR  # folders holding an importable gpubp each

Each commit's ``gpubp/`` and ``kernels/`` are exported (``git archive``) to a temporary folder;
then, round after round, one process per version times, at 784-30-10 float32 (sigmoid,
quadratic), the best of many repeats of:

- ``step``: ``Schedule.step`` on a 10-row batch (copy in, forward, BP1-BP4, the update);
- ``backprop``: the engine's backprop of a 10-row batch already in the work buffers;
- ``forward``: the engine's forward of those 10 rows;
- ``epoch``: ``Schedule.train_epoch`` over 1000 rows in batches of 10 (one ``train_batches`` call);
- ``epoch_momentum``: the same with momentum 0.9 (the path that keeps the velocity);
- ``backprop_tiny``, ``forward_tiny``: those of one row at 4-3-2, where the call is most of the time.

A round runs the versions back to back, so on a shared machine the ratio of a round's two times
is steadier than either time; the median of the rounds' ratios is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = [784, 30, 10]
CASES = ("step", "backprop", "forward", "epoch", "epoch_momentum", "backprop_tiny", "forward_tiny")


def _best_us(fn, calls: int, repeats: int) -> float:
    """The best of ``repeats`` timings of ``calls`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def worker(repeats: int) -> dict[str, float]:
    """Time the cases with the gpubp that ``import gpubp`` finds (this process's PYTHONPATH)."""
    import numpy as np

    from gpubp import backends
    from gpubp.losses import codes, loss_code
    from gpubp.schedule import Schedule

    rng = np.random.default_rng(0)

    def schedule(sizes: list[int]) -> Schedule:
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        params = (rng.standard_normal(n_params) * 0.1).astype(np.float32)
        return Schedule(backends.select("cpu"), sizes, codes("sigmoid", "sigmoid", 2), loss_code("quadratic"), params)

    s, tiny = schedule(SIZES), schedule([4, 3, 2])
    X = rng.random((1000, SIZES[0])).astype(np.float32)
    Y = np.eye(SIZES[-1], dtype=np.float32)[rng.integers(0, SIZES[-1], 1000)]
    order = rng.permutation(1000)
    X10, Y10 = X[:10], Y[:10]
    engine = s.engine()
    v, v1 = s.views(10, 10), tiny.views(1, 1)
    s.backend.copy(X10, v.A[0])
    s.backend.copy(Y10, v.Y)
    v1.A[0][...], v1.Y[...] = 0.5, 1.0
    fns = {
        "step": (lambda: s.step(X10, Y10, 0.01), 200),
        "backprop": (lambda: engine.backprop(v, 10, 10, 0.1), 200),
        "forward": (lambda: engine.forward(v, 10, 10), 500),
        "epoch": (lambda: s.train_epoch(X, Y, order, 10, 0.01, 0.0, 0.0), 2),
        "epoch_momentum": (lambda: s.train_epoch(X, Y, order, 10, 0.01, 0.9, 1e-4), 2),
        "backprop_tiny": (lambda: tiny.engine().backprop(v1, 1, 1, 1.0), 1000),
        "forward_tiny": (lambda: tiny.engine().forward(v1, 1, 1), 1000),
    }
    for fn, _ in fns.values():  # compile, or load Numba's cache
        fn()
    return {name: _best_us(fn, calls, repeats) for name, (fn, calls) in fns.items()}


def export(commit: str, into: Path) -> Path:
    """``gpubp`` of ``commit`` as an importable package in the folder ``into`` (kernels/ as gpubp/kernels)."""
    root = into
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "gpubp", "kernels"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    (root / "gpubp" / "kernels").symlink_to(root / "kernels", target_is_directory=True)
    return root


def run(root: Path, repeats: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_ENABLE_CUDASIM": "0"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, cwd=root, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--commits", nargs=2, metavar=("BEFORE", "AFTER"))
    p.add_argument("--trees", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.repeats)))
        return
    if not (a.commits or a.trees):
        p.error("--commits BEFORE AFTER or --trees BEFORE AFTER")
    with tempfile.TemporaryDirectory(prefix="gpubp-overhead-") as tmp:
        roots = a.trees or [export(c, Path(tmp) / str(i)) for i, c in enumerate(a.commits)]
        for root in roots:  # compile each version's kernels into its own cache first
            run(root, 1)
        rounds = []
        for r in range(a.rounds):
            pair = [run(root, a.repeats) for root in (roots if r % 2 == 0 else roots[::-1])]
            rounds.append(pair if r % 2 == 0 else pair[::-1])
    before, after = a.commits or a.trees
    print(f"| case | {before} (us, best round) | {after} (us, best round) | after/before (median of {a.rounds}) |")
    print("|---|---|---|---|")
    for case in CASES:
        ratios = [b[case] / a_[case] for a_, b in rounds]
        print(
            f"| {case} | {min(x[0][case] for x in rounds):.2f} | {min(x[1][case] for x in rounds):.2f} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )


if __name__ == "__main__":
    main()
