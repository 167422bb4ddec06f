"""Data-parallel training over MPI: real ranks started by mpiexec on the CPU, held to one process.

Each rank runs tests/distributed_ranks.py (one thread per rank). The reference is the same fit
in this process with the same global batch; the fits have momentum, weight decay, batches of 7
that 2 and 3 ranks do not divide, and a last batch of one row (so some ranks have none). Each
rank makes its network with its own seed: the parameters and every epoch's order must come from
rank 0's, whose seed the reference uses.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import distributed_ranks as child
import numpy as np
import pytest

import gpubp
from gpubp.cli import main

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TOL = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(scope="module", autouse=True)
def need_mpi():
    """mpi4py and mpiexec come with the [dev] extra; outside CI a missing one skips, in CI it fails."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing = "mpi4py"
    else:
        missing = None if (BIN / "mpiexec").exists() else f"{BIN / 'mpiexec'}"
    if missing:
        message = f"{missing} is not installed: pip install -e '.[dev]'"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def mpiexec(n, *argv, timeout=240, env=None):
    """Run ``mpiexec -n n argv`` in a session of its own; a run that outlives ``timeout`` s (a hang)
    is killed with everything it started, and fails the test."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_", "HYDRA_", "MPIR_"))}
    p = subprocess.Popen(
        [str(BIN / "mpiexec"), "-n", str(n), *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, **ONE_THREAD, **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(map(str, argv))} still ran after {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ranks_program(n, mode, out, **kwargs):
    return mpiexec(n, sys.executable, HERE / "distributed_ranks.py", mode, out, **kwargs)


# ------------------------------------------------------------------------- one process, the reference


@pytest.fixture(scope="module")
def single():
    """The single-process fits and evaluations, on the "auto" path (the whole-epoch kernels) and the
    "layers" path. Running them first also puts the kernels the ranks use into Numba's disk cache."""
    X, y, Xv, yv, Xt, yt = child.problem()
    out = {}
    for dtype in TOL:
        for path in ("auto", "layers"):
            net = gpubp.Network(child.SIZES, dtype=dtype, path=path, **child.NET)
            history = net.fit(X, y, validation=(Xv, yv), **child.FIT)
            out[dtype, path] = {
                "params": child.flat(net),
                "history": history,
                "test": net.evaluate(Xt, yt),
                "val": net.evaluate(Xv, yv),
            }
    one = gpubp.Network([6, 3, 1], dtype="float64", device="cpu", seed=5)
    out["one_output"] = one.evaluate(Xv, (yv % 2).astype(float))
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def ranks(request, tmp_path_factory, single):
    """What every rank of ``mpiexec -n 2`` (and 3) ended with: a list of dicts, rank 0 first."""
    out = tmp_path_factory.mktemp(f"ranks{request.param}")
    p = ranks_program(request.param, "fit", out)
    assert p.returncode == 0, p.stderr[-3000:]
    results = []
    for r in range(request.param):
        with np.load(out / f"rank{r}.npz", allow_pickle=False) as f:
            results.append({k: f[k] for k in f.files})
    return results


# ------------------------------------------------------------------------------------------- results


@pytest.mark.parametrize("dtype", TOL)
def test_every_rank_ends_with_the_single_process_parameters(ranks, single, dtype):
    for r, result in enumerate(ranks):
        assert int(result["size"]) == len(ranks) and int(result["rank"]) == r
        for path in ("auto", "layers"):
            want = single[dtype, path]["params"]
            np.testing.assert_allclose(result[f"{dtype}_params"], want, rtol=0, atol=TOL[dtype])
        assert str(result[f"{dtype}_transport"]) == "mpi"
    for result in ranks[1:]:  # the same update from the same all-reduced sum: the same bits
        assert np.array_equal(result[f"{dtype}_params"], ranks[0][f"{dtype}_params"])


@pytest.mark.parametrize("dtype", TOL)
def test_losses_and_validation_are_summed_over_the_ranks(ranks, single, dtype):
    history = single[dtype, "layers"]["history"]
    for result in ranks:
        for key in ("loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(result[f"{dtype}_{key}"], history[key], rtol=TOL[dtype], atol=0)


def test_each_rank_computes_its_share_of_every_batch(ranks):
    """Hand-worked: 50 rows in batches of 7 are 7 batches of 7 and one of 1. Two ranks split 7 as
    3 + 4 and the last row goes to rank 1; three ranks split 7 as 2 + 2 + 3 and rank 2 takes it."""
    expected = {2: [21, 29], 3: [14, 14, 22]}[len(ranks)]
    for result in ranks:
        for dtype in TOL:
            assert result[f"{dtype}_rows_per_rank"].tolist() == expected


@pytest.mark.parametrize("dtype", TOL)
def test_distributed_evaluate_equals_one_process(ranks, single, dtype):
    """Evaluation of 11 and of 2 rows (with 3 ranks, one of them has none)."""
    for result in ranks:
        for name in ("test", "val"):
            want = single[dtype, "layers"][name]
            got = result[f"{dtype}_{name}_eval"]
            np.testing.assert_allclose(got, [want["loss"], want["accuracy"]], rtol=TOL[dtype])
        want = single["one_output"]
        np.testing.assert_allclose(result["one_output_eval"], [want["loss"], want["accuracy"]], rtol=1e-12)


@pytest.mark.parametrize(
    "key,words",
    [
        ("disagree", "different epochs: 2, "),
        ("disagree_network", 'different activation: "tanh"'),
        ("disagree_checkpoint", "different checkpoint: true, false"),
        ("disagree_evaluate", "different rows: 5, 6"),
    ],
)
def test_ranks_given_different_settings_all_get_one_clear_error(ranks, key, words):
    """Epochs, the network, the rank-0-only checkpoint idiom, evaluate's rows: refused on every rank,
    in the same words, before any epoch."""
    messages = {str(result[key]) for result in ranks}
    assert len(messages) == 1
    assert words in messages.pop()
    assert all(int(result[key + "_epochs"]) == 0 for result in ranks)


def test_every_rank_restores_the_same_best_epoch_and_rank_0_writes_the_checkpoint(ranks):
    for result in ranks[1:]:
        assert int(result["best_epoch"]) == int(ranks[0]["best_epoch"])
        assert np.array_equal(result["best_params"], ranks[0]["best_params"])
    saved = gpubp.Network.load(Path(ranks[0]["out"].item()) / "best.npz", device="cpu")
    np.testing.assert_array_equal(child.flat(saved), ranks[0]["best_params"])


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_ranks_sum_through_the_host(tmp_path):
    """device="cuda" (the simulator here): with no NCCL and no CUDA-aware MPI the gradient buffer is
    staged through host memory; the result is still the one-process CPU fit's."""
    out = tmp_path
    p = ranks_program(2, "fit-cuda", out, env={"NUMBA_ENABLE_CUDASIM": os.environ.get("NUMBA_ENABLE_CUDASIM", "1")})
    assert p.returncode == 0, p.stderr[-3000:]
    X, y, Xv, yv, *_ = child.problem()
    net = gpubp.Network(child.SIZES, dtype="float64", **child.NET)
    history = net.fit(X[:15], y[:15], validation=(Xv, yv), **child.CUDA_FIT)
    for r in range(2):
        with np.load(out / f"rank{r}.npz", allow_pickle=False) as f:
            assert str(f["float64_transport"]) == "staged"
            np.testing.assert_allclose(f["float64_params"], child.flat(net), rtol=0, atol=1e-12)
            np.testing.assert_allclose(f["float64_loss"], history["loss"], rtol=1e-12)
            np.testing.assert_allclose(f["float64_rows_per_rank"], [6, 9])  # 3 + 4, 3 + 4, 0 + 1
            np.testing.assert_allclose(f["float64_val_eval"], list(net.evaluate(Xv, yv).values()), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- paths


def test_auto_takes_the_per_step_path_and_a_forced_epoch_path_is_an_error():
    """In this process MPI.COMM_WORLD has one rank: a distributed fit equals the plain one."""
    from mpi4py import MPI

    X, y, *_ = child.problem()
    net = gpubp.Network(child.SIZES, dtype="float64", **child.NET)
    net.fit(X, y, comm=MPI.COMM_WORLD, **child.FIT)
    assert net._schedule.execution(7) == gpubp.Execution()
    plain = gpubp.Network(child.SIZES, dtype="float64", **child.NET)
    plain.fit(X, y, **child.FIT)
    np.testing.assert_allclose(child.flat(net), child.flat(plain), rtol=0, atol=1e-12)

    forced = gpubp.Network(child.SIZES, dtype="float64", path="epoch", **child.NET)
    before = child.flat(forced)
    with pytest.raises(ValueError, match="path='epoch' runs a whole epoch per call"):
        forced.fit(X, y, comm=MPI.COMM_WORLD, **child.FIT)
    assert np.array_equal(child.flat(forced), before)
    with pytest.raises(TypeError, match="mpi4py communicator"):
        net.fit(X, y, comm="world", **child.FIT)


@pytest.mark.cuda
def test_recorded_graph_paths_are_an_error():
    from mpi4py import MPI

    X, y, *_ = child.problem()
    net = gpubp.Network(child.SIZES, dtype="float64", **{**child.NET, "device": "cuda"}, path="graph")
    with pytest.raises(ValueError, match="path='graph' runs many steps per call"):
        net.fit(X, y, comm=MPI.COMM_WORLD, **child.FIT)


def test_transport_choice_is_logged_and_a_wrong_one_is_an_error(monkeypatch, caplog):
    import importlib.util
    import logging

    from gpubp import distributed

    comm = distributed.Communicator(select_gpu=False)
    with caplog.at_level(logging.INFO, logger="gpubp"):
        assert comm.attach("cpu") == "mpi"
        cuda = comm.attach("cuda")
    if importlib.util.find_spec("cupy") is None:  # here: no NCCL, and MPICH's wheels are not CUDA-aware
        assert cuda == "staged"
    assert f"cuda buffers are summed by {cuda}" in caplog.text
    monkeypatch.setenv("GPUBP_TRANSPORT", "infiniband")
    with pytest.raises(ValueError, match="GPUBP_TRANSPORT='infiniband' is not one of"):  # on the CPU too
        distributed.Communicator(select_gpu=False)
    monkeypatch.delenv("GPUBP_TRANSPORT")
    monkeypatch.setenv("GPUBP_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="GPUBP_DIST_TIMEOUT='soon': expected seconds >= 0"):
        distributed.Communicator(select_gpu=False)
    monkeypatch.delenv("GPUBP_DIST_TIMEOUT")
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        distributed.Communicator(select_gpu=False, timeout=-1)


# ---------------------------------------------------------------------------------------------- faults


def test_an_exception_on_one_rank_ends_every_rank_with_its_message(tmp_path):
    p = ranks_program(3, "raise", tmp_path)
    assert p.returncode != 0
    assert "RuntimeError: planted failure on rank 2" in p.stderr
    assert "rank 2 of 3 failed; ending every rank" in p.stderr


def test_a_killed_rank_ends_the_others(tmp_path):
    p = ranks_program(2, "kill", tmp_path)
    assert p.returncode != 0
    assert "Killed" in p.stdout + p.stderr  # mpiexec names the signal


def test_a_rank_that_stops_answering_is_ended_by_the_watchdog(tmp_path):
    p = ranks_program(2, "hang", tmp_path, timeout=120)
    assert p.returncode == 3, p.stderr[-3000:]
    assert "rank 0 of 2 waited 3 s for the other ranks" in p.stderr


# ------------------------------------------------------------------------------------------ the command


@pytest.fixture
def blobs(tmp_path):
    """80 rows of 5 features, 2 classes: 64 train / 8 validation / 8 test."""
    rng = np.random.default_rng(1)
    y = np.arange(80) % 2
    path = tmp_path / "blobs.npz"
    np.savez(path, X=rng.random((80, 5)) + y[:, None], y=y)
    return path


def test_gpubp_train_distributed_equals_one_process(tmp_path, blobs, capsys):
    argv = ["train", "--data", blobs, "--hidden", "4", "--epochs", "2", "--batch-size", "9", "--lr", "1"]
    argv += ["--momentum", "0.5", "--dtype", "float64", "--device", "cpu", "--json", "--no-progress"]
    p = mpiexec(2, BIN / "gpubp", *argv, "--distributed", "--save", tmp_path / "two.npz")
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads(p.stdout)  # rank 0's summary alone: rank 1 prints nothing
    assert p.stderr.count("epoch 1/2") == 1 and "distributed: 2 ranks; gradients summed by mpi" in p.stderr
    assert two["ranks"] == 2
    assert two["rows_per_rank"] == [28, 36]  # 64 rows: 7 batches of 9 (4 + 5), then 1 row (0 + 1)

    assert main([str(a) for a in argv + ["--save", tmp_path / "one.npz"]]) == 0
    one = json.loads(capsys.readouterr().out)
    assert "ranks" not in one
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=1e-12)
    assert two["test_accuracy"] == one["test_accuracy"]
    a, b = gpubp.Network.load(tmp_path / "two.npz"), gpubp.Network.load(tmp_path / "one.npz")
    for p_two, p_one in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(p_two, p_one, rtol=0, atol=1e-12)

    # --resume goes on with the saved parameters and momentum state, on 2 ranks as on one process.
    argv = ["train", "--data", blobs, "--epochs", "1", "--batch-size", "9", "--lr", "1", "--momentum", "0.5"]
    argv += ["--device", "cpu", "--no-progress"]
    resume = ["--resume", tmp_path / "two.npz", "--save", tmp_path / "2+.npz"]
    p = mpiexec(2, BIN / "gpubp", *argv, "--distributed", *resume)
    assert p.returncode == 0, p.stderr[-3000:]
    assert main([str(a) for a in argv + ["--resume", tmp_path / "one.npz", "--save", tmp_path / "1+.npz"]]) == 0
    a, b = gpubp.Network.load(tmp_path / "2+.npz"), gpubp.Network.load(tmp_path / "1+.npz")
    assert a.epochs_trained == b.epochs_trained == 3
    for p_two, p_one in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(p_two, p_one, rtol=0, atol=1e-12)


def test_gpubp_train_distributed_error_on_one_rank_ends_all(blobs):
    p = mpiexec(2, sys.executable, HERE / "distributed_ranks.py", "cli-fail", blobs)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "[rank 1] gpubp: error: planted failure reading the data on this rank" in p.stderr


@pytest.mark.parametrize("name,value", [("GPUBP_DIST_TIMEOUT", "soon"), ("GPUBP_TRANSPORT", "garbage")])
def test_gpubp_train_distributed_refuses_a_bad_variable_in_one_line(blobs, name, value):
    p = mpiexec(2, BIN / "gpubp", "train", "--data", blobs, "--distributed", "--device", "cpu", env={name: value})
    assert p.returncode == 2, p.stderr[-3000:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip().splitlines()[0]]  # one line, no traceback
    assert p.stderr.startswith(f"gpubp: error: {name}={value!r}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("target", ["mpiexec", "rank 0", "rank 1"])
def test_an_interrupted_distributed_run_is_explained(blobs, target, signum):
    """A signal to mpiexec or to either rank, while rank 1 is slow and rank 0 waits for it in the
    all-reduce: every rank stops at the same step, and rank 0's last lines say so and which epoch
    the --save file holds; the exit status is 128 + the signal, within seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_", "HYDRA_", "MPIR_"))}
    argv = [str(BIN / "mpiexec"), "-n", "2", sys.executable, str(HERE / "distributed_ranks.py"), "cli-slow", str(blobs)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         env={**clean, **ONE_THREAD}, start_new_session=True)  # fmt: skip
    try:
        seen = []
        while not any(line.startswith("epoch    2/") for line in seen) and p.poll() is None:
            seen.append(p.stdout.readline())
        pids = {"mpiexec": p.pid, "rank 0": int(Path(f"{blobs}.pid0").read_text())}
        pids["rank 1"] = int(Path(f"{blobs}.pid1").read_text())
        os.kill(pids[target], signum)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 128 + signum, err[-3000:]
    last = out.strip().splitlines()[-4:]
    assert last[0].startswith("interrupted during epoch"), out[-2000:]
    assert any(line.startswith("model of epoch") and line.endswith(".model.npz") for line in last), out[-2000:]
    assert "Abort" not in err and "Traceback" not in err, err[-3000:]
    epoch = int(next(line for line in last if line.startswith("model of epoch")).split()[3])
    assert gpubp.Network.load(f"{blobs}.model.npz", device="cpu").epochs_trained == epoch
