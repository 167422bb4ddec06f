"""One peer in a process of its own: ``python -m benchmarks.worker SPEC`` (started by end_to_end).

Item 0 of issue 22: peers timed in one process disturbed each other (the OpenMP and BLAS thread
pools of the one that ran before were still spinning, or still held memory, when the next one
started). So each peer now lives in a fresh process that imports only what it needs (the numpy
peer's process never loads torch), and the parent asks the peers in turn for one epoch each: the
others wait, blocked on their input pipe, while one is timed.

SPEC is a JSON object: ``kind`` (gpubp, numpy, torch, sklearn, jax), ``device``, gpubp's ``path``
and ``fused_version``, ``torch_threads``, ``blas_threads`` (a threadpoolctl limit around each
epoch), ``config`` (a ``configs.Config`` as a dict) and ``data`` (the folder the parent wrote
the training rows and the initial parameters to). Requests come one JSON line at a time on stdin:
``{"op": "warmup"|"epoch"|"final"|"quit"}``; each gets one JSON line back on the process's
original stdout (anything a library prints goes to stderr).

Each timed epoch comes back with the wall time (perf_counter around the epoch alone) and what the
process did meanwhile: CPU time of all its threads (getrusage), voluntary and involuntary context
switches, and from ``/proc/self/task/*/schedstat`` each thread's time on a CPU and time spent
runnable but waiting for one (run-queue delay), for the main thread and for the others together.
A process whose CPU time grows while its work does not is spinning; run-queue delay is time a
thread wanted a core and did not get one.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

KINDS = ("gpubp", "numpy", "torch", "sklearn", "jax")


# ---------------------------------------------------------------------------------------------
# What a process did during a timed call


def thread_times() -> dict[int, tuple[int, int]]:
    """{thread id: (ns on a CPU, ns runnable but waiting for a CPU)} of this process's threads."""
    out = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            on_cpu, waiting, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
            out[int(tid)] = (int(on_cpu), int(waiting))
        except (OSError, ValueError):
            continue  # the thread ended
    return out


def measure(fn) -> dict:
    """Run ``fn()`` and return its wall time and the process's CPU use meanwhile (see the module doc)."""
    main = threading.main_thread().native_id
    th0, r0 = thread_times(), resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    r1, th1 = resource.getrusage(resource.RUSAGE_SELF), thread_times()
    main_cpu = main_wait = other_cpu = other_wait = 0
    for tid, (cpu, wait) in th1.items():
        c0, w0 = th0.get(tid, (0, 0))
        if tid == main:
            main_cpu, main_wait = cpu - c0, wait - w0
        else:
            other_cpu, other_wait = other_cpu + cpu - c0, other_wait + wait - w0
    return {
        "wall_s": wall,
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "sys_s": r1.ru_stime - r0.ru_stime,
        "voluntary_switches": r1.ru_nvcsw - r0.ru_nvcsw,
        "involuntary_switches": r1.ru_nivcsw - r0.ru_nivcsw,
        "threads": len(th1),
        "main_cpu_s": main_cpu / 1e9,
        "main_runq_s": main_wait / 1e9,
        "others_cpu_s": other_cpu / 1e9,
        "others_runq_s": other_wait / 1e9,
    }


# ---------------------------------------------------------------------------------------------
# The data and initial parameters the parent shares with every peer


def write_data(folder: Path, data) -> None:
    """Save ``common.Data`` under ``folder`` for :func:`read_data` (plain .npy files, read whole)."""
    for key in ("X", "y", "Y", "X_test", "y_test"):
        np.save(folder / f"{key}.npy", getattr(data, key))
    (folder / "source.json").write_text(json.dumps({"source": data.source, "synthetic": data.synthetic}))


def read_data(folder: Path):
    from .common import Data

    meta = json.loads((folder / "source.json").read_text())
    arrays = {key: np.load(folder / f"{key}.npy") for key in ("X", "y", "Y", "X_test", "y_test")}
    return Data(**arrays, source=meta["source"], synthetic=meta["synthetic"])


def write_params(path: Path, weights, biases) -> None:
    arrays = {f"W{l}": np.asarray(W) for l, W in enumerate(weights)}
    arrays.update({f"b{l}": np.asarray(b) for l, b in enumerate(biases)})
    np.savez(path, **arrays)


def read_params(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with np.load(path) as f:
        n = sum(1 for k in f.files if k.startswith("W"))
        return [f[f"W{l}"] for l in range(n)], [f[f"b{l}"] for l in range(n)]


# ---------------------------------------------------------------------------------------------
# One peer


def peer_name(spec: dict) -> str:
    kind, device = spec["kind"], spec.get("device", "cpu")
    if kind in ("numpy", "sklearn", "jax"):
        name = kind
    else:
        name = f"{kind}-{device}"
    path = spec.get("path", "auto")
    if kind == "gpubp" and path != "auto":
        name += f"[{path}" + (f"-v{spec['fused_version']}" if spec.get("fused_version") else "") + "]"
    if spec.get("label"):
        name += f"[{spec['label']}]"
    return name


def _config(d: dict):
    from .configs import Config

    return Config(**{f.name: d[f.name] for f in fields(Config)})


@dataclass
class PeerSession:
    """A peer with its data: ``warmup``, ``epoch``, ``final``, usable in this process or a worker's."""

    spec: dict
    data: object  # common.Data
    weights0: list
    biases0: list

    def __post_init__(self):
        from .common import accuracy

        self._accuracy = accuracy
        self.cfg = _config(self.spec["config"])
        self.name = peer_name(self.spec)
        self.obj = self._build()
        self.epochs = 0

    def _build(self):
        kind, device, cfg = self.spec["kind"], self.spec.get("device", "cpu"), self.cfg
        acts = cfg.layer_activations()
        if kind == "gpubp":
            from . import peers_gpubp

            ok, why = peers_gpubp.available()
            if not ok:
                raise RuntimeError(why)
            return peers_gpubp.GpubpMLP(
                cfg,
                self.weights0,
                self.biases0,
                device=device,
                path=self.spec.get("path", "auto"),
                fused_version=self.spec.get("fused_version"),
            )
        if kind == "numpy":
            from .peers_numpy import NumpyMLP

            return NumpyMLP(self.weights0, self.biases0, acts, cfg.loss)
        if kind == "torch":
            from . import peers_torch

            ok, why = peers_torch.available()
            if not ok:
                raise RuntimeError(why)
            return peers_torch.TorchMLP(
                self.weights0, self.biases0, acts, cfg.loss, device=device, threads=self.spec.get("torch_threads")
            )
        if kind == "sklearn":
            from . import peers_sklearn

            ok, why = peers_sklearn.available()
            if not ok:
                raise RuntimeError(why)
            return peers_sklearn.SklearnMLP(
                self.weights0, self.biases0, acts, cfg.loss, cfg.batch_size, cfg.lr, self.data.X, self.data.y
            )
        if kind == "jax":
            from . import peers_jax

            ok, why = peers_jax.available()
            if not ok:
                raise RuntimeError(why)
            return peers_jax.JaxMLP(self.weights0, self.biases0, acts, cfg.loss)
        raise ValueError(f"unknown peer kind {kind!r}")

    def _limits(self):
        n = self.spec.get("blas_threads")
        if not n:
            return nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n, user_api="blas")

    def _epoch(self):
        d, cfg = self.data, self.cfg
        labels = self.spec["kind"] == "sklearn"
        with self._limits():
            self.obj.epoch(d.X, d.y if labels else d.Y, cfg.batch_size, cfg.lr)
        self.epochs += 1

    def warmup(self, params_path: str | None = None) -> dict:
        """The untimed first epoch (JIT and XLA compiles happen here; JAX's compile is timed on its
        own first), then the parameters after it (to ``params_path``) and the test accuracy."""
        out = {"name": self.name, "pid": os.getpid()}
        if self.spec["kind"] == "jax":
            self.obj.compiled(self.data.X, self.data.Y, self.cfg.batch_size, self.cfg.lr)
            out["compile_s"] = self.obj.compile_s
        out.update(measure(self._epoch))
        w, b = self.obj.params()
        if params_path:
            write_params(Path(params_path), w, b)
        out["accuracy_after_1_epoch"] = self._accuracy(
            w, b, self.cfg.layer_activations(), self.data.X_test, self.data.y_test
        )
        out["threadpools"] = pools()
        if getattr(self.obj, "threads", None):
            out["torch_threads"] = self.obj.threads
        return out

    def epoch(self) -> dict:
        out = measure(self._epoch)
        if getattr(self.obj, "last_fit_seconds", None) is not None:
            out["in_fit_s"] = self.obj.last_fit_seconds
        return out

    def final(self) -> dict:
        w, b = self.obj.params()
        acc = self._accuracy(w, b, self.cfg.layer_activations(), self.data.X_test, self.data.y_test)
        return {"accuracy_final": acc, "epochs_trained": self.epochs}


def pools() -> list[dict]:
    """This process's BLAS and OpenMP pools as threadpoolctl sees them (owner, API, threads)."""
    try:
        from threadpoolctl import threadpool_info

        from .fair import _owner
    except ImportError:
        return []
    return [
        {
            "owner": _owner(p.get("filepath", "")),
            "user_api": p.get("user_api"),
            "internal_api": p.get("internal_api"),
            "num_threads": p.get("num_threads"),
            "architecture": p.get("architecture"),
        }
        for p in threadpool_info()
    ]


# ---------------------------------------------------------------------------------------------
# The worker process


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    reply = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's channel
    os.dup2(2, 1)  # whatever a library prints goes to stderr

    def send(obj: dict) -> None:
        reply.write(json.dumps(obj, default=float) + "\n")
        reply.flush()

    folder = Path(spec["data"])
    try:
        data = read_data(folder)
        w0, b0 = read_params(folder / spec["initial"])
        session = PeerSession(spec, data, w0, b0)
    except Exception as e:
        send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
        return 1
    send({"ready": True, "name": session.name, "pid": os.getpid()})
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            send({"bye": True})
            break
        try:
            result = getattr(session, op)(**request.get("args", {}))
        except Exception as e:
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        send(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
