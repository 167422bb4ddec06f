"""The ``gpubp`` command: train, evaluate, predict, trace one sample, and report the set-up.

    gpubp train [--dataset fashion-mnist | --data PATH] [--hidden 30] [--epochs 30] ...
    gpubp evaluate MODEL [--dataset ... | --data ...]
    gpubp predict MODEL --data FILE [--out FILE]
    gpubp trace [--sizes 2,2,2] [--weights FILE | --seed N] [--x 0.05,0.10] [--y 0.01,0.99]
    gpubp export MODEL.npz MODEL.onnx [--dtype float32]
    gpubp info

Exit status: 0 on success; 2 for bad options, bad or missing data, a model or data file refused
(not a regular file, malformed, declaring more than it holds), a model that does not fit the data,
and any ValueError/TypeError the library raises (one line "gpubp: error: ..."); 1 when training
diverges, the device cannot be used or memory runs out; 130 when Ctrl-C stopped it, 143 SIGTERM.
SIGTERM stops training as Ctrl-C does: the model file holds the last complete save, and the
summary says which epoch that is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import data as gdata
from . import modelfile
from .modelfile import SavedEpoch

PROG = "gpubp"
TEXTBOOK_HIDDEN = [30]

# The textbook worked example (Matt Mazur, "A Step by Step Backpropagation Example"): the 2-2-2
# network `gpubp trace` shows when given neither --weights nor --seed.
WORKED_EXAMPLE = {
    "weights": [[[0.15, 0.20], [0.25, 0.30]], [[0.40, 0.45], [0.50, 0.55]]],
    "biases": [[0.35, 0.35], [0.60, 0.60]],
}


class UsageError(Exception):
    """An impossible combination of options: reported like argparse's own errors (exit 2)."""


class ModelMismatch(ValueError):
    """The model's layer sizes do not fit the data."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that training stops the same clean way."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupt_status(e: BaseException) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(e, Terminated) else 130


# ----------------------------------------------------------------------------------------------
# Argument types
# ----------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 784,30,10, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 784,30,10, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.05,0.10, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers like 0.05,0.10, got {text!r}")
    return values


def _number(convert: Any, ok: Any, what: str) -> Any:
    """An argparse type: ``convert`` the text and accept the value only where ``ok`` holds."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
_momentum = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_lr_decay = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number >= 0")


def _name(text: str) -> str:
    """A name with '-' read as '_' (cross-entropy = cross_entropy)."""
    return text.strip().lower().replace("-", "_")


def _names() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from .losses import ACTIVATIONS, LOSSES
    from .network import DTYPES, INITS

    return ACTIVATIONS, LOSSES, INITS, DTYPES


# ----------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--dataset",
        choices=gdata.DATASETS,
        default=None,
        help="a named data set (default: fashion-mnist)",
    )
    g.add_argument(
        "--data",
        metavar="PATH",
        help="a folder of IDX files in the MNIST layout (train-images-idx3-ubyte[.gz], ...), "
        "or an .npz with X and y (optionally X_test, y_test)",
    )


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="where the kernels run; auto: CUDA on a real GPU, else the CPU (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``gpubp`` command and its subcommands."""
    activations, losses, inits, dtypes = _names()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train multilayer perceptrons by backpropagation with Numba kernels (CUDA or CPU).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # -- train
    p = sub.add_parser(
        "train",
        help="train a network (defaults: the textbook Fashion-MNIST run)",
        description="Train a network by mini-batch SGD. The defaults reproduce the textbook run: "
        "Fashion-MNIST (50,000 / 10,000 / 10,000), 784,30,10, sigmoid, quadratic cost, "
        "batch 10, lr 3.0, 30 epochs.",
    )
    _add_data_options(p)
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--sizes", type=_int_list, help="all layer sizes, e.g. 784,30,10")
    arch.add_argument(
        "--hidden",
        type=_int_list,
        help="hidden layer sizes, e.g. 30 or 100,30; inputs and outputs come from the data (default: 30)",
    )
    p.add_argument("--activation", type=_name, choices=activations, help="hidden layers (default: sigmoid)")
    p.add_argument("--output-activation", type=_name, choices=activations, help="output layer (default: --activation)")
    p.add_argument("--loss", type=_name, choices=losses, help="the cost (default: quadratic)")
    p.add_argument("--init", choices=inits, help="weight initialisation (default: scaled, N(0, 1/n_in))")
    p.add_argument("--dtype", choices=dtypes, help="float32 or float64 (default: float32)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="default: 30")
    p.add_argument("--batch-size", type=_positive_int, default=10, help="default: 10")
    p.add_argument("--lr", type=_positive_float, default=3.0, help="learning rate (default: 3.0)")
    p.add_argument("--lr-decay", type=_lr_decay, default=1.0, help="multiply lr by this after each epoch (default: 1)")
    p.add_argument("--momentum", type=_momentum, default=0.0, help="in [0, 1) (default: 0)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0, help="L2 (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and shuffling (default: 0)")
    _add_device_option(p)
    p.add_argument("--save", metavar="PATH", help="keep the best model by validation accuracy here (.npz)")
    p.add_argument(
        "--early-stopping",
        type=_positive_int,
        metavar="EPOCHS",
        help="stop after this many epochs in a row without a better validation accuracy",
    )
    p.add_argument(
        "--resume",
        metavar="PATH",
        help="continue training a saved model (its layers, activations, loss and dtype)",
    )
    p.add_argument("--plot", metavar="PATH", help="write a PNG of loss and accuracy per epoch (matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON summary at the end (to stdout)")
    p.add_argument(  # distributed:
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec (gpubp[mpi]); --batch-size is the global batch",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the progress bar within each epoch (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_train)

    # -- evaluate
    p = sub.add_parser("evaluate", help="loss and accuracy of a saved model on a test set")
    p.add_argument("model", metavar="MODEL", help="a model written by `gpubp train --save`")
    _add_data_options(p)
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split (default: test)")
    _add_device_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_evaluate)

    # -- predict
    p = sub.add_parser("predict", help="predicted labels of a saved model, one per line")
    p.add_argument("model", metavar="MODEL", help="a model written by `gpubp train --save`")
    p.add_argument(
        "--data", metavar="FILE", required=True, help="rows to classify: .npy, .npz (array X) or an IDX file"
    )
    p.add_argument("--out", metavar="FILE", help="write the labels here (.npy if the name ends so) not stdout")
    _add_device_option(p)
    p.set_defaults(func=cmd_predict)

    # -- trace
    p = sub.add_parser(
        "trace",
        help="one forward and one backward pass on one sample, every quantity printed",
        description="Print every quantity of one forward and one backward pass, layer by layer, like a "
        "textbook worked example. With neither --weights nor --seed, the 2,2,2 network is Matt "
        "Mazur's worked example (w = .15 .20 .25 .30 / .40 .45 .50 .55, b = .35 / .60).",
    )
    p.add_argument("--sizes", type=_int_list, default=None, help="layer sizes (default: 2,2,2)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--weights",
        metavar="FILE",
        help="an .npz with w0, b0, w1, b1, ... (w{l} is layer l+1's (n_out, n_in) matrix): "
        "a model saved by gpubp, or arrays of your own",
    )
    src.add_argument("--seed", type=int, help="random initial weights from this seed")
    p.add_argument("--x", type=_float_list, default=None, help="the input (default: 0.05,0.10)")
    p.add_argument("--y", type=_float_list, default=None, help="the target (default: 0.01,0.99)")
    p.add_argument("--lr", type=_positive_float, default=0.5, help="learning rate of the update (default: 0.5)")
    p.add_argument("--activation", type=_name, choices=activations, help="hidden layers (default: sigmoid)")
    p.add_argument("--output-activation", type=_name, choices=activations, help="default: --activation")
    p.add_argument("--loss", type=_name, choices=losses, help="the cost (default: quadratic)")
    p.add_argument("--precision", type=_positive_int, default=8, help="digits after the point (default: 8)")
    p.set_defaults(func=cmd_trace)

    # -- export (issue 15)
    p = sub.add_parser(
        "export",
        help="write a saved model as ONNX (one Gemm and its activation per layer)",
        description="Write a model saved by gpubp as an ONNX model for onnxruntime and other runtimes: "
        "input X (N, inputs), output Y (N, outputs), the output activations. Needs the onnx extra.",
    )
    p.add_argument("model", metavar="MODEL", help="a model written by `gpubp train --save` (.npz)")
    p.add_argument("out", metavar="OUT", help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument("--dtype", choices=dtypes, help="of the weights, input and output (default: the model's)")
    p.set_defaults(func=cmd_export)

    # -- info
    p = sub.add_parser("info", help="versions, the GPU seen, and the path device='auto' takes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_info)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gpubp")
    except Exception:
        try:
            import gpubp

            return str(getattr(gpubp, "__version__", "unknown"))
        except Exception:
            return "unknown"


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _load_data(args: argparse.Namespace) -> gdata.Dataset:
    if args.data:
        return gdata.load(args.data)
    return gdata.load(args.dataset or "fashion-mnist")


def _load_model(path: str, device: str, seed: int | None = 0):
    import gpubp

    if not os.path.exists(path):
        raise gdata.DatasetNotFoundError(f"{path}: no such model file")
    return gpubp.Network.load(path, device=device, seed=seed)


def _check_fits(sizes: list[int], ds: gdata.Dataset, what: str) -> None:
    """Refuse layer sizes whose input or output layer does not fit the data."""
    if sizes[0] != ds.n_features:
        raise ModelMismatch(f"{what} has {sizes[0]} inputs but {ds.name} has {ds.n_features} features")
    if sizes[-1] < ds.n_classes:
        raise ModelMismatch(f"{what} has {sizes[-1]} outputs but {ds.name} has {ds.n_classes} classes")


def _labels(outputs: np.ndarray) -> np.ndarray:
    """Class labels from output activations: the argmax, or a > 0.5 for a single output."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar per epoch (samples and samples/s, on stderr), fed by fit's progress(done, total)."""

    def __init__(self, enabled: bool, epochs: int, total: int) -> None:
        self.enabled, self.epochs, self.total = enabled, epochs, total
        self.bar: Any = None
        self.done = 0
        self.epoch = 1

    def start(self) -> None:
        """Open the bar of the next epoch (its clock starts now)."""
        if not self.enabled or self.bar is not None or self.epoch > self.epochs:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total,
            desc=f"epoch {self.epoch}/{self.epochs}",
            unit="samples",
            unit_scale=True,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.start()
        self.bar.total = total
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        """Close this epoch's bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch += 1


def _check_train_options(args: argparse.Namespace) -> None:
    if args.resume:
        given = [
            opt
            for opt, value in (
                ("--sizes", args.sizes),
                ("--hidden", args.hidden),
                ("--activation", args.activation),
                ("--output-activation", args.output_activation),
                ("--loss", args.loss),
                ("--init", args.init),
                ("--dtype", args.dtype),
            )
            if value is not None
        ]
        if given:
            raise UsageError(f"--resume takes the model's own layers and settings; drop {', '.join(given)}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    for opt, path in (("--save", args.save), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"{opt} {path}: folder {Path(path).resolve().parent} does not exist")


def cmd_train(args: argparse.Namespace) -> int:
    """``gpubp train``: fit a network, one line per epoch, a summary at the end."""
    import gpubp

    _check_train_options(args)
    out: TextIO = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")  # one write: an interrupt never splits a line from its newline
        out.flush()

    t_start = time.perf_counter()
    ds = _load_data(args)
    if args.resume:
        net = _load_model(args.resume, args.device, args.seed)
        _check_fits(net.sizes, ds, f"model {args.resume}")
    else:
        if args.sizes is not None:
            sizes = list(args.sizes)
            if len(sizes) < 2:
                raise UsageError("--sizes needs at least two layers, e.g. 784,30,10")
            _check_fits(sizes, ds, f"--sizes {','.join(map(str, sizes))}")
        else:
            hidden = TEXTBOOK_HIDDEN if args.hidden is None else args.hidden
            sizes = [ds.n_features, *hidden, ds.n_classes]
        net = gpubp.Network(
            sizes,
            activation=args.activation or "sigmoid",
            output_activation=args.output_activation,
            loss=args.loss or "quadratic",
            init=args.init or "scaled",
            dtype=args.dtype or "float32",
            device=args.device,
            seed=args.seed,
        )
    sizes_text = ",".join(map(str, net.sizes))
    say(
        f"data {ds.name}: {len(ds.y_train)} train / {len(ds.y_val)} validation / {len(ds.y_test)} test, "
        f"{ds.n_features} features, {ds.n_classes} classes"
    )
    say(
        f"network {sizes_text}: {net.activation} hidden, {net.output_activation} output, {net.loss} loss, "
        f"{net.dtype.name} on {net.device}" + (f" (resumed from {args.resume})" if args.resume else "")
    )
    # A resumed model goes on with the lr schedule where its saved epoch left it.
    epochs_before = net.epochs_trained
    lr = args.lr * args.lr_decay**epochs_before
    say(
        f"SGD: {args.epochs} epoch{'s' if args.epochs != 1 else ''}, batch {args.batch_size}, lr {args.lr}"
        + _extras(args)
        + (f"; after {epochs_before} epochs, lr starts at {lr:.6g}" if args.resume and args.lr_decay != 1 else "")
    )

    has_val = len(ds.y_val) > 0
    validation = (ds.X_val, ds.y_val) if has_val else None
    best = {"epoch": None, "val_accuracy": None}
    in_place = bool(args.resume and args.save and Path(args.save).resolve() == Path(args.resume).resolve())
    # fit keeps the best model in --save (gpubp.training); this says which epoch the file really
    # holds (0: the resumed model), whatever interrupts a save.
    saved = SavedEpoch(args.save, initial=0 if in_place else None) if args.save else None
    if args.early_stopping and not has_val:
        raise UsageError("--early-stopping watches the validation accuracy, and this data set has no validation set")
    baseline = None
    if in_place and has_val:
        # Overwrite the resumed model only with a better one.
        baseline = best["val_accuracy"] = net.evaluate(ds.X_val, ds.y_val)["accuracy"]
        best["epoch"] = 0
        say(f"resumed model: validation accuracy {best['val_accuracy']:.4f}")
    show_bar = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = _Progress(show_bar, args.epochs, len(ds.y_train))
    epochs_done: list[dict] = []
    width = len(str(args.epochs))

    def callback(epoch: int, record: dict) -> None:
        progress.close()
        epochs_done.append(record)
        line = f"epoch {epoch:>{width}}/{args.epochs}  loss {record['loss']:.4f}"
        if record.get("val_accuracy") is not None:
            line += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
        line += f"  {record['seconds']:.2f} s"
        if record["improved"]:  # judged by fit's tracker, which has saved it to --save
            best["epoch"], best["val_accuracy"] = epoch, record["val_accuracy"]
            line += "  saved" if has_val and saved is not None and saved.epoch == epoch else ""
        say(line)
        progress.start()

    comm = getattr(args, "comm", None)  # distributed: set by gpubp.distributed.run_command
    if comm is not None:
        say(f"distributed: {comm.size} ranks; gradients summed by {comm.attach(net.device)}")
    interrupted = diverged = None
    t_fit = time.perf_counter()
    progress.start()
    try:
        net.fit(
            ds.X_train,
            ds.y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            validation=validation,
            callback=callback,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            lr_decay=args.lr_decay,
            progress=progress,
            comm=comm,
            monitor="val_accuracy" if has_val else "epoch",  # without validation, the latest is kept
            early_stopping=args.early_stopping,
            checkpoint=saved,
            restore_best=False,  # the test set scores the last epoch's model
            baseline=baseline,
        )
    except KeyboardInterrupt as e:
        progress.close()
        interrupted = _interrupt_status(e)
        if saved is not None:
            saved.settle()
        if saved is not None and saved.unfinished is not None:
            say(f"interrupted while saving epoch {saved.unfinished}")
        else:
            say(f"interrupted during epoch {len(epochs_done) + 1}")
    except gpubp.TrainingDiverged as e:
        progress.close()
        diverged = str(e)
        print(f"{PROG}: {e}", file=sys.stderr)
    fit_seconds = time.perf_counter() - t_fit

    test = None
    if not interrupted and not diverged and len(ds.y_test):
        try:
            test = net.evaluate(ds.X_test, ds.y_test, comm=comm)
            say(f"test: loss {test['loss']:.4f}  accuracy {test['accuracy']:.4f} ({len(ds.y_test)} samples)")
        except KeyboardInterrupt as e:
            interrupted = _interrupt_status(e)
            say("interrupted while evaluating the test set")
    if has_val and best["epoch"] is not None:
        say(f"best epoch {best['epoch']}: validation accuracy {best['val_accuracy']:.4f}")
    if saved is not None:
        saved.settle()
        say(_saved_line(saved, epochs_before))
    total = time.perf_counter() - t_start
    say(f"time {_fmt_seconds(fit_seconds)} training, {_fmt_seconds(total)} in all; device {net.device}")

    history = {
        key: [r.get(key) for r in epochs_done] for key in ("epoch", "lr", "loss", "val_loss", "val_accuracy", "seconds")
    }
    if args.plot and epochs_done:
        _plot(history, args.plot, title=f"{ds.name}: {sizes_text}, {net.activation}/{net.loss}")
        say(f"plot written to {args.plot}")
    if args.json:
        summary = {
            "dataset": ds.name,
            "device": net.device,
            "dtype": net.dtype.name,
            "sizes": net.sizes,
            "activation": net.activation,
            "output_activation": net.output_activation,
            "loss_function": net.loss,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "momentum": args.momentum,
            "weight_decay": args.weight_decay,
            "lr_decay": args.lr_decay,
            "seed": args.seed,
            "resumed_from": args.resume,
            "epochs_before": epochs_before,
            "history": history,
            "best_epoch": best["epoch"],
            "best_val_accuracy": best["val_accuracy"] if has_val else None,
            "saved": saved.path if saved is not None and saved.epoch else None,
            "saved_epoch": saved.epoch if saved is not None else None,
            "test_loss": test["loss"] if test else None,
            "test_accuracy": test["accuracy"] if test else None,
            "seconds": total,
            "training_seconds": fit_seconds,
            "interrupted": bool(interrupted),
            "diverged": diverged,
        }
        if comm is not None:  # distributed:
            summary.update(ranks=comm.size, rows_per_rank=comm.rows_per_rank)
        print(json.dumps(_jsonable(summary)), flush=True)
    if interrupted:
        return interrupted
    return 1 if diverged else 0


def _saved_line(saved: SavedEpoch, epochs_before: int) -> str:
    """What the --save file holds, as the file system says (not as the run hoped)."""
    lead = f"the save of epoch {saved.unfinished} did not finish; " if saved.unfinished is not None else ""
    if saved.epoch is None:
        return f"{lead}no model of this run saved to {saved.path}"
    if saved.epoch == 0:
        return f"{lead}no epoch beat the resumed model; {saved.path} is unchanged"
    resumed = f" ({epochs_before + saved.epoch} epochs trained in all)" if epochs_before else ""
    return f"{lead}model of epoch {saved.epoch}{resumed} saved to {saved.path}"


def _extras(args: argparse.Namespace) -> str:
    parts = []
    if args.momentum:
        parts.append(f"momentum {args.momentum:g}")
    if args.weight_decay:
        parts.append(f"weight decay {args.weight_decay:g}")
    if args.lr_decay != 1:
        parts.append(f"lr decay {args.lr_decay:g}")
    return (", " + ", ".join(parts)) if parts else ""


def _plot(history: dict[str, list], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], marker="o", label="training")
    if any(v is not None for v in history["val_loss"]):
        ax_loss.plot(epochs, history["val_loss"], marker="o", label="validation")
        ax_acc.plot(epochs, history["val_accuracy"], marker="o", color="C1", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# evaluate, predict
# ----------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``gpubp evaluate``: loss and accuracy of a saved model on a split of a data set."""
    ds = _load_data(args)
    net = _load_model(args.model, args.device)
    _check_fits(net.sizes, ds, f"model {args.model}")
    X, y = {"test": (ds.X_test, ds.y_test), "val": (ds.X_val, ds.y_val), "train": (ds.X_train, ds.y_train)}[args.split]
    if len(y) == 0:
        raise gdata.DataError(f"{ds.name}: the {args.split} split is empty")
    result = net.evaluate(X, y)
    if args.json:
        print(json.dumps(_jsonable({"dataset": ds.name, "split": args.split, "n": len(y), **result})))
    else:
        loss, accuracy = result["loss"], result["accuracy"]
        print(f"{ds.name} {args.split}: loss {loss:.4f}  accuracy {accuracy:.4f} ({len(y)} samples)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``gpubp predict``: the predicted label of each row, one per line (or an .npy)."""
    X = gdata.load_features(args.data)
    net = _load_model(args.model, args.device)
    if X.shape[1] != net.sizes[0]:
        raise ModelMismatch(
            f"model {args.model} has {net.sizes[0]} inputs but {args.data} has {X.shape[1]} values per row"
        )
    labels = _labels(np.asarray(net.predict(X)))
    if args.out and args.out.endswith(".npy"):
        np.save(args.out, labels)
    elif args.out:
        Path(args.out).write_text("".join(f"{v}\n" for v in labels.tolist()))
    else:
        sys.stdout.write("".join(f"{v}\n" for v in labels.tolist()))
    return 0


# ----------------------------------------------------------------------------------------------
# export (issue 15)
# ----------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    """``gpubp export``: a saved model as an ONNX file (written atomically)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError('export needs the onnx package, which is not installed: pip install "gpubp[onnx]"') from None
    out = Path(args.out)
    if not out.resolve().parent.is_dir():
        raise UsageError(f"OUT {args.out}: folder {out.resolve().parent} does not exist")
    if out.exists() and Path(args.model).exists() and out.resolve() == Path(args.model).resolve():
        raise UsageError(f"OUT {args.out} is the model itself; give another name, e.g. model.onnx")
    net = _load_model(args.model, "cpu")
    net.to_onnx(out, dtype=args.dtype)
    dtype = args.dtype or net.dtype.name
    print(f"wrote {args.out}: {','.join(map(str, net.sizes))} {net.activation}/{net.output_activation}, {dtype}")
    return 0


# ----------------------------------------------------------------------------------------------
# trace
# ----------------------------------------------------------------------------------------------


def _trace_params(args: argparse.Namespace, sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(weights, biases, the saved model's settings if --weights is a gpubp model)."""
    import gpubp

    if args.weights:
        model = modelfile.read(args.weights, plain=True)  # checked before any array is read
        weights = [np.asarray(w, float) for w in model.weights]
        return weights, [np.asarray(b, float) for b in model.biases], model.config
    if args.seed is None and sizes == [2, 2, 2]:
        weights = [np.array(w) for w in WORKED_EXAMPLE["weights"]]
        return weights, [np.array(b) for b in WORKED_EXAMPLE["biases"]], {}
    net = gpubp.Network(sizes, seed=0 if args.seed is None else args.seed, dtype="float64", device="cpu")
    return net.weights, net.biases, {}


def _vec(v: np.ndarray, p: int) -> str:
    return "[" + ", ".join(f"{x:.{p}f}" for x in np.ravel(v)) + "]"


def _mat(m: np.ndarray, p: int, indent: str) -> str:
    rows = [_vec(r, p) for r in np.atleast_2d(m)]
    return ("\n" + indent).join(rows)


_F_NAMES = {"sigmoid": "sigma", "tanh": "tanh", "relu": "relu", "linear": "linear", "softmax": "softmax"}
_COSTS = {
    "quadratic": "C = 1/2 sum_j (a_j - y_j)^2",
    "cross_entropy": "C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]",
    "log_likelihood": "C = -sum_j y_j ln a_j",
}


def cmd_trace(args: argparse.Namespace) -> int:
    """``gpubp trace``: a textbook worked example of one forward and one backward pass."""
    import gpubp

    sizes = list(args.sizes) if args.sizes is not None else [2, 2, 2]
    if len(sizes) < 2:
        raise UsageError("--sizes needs at least two layers, e.g. 2,2,2")
    if args.weights and args.sizes is not None:
        raise UsageError("--weights sets the layer sizes; drop --sizes")
    weights, biases, saved = _trace_params(args, sizes)
    net = gpubp.Network.from_params(
        weights,
        biases,
        activation=args.activation or saved.get("activation", "sigmoid"),
        output_activation=args.output_activation or saved.get("output_activation"),
        loss=args.loss or saved.get("loss", "quadratic"),
        dtype="float64",
        device="cpu",
    )
    sizes = net.sizes
    x = args.x if args.x is not None else ([0.05, 0.10] if sizes[0] == 2 else None)
    y = args.y if args.y is not None else ([0.01, 0.99] if sizes[-1] == 2 else None)
    if x is None or len(x) != sizes[0]:
        raise UsageError(f"--x needs {sizes[0]} comma-separated numbers for a network with {sizes[0]} inputs")
    if y is None or len(y) != sizes[-1]:
        raise UsageError(f"--y needs {sizes[-1]} comma-separated numbers for a network with {sizes[-1]} outputs")
    t = net.trace(np.array(x), np.array(y, dtype=float), lr=args.lr)
    p = args.precision
    L = len(sizes) - 1
    acts = t.get("activations") or [net.activation] * (L - 1) + [net.output_activation]
    w = print

    w(
        f"network {','.join(map(str, sizes))}: {net.activation} hidden, {net.output_activation} output, "
        f"{net.loss} cost, lr {args.lr:g}"
    )
    w(f"x = a^0 = {_vec(t['x'], p)}")
    w(f"y       = {_vec(t['y'], p)}")
    w("")
    w("Parameters (W^l is n_l x n_(l-1): w^l_jk joins neuron k of layer l-1 to neuron j of layer l)")
    for i in range(1, L + 1):
        w(f"  W^{i} = {_mat(t['weights'][i - 1], p, ' ' * (7 + len(str(i))))}")
        w(f"  b^{i} = {_vec(t['biases'][i - 1], p)}")
    w("")
    w("Forward pass")
    for i in range(1, L + 1):
        f = _F_NAMES.get(acts[i - 1], acts[i - 1])
        w(f"  layer {i}:")
        w(f"    z^{i} = W^{i} a^{i - 1} + b^{i} = {_vec(t['z'][i - 1], p)}")
        w(f"    a^{i} = {f}(z^{i}) = {_vec(t['a'][i], p)}")
    w("")
    w(f"Cost ({_COSTS.get(net.loss, net.loss)})")
    w(f"  C = {t['cost']:.{p}f}")
    w("")
    w("Backward pass")
    f_out = _F_NAMES.get(acts[-1], acts[-1])
    w(f"  delta^{L} = grad_a C (.) {f_out}'(z^{L}) = {_vec(t['delta'][L - 1], p)}   (BP1)")
    for i in range(L - 1, 0, -1):
        f = _F_NAMES.get(acts[i - 1], acts[i - 1])
        rule = f"((W^{i + 1})^T delta^{i + 1}) (.) {f}'(z^{i})"
        w(f"  delta^{i} = {rule} = {_vec(t['delta'][i - 1], p)}   (BP2)")
    for i in range(L, 0, -1):
        ind = " " * (len(f"  dC/dW^{i} = "))
        w(f"  dC/dW^{i} = delta^{i} (a^{i - 1})^T =   (BP4)")
        w(f"{ind}{_mat(t['nabla_w'][i - 1], p, ind)}")
        w(f"  dC/db^{i} = delta^{i} = {_vec(t['nabla_b'][i - 1], p)}   (BP3)")
    w("")
    w(f"Update: W^l <- W^l - {args.lr:g} dC/dW^l,  b^l <- b^l - {args.lr:g} dC/db^l")
    for i in range(1, L + 1):
        w(f"  W^{i} = {_mat(t['weights_after'][i - 1], p, ' ' * (7 + len(str(i))))}")
        w(f"  b^{i} = {_vec(t['biases_after'][i - 1], p)}")
    return 0


# ----------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------


def _device_report() -> dict[str, Any]:
    import gpubp

    report = getattr(gpubp, "device_report", None)
    if report is not None:
        return dict(report())
    from .backends import device_report  # pragma: no cover - the same function

    return dict(device_report())


def cmd_info(args: argparse.Namespace) -> int:
    """``gpubp info``: versions, the GPU seen or why none, and the path device='auto' takes."""
    r = _device_report()
    r.setdefault("gpubp", _version())
    if args.json:
        print(json.dumps(_jsonable(r), indent=2))
        return 0
    cupy = r.get("cupy", "not installed")
    if cupy == "not installed":
        cupy = r.get("cupy-cuda12x", "not installed")
    print(f"gpubp       {r.get('gpubp')}")
    print(f"numba       {r.get('numba', 'not installed')}")
    print(f"numba-cuda  {r.get('numba-cuda', 'not installed')}")
    print(f"numpy       {r.get('numpy', 'not installed')}")
    print(f"cupy        {cupy}")
    print(f"python      {sys.version.split()[0]}")
    if "gpu_name" in r:
        cc, mem = r["gpu_compute_capability"], r["gpu_memory_gib"]
        print(f"GPU         {r['gpu_name']}, compute capability {cc}, {mem} GiB")
    elif r.get("cuda_usable"):
        print(f"GPU         {r.get('cuda')}")
    else:
        print(f"GPU         none: {r.get('cuda')}")
    print(f"auto        device='auto' runs on {r.get('auto_device')}: {r.get('auto_reason')}")
    return 0


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the ``gpubp`` command with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (status 2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        if getattr(args, "distributed", False):  # every rank runs the command
            from .distributed import run_command

            return run_command(args, lambda: _run(args, subparser))
        return _run(args, subparser)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run(args: argparse.Namespace, subparser: argparse.ArgumentParser) -> int:
    """The subcommand, every refusal turned into one line on stderr and an exit status."""
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        try:
            subparser.error(str(e))
        except SystemExit as exit_:
            return int(exit_.code or 2)
    except (ValueError, TypeError, FileNotFoundError) as e:  # DataError is a ValueError
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. device='cuda' without a usable GPU
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return _interrupt_status(e)
    except BrokenPipeError:  # `gpubp predict ... | head`
        return 0
    except OSError as e:  # e.g. --out or --save in a folder we may not write to
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
