"""How every family's kernels are launched: launch plans, and launches prepared once.

A launch is (a configured kernel, its arguments): calling the one with the other launches it. A
launcher is written as its plan, the list of launches it makes (the variant chosen, the grid sized,
the arguments gathered in a tuple), and ``launcher`` makes it a function that launches at once;
``f.plan(...)`` keeps the list, so a fit builds each step's launches once and a step only calls
them (``gpubp.engines.CudaEngine``).

On a GPU a configured kernel is a ``Prepared`` launch. numba-cuda's dispatcher does per call what a
plan's launch needs only once: it picks the compiled kernel by the arguments' types, turns every
argument into kernel parameters (an array is 5 + 2 ndim of them) and builds a ``LaunchConfig``; on
this VM, with the driver call stubbed, ~40-60 us a launch (benchmarks/NOTES.md). ``Prepared`` lets
the dispatcher make the first launch, keeps the kernel, the parameters and the configuration, and
from then on hands them to cuda.core's ``launch``, turning again only the arguments that are not
the very objects of the last call (a gather's start row). The parameters are those numba-cuda's own
``_prepare_args`` makes, so they cannot differ from what the dispatcher would pass
(tests/test_cuda_plans.py checks it on every kernel of a step, the driver stubbed).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import numba

Launch = tuple[Callable[..., Any], tuple]


def configured(kernel, grid, block, stream=0) -> Callable[..., Any]:
    """kernel[grid, block, stream], to call with the arguments: on a GPU a ``Prepared`` launch; the
    simulator's kernel keeps only its last configuration (``kernel[...]`` returns the kernel
    itself), so there every call configures again."""
    if numba.config.ENABLE_CUDASIM:
        return functools.partial(_configure_and_call, kernel, (grid, block, stream))
    return Prepared(kernel, kernel[grid, block, stream])


def _configure_and_call(kernel, configuration, *args) -> None:
    kernel[configuration](*args)


def launcher(plan: Callable[..., list[Launch]]) -> Callable[..., None]:
    """The launcher of a plan function: it launches what the plan lists; ``.plan`` is the plan."""

    @functools.wraps(plan)
    def launch(*args, **kwargs) -> None:
        for call, arguments in plan(*args, **kwargs):
            call(*arguments)

    launch.plan = plan
    return launch


def run(launches: list[Launch]) -> None:
    """Launch a plan's launches in order."""
    for call, arguments in launches:
        call(*arguments)


class Prepared:
    """A numba-cuda launch configuration, ``kernel[grid, block, stream]``, that keeps what its
    first call worked out: the compiled kernel and every argument's kernel parameters.

    The first call goes through the dispatcher (compiling if need be). If that kernel is one this
    can repeat (an exact overload, no debug, cooperative or extension argument handling) and every
    argument is already on the device, later calls launch with the kept parameters; otherwise every
    call keeps going through the dispatcher. State is replaced whole, never edited, so two threads
    calling one ``Prepared`` each launch with parameters made from their own arguments."""

    __slots__ = ("dispatcher", "configuration", "kept")

    def __init__(self, dispatcher: Any, configuration: Any) -> None:
        self.dispatcher, self.configuration = dispatcher, configuration
        self.kept: Any = None  # None: not called yet; False: always the dispatcher; else _Kept

    def __call__(self, *args: Any) -> None:
        kept = self.kept
        if kept and (len(args) != len(kept.args) or any(a is not b for a, b in zip(args, kept.args))):
            kept = self.kept = kept.remade(args)
        if kept:
            kept.launch(self.configuration.stream, kept.config, kept.function, *kept.params)
            return
        self.configuration(*args)
        if kept is None:
            self.kept = _Kept.made(self.dispatcher, self.configuration, args) or False


class _Kept:
    """What a ``Prepared`` launch keeps: its arguments, their parameters (per argument and
    flattened), the LaunchConfig and the cuda.core kernel."""

    __slots__ = ("kernel", "typeof", "args", "per_arg", "params", "config", "function", "launch")

    @classmethod
    def made(cls, dispatcher: Any, configuration: Any, args: tuple) -> _Kept | None:
        """Kept state for ``args`` after the dispatcher launched them, or None where a later call
        must go through the dispatcher again."""
        try:
            from cuda.core import LaunchConfig, launch
        except ImportError:  # an older numba-cuda that launches through its own driver wrapper
            return None
        kernel = dispatcher.overloads.get(tuple(dispatcher.typeof_pyval(a) for a in args))
        if kernel is None or kernel.debug or kernel.cooperative or kernel.extensions:
            return None
        if getattr(kernel, "launch_config_sensitive", False):  # numba-cuda would pick another kernel per launch
            return None
        self = cls()
        self.kernel, self.typeof, self.launch = kernel, dispatcher.typeof_pyval, launch
        self.function = kernel._codelibrary.get_cufunc().kernel
        c = configuration
        self.config = LaunchConfig(grid=c.griddim, block=c.blockdim, shmem_size=c.sharedmem)
        per_arg = [self.parameters(i, a) for i, a in enumerate(args)]
        if any(p is None for p in per_arg):
            return None
        self.set(args, per_arg)
        return self

    def parameters(self, i: int, value: Any) -> list | None:
        """The kernel parameters of argument ``i`` as numba-cuda makes them (None if it would copy
        the argument to or from the host on each call)."""
        params: list = []
        writebacks: list = []
        self.kernel._prepare_args(self.kernel.argument_types[i], value, 0, writebacks, params)
        return None if writebacks else params

    def set(self, args: tuple, per_arg: list) -> None:
        self.args, self.per_arg = args, per_arg
        self.params = [p for ps in per_arg for p in ps]

    def remade(self, args: tuple) -> _Kept | bool:
        """A new kept state for ``args``: parameters made again only for the arguments that changed
        (False, for the dispatcher from now on, if one of them cannot be kept or their types differ)."""
        if len(args) != len(self.args):
            return False
        per_arg = list(self.per_arg)
        for i, (old, new) in enumerate(zip(self.args, args)):
            if old is not new:
                if self.typeof(new) != self.kernel.argument_types[i]:
                    return False
                per_arg[i] = self.parameters(i, new)
                if per_arg[i] is None:
                    return False
        other = copy.copy(self)
        other.set(args, per_arg)
        return other
