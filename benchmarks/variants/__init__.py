"""Kernel versions awaiting a measurement, beside the benchmarks (as llm.c keeps dev/cuda).

Each is validated against its reference by the tests and timed by the benchmarks; one moves into
``kernels/`` when a GPU measurement says it wins. The naive versions are the references.

- ``cuda_naive``: forward, BP2 and BP4 with one thread per output element (version 1 of each
  product; versions 2 and 3, tiled and register-blocked, are ``kernels/cuda/products.py``).
- ``cuda_fused_v1``: the fused epoch with every operand read from global memory (the reference of
  ``kernels/cuda/fused.py``).
"""
