"""Run file-reading cases, each in a forked child under a memory limit and a time limit.

    python tests/hostile_runner.py CASES.json RESULTS.json

Used by tests/test_hostile_files.py: gpubp is imported once, then every case runs in a child of
``fork`` (milliseconds each) whose address space may grow by at most ``limit_mb`` (RLIMIT_AS over
what the child starts with, so numpy's and numba's own mappings do not count) and which SIGALRM
kills after ``timeout`` seconds. A case is ``{"id", "call", "args"}``; ``call`` names one of
CALLS, or "cli" to run ``gpubp.cli.main(args)`` with stdout and stderr captured. Each result says
how the call ended (returned / raised / killed), the exception's class names and message, the exit
status and output of a CLI run, and how far the child's resident memory grew (VmHWM - VmRSS).
"""

import io
import json
import os
import resource
import select
import signal
import sys
import time

import numpy as np

import gpubp
from gpubp import cli, data, modelfile
from gpubp.kernels import cpu  # noqa: F401 - code a Network's first use imports, outside the measured growth


def _vm(field: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _summary(value):
    """A JSON-able description of what a call returned."""
    if isinstance(value, gpubp.Network):
        return {"sizes": value.sizes, "epochs_trained": value.epochs_trained}
    if isinstance(value, data.Dataset):
        return {"rows": [len(value.y_train), len(value.y_val), len(value.y_test)], "n_classes": value.n_classes}
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": value.dtype.name}
    if isinstance(value, modelfile.Model):
        return {"sizes": [value.weights[0].shape[1]] + [w.shape[0] for w in value.weights]}
    return repr(value)[:200]


CALLS = {
    "load_model": lambda path: gpubp.Network.load(path, device="cpu"),
    "read_model": lambda path: modelfile.read(path),
    "load_data": lambda path: data.load(path),
    "load_features": lambda path: data.load_features(path),
    "read_idx": lambda path: data.read_idx(path),
}


def _run(case: dict) -> dict:
    if case["call"] == "cli":
        out, err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = out, err
        try:
            status = cli.main([str(a) for a in case["args"]])
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        return {"outcome": "returned", "status": status, "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()}
    try:
        value = CALLS[case["call"]](*case["args"])
    except BaseException as e:  # noqa: B036 - everything, to report it
        return {
            "outcome": "raised",
            "type": type(e).__name__,
            "mro": [c.__name__ for c in type(e).__mro__],
            "message": str(e),
        }
    return {"outcome": "returned", "value": _summary(value)}


def _child(case: dict, limit: int, timeout: int, w: int) -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # start the peak (VmHWM) afresh in this child
    except OSError:
        pass
    rss0 = _vm("VmRSS")
    cap = _vm("VmSize") + limit
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.alarm(timeout)
    t = time.perf_counter()
    try:
        result = _run(case)
    except BaseException as e:  # noqa: B036 - a CLI run that escaped main()
        result = {"outcome": "escaped", "type": type(e).__name__, "message": str(e)}
    result["seconds"] = time.perf_counter() - t
    result["grew_mb"] = (_vm("VmHWM") - rss0) / 2**20
    os.write(w, json.dumps(result).encode())
    os._exit(0)


def run_case(case: dict, limit: int, timeout: int) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(case, limit, timeout, w)
        finally:
            os._exit(1)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout + 10
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if chunks:
        return json.loads(b"".join(chunks))
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return {"outcome": "killed", "message": f"child ended by {how} without a result"}


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    results = {}
    for case in spec["cases"]:
        results[case["id"]] = {**case, **run_case(case, spec["limit_mb"] << 20, spec["timeout"])}
    with open(sys.argv[2], "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
