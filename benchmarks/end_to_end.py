"""End to end: seconds per training epoch of gpubp and its peers on the same data and initial weights.

Every peer starts from gpubp's initial weights (scikit-learn's too: they are copied into coefs_),
trains on the same 60,000 rows with the same batch size and learning rate, and is timed one epoch
at a time with the peers interleaved: a warm-up round (not timed; it holds gpubp's JIT compile and
gives the accuracy after one epoch), then ``repeats`` rounds of one epoch per peer, each round
starting at the next peer so no peer always runs first. The result per peer is the median epoch.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from . import peers_gpubp, peers_sklearn, peers_torch
from .common import REPO, Data, accuracy, cpu_snapshot, cuda_available, others_busy, settle, sources_digest
from .flops import epoch_flops
from .peers_numpy import NumpyMLP


@dataclass
class Config:
    name: str
    sizes: list[int]
    activation: str
    output_activation: str | None
    loss: str
    batch_size: int
    lr: float

    def layer_activations(self) -> list[str]:
        out = self.output_activation or self.activation
        return [self.activation] * (len(self.sizes) - 2) + [out]


CONFIGS = {
    c.name: c
    for c in [
        Config("textbook 784-30-10 b10", [784, 30, 10], "sigmoid", None, "quadratic", 10, 3.0),
        Config("784-100-10 b10", [784, 100, 10], "sigmoid", None, "quadratic", 10, 3.0),
        Config("784-100-10 b128", [784, 100, 10], "sigmoid", None, "quadratic", 128, 3.0),
        Config(
            "784-1024-1024-10 relu/softmax b1024",
            [784, 1024, 1024, 10],
            "relu",
            "softmax",
            "log_likelihood",
            1024,
            0.1,
        ),
    ]
}
BUSY_WARNING = 0.1  # share of the machine used by other processes above which results are flagged

SETS = {
    "quick": ["textbook 784-30-10 b10", "784-100-10 b128"],
    "full": list(CONFIGS),
}


def devices_for(device: str) -> list[str]:
    """The devices gpubp and torch run on: "cpu"; "cuda"; "auto" = the CPU, plus CUDA when present."""
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        if not cuda_available():
            raise SystemExit("--device cuda: no CUDA GPU is usable here")
        return ["cuda"]
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def make_peers(cfg: Config, data: Data, devices: list[str], notes: list[str], torch_threads=None, cuda_paths=False):
    """[(name, object, epoch function)] for every available peer; skipped ones get a note. With
    ``cuda_paths``, gpubp-cuda also runs once per forced path (``peers_gpubp.cuda_variants``)."""
    weights, biases = peers_gpubp.initial_params(cfg)
    acts = cfg.layer_activations()
    peers, variants = [], []
    for dev in devices:
        g = peers_gpubp.GpubpMLP(cfg, weights, biases, device=dev)
        peers.append((g.name, g, lambda p=g: p.epoch(data.X, data.Y, cfg.batch_size, cfg.lr)))
        if dev == "cuda" and cuda_paths:
            for path, version in peers_gpubp.cuda_variants(cfg):
                g = peers_gpubp.GpubpMLP(cfg, weights, biases, device=dev, path=path, fused_version=version)
                variants.append((g.name, g, lambda p=g: p.epoch(data.X, data.Y, cfg.batch_size, cfg.lr)))
    if "cpu" in devices:
        n = NumpyMLP(weights, biases, acts, cfg.loss)
        peers.append((n.name, n, lambda p=n: p.epoch(data.X, data.Y, cfg.batch_size, cfg.lr)))
    else:
        notes.append("numpy and scikit-learn (CPU peers) skipped: --device cuda")
    ok, why = peers_torch.available()
    if ok:
        for dev in devices:
            if dev == "cuda" and not peers_torch.cuda_available():
                notes.append("torch-cuda skipped: torch has no CUDA support here")
                continue
            t = peers_torch.TorchMLP(weights, biases, acts, cfg.loss, device=dev, threads=torch_threads)
            peers.append((t.name, t, lambda p=t: p.epoch(data.X, data.Y, cfg.batch_size, cfg.lr)))
    else:
        notes.append(f"torch skipped: {why}")
    ok, why = peers_sklearn.available()
    if "cpu" in devices and ok:
        s = peers_sklearn.SklearnMLP(weights, biases, acts, cfg.loss, cfg.batch_size, cfg.lr, data.X, data.y)
        peers.append((s.name, s, lambda p=s: p.epoch(data.X, data.y, cfg.batch_size, cfg.lr)))
        differs = peers_sklearn.what_it_computes(acts, cfg.loss)
        if differs:
            notes.append(f"{cfg.name}: sklearn {differs}")
    elif "cpu" in devices:
        notes.append(f"sklearn skipped: {why}")
    # The forced CUDA paths warm up last: one never run on a GPU before could leave a sticky CUDA
    # error that would fail every peer after it.
    return peers + variants


def _timed(fn) -> float:
    settle()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_config(
    cfg: Config, data: Data, devices: list[str], repeats: int, torch_threads=None, log=print, cuda_paths=False
) -> dict:
    """Time ``repeats`` interleaved epochs of every peer on ``cfg``; torch uses ``torch_threads``
    threads (default: all cores, as the issue asks)."""
    notes: list[str] = []
    peers = make_peers(cfg, data, devices, notes, torch_threads, cuda_paths)
    names = [name for name, _, _ in peers]
    result = {name: {"times_s": []} for name in names}
    log(f"  {cfg.name}: peers {', '.join(names)}; warm-up epoch")
    for name, obj, epoch in peers:  # warm-up round: gpubp's JIT compile happens here
        r = result[name]
        try:
            r["warmup_s"] = _timed(epoch)
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"
            notes.append(f"{name} failed: {r['error']}")
            continue
        w, b = obj.params()
        r["accuracy_after_1_epoch"] = accuracy(w, b, cfg.layer_activations(), data.X_test, data.y_test)
        log(f"    {name:12s} warm-up {r['warmup_s']:8.3f} s  test accuracy {r['accuracy_after_1_epoch']:.4f}")
    live = [p for p in peers if "error" not in result[p[0]]]
    before = cpu_snapshot()
    for rep in range(repeats):
        order = live[rep % len(live) :] + live[: rep % len(live)]
        for name, obj, epoch in order:
            result[name]["times_s"].append(_timed(epoch))
            if getattr(obj, "last_fit_seconds", None) is not None:
                result[name].setdefault("in_fit_epoch_s", []).append(obj.last_fit_seconds)
        times = "  ".join(f"{n} {result[n]['times_s'][-1]:.3f}" for n, _, _ in order)
        log(f"    round {rep + 1}: {times}")
    busy = others_busy(before, cpu_snapshot())
    if busy > BUSY_WARNING:
        notes.append(
            f"{cfg.name}: other processes kept {busy:.0%} of the machine busy during the timed epochs; "
            "multi-threaded peers (numpy's BLAS, torch) suffer most from sharing cores: rerun when idle"
        )
    for name, obj, _ in live:
        r = result[name]
        r["median_s"] = statistics.median(r["times_s"]) if r["times_s"] else None
        r["min_s"] = min(r["times_s"]) if r["times_s"] else None
        w, b = obj.params()
        r["accuracy_final"] = accuracy(w, b, cfg.layer_activations(), data.X_test, data.y_test)
        r["epochs_trained"] = 1 + len(r["times_s"])
    flops = epoch_flops(cfg.sizes, len(data.X), cfg.batch_size)
    for r in result.values():
        if r.get("median_s"):
            r["gflops_floor_per_s"] = flops["floor"] / r["median_s"] / 1e9
    for name, obj, _ in peers:
        if getattr(obj, "threads", None):
            result[name]["threads"] = obj.threads
    return {
        "config": asdict(cfg),
        "samples": len(data.X),
        "flops": flops,
        "peers": result,
        "others_busy": busy,
        "notes": notes,
    }


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
