"""Which CUDA kernels the library launches, with which argument types: recorded from real fits in
Numba's CUDA simulator, so the PTX test compiles what actually runs and nothing kept by hand. The
recording is ``benchmarks.static``'s, the code of the static kernel report."""

from benchmarks import static

ELEMENT_TYPES = static.ELEMENT_TYPES


def record(monkeypatch=None) -> set[tuple]:
    """Train small networks through every way an epoch can run, in both dtypes, and return every
    launch as (element type, kernel name, argument specs). (``monkeypatch`` is not needed any more:
    the spy restores the simulator's launch itself.)"""
    launched, _ = static.census()
    return launched
