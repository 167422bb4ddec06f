"""Data-parallel training over MPI (mpi4py), with NCCL (through CuPy) between GPUs.

Synchronous data-parallel SGD, as PyTorch's DistributedDataParallel and Horovod do it. Every
rank (process) holds the whole network and the whole data set, and walks the same shuffled
order. For each global mini-batch of m rows, rank r runs forward, BP1, BP2 and BP3/BP4 on its
share S_r of the rows (``share``: contiguous, sizes differing by at most one, empty for some
ranks when m < ranks), scaled by the GLOBAL batch size:

    nabla_r = (1/m) sum_{x in S_r} dC_x/dp,

one all-reduce sums them in place, nabla = sum_r nabla_r = (1/m) sum_x dC_x/dp, which is the
gradient one process computes for the whole batch, and every rank applies the same update to
the same parameters. Parameters and momentum are broadcast from rank 0 when a fit starts (and
the order of each epoch too, so differently seeded ranks still agree); costs and accuracy counts
are summed over the ranks. ``batch_size`` is therefore the global batch: the result of a fit does
not depend on the number of ranks, up to the rounding of the sums' order.

Only the per-step paths ("layers", and "cublas" on CUDA) can take a collective between two steps;
"auto" picks "layers", and a forced "epoch", "graph" or "cublas-graph" path is an error.

    from mpi4py import MPI
    import gpubp
    from gpubp import distributed

    comm = distributed.init()           # before the Network: on CUDA it picks this rank's GPU
    net = gpubp.Network([784, 100, 10], seed=0)
    net.fit(X, y, batch_size=256, comm=comm)     # mpiexec -n 4 python train.py
    net.evaluate(X_test, y_test, comm=comm)      # each rank evaluates a quarter of the rows

Transports (``Communicator.attach``), the same on every rank:
- CPU: MPI's Allreduce in place on the host buffer.
- CUDA: NCCL on the device buffer (``cupy.cuda.nccl``, its id broadcast over MPI) when every rank
  has CuPy with NCCL; else MPI on the device buffer when the MPI library says it is CUDA-aware
  (``MPIX_Query_cuda_support``); else MPI on a host copy ("staged"). ``GPUBP_TRANSPORT=nccl``,
  ``cuda-aware-mpi`` or ``staged`` forces one. The choice is logged (``logging.getLogger("gpubp")``).

Faults: ``init`` makes an uncaught exception on any rank print its traceback and call MPI_Abort,
which ends every rank (instead of leaving the others waiting in a collective); ``run_command``
does the same for the ``gpubp`` command's error exits. A rank that is killed is the launcher's
to clean up (mpiexec ends the others at once). As a last resort a watchdog ends every rank when
one has waited ``timeout`` seconds (default 300, ``GPUBP_DIST_TIMEOUT``; 0: never) in an MPI
collective: a peer that hangs, or exits without MPI_Abort. NCCL's collectives run on the GPU
after the call returns and are not watched: there, the launcher's clean-up ends the others.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import numpy as np

from .state import State

log = logging.getLogger("gpubp")

INSTALL_HINT = "distributed training needs mpi4py and an MPI library: pip install 'gpubp[mpi]'"
TRANSPORTS = ("mpi", "nccl", "cuda-aware-mpi", "staged")
DEFAULT_TIMEOUT = 300.0


def _mpi() -> Any:
    """mpi4py's MPI module (importing it initialises MPI), or ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return MPI


def _path_code(path: Any) -> int:
    """A number for the path, the same on every rank that was given the same one (for ``agree``)."""
    if path == "auto":
        return 8
    return 4 * (path.products == "cublas") + 2 * path.replay + path.whole_epoch


def _cuda_aware_mpi(MPI: Any) -> bool:
    """Whether the MPI library under mpi4py says it takes CUDA device pointers (MPICH and Open MPI
    both export MPIX_Query_cuda_support; it is looked up through mpi4py's extension module)."""
    try:
        query = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
    except (OSError, AttributeError):
        return False
    query.restype = ctypes.c_int
    return bool(query())


def _nccl() -> tuple[Any, str]:
    """(cupy.cuda.nccl, "") when CuPy with a loadable NCCL is installed, else (None, why not)."""
    try:
        from cupy.cuda import nccl

        nccl.get_version()
    except Exception as e:  # ImportError, or CuPy without NCCL: a CUDARuntimeError, a RuntimeError
        return None, f"{type(e).__name__}: {e}"
    return nccl, ""


def _pointer(array: Any) -> int:
    return array.__cuda_array_interface__["data"][0]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM that some rank received, raised by every rank at the same collective."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} on a rank")
        self.signum = signum


def check_environment() -> None:
    """ValueError naming a malformed GPUBP_DIST_TIMEOUT or GPUBP_TRANSPORT (on any device)."""
    text = os.environ.get("GPUBP_DIST_TIMEOUT", "0")  # absent: the default
    try:
        ok = float(text) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"GPUBP_DIST_TIMEOUT={text!r}: expected seconds >= 0, e.g. 300 (0: no watchdog)")
    forced = os.environ.get("GPUBP_TRANSPORT", "")
    if forced and forced not in TRANSPORTS[1:]:
        raise ValueError(f"GPUBP_TRANSPORT={forced!r} is not one of 'nccl', 'cuda-aware-mpi', 'staged'")


class Communicator:
    """A wrapper of an mpi4py communicator: this rank, its share of each batch, and the collectives
    data-parallel SGD needs (broadcast from rank 0, in-place sum of a flat buffer, sums of scalars).

    Making one is collective (every rank of ``comm`` must make it). On a machine with GPUs, and
    unless ``select_gpu`` is False, it makes GPU ``local_rank % GPUs`` current: make it before the
    Network, whose CUDA arrays live on the GPU current when it is made.
    """

    def __init__(self, comm: Any = None, select_gpu: bool = True, timeout: float | None = None) -> None:
        MPI = self.MPI = _mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        check_environment()
        if timeout is None:
            timeout = float(os.environ.get("GPUBP_DIST_TIMEOUT", str(DEFAULT_TIMEOUT)))
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds (0: no watchdog), got {timeout!r}")
        self.timeout = timeout
        self.gpu: int | None = self._select_gpu() if select_gpu else None
        self.transports: dict[str, str] = {}  # device -> transport, fixed by attach
        self.rows = 0  # training rows this rank took (``take``) since the last ``end_epoch``
        self.rows_per_rank: list[int] = []  # every rank's ``rows`` at the last ``end_epoch``
        self._nccl_comm: Any = None
        self._staging: dict[tuple[int, str], np.ndarray] = {}
        self._zeros: dict[tuple[int, str], Any] = {}
        self._waiting: tuple[float, str] | None = None  # (since when, which collective), for the watchdog
        self.deferring = False  # SIGINT/SIGTERM only noted, and shared at the next collective
        self.signal_received = 0  # the signal this rank noted, not yet shared
        self.interrupted = 0  # the signal every rank stopped for
        self._watchdog: threading.Thread | None = None

    def __repr__(self) -> str:
        where = f"rank {self.rank} of {self.size}, local rank {self.local_rank}"
        return f"Communicator({where}, transports {self.transports or 'not chosen yet'})"

    # -- set-up ---------------------------------------------------------------------------------
    def _select_gpu(self) -> int | None:
        """Make GPU local_rank % (GPUs on this machine) current; None without a real GPU."""
        from .backends import cuda_status, simulator_enabled

        if simulator_enabled() or not cuda_status()[0]:
            return None
        from numba import cuda

        gpu = self.local_rank % len(cuda.gpus)
        cuda.select_device(gpu)
        if self.local_size > len(cuda.gpus) and self.local_rank == 0:
            log.warning("gpubp: %d ranks share %d GPUs on this machine", self.local_size, len(cuda.gpus))
        return gpu

    def attach(self, device: str) -> str:
        """Choose, once per device ("cpu" or "cuda") and the same on every rank, how buffers on it
        are summed; returns and logs the transport. Collective."""
        if device in self.transports:
            return self.transports[device]
        if device == "cpu":
            transport = "mpi"
        else:
            nccl, why_not = _nccl()
            # What every rank can do, and rank 0's GPUBP_TRANSPORT (-1: none):
            # every rank then makes the same choice, or raises the same error.
            here = np.array([nccl is not None, _cuda_aware_mpi(self.MPI)], dtype=np.int64)
            everywhere = np.empty_like(here)
            self._collective("a check of the transports", self.comm.Allreduce, here, everywhere, self.MPI.MIN)
            forced = os.environ.get("GPUBP_TRANSPORT", "")
            wish = np.array([TRANSPORTS.index(forced) if forced else -1])  # checked by check_environment
            self._collective("a broadcast from rank 0", self.comm.Bcast, wish, 0)
            forced = TRANSPORTS[wish[0]] if wish[0] > 0 else ""
            transport = forced or ("nccl" if everywhere[0] else "cuda-aware-mpi" if everywhere[1] else "staged")
            if transport == "nccl" and not everywhere[0]:
                why_not = why_not or "on another rank"
                raise RuntimeError(f"GPUBP_TRANSPORT=nccl but a rank has no CuPy with NCCL ({why_not})")
            if transport == "nccl":
                self._nccl_comm = self._start_nccl(nccl)
            if not everywhere[0] and self.rank == 0:
                log.info("gpubp: no NCCL on every rank (%s)", why_not or "another rank")
        self.transports[device] = transport
        if self.rank == 0:
            log.info("gpubp: %d ranks; %s buffers are summed by %s", self.size, device, transport)
        return transport

    def _start_nccl(self, nccl: Any) -> Any:
        """An NCCL communicator over the same ranks; rank 0's unique id is broadcast over MPI."""
        uid = np.zeros(nccl.NCCL_UNIQUE_ID_BYTES if hasattr(nccl, "NCCL_UNIQUE_ID_BYTES") else 128, np.int64)
        if self.rank == 0:
            uid[:] = nccl.get_unique_id()
        self.comm.Bcast(uid, root=0)
        return nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)

    # -- who computes what --------------------------------------------------------------------------
    def share(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows of [start, stop): contiguous, every rank within one row of the others."""
        m = stop - start
        return start + m * self.rank // self.size, start + m * (self.rank + 1) // self.size

    def take(self, start: int, stop: int) -> tuple[int, int]:
        """``share`` of a training batch, counted in ``rows``."""
        lo, hi = self.share(start, stop)
        self.rows += hi - lo
        return lo, hi

    # -- signals ------------------------------------------------------------------------------------
    def defer_signals(self) -> None:
        """From now on SIGINT and SIGTERM only note the signal, and every collective shares the notes:
        every rank raises ``Interrupted`` at the same collective, so none is left waiting in one for a
        rank that stopped (Python cannot run a handler while a rank is inside an MPI call). Main thread."""

        def note(signum: int, frame: Any) -> None:
            self.signal_received = self.signal_received or signum

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, note)
        self.deferring = True

    def _share_signals(self) -> None:
        """Interrupted on every rank if some rank noted a signal (collective)."""
        if not self.deferring:
            return
        mine, every = np.array([self.signal_received], np.int64), np.zeros(1, np.int64)
        self._watched("a check for signals", self.comm.Allreduce, mine, every, self.MPI.MAX)
        if every[0]:
            self.signal_received, self.interrupted = 0, int(every[0])
            raise Interrupted(self.interrupted)

    # -- collectives ----------------------------------------------------------------------------------
    def _collective(self, what: str, call: Callable, *args: Any) -> None:
        """call(*args), watched: if it has not returned after ``timeout`` s, every rank is ended. Then
        the ranks share the signals they noted (``defer_signals``)."""
        if self.timeout > 0 and self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="gpubp-watchdog", daemon=True)
            self._watchdog.start()
        self._watched(what, call, *args)
        self._share_signals()

    def _watched(self, what: str, call: Callable, *args: Any) -> None:
        """call(*args), with the watchdog told what this rank waits in, and since when."""
        self._waiting = (time.monotonic(), what)
        try:
            call(*args)
        finally:
            self._waiting = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[0] > self.timeout:
                sys.stderr.write(
                    f"gpubp: rank {self.rank} of {self.size} waited {self.timeout:g} s for the other ranks in "
                    f"{waiting[1]}: one of them has stopped or hangs; ending every rank\n"
                )
                self.abort(3)

    def allreduce(self, buffer: Any) -> None:
        """buffer <- the sum of every rank's buffer, in place (a numpy array, or a CUDA array
        after ``attach("cuda")``)."""
        if not isinstance(buffer, np.ndarray) and self.transports["cuda"] == "nccl":
            nccl = self._nccl_module()
            p = _pointer(buffer)  # in place; on the default stream, after the kernels that wrote it
            self._nccl_comm.allReduce(p, p, buffer.size, self._nccl_type(buffer), nccl.NCCL_SUM, 0)
            self._share_signals()
        else:
            self._by_mpi(
                "the gradient all-reduce", lambda a: self.comm.Allreduce(self.MPI.IN_PLACE, a, self.MPI.SUM), buffer
            )

    def broadcast(self, buffer: Any) -> None:
        """buffer <- rank 0's buffer, in place (numpy or CUDA, like ``allreduce``)."""
        if not isinstance(buffer, np.ndarray) and self.transports["cuda"] == "nccl":
            p = _pointer(buffer)
            self._nccl_comm.broadcast(p, p, buffer.size, self._nccl_type(buffer), 0, 0)
        else:
            self._by_mpi("a broadcast from rank 0", lambda array: self.comm.Bcast(array, 0), buffer)

    def _by_mpi(self, what: str, call: Callable[[Any], None], buffer: Any) -> None:
        """``call(array)``, watched as ``what``: on a numpy ``buffer``, on a CUDA one itself (CUDA-aware
        MPI) or on a host copy of it (staged)."""
        if isinstance(buffer, np.ndarray):
            self._collective(what, call, buffer)
        elif self.transports["cuda"] == "cuda-aware-mpi":
            from numba import cuda

            cuda.synchronize()  # MPI reads the device memory outside CUDA's stream order
            self._collective(what, call, buffer)
        else:
            host = self._host(buffer)
            buffer.copy_to_host(host)
            self._collective(what, call, host)
            buffer.copy_to_device(host)

    def broadcast_state(self, state: State) -> State:
        """Rank 0's parameters and momentum state (a ``gpubp.state.State`` of host arrays) on every rank."""
        velocity = state.velocity or (
            [np.zeros_like(w) for w in state.weights],
            [np.zeros_like(b) for b in state.biases],
        )
        for array in [*state.weights, *state.biases, *velocity[0], *velocity[1]]:
            self.broadcast(np.ascontiguousarray(array))
        return dataclasses.replace(state, velocity=velocity)

    def zero(self, buffer: Any) -> None:
        """buffer <- 0: a rank with no rows in a batch adds zeros to the sum."""
        if isinstance(buffer, np.ndarray):
            buffer[...] = 0
            return
        key = (buffer.size, buffer.dtype.str)
        if key not in self._zeros:
            from numba import cuda

            self._zeros[key] = cuda.to_device(np.zeros(buffer.size, buffer.dtype))
        buffer.copy_to_device(self._zeros[key])

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks, in rank order: the same bits on every rank."""
        return _in_rank_order(self._gather("a sum of scalars", *values))

    def _gather(self, what: str, *values: float) -> np.ndarray:
        """Every rank's ``values``, a row per rank (float64)."""
        every = np.empty((self.size, len(values)), np.float64)
        self._collective(what, self.comm.Allgather, np.array(values, dtype=np.float64), every)
        return every

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on some rank (so that every rank stops when one wants to)."""
        return self.sum(float(bool(flag)))[0] > 0

    def end_epoch(self, cost: float) -> float:
        """The epoch's cost summed over the ranks; notes every rank's ``rows`` in ``rows_per_rank``."""
        every = self._gather("the epoch's sums", cost, self.rows)
        self.rows_per_rank = [int(r) for r in every[:, 1]]
        self.rows = 0
        return _in_rank_order(every[:, :1])[0]

    def agree(self, **settings: Any) -> None:
        """ValueError on every rank, naming the first setting that some rank was given otherwise than
        the rest (JSON values: numbers, names, lists): ranks that disagree on the network, the data's
        size or the training arguments would train different models or wait for each other."""
        mine = np.frombuffer(json.dumps(settings, sort_keys=True).encode(), np.uint8)
        counts = np.empty(self.size, np.int64)
        self._collective("a check of the settings", self.comm.Allgather, np.array([mine.size], np.int64), counts)
        every = np.empty(int(counts.sum()), np.uint8)
        self._collective("a check of the settings", self.comm.Allgatherv, mine, [every, counts])
        ends = np.cumsum(counts)
        ranks = [json.loads(every[e - c : e].tobytes()) for c, e in zip(counts, ends)]
        for name in sorted(settings):
            values = [r.get(name) for r in ranks]
            if any(v != values[0] for v in values):
                shown = ", ".join(json.dumps(v) for v in values)
                raise ValueError(
                    f"the ranks were given different {name}: {shown} (ranks 0..{self.size - 1}); every rank "
                    f"must fit the same network to the same data with the same settings"
                )

    def abort(self, status: int = 1) -> None:
        """End every rank of the communicator now (MPI_Abort)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.25)  # mpiexec kills every rank on an abort: let it forward what this one just wrote
        self.comm.Abort(status)

    # -- helpers --------------------------------------------------------------------------------------
    def _host(self, buffer: Any) -> np.ndarray:
        key = (buffer.size, buffer.dtype.str)
        if key not in self._staging:
            self._staging[key] = np.empty(buffer.shape, buffer.dtype)
        return self._staging[key]

    def _nccl_module(self) -> Any:
        from cupy.cuda import nccl

        return nccl

    def _nccl_type(self, buffer: Any) -> int:
        nccl = self._nccl_module()
        return {4: nccl.NCCL_FLOAT32, 8: nccl.NCCL_FLOAT64}[buffer.dtype.itemsize]


def _in_rank_order(every: np.ndarray) -> tuple[float, ...]:
    """The sum of the rows of ``every`` (a row per rank), added in rank order."""
    total = every[0].copy()
    for row in every[1:]:
        total += row
    return tuple(float(v) for v in total)


_communicators: dict[int, Communicator] = {}


def communicator(comm: Any) -> Communicator | None:
    """``comm`` as a Communicator: None stays None, a Communicator is itself, an mpi4py communicator
    is wrapped once (made on first use: collective, and after the Network, so no GPU is chosen)."""
    if comm is None or isinstance(comm, Communicator):
        return comm
    MPI = _mpi()
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator or a gpubp.distributed.Communicator, got {comm!r}")
    key = comm.py2f()
    if key not in _communicators:
        _communicators[key] = Communicator(comm, select_gpu=False)
    return _communicators[key]


def init(comm: Any = None, abort_on_error: bool = True, timeout: float | None = None) -> Communicator:
    """A Communicator over ``comm`` (default MPI.COMM_WORLD), made before the Network (so that on
    a machine with GPUs each rank takes its own). With ``abort_on_error``, an uncaught exception
    on any rank prints its traceback and ends every rank (MPI_Abort), as ``python -m mpi4py`` does."""
    dist = Communicator(comm, timeout=timeout)
    _communicators.setdefault(dist.comm.py2f(), dist)
    if abort_on_error and dist.size > 1:
        previous = sys.excepthook

        def abort_all(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            previous(kind, value, tb)
            sys.stderr.write(f"gpubp: rank {dist.rank} of {dist.size} failed; ending every rank\n")
            dist.abort(1)

        sys.excepthook = abort_all
    return dist


def prepare_fit(comm: Any, schedule: Any, device: str, **settings: float) -> Communicator | None:
    """Set ``schedule`` up for a fit over ``comm`` (None: one process): choose the transport and
    check that every rank has the same ``settings``. Collective. Returns the Communicator or None;
    the caller then takes rank 0's state by ``Communicator.broadcast_state``. (With a Communicator
    set, the schedule runs one call per step, or says why the path cannot: ``schedule.choose``.)"""
    dist = communicator(comm)
    schedule.dist = dist
    if dist is None:
        return None
    params = schedule.params
    dist.agree(path=_path_code(schedule.path), parameters=params.size, itemsize=params.dtype.itemsize, **settings)
    dist.attach(device)
    dist.rows = 0
    return dist


def run_command(args: Any, run: Callable[[], int]) -> int:
    """Run one ``gpubp`` command on every rank of MPI.COMM_WORLD (``gpubp train --distributed``).

    ``args.comm`` is set to the Communicator. Rank 0 runs the command as on one process. The other
    ranks run it quietly: no progress bar, --plot or --json (only rank 0 writes --save), their output held back and
    shown (after a second's grace for rank 0 to report the same failure) only if they fail. A rank
    that ends with a non-zero status (an error, a divergence, Ctrl-C) prints why and calls
    MPI_Abort, so no rank is left waiting in a collective for it."""
    try:
        dist = init()
    except ImportError as e:
        print(f"gpubp: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a malformed GPUBP_* variable: said once, by rank 0; every rank exits 2
        if _mpi().COMM_WORLD.Get_rank() == 0:
            print(f"gpubp: error: {e}", file=sys.stderr)
        return 2
    args.comm = dist
    if threading.current_thread() is threading.main_thread():
        dist.defer_signals()  # a signal to any rank (or to mpiexec) stops every rank at the same step
    if dist.rank == 0:
        status = run()
    else:
        args.plot = None  # --save stays: every rank's fit tracks the best epoch alike, rank 0 writes it
        args.json, args.progress = False, False
        held = io.StringIO()
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(held):
                status = run()
        except BaseException:
            sys.stderr.write(held.getvalue())
            raise  # to init's hook, which aborts every rank
        if status != 0 and dist.size > 1 and not dist.interrupted:
            # Rank 0 may have failed the same way (a bad option fails everywhere): give it a second to
            # say so and end every rank first, so the message is printed once.
            time.sleep(1.0)
        if status != 0 and not dist.interrupted:  # an interrupt every rank stopped for: rank 0 says it
            for line in held.getvalue().splitlines():
                print(f"[rank {dist.rank}] {line}", file=sys.stderr)
    if status != 0 and dist.size > 1 and not dist.interrupted:
        dist.abort(status)
    return status
