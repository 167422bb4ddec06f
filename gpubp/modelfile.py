"""The model file: the one place gpubp reads and writes saved networks (format "gpubp-model-1").

A model file is an .npz archive (a zip of .npy arrays, as ``np.savez`` writes; nothing pickled):

- ``format``: the text ``"gpubp-model-1"``;
- ``config``: JSON text of an object with ``sizes`` (layer widths, inputs first), ``activation``,
  ``output_activation``, ``loss``, ``dtype`` and ``epochs_trained`` (absent from gpubp 0.1 files);
- ``w{l}``, ``b{l}`` for l = 0 .. L-1: W^(l+1) of shape (sizes[l+1], sizes[l]) and b^(l+1);
- ``vw{l}``, ``vb{l}`` (all or none): the SGD velocity (momentum state), shaped like w{l}, b{l}.

:func:`write` replaces a file atomically. :func:`read` checks a file from its headers before it
reads any array: a regular file (``gpubp.untrusted``), exactly the members above, a config that is
a small JSON object with those keys and types, and every array's shape and dtype against the
config and the zip's sizes; only then are the arrays read, each stopped at its declared size.
Refusals are :class:`gpubp.BadFile` (a ``ValueError``) naming the file and the problem.

:class:`SavedEpoch` records which epoch a model file really holds while training saves into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .config import PARAMETERS, Config
from .losses import resolve
from .state import State
from .untrusted import BadFile, NpyHeader, Npz, open_regular

__all__ = ["FORMAT", "BadFile", "Model", "write", "atomic_write", "read", "SavedEpoch", "interrupts_deferred"]

FORMAT = "gpubp-model-1"

MAX_CONFIG_CHARS = 65536
"""Longest config text accepted (a saved config is ~150 characters)."""

MAX_LAYERS = 1000
"""Most weight layers a model file may declare."""

MAX_NAME_CHARS = 100
"""Longest activation, loss or dtype name accepted."""

MAX_EPOCHS = 10**9
"""Largest ``epochs_trained`` accepted (the learning-rate schedule raises a decay to this power)."""

FLOAT_DTYPES = ("float32", "float64")

CONFIG_TYPES = {"sizes": list, "activation": str, "output_activation": (str, type(None)), "loss": str, "dtype": str}
"""The keys a config must have, and the JSON types of their values."""


class Model(NamedTuple):
    """What :func:`read` returns; ``velocity`` is vw0 .. vw(L-1) then vb0 .. vb(L-1), or None."""

    config: dict[str, Any]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    velocity: list[np.ndarray] | None

    def settings(self) -> Config:
        """The saved network's ``Config`` (files from before ``init`` was saved: "scaled")."""
        c = self.config
        return Config.make(
            c["sizes"], c["activation"], c["output_activation"], c["loss"], c["dtype"], c.get("init", "scaled")
        )

    def state(self) -> State:
        """The saved parameters, momentum state and ``epochs_trained`` (no generator state)."""
        L = len(self.weights)
        velocity = None if self.velocity is None else (self.velocity[:L], self.velocity[L:])
        return State(self.weights, self.biases, velocity, self.config.get("epochs_trained", 0))


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


class _Held:
    """SIGINT and SIGTERM held (recorded, not acted on) until :meth:`deliver`; see :func:`interrupts_deferred`."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.held: list[int] = []
        if threading.current_thread() is threading.main_thread():  # signals reach Python only there
            handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
            # None: a handler installed outside Python, which we could not restore
            self.previous = {signum: h for signum, h in handlers.items() if h is not None}
            self._hold()

    def _record(self, signum: int, frame: Any) -> None:
        self.held.append(signum)

    def _hold(self) -> None:
        for signum in self.previous:
            signal.signal(signum, self._record)

    def deliver(self) -> None:
        """Put the handlers back and act on the first signal held, as it would have been."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.held:
            signum = self.held[0]
            self.held.clear()
            handler = self.previous[signum]
            if callable(handler):
                handler(signum, None)  # e.g. raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # e.g. terminate, now that nothing is half-done

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let signals whose handler raises (Ctrl-C's KeyboardInterrupt) through for a stretch of
        long work; a signal whose default action kills the process stays held."""
        let_through = {s: h for s, h in self.previous.items() if callable(h)}
        for signum, handler in let_through.items():
            signal.signal(signum, handler)
        try:
            if self.held and self.held[0] in let_through:  # one came before: act on it now
                signum = self.held[0]
                self.held.clear()
                let_through[signum](signum, None)
            yield
        finally:
            self._hold()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[_Held]:
    """Hold SIGINT and SIGTERM during the block and act on the first that came at its end.

    For the statements between making a file and recording it, where an interrupt would leave a
    temporary file behind. ``with held.released():`` inside lets Ctrl-C (a handler that raises)
    interrupt a long stretch of work; the block's cleanup then runs with signals held again.
    """
    held = _Held()
    try:
        yield held
    finally:
        held.deliver()


def write(path: str | os.PathLike[str], config: Config, state: State) -> None:
    """Write a model file: ``format``, ``config`` (the settings and ``epochs_trained``, as JSON) and
    the state's arrays (w0, b0, ..., and the momentum state once it is not zero), by
    :func:`atomic_write`."""
    settings = dict(config.to_dict(), epochs_trained=int(state.epochs_trained))
    members = {"format": np.array(FORMAT), "config": np.array(json.dumps(settings, allow_nan=False))}
    for name, array in state.arrays().items():
        members[name] = np.asarray(array)
        if members[name].dtype.kind not in "biuf":  # nothing np.savez would pickle
            raise TypeError(f"{name}: a model file holds arrays of numbers, got {members[name].dtype}")
    atomic_write(path, lambda fh: np.savez(fh, **members))


def atomic_write(path: str | os.PathLike[str], fill: Callable[[Any], None]) -> None:
    """Write a file by ``fill(binary file)``, atomically: the one writer of gpubp's files.

    The data goes to a temporary file in the same folder, flushed to disk, then renamed over
    ``path``, so ``path`` holds the old file or the new one, never a part; two processes saving to
    the same path leave one of their files whole. The temporary file is removed whatever
    interrupts the write: an exception, or Ctrl-C (which may stop a long write); SIGTERM with its
    default action waits for the file to be whole, or removed, then terminates. The file gets the
    permissions of an ordinary new file (0666 less the umask, read without changing it).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give a file name")
    umask = _umask()
    with interrupts_deferred() as held:
        fd, tmp = tempfile.mkstemp(prefix=".gpubp-", suffix=".tmp", dir=folder)
        fh = os.fdopen(fd, "wb")
        try:
            with held.released():
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fh.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    _sync_folder(folder)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask sets it to
    read it, and for that moment files other threads create would get the wrong permissions)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _sync_folder(folder: str) -> None:
    """Flush the rename to disk too (POSIX; best effort where a folder cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def read(path: str | os.PathLike[str], plain: bool = False) -> Model:
    """Read and check a model file written by :func:`write` (``Network.save``).

    With ``plain=True``, an .npz with no ``format`` member is read as bare parameters: arrays
    w0, b0, w1, b1, ... that chain (other members ignored, config ``{}``), as ``gpubp trace
    --weights`` takes them.

    Raises ``FileNotFoundError`` if there is no such file, :class:`BadFile` for anything else
    wrong, before any array is read when its headers show it.
    """
    where = f"{os.fspath(path)}: not a gpubp model, or truncated or corrupt"
    with open_regular(path, BadFile, FileNotFoundError, "model file") as f:
        npz = Npz(f, where, BadFile, kinds="biufU")
        if plain and "format" not in npz.names:
            return _read_plain(npz, where)
        arrays = _check_members(npz, where)
        config = _read_config(npz, where)
        L = len(config["sizes"]) - 1
        _check_shapes(npz, where, config["sizes"], arrays)
        weights = [_numbers(npz, f"w{l}", where) for l in range(L)]
        biases = [_numbers(npz, f"b{l}", where) for l in range(L)]
        velocity = [_numbers(npz, f"v{p}{l}", where) for p in "wb" for l in range(L)] if "vw0" in arrays else None
    for name, a in zip([f"w{l}" for l in range(L)] + [f"b{l}" for l in range(L)], weights + biases):
        if not np.isfinite(a).all():
            raise BadFile(f"{where}: {name} holds NaN or inf")
    if velocity is not None and not all(np.isfinite(v).all() for v in velocity):
        raise BadFile(f"{where}: the momentum state holds NaN or inf")
    return Model(config, weights, biases, velocity)


def _check_members(npz: Npz, where: str) -> set[str]:
    """The member list: format, config, w/b for each layer, and vw/vb for all layers or none."""
    if npz.others:
        raise BadFile(f"{where}: members that are not arrays: {', '.join(sorted(npz.others)[:5])}")
    names = npz.names
    if "format" not in names:
        raise BadFile(f"{where}: no '{FORMAT}' marker (arrays: {_listing(names)})")
    if "config" not in names:
        raise BadFile(f"{where}: no config")
    layers = {int(m.group(2)) for m in map(re.compile(r"(v?[wb])(\d{1,9})").fullmatch, names) if m}
    L = max(layers, default=-1) + 1
    if L > MAX_LAYERS:
        raise BadFile(f"{where}: arrays of layer {L - 1}: more than {MAX_LAYERS} layers")
    expected = {"format", "config"} | {f"{p}{l}" for p in "wb" for l in range(L)}
    if "vw0" in names or "vb0" in names:
        expected |= {f"v{p}{l}" for p in "wb" for l in range(L)}
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        problem = "; ".join(text for text in (_listing(missing, "missing "), _listing(extra, "unexpected ")) if text)
        raise BadFile(f"{where}: {problem}")
    return names


def _listing(names: Any, lead: str = "") -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > 8 else ""
    return lead + ", ".join(names[:8]) + more if names else ""


def _header(npz: Npz, name: str, where: str) -> NpyHeader:
    """The header of array ``name``; refused if its dtype is not one an array may have."""
    if name in npz.refused:
        raise BadFile(f"{where}: {name}: {npz.refused[name]}")
    return npz.headers[name]


def _text(npz: Npz, name: str, where: str, limit: int) -> str:
    header = _header(npz, name, where)
    if header.dtype.kind != "U" or header.shape != () or header.dtype.itemsize > 4 * limit:
        raise BadFile(f"{where}: {name} is {header.describe()}, expected text of at most {limit} characters")
    return str(npz.read(name)[()])


def _read_config(npz: Npz, where: str) -> dict[str, Any]:
    """The config: a JSON object of the expected keys and types, nothing nested deeper than a list."""
    marker = _text(npz, "format", where, 64)
    if marker != FORMAT:
        raise BadFile(f"{where}: format {marker[:64]!r}, expected '{FORMAT}'")
    text = _text(npz, "config", where, MAX_CONFIG_CHARS)
    try:
        config = json.loads(text)
    except RecursionError:
        raise BadFile(f"{where}: config is JSON nested too deep") from None
    except ValueError as e:
        raise BadFile(f"{where}: config is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise BadFile(f"{where}: config is a JSON {type(config).__name__}, expected an object")
    for key, kinds in CONFIG_TYPES.items():
        if key not in config:
            raise BadFile(f"{where}: config has no {key!r}")
        if not isinstance(config[key], kinds) or (isinstance(config[key], str) and len(config[key]) > MAX_NAME_CHARS):
            raise BadFile(f"{where}: config {key!r} is {_brief(config[key])}")
    sizes = config["sizes"]
    if not 2 <= len(sizes) <= MAX_LAYERS + 1 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise BadFile(f"{where}: config 'sizes' must be 2 to {MAX_LAYERS + 1} positive integers, got {_brief(sizes)}")
    if config["dtype"] not in FLOAT_DTYPES:
        raise BadFile(f"{where}: config 'dtype' is {_brief(config['dtype'])}, expected float32 or float64")
    epochs = config.setdefault("epochs_trained", 0)  # absent from files of gpubp 0.1
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= MAX_EPOCHS:
        raise BadFile(f"{where}: epochs_trained must be a count up to {MAX_EPOCHS}, got {_brief(epochs)}")
    if config.setdefault("init", "scaled") not in PARAMETERS["init"].choices:  # absent before gpubp 0.2
        raise BadFile(f"{where}: config 'init' is {_brief(config['init'])}, expected 'scaled' or 'standard'")
    try:
        resolve(config["activation"], config["output_activation"], config["loss"])
    except ValueError as e:
        raise BadFile(f"{where}: {e}") from None
    return config


def _brief(value: Any) -> str:
    """A config value as JSON, if short; else what it is."""
    try:
        text = json.dumps(value)
    except ValueError:  # an int beyond what JSON numbers print
        text = ""
    if 0 < len(text) <= 80:
        return text
    kind = {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)
    return f"a JSON {kind} of {len(value)} items" if isinstance(value, (dict, list)) else f"a long JSON {kind}"


def _check_shapes(npz: Npz, where: str, sizes: list[int], names: set[str]) -> None:
    """Every array's declared shape and dtype is what the config implies."""
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for prefix in ("", "v") if f"vw{l}" in names else ("",):
            for name, shape in ((f"{prefix}w{l}", (n_out, n_in)), (f"{prefix}b{l}", (n_out,))):
                header = _header(npz, name, where)
                if header.shape != shape:
                    what = "the momentum state" if prefix else "the weights"
                    raise BadFile(
                        f"{where}: {name} is {header.describe()}: {what} do not match sizes {sizes}, "
                        f"which need {'x'.join(map(str, shape))}"
                    )
                if header.dtype.kind not in "iuf":
                    raise BadFile(f"{where}: {name} holds {header.dtype}, expected numbers")


def _numbers(npz: Npz, name: str, where: str) -> np.ndarray:
    dtype = _header(npz, name, where).dtype
    if dtype.kind not in "iuf":
        raise BadFile(f"{where}: {name} holds {dtype}, expected numbers")
    return npz.read(name)


def _read_plain(npz: Npz, where: str) -> Model:
    """Bare parameters w0, b0, w1, b1, ... that chain: 2-D w{l}, 1-D b{l} of w{l}'s rows."""
    L = 0
    while f"w{L}" in npz.names and f"b{L}" in npz.names and L < MAX_LAYERS:
        L += 1
    if L == 0:
        raise BadFile(f"{where}: expected arrays w0, b0, w1, b1, ... (has: {_listing(npz.names) or 'nothing'})")
    n_in = None
    for l in range(L):
        w, b = _header(npz, f"w{l}", where).shape, _header(npz, f"b{l}", where).shape
        if len(w) != 2 or b != (w[0],) or (n_in is not None and w[1] != n_in):
            raise BadFile(f"{where}: w{l} {w} and b{l} {b} do not chain onto the layer before")
        n_in = w[0]
    weights = [_numbers(npz, f"w{l}", where) for l in range(L)]
    biases = [_numbers(npz, f"b{l}", where) for l in range(L)]
    return Model({}, weights, biases, None)


# ----------------------------------------------------------------------------------------------
# Which epoch is on disk
# ----------------------------------------------------------------------------------------------


class SavedEpoch:
    """A model file being saved into during training, and the epoch it really holds.

    ``epoch`` changes only once a save has replaced the file: if a save is interrupted (Ctrl-C,
    SIGTERM, a full disk), :meth:`settle` asks the file system whether the rename happened (the
    new file is a new inode), so ``epoch`` is the truth either way. ``epoch`` is None while the
    file holds nothing of this run; ``initial`` (e.g. 0 for a resumed model saved in place) is
    what it holds before the first save.
    """

    def __init__(self, path: str | os.PathLike[str], initial: int | None = None) -> None:
        self.path = os.fspath(path)
        self.epoch = initial
        self.pending: int | None = None  # the epoch of a save that began and did not return
        self.unfinished: int | None = None  # the epoch of the last save that did not replace the file
        self._identity = self._stat()

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def save(self, config: Config, state: State, epoch: int) -> None:
        """``write`` the model of ``epoch`` (what ``Network.save`` writes) to this path."""
        self.pending = epoch
        try:
            write(self.path, config, state)
        finally:
            self.settle()

    def settle(self) -> None:
        """Resolve an unfinished save: did its file replace the old one?"""
        if self.pending is None:
            return
        identity = self._stat()
        if identity is not None and identity != self._identity:
            self.epoch, self._identity, self.unfinished = self.pending, identity, None
        else:
            self.unfinished = self.pending
        self.pending = None
