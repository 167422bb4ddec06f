"""CUDA kernels (``gpubp.kernels.cuda``) against numpy float64 references written here.

Runs in Numba's CUDA simulator unless a GPU is present (see conftest.py). The simulator runs
one Python thread per CUDA thread, so the shapes are tiny; they are chosen so as not to be
multiples of the 16 x 16 tiles (1, 3, 17, 33) and the tiled kernels see partial tiles along
every axis. Outputs are poisoned with NaN before each launch, so an element a kernel forgets to
write fails the test. Tolerances are relative to the magnitude of the terms summed
(``TOL * (|ref| + mag)``), since a sum of terms of mixed sign can be tiny.
"""

import re
import zlib

import numpy as np
import pytest
import reference as ref
from numba import cuda

import gpubp
from benchmarks.variants import cuda_naive
from gpubp.kernels import activations, losses
from gpubp.kernels import cuda as kc
from gpubp.kernels.cuda import products

pytestmark = pytest.mark.cuda

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
ACT = activations.CODES
LOSS = losses.CODES
ELEMENTWISE = ["sigmoid", "tanh", "relu", "linear"]


def versions(name):
    """Every version of a product: the naive reference beside the benchmarks, the library's tiled,
    blocked and cuBLAS ones."""
    return {
        "naive": getattr(cuda_naive, f"{name}_naive"),
        "tiled": getattr(products, f"{name}_tiled"),
        "blocked": getattr(products, f"{name}_blocked"),
        "cublas": getattr(kc, f"{name}_cublas"),
    }


FORWARD, HIDDEN, WEIGHT = versions("forward"), versions("hidden_error"), versions("weight_gradient")


def needs(version: str) -> None:
    """The *_cublas products need CuPy on a real GPU; the simulator computes their GEMM with numpy."""
    if version == "cublas":
        try:
            kc.check_cublas()
        except ImportError as e:
            pytest.skip(str(e))


@pytest.fixture
def rng(request):
    """A generator seeded by the test's id: fresh inputs per case, reproducible across runs."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def poisoned(shape, dtype):
    return cuda.to_device(np.full(shape, np.nan, dtype))


def f64(x):
    """Host float64 copy of a device or host array (the reference sees the rounded inputs)."""
    return (x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)).astype(np.float64)


def check(got, ref, mag, dtype):
    """|got - ref| <= TOL * (|ref| + mag) everywhere, got finite."""
    got = np.asarray(got, np.float64)
    assert got.shape == np.shape(ref)
    assert np.all(np.isfinite(got)), "an output is NaN/inf (not written?)"
    err, bound = np.abs(got - ref), TOL[dtype] * (np.abs(ref) + mag)
    assert np.all(err <= bound), f"error {np.max(err - bound):.3g} over the tolerance"


# ---- numpy references ------------------------------------------------------------------------


def fprime_ref(z, a, act):
    if act == "sigmoid":
        return a * (1 - a)
    if act == "tanh":
        return 1 - a * a
    if act == "relu":
        return (z > 0).astype(np.float64)
    return np.ones_like(z)


def output_error_ref(z, a, y, loss, act):
    """(delta, mag of delta's terms, total cost) for BP1, from the formulas of Nielsen ch. 3."""
    if loss == "quadratic":
        cost = 0.5 * np.sum((a - y) ** 2)
    else:  # from the exact a = f(z): the kernel takes ln a from z, not from the rounded a
        a_exact = ref.f(z, act)
        cost = -np.sum(y * np.log(a_exact))
        if loss == "cross_entropy":
            cost -= np.sum((1 - y) * np.log1p(-a_exact))
    if (loss, act) in [("cross_entropy", "sigmoid"), ("log_likelihood", "softmax")]:
        return a - y, np.abs(a) + np.abs(y), cost
    if act == "softmax":  # delta_j = a_j (g_j - sum_k g_k a_k), g = grad_a C
        g = a - y if loss == "quadratic" else (a - y) / (a * (1 - a))
        ga = np.sum(g * a, axis=1, keepdims=True)
        return a * (g - ga), a * (np.abs(g) + np.sum(np.abs(g * a), axis=1, keepdims=True)), cost
    fp = fprime_ref(z, a, act)  # quadratic with an elementwise activation
    return (a - y) * fp, (np.abs(a) + np.abs(y)) * np.abs(fp), cost


def ids(v):
    return v.__name__ if isinstance(v, type) else None


# ---- forward ---------------------------------------------------------------------------------

# (m, n_in, n_out): every activation on one small shape, then shapes with partial tiles everywhere.
FORWARD_CASES = [((3, 17, 5), act) for act in ACT] + [
    ((1, 1, 1), "sigmoid"),
    ((17, 33, 3), "tanh"),
    ((33, 3, 17), "relu"),
    ((33, 17, 1), "softmax"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("version", FORWARD)
@pytest.mark.parametrize("shape,act", FORWARD_CASES)
def test_forward(shape, act, version, dtype, rng):
    needs(version)
    m, n_in, n_out = shape
    X, W, b = normal(rng, (m, n_in), dtype), normal(rng, (n_out, n_in), dtype), normal(rng, n_out, dtype)
    Z, A = poisoned((m, n_out), dtype), poisoned((m, n_out), dtype)
    FORWARD[version](cuda.to_device(X), cuda.to_device(W), cuda.to_device(b), Z, A, ACT[act])

    x, w, b = f64(X), f64(W), f64(b)
    z = x @ w.T + b
    mag = np.abs(x) @ np.abs(w).T + np.abs(b)
    check(Z.copy_to_host(), z, mag, dtype)
    # |f'| <= 1 for the elementwise f; a softmax output moves by at most 2 max_k |dz_k|.
    check(A.copy_to_host(), ref.f(z, act), 2 * mag.max(axis=1, keepdims=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_blocked_products_span_several_blocks(dtype, rng):
    """The 64 x 64 register-blocked products on outputs of 2 x 2 blocks, each partial on one side,
    and a reduction of two staging steps, the second partial (the cases above fit one block)."""
    m, n_in, n_out = 65, 20, 66
    X, W, b = normal(rng, (m, n_in), dtype), normal(rng, (n_out, n_in), dtype), normal(rng, n_out, dtype)
    Z, A = poisoned((m, n_out), dtype), poisoned((m, n_out), dtype)
    assert products.blocked(m, n_out)  # what the default launcher ``forward`` runs
    kc.forward(cuda.to_device(X), cuda.to_device(W), cuda.to_device(b), Z, A, ACT["tanh"])
    x, w = f64(X), f64(W)
    z = x @ w.T + f64(b)
    check(Z.copy_to_host(), z, np.abs(x) @ np.abs(w).T + np.abs(f64(b)), dtype)
    check(A.copy_to_host(), np.tanh(z), np.abs(x) @ np.abs(w).T + np.abs(f64(b)), dtype)

    D, Wn, Zh = normal(rng, (m, n_out), dtype), normal(rng, (n_out, n_in), dtype), normal(rng, (m, n_in), dtype)
    Ah = np.tanh(f64(Zh)).astype(dtype)
    Delta = poisoned((m, n_in), dtype)
    products.hidden_error_blocked(*(cuda.to_device(v) for v in (D, Wn, Zh, Ah)), Delta, ACT["tanh"])
    d, wn, fp = f64(D), f64(Wn), fprime_ref(f64(Zh), f64(Ah), "tanh")
    check(Delta.copy_to_host(), (d @ wn) * fp, (np.abs(d) @ np.abs(wn)) * np.abs(fp), dtype)

    nabla_w = poisoned((n_out, n_in), dtype)
    products.weight_gradient_blocked(cuda.to_device(D), cuda.to_device(X), 0.5, nabla_w)
    check(nabla_w.copy_to_host(), 0.5 * d.T @ x, 0.5 * np.abs(d).T @ np.abs(x), dtype)


# ---- BP1 -------------------------------------------------------------------------------------

PAIRS = [("quadratic", act) for act in [*ELEMENTWISE, "softmax"]] + [
    ("cross_entropy", "sigmoid"),
    ("log_likelihood", "softmax"),
]
OUTPUT_CASES = [((3, 17), loss, act) for loss, act in PAIRS] + [
    ((1, 1), "quadratic", "sigmoid"),
    ((17, 1), "cross_entropy", "sigmoid"),
    ((33, 3), "log_likelihood", "softmax"),
]


def targets(rng, m, n, act):
    """Y for a test: rows of probabilities for softmax, values in [0, 1] otherwise; row 0 0/1."""
    if act == "softmax":
        y = rng.dirichlet(np.ones(n), size=m)
        y[0] = np.eye(n)[rng.integers(n)]
    else:
        y = rng.random((m, n))
        y[0] = rng.integers(0, 2, n)
    return y


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape,loss,act", OUTPUT_CASES)
def test_output_error(shape, loss, act, dtype, rng):
    m, n = shape
    Zh = normal(rng, (m, n), dtype)
    Ah = ref.f(f64(Zh), act).astype(dtype)
    Yh = targets(rng, m, n, act).astype(dtype)
    Delta = poisoned((m, n), dtype)
    cost = cuda.to_device(np.array([0.25], dtype))  # the kernel adds to it
    kc.output_error(cuda.to_device(Zh), cuda.to_device(Ah), cuda.to_device(Yh), Delta, LOSS[loss], ACT[act], cost)

    delta, mag, c = output_error_ref(f64(Zh), f64(Ah), f64(Yh), loss, act)
    check(Delta.copy_to_host(), delta, mag, dtype)
    check(cost.copy_to_host()[0], 0.25 + c, 0, dtype)


# ---- BP2 -------------------------------------------------------------------------------------

# (m, n_next, n)
HIDDEN_CASES = [((3, 17, 5), act) for act in ELEMENTWISE] + [
    ((1, 1, 1), "relu"),
    ((17, 33, 3), "sigmoid"),
    ((33, 3, 17), "tanh"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("version", HIDDEN)
@pytest.mark.parametrize("shape,act", HIDDEN_CASES)
def test_hidden_error(shape, act, version, dtype, rng):
    needs(version)
    m, n_next, n = shape
    Dn, Wn, Zh = normal(rng, (m, n_next), dtype), normal(rng, (n_next, n), dtype), normal(rng, (m, n), dtype)
    Ah = ref.f(f64(Zh), act).astype(dtype)
    Delta = poisoned((m, n), dtype)
    HIDDEN[version](*(cuda.to_device(v) for v in (Dn, Wn, Zh, Ah)), Delta, ACT[act])

    dn, wn = f64(Dn), f64(Wn)
    fp = fprime_ref(f64(Zh), f64(Ah), act)
    check(Delta.copy_to_host(), (dn @ wn) * fp, (np.abs(dn) @ np.abs(wn)) * np.abs(fp), dtype)


# ---- BP4 and BP3 -----------------------------------------------------------------------------

# (m, n_out, n_in): the tiled kernel reduces over m.
WEIGHT_CASES = [(1, 1, 1), (3, 5, 17), (33, 17, 3), (17, 3, 33)]


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("version", WEIGHT)
@pytest.mark.parametrize("shape", WEIGHT_CASES)
def test_weight_gradient(shape, version, dtype, rng):
    needs(version)
    m, n_out, n_in = shape
    D, Ap = normal(rng, (m, n_out), dtype), normal(rng, (m, n_in), dtype)
    nabla_w = poisoned((n_out, n_in), dtype)
    scale = -0.37
    WEIGHT[version](cuda.to_device(D), cuda.to_device(Ap), scale, nabla_w)

    d, a = f64(D), f64(Ap)
    check(nabla_w.copy_to_host(), scale * d.T @ a, abs(scale) * np.abs(d).T @ np.abs(a), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (33, 3), (3, 129)])  # 129: two blocks
def test_bias_gradient(shape, dtype, rng):
    D = normal(rng, shape, dtype)
    nabla_b = poisoned(shape[1], dtype)
    scale = 1 / 3
    kc.bias_gradient(cuda.to_device(D), scale, nabla_b)

    d = f64(D)
    check(nabla_b.copy_to_host(), scale * d.sum(axis=0), scale * np.abs(d).sum(axis=0), dtype)


# ---- SGD and bookkeeping ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("n", [1, 17, 300])  # 300: two blocks of 256
@pytest.mark.parametrize("launcher", ["sgd_update", "sgd_update_all", "sgd_update_all_from"])
def test_sgd_update(n, dtype, launcher, rng):
    """The update of one flat array; the one-launch update of all parameters with the decay on
    n - 1 of them (all at n = 1): the last element is a bias (checked without decay below)."""
    P, G, V = (normal(rng, n, dtype) for _ in range(3))
    dP, dV = cuda.to_device(P), cuda.to_device(V)
    lr, momentum, decay = 0.1, 0.9, 1e-3
    nw = max(n - 1, 1)
    if launcher == "sgd_update_all_from":
        kc.sgd_update_all_from(dP, cuda.to_device(G), dV, cuda.to_device(np.array([lr, momentum, decay])), nw)
    elif launcher == "sgd_update_all":
        kc.sgd_update_all(dP, cuda.to_device(G), dV, lr, momentum, decay, nw)
    else:
        kc.sgd_update(dP, cuda.to_device(G), dV, lr, momentum, decay)
        nw = n
    decay = np.where(np.arange(n) < nw, decay, 0.0)

    p, g, v = f64(P), f64(G), f64(V)
    v_new = momentum * v - lr * (g + decay * p)
    mag = momentum * np.abs(v) + lr * (np.abs(g) + decay * np.abs(p))
    check(dV.copy_to_host(), v_new, mag, dtype)
    check(dP.copy_to_host(), p + v_new, np.abs(p) + mag, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("n_src,n_cols,m", [(1, 1, 1), (20, 7, 17), (5, 33, 9)])  # 9 x 33: two blocks
def test_gather_rows(n_src, n_cols, m, dtype, rng):
    src = normal(rng, (n_src, n_cols), dtype)
    idx = rng.integers(0, n_src, m).astype(np.int64)
    dst = poisoned((m, n_cols), dtype)
    kc.gather_rows(cuda.to_device(src), cuda.to_device(idx), dst)
    np.testing.assert_array_equal(dst.copy_to_host(), src[idx])


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_gather_batch_from_an_offset_and_at_a_device_side_offset_then_advance(dtype, rng):
    """Both gathers of a batch in one launch, from an offset into the order (host or device)."""
    src, ys = normal(rng, (20, 7), dtype), normal(rng, (20, 3), dtype)
    perm = rng.permutation(20).astype(np.int64)
    offset = cuda.to_device(np.array([4], np.int64))
    dst, ydst = poisoned((9, 7), dtype), poisoned((9, 3), dtype)
    kc.gather_batch_at(cuda.to_device(src), cuda.to_device(ys), cuda.to_device(perm), offset, dst, ydst)
    np.testing.assert_array_equal(dst.copy_to_host(), src[perm[4:13]])
    np.testing.assert_array_equal(ydst.copy_to_host(), ys[perm[4:13]])
    dst, ydst = poisoned((9, 7), dtype), poisoned((9, 3), dtype)
    kc.gather_batch(cuda.to_device(src), cuda.to_device(ys), cuda.to_device(perm), 11, dst, ydst)
    np.testing.assert_array_equal(dst.copy_to_host(), src[perm[11:20]])
    np.testing.assert_array_equal(ydst.copy_to_host(), ys[perm[11:20]])
    kc.advance(offset, 9)
    kc.advance(offset, 9)
    assert offset.copy_to_host()[0] == 22


def test_stream_pointer_of_every_kind_of_launch_stream():
    """cuBLAS is told the stream a launch is on: 0, or the address inside a Numba or cuda.core
    stream's CUstream handle, or that of the stream a cuda.core GraphBuilder records from."""
    driver = pytest.importorskip("cuda.bindings.driver")
    from types import SimpleNamespace

    stream = SimpleNamespace(handle=driver.CUstream(0x7F00))  # Numba's Stream and cuda.core's both hold one
    assert kc.stream_pointer(0) == 0
    assert kc.stream_pointer(stream) == 0x7F00
    assert kc.stream_pointer(SimpleNamespace(stream=stream)) == 0x7F00  # a GraphBuilder
    assert kc.stream_pointer(SimpleNamespace(handle=None)) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("n,blocks", [(1, 1024), (300, 1024), (600, 1)])  # 1 block: the grid-stride loop
def test_count_nonfinite(n, blocks, dtype, rng):
    P = normal(rng, n, dtype)
    out = cuda.to_device(np.array([5], np.int64))
    kc.count_nonfinite(cuda.to_device(P), out, max_blocks=blocks)
    assert out.copy_to_host()[0] == 5  # all finite: nothing added

    bad = rng.choice(n, size=min(n, 7), replace=False)
    P[bad] = np.array([np.nan, np.inf, -np.inf] * 3, dtype)[: bad.size]
    kc.count_nonfinite(cuda.to_device(P), out, max_blocks=blocks)
    assert out.copy_to_host()[0] == 5 + bad.size


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("m,n", [(1, 1), (17, 5), (33, 3)])
def test_count_correct(m, n, dtype, rng):
    A = rng.integers(0, 3, (m, n)).astype(dtype)  # few distinct values: many ties
    Y = np.eye(n, dtype=dtype)[rng.integers(0, n, m)]
    Y[0] = A[0]  # a row where both sides tie in the same places
    correct = cuda.to_device(np.array([2], np.int64))
    kc.count_correct(cuda.to_device(A), cuda.to_device(Y), correct)
    assert correct.copy_to_host()[0] == 2 + np.sum(np.argmax(A, axis=1) == np.argmax(Y, axis=1))


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_count_correct_rows_with_nan_are_wrong(dtype):
    A = np.array([[np.nan, 0, 1], [0, 1, np.nan], [1, 0, 0], [0, 2, 1], [np.nan, np.nan, np.nan]], dtype)
    Y = np.eye(3, dtype=dtype)[[0, 1, 0, 1, 0]]
    correct = cuda.to_device(np.zeros(1, np.int64))
    kc.count_correct(cuda.to_device(A), cuda.to_device(Y), correct)
    assert correct.copy_to_host()[0] == 2


# ---- a whole training step on views of flat device buffers -----------------------------------


def carve(shapes, gap=1):
    """Offsets of consecutive blocks of the given shapes in a flat buffer, ``gap`` elements apart."""
    offsets, end = [], gap
    for shape in shapes:
        offsets.append(end)
        end += int(np.prod(shape)) + gap
    return offsets, end


def views(flat, shapes, offsets):
    return [flat[o : o + int(np.prod(s))].reshape(s) for s, o in zip(shapes, offsets, strict=True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_training_step_on_views(dtype, rng):
    """gather, forward x2, BP1, BP4/BP3, BP2, BP4/BP3, SGD and the counters on views of flat buffers.

    The layout mirrors the driver's: parameters and gradients in flat arrays, activations in
    one flat work buffer. One NaN element separates consecutive views; it must survive.
    """
    sizes, m, n_data = (17, 5, 3), 3, 7
    p_shapes = [(5, 17), (5,), (3, 5), (3,)]  # W1, b1, W2, b2
    w_shapes = [(m, 17), (m, 3), (m, 5), (m, 5), (m, 3), (m, 3), (m, 5), (m, 3)]  # X Y Z1 A1 Z2 A2 D1 D2
    p_off, p_len = carve(p_shapes)
    w_off, w_len = carve(w_shapes)

    params = normal(rng, p_len, dtype)
    velocity = normal(rng, p_len, dtype)
    data_x = normal(rng, (n_data, sizes[0]), dtype)
    data_y = np.eye(sizes[2], dtype=dtype)[rng.integers(0, sizes[2], n_data)]
    idx = rng.integers(0, n_data, m).astype(np.int64)

    d_params, d_velocity = cuda.to_device(params), cuda.to_device(velocity)
    d_nabla = cuda.to_device(np.zeros(p_len, dtype))  # gaps stay 0: SGD runs over the whole array
    d_work = poisoned(w_len, dtype)
    W1, b1, W2, b2 = views(d_params, p_shapes, p_off)
    gW1, gb1, gW2, gb2 = views(d_nabla, p_shapes, p_off)
    X, Y, Z1, A1, Z2, A2, D1, D2 = views(d_work, w_shapes, w_off)
    cost = cuda.to_device(np.zeros(1, dtype))
    correct, nonfinite = cuda.to_device(np.zeros(1, np.int64)), cuda.to_device(np.zeros(1, np.int64))
    lr, momentum, decay, scale = 0.5, 0.9, 1e-2, 1 / m

    kc.gather_rows(cuda.to_device(data_x), cuda.to_device(idx), X)
    kc.gather_rows(cuda.to_device(data_y), cuda.to_device(idx), Y)
    kc.forward(X, W1, b1, Z1, A1, ACT["sigmoid"])
    kc.forward(A1, W2, b2, Z2, A2, ACT["softmax"])
    kc.output_error(Z2, A2, Y, D2, LOSS["log_likelihood"], ACT["softmax"], cost)
    kc.count_correct(A2, Y, correct)
    kc.weight_gradient(D2, A1, scale, gW2)
    kc.bias_gradient(D2, scale, gb2)
    kc.hidden_error(D2, W2, Z1, A1, D1, ACT["sigmoid"])
    kc.weight_gradient(D1, X, scale, gW1)
    kc.bias_gradient(D1, scale, gb1)
    kc.sgd_update(d_params, d_nabla, d_velocity, lr, momentum, decay)
    kc.count_nonfinite(d_params, nonfinite)

    # The same step in numpy, float64.
    p = f64(params)
    w1, c1, w2, c2 = views(p, p_shapes, p_off)
    x, y = f64(data_x)[idx], f64(data_y)[idx]
    a1 = 1 / (1 + np.exp(-(x @ w1.T + c1)))
    a2 = ref.f(a1 @ w2.T + c2, "softmax")
    d2 = a2 - y
    d1 = (d2 @ w2) * a1 * (1 - a1)
    nabla = np.zeros(p_len)
    for g, v in zip(views(nabla, p_shapes, p_off), [d1.T @ x, d1.sum(0), d2.T @ a1, d2.sum(0)], strict=True):
        g[...] = scale * v
    v_new = momentum * f64(velocity) - lr * (nabla + decay * p)

    check(d_nabla.copy_to_host(), nabla, 1, dtype)
    check(d_velocity.copy_to_host(), v_new, 1, dtype)
    check(d_params.copy_to_host(), p + v_new, 1, dtype)
    check(cost.copy_to_host()[0], -np.sum(y * np.log(a2)), 0, dtype)
    assert correct.copy_to_host()[0] == np.sum(np.argmax(a2, 1) == np.argmax(y, 1))
    assert nonfinite.copy_to_host()[0] == 0
    work = d_work.copy_to_host()
    gaps = np.setdiff1d(
        np.arange(w_len),
        np.concatenate([np.arange(o, o + np.prod(s)) for s, o in zip(w_shapes, w_off, strict=True)]),
    )
    assert np.all(np.isnan(work[gaps])), "a kernel wrote outside its view"


# ---- every kernel that runs compiles to PTX for the H100 ---------------------------------------

F64 = r"^\s+((?:add|sub|mul|div|fma|rcp|sqrt|ex2|lg2|neg|abs|min|max|setp|selp)[\w.]*\.f64)\b"


@pytest.mark.slow
def test_every_kernel_that_runs_compiles_to_ptx(tmp_path):
    """Every launch of small fits through every way an epoch runs, and of the launchers a fit no
    longer takes, is recorded in the simulator (``launches.py``: the static report's census), every
    kernel of the library must be among them, and each recorded signature is compiled for sm_90
    by the static report's code (``benchmarks.static.compile_ptx``: a subprocess, since under the
    simulator this process's numba.cuda has no compiler).

    The fused kernel then goes through ptxas for sm_90 (``static.assemble``): its one block of
    ``Tuning().fused_threads`` threads must fit an H100 multiprocessor's 64K registers and 48 KB of
    static shared memory, or every launch would fail with "too many resources requested".
    """
    import launches
    import numba
    from numba import config

    from benchmarks import static

    if not config.ENABLE_CUDASIM:
        pytest.skip("records launches in the simulator")
    seen = sorted(launches.record(), key=repr)
    names = {name for t in ("float32", "float64") for name in vars(kc.builds(getattr(numba, t)))}
    assert names | {"advance"} == {name for _, name, _ in seen}, "a kernel the library holds never runs"
    try:
        ptx = static.compile_ptx(seen, tmp_path)
    except RuntimeError as e:
        if str(e).startswith("SKIP"):
            pytest.skip(str(e))
        raise
    assert len(ptx) == len(seen)
    for (t, name, _), path in zip(seen, ptx, strict=True):
        text = path.read_text()
        if name.endswith("_tiled"):
            assert ".shared" in text and "bar.sync" in text, name
        if t == "float32":
            # float32 stays float32: a consumer GPU runs float64 at 1/32 to 1/64 of the rate.
            # Only float64 scalar arguments (converted once) and the cost's float64 sum may appear.
            assert not re.findall(F64, text, re.M), (name, sorted(set(re.findall(F64, text, re.M))))
    if static.tool("ptxas") is None:
        pytest.skip("ptxas not found: the fused kernel's register use is unchecked")
    fused = [(t, path) for (t, name, _), path in zip(seen, ptx, strict=True) if name == "train_fused"]
    assert sorted(t for t, _ in fused) == ["float32", "float64"]
    threads = gpubp.Tuning().fused_threads
    for dtype, path in fused:
        _, res = static.assemble(path)
        registers = res["registers"]
        assert res["spill_stores"] == 0 and res["spill_loads"] == 0, res
        assert registers * threads <= 65536, f"{dtype}: {registers} registers x {threads} threads"
        # Tuning's check at construction assumes at most this many (gpubp.schedule.FUSED_REGISTERS)
        assumed = gpubp.schedule.FUSED_REGISTERS[dtype]
        assert registers <= assumed, f"{dtype}: {registers} registers; raise schedule.FUSED_REGISTERS to it"
        print(f"train_fused {dtype}: {registers} registers (Tuning assumes {assumed})")
        assert res["shared_bytes"] <= 48 * 1024, res
