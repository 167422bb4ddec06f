"""The products by cuBLAS (through CuPy, on the arrays in place), the rest of each equation by a
Numba epilogue kernel: the peer the Numba products have to beat, and path "cublas".

Numba's CUDA simulator has no cuBLAS: there numpy computes the same product on the host, so the
schedule around these launchers is tested without a GPU.
"""

import functools

import numba

from .elementwise import bias_activation, times_fprime
from .launches import Launch, launcher


@functools.cache
def _cupy():
    """CuPy, or an ImportError that says what the cuBLAS products need."""
    try:
        import cupy
        import cupy.cublas  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the cuBLAS products need CuPy ({e}): pip install 'gpubp[cuda]'") from None
    return cupy


def check_cublas() -> None:
    """Raise ImportError now, not mid-epoch, if the *_cublas products cannot run (no CuPy)."""
    if not numba.config.ENABLE_CUDASIM:
        _cupy()


def stream_pointer(stream) -> int:
    """The CUstream address of a launch's ``stream``: 0 (the legacy default stream), a Numba
    stream, a cuda.core Stream, or a cuda.core GraphBuilder (recording from its own stream)."""
    if isinstance(stream, int):
        return stream
    stream = getattr(stream, "stream", stream)  # a GraphBuilder: the stream being recorded
    handle = stream.handle
    return 0 if handle is None else int(handle)  # CUstream objects convert with int(), not .value


def _gemm(transa: str, transb: str, a, b, out, alpha: float, stream=0) -> None:
    """out = alpha op(a) op(b), op(x) = x or x^T ("N" or "T"): one cuBLAS GEMM on the arrays in place.

    On C-contiguous operands CuPy calls cuBLAS with no temporary array (it computes out^T in
    column-major order), so the call can be recorded into a CUDA graph; alpha is a host scalar,
    which a recording keeps. Numba's CUDA simulator has no cuBLAS: there numpy computes the same
    product on the host."""
    if numba.config.ENABLE_CUDASIM:
        op = {"N": lambda x: x.copy_to_host(), "T": lambda x: x.copy_to_host().T}
        out.copy_to_device((alpha * (op[transa](a) @ op[transb](b))).astype(out.dtype))
        return
    cp = _cupy()
    as_cupy = cp.asarray  # zero-copy views through __cuda_array_interface__
    with _cupy_stream(stream_pointer(stream)):  # CuPy's current stream may be a user's own
        cp.cublas.gemm(transa, transb, as_cupy(a), as_cupy(b), out=as_cupy(out), alpha=alpha)


@functools.lru_cache(maxsize=64)
def _cupy_stream(pointer: int):
    """The CuPy stream of a launch's CUstream, made current around each GEMM: cuBLAS then runs on
    the stream gpubp launches on (the legacy default stream, 0, is CuPy's null stream), never on
    whatever stream the user's code made current, which would race the Numba epilogue."""
    cp = _cupy()
    return cp.cuda.Stream.null if pointer == 0 else cp.cuda.ExternalStream(pointer)


@launcher
def forward_cublas(A_prev, W, b, Z, A, act: int, stream=0) -> list[Launch]:
    """Feedforward for one layer: Z = A_prev W^T by cuBLAS, then Z += b, A = f(Z) in one kernel."""
    return [(_gemm, ("N", "T", A_prev, W, Z, 1.0, stream))] + bias_activation.plan(Z, b, A, act, stream)


@launcher
def hidden_error_cublas(Delta_next, W_next, Z, A, Delta, act: int, stream=0) -> list[Launch]:
    """BP2: Delta = Delta_next W_next by cuBLAS, then Delta ⊙= f'(Z) in one kernel."""
    return [(_gemm, ("N", "N", Delta_next, W_next, Delta, 1.0, stream))] + times_fprime.plan(Z, A, Delta, act, stream)


@launcher
def weight_gradient_cublas(Delta, A_prev, scale: float, nabla_w, stream=0) -> list[Launch]:
    """BP4: nabla_w = scale Delta^T A_prev, one cuBLAS GEMM (overwrites nabla_w)."""
    return [(_gemm, ("T", "N", Delta, A_prev, nabla_w, scale, stream))]
