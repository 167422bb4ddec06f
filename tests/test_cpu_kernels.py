"""Each @njit kernel against the numpy float64 reference, on odd shapes and both dtypes."""

import numpy as np
import pytest
import reference as ref

from gpubp.kernels import activations, cpu, losses

# (m, n_in, n_out); from cpu.BLAS_ROWS rows up the products call BLAS: (40, 17, 5) takes that branch.
# Below it the products are blocked 5 samples x 4 outputs: (12, 19, 9) has two such blocks of
# samples, two of outputs, and leftovers of each (2 samples, 1 output).
SHAPES = [(1, 1, 1), (3, 17, 5), (17, 33, 3), (4, 2, 33), (12, 19, 9), (40, 17, 5)]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ref.ACTIVATIONS + ["softmax"])
def test_forward(rng, dtype, shape, act):
    m, n_in, n_out = shape
    A_prev, W, b = rng.standard_normal((m, n_in)), rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    Z, A = np.full((m, n_out), np.nan, dtype), np.full((m, n_out), np.nan, dtype)
    cpu.forward(A_prev.astype(dtype), W.astype(dtype), b.astype(dtype), Z, A, activations.CODES[act])
    z = A_prev @ W.T + b
    close(Z, z, dtype)
    close(A, ref.f(z, act), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,act", ref.LOSS_OUTPUTS)
@pytest.mark.parametrize("m,n", [(1, 1), (5, 3), (17, 10)])
def test_output_error(rng, dtype, loss, act, m, n):
    if act == "softmax" and n == 1:
        pytest.skip("softmax of one output is constant")
    z = rng.standard_normal((m, n))
    a = ref.f(z, act)
    y = ref.targets(rng, m, n, loss, act)
    Z, A, Y = (v.astype(dtype) for v in (z, a, y))
    a = A.astype(float)  # the reference sees the same rounded activations
    delta = np.full((m, n), np.nan, dtype)
    cost = np.array([0.25], dtype)
    cpu.output_error(Z, A, Y, delta, losses.CODES[loss], activations.CODES[act], cost)
    close(delta, ref.output_error(Z.astype(float), a, Y.astype(float), loss, act), dtype)
    expected = 0.25 + ref.cost_rows(a, Y.astype(float), loss).sum()
    np.testing.assert_allclose(cost[0], expected, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ref.ACTIVATIONS)
def test_hidden_error(rng, dtype, shape, act):
    m, n, n_next = shape
    D_next, W_next, z = rng.standard_normal((m, n_next)), rng.standard_normal((n_next, n)), rng.standard_normal((m, n))
    a = ref.f(z, act)
    delta = np.full((m, n), np.nan, dtype)
    cpu.hidden_error(
        D_next.astype(dtype), W_next.astype(dtype), z.astype(dtype), a.astype(dtype), delta, activations.CODES[act]
    )
    close(delta, (D_next @ W_next) * ref.fprime(z, act), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_and_update(rng, dtype, shape):
    m, n_in, n_out = shape
    delta, A_prev = rng.standard_normal((m, n_out)), rng.standard_normal((m, n_in))
    nabla_w, nabla_b = np.full((n_out, n_in), np.nan, dtype), np.full(n_out, np.nan, dtype)
    cpu.weight_gradient(delta.astype(dtype), A_prev.astype(dtype), 0.5, nabla_w)
    cpu.bias_gradient(delta.astype(dtype), 0.5, nabla_b)
    close(nabla_w, 0.5 * delta.T @ A_prev, dtype)
    close(nabla_b, 0.5 * delta.sum(axis=0), dtype)

    P, g, v = rng.standard_normal(n_in * n_out), rng.standard_normal(n_in * n_out), rng.standard_normal(n_in * n_out)
    P32, v32 = P.astype(dtype), v.astype(dtype)
    cpu.sgd_update(P32, g.astype(dtype), v32, 0.1, 0.9, 0.01)
    v_new = 0.9 * v - 0.1 * (g + 0.01 * P)
    close(v32, v_new, dtype)
    close(P32, P + v_new, dtype)


def test_counts_and_gather(rng):
    P = rng.standard_normal(50)
    P[[3, 17]] = [np.nan, np.inf]
    out = np.array([1])
    cpu.count_nonfinite(P, out)
    assert out[0] == 3
    A, Y = rng.standard_normal((20, 4)), ref.onehot(rng.integers(0, 4, 20), 4)
    correct = np.array([0])
    cpu.count_correct(A, Y, correct)
    assert correct[0] == (A.argmax(1) == Y.argmax(1)).sum()
    # A NaN output makes a row wrong, wherever it is (numpy's argmax would pick the first NaN).
    nan_rows = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, np.nan], [1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    correct[0] = 0
    cpu.count_correct(nan_rows, ref.onehot(np.array([0, 1, 0, 1]), 3), correct)
    assert correct[0] == 2
    idx = rng.permutation(20)[:7]
    dst = np.empty((7, 4))
    cpu.gather_rows(A, idx, dst)
    np.testing.assert_array_equal(dst, A[idx])


def one_layer(W, b, gW, gb, vW, vb):
    """A ``NetArrays`` of one layer: W, b, their gradient and velocity copied into flat arrays."""
    n_out, n_in = W.shape
    layout = np.array([[0, n_out * n_in, n_out, n_in]], np.int64)
    flat = [np.concatenate([w.ravel(), c]) for w, c in ((W, b), (gW, gb), (vW, vb))]
    return cpu.NetArrays(*flat, layout, np.array([0, n_in, n_in + n_out]), np.zeros(1, np.int64), 0)


def layer(flat, n_out, n_in):
    """(W, b) of a one-layer flat array."""
    return flat[: n_out * n_in].reshape((n_out, n_in)), flat[n_out * n_in :]


@pytest.mark.parametrize("dtype", DTYPES)
# blocks of 5 samples: none, one, two, two and leftovers; 10: one pass; 40: BLAS
@pytest.mark.parametrize("m", [3, 5, 10, 12, 40])
@pytest.mark.parametrize("n_out", [3, 4, 9])  # blocks of 4 outputs: none, one, two and a leftover
def test_sgd_layer_plain_step_without_keeping_nabla(rng, dtype, m, n_out):
    """keep=False, momentum = decay = 0: W and b take the plain step W -= lr nabla_w in the
    gradient's last pass; nabla_w and vel_w are scratch then, but b's nabla and velocity are kept."""
    n_in = 21
    delta, A_prev = rng.standard_normal((m, n_out)), rng.standard_normal((m, n_in))
    W, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    zeros = np.zeros((n_out, n_in), dtype), np.zeros(n_out, dtype)
    net = one_layer(W.astype(dtype), b.astype(dtype), *zeros, *zeros)
    lr, scale = 0.7, 1 / m
    cpu.sgd_layer(net, 0, delta.astype(dtype), A_prev.astype(dtype), lr, scale, 0.0, 0.0, False, 0, n_out)
    Wd, bd = layer(net.params, n_out, n_in)
    close(Wd, W - lr * scale * delta.T @ A_prev, dtype)
    close(bd, b - lr * scale * delta.sum(axis=0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [3, 5, 12, 40])  # 5, 12: blocks of five samples (12: and leftovers); 40: BLAS
def test_sgd_layer_is_bp3_bp4_and_the_update_fused(rng, dtype, m):
    assert (m >= cpu.BLAS_ROWS) == (m == 40)
    n_out, n_in = 6, 9  # one block of four outputs and two left over
    delta, A_prev = rng.standard_normal((m, n_out)), rng.standard_normal((m, n_in))
    W, b, vW, vb = (rng.standard_normal(s) for s in ((n_out, n_in), n_out, (n_out, n_in), n_out))
    nans = np.full((n_out, n_in), np.nan, dtype), np.full(n_out, np.nan, dtype)
    net = one_layer(*(x.astype(dtype) for x in (W, b)), *nans, *(x.astype(dtype) for x in (vW, vb)))
    lr, scale, momentum, decay = 0.3, 1 / m, 0.9, 0.01
    cpu.sgd_layer(net, 0, delta.astype(dtype), A_prev.astype(dtype), lr, scale, momentum, decay, True, 0, n_out)
    nabla_w, nabla_b = scale * delta.T @ A_prev, scale * delta.sum(axis=0)
    gW, gb = layer(net.nabla, n_out, n_in)
    close(gW, nabla_w, dtype)
    close(gb, nabla_b, dtype)
    vW_new, vb_new = momentum * vW - lr * (nabla_w + decay * W), momentum * vb - lr * nabla_b
    vWd, vbd = layer(net.velocity, n_out, n_in)
    Wd, bd = layer(net.params, n_out, n_in)
    close(vWd, vW_new, dtype)
    close(Wd, W + vW_new, dtype)
    close(vbd, vb_new, dtype)
    close(bd, b + vb_new, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_rows_z_does_not_depend_on_the_rows_batched_with_it(dtype):
    """Below cpu.BLAS_ROWS every row goes through the same 5 x 4 block (leftover rows too), so
    predict on one row, on a few and on all of them gives the same bits (scikit-learn's
    subset-invariance check)."""
    rng = np.random.default_rng(3)
    A_prev, W, b = rng.random((23, 37)).astype(dtype), rng.standard_normal((11, 37)).astype(dtype), rng.random(11)
    b = b.astype(dtype)
    whole = np.empty((23, 11), dtype)
    cpu.weighted_input(A_prev, W, b, whole)
    for size in (1, 2, 3, 4, 6, 7):
        for s in range(0, 23, size):
            part = np.empty((min(size, 23 - s), 11), dtype)
            cpu.weighted_input(A_prev[s : s + size], W, b, part)
            np.testing.assert_array_equal(part, whole[s : s + size])
    np.testing.assert_allclose(whole, A_prev.astype(float) @ W.T.astype(float) + b, rtol=1e-5)
