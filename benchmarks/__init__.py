"""Benchmarks of gpubp against the ways a user would otherwise train the same network.

Run ``python -m benchmarks --set quick`` (a few minutes on 2 CPU cores) or ``--set full``.
See ``benchmarks/NOTES.md`` for the method and the FLOP floors of each configuration.

Modules:

- ``common``        timing, data, machine description, library versions
- ``flops``         FLOP and byte counts (the floors)
- ``peers_numpy``   a plain numpy mini-batch SGD (the baseline a careful numpy user writes)
- ``peers_torch``   PyTorch eager, CPU and CUDA
- ``peers_sklearn`` scikit-learn's MLPClassifier with solver="sgd"
- ``peers_gpubp``   gpubp.Network, CPU and CUDA
- ``end_to_end``    seconds per epoch, interleaved runs, JIT and start-up times
- ``kernels_bench`` each kernel against numpy/BLAS (CPU) and CuPy (GPU)
- ``report``        markdown tables, JSON and a PNG bar chart under ``benchmarks/results/``
"""
