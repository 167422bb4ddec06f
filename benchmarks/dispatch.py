"""numba-cuda's host time for one mini-batch step's launches, read without a GPU.

``benchmarks.static.per_step`` records, in the simulator, the launches of one step (kernel, element
type, argument types). ``measure`` replays them in a subprocess with the real numba-cuda (no
simulator) and only what touches a GPU stubbed: the context (a fake one of compute capability 9.0),
loading the module, device memory (fake pointers) and cuda.core's ``launch``, the call into the
driver, which records the kernel parameters it is given instead. Each kernel is compiled for real
(NVVM). Timed, the fastest of ``repeats`` rounds, interleaved:

- ``dispatcher``: each launch as numba-cuda makes it, ``kernel[grid, block, 0](*args)`` on a
  configuration made once (what a plan held before ``Prepared``);
- ``prepared``: the same launches as ``kernels.cuda.launches.Prepared`` (what a plan holds now).

It also checks that the two give the driver the same parameters for every launch, before and after
an argument that changes per step (the gather's start row) changed, and times the dispatcher on
each launch alone (``per_launch``: device-array arguments, us). cuda.core's own ``launch``
(packing the parameters, cuLaunchKernel) is stubbed in both, so neither figure holds it.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# arguments a plan passes anew every step, by kernel: the gather's start row (gpubp.engines.CudaEngine.steps)
PER_STEP_ARGUMENTS = {"gather_batch": (3,)}


def measure(step: list, repeats: int = 200) -> dict:
    """Replay one step's launches ``[(element type, kernel name, argument specs), ...]`` in a
    subprocess (see the module docstring); the child's result as a dict, or {"skipped": why}."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        given, out = Path(folder) / "step.json", Path(folder) / "out.json"
        given.write_text(json.dumps({"step": step, "repeats": repeats}))
        env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
        cmd = [sys.executable, "-m", "benchmarks.dispatch", str(given), str(out)]
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        if done.returncode == 77:
            return {"skipped": done.stdout.strip()}
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks.dispatch failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(out.read_text())


# ---- the child: real numba-cuda, a stubbed driver ----------------------------------------------------


class _Memory:
    """Device memory as a DeviceNDArray sees it: a pointer, never dereferenced."""

    def __init__(self, pointer: int) -> None:
        self.device_ctypes_pointer = ctypes.c_void_p(pointer)


def _stub_the_gpu(launched: list) -> None:
    """Stand in for everything numba-cuda asks of a GPU on the path of a launch."""
    import cuda.core
    import numba.cuda.dispatcher as dispatcher
    from numba.cuda import codegen
    from numba.cuda.cudadrv import devices

    device = types.SimpleNamespace(id=0, compute_capability=(9, 0))
    module = types.SimpleNamespace(initialized=True)
    module.get_function = lambda name: types.SimpleNamespace(kernel=name, module=module, name=name)
    context = types.SimpleNamespace(device=device, create_module_image=lambda *a: module)
    devices.get_context = lambda devnum=None: context
    dispatcher.get_current_device = lambda: device
    codegen.CUDACodeLibrary.get_cubin = lambda self, cc=None: b""

    def launch(stream, config, kernel, *params):
        launched.append((kernel, params))

    dispatcher.launch = cuda.core.launch = launch


def _argument(spec: list, pointer: int):
    """A launch argument of this spec: a DeviceNDArray over fake memory, or a scalar."""
    import numpy as np
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    if spec[0] == "array":
        shape = (4,) * spec[2]
        strides = tuple(np.dtype(spec[1]).itemsize * 4**k for k in reversed(range(spec[2])))
        return DeviceNDArray(shape, strides, spec[1], gpu_data=_Memory(pointer))
    if spec[0] == "namedtuple":
        raise ValueError("a named tuple of arrays is the whole-epoch kernel's: not a per-step launch")
    return 3 if spec[0] == "int64" else 0.5


def _normal(params: tuple) -> list:
    """Kernel parameters as comparable values (a ctypes scalar as its type and value)."""
    return [[type(p).__name__, p.value] if isinstance(p, ctypes._SimpleCData) else p for p in params]


def child(given: Path, out: Path) -> int:
    from importlib.metadata import version

    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        print("SKIP: libNVVM not found")
        return 77
    launched: list = []
    _stub_the_gpu(launched)
    import numba

    from gpubp.kernels import cuda as kc

    try:
        from gpubp.kernels.cuda.launches import Prepared
    except ImportError:  # a tree from before Prepared launches (HOST_BEFORE's): the dispatcher only
        Prepared = None

    data = json.loads(given.read_text())
    step, repeats = data["step"], data["repeats"]
    calls = []  # per launch: its dispatcher configuration, its Prepared, its arguments, which change per step
    for i, (t, name, specs) in enumerate(step):
        kernel = getattr(kc.builds(getattr(numba, t)), name)
        args = [_argument(s, 0x10000 * (i * 16 + j + 1)) for j, s in enumerate(specs)]
        changing = PER_STEP_ARGUMENTS.get(name, ())
        calls.append(types.SimpleNamespace(name=name, dispatcher=kernel[1, 32, 0], args=args, changing=changing))
        calls[-1].prepared = Prepared(kernel, kernel[1, 32, 0]) if Prepared else None

    def arguments(call, s: int) -> tuple:
        return tuple(s if j in call.changing else a for j, a in enumerate(call.args))

    # the same parameters at the first call (through the dispatcher), the second (kept) and after a
    # per-step argument changed
    mismatches = []
    for call in calls if Prepared else ():
        for s in (3, 3, 5):
            launched.clear()
            call.dispatcher(*arguments(call, s))
            call.prepared(*arguments(call, s))
            (_, by_dispatcher), (_, by_prepared) = launched
            if _normal(by_dispatcher) != _normal(by_prepared):
                mismatches.append({"kernel": call.name, "start": s})

    def round_of(how: str) -> float:
        t0 = time.perf_counter()
        for s in range(20):
            for call in calls:
                getattr(call, how)(*arguments(call, s))
        return (time.perf_counter() - t0) / 20

    best = {"dispatcher": float("inf"), "prepared": float("inf")} if Prepared else {"dispatcher": float("inf")}
    for _ in range(repeats // 20 or 1):
        for how in best:
            best[how] = min(best[how], round_of(how))
    per_launch = []  # (device-array arguments, dispatcher us) of each launch alone
    for call in calls:
        fastest = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for s in range(40):
                call.dispatcher(*arguments(call, s))
            fastest = min(fastest, (time.perf_counter() - t0) / 40)
        per_launch.append((sum(1 for a in call.args if hasattr(a, "gpu_data")), 1e6 * fastest))
    out.write_text(
        json.dumps(
            {
                "launches": len(calls),
                "array_args": sum(x for x, _ in per_launch),
                "dispatcher_us_per_step": 1e6 * best["dispatcher"],
                "prepared_us_per_step": 1e6 * best["prepared"] if Prepared else None,
                "kept": sum(bool(call.prepared and call.prepared.kept) for call in calls),
                "mismatches": mismatches,
                "per_launch": per_launch,
                "numba_cuda": version("numba-cuda"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(child(Path(sys.argv[1]), Path(sys.argv[2])))
