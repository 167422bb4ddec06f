"""The benchmark harness's own logic (issue 22): the named set, the JAX peer's epoch, a peer in a
worker process, the --busy spinners and the report's marking. Nothing here times anything."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from benchmarks import busy, end_to_end, report, worker
from benchmarks.common import Data, one_hot
from benchmarks.configs import CONFIGS, DEFAULT_REPEATS, SETS
from benchmarks.peers_numpy import NumpyMLP


def _params(sizes, seed=1):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(b).astype(np.float32) for b in sizes[1:]]
    return weights, biases


def _data(n=300, seed=2) -> Data:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return Data(X, y, one_hot(y), X[:50].copy(), y[:50].copy(), "synthetic (test)", True)


def test_issue22_set_lists_every_configuration_with_five_epochs():
    names = SETS["issue22"]
    assert DEFAULT_REPEATS["issue22"] == 5
    for b in (16, 32, 64, 128, 256, 512):
        small, relu = CONFIGS[f"784-100-10 b{b}"], CONFIGS[f"784-256-128-10 relu/softmax b{b}"]
        assert small.name in names and relu.name in names
        assert (small.sizes, small.activation, small.loss, small.batch_size) == (
            [784, 100, 10],
            "sigmoid",
            "quadratic",
            b,
        )
        assert relu.sizes == [784, 256, 128, 10] and relu.batch_size == b
        assert relu.layer_activations() == ["relu", "relu", "softmax"] and relu.loss == "log_likelihood"
    assert CONFIGS["textbook 784-30-10 b10"].name in names
    assert CONFIGS["784-1024-1024-10 relu/softmax b1024"].name in names
    assert len(names) == 14
    # the sets of issue 13 keep their meaning
    assert SETS["quick"] == ["textbook 784-30-10 b10", "784-100-10 b128"]
    assert len(SETS["full"]) == 4


@pytest.mark.slow  # importing jax and two XLA compiles: seconds
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (the bench extra)")
@pytest.mark.parametrize(
    "sizes, acts, loss, batch, lr",
    [
        ([784, 20, 10], ["sigmoid", "sigmoid"], "quadratic", 32, 3.0),  # 300 = 9 x 32 + 12: a short last batch
        ([784, 24, 16, 10], ["relu", "relu", "softmax"], "log_likelihood", 50, 0.1),
    ],
)
def test_jax_epoch_trains_as_the_numpy_reference(sizes, acts, loss, batch, lr):
    from benchmarks.peers_jax import JaxMLP

    weights, biases = _params(sizes)
    d = _data()
    jx, ref = JaxMLP(weights, biases, acts, loss), NumpyMLP(weights, biases, acts, loss)
    for _ in range(2):  # the same shuffles: each draws from default_rng(0)
        jx.epoch(d.X, d.Y, batch, lr)
        ref.epoch(d.X, d.Y, batch, lr)
    assert jx.compile_s is not None and jx.compile_s > 0
    w, b = jx.params()
    rw, rb = ref.params()
    assert end_to_end.rel_diff(w + b, rw + rb, weights + biases) < 1e-4


def test_a_peer_in_its_own_process_trains_as_in_this_one(tmp_path):
    cfg = CONFIGS["784-100-10 b128"]
    d = _data(n=400)
    weights, biases = _params(cfg.sizes)
    with end_to_end.Shared(d) as shared:
        worker.write_params(shared.folder / "initial.npz", weights, biases)
        spec = {"kind": "numpy", "config": end_to_end.asdict(cfg), "initial": "initial.npz"}
        peer = end_to_end.ProcessPeer(spec, shared.folder)
        try:
            assert peer.ready()["name"] == "numpy"
            w = peer.call("warmup", params_path=str(tmp_path / "after1.npz"))
            e = peer.call("epoch")
            final = peer.call("final")
        finally:
            peer.close()
    assert peer.proc.poll() is not None
    for key in ("wall_s", "cpu_s", "sys_s", "main_cpu_s", "main_runq_s", "involuntary_switches", "threads"):
        assert key in e and key in w
    assert final["epochs_trained"] == 2
    ref = NumpyMLP(weights, biases, cfg.layer_activations(), cfg.loss)
    ref.epoch(d.X, d.Y, cfg.batch_size, cfg.lr)
    got_w, got_b = worker.read_params(tmp_path / "after1.npz")
    for a, b in zip(got_w + got_b, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)


def test_a_failing_worker_is_reported_not_hung(tmp_path):
    cfg = CONFIGS["784-100-10 b128"]
    with end_to_end.Shared(_data(n=50)) as shared:
        spec = {"kind": "numpy", "config": end_to_end.asdict(cfg), "initial": "missing.npz"}
        peer = end_to_end.ProcessPeer(spec, shared.folder)
        try:
            with pytest.raises(end_to_end.WorkerError, match="numpy"):
                peer.ready(timeout=120)
        finally:
            peer.close()


def test_spinners_are_started_stopped_and_bounded():
    with busy.Spinners(1, limit_s=60) as s:
        assert s.alive() == 1
        pid = s.pids[0]
        assert busy.cpu_seconds(pid) is not None
    assert s.pids == [] and busy.cpu_seconds(pid) is None  # stopped and reaped: no /proc entry left
    bounded = busy.Spinners(1, limit_s=0.2).start()
    try:
        deadline = time.monotonic() + 30
        while bounded.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bounded.alive() == 0  # stopped by itself
    finally:
        bounded.stop()
    with busy.Spinners(0) as none:
        assert none.pids == [] and none.cpu() == 0


def _fake_record(busy_n: int) -> dict:
    cfg = CONFIGS["784-100-10 b128"]
    peers = {
        name: {"times_s": [t, t * 1.1], "median_s": t * 1.05, "spread": 1.1, "rel_diff_vs_numpy": 1e-7}
        for name, t in (("gpubp-cpu", 0.1), ("numpy", 0.12), ("torch-cpu", 0.2), ("jax", 0.09))
    }
    peers["jax"]["compile_s"] = 1.5
    e2e = [{"config": end_to_end.asdict(cfg), "samples": 60000, "flops": {"floor": 19e9, "total": 19.3e9}}]
    e2e[0].update(peers=peers, others_busy=0.01, notes=[])
    return {
        "set": "issue22",
        "date": "2026-12-03",
        "machine": {"cpu": "test CPU", "cpu_threads": 2, "gpu": None},
        "versions": {},
        "e2e": e2e,
        "busy": busy_n,
        "process_per_peer": True,
        "rows": 60000,
        "threadpools": [],
    }


def test_report_marks_the_load_and_checks_issue22_targets():
    idle = report.markdown(_fake_record(0))
    assert "no `--busy` processes" in idle and "under load" not in idle.splitlines()[0]
    assert "784-100-10 b128: gpubp-cpu vs fastest peer (jax) | >= 1.2x | 0.90 | NOT met" in idle
    assert "slowest / fastest epoch | <= 1.25 | 1.10 | met" in idle
    assert "jax compile s" in idle and "1.50" in idle
    loaded = _fake_record(1)
    loaded["busy_share_per_process"] = 0.97
    loaded["idle_reference"] = {"file": "x.json", "medians": {"784-100-10 b128": {"gpubp-cpu": 0.05}}}
    text = report.markdown(loaded)
    assert "under load (`--busy 1`)" in text.splitlines()[0]
    assert "**Load: `--busy 1`" in text and "97% of a core" in text
    assert "1 busy: gpubp-cpu vs jax | >= 1.00x | 0.90 | NOT met" in text
    assert "1 busy: gpubp-cpu epoch / its idle epoch | <= 2.0 | 2.10 | NOT met" in text


def test_rel_diff_is_relative_to_the_epochs_change():
    p0 = [np.zeros(4)]
    ref = [np.ones(4)]
    assert end_to_end.rel_diff([np.ones(4)], ref, p0) == 0
    assert end_to_end.rel_diff([np.full(4, 1.5)], ref, p0) == pytest.approx(0.5)
