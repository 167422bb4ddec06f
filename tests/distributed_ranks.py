"""The program each rank runs in tests/test_distributed.py: ``mpiexec -n N python distributed_ranks.py MODE OUT``.

Modes:
  fit       fits and evaluations over MPI.COMM_WORLD (float64 and float32, on the CPU); each rank
            writes what it ended with to OUT/rank{r}.npz for the test to compare
  fit-cuda  a float64 fit on device="cuda" (Numba's CUDA simulator in the tests): the staged transport
  raise     the last rank raises an exception after epoch 1
  kill      the last rank kills itself (SIGKILL) after epoch 1
  hang      the last rank stops answering after epoch 1 (the watchdog of the others must end the run)
  cli-fail  `gpubp train --distributed` on an .npz file (OUT) that the last rank fails to read
  cli-slow  `gpubp train --distributed` on an .npz file (OUT) for many epochs, the last rank slow
            (so rank 0 waits in the all-reduce); each rank writes its pid to OUT.pid{rank}
"""

import os
import signal
import sys
import time

import numpy as np

SIZES = [6, 5, 4, 3]
FIT = dict(epochs=2, batch_size=7, lr=0.5, momentum=0.9, weight_decay=1e-3)
CUDA_FIT = {**FIT, "epochs": 1}
NET = dict(activation="tanh", output_activation="softmax", loss="log_likelihood", device="cpu", seed=3)


def problem():
    """50 training rows (7 batches of 7 and a last one of 1), 11 validation rows, 2 test rows."""
    rng = np.random.default_rng(7)
    X, y = rng.random((50, 6)), rng.integers(0, 3, 50)
    Xv, yv = rng.random((11, 6)), rng.integers(0, 3, 11)
    Xt, yt = rng.random((2, 6)), rng.integers(0, 3, 2)
    return X, y, Xv, yv, Xt, yt


def flat(net):
    return np.concatenate([p.ravel() for p in net.weights + net.biases])


def main(mode: str, out: str) -> None:
    import gpubp
    from gpubp import distributed

    if mode == "cli-fail":
        from gpubp import cli, data

        if int(os.environ["PMI_RANK"]) == int(os.environ["PMI_SIZE"]) - 1:  # set by MPICH's mpiexec

            def broken(*args, **kwargs):
                raise data.DataError("planted failure reading the data on this rank")

            data.load = broken
        argv = ["train", "--distributed", "--data", out, "--hidden", "4", "--epochs", "2", "--device", "cpu"]
        sys.exit(cli.main(argv))

    if mode == "cli-slow":
        from gpubp import cli

        rank, size = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
        with open(f"{out}.pid{rank}", "w") as f:
            f.write(str(os.getpid()))
        if rank == size - 1:
            allreduce = distributed.Communicator.allreduce

            def slow(self, buffer):
                time.sleep(0.02)
                allreduce(self, buffer)

            distributed.Communicator.allreduce = slow
        argv = ["train", "--distributed", "--data", out, "--hidden", "4", "--epochs", "1000", "--device", "cpu"]
        sys.exit(cli.main([*argv, "--save", f"{out}.model.npz", "--no-progress"]))

    comm = distributed.init()
    r, last = comm.rank, comm.size - 1
    X, y, Xv, yv, Xt, yt = problem()

    if mode in ("raise", "kill", "hang"):

        def callback(epoch, record):
            if r == 0 and mode == "hang":
                comm.timeout = 3.0  # the ranks are in step now: a short watchdog for the test
            if r == last and mode == "raise":
                raise RuntimeError(f"planted failure on rank {r}")
            if r == last and mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if r == last and mode == "hang":
                time.sleep(600)

        net = gpubp.Network(SIZES, dtype="float64", **NET)
        net.fit(X, y, comm=comm, callback=callback, **{**FIT, "epochs": 50})
        return

    results = {"rank": r, "size": comm.size, "out": np.array(str(out))}
    dtypes, settings, fit = ("float64", "float32"), NET, FIT
    if mode == "fit-cuda":  # the simulator is slow: 15 rows (batches of 7, 7 and 1), one epoch
        X, y, dtypes, settings, fit = X[:15], y[:15], ("float64",), {**NET, "device": "cuda"}, CUDA_FIT
    for dtype in dtypes:
        # Each rank its own seed: rank 0's parameters and shuffled order are broadcast to the others.
        net = gpubp.Network(SIZES, dtype=dtype, **{**settings, "seed": settings["seed"] + r})
        history = net.fit(X, y, validation=(Xv, yv), comm=comm, **fit)
        results[f"{dtype}_transport"] = np.array(comm.transports[net.device])
        results[f"{dtype}_params"] = flat(net)
        for key in ("loss", "val_loss", "val_accuracy"):
            results[f"{dtype}_{key}"] = np.array(history[key], dtype=np.float64)
        results[f"{dtype}_rows_per_rank"] = np.array(comm.rows_per_rank)
        for name, (Xe, ye) in {"test": (Xt, yt), "val": (Xv, yv)}.items():
            e = net.evaluate(Xe, ye, comm=comm)
            results[f"{dtype}_{name}_eval"] = np.array([e["loss"], e["accuracy"]])
    if mode == "fit":
        one = gpubp.Network([6, 3, 1], dtype="float64", device="cpu", seed=5)  # a single output: a > 0.5
        e = one.evaluate(Xv, (yv % 2).astype(float), comm=comm)
        results["one_output_eval"] = np.array([e["loss"], e["accuracy"]])
        # Ranks given different settings: the same clear error on every rank, before any step.
        disagreements = {
            "disagree": lambda net: net.fit(X, y, comm=comm, **{**FIT, "epochs": 2 + (r == last)}),
            "disagree_network": lambda net: gpubp.Network(SIZES, dtype="float64", **{
                **NET, "activation": "tanh" if r != last else "relu"}).fit(X, y, comm=comm, **FIT),
            # the rank-0-only checkpoint idiom: refused, not left to train different models
            "disagree_checkpoint": lambda net: net.fit(X, y, comm=comm, **FIT, validation=(Xv, yv),
                checkpoint=os.path.join(out, "best.npz") if r == 0 else None),
            "disagree_evaluate": lambda net: net.evaluate(Xv[: 5 + r], yv[: 5 + r], comm=comm),
        }  # fmt: skip
        for key, call in disagreements.items():
            net = gpubp.Network(SIZES, dtype="float64", **NET)
            try:
                call(net)
            except ValueError as e:
                results[key] = np.array(str(e))
                results[key + "_epochs"] = np.array(net.epochs_trained)
        # the same checkpoint on every rank: only rank 0 writes it, every rank ends with the best epoch
        net = gpubp.Network(SIZES, dtype="float64", **{**NET, "seed": NET["seed"] + r})
        history = net.fit(X, y, comm=comm, **{**FIT, "epochs": 4}, validation=(Xv, yv), early_stopping=1,
                          checkpoint=os.path.join(out, "best.npz"), monitor="val_accuracy")  # fmt: skip
        results["best_epoch"] = np.array(history.best_epoch)
        results["best_params"] = flat(net)
    np.savez(os.path.join(out, f"rank{r}.npz"), **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
