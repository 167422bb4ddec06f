"""The fused CUDA epoch kernels, each checked against the CPU and then timed over block sizes.

    python -m benchmarks.fused_sweep [--threads 128,256,512] [--epochs 3] [--out FOLDER]

As llm.c's dev/cuda: every version (1: ``benchmarks/variants/cuda_fused_v1.py``, 2: the library's
``kernels/cuda/fused.py``) first trains
the first 2,000 rows of the data in float64 and must match the CPU's float64 epoch path to 1e-9
(relative, in the parameters); then one float32 epoch of 60,000 rows is timed per
(configuration, version, threads), median of ``--epochs`` epochs after one warm-up. Times are
``fit``'s own per-epoch seconds (the kernel plus the shuffle's upload: ``fit`` reads the cost
back, which waits for the kernel). Needs a real GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from .common import RESULTS, cuda_available, gpu_name, load_data, machine_info, machine_slug, one_hot, today
from .end_to_end import CONFIGS

SWEEP_CONFIGS = ["textbook 784-30-10 b10", "784-100-10 b10", "784-100-10 b128"]
VERSIONS = [1, 2]
CHECK_ROWS = 2000
CHECK_TOL = 1e-9


def _net(cfg, device: str, dtype: str, path: str, threads: int = 512):
    import gpubp

    return gpubp.Network(
        cfg.sizes,
        activation=cfg.activation,
        output_activation=cfg.output_activation,
        loss=cfg.loss,
        dtype=dtype,
        device=device,
        seed=0,
        path=path,
        tuning=gpubp.Tuning(fused_threads=threads),
    )


def _flat(net) -> np.ndarray:
    return np.concatenate([p.ravel() for p in net.weights + net.biases])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fused_sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="128,256,512", help="block sizes to time (comma-separated)")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (after one warm-up)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not cuda_available():
        raise SystemExit("fused_sweep needs a real CUDA GPU")
    from gpubp.kernels import cuda as kc

    from .variants import cuda_fused_v1

    launchers = {1: cuda_fused_v1.train_batches, 2: kc.train_batches}

    data = load_data()
    Y = one_hot(data.y).astype(np.float32)
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    try:
        for name in SWEEP_CONFIGS:
            cfg = CONFIGS[name]
            X64, Y64 = data.X[:CHECK_ROWS].astype(np.float64), Y[:CHECK_ROWS].astype(np.float64)
            ref = _net(cfg, "cpu", "float64", "epoch")
            ref.fit(X64, Y64, epochs=1, batch_size=cfg.batch_size, lr=cfg.lr)
            want = _flat(ref)
            for version in VERSIONS:
                kc.train_batches = launchers[version]
                for nt in threads:
                    row = {"config": name, "version": version, "threads": nt}
                    try:
                        got = _net(cfg, "cuda", "float64", "epoch", nt)
                        got.fit(X64, Y64, epochs=1, batch_size=cfg.batch_size, lr=cfg.lr)
                        err = float(np.linalg.norm(_flat(got) - want) / np.linalg.norm(want))
                        row["rel_error_f64"] = err
                        net = _net(cfg, "cuda", "float32", "epoch", nt)
                        h = net.fit(data.X, Y, epochs=1 + args.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
                        row["epoch_s"] = h["seconds"][1:]
                        row["median_s"] = statistics.median(row["epoch_s"])
                        row["ok"] = err <= CHECK_TOL
                    except Exception as e:  # a launch that fails (resources) is a result too
                        row["error"] = f"{type(e).__name__}: {e}"
                    rows.append(row)
                    print(
                        f"{name:24s} v{version} {nt:5d} threads: "
                        + (
                            f"rel err {row['rel_error_f64']:.1e} {'ok' if row['ok'] else 'WRONG'}, "
                            f"{row['median_s'] * 1e3:8.1f} ms/epoch"
                            if "error" not in row
                            else row["error"]
                        ),
                        flush=True,
                    )
    finally:
        kc.train_batches = launchers[2]
    record = {"date": today(), "gpu": gpu_name(), "data": data.source, "check_rows": CHECK_ROWS, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{machine_slug(machine_info())}_{record['date']}_fused-sweep.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
