"""python -m benchmarks --set quick|full|issue22 [--only e2e|kernels|static] [--device cpu|cuda|auto] [--busy N]

Prints a markdown report and writes it, with a JSON record and a PNG chart, under
benchmarks/results/<machine>_<date>_<set>[_<only>][_busy<N>][_rows<n>].{md,json,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import end_to_end, fair, kernels_bench, report, worker
from .busy import Spinners
from .common import (
    RESULTS,
    cpu_snapshot,
    load_data,
    machine_info,
    machine_slug,
    others_busy,
    today,
    versions,
)
from .configs import DEFAULT_REPEATS

KERNEL_REPEATS = {"quick": 5, "full": 20}
KERNEL_BUDGET_S = {"quick": 0.5, "full": 3.0}


def numba_threading_layer() -> str | None:
    """The threading layer Numba's parallel kernels ran on in this process (None if none ran)."""
    try:
        import numba

        return numba.threading_layer()
    except (ImportError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--set",
        choices=list(end_to_end.SETS),
        default="quick",
        dest="which",
        help="quick: 2 configs and 3 kernel shapes, a few minutes on 2 cores; full: the four configs of "
        "issue 13 and the kernel grid; issue22: batch 16-512 on 784-100-10 and 784-256-128-10 relu/softmax, "
        "the textbook run and 784-1024-1024-10 b1024, 5 epochs each (end to end only)",
    )
    ap.add_argument(
        "--only", choices=["e2e", "kernels", "static"], help="run only one part (static: python -m benchmarks.static)"
    )
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="auto",
        help="where gpubp and torch run (auto: the CPU, plus CUDA when a GPU is present)",
    )
    ap.add_argument("--repeats", type=int, help="timed epochs per peer (default: quick 2, full and issue22 5)")
    ap.add_argument(
        "--config",
        action="append",
        choices=list(end_to_end.CONFIGS),
        help="run only this end-to-end config (repeatable)",
    )
    ap.add_argument(
        "--peer",
        action="append",
        choices=list(worker.KINDS),
        help="run only this peer (repeatable; default: every installed one)",
    )
    ap.add_argument("--rows", type=int, default=60_000, help="training rows (default all 60,000; fewer to try it out)")
    ap.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run the set while N other processes each keep one core busy (plain spinning loops started and "
        "stopped by the harness); the results are marked as taken under that load",
    )
    ap.add_argument(
        "--busy-limit",
        type=float,
        default=6 * 3600.0,
        metavar="S",
        help="each --busy process stops by itself after S seconds even if the harness is killed (default 6 h)",
    )
    ap.add_argument(
        "--idle-reference",
        type=Path,
        metavar="JSON",
        help="with --busy: the idle result to compare with (default: the newest idle one of the same set, "
        "machine and rows in --out)",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="time every peer in this one process (the harness before issue 22) instead of a process each",
    )
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads for torch-cpu (default: all cores)")
    ap.add_argument("--no-startup", action="store_true", help="skip the JIT / start-up measurement")
    ap.add_argument(
        "--cuda-paths",
        action="store_true",
        help="also time gpubp-cuda with each path forced (layers, graph, cublas, cublas-graph, fused v1, v2) "
        "beside 'auto'",
    )
    ap.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE if set (by default the run re-executes without them)",
    )
    ap.add_argument("--no-peak", action="store_true", help="skip the float32 matmul peak measurement")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the result files")
    args = ap.parse_args(argv)
    if args.only == "static":  # the CUDA kernels read without a GPU (benchmarks/static.py)
        from . import static

        return static.main(["--out", str(args.out)])

    t_start = time.perf_counter()
    devices = end_to_end.devices_for(args.device)
    info = machine_info()
    record = {
        "set": args.which,
        "date": today(),
        "machine": info,
        "versions": versions(),
        "devices": devices,
        "e2e": [],
        "startup": [],
        "kernels": [],
        "notes": [],
        "blas_env_removed": fair.removed_overrides(),
        "blas_env_kept": ", ".join(f"{k}={os.environ[k]}" for k in fair.BLAS_OVERRIDES if k in os.environ) or None,
        "threadpools": fair.threadpools(),
        "torch": fair.torch_info(),
        "busy": args.busy,
        "process_per_peer": not args.in_process,
        "rows": args.rows,
    }
    if not args.no_peak:
        record["peak"] = fair.matmul_peak()
    print(
        f"# gpubp benchmarks, set {args.which}, devices {devices}, on {info['cpu']} "
        f"({info['cpu_threads']} threads), GPU: {info['gpu'] or 'none'}"
    )
    print("\n".join(fair.header_lines(record)))

    if args.only in (None, "e2e"):
        ok, why = end_to_end.peers_gpubp.available()
        if not ok:
            record["notes"].append(f"end-to-end skipped: {why}")
        else:
            data = load_data(args.rows)
            record["data"] = data.source
            if data.synthetic:
                record["notes"].append(
                    "end-to-end data is SYNTHETIC (Fashion-MNIST not found): "
                    "timings are valid, accuracies are chance level"
                )
            print(f"data: {data.source}, X {data.X.shape}")
            print("peers: " + ("all in this process (--in-process)" if args.in_process else "each in a fresh process"))
            repeats = args.repeats or DEFAULT_REPEATS[args.which]
            spinners = Spinners(args.busy, args.busy_limit)
            with end_to_end.Shared(data) as shared, spinners:
                if args.busy:
                    print(f"load: {args.busy} spinning process(es), pids {spinners.pids}")
                t_load, spun0 = time.perf_counter(), spinners.cpu()
                for name in args.config or end_to_end.SETS[args.which]:
                    cfg = end_to_end.CONFIGS[name]
                    r = end_to_end.run_config(
                        cfg,
                        data,
                        devices,
                        repeats,
                        args.torch_threads,
                        cuda_paths=args.cuda_paths,
                        kinds=args.peer,
                        in_process=args.in_process,
                        spinners=spinners,
                        shared=shared,
                    )
                    record["e2e"].append(r)
                    record["notes"] += r["notes"]
                if args.busy:
                    held = (spinners.cpu() - spun0) / (time.perf_counter() - t_load) / args.busy
                    record["busy_share_per_process"] = held
                    if spinners.alive() < args.busy:
                        record["notes"].append(
                            f"--busy {args.busy}: only {spinners.alive()} spinner(s) still running at the end "
                            f"(--busy-limit {args.busy_limit:.0f} s too short?)"
                        )
            if not args.no_startup:
                for dev in devices:
                    print(f"  start-up and JIT compile times, {dev} (two fresh processes)")
                    st = end_to_end.startup_times(dev)
                    record["startup"].append(st)
                    for key in ("warning", "error"):
                        if key in st:
                            record["notes"].append(f"start-up ({dev}): {st[key]}")

    if args.only in (None, "kernels") and args.which == "issue22":
        record["notes"].append("kernels: not part of set issue22 (python -m benchmarks --set full --only kernels)")
    elif args.only in (None, "kernels"):
        shapes = kernels_bench.shapes_for(args.which)
        if "cpu" in devices:
            print("kernels, CPU (gpubp @njit vs numpy):")
            before = cpu_snapshot()
            record["kernels"] += kernels_bench.bench_cpu(
                shapes, KERNEL_REPEATS[args.which], KERNEL_BUDGET_S[args.which]
            )
            busy = others_busy(before, cpu_snapshot())
            record["kernels_others_busy"] = busy
            if busy > end_to_end.BUSY_WARNING:
                record["notes"].append(f"CPU kernels: other processes kept {busy:.0%} of the machine busy")
        if "cuda" in devices:
            print("kernels, CUDA (gpubp vs CuPy):")
            rows, notes = kernels_bench.bench_cuda(shapes, KERNEL_REPEATS[args.which])
            record["kernels"] += rows
            record["notes"] += notes
        else:
            why = "--device cpu" if args.device == "cpu" else "no CUDA GPU here"
            record["notes"].append(f"CUDA kernels and the CuPy peer skipped: {why}")

    if not args.no_peak:  # measured again at the end; the run's peak is the best of the two
        again = fair.matmul_peak()
        for key in ("one_core_gflops", "all_cores_gflops"):
            if again.get(key):
                record["peak"][key] = max(record["peak"].get(key) or 0, again[key])
    if args.busy and record["e2e"]:
        record["idle_reference"] = report.idle_reference(args.out, record, args.idle_reference)
    record["versions"]["numba_threading_layer"] = numba_threading_layer()
    record["notes"] = list(dict.fromkeys(record["notes"]))  # drop repeats, keep order
    record["wall_s"] = time.perf_counter() - t_start
    stem = f"{machine_slug(info)}_{record['date']}_{args.which}" + (f"_{args.only}" if args.only else "")
    stem += (f"_busy{args.busy}" if args.busy else "") + (f"_rows{args.rows}" if args.rows != 60_000 else "")
    stem += "_in-process" if args.in_process else ""
    paths = report.write(record, args.out, stem)
    print()
    print(report.markdown(record))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    if "--keep-blas-env" not in sys.argv[1:]:  # a fair run: every BLAS picks its own kernels
        fair.reexec_without_blas_overrides(sys.argv[1:])  # (only as a program: tests never re-execute)
    raise SystemExit(main())
