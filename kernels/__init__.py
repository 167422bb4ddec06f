"""The compute engine of gpubp: one module per target, the same contracts in each.

Rows are samples: A^(l-1) is (m, n_in), W^l is (n_out, n_in) as Nielsen's w^l_jk, b^l is (n_out,).
Every array is C-contiguous and all of one dtype (float32 or float64). Kernels never validate:
the driver (``gpubp``) checks shapes and dtypes once, at the API edge.

| operation                                           | equation                              |
|-----------------------------------------------------|---------------------------------------|
| forward(A_prev, W, b, Z, A, act)                    | Z = A_prev W^T + b,  A = f(Z)          |
| output_error(Z, A, Y, Delta, loss, act, cost)       | BP1  Delta = grad_a C ⊙ f'(Z); cost += sum_x C_x |
| hidden_error(Delta_next, W_next, Z, A, Delta, act)  | BP2  Delta = (Delta_next W_next) ⊙ f'(Z) |
| weight_gradient(Delta, A_prev, scale, nabla_w)      | BP4  nabla_w = scale * Delta^T A_prev  |
| bias_gradient(Delta, scale, nabla_b)                | BP3  nabla_b = scale * sum_x Delta     |
| sgd_update(P, nabla, velocity, lr, momentum, decay) | v = momentum v - lr (nabla + decay P);  P += v |

``cpu`` holds the @njit versions, ``cuda`` the @cuda.jit versions with host-side launchers of
the same names. Both also have ``train_batches``: a whole epoch of mini-batch SGD in one call
(on the CPU one @njit function; on CUDA one kernel in one thread block, for small networks).
``activations`` and ``losses`` hold the scalar and per-row formulas both share.
"""
