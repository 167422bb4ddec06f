"""python -m benchmarks.static [--out DIR] [--no-write]: the CUDA kernels read without a GPU.

Every kernel a fit launches (recorded from small fits of every Execution in Numba's CUDA
simulator, with its block size) is compiled to PTX for sm_90, assembled by ``ptxas`` (the
nvidia-cuda-nvcc wheel) and disassembled by ``nvdisasm`` (the nvidia-cuda-nvdisasm wheel). For
each: registers, spill bytes, static shared memory, blocks per H100 multiprocessor at the block
size gpubp launches it with, and in its innermost loops that hold FFMA (DFMA in float64) the SASS
instructions per FFMA: overall (all such loops' instructions over all their FFMA) and per product
loop (one of at least ``PRODUCT_FFMA`` FFMA). The counts are static: each loop body counted once,
not weighted by its trip count.

For every Execution: kernel launches and device-array launch arguments per mini-batch step, and
the host microseconds per step of epochs whose launches are stubbed out (in the simulator: gpubp's
own Python per step, without Numba's dispatcher, whose cost numba-cuda puts at ~6.6 us plus
~3.5 us per array argument on a fast host; ``DISPATCH_US`` below), beside the same measured on
the tree before issue 20 item 3 (``HOST_BEFORE``). Then the cost model's
predicted seconds per epoch on an H100, if ``gpubp.schedule`` has one (``COST_MODEL``).

``tests/launches.py`` and the PTX/resource tests call the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import dispatch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
ARCH = "sm_90"
ELEMENT_TYPES = ("float32", "float64", "int64")
PRODUCT_FFMA = 4  # an innermost loop with at least this many FFMA is a product loop
# an H100 (sm_90) multiprocessor
SM_REGISTERS, SM_THREADS, SM_BLOCKS, SM_SHARED = 65536, 2048, 32, 228 * 1024
BLOCK_SHARED_RESERVED = 1024  # bytes the driver reserves per block on sm_80+
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
DISPATCH_US = (6.6, 3.5)  # numba-cuda's launch cost on a fast host: per launch, per array argument (assumption)
# per_step (launches and GEMMs stubbed, the fastest of 30 epochs of 2000 rows) on the tree before issue 20
# item 3 (commit f2edeb4, a worktree, this file's per_step loaded beside it), on this VM (2 shared cores)
# (the fastest of three runs, 2026-12-03; each run's minimum varied by up to 1.5x with the load);
# numba_cuda_us_per_step: benchmarks.dispatch on one step of that worktree (its kernels, the dispatcher),
# the fastest of three runs alternating with this tree's, 2026-12-04 (each run 445-951 us, 344-462 us;
# a lower bound: that tree sliced the order per step, a new device array the dispatcher typed each time)
HOST_BEFORE = {
    "commit": "f2edeb4", "rows": 2000, "repeats": 30,
    "paths": {
        "layers": {"launches_per_step": 12.005, "array_args_per_step": 42.01, "host_us_per_step_stubbed": 46.8,
                   "numba_cuda_us_per_step": 445},
        "epoch": {"launches_per_step": 0.010, "array_args_per_step": 0.08, "host_us_per_step_stubbed": 0.2},
        "graph": {"launches_per_step": 13.135, "array_args_per_step": 47.48, "host_us_per_step_stubbed": 44.1},
        "cublas": {"launches_per_step": 10.005, "array_args_per_step": 30.01, "host_us_per_step_stubbed": 38.8,
                   "numba_cuda_us_per_step": 344},
        "cublas-graph": {"launches_per_step": 11.115, "array_args_per_step": 35.36, "host_us_per_step_stubbed": 38.2},
    },
}  # fmt: skip
for _before in HOST_BEFORE["paths"].values():
    _before["dispatch_us_per_step_model"] = (
        _before["launches_per_step"] * DISPATCH_US[0] + _before["array_args_per_step"] * DISPATCH_US[1]
    )
GATHERS = ("gather_batch", "gather_batch_at", "gather_rows")  # a step's first launches
PATHS_REPLAYED = {"graph", "cublas-graph"}  # their steps launch once, into a recording
COST_MODEL = "predict_epoch_seconds"  # the function of gpubp.schedule the report calls, when it exists
# the whole-epoch kernel as issue 20 found it (commit d4231cd), read by this report: for before/after
FUSED_BEFORE = {
    "commit": "d4231cd",
    "float32": {"per_ffma_overall": 15.18, "per_ffma_worst_product_loop": 40.25, "mad_per_ffma_overall": 32.71,
                "mad_per_ffma_worst_product_loop": 39.75, "div64_in_loops": 26, "registers": 104, "spill_stores": 0},
    "float64": {"per_ffma_overall": 10.15, "per_ffma_worst_product_loop": 39.75, "mad_per_ffma_overall": 35.18,
                "mad_per_ffma_worst_product_loop": 39.75, "div64_in_loops": 26, "registers": 112, "spill_stores": 0},
}  # fmt: skip


# ---- tools ------------------------------------------------------------------------------------


def tool(name: str) -> str | None:
    """ptxas or nvdisasm from the nvidia wheels in this environment, else the PATH, else None."""
    try:
        import nvidia

        for root in nvidia.__path__:
            for found in sorted(Path(root).glob(f"*/bin/{name}")):
                return str(found)
    except ImportError:
        pass
    return shutil.which(name)


# ---- which kernels run: recorded in the simulator ----------------------------------------------


def _spec(arg):
    """A launch argument's Numba type, as plain data: ("array", dtype, ndim, layout), a scalar's
    name, or ("namedtuple", module, class name, (the fields' specs)) for the kernels' named tuples."""
    import numpy as np

    if isinstance(arg, tuple) and hasattr(arg, "_fields"):
        return ("namedtuple", type(arg).__module__, type(arg).__qualname__, tuple(_spec(a) for a in arg))
    if hasattr(arg, "dtype") and hasattr(arg, "ndim"):
        return ("array", str(arg.dtype), int(arg.ndim), "C" if arg.is_c_contiguous() else "A")
    if isinstance(arg, (bool, np.bool_)):
        raise TypeError("a bool launch argument: give kernels int codes")
    if isinstance(arg, (int, np.integer)):
        return ("int64",)
    if isinstance(arg, (float, np.floating)):
        return ("float64",)
    raise TypeError(f"unexpected launch argument {arg!r}")


def _arrays(spec) -> int:
    """Device arrays in one argument spec (a named tuple's fields each count)."""
    if spec[0] == "array":
        return 1
    return sum(_arrays(s) for s in spec[3]) if spec[0] == "namedtuple" else 0


def owner(kernel):
    """(element type, name) of a kernel dispatcher among the families' builds."""
    import numba

    from gpubp.kernels import cuda as kc
    from gpubp.kernels.cuda import elementwise

    for t in ELEMENT_TYPES:
        T = getattr(numba, t)
        builds = kc.builds(T) if t != "int64" else elementwise.build(T)
        for name, k in vars(builds).items():
            if k is kernel:
                return t, name
    raise LookupError(f"{kernel} is no kernel of gpubp.kernels.cuda")


@contextlib.contextmanager
def spy(run: bool = True):
    """Inside: every simulator launch is appended to the yielded list as (element type, name,
    argument specs, threads per block); with ``run=False`` the launch itself is skipped."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    seen, call = [], FakeCUDAKernel.__call__

    def spying(kernel, *args):
        if not kernel._device:
            threads = 1
            for d in kernel.block_dim or (1,):
                threads *= d
            seen.append((*owner(kernel), tuple(_spec(a) for a in args), threads))
            if not run:
                return None
        return call(kernel, *args)

    FakeCUDAKernel.__call__ = spying
    try:
        yield seen
    finally:
        FakeCUDAKernel.__call__ = call


def small_fits() -> None:
    """Train small networks through every way an epoch can run, in both dtypes."""
    import numpy as np

    import gpubp

    rng = np.random.default_rng(0)
    tuning = gpubp.Tuning(fused_threads=37, graph_batches=2)
    for dtype in ("float32", "float64"):
        X, labels = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
        for path in ("layers", "epoch", "graph", "cublas", "cublas-graph"):
            softmax = dict(activation="tanh", output_activation="softmax", loss="log_likelihood")
            net = gpubp.Network([6, 5, 3], **softmax, dtype=dtype, device="cuda", path=path, tuning=tuning)
            net.fit(X, labels, epochs=1, batch_size=4, validation=(X[:3], labels[:3]))
        # outputs of 64 x 64 take the register-blocked products
        wide = gpubp.Network([64, 64, 1], dtype=dtype, device="cuda", path="layers")
        wide.fit(rng.standard_normal((64, 64)), rng.uniform(0, 1, 64), epochs=1, batch_size=64)


def contract_launches() -> None:
    """Launch, on tiny arrays, the launchers of ``kernels.cpu``'s contract that a fit on CUDA no
    longer takes (it gathers X and Y in one launch and updates all parameters in one)."""
    import numpy as np
    from numba import cuda

    from gpubp.kernels import cuda as kc

    for dtype in ("float32", "float64"):
        flat, rows = cuda.to_device(np.zeros(3, dtype)), cuda.to_device(np.zeros((2, 3), dtype))
        kc.sgd_update(flat, flat, flat, 0.1, 0.0, 0.0)
        kc.gather_rows(rows, cuda.to_device(np.zeros(2, np.int64)), rows)


def census() -> tuple[set[tuple], dict[tuple, int]]:
    """(every launch of ``small_fits`` and ``contract_launches`` as (element type, name, argument
    specs), the block size gpubp uses for each (element type, name) at its default Tuning)."""
    import gpubp

    with spy() as seen:
        small_fits()
        contract_launches()
    threads = {(t, n): k for t, n, _, k in seen}
    for t in ("float32", "float64"):  # the small fits run the fused kernel with 37 threads
        threads[(t, "train_fused")] = gpubp.Tuning().fused_threads
    return {(t, n, s) for t, n, s, _ in seen}, threads


def fused_launches() -> list[tuple]:
    """The whole-epoch kernel's launch, (element type, "train_fused", argument specs), in each
    element type: one tiny fit each with the launch stubbed (under the simulator)."""
    import numpy as np

    import gpubp

    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    found = {}
    for dtype in ("float32", "float64"):
        net = gpubp.Network([5, 4, 3], dtype=dtype, device="cuda", path="epoch")
        with spy(run=False) as seen:
            net.fit(X, labels, epochs=1, batch_size=3)
        found.update({(t, n): (t, n, s) for t, n, s, _ in seen if n == "train_fused"})
    return list(found.values())


@contextlib.contextmanager
def stubbed():
    """Inside: every simulator launch returns at once, configuring a kernel returns it as it is and
    a cuBLAS GEMM does nothing, with no bookkeeping: what is left of a step is gpubp's own Python."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from gpubp.kernels.cuda import cublas

    call, configure, gemm = FakeCUDAKernel.__call__, FakeCUDAKernel.__getitem__, cublas._gemm

    def launch(kernel, *args):
        return call(kernel, *args) if kernel._device else None

    FakeCUDAKernel.__call__, FakeCUDAKernel.__getitem__ = launch, lambda kernel, configuration: kernel
    cublas._gemm = lambda *args: None
    try:
        yield
    finally:
        FakeCUDAKernel.__call__, FakeCUDAKernel.__getitem__, cublas._gemm = call, configure, gemm


def per_step(
    path: str, sizes=(784, 30, 10), batch_size: int = 10, rows: int = 2000, dtype="float32", repeats: int = 30
) -> dict:
    """Launches and device-array arguments per mini-batch step of one epoch under ``path`` (counted
    by ``spy``), and gpubp's own host microseconds per step: ``Schedule.train_epoch`` timed with
    every launch and GEMM stubbed (``stubbed``), the fastest of ``repeats`` epochs (the least
    disturbed by other processes), over its steps. On the graph paths this is the launch loop a
    recording holds (the simulator records nothing); a GPU replays it in one call per
    ``Tuning.graph_batches`` steps."""
    import numpy as np

    import gpubp
    from gpubp import schedule

    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((rows, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], rows)
    net = gpubp.Network(list(sizes), dtype=dtype, device="cuda", path=path)
    steps = -(-rows // batch_size)
    epoch, times = schedule.Schedule.train_epoch, []

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        epoch(*args, **kwargs)
        times.append(time.perf_counter() - t0)

    with stubbed():  # from the first epoch on, which plans the steps' launches (GEMMs stubbed in them)
        net.fit(X, labels, epochs=1, batch_size=batch_size)
        with spy(run=False) as seen:
            net.fit(X, labels, epochs=1, batch_size=batch_size)
        schedule.Schedule.train_epoch = timed
        try:
            net.fit(X, labels, epochs=repeats, batch_size=batch_size)
        finally:
            schedule.Schedule.train_epoch = epoch
    launches = len(seen) / steps
    arrays = sum(_arrays(s) for _, _, specs, _ in seen for s in specs) / steps
    return {
        "path": path,
        "launches_per_step": launches,
        "array_args_per_step": arrays,
        "host_us_per_step_stubbed": 1e6 * min(times) / steps,
        "host_us_per_step_stubbed_median": 1e6 * sorted(times)[len(times) // 2] / steps,
        "dispatch_us_per_step_model": launches * DISPATCH_US[0] + arrays * DISPATCH_US[1],
        "kernels": sorted({n for _, n, _, _ in seen}),
        "step": one_step(seen),
    }


def one_step(seen: list[tuple]) -> list[tuple]:
    """The launches of one whole mini-batch step among an epoch's (from the second step's gather to
    the third's) as (element type, name, argument specs); [] where steps are not launched one by one."""
    names = [name for _, name, _, _ in seen]
    starts = [i for i, n in enumerate(names) if n in GATHERS and (i == 0 or names[i - 1] not in GATHERS)]
    if len(starts) < 3:
        return []
    return [(t, name, specs) for t, name, specs, _ in seen[starts[1] : starts[2]]]


# ---- compile, assemble, disassemble ------------------------------------------------------------

_COMPILE = """
import importlib, json, sys, types
import numba
from numba import cuda
from numba.cuda.cudadrv import nvvm
from numba.cuda.cudadrv.error import NvrtcSupportError, NvvmSupportError
if not nvvm.is_available():
    print("SKIP: libNVVM not found"); sys.exit(77)
if not cuda.is_available():
    # a device function's dispatcher asks the current device for its compute capability even
    # under compile_ptx; without a GPU, stand in one of cc 9.0
    import numba.cuda.dispatcher
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from gpubp.kernels import cuda as kc
from gpubp.kernels.cuda import elementwise

def numba_type(spec):
    if spec[0] == "array":
        return numba.types.Array(getattr(numba, spec[1]), spec[2], spec[3])
    if spec[0] == "namedtuple":
        cls = getattr(importlib.import_module(spec[1]), spec[2])
        return numba.types.BaseTuple.from_types([numba_type(s) for s in spec[3]], cls)
    return getattr(numba, spec[0])

out = {}
for i, (t, name, specs) in enumerate(json.load(open(sys.argv[1]))):
    T = getattr(numba, t)
    kernel = getattr(kc.builds(T) if t != "int64" else elementwise.build(T), name)
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, tuple(numba_type(s) for s in specs), cc=(9, 0), lineinfo=True)
    except (NvvmSupportError, NvrtcSupportError) as e:
        print("SKIP:", e); sys.exit(77)
    path = f"{sys.argv[2]}/{i}_{name}_{t}.ptx"
    open(path, "w").write(ptx)
    out[i] = path
json.dump(out, open(f"{sys.argv[2]}/ptx.json", "w"))
"""


def compile_ptx(launches: list[tuple], folder: Path) -> list[Path]:
    """PTX for sm_90 of each (element type, name, specs), compiled in a subprocess without the
    simulator (the simulator's numba.cuda has no compiler). Raises RuntimeError("SKIP...") when
    libNVVM is missing."""
    census_file = folder / "launches.json"
    census_file.write_text(json.dumps([list(x) for x in launches]))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    cmd = [sys.executable, "-c", _COMPILE, str(census_file), str(folder)]
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if r.returncode == 77:
        raise RuntimeError(r.stdout.strip())
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    paths = json.loads((folder / "ptx.json").read_text())
    return [Path(paths[str(i)]) for i in range(len(launches))]


def assemble(ptx: Path) -> tuple[Path, dict]:
    """ptxas -arch=sm_90 -v: the cubin and (registers, spill_stores, spill_loads, shared_bytes)."""
    cubin = ptx.with_suffix(".cubin")
    a = subprocess.run(
        [tool("ptxas"), f"-arch={ARCH}", "-lineinfo", "-v", str(ptx), "-o", str(cubin)], capture_output=True, text=True
    )
    if a.returncode != 0:
        raise RuntimeError(a.stderr)
    info = a.stderr

    def num(pattern):
        m = re.search(pattern, info)
        return int(m.group(1)) if m else 0

    return cubin, {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores": num(r"(\d+) bytes spill stores"),
        "spill_loads": num(r"(\d+) bytes spill loads"),
        "shared_bytes": num(r"(\d+) bytes smem"),
        "stack_bytes": num(r"(\d+) bytes stack frame"),
    }


_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_LINE = re.compile(r'//## File "(.*?)", line (\d+)')


def sass(cubin: Path) -> list[tuple[str | None, str, str]]:
    """The kernel's SASS as (label or None, instruction text, source "file:line") in address order
    (the line information Numba compiles in: the kernel's own lines, an inlined device function's
    instructions carry the line of its call)."""
    d = subprocess.run([tool("nvdisasm"), "-c", "-g", str(cubin)], capture_output=True, text=True, check=True)
    out, label, where = [], None, ""
    for line in d.stdout.splitlines():
        m = _LINE.search(line)
        if m:
            name = m.group(1)
            with contextlib.suppress(ValueError):
                name = str(Path(name).resolve().relative_to(REPO))
            where = f"{name}:{m.group(2)}"
            continue
        m = _LABEL.match(line)
        if m:
            label = m.group(1)
            continue
        m = _INSN.search(line)
        if m:
            out.append((label, m.group(2).strip(), where))
            label = None
    return out


def _opcode(text: str) -> str:
    words = [w for w in text.split() if not w.startswith("@")]
    return words[0].split(".")[0] if words else ""


_REG = re.compile(r"-?\|?(R\d+)")
LOADS = ("LDS", "LDG", "LD", "LDC", "LDL")


def _loaded_products(body: list[str]) -> int:
    """FFMA/DFMA of a loop body whose two multiplicands were both loaded in the body (a dot
    product's multiply-add, as opposed to a polynomial or an elementwise a*b+c)."""
    writer, n = {}, 0
    for text in body:
        words = [w for w in text.replace(",", " ").split() if not w.startswith("@")]
        if not words:
            continue
        op = words[0].split(".")[0]
        regs = [m.group(1) for w in words[1:] if (m := _REG.fullmatch(w.split(".")[0].strip("[]")))]
        if op in ("FFMA", "DFMA") and len(regs) >= 3 and all(writer.get(r) in LOADS for r in regs[1:3]):
            n += 1
        if regs and not op.startswith("ST") and op not in ("BRA", "ISETP", "FSETP", "DSETP"):
            width = 4 if ".128" in words[0] else 2 if ".64" in words[0] or op.startswith("D") else 1
            for k in range(width):  # a 64- or 128-bit value: consecutive registers
                writer[f"R{int(regs[0][1:]) + k}"] = op
    return n


def loops(code: list[tuple[str | None, str]]) -> list[dict]:
    """The innermost loops (a backward branch enclosing no other) that hold FFMA or DFMA: for
    each, its instructions, its FFMA, and its CALLs (64-bit division and modulo are calls to a
    subroutine in SASS)."""
    where = {label: i for i, (label, _, _) in enumerate(code) if label}
    spans = []
    for i, (_, text, _) in enumerate(code):
        m = _TARGET.search(text)
        if m and _opcode(text) == "BRA" and where.get(m.group(1), i + 1) <= i:
            spans.append((where[m.group(1)], i))
    inner = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    found = []
    for a, b in inner:
        ops = [_opcode(text) for _, text, _ in code[a : b + 1]]
        fma = sum(op in ("FFMA", "DFMA") for op in ops)
        loaded = _loaded_products([text for _, text, _ in code[a : b + 1]])
        if fma:
            found.append(
                {
                    "at": a,
                    "instructions": len(ops),
                    "ffma": fma,
                    "per_ffma": len(ops) / fma,
                    "calls": ops.count("CALL"),
                    "loaded_products": loaded,
                    "multiply_add": 2 * loaded >= fma,
                }
            )
    return found


_DIV64 = re.compile(r"CALL.*__cuda_sm\d+_(?:div|rem)_[su]64")


def div64_in_loops(code: list[tuple[str | None, str, str]]) -> int:
    """Calls of the 64-bit integer division or modulo subroutine inside any loop."""
    where = {label: i for i, (label, _, _) in enumerate(code) if label}
    spans = []
    for i, (_, text, _) in enumerate(code):
        m = _TARGET.search(text)
        if m and _opcode(text) == "BRA" and where.get(m.group(1), i + 1) <= i:
            spans.append((where[m.group(1)], i))
    hits = [i for i, (_, text, _) in enumerate(code) if _DIV64.search(text)]
    return sum(any(a <= i <= b for a, b in spans) for i in hits)


def kernel_report(ptx: Path, threads: int) -> dict:
    """Resources, blocks per multiprocessor at ``threads`` per block, and the FFMA loops."""
    cubin, res = assemble(ptx)
    code = sass(cubin)
    found = loops(code)
    warps = -(-threads // 32)
    per_warp = -(-max(res["registers"], 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_regs = SM_REGISTERS // (per_warp * warps)
    by_shared = SM_SHARED // (res["shared_bytes"] + BLOCK_SHARED_RESERVED)
    products = [x for x in found if x["ffma"] >= PRODUCT_FFMA]
    ins, fma = sum(x["instructions"] for x in found), sum(x["ffma"] for x in found)
    mad = [x for x in found if x["multiply_add"]]
    mad_ins, mad_fma = sum(x["instructions"] for x in mad), sum(x["ffma"] for x in mad)
    return {
        **res,
        "threads": threads,
        "blocks_per_sm": min(by_regs, by_shared, SM_THREADS // (warps * 32), SM_BLOCKS),
        "instructions": len(code),
        "calls": sum(_opcode(t) == "CALL" for _, t, _ in code),
        "ffma_loops": found,
        "per_ffma_overall": ins / fma if fma else None,
        "per_ffma_worst_product_loop": max((x["per_ffma"] for x in products), default=None),
        # the same over the multiply-add loops only (most FFMA take two operands loaded in the loop)
        "mad_per_ffma_overall": mad_ins / mad_fma if mad_fma else None,
        "mad_per_ffma_worst_product_loop": max((x["per_ffma"] for x in products if x["multiply_add"]), default=None),
        "calls_in_loops": sum(x["calls"] for x in found),
        "div64": sum(bool(_DIV64.search(t)) for _, t, _ in code),
        "div64_in_loops": div64_in_loops(code),
    }


def kernels(folder: Path) -> list[dict]:
    """Every kernel the small fits launch, compiled for sm_90 and read (one row per kernel and
    element type: its first recorded signature)."""
    launched, threads = census_in_simulator(folder)
    first = {}
    for t, name, specs in sorted(launched, key=repr):
        first.setdefault((t, name), (t, name, specs))
    todo = sorted(first.values(), key=lambda x: (x[1], x[0]))
    rows = []
    for (t, name, _), ptx in zip(todo, compile_ptx(todo, folder)):
        rows.append({"kernel": name, "type": t, **kernel_report(ptx, threads[(t, name)])})
    return rows


def census_in_simulator(folder: Path) -> tuple[list[tuple], dict[tuple, int]]:
    """``census()`` run in a subprocess under the simulator, as JSON-able data."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = folder / "census.json"
    cmd = [sys.executable, "-m", "benchmarks.static", "--census", str(out)]
    subprocess.run(cmd, env=env, cwd=REPO, check=True)
    data = json.loads(out.read_text())
    launched = [(t, n, _tuples(s)) for t, n, s in data["launched"]]
    return launched, {(t, n): k for t, n, k in data["threads"]}


def _tuples(x):
    return tuple(_tuples(y) for y in x) if isinstance(x, list) else x


def executions_in_simulator(folder: Path) -> list[dict]:
    """``per_step`` for every path, in a subprocess under the simulator."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = folder / "steps.json"
    subprocess.run([sys.executable, "-m", "benchmarks.static", "--steps", str(out)], env=env, cwd=REPO, check=True)
    return json.loads(out.read_text())


def cpu_seconds() -> dict[str, tuple[float, str]]:
    """gpubp-cpu's measured median seconds per epoch at each e2e config, from the newest committed
    result that has it: {config name: (seconds, file)}."""
    found = {}
    for path in sorted(RESULTS.glob("*.json"), key=lambda p: re.findall(r"\d{4}-\d\d-\d\d", p.name), reverse=True):
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            for e in json.loads(path.read_text()).get("e2e", []):
                peer = e["peers"].get("gpubp-cpu") or {}
                if peer.get("median_s") and e["config"]["name"] not in found:
                    found[e["config"]["name"]] = (peer["median_s"], path.name)
    return found


def predictions() -> dict:
    """The cost model's seconds per epoch on an H100 for each path at each e2e config (and the path
    auto takes), beside gpubp's measured CPU seconds; or why not."""
    from gpubp import schedule

    model = getattr(schedule, COST_MODEL, None)
    if model is None:
        return {"hook": f"gpubp.schedule.{COST_MODEL} not written yet: no predictions (HOOK)"}
    from .configs import CONFIGS

    cpu, out = cpu_seconds(), {}
    for name, cfg in CONFIGS.items():
        try:
            out[name] = dict(model(cfg))
        except Exception as e:  # the model is another module's: record, do not fail the report
            out[name] = {"error": repr(e)}
        out[name]["cpu_measured_s"], out[name]["cpu_source"] = cpu.get(name, (None, None))
    return out


# ---- the report ---------------------------------------------------------------------------------


SUMMARY = (
    "per_ffma_overall",
    "per_ffma_worst_product_loop",
    "mad_per_ffma_overall",
    "mad_per_ffma_worst_product_loop",
    "div64_in_loops",
    "registers",
    "spill_stores",
    "shared_bytes",
    "blocks_per_sm",
)


def fused_summary(rows: list[dict]) -> dict:
    """Item 1's numbers: the fused kernel's instructions per FFMA, in each element type."""
    return {r["type"]: {k: r[k] for k in SUMMARY} for r in rows if r["kernel"] == "train_fused"}


def markdown(record: dict) -> str:
    lines = [f"# Static kernel report ({ARCH}, {record['date']}, commit {record['commit']})", ""]
    lines += [
        "Compiled for sm_90 by ptxas, read by nvdisasm; blocks per multiprocessor of an H100 at gpubp's "
        "block size. Instructions per FFMA: SASS instructions of the innermost loops that hold FFMA "
        f"(DFMA in float64), over their FFMA; a product loop holds at least {PRODUCT_FFMA}. Static counts.",
        "",
        "Multiply-add loops: those where most FFMA take two operands loaded in the loop (dot products), "
        "not the polynomials of exp/log nor elementwise a*b+c.",
        "",
        "| kernel | type | threads | registers | spills (st/ld B) | smem B | blocks/SM | instr/FFMA all FFMA loops "
        "| worst product loop | multiply-add loops: instr/FFMA | worst | 64-bit div in loops "
        "| FFMA loops (instr/FFMA, * multiply-add) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda x: "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)  # noqa: E731
    for r in record["kernels"]:
        each = " ".join(f"{x['instructions']}/{x['ffma']}{'*' * x['multiply_add']}" for x in r["ffma_loops"]) or "-"
        lines.append(
            f"| {r['kernel']} | {r['type']} | {r['threads']} | {r['registers']} | {r['spill_stores']}/"
            f"{r['spill_loads']} | {r['shared_bytes']} | {r['blocks_per_sm']} | {fmt(r['per_ffma_overall'])} | "
            f"{fmt(r['per_ffma_worst_product_loop'])} | {fmt(r['mad_per_ffma_overall'])} | "
            f"{fmt(r['mad_per_ffma_worst_product_loop'])} | {r['div64_in_loops']} | {each} |"
        )
    lines += ["", f"## The whole-epoch kernel: before ({FUSED_BEFORE['commit']}) and now", ""]
    lines += ["| | " + " | ".join(f"{t} before | {t} now" for t in ("float32", "float64")) + " |", "|---" * 5 + "|"]
    for key in FUSED_BEFORE["float32"]:
        cells = [f"{FUSED_BEFORE[t][key]} | {fmt(record['fused'].get(t, {}).get(key))}" for t in ("float32", "float64")]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += host_lines(record["executions"])
    lines += ["", "## Cost model: predicted seconds per epoch on an H100 (gpubp.schedule), beside gpubp's CPU", ""]
    lines += _prediction_lines(record["predictions"])
    return "\n".join(lines) + "\n"


def host_lines(executions: list[dict]) -> list[str]:
    """The per-step host table: gpubp's own Python (simulator, launches stubbed) and numba-cuda's
    launches (``benchmarks.dispatch``: the real numba-cuda, the driver stubbed), before and now."""
    before = HOST_BEFORE
    lines = [
        "",
        f"## Per mini-batch step, each Execution (784-30-10, batch 10, float32, {before['rows']} rows)",
        "",
        "Launches and device-array arguments counted per step in the simulator. gpubp us/step: gpubp's own "
        "Python, `Schedule.train_epoch` timed with every launch and GEMM stubbed, the fastest of "
        f"{before['repeats']} epochs over its steps (a shared 2-core VM: the minimum is the least disturbed epoch). "
        "numba-cuda us/step (`benchmarks.dispatch`): one step's launches replayed with the real numba-cuda and "
        "the GPU stubbed (context, memory, cuda.core's `launch`), the fastest of interleaved rounds: through "
        "numba-cuda's dispatcher as plans launched before, and as `Prepared` launches as they launch now; "
        "cuda.core's own packing and cuLaunchKernel are in neither. Before: commit "
        f"{before['commit']} (`HOST_BEFORE`: both measured by these same functions in a worktree of it; its "
        "numba-cuda figure is a lower bound, as that tree sliced the order into a new device array per step). "
        "Where no step is launched one by one (the whole epoch; a graph replays "
        "`Tuning.graph_batches` recorded steps per launch) there is no per-step dispatch: the "
        f"model {DISPATCH_US[0]} us a launch + {DISPATCH_US[1]} us an array is shown for the recording. cuBLAS "
        "paths: the GEMMs' host time (CuPy, cuBLAS) is in no column.",
        "",
        "| path | launches/step before, now | array args/step before, now | gpubp us/step before, now "
        "| numba-cuda us/step before | now, dispatcher | now, prepared | total before | total now | now / before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in executions:
        b, d = before["paths"].get(e["path"]), e.get("dispatch", {})
        if b is None:
            continue
        counts = (
            f"| {e['path']} | {b['launches_per_step']:.2f}, {e['launches_per_step']:.2f} | "
            f"{b['array_args_per_step']:.1f}, {e['array_args_per_step']:.1f} | "
            f"{b['host_us_per_step_stubbed']:.1f}, {e['host_us_per_step_stubbed']:.1f} | "
        )
        if d.get("prepared_us_per_step") and "numba_cuda_us_per_step" in b:
            total_b = b["host_us_per_step_stubbed"] + b["numba_cuda_us_per_step"]
            total = e["host_us_per_step_stubbed"] + d["prepared_us_per_step"]
            lines.append(
                counts + f"{b['numba_cuda_us_per_step']:.0f} | {d['dispatcher_us_per_step']:.0f} | "
                f"{d['prepared_us_per_step']:.0f} | {total_b:.0f} | {total:.0f} | {total / total_b:.2f} |"
            )
        else:
            model_b, model = b["dispatch_us_per_step_model"], e["dispatch_us_per_step_model"]
            lines.append(counts + f"model {model_b:.0f} | model {model:.0f} | - | - | - | - |")
    return lines


def _prediction_lines(pred: dict) -> list[str]:
    if "hook" in pred:
        return [f"**HOOK**: {pred['hook']}"]
    paths = sorted({p for v in pred.values() for p in (v.get("seconds") or {})})
    lines = ["| config | " + " | ".join(paths) + " | auto takes | gpubp CPU measured s |"]
    lines.append("|---" * (len(paths) + 3) + "|")
    for name, v in pred.items():
        sec = v.get("seconds") or {}
        cells = ["-" if sec.get(p) is None else f"{sec[p]:.3g}" for p in paths]
        cpu = "-" if v.get("cpu_measured_s") is None else f"{v['cpu_measured_s']:.3g}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {v.get('auto', v.get('error', '-'))} | {cpu} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.static", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the result files")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--census", type=Path, help=argparse.SUPPRESS)  # the simulator's half, in a subprocess
    ap.add_argument("--steps", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.census:
        launched, threads = census()
        data = {"launched": sorted(launched, key=repr), "threads": [[*k, v] for k, v in threads.items()]}
        args.census.write_text(json.dumps(data))
        return 0
    if args.steps:
        paths = ("layers", "epoch", "graph", "cublas", "cublas-graph")
        args.steps.write_text(json.dumps([per_step(p) for p in paths]))
        return 0
    if tool("ptxas") is None or tool("nvdisasm") is None:
        print("needs ptxas and nvdisasm: pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvdisasm")
        return 1
    import datetime

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    record = {"date": datetime.date.today().isoformat(), "commit": commit.stdout.strip(), "arch": ARCH}
    with tempfile.TemporaryDirectory() as folder:
        record["kernels"] = kernels(Path(folder))
        record["executions"] = executions_in_simulator(Path(folder))
    for e in record["executions"]:  # numba-cuda's part of each step launched one by one
        if e["step"] and not PATHS_REPLAYED.intersection([e["path"]]):
            e["dispatch"] = dispatch.measure(e["step"])
    record["fused"] = fused_summary(record["kernels"])
    record["fused_before"] = FUSED_BEFORE
    record["predictions"] = predictions()
    text = markdown(record)
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"static_{ARCH}_{record['date']}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"wrote {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
