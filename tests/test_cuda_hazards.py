"""What a real GPU would hit and Numba's CUDA simulator does not show by itself (issue 20 item 5),
and the cost model "auto" decides by (item 4). Each test here failed before its fix."""

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import gpubp
from gpubp import schedule

pytestmark = pytest.mark.cuda


# ---- the graph warm-up launches every kernel the recording launches ----------------------------


def test_warm_up_launches_every_kernel_the_recording_launches(monkeypatch):
    """In a fresh process a kernel's module is loaded at its first launch: inside a recording that
    would be a module load in the graph. The warm-up before it must launch everything it records."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from gpubp.graphs import Recordings

    phase, seen = [], {"warm": set(), "record": set()}
    call, warm_up, batches = FakeCUDAKernel.__call__, Recordings._warm_up, Recordings.batches

    def spy(kernel, *args):
        if not kernel._device and phase:
            seen[phase[0]].add(kernel.fn.__name__)
        return call(kernel, *args)

    def phased(name, method):
        def run(*args, **kwargs):
            phase.append(name)
            try:
                return method(*args, **kwargs)
            finally:
                phase.pop()

        return run

    monkeypatch.setattr(FakeCUDAKernel, "__call__", spy)
    monkeypatch.setattr(Recordings, "_warm_up", phased("warm", warm_up))
    monkeypatch.setattr(Recordings, "batches", phased("record", batches))
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    tuning = gpubp.Tuning(graph_batches=2, fused_threads=37)
    for path in ("graph", "cublas-graph"):
        seen["warm"].clear(), seen["record"].clear()
        net = gpubp.Network([4, 5, 3], device="cuda", path=path, seed=0, dtype="float32", tuning=tuning)
        net.fit(X, labels, epochs=1, batch_size=4, lr=0.1)
        assert {"advance", "sgd_update_all_from", "gather_batch_at"} <= seen["record"]
        first_inside = seen["record"] - seen["warm"]
        assert not first_inside, f"{path}: first launched inside the recording: {first_inside}"


def test_warm_up_changes_nothing_a_replay_reads():
    """The warm-up's batch is taken back: a replayed fit trains as the layer-by-layer one."""
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((12, 4)), rng.integers(0, 3, 12)
    tuning = gpubp.Tuning(graph_batches=2, fused_threads=37)
    fit = dict(epochs=2, batch_size=4, lr=0.1, momentum=0.5, weight_decay=0.01, shuffle=False)
    nets = [gpubp.Network([4, 5, 3], device="cuda", path=p, seed=0, tuning=tuning) for p in ("layers", "graph")]
    histories = [n.fit(X, labels, **fit) for n in nets]
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-12)


# ---- Tuning is checked against what the whole-epoch kernel can launch with ---------------------


def test_tuning_refuses_what_the_fused_kernel_cannot_launch():
    threads, shared = schedule.fused_limits("float32")
    assert 512 <= threads < 1024 and shared == 12288
    with pytest.raises(ValueError, match=r"fused_threads=1024\) is too many .* at most \d+ threads"):
        gpubp.Tuning(fused_threads=1024)
    with pytest.raises(ValueError, match=r"fused_shared=12289\) is too large .* at most 12288 elements"):
        gpubp.Tuning(fused_shared=12289)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="must be a positive integer"):
            gpubp.Tuning(graph_batches=bad)
    gpubp.Tuning(fused_threads=threads, fused_shared=shared)  # the limits themselves launch
    # float64: half as many elements fit 48 KB, and the network checks with its own dtype
    wide = gpubp.Tuning(fused_shared=8000)
    gpubp.Network([4, 3], device="cuda", dtype="float32", tuning=wide)
    with pytest.raises(ValueError, match=r"fused_shared=8000\) is too large .* float64: .* at most 6144"):
        gpubp.Network([4, 3], device="cuda", dtype="float64", tuning=wide)


# ---- grids carry rows on x ---------------------------------------------------------------------

GRID_LIMITS = (2**31 - 1, 65535, 65535)


@contextmanager
def launch_configs(monkeypatch):
    """Every launch's (kernel name, grid, block), without running it."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    configs = []

    def configure(kernel, configuration):
        grid, block = configuration[0], configuration[1]
        grid = (grid,) if isinstance(grid, int) else tuple(grid)
        block = (block,) if isinstance(block, int) else tuple(block)
        configs.append((kernel.fn.__name__, grid, block))
        return lambda *args: None

    with monkeypatch.context() as m:
        m.setattr(FakeCUDAKernel, "__getitem__", configure)
        yield configs


def big(rows, cols, dtype=np.float32):
    """A (rows, cols) array that takes no memory: the launchers read only shape and dtype."""
    return np.broadcast_to(np.zeros(1, dtype), (rows, cols))


@pytest.mark.parametrize("cols", [10, 100])  # 100: the register-blocked products
def test_no_grid_exceeds_the_launch_limits_beyond_a_million_rows(cols, monkeypatch):
    """A grid's y and z stop at 65,535 blocks: with rows on y a product over 2M rows (gradients over
    a big data set, a huge batch) could not launch. Rows go on x."""
    from gpubp.kernels import cuda as kc

    rows = 2_000_000
    with launch_configs(monkeypatch) as configs:
        A, W, b = big(rows, cols), big(cols, cols), big(1, cols)[0]
        kc.forward(A, W, b, A, A, 0)
        kc.forward(A, W, b, A, A, 4)  # softmax
        kc.hidden_error(A, W, A, A, A, 0)
        kc.weight_gradient(A, A, 1.0, W)
        kc.bias_gradient(A, 1.0, b)
        kc.output_error(A, A, A, A, 0, 0, b)
        kc.elementwise.bias_activation(A, b, A, 0)
        kc.elementwise.times_fprime(A, A, A, 0)
        kc.gather_rows(A, np.zeros(rows, np.int64), A)
        kc.count_correct(A, A, b)
    assert len(configs) >= 11
    for name, grid, block in configs:
        assert all(g <= limit for g, limit in zip(grid, GRID_LIMITS)), (name, grid)
        assert np.prod(block) <= 1024, (name, block)


# ---- bias_gradient reduces across threads ------------------------------------------------------


def test_bias_gradient_sums_each_column_over_many_threads(monkeypatch):
    """One thread per column summed a batch of 1024 rows in 1024 dependent loads."""
    from gpubp.kernels import cuda as kc

    with launch_configs(monkeypatch) as configs:
        kc.bias_gradient(big(1024, 10), 1.0, big(1, 10)[0])
    _, grid, block = configs[0]
    threads = int(np.prod(grid) * np.prod(block))
    assert threads // 10 >= 16, f"{threads // 10} threads per column"


@pytest.mark.parametrize("m,n", [(1, 1), (15, 3), (300, 20), (33, 129)])
def test_bias_gradient_across_threads_is_the_column_sum(m, n, rng):
    from numba import cuda

    from gpubp.kernels import cuda as kc

    D = rng.standard_normal((m, n))
    out = cuda.to_device(np.full(n, np.nan))
    kc.bias_gradient(cuda.to_device(D), 0.5, out)
    np.testing.assert_allclose(out.copy_to_host(), 0.5 * D.sum(0), rtol=1e-12, atol=1e-12)


# ---- cuBLAS runs on gpubp's stream, whatever stream is current ----------------------------------


class FakeCupy:
    """What _gemm needs of CuPy, recording the current stream at each GEMM."""

    def __init__(self):
        fake = self
        self.current, self.gemm_streams = "the user's non-blocking stream", []

        class Stream:
            def __init__(self, name):
                self.name = name

            def __enter__(self):
                self.saved, fake.current = fake.current, self.name
                return self

            def __exit__(self, *exc):
                fake.current = self.saved

        Stream.null = Stream("null")
        self.cuda = type("cuda", (), {"Stream": Stream, "ExternalStream": lambda p: Stream(f"external {p}")})
        self.cublas = type("cublas", (), {"gemm": lambda *a, **k: fake.gemm_streams.append(fake.current)})
        self.asarray = lambda x: x


def test_cublas_runs_on_the_launch_stream_not_cupys_current_one(monkeypatch):
    import numba

    from gpubp.kernels.cuda import cublas

    fake = FakeCupy()
    monkeypatch.setattr(cublas, "_cupy", lambda: fake)
    clear = getattr(getattr(cublas, "_cupy_stream", None), "cache_clear", lambda: None)  # cached per stream
    clear()
    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    try:
        cublas._gemm("N", "T", None, None, None, 1.0)  # stream 0, where Numba launches
        cublas._gemm("N", "T", None, None, None, 1.0, stream=1234)
    finally:
        clear()
    assert fake.gemm_streams == ["null", "external 1234"]
    assert fake.current == "the user's non-blocking stream"


# ---- the kernels are cached on disk ------------------------------------------------------------

CACHE_SCRIPT = textwrap.dedent(
    """
    import numba
    from gpubp.kernels.cuda import elementwise, products
    for T in (numba.float32, numba.float64, numba.int64):
        families = (elementwise.build(T),) if T is numba.int64 else (elementwise.build(T), products.build(T))
        for family in families:
            for name, k in vars(family).items():
                if hasattr(k, "_cache") and not k.targetoptions.get("device"):
                    print(name, type(k._cache).__name__)
    """
)


@pytest.mark.slow
def test_kernels_are_cached_on_disk():
    """numba-cuda keeps a @cuda.jit(cache=True) kernel's compiled code in __pycache__, so a new
    process loads it instead of compiling again (checked outside the simulator, which has no cache)."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kinds = dict(line.split() for line in r.stdout.splitlines())
    assert len(kinds) >= 15 and set(kinds.values()) == {"CUDACache"}, kinds


# ---- auto follows the cost model ---------------------------------------------------------------


def test_auto_never_puts_784_100_10_at_batch_128_on_one_block(monkeypatch):
    net = gpubp.Network([784, 100, 10], device="cuda")
    for cupy in (False, True):
        monkeypatch.setattr(schedule, "cupy_installed", lambda cupy=cupy: cupy)
        how = net._schedule.execution(128)
        assert not how.whole_epoch
        one_block = schedule.predict_epoch(schedule.Execution(whole_epoch=True), [784, 100, 10], 128, 60_000)
        assert schedule.predict_epoch(how, [784, 100, 10], 128, 60_000) < one_block / 10
    assert how.replay  # with CuPy: a recorded graph


def test_auto_keeps_the_textbook_run_in_one_launch_when_the_model_says_it_wins(monkeypatch):
    """784-30-10 at batch 10: one launch beats a launch per operation (host-bound, 8 launches a
    step); against replayed graphs (8 nodes a step) it wins only once the fused kernel issues
    under ~3.5 instructions per multiply-add, not at 7.7 (the static report's float32 figure) or 5."""
    net = gpubp.Network([784, 30, 10], device="cuda")
    monkeypatch.setattr(schedule, "cupy_installed", lambda: False)
    assert net._schedule.execution(10) == gpubp.Execution(whole_epoch=True)
    monkeypatch.setattr(schedule, "cupy_installed", lambda: True)
    for per_ffma, one_launch in ((7.7, False), (5.0, False), (3.0, True)):
        monkeypatch.setattr(schedule, "FUSED_INSTRUCTIONS_PER_FFMA", per_ffma)
        want = gpubp.Execution(whole_epoch=True) if one_launch else gpubp.Execution(replay=True)
        assert net._schedule.execution(10) == want, per_ffma


def test_auto_takes_the_fastest_prediction(monkeypatch):
    monkeypatch.setattr(schedule, "cupy_installed", lambda: True)
    for sizes, batch in (([784, 30, 10], 10), ([784, 100, 10], 128), ([784, 1024, 1024, 10], 1024), ([4, 3], 1)):
        net = gpubp.Network(sizes, device="cuda")
        options = schedule.candidates(net._schedule.backend, sizes, batch, net._schedule.tuning)
        best = min(schedule.predict_epoch(o, sizes, batch, 60_000) for o in options)
        assert schedule.predict_epoch(net._schedule.execution(batch), sizes, batch, 60_000) == best
    assert schedule.step_launches([784, 30, 10]) == {"kernels": 8, "gemms": 0}


def test_the_static_report_reads_the_model_at_each_benchmark_configuration():
    from benchmarks.configs import CONFIGS

    for cfg in CONFIGS.values():
        got = schedule.predict_epoch_seconds(cfg)
        assert set(got["seconds"]) == set(schedule.PATHS) and got["auto"] in schedule.PATHS
        assert got["seconds"][got["auto"]] == min(t for t in got["seconds"].values() if t is not None)


# ---- fewer launches per step (item 3) ----------------------------------------------------------


@pytest.mark.parametrize("path,per_step", [("layers", 8), ("cublas", 8)])
def test_launches_per_step_of_two_weight_layers(path, per_step, monkeypatch):
    """One gather of X and Y, a forward per layer, BP1, BP4 with BP3 per layer, BP2, one update:
    8 Numba launches a step for two weight layers (was 12); cuBLAS: 8 around its 5 GEMMs. Each
    path still trains as the CPU does."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from gpubp.engines import CudaEngine

    launched, inside, call, steps = [], [], FakeCUDAKernel.__call__, CudaEngine.steps

    def spy(kernel, *args):
        if not kernel._device and inside:
            launched.append(kernel.fn.__name__)
        return call(kernel, *args)

    def counted(*args, **kwargs):
        inside.append(1)
        try:
            return steps(*args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(FakeCUDAKernel, "__call__", spy)
    monkeypatch.setattr(CudaEngine, "steps", counted)
    rng = np.random.default_rng(2)
    X, labels = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    fit = dict(epochs=1, batch_size=4, lr=0.2, momentum=0.5, weight_decay=0.01)
    nets = [
        gpubp.Network([4, 5, 3], device=d, path=p, seed=3, dtype="float64")
        for d, p in (("cpu", "layers"), ("cuda", path))
    ]
    for net in nets:
        net.fit(X, labels, **fit)
    assert len(launched) == 3 * per_step, launched  # 3 steps: 4 + 4 + 2 rows
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("version", ["weight_gradient_tiled", "weight_gradient_blocked"])
@pytest.mark.parametrize("m,n_out,n_in", [(3, 5, 7), (20, 70, 65)])  # 70 x 65: two blocks each way
def test_bp4_launch_sums_bp3_too(version, m, n_out, n_in, rng):
    from numba import cuda

    from gpubp.kernels.cuda import products

    D, A = rng.standard_normal((m, n_out)), rng.standard_normal((m, n_in))
    gW, gb = cuda.to_device(np.full((n_out, n_in), np.nan)), cuda.to_device(np.full(n_out, np.nan))
    getattr(products, version)(cuda.to_device(D), cuda.to_device(A), 0.25, gW, nabla_b=gb)
    np.testing.assert_allclose(gW.copy_to_host(), 0.25 * D.T @ A, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb.copy_to_host(), 0.25 * D.sum(0), rtol=1e-12, atol=1e-12)
