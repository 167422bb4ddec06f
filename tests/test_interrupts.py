"""Interrupted and concurrent saves: the last complete model survives, no temporary file stays,
and `gpubp train --save` says which epoch the file really holds.

The end-to-end tests run `gpubp train` in a subprocess whose second save is made slow (np.savez
writes the temporary file, then sleeps before the rename), and deliver SIGINT or SIGTERM while
that temporary file is on disk.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gpubp
from gpubp import data, modelfile
from gpubp.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CPU = ["--device", "cpu"]


def tiny_idx_folder(folder):
    """5 training images (a validation split of 5 // 6 = 0: every epoch is saved), 6 test images."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 6)):
        labels = (np.arange(n) % 3).astype(np.uint8)
        data.write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 2, 2), dtype=np.uint8))
        data.write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".gpubp-"))


# -- in-process: the write and the record ---------------------------------------------------------


def test_ctrl_c_inside_the_write_removes_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    gpubp.Network([2, 3, 1], device="cpu", seed=1).save(path)
    before = path.read_bytes()
    real = np.savez

    def interrupted(file, *args, **kwargs):
        real(file, *args, **kwargs)  # the temporary file is written ...
        assert leftovers(tmp_path)
        raise KeyboardInterrupt  # ... and Ctrl-C comes before the rename

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gpubp.Network([2, 3, 1], device="cpu", seed=2).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.npz"]


def test_signals_are_held_where_a_file_is_being_recorded():
    with pytest.raises(KeyboardInterrupt):
        with modelfile.interrupts_deferred() as held:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # held: the block goes on
            reached = True
    assert reached
    with pytest.raises(KeyboardInterrupt):
        with modelfile.interrupts_deferred() as held:
            with held.released():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
                pytest.fail("Ctrl-C should interrupt a released stretch")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("after_rename", [False, True])
def test_saved_epoch_is_what_the_file_holds(tmp_path, monkeypatch, after_rename):
    path = tmp_path / "m.npz"
    saved = modelfile.SavedEpoch(path)
    gpubp.Network([2, 2], device="cpu").save(path)  # as a save of epoch 1 would
    saved.pending = 1
    saved.settle()
    assert (saved.epoch, saved.unfinished) == (1, None)
    real_write = modelfile.write

    def interrupted_write(where, config, arrays):  # writes a real model, or not, then Ctrl-C
        if after_rename:
            real_write(where, config, arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        net = gpubp.Network([2, 2], device="cpu")
        saved.save(net.config, net.state_dict(), 2)
    assert saved.epoch == (2 if after_rename else 1)
    assert saved.unfinished == (None if after_rename else 2)


# -- gpubp train in a subprocess, interrupted mid-write ------------------------------------------

SLOW_SECOND_SAVE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    real, calls = np.savez, []

    def savez(file, *args, **kwargs):
        calls.append(1)
        real(file, *args, **kwargs)
        if len(calls) == 2:  # the temporary file of the second save is on disk, not yet renamed
            print("SAVING", file=sys.stderr, flush=True)
            time.sleep(60)

    np.savez = savez
    from gpubp.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _start(code, *args):
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc, marker, timeout=120):
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == marker:
            return
    proc.kill()
    pytest.fail(f"never saw {marker!r}: {''.join(seen)}")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_interrupted_while_saving(tmp_path, signum, status):
    folder = tiny_idx_folder(tmp_path / "idx")
    model = tmp_path / "m.npz"
    args = ["train", "--data", folder, "--hidden", "4", "--epochs", "50", "--save", model, "--json", *CPU]
    proc = _start(SLOW_SECOND_SAVE, *args)
    _wait_for(proc, "SAVING")
    assert leftovers(tmp_path), "the second save should be mid-write"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err

    # The last complete model: epoch 1's, loadable; the half-written one is gone.
    assert leftovers(tmp_path) == []
    assert gpubp.Network.load(model, device="cpu").epochs_trained == 1
    # The final lines say so.
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["saved_epoch"] == 1 and summary["saved"] == str(model)
    assert "interrupted while saving epoch 2" in err
    assert f"the save of epoch 2 did not finish; model of epoch 1 saved to {model}" in err

    # --resume from it goes on from epoch 1.
    resumed = tmp_path / "resumed.npz"
    assert (
        main([str(a) for a in ["train", "--data", folder, "--resume", model, "--epochs", "1", "--save", resumed, *CPU]])
        == 0
    )
    assert gpubp.Network.load(resumed, device="cpu").epochs_trained == 2


def test_sigterm_with_its_default_action_lets_the_write_finish(tmp_path):
    """Outside the CLI, SIGTERM terminates: after the file is whole, never between."""
    path = tmp_path / "m.npz"
    code = textwrap.dedent(
        """
        import sys, time
        import numpy as np
        import gpubp
        net = gpubp.Network([3, 4, 2], device="cpu")
        net.save(sys.argv[1])
        real = np.savez

        def savez(file, *args, **kwargs):
            real(file, *args, **kwargs)
            print("SAVING", file=sys.stderr, flush=True)
            time.sleep(1)

        np.savez = savez
        net.epochs_trained = 7
        net.save(sys.argv[1])
        print("NOT REACHED", file=sys.stderr, flush=True)
        """
    )
    proc = _start(code, path)
    _wait_for(proc, "SAVING")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM and "NOT REACHED" not in err, err
    assert gpubp.Network.load(path, device="cpu").epochs_trained == 7
    assert leftovers(tmp_path) == []


# -- two processes saving to one path -----------------------------------------------------------

SAVE_LOOP = textwrap.dedent(
    """
    import sys
    import gpubp
    path, sizes, seed, n = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
    net = gpubp.Network(sizes, device="cpu", seed=seed)
    for i in range(n):
        net.epochs_trained = i
        net.save(path)
    """
)


def test_two_processes_saving_to_one_path_leave_one_whole_model(tmp_path):
    path, n = tmp_path / "m.npz", 150
    writers = {"3,60,2": 1, "3,30,30,2": 2}
    expected = {
        sizes: gpubp.Network([int(s) for s in sizes.split(",")], device="cpu", seed=seed)
        for sizes, seed in writers.items()
    }
    procs = [_start(SAVE_LOOP, path, sizes, seed, n) for sizes, seed in writers.items()]
    reads = 0
    while any(p.poll() is None for p in procs):  # read while they write: always one whole model
        try:
            model = modelfile.read(path)
        except FileNotFoundError:
            continue
        reads += 1
        net = expected[",".join(map(str, model.config["sizes"]))]
        for a, b in zip(model.weights, net.weights):
            np.testing.assert_array_equal(a, b)
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    final = gpubp.Network.load(path, device="cpu")
    net = expected[",".join(map(str, final.sizes))]
    assert final.epochs_trained == n - 1
    for a, b in zip(final.weights + final.biases, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == ["m.npz"] and reads > 0
