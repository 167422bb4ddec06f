"""Two measurements behind issue 22's harness and diagnosis (``benchmarks/NOTES.md``, "Issue 22").

``python -m benchmarks.probes isolation``: does timing every peer in one process change what they
measure? Alternates rounds of the end-to-end harness with every peer in this one process (the
harness before issue 22) and with each peer in a fresh process of its own, and prints each peer's
median epoch in both and their ratio.

``python -m benchmarks.probes calls``: the same question for one BLAS call: each of a few thousand
128x784 @ 784x100 products timed on its own, with OpenBLAS's threads and with one, per --busy
level (median, tail, and the CPU time the process used for them).

``python -m benchmarks.probes load``: why gpubp's epoch collapses when another process holds a
core. With 0, 1, 2 ... spinning processes (``--busy``), each variant runs in a fresh process: a
warm-up epoch, then ``--epochs`` timed ones, the variants interleaved over ``--rounds`` rounds:

- ``as-is``: OpenBLAS with its own thread count (one per core);
- ``threadpoolctl-1``: ``threadpool_limits(1, "blas")`` around each epoch (around ``fit``);
- ``env-1``: ``OPENBLAS_NUM_THREADS=1`` for the process;
- ``timeout-4``: ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's idle workers go to sleep after 2^4
  cycles instead of spinning for 2^28 (~0.1 s) between calls;

each for gpubp and, as a control on the same OpenBLAS, the numpy peer. Per epoch it records the
wall time, the CPU time of the process (all threads; ``sys`` separately, where ``sched_yield``
shows), involuntary context switches, and each thread's run-queue delay (time runnable but
without a core) from ``/proc/self/task/*/schedstat``. Spinning shows as CPU time growing while
the work stays the same.

Both write a JSON record to ``--out`` (default: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from . import end_to_end, fair
from .busy import Spinners
from .common import cpu_snapshot, load_data, machine_info, others_busy, settle, today, versions
from .configs import CONFIGS

VARIANTS = {
    "as-is": ({}, None),
    "threadpoolctl-1": ({}, 1),
    "env-1": ({"OPENBLAS_NUM_THREADS": "1"}, None),
    "timeout-4": ({"OPENBLAS_THREAD_TIMEOUT": "4"}, None),
}
FIELDS = (
    "wall_s",
    "cpu_s",
    "sys_s",
    "involuntary_switches",
    "main_cpu_s",
    "main_runq_s",
    "others_cpu_s",
    "others_runq_s",
)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------
# isolation


def isolation(args) -> dict:
    data = load_data(args.rows)
    devices = ["cpu"]
    out = {"probe": "isolation", "configs": {}}
    with end_to_end.Shared(data) as shared:
        for name in args.config or ["textbook 784-30-10 b10"]:
            cfg = CONFIGS[name]
            runs = {"one process": [], "a process each": []}
            for rnd in range(args.rounds):
                modes = [True, False] if rnd % 2 == 0 else [False, True]
                for in_process in modes:
                    label = "one process" if in_process else "a process each"
                    r = end_to_end.run_config(
                        cfg,
                        data,
                        devices,
                        args.repeats,
                        kinds=args.peer,
                        in_process=in_process,
                        shared=shared,
                        log=lambda s: None,
                    )
                    medians = {p: v.get("median_s") for p, v in r["peers"].items()}
                    runs[label].append({"medians": medians, "others_busy": r["others_busy"]})
                    print(
                        f"  {name}, round {rnd + 1}, {label}: "
                        + "  ".join(f"{p} {t:.3f}" for p, t in medians.items() if t)
                        + f"  (others {r['others_busy']:.0%})",
                        flush=True,
                    )
            peers = list(runs["a process each"][0]["medians"])
            summary = {}
            for p in peers:
                one = _median(run["medians"].get(p) for run in runs["one process"])
                own = _median(run["medians"].get(p) for run in runs["a process each"])
                summary[p] = {"one_process_s": one, "own_process_s": own, "ratio": one / own if one and own else None}
            out["configs"][name] = {"runs": runs, "summary": summary}
            print(f"\n{name}: median epoch over {args.rounds} rounds of {args.repeats} epochs")
            print("| peer | all in one process s | each in its own s | one / own |")
            print("|---|---:|---:|---:|")
            for p, s in summary.items():
                print(f"| {p} | {s['one_process_s']:.3f} | {s['own_process_s']:.3f} | {s['ratio']:.2f} |")
    return out


# ---------------------------------------------------------------------------------------------
# load


def _one(spec: dict, shared: end_to_end.Shared, env: dict, epochs: int) -> dict:
    """A fresh worker process with ``env`` added: warm-up, then ``epochs`` measured epochs."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        peer = end_to_end.ProcessPeer(spec, shared.folder)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        peer.ready()
        settle()
        w = peer.call("warmup")
        epochs_out = []
        for _ in range(epochs):
            settle()
            before = cpu_snapshot()
            e = peer.call("epoch")
            e["machine_busy"] = others_busy(before, cpu_snapshot())  # every process but this one
            epochs_out.append(e)
        pools = [f"{p['owner']} {p['internal_api']} {p['num_threads']}" for p in w.get("threadpools") or []]
        return {"epochs": epochs_out, "pools_after_warmup": pools}
    finally:
        peer.close()


def load(args) -> dict:
    cfg = CONFIGS[args.config[0] if args.config else "784-100-10 b128"]
    data = load_data(args.rows)
    kinds = args.peer or ["gpubp", "numpy"]
    variants = args.variant or list(VARIANTS)
    out = {"probe": "load", "config": cfg.name, "rows": args.rows, "results": []}
    with end_to_end.Shared(data) as shared:
        weights0, biases0 = end_to_end.peers_gpubp.initial_params(cfg)
        end_to_end.worker.write_params(shared.folder / "initial.npz", weights0, biases0)
        for n in args.busy:
            cells: dict[tuple[str, str], list[dict]] = {}
            with Spinners(n) as spinners:
                for rnd in range(args.rounds):
                    order = [(k, v) for k in kinds for v in variants]
                    order = order[rnd % len(order) :] + order[: rnd % len(order)]
                    for kind, variant in order:
                        env, limit = VARIANTS[variant]
                        spec = {
                            "kind": kind,
                            "config": end_to_end.asdict(cfg),
                            "initial": "initial.npz",
                            "blas_threads": limit,
                        }
                        spun = spinners.cpu()
                        t0 = time.perf_counter()
                        r = _one(spec, shared, env, args.epochs)
                        held = (spinners.cpu() - spun) / (time.perf_counter() - t0) / n if n else None
                        for e in r["epochs"]:
                            e["spinner_share"] = held
                        cells.setdefault((kind, variant), []).extend(r["epochs"])
                        walls = " ".join(f"{e['wall_s']:.3f}" for e in r["epochs"])
                        cpus = " ".join(f"{e['cpu_s']:.3f}" for e in r["epochs"])
                        print(
                            f"  busy {n} round {rnd + 1} {kind:6s} {variant:16s} wall {walls}  cpu {cpus}  "
                            f"pools {', '.join(r['pools_after_warmup'])}",
                            flush=True,
                        )
            for (kind, variant), epochs in cells.items():
                row = {"busy": n, "peer": kind, "variant": variant, "epochs": epochs}
                for f in FIELDS:
                    row[f] = _median(e[f] for e in epochs)
                row["spread"] = max(e["wall_s"] for e in epochs) / min(e["wall_s"] for e in epochs)
                row["machine_busy"] = _median(e["machine_busy"] for e in epochs)
                out["results"].append(row)
    print(f"\n{cfg.name}, {args.rows} rows: medians over {args.rounds} rounds x {args.epochs} epochs")
    print(
        "| busy | peer | BLAS | epoch s | spread | CPU s | sys s | CPU/wall | main CPU s | main run-queue s "
        "| other threads CPU s | their run-queue s | invol. switches | machine busy |"
    )
    print("|" + "---|" * 14)
    for r in out["results"]:
        print(
            f"| {r['busy']} | {r['peer']} | {r['variant']} | {r['wall_s']:.3f} | {r['spread']:.2f} | {r['cpu_s']:.3f} "
            f"| {r['sys_s']:.3f} | {r['cpu_s'] / r['wall_s']:.2f} | {r['main_cpu_s']:.3f} | {r['main_runq_s']:.3f} "
            f"| {r['others_cpu_s']:.3f} | {r['others_runq_s']:.3f} | {r['involuntary_switches']:.0f} "
            f"| {r['machine_busy']:.0%} |"
        )
    return out


# ---------------------------------------------------------------------------------------------
# calls


def calls(args) -> dict:
    """Each call of one forward product of 784-100-10 at batch 128 (numpy's OpenBLAS, float32), timed
    one by one, with OpenBLAS's own thread count and with one thread, at each --busy level: the
    per-call cost of handing half of each product to a second thread, and its tail."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((128, 784), dtype=np.float32)
    w = rng.random((100, 784), dtype=np.float32)
    out = {"probe": "calls", "shape": "128x784 @ 784x100 (np.dot, float32)", "n": args.calls, "results": []}

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            np.dot(a, w.T)
            times.append(time.perf_counter() - t0)
        return times

    print(f"{out['shape']}, {args.calls} calls each, interleaved over {args.rounds} rounds")
    print("| busy | BLAS threads | median us | p90 us | p99 us | max ms | calls over 1 ms | total ms | CPU ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.busy:
        cells: dict[str, dict] = {}
        with Spinners(n):
            run(200)  # warm-up: the pool started, the data in cache
            for rnd in range(args.rounds):
                for label in ["as-is", "1"] if rnd % 2 == 0 else ["1", "as-is"]:
                    settle()
                    cpu0 = time.process_time()
                    if label == "1":
                        with threadpool_limits(limits=1, user_api="blas"):
                            t = run(args.calls)
                    else:
                        t = run(args.calls)
                    c = cells.setdefault(label, {"times": [], "cpu": 0.0})
                    c["times"] += t
                    c["cpu"] += time.process_time() - cpu0
        for label, c in cells.items():
            t = sorted(c["times"])
            q = lambda f, t=t: t[min(len(t) - 1, int(f * len(t)))]  # noqa: E731
            row = {
                "busy": n,
                "blas_threads": label,
                "median_us": q(0.5) * 1e6,
                "p90_us": q(0.9) * 1e6,
                "p99_us": q(0.99) * 1e6,
                "max_ms": t[-1] * 1e3,
                "over_1ms": sum(x > 1e-3 for x in t) / len(t),
                "total_ms": sum(t) * 1e3 / args.rounds,
                "cpu_ms": c["cpu"] * 1e3 / args.rounds,
            }
            out["results"].append(row)
            print(
                f"| {n} | {label} | {row['median_us']:.0f} | {row['p90_us']:.0f} | {row['p99_us']:.0f} "
                f"| {row['max_ms']:.2f} | {100 * row['over_1ms']:.1f}% | {row['total_ms']:.0f} | {row['cpu_ms']:.0f} |",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probes", description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["isolation", "load", "calls"])
    ap.add_argument("--config", action="append", choices=list(CONFIGS))
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="isolation: timed epochs per peer per run")
    ap.add_argument("--epochs", type=int, default=3, help="load: timed epochs per process")
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="load: spinning processes, each level")
    ap.add_argument("--peer", action="append", choices=list(end_to_end.worker.KINDS))
    ap.add_argument("--variant", action="append", choices=list(VARIANTS), help="load: BLAS variants (default all)")
    ap.add_argument("--calls", type=int, default=2000, help="calls: products timed per round and variant")
    ap.add_argument("--out", type=Path, help="write the JSON record here")
    args = ap.parse_args(argv)
    record = {"date": today(), "machine": machine_info(), "versions": versions(), "args": vars(args) | {"out": None}}
    record["threadpools"] = fair.threadpools()
    record["blas_env_removed"] = fair.removed_overrides()
    record.update({"isolation": isolation, "load": load, "calls": calls}[args.probe](args))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    fair.reexec_without_blas_overrides(sys.argv[1:], "benchmarks.probes")  # the harness's fair environment
    raise SystemExit(main())
