"""End to end: seconds per training epoch of gpubp and its peers on the same data and initial weights.

Every peer starts from gpubp's initial weights (scikit-learn's too: they are copied into coefs_),
trains on the same rows with the same batch size and learning rate, and is timed one epoch at a
time with the peers interleaved. Each peer runs in a fresh process of its own (``worker.py``;
``in_process=True`` keeps the old way, every peer in this process, for comparison): the parent
writes the data and the initial parameters to a temporary folder, starts one worker per peer, and
asks them in turn for an epoch while the others wait on their input pipe.

A warm-up round (not timed into the result; it holds gpubp's JIT compile and JAX's XLA compile,
which is timed on its own, and gives the accuracy and the parameters after one epoch), then
``repeats`` rounds of one epoch per peer, each round starting at the next peer so no peer always
runs first. The result per peer is the median epoch; the spread is the slowest epoch over the
fastest. Each epoch also records the peer's CPU time and run-queue delay (``worker.measure``),
the CPU the other peers' idle processes used meanwhile, and the share of the machine used by
other processes (the ``--busy`` spinners are counted apart).

Validation: gpubp, numpy, torch and JAX see the same mini-batches in the same order, so after the
warm-up epoch their parameters should agree with the numpy peer's up to float32 rounding; the
result records ``rel_diff_vs_numpy`` = ||p - p_numpy|| / ||p_numpy - p_initial|| over all weights
and biases (the difference relative to how far the epoch moved them). scikit-learn shuffles with
its own generator (and for the quadratic configurations trains another cost) and is not compared.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import busy as busy_mod
from . import peers_gpubp, worker
from .common import REPO, Data, cpu_snapshot, cuda_available, others_busy, settle, sources_digest
from .configs import CONFIGS, SETS, Config  # noqa: F401  (re-exported: distributed_bench, fused_sweep)
from .flops import epoch_flops

BUSY_WARNING = 0.1  # share of the machine used by other processes above which results are flagged
VALIDATE_MAX = 1e-2  # rel_diff_vs_numpy above this is flagged in the notes
CALL_TIMEOUT_S = 1800.0  # one warm-up or epoch of one peer (a cold compile under load is slow)


def devices_for(device: str) -> list[str]:
    """The devices gpubp and torch run on: "cpu"; "cuda"; "auto" = the CPU, plus CUDA when present."""
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        if not cuda_available():
            raise SystemExit("--device cuda: no CUDA GPU is usable here")
        return ["cuda"]
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def plan_peers(
    cfg: Config, devices: list[str], notes: list[str], torch_threads=None, cuda_paths=False, kinds=None
) -> list[dict]:
    """The worker specs of every available peer (``kinds`` keeps only those kinds); skipped ones
    get a note. With ``cuda_paths``, gpubp-cuda also runs once per forced path."""
    want = set(kinds or worker.KINDS)
    specs, variants = [], []
    base = {"config": asdict(cfg), "torch_threads": torch_threads}
    if "gpubp" in want:
        for dev in devices:
            specs.append({**base, "kind": "gpubp", "device": dev})
            if dev == "cuda" and cuda_paths:
                for path, version in peers_gpubp.cuda_variants(cfg):
                    variants.append({**base, "kind": "gpubp", "device": dev, "path": path, "fused_version": version})
    cpu = "cpu" in devices
    if "numpy" in want:
        if cpu:
            specs.append({**base, "kind": "numpy"})
        else:
            notes.append("numpy, scikit-learn and JAX (CPU peers) skipped: --device cuda")
    if "torch" in want:
        if not _installed("torch"):
            notes.append("torch skipped: torch is not installed (pip install '.[bench]')")
        else:
            for dev in devices:
                if dev == "cuda":
                    import torch

                    if not torch.cuda.is_available():
                        notes.append("torch-cuda skipped: torch has no CUDA support here")
                        continue
                specs.append({**base, "kind": "torch", "device": dev})
    if "sklearn" in want and cpu:
        if not _installed("sklearn"):
            notes.append("sklearn skipped: scikit-learn is not installed")
        else:
            from . import peers_sklearn

            specs.append({**base, "kind": "sklearn"})
            differs = peers_sklearn.what_it_computes(cfg.layer_activations(), cfg.loss)
            if differs:
                notes.append(f"{cfg.name}: sklearn {differs}")
    if "jax" in want and cpu:
        if not _installed("jax"):
            notes.append("jax skipped: jax is not installed (pip install '.[bench]')")
        else:
            specs.append({**base, "kind": "jax"})
    # The forced CUDA paths warm up last: one never run on a GPU before could leave a sticky CUDA
    # error (in its own process now, but its warm-up would still slow the round down).
    return specs + variants


# ---------------------------------------------------------------------------------------------
# A peer in a worker process, or (in_process) in this one


class WorkerError(RuntimeError):
    pass


class ProcessPeer:
    """A peer in a fresh ``python -m benchmarks.worker`` process (see worker.py)."""

    def __init__(self, spec: dict, folder: Path):
        self.spec, self.name = spec, worker.peer_name(spec)
        self.stderr_path = folder / f"stderr-{len(list(folder.glob('stderr-*')))}.txt"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", json.dumps({**spec, "data": str(folder)})],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            if not ready:
                self.proc.kill()
            tail = self.stderr_path.read_text()[-2000:] if self.stderr_path.exists() else ""
            why = "timed out" if not ready else f"exited with {self.proc.wait()}"
            raise WorkerError(f"{self.name}: worker {why}; its stderr ends: {tail.strip()[-1500:]}")
        out = json.loads(line)
        if "error" in out:
            where = [ln.strip() for ln in out.get("traceback", "").splitlines() if ln.strip().startswith("File ")]
            raise WorkerError(f"{self.name}: {out['error']}" + (f" (at {where[-1]})" if where else ""))
        return out

    def ready(self, timeout: float = CALL_TIMEOUT_S) -> dict:
        return self._read(timeout)

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def cpu(self) -> float | None:
        return busy_mod.cpu_seconds(self.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class LocalPeer:
    """The same interface with the peer in this process (the harness before issue 22)."""

    def __init__(self, spec: dict, folder: Path, data: Data):
        self.spec, self.name, self.pid = spec, worker.peer_name(spec), os.getpid()
        w0, b0 = worker.read_params(folder / spec["initial"])
        try:
            self.session = worker.PeerSession(spec, data, w0, b0)
        except Exception as e:
            raise WorkerError(f"{self.name}: {type(e).__name__}: {e}") from e

    def ready(self, timeout: float = 0) -> dict:
        return {"ready": True, "name": self.name, "pid": self.pid}

    def call(self, op: str, timeout: float = 0, **args) -> dict:
        try:
            return getattr(self.session, op)(**args)
        except Exception as e:
            raise WorkerError(f"{self.name}: {type(e).__name__}: {e}") from e

    def cpu(self) -> float | None:
        return None  # one process for all: not separable

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# One configuration


def rel_diff(params, reference, initial) -> float:
    """||p - ref|| / ||ref - initial|| over all weights and biases (float64)."""
    num = den = 0.0
    for p, r, i in zip(params, reference, initial, strict=True):
        r64 = np.asarray(r, np.float64)
        num += float(np.sum((np.asarray(p, np.float64) - r64) ** 2))
        den += float(np.sum((r64 - np.asarray(i, np.float64)) ** 2))
    return (num / den) ** 0.5 if den > 0 else float("nan")


def spread(times: list[float]) -> float | None:
    return max(times) / min(times) if times and min(times) > 0 else None


class Shared:
    """The temporary folder the parent shares with its workers: the data, written once."""

    def __init__(self, data: Data):
        self._tmp = tempfile.TemporaryDirectory(prefix="gpubp-bench-")
        self.folder = Path(self._tmp.name)
        self.data = data
        worker.write_data(self.folder, data)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Shared:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_config(
    cfg: Config,
    data: Data,
    devices: list[str],
    repeats: int,
    torch_threads=None,
    log=print,
    cuda_paths=False,
    *,
    kinds=None,
    in_process: bool = False,
    spinners: busy_mod.Spinners | None = None,
    shared: Shared | None = None,
) -> dict:
    """Time ``repeats`` interleaved epochs of every peer on ``cfg``, each peer in its own process
    (``in_process``: all in this one); torch uses ``torch_threads`` threads (default: all cores)."""
    own = shared is None
    shared = shared or Shared(data)
    try:
        return _run_config(
            cfg, data, devices, repeats, torch_threads, log, cuda_paths, kinds, in_process, spinners, shared
        )
    finally:
        if own:
            shared.close()


def _run_config(cfg, data, devices, repeats, torch_threads, log, cuda_paths, kinds, in_process, spinners, shared):
    notes: list[str] = []
    folder = shared.folder
    specs = plan_peers(cfg, devices, notes, torch_threads, cuda_paths, kinds)
    weights0, biases0 = peers_gpubp.initial_params(cfg)
    worker.write_params(folder / "initial.npz", weights0, biases0)
    for spec in specs:
        spec["initial"] = "initial.npz"
    result: dict[str, dict] = {}
    peers: list = []
    for spec in specs:  # workers start together; nothing is timed while they import
        name = worker.peer_name(spec)
        result[name] = {"times_s": [], "epochs": [], "kind": spec["kind"]}
        try:
            peers.append(LocalPeer(spec, folder, data) if in_process else ProcessPeer(spec, folder))
        except WorkerError as e:
            result[name]["error"] = str(e)
            notes.append(f"{name} failed: {e}")
    try:
        live = []
        for p in peers:
            try:
                p.ready()
                live.append(p)
            except WorkerError as e:
                result[p.name]["error"] = str(e)
                notes.append(f"{p.name} failed: {e}")
        names = [p.name for p in live]
        log(f"  {cfg.name}: peers {', '.join(names)} ({'one process' if in_process else 'a process each'}); warm-up")
        warm = []
        for p in live:  # warm-up round: gpubp's JIT and JAX's XLA compile happen here
            r = result[p.name]
            settle()
            try:
                w = p.call("warmup", params_path=str(folder / f"after1-{len(warm)}.npz"))
            except WorkerError as e:
                r["error"] = str(e)
                notes.append(f"{p.name} failed: {e}")
                continue
            r["warmup_s"] = w["wall_s"]
            r["accuracy_after_1_epoch"] = w["accuracy_after_1_epoch"]
            r["threadpools"] = w.get("threadpools")
            if "compile_s" in w:
                r["compile_s"] = w["compile_s"]
            if "torch_threads" in w:
                r["threads"] = w["torch_threads"]
            r["_after1"] = folder / f"after1-{len(warm)}.npz"
            warm.append(p)
            extra = f"  XLA compile {w['compile_s']:.2f} s" if "compile_s" in w else ""
            log(
                f"    {p.name:12s} warm-up {w['wall_s']:8.3f} s  test accuracy {w['accuracy_after_1_epoch']:.4f}{extra}"
            )
        _validate(result, weights0, biases0, notes)
        t_set, before = time.perf_counter(), cpu_snapshot()
        for rep in range(repeats):
            order = warm[rep % len(warm) :] + warm[: rep % len(warm)] if warm else []
            line = []
            for p in order:
                r = result[p.name]
                if "error" in r:
                    continue
                try:
                    e = _timed_epoch(p, [q for q in warm if q is not p], spinners)
                except WorkerError as err:
                    r["error"] = str(err)
                    notes.append(f"{p.name} failed: {err}")
                    continue
                r["epochs"].append(e)
                r["times_s"].append(e["wall_s"])
                if e.get("in_fit_s") is not None:
                    r.setdefault("in_fit_epoch_s", []).append(e["in_fit_s"])
                line.append(f"{p.name} {e['wall_s']:.3f}")
            log(f"    round {rep + 1}: " + "  ".join(line))
        for p in warm:
            r = result[p.name]
            if "error" in r:
                continue
            try:
                r.update(p.call("final"))
            except WorkerError as e:
                r["error"] = str(e)
    finally:
        for p in peers:
            p.close()
    busy = _others_share(result, before, cpu_snapshot(), time.perf_counter() - t_set, in_process)
    if busy > BUSY_WARNING:
        notes.append(
            f"{cfg.name}: other processes kept {busy:.0%} of the machine busy during the timed epochs"
            + (" (besides the --busy spinners)" if spinners and spinners.n else "")
            + "; multi-threaded peers suffer most from sharing cores: rerun when idle"
        )
    flops = epoch_flops(cfg.sizes, len(data.X), cfg.batch_size)
    for r in result.values():
        r.pop("_after1", None)
        t = r["times_s"]
        if t:
            r["median_s"] = statistics.median(t)
            r["min_s"] = min(t)
            r["spread"] = spread(t)
            r["gflops_floor_per_s"] = flops["floor"] / r["median_s"] / 1e9
            cpu = [e["cpu_s"] for e in r["epochs"]]
            r["cpu_per_wall"] = statistics.median(c / w for c, w in zip(cpu, t))
    out = {
        "config": asdict(cfg),
        "samples": len(data.X),
        "flops": flops,
        "peers": result,
        "others_busy": busy,
        "process_per_peer": not in_process,
        "notes": notes,
    }
    if spinners and spinners.n:
        out["busy_processes"] = spinners.n
    return out


def _timed_epoch(p, idle: list, spinners) -> dict:
    """One epoch of ``p`` with the machine measured around it: the CPU the idle peers' processes
    and the spinners used, and the share of the machine used by every other process."""
    settle()
    idle0 = [q.cpu() for q in idle]
    spin0 = spinners.cpu() if spinners else 0.0
    own0, snap0 = p.cpu(), cpu_snapshot()
    e = p.call("epoch")
    snap1, own1 = cpu_snapshot(), p.cpu()
    spin1 = spinners.cpu() if spinners else 0.0
    idle1 = [q.cpu() for q in idle]
    wall = snap1[0] - snap0[0]
    idle_cpu = sum(b - a for a, b in zip(idle0, idle1) if a is not None and b is not None)
    e["idle_peers_cpu_s"] = idle_cpu if p.pid != os.getpid() else None
    e["spinners_cpu_s"] = spin1 - spin0
    # everything the machine did in the window but this peer, this process and our spinners
    mine = (own1 - own0) if own0 is not None and own1 is not None else 0.0
    machine = snap1[1] - snap0[1]
    parent = snap1[2] - snap0[2]
    others = machine - mine - parent - e["spinners_cpu_s"]
    e["others_share"] = max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else None
    return e


def _others_share(result, before, after, wall, in_process) -> float:
    """Share of the machine used by other processes over the timed rounds (not our peers' or spinners')."""
    if in_process:
        return others_busy(before, after)
    shares = [
        (e["others_share"], e["wall_s"])
        for r in result.values()
        for e in r["epochs"]
        if e.get("others_share") is not None
    ]
    total = sum(w for _, w in shares)
    return sum(s * w for s, w in shares) / total if total else others_busy(before, after)


def _validate(result: dict, weights0, biases0, notes: list[str]) -> None:
    """rel_diff_vs_numpy of every peer that trained the same batches (all but scikit-learn)."""
    ref = result.get("numpy", {}).get("_after1")
    if ref is None:
        return
    rw, rb = worker.read_params(ref)
    for name, r in result.items():
        if name == "numpy" or r.get("kind") == "sklearn" or "_after1" not in r:
            continue
        w, b = worker.read_params(r["_after1"])
        d = rel_diff(w + b, rw + rb, list(weights0) + list(biases0))
        r["rel_diff_vs_numpy"] = d
        if not d <= VALIDATE_MAX:
            notes.append(
                f"{name}: parameters after the first epoch differ from numpy's by {d:.2g} of the epoch's change"
            )


# ---------------------------------------------------------------------------------------------
# Start-up


def startup_times(device: str) -> dict:
    """gpubp's JIT compile and start-up times, each in a fresh process.

    Two processes share one empty NUMBA_CACHE_DIR: the first compiles every kernel (cold cache) and
    writes the cache, the second loads it (warm cache). Each reports the time from its launch to
    the end of its first training step (one mini-batch of the textbook network) and the time of a
    second step; the JIT compile time is the cold first fit less the warm first fit.
    """
    out = {"device": device, "sources": sources_digest()}
    with tempfile.TemporaryDirectory(prefix="gpubp-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            launched = time.time()
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.startup_probe", repr(launched), device],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode != 0:
                out["error"] = f"{label} probe failed: {proc.stderr.strip()[-2000:]}"
                return out
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    if sources_digest() != out["sources"]:
        out["warning"] = "gpubp's sources changed during the start-up measurement (the warm run recompiled)"
    out["jit_compile_s"] = out["cold"]["first_fit_s"] - out["warm"]["first_fit_s"]
    out["warm_start_to_first_step_s"] = out["warm"]["first_step_done"]
    out["cold_start_to_first_step_s"] = out["cold"]["first_step_done"]
    return out
