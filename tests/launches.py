"""Which CUDA kernels the library launches, with which argument types: recorded from real fits in
Numba's CUDA simulator, so the PTX test compiles what actually runs and nothing kept by hand. The
recording is ``benchmarks.static``'s, the code of the static kernel report."""

from benchmarks import static

ELEMENT_TYPES = static.ELEMENT_TYPES


def record() -> set[tuple]:
    """Train small networks through every way an epoch can run, in both dtypes, and launch the
    launchers a fit no longer takes (``static.census``); return every launch as (element type,
    kernel name, argument specs)."""
    launched, _ = static.census()
    return launched
