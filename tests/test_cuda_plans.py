"""Launch plans (issue 20 item 3): a fit configures each kernel and builds each argument tuple once,
not every step; a plan follows the work buffers it was built on. In Numba's CUDA simulator, where
every launch still runs (and is checked against the CPU by test_network and test_cuda_hazards)."""

import numpy as np
import pytest

import gpubp
from gpubp.kernels.cuda import elementwise, launches

pytestmark = pytest.mark.cuda


class FakeKernel:
    """A numba-cuda dispatcher as a plan sees it: kernel[grid, block, stream] gives a callable (and
    no compiled overload that a ``Prepared`` launch could keep)."""

    overloads: dict = {}

    def __init__(self):
        self.configured, self.launched = [], []

    def typeof_pyval(self, value):
        return type(value)

    def __getitem__(self, configuration):
        self.configured.append(configuration)
        return lambda *args: self.launched.append((configuration, args))


def test_on_a_gpu_a_plan_configures_once_and_launches_as_often_as_it_runs(monkeypatch):
    """numba-cuda's launch configurations can be called again and again: a plan configures once."""
    import numba

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    kernel = FakeKernel()
    monkeypatch.setattr(elementwise, "kernels", lambda dtype: type("family", (), {"gather_rows": kernel}))
    src, idx, dst = np.zeros((5, 3)), np.zeros(4, np.int64), np.zeros((4, 3))
    plan = elementwise.gather_rows.plan(src, idx, dst, stream=7)
    for _ in range(3):
        launches.run(plan)
    assert kernel.configured == [(1, 256, 7)]
    assert kernel.launched == [((1, 256, 7), (src, idx, dst))] * 3


def _configures_in_a_fit(monkeypatch, rows, path):
    calls, configured = [], elementwise.configured

    def counted(*args):
        calls.append(args[0])
        return configured(*args)

    monkeypatch.setattr(elementwise, "configured", counted)
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((rows, 4)), rng.integers(0, 3, rows)
    net = gpubp.Network([4, 5, 3], dtype="float64", device="cuda", path=path)
    net.fit(X, labels, epochs=1, batch_size=2)
    return len(calls)


@pytest.mark.parametrize("path", ["layers", "cublas"])
def test_a_fit_configures_its_kernels_once_however_many_steps(path, monkeypatch):
    """Configuring (variant, grid, argument tuple) happens per plan, not per step: 3 steps or 9
    configure as often (the last batch of each is full)."""
    assert _configures_in_a_fit(monkeypatch, 6, path) == _configures_in_a_fit(monkeypatch, 18, path)


def test_a_plan_follows_the_work_buffers(rng):
    """Kept while the views it was built on are the workspace's; built again once they are gone,
    and the gradient then is the CPU's."""
    X, labels = rng.standard_normal((4, 4)), np.array([0, 1, 2, 0])
    nets = [gpubp.Network([4, 5, 3], dtype="float64", device=d, path="layers") for d in ("cpu", "cuda")]
    s = nets[1]._schedule
    engine = s.engine()
    v = s.views(4, 4)
    first = engine.plan(v, 4, 4, 0.25)
    assert engine.plan(v, 4, 4, 0.25) is first
    assert engine.plan(v, 4, 4, 0.5) is not first  # another scale
    s.buffers(5), s.buffers(6)  # two other sizes: the buffers for 4 rows are dropped
    again = engine.plan(s.views(4, 4), 4, 4, 0.25)
    assert again is not first
    assert not {id(a) for _, args in again for a in args} & {id(v.A[0]), id(v.Z[1]), id(v.D[2])}
    for net in nets:
        net._schedule.gradients(net._inputs(X), net._targets(labels, 4))
    np.testing.assert_allclose(s.host("nabla"), nets[0]._schedule.host("nabla"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path, dtype", [("layers", "float32"), ("cublas", "float64")])
def test_a_prepared_launch_hands_the_driver_what_numba_cuda_would(path, dtype):
    """On a GPU every planned launch is a ``Prepared`` one, which keeps the kernel parameters its
    first call made. Replayed with the real numba-cuda and only the GPU stubbed
    (``benchmarks.dispatch``), each launch of a step hands the driver exactly the parameters that
    numba-cuda's dispatcher hands it, at the first call, the second (kept) and after the gather's
    start row changed, and every launch of the step is kept."""
    from benchmarks import dispatch, static

    step = static.per_step(path, rows=40, dtype=dtype, repeats=1)["step"]
    assert len(step) == 8 and step[0][1] == "gather_batch"
    found = dispatch.measure(step, repeats=20)
    if "skipped" in found:
        pytest.skip(found["skipped"])
    assert found["mismatches"] == []
    assert found["kept"] == found["launches"] == len(step)
