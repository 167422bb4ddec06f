"""Benchmarks of gpubp against the ways a user would otherwise train the same network.

Run ``python -m benchmarks --set quick`` (a few minutes on 2 CPU cores) or ``--set full``.
See ``benchmarks/NOTES.md`` for the method and the FLOP floors of each configuration.

Modules:

- ``common``        timing, data, machine description, library versions
- ``flops``         FLOP and byte counts (the floors)
- ``peers_numpy``   a plain numpy mini-batch SGD (the baseline a careful numpy user writes)
- ``peers_torch``   PyTorch eager, CPU and CUDA
- ``peers_sklearn`` scikit-learn's MLPClassifier with solver="sgd"
- ``peers_jax``     a whole epoch in JAX: jit of a lax.scan over the mini-batches
- ``peers_gpubp``   gpubp.Network, CPU and CUDA
- ``configs``       the end-to-end configurations and the named sets (quick, full, issue22)
- ``worker``        one peer in a fresh process of its own, and what it measures per epoch
- ``busy``          ``--busy N``: N spinning processes, bounded in time
- ``end_to_end``    seconds per epoch, interleaved runs (a process per peer), JIT and start-up times
- ``probes``        issue 22's measurements: one process vs a process each; the collapse under load
- ``kernels_bench`` each kernel against numpy/BLAS (CPU) and CuPy (GPU)
- ``report``        markdown tables, JSON and a PNG bar chart under ``benchmarks/results/``
"""
