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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from . import Network, TrainingDiverged, __version__, device_report
from . import data as gdata
from .config import PARAMETERS, InvalidParameter, parse
from .distributed import run_command
from .modelfile import SavedEpoch
from .trace import cmd_trace
from .training import decayed_lr

PROG = "gpubp"
TEXTBOOK_HIDDEN = [30]
NETWORK_OPTIONS = ("activation", "output_activation", "loss", "init", "dtype")  # Network's defaults are the CLI's
HISTORY = ("epoch", "lr", "loss", "val_loss", "val_accuracy", "seconds")  # fit's record of each epoch


class UsageError(argparse.ArgumentError):
    """An impossible combination of options: reported like argparse's own errors (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ModelMismatch(ValueError):
    """The model's layer sizes do not fit the data."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that training stops the same clean way."""

    signum = signal.SIGTERM


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupt_status(e: BaseException) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for Ctrl-C (a distributed run's may come from another rank)."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------


def _list_of(kind: type, ok: Callable[[Any], bool], noun: str, adjective: str, example: str) -> Callable[[str], list]:
    """An option type: comma-separated numbers of ``kind`` (else "expected ``noun`` like ``example``"),
    each ``ok`` (else "expected ``adjective`` ``noun`` like ...")."""

    def read(text: str) -> list:
        try:
            values = [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} like {example}, got {text!r}") from None
        if not values or not all(ok(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {adjective} {noun} like {example}, got {text!r}")
        return values

    return read


_int_list = _list_of(int, lambda v: v >= 1, "integers", "positive", "784,30,10")
_float_list = _list_of(float, math.isfinite, "numbers", "finite", "0.05,0.10")


def _name(text: str) -> str:
    """A name with '-' read as '_' (cross-entropy = cross_entropy)."""
    return text.strip().lower().replace("-", "_")


def _number(key: str, **keywords: Any) -> dict[str, Any]:
    """A number read as ``PARAMETERS[key]`` (``config.parse``): a bad value is refused in the words
    ``Network.fit`` uses, e.g. "epochs must be a positive integer, got 0"."""

    def read(text: str) -> Any:
        try:
            return parse(key, text)
        except InvalidParameter as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return {"type": read, **keywords}


def _choice(key: str, **keywords: Any) -> dict[str, Any]:
    """A name among ``PARAMETERS[key]``'s choices."""
    return {"type": _name, "choices": PARAMETERS[key].choices, **keywords}


# Every option, declared once: add_argument's keywords by name. A subcommand takes its options
# with _add, changing a default or a help text where it must.
OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"metavar": "MODEL", "help": "a model written by `gpubp train --save` (.npz)"},
    "--dataset": {"choices": gdata.DATASETS, "help": "a named data set (default: fashion-mnist)"},
    "--data": {
        "metavar": "PATH",
        "help": "a folder of IDX files in the MNIST layout (train-images-idx3-ubyte[.gz], ...), "
        "or an .npz with X and y (optionally X_test, y_test)",
    },
    "--sizes": {"type": _int_list, "help": "all layer sizes, e.g. 784,30,10"},
    "--hidden": {
        "type": _int_list,
        "help": "hidden layer sizes, e.g. 30 or 100,30; inputs and outputs come from the data (default: 30)",
    },
    "--activation": _choice("activation", help="hidden layers (default: sigmoid)"),
    "--output-activation": _choice("output_activation", help="output layer (default: --activation)"),
    "--loss": _choice("loss", help="the cost (default: quadratic)"),
    "--init": _choice("init", help="weight initialisation (default: scaled, N(0, 1/n_in))"),
    "--dtype": _choice("dtype", help="float32 or float64 (default: float32)"),
    "--epochs": _number("epochs", default=30, help="default: 30"),
    "--batch-size": _number("batch_size", default=10, help="default: 10"),
    "--lr": _number("lr", default=3.0, help="learning rate (default: %(default)s)"),
    "--lr-decay": _number("lr_decay", default=1.0, help="multiply lr by this after each epoch (default: 1)"),
    "--momentum": _number("momentum", default=0.0, help="in [0, 1) (default: 0)"),
    "--weight-decay": _number("weight_decay", default=0.0, help="L2 (default: 0)"),
    "--seed": _number("seed", default=0, help="initial weights and shuffling (default: 0)"),
    "--device": _choice(
        "device", default="auto", help="where the kernels run; auto: CUDA on a real GPU, else the CPU (default: auto)"
    ),
    "--save": {"metavar": "PATH", "help": "keep the best model by validation accuracy here (.npz)"},
    "--early-stopping": _number(
        "early_stopping",
        metavar="EPOCHS",
        help="stop after this many epochs in a row without a better validation accuracy",
    ),
    "--resume": {
        "metavar": "PATH",
        "help": "continue training a saved model (its layers, activations, loss and dtype)",
    },
    "--plot": {"metavar": "PATH", "help": "write a PNG of loss and accuracy per epoch (matplotlib)"},
    "--json": {"action": "store_true", "help": "print the result as JSON"},
    "--distributed": {
        "action": "store_true",
        "help": "data-parallel over the ranks of mpiexec (gpubp[mpi]); --batch-size is the global batch",
    },
    "--progress": {
        "action": argparse.BooleanOptionalAction,
        "help": "the progress bar within each epoch (default: when stderr is a terminal)",
    },
    "--split": {"choices": ("test", "val", "train"), "default": "test", "help": "which split (default: test)"},
    "--out": {"metavar": "FILE", "help": "write the labels here (.npy if the name ends so) not stdout"},
    "--weights": {
        "metavar": "FILE",
        "help": "an .npz with w0, b0, w1, b1, ... (w{l} is layer l+1's (n_out, n_in) matrix): "
        "a model saved by gpubp, or arrays of your own",
    },
    "--x": {"type": _float_list, "help": "the input (default: 0.05,0.10)"},
    "--y": {"type": _float_list, "help": "the target (default: 0.01,0.99)"},
    "--precision": _number("precision", default=8, help="digits after the point (default: 8)"),
}


def _add(parser: Any, *names: str, **changes: Any) -> None:
    """Add the options ``names`` to ``parser`` (or to a group of it), with ``changes`` to each."""
    for name in names:
        parser.add_argument(name, **{**OPTIONS[name], **changes})


def _train_options(p: argparse.ArgumentParser) -> None:
    _add(p.add_mutually_exclusive_group(), "--dataset", "--data")
    _add(p.add_mutually_exclusive_group(), "--sizes", "--hidden")
    _add(p, "--activation", "--output-activation", "--loss", "--init", "--dtype")
    _add(p, "--epochs", "--batch-size", "--lr", "--lr-decay", "--momentum", "--weight-decay", "--seed", "--device")
    _add(p, "--save", "--early-stopping", "--resume", "--plot")
    _add(p, "--json", help="print one JSON summary at the end (to stdout)")
    _add(p, "--distributed", "--progress")


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    _add(p, "model")
    _add(p.add_mutually_exclusive_group(), "--dataset", "--data")
    _add(p, "--split", "--device", "--json")


def _predict_options(p: argparse.ArgumentParser) -> None:
    _add(p, "model")
    _add(p, "--data", metavar="FILE", required=True, help="rows to classify: .npy, .npz (array X) or an IDX file")
    _add(p, "--out", "--device")


def _trace_options(p: argparse.ArgumentParser) -> None:
    _add(p, "--sizes", help="layer sizes (default: 2,2,2)")
    source = p.add_mutually_exclusive_group()
    _add(source, "--weights")
    _add(source, "--seed", default=None, help="random initial weights from this seed")
    _add(p, "--x", "--y")
    _add(p, "--lr", default=0.5)
    _add(p, "--activation", "--output-activation", "--loss", "--precision")


def _export_options(p: argparse.ArgumentParser) -> None:
    _add(p, "model")
    p.add_argument("out", metavar="OUT", help="the ONNX file to write (e.g. model.onnx)")
    _add(p, "--dtype", help="of the weights, input and output (default: the model's)")


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _load_data(args: argparse.Namespace) -> gdata.Dataset:
    return gdata.load(args.data or args.dataset or "fashion-mnist")


def _load_model(path: str, device: str, seed: int | None = 0) -> Network:
    if not os.path.exists(path):
        raise gdata.DatasetNotFoundError(f"{path}: no such model file")
    return Network.load(path, device=device, seed=seed)


def _check_fits(sizes: list[int] | tuple[int, ...], ds: gdata.Dataset, what: str) -> None:
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
    """``value`` with numpy scalars as Python's and NaN or inf as None (null)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
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
        if not self.enabled or self.epoch > self.epochs:
            return
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
        if self.bar is not None:
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
        settings = ("sizes", "hidden", *NETWORK_OPTIONS)
        given = ["--" + key.replace("_", "-") for key in settings if getattr(args, key) is not None]
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


def _train_network(args: argparse.Namespace, ds: gdata.Dataset) -> Network:
    """The network to train: the --resume model, or a new one of --sizes or --hidden."""
    if args.resume:
        net = _load_model(args.resume, args.device, args.seed)
        _check_fits(net.config.sizes, ds, f"model {args.resume}")
        return net
    if args.sizes is not None:
        if len(args.sizes) < 2:
            raise UsageError("--sizes needs at least two layers, e.g. 784,30,10")
        _check_fits(args.sizes, ds, f"--sizes {','.join(map(str, args.sizes))}")
    sizes = args.sizes or [ds.n_features, *(args.hidden or TEXTBOOK_HIDDEN), ds.n_classes]
    given = {key: getattr(args, key) for key in NETWORK_OPTIONS if getattr(args, key) is not None}
    return Network(sizes, device=args.device, seed=args.seed, **given)  # the others: Network's defaults


class _Training:
    """One ``gpubp train``: the data, the network, the --save file, and what fit has reported."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: TextIO = sys.stderr if args.json else sys.stdout
        self.started = time.perf_counter()
        self.ds = _load_data(args)
        self.has_val = len(self.ds.y_val) > 0
        if args.early_stopping and not self.has_val:
            raise UsageError(
                "--early-stopping watches the validation accuracy, and this data set has no validation set"
            )
        self.net = _train_network(args, self.ds)
        # A resumed model goes on with the lr schedule where its saved epoch left it.
        self.epochs_before = self.net.epochs_trained
        self.lr = decayed_lr(args.lr, args.lr_decay, self.epochs_before)
        self.in_place = bool(args.resume and args.save and Path(args.save).resolve() == Path(args.resume).resolve())
        # fit keeps the best model in --save (gpubp.training); this says which epoch the file
        # really holds (0: the resumed model), whatever interrupts a save.
        self.saved = SavedEpoch(args.save, initial=0 if self.in_place else None) if args.save else None
        self.comm = getattr(args, "comm", None)  # distributed: set by gpubp.distributed.run_command
        self.records: list[dict[str, Any]] = []  # fit's record of each epoch done
        self.best_epoch: int | None = None
        self.best_accuracy: float | None = None
        self.interrupted: int | None = None  # the exit status, after Ctrl-C or SIGTERM
        self.diverged: str | None = None
        self.progress = _Progress(False, 0, 0)  # no bar until fit opens one

    def say(self, line: str) -> None:
        self.out.write(line + "\n")  # one write: an interrupt never splits a line from its newline
        self.out.flush()

    def announce(self) -> None:
        """The data, the network and the SGD settings, a line each."""
        args, ds, net, c = self.args, self.ds, self.net, self.net.config
        self.say(
            f"data {ds.name}: {len(ds.y_train)} train / {len(ds.y_val)} validation / {len(ds.y_test)} test, "
            f"{ds.n_features} features, {ds.n_classes} classes"
        )
        self.say(
            f"network {','.join(map(str, c.sizes))}: {c.activation} hidden, {c.output_activation} output, "
            f"{c.loss} loss, {c.dtype} on {net.device}" + (f" (resumed from {args.resume})" if args.resume else "")
        )
        resumed = args.resume and args.lr_decay != 1
        self.say(
            f"SGD: {args.epochs} epoch{'s' if args.epochs != 1 else ''}, batch {args.batch_size}, lr {args.lr}"
            + _extras(args)
            + (f"; after {self.epochs_before} epochs, lr starts at {self.lr:.6g}" if resumed else "")
        )

    def fit(self) -> float:
        """Train; the seconds it took. Ctrl-C, SIGTERM or a divergence ends it cleanly."""
        args, ds, net = self.args, self.ds, self.net
        baseline = None
        if self.in_place and self.has_val:  # overwrite the resumed model only with a better one
            baseline = self.best_accuracy = net.evaluate(ds.X_val, ds.y_val)["accuracy"]
            self.best_epoch = 0
            self.say(f"resumed model: validation accuracy {baseline:.4f}")
        show_bar = args.progress if args.progress is not None else sys.stderr.isatty()
        self.progress = _Progress(show_bar, args.epochs, len(ds.y_train))
        if self.comm is not None:
            self.say(f"distributed: {self.comm.size} ranks; gradients summed by {self.comm.attach(net.device)}")
        started = time.perf_counter()
        self.progress.start()
        try:
            sgd = {name: getattr(args, name) for name in ("momentum", "weight_decay", "lr_decay")}
            net.fit(
                ds.X_train,
                ds.y_train,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=self.lr,
                validation=(ds.X_val, ds.y_val) if self.has_val else None,
                callback=self._epoch_done,
                **sgd,
                progress=self.progress,
                comm=self.comm,
                **self._tracking(baseline),
            )
        except KeyboardInterrupt as e:
            self.progress.close()
            self.interrupted = _interrupt_status(e)
            if self.saved is not None:
                self.saved.settle()
            if self.saved is not None and self.saved.unfinished is not None:
                self.say(f"interrupted while saving epoch {self.saved.unfinished}")
            else:
                self.say(f"interrupted during epoch {len(self.records) + 1}")
        except TrainingDiverged as e:
            self.progress.close()
            self.diverged = str(e)
            print(f"{PROG}: {e}", file=sys.stderr)
        return time.perf_counter() - started

    def _tracking(self, baseline: float | None) -> dict[str, Any]:
        """fit's best-epoch arguments: validation accuracy (else the latest epoch) into --save."""
        return {
            "monitor": "val_accuracy" if self.has_val else "epoch",
            "early_stopping": self.args.early_stopping,
            "checkpoint": self.saved,
            "restore_best": False,  # the test set scores the last epoch's model
            "baseline": baseline,
        }

    def _epoch_done(self, epoch: int, record: dict[str, Any]) -> None:
        """fit's callback: a line per epoch."""
        self.progress.close()
        self.records.append(record)
        epochs = self.args.epochs
        line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {record['loss']:.4f}"
        if record["val_accuracy"] is not None:
            line += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
        line += f"  {record['seconds']:.2f} s"
        if record["improved"]:  # judged by fit's tracker, which has saved it to --save
            self.best_epoch, self.best_accuracy = epoch, record["val_accuracy"]
            line += "  saved" if self.has_val and self.saved is not None and self.saved.epoch == epoch else ""
        self.say(line)
        self.progress.start()

    def test(self) -> dict[str, float]:
        """The test set's loss and accuracy (none after an interrupt or a divergence)."""
        ds = self.ds
        if self.interrupted or self.diverged or not len(ds.y_test):
            return {}
        try:
            test = self.net.evaluate(ds.X_test, ds.y_test, comm=self.comm)
            self.say(f"test: loss {test['loss']:.4f}  accuracy {test['accuracy']:.4f} ({len(ds.y_test)} samples)")
            return test
        except KeyboardInterrupt as e:
            self.interrupted = _interrupt_status(e)
            self.say("interrupted while evaluating the test set")
            return {}

    def report(self, test: dict[str, float], fit_seconds: float) -> None:
        """The last lines: the best epoch, what --save holds, the times; the plot and the JSON summary."""
        args, net = self.args, self.net
        if self.has_val and self.best_epoch is not None:
            self.say(f"best epoch {self.best_epoch}: validation accuracy {self.best_accuracy:.4f}")
        if self.saved is not None:
            self.saved.settle()
            self.say(_saved_line(self.saved, self.epochs_before))
        seconds = time.perf_counter() - self.started
        self.say(f"time {_fmt_seconds(fit_seconds)} training, {_fmt_seconds(seconds)} in all; device {net.device}")
        history = {key: [r[key] for r in self.records] for key in HISTORY}
        if args.plot and self.records:
            c = net.config
            _plot(history, args.plot, title=f"{self.ds.name}: {','.join(map(str, c.sizes))}, {c.activation}/{c.loss}")
            self.say(f"plot written to {args.plot}")
        if args.json:
            times = {"seconds": seconds, "training_seconds": fit_seconds}
            print(json.dumps(_jsonable(self.summary(history, test) | times)), flush=True)

    def summary(self, history: dict[str, list], test: dict[str, float]) -> dict[str, Any]:
        """What --json prints: the network's config, the options, the history and the outcome."""
        args, saved = self.args, self.saved
        config = self.net.config.to_dict()
        config["loss_function"] = config.pop("loss")  # "loss" is the cost of each epoch, in the history
        options = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_decay", "seed")
        summary = {"dataset": self.ds.name, "device": self.net.device, **config}
        summary |= {key: getattr(args, key) for key in options}
        summary |= {
            "resumed_from": args.resume,
            "epochs_before": self.epochs_before,
            "history": history,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_accuracy,
            "saved": saved.path if saved is not None and saved.epoch else None,
            "saved_epoch": saved.epoch if saved is not None else None,
            "test_loss": test.get("loss"),
            "test_accuracy": test.get("accuracy"),
            "interrupted": bool(self.interrupted),
            "diverged": self.diverged,
        }
        if self.comm is not None:  # distributed
            summary.update(ranks=self.comm.size, rows_per_rank=self.comm.rows_per_rank)
        return summary


def cmd_train(args: argparse.Namespace) -> int:
    """``gpubp train``: fit a network, one line per epoch, a summary at the end."""
    _check_train_options(args)
    run = _Training(args)
    run.announce()
    fit_seconds = run.fit()
    run.report(run.test(), fit_seconds)
    return run.interrupted or (1 if run.diverged else 0)


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
    """ ", momentum 0.9, weight decay 0.0001, lr decay 0.95": the SGD settings that are not their defaults."""
    settings = (("momentum", args.momentum, 0), ("weight decay", args.weight_decay, 0), ("lr decay", args.lr_decay, 1))
    return "".join(f", {name} {value:g}" for name, value, default in settings if value != default)


def _plot(history: dict[str, list], path: str, title: str) -> None:
    import matplotlib  # optional (gpubp[plot]), and slow to import

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
# evaluate, predict, export, info
# ----------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``gpubp evaluate``: loss and accuracy of a saved model on a split of a data set."""
    ds = _load_data(args)
    net = _load_model(args.model, args.device)
    _check_fits(net.config.sizes, ds, f"model {args.model}")
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
    inputs = net.config.sizes[0]
    if X.shape[1] != inputs:
        raise ModelMismatch(f"model {args.model} has {inputs} inputs but {args.data} has {X.shape[1]} values per row")
    labels = _labels(np.asarray(net.predict(X)))
    if args.out and args.out.endswith(".npy"):
        np.save(args.out, labels)
    elif args.out:
        Path(args.out).write_text("".join(f"{v}\n" for v in labels.tolist()))
    else:
        sys.stdout.write("".join(f"{v}\n" for v in labels.tolist()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``gpubp export``: a saved model as an ONNX file (written atomically)."""
    try:
        import onnx  # noqa: F401  (optional: gpubp[onnx])
    except ImportError:
        raise UsageError('export needs the onnx package, which is not installed: pip install "gpubp[onnx]"') from None
    out = Path(args.out)
    if not out.resolve().parent.is_dir():
        raise UsageError(f"OUT {args.out}: folder {out.resolve().parent} does not exist")
    if out.exists() and Path(args.model).exists() and out.resolve() == Path(args.model).resolve():
        raise UsageError(f"OUT {args.out} is the model itself; give another name, e.g. model.onnx")
    net = _load_model(args.model, "cpu")
    net.to_onnx(out, dtype=args.dtype)
    c = net.config
    print(
        f"wrote {args.out}: {','.join(map(str, c.sizes))} {c.activation}/{c.output_activation}, {args.dtype or c.dtype}"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``gpubp info``: versions, the GPU seen or why none, and the path device='auto' takes."""
    r = device_report()
    r["gpubp"] = __version__  # the package running (the installed metadata may be another copy's)
    if args.json:
        print(json.dumps(_jsonable(r), indent=2))
        return 0
    cupy = next((r[k] for k in ("cupy", "cupy-cuda12x", "cupy-cuda13x") if r[k] != "not installed"), "not installed")
    if "gpu_name" in r:
        gpu = f"{r['gpu_name']}, compute capability {r['gpu_compute_capability']}, {r['gpu_memory_gib']} GiB"
    else:
        gpu = r["cuda"] if r["cuda_usable"] else f"none: {r['cuda']}"
    rows = {
        **{name: r[name] for name in ("gpubp", "numba", "numba-cuda", "numpy")},
        "cupy": cupy,
        "python": sys.version.split()[0],
        "GPU": gpu,
        "auto": f"device='auto' runs on {r['auto_device']}: {r['auto_reason']}",
    }
    for name, value in rows.items():
        print(f"{name:<12}{value}")
    return 0


# ----------------------------------------------------------------------------------------------
# The parser, and main
# ----------------------------------------------------------------------------------------------

# name: (what runs it, its options, its help line, its description)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[Any], None], str, str | None]] = {
    "train": (
        cmd_train,
        _train_options,
        "train a network (defaults: the textbook Fashion-MNIST run)",
        "Train a network by mini-batch SGD. The defaults reproduce the textbook run: Fashion-MNIST "
        "(50,000 / 10,000 / 10,000), 784,30,10, sigmoid, quadratic cost, batch 10, lr 3.0, 30 epochs.",
    ),
    "evaluate": (cmd_evaluate, _evaluate_options, "loss and accuracy of a saved model on a test set", None),
    "predict": (cmd_predict, _predict_options, "predicted labels of a saved model, one per line", None),
    "trace": (
        cmd_trace,
        _trace_options,
        "one forward and one backward pass on one sample, every quantity printed",
        "Print every quantity of one forward and one backward pass, layer by layer, like a textbook "
        "worked example. With neither --weights nor --seed, the 2,2,2 network is Matt Mazur's worked "
        "example (w = .15 .20 .25 .30 / .40 .45 .50 .55, b = .35 / .60).",
    ),
    "export": (
        cmd_export,
        _export_options,
        "write a saved model as ONNX (one Gemm and its activation per layer)",
        "Write a model saved by gpubp as an ONNX model for onnxruntime and other runtimes: input X "
        "(N, inputs), output Y (N, outputs), the output activations. Needs the onnx extra.",
    ),
    "info": (cmd_info, lambda p: _add(p, "--json"), "versions, the GPU seen, and the path device='auto' takes", None),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The argparse parser of the ``gpubp`` command, and each subcommand's parser by name."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train multilayer perceptrons by backpropagation with Numba kernels (CUDA or CPU)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {}
    for name, (func, add_options, help_line, description) in COMMANDS.items():
        commands[name] = p = sub.add_parser(name, help=help_line, description=description)
        add_options(p)
        p.set_defaults(func=func)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Run the ``gpubp`` command with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser, commands = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help or --version (0), or a usage error (2)
        return int(e.code or 0)
    subparser = commands[args.command]
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        if getattr(args, "distributed", False):  # every rank runs the command
            return run_command(args, lambda: _run(args, subparser))
        return _run(args, subparser)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _error(e: BaseException, status: int) -> int:
    """Say why on one line of stderr; return the exit status."""
    print(f"{PROG}: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
    return status


def _run(args: argparse.Namespace, subparser: argparse.ArgumentParser) -> int:
    """The subcommand, every refusal turned into one line on stderr and an exit status."""
    try:
        return args.func(args)
    except argparse.ArgumentError as e:  # UsageError or gpubp.trace's: shown as argparse shows its own
        subparser.print_usage(sys.stderr)
        print(f"{subparser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:  # DataError is a ValueError
        return _error(e, 2)
    except RuntimeError as e:  # e.g. device='cuda' without a usable GPU
        return _error(e, 1)
    except KeyboardInterrupt as e:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return _interrupt_status(e)
    except BrokenPipeError:  # `gpubp predict ... | head`
        return 0
    except OSError as e:  # e.g. --out or --save in a folder we may not write to
        return _error(e, 1)
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
