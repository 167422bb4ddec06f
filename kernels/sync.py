"""Hand-offs between two CPU threads inside @njit code: a flag read with acquire and written with
release ordering (so a loop waiting on it is not optimised away and the data written before it is
seen after it), a task claimed by one thread of two (compare-and-swap),
a yield of the core to whatever else is runnable, a nap, and the cycle counter.

Waiting threads yield instead of spinning hot: on a machine doing other things too, the thread
waited for may be queued behind the waiting one (benchmarks/NOTES.md, issue 22).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def load_acquire(typingctx, flags, i):
    """flags[i] of an int64 array, read with acquire ordering."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(array.data, [args[1]]), "acquire", 8)

    return types.int64(flags, i), codegen


@intrinsic
def store_release(typingctx, flags, i, value):
    """flags[i] = value in an int64 array, written with release ordering."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value, builder.gep(array.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return types.void(flags, i, value), codegen


@intrinsic
def claim(typingctx, flags, i, expected, value):
    """flags[i] = value if it holds ``expected`` (an atomic compare-and-swap, sequentially
    consistent); True if this call made the change. Of two threads claiming one task, one wins."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        old, new = (context.cast(builder, a, t, types.int64) for a, t in zip(args[2:], signature.args[2:]))
        pair = builder.cmpxchg(builder.gep(array.data, [args[1]]), old, new, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(flags, i, expected, value), codegen


@intrinsic
def yield_core(typingctx):
    """sched_yield(): let another runnable thread have this core."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def nap(typingctx, microseconds):
    """usleep(microseconds): give the core up for at least that long."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "usleep")
        builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.uint32)])
        return context.get_dummy_value()

    return types.void(microseconds), codegen


@intrinsic
def cycles(typingctx):
    """The processor's cycle counter (rdtsc on x86): for comparing durations on one machine."""

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])

    return types.int64(), codegen
