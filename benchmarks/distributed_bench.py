"""Data-parallel training on the CPU: seconds per epoch and the all-reduce's share, 1 and 2 ranks.

    python -m benchmarks.distributed_bench                        # the quick configurations
    python -m benchmarks.distributed_bench --config "784-100-10 b128" --rows 20000 --ranks 1,2,4

For each configuration and rank count this starts ``mpiexec -n RANKS`` (one thread per rank:
NUMBA_NUM_THREADS, OMP/OPENBLAS_NUM_THREADS = 1) on synthetic data of ``--rows`` rows of 784
features (timing does not depend on the values), trains one untimed epoch (compiling), then
times one epoch of ``fit``:
- strong scaling: the configuration's global batch, split over the ranks;
- weak scaling: a global batch of ranks x the configuration's batch (each rank keeps its rows);
- "1 process": the plain fit without a communicator ("auto": the whole-epoch @njit path), the
  baseline a distributed run has to beat.
The all-reduce's share is the time spent in ``Communicator.allreduce`` over the epoch, which
includes waiting for the slower rank; "alone" is the median of 100 all-reduces of the gradient
buffer with the ranks in step (after a barrier): the transport's own cost. Each worker prints one
JSON line from rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .end_to_end import CONFIGS, SETS

BIN = Path(sys.executable).parent
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker(spec: dict) -> None:
    """One timed epoch on every rank of MPI.COMM_WORLD (or on one process without MPI)."""
    import gpubp

    cfg = CONFIGS[spec["config"]]
    rng = np.random.default_rng(0)
    X = rng.random((spec["rows"], cfg.sizes[0]), dtype=np.float32)
    y = rng.integers(0, cfg.sizes[-1], spec["rows"])
    net = gpubp.Network(
        cfg.sizes, cfg.activation, cfg.output_activation, cfg.loss, dtype="float32", device="cpu", seed=0
    )
    comm, spent = None, [0.0]
    if spec["distributed"]:
        from gpubp import distributed

        comm = distributed.init()
        allreduce = comm.allreduce

        def timed(buffer):
            t0 = time.perf_counter()
            allreduce(buffer)
            spent[0] += time.perf_counter() - t0

        comm.allreduce = timed
    fit = dict(epochs=1, batch_size=spec["batch"], lr=cfg.lr, comm=comm)
    net.fit(X, y, **fit)  # compiles (or loads the cache)
    spent[0] = 0.0
    seconds = net.fit(X, y, **fit)["seconds"][0]
    alone = None
    if comm is not None:  # the all-reduce of the gradient buffer alone, the ranks in step: median of 100
        nabla, times = net._schedule.nabla, []
        comm.comm.Barrier()
        for _ in range(100):
            t0 = time.perf_counter()
            allreduce(nabla)
            times.append(time.perf_counter() - t0)
        alone = float(np.median(times))
    if comm is None or comm.rank == 0:
        steps = -(-spec["rows"] // spec["batch"])
        result = {**spec, "seconds": seconds, "allreduce_s": spent[0], "steps": steps, "allreduce_alone_s": alone}
        if comm is not None:
            result["ranks"], result["rows_per_rank"] = comm.size, comm.rows_per_rank
            result["gradient_bytes"] = int(net._schedule.nabla.nbytes)
        print(json.dumps(result), flush=True)


def run(spec: dict, ranks: int) -> dict:
    if spec["distributed"]:
        argv = [str(BIN / "mpiexec"), "-n", str(ranks)]
    else:
        argv = []
    argv += [sys.executable, "-m", "benchmarks.distributed_bench", "--worker", json.dumps(spec)]
    p = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", choices=list(CONFIGS), help="default: the quick set")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per epoch (default: 10,000)")
    parser.add_argument("--ranks", default="1,2", help="rank counts, e.g. 1,2 (default)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    rank_counts = [int(r) for r in args.ranks.split(",")]
    results = []
    header = ["configuration", "run", "ranks", "global batch", "s/epoch", "all-reduce share", "all-reduce alone"]
    print("| " + " | ".join(header) + " | vs 1 process |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.config or SETS["quick"]:
        batch = CONFIGS[name].batch_size
        base = run({"config": name, "rows": args.rows, "batch": batch, "distributed": False}, 1)
        results.append(base)
        print(f"| {name} | 1 process (auto) | 1 | {batch} | {base['seconds']:.3f} | - | - | 1.00 |", flush=True)
        for ranks in rank_counts:
            for kind, global_batch in (("strong", batch), ("weak", batch * ranks)):
                if kind == "weak" and ranks == 1:
                    continue
                spec = {"config": name, "rows": args.rows, "batch": global_batch, "distributed": True}
                r = run(spec, ranks)
                r["scaling"] = kind
                results.append(r)
                share = f"{r['allreduce_s'] / r['seconds']:.0%}"
                alone = f"{r['allreduce_alone_s'] * 1e6:.0f} us"
                cells = [name, kind, ranks, global_batch, f"{r['seconds']:.3f}", share, alone]
                cells.append(f"{base['seconds'] / r['seconds']:.2f}x")
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
