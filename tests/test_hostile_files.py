"""Hostile model and data files: refused clearly, without ballooning, hanging or a traceback.

Every file here is built in a temporary folder: headers declaring enormous arrays, zip and gzip
bombs (~1 MB inflating to 1 GiB, built from one repeated deflate block, never written out
inflated), lying zip directories, malformed configs, absurd labels, a FIFO, a symbolic link to
/dev/zero, a folder. Each is then read through the API and the command line by
tests/hostile_runner.py in a subprocess: one forked child per case, its address space capped at
what it starts with plus LIMIT_MB and killed after TIMEOUT s. The tests check how each call ended
against what the file is: a ValueError naming the file and the problem (the API), one line on
stderr and exit status 2 (the CLI), and resident memory that grew by less than GREW_MB.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import gpubp
from gpubp import data

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/dev/zero"), reason="needs Linux (/proc, fork)"
)

LIMIT_MB = 300  # address space a case may add to what its process starts with
GREW_MB = 100  # resident memory a refusal may add (the legitimate content of these files is tiny)
TIMEOUT = 20
GiB = 1 << 30
RUNNER = Path(__file__).with_name("hostile_runner.py")

# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def npy(array=None, header=None, data_bytes=b""):
    """The bytes of a .npy file: of ``array``, or a 1.0 header dict ``header`` and raw data."""
    buf = io.BytesIO()
    if array is not None:
        np.lib.format.write_array(buf, np.asarray(array), allow_pickle=True)
        return buf.getvalue()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data_bytes


def huge_header(shape, descr="<f8"):
    return {"descr": descr, "fortran_order": False, "shape": tuple(shape)}


_ZEROS_BLOCK = None


def zeros_block():
    """Deflate data for 1 MiB of zeros, self-contained and byte-aligned: repeat it to make a bomb."""
    global _ZEROS_BLOCK
    if _ZEROS_BLOCK is None:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        _ZEROS_BLOCK = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return _ZEROS_BLOCK


def deflate(raw, zeros_mib=0):
    """Raw deflate of ``raw`` followed by ``zeros_mib`` MiB of zeros (about 1 KB of stream per MiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush(zlib.Z_FULL_FLUSH) + zeros_block() * zeros_mib + b"\x03\x00"


def stored(name, raw):
    return (name, raw, 0, zlib.crc32(raw), len(raw))


def deflated(name, raw, zeros_mib=0, claims=None):
    """A deflated member; the zip claims ``claims`` bytes (default: ``raw`` alone), CRC of ``raw``."""
    return (name, deflate(raw, zeros_mib), 8, zlib.crc32(raw), len(raw) if claims is None else claims)


def write_zip(path, members):
    """A zip archive written byte by byte, so that it can say what it likes about its members.

    ``members``: (name, bytes as stored, method 0 stored / 8 deflated, crc, claimed size).
    Claimed sizes of 4 GiB and more get a zip64 extra field.
    """
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, size in members:
        name_b = name.encode()
        big = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQ", 1, 8, size) if big else b""
        offset = len(out)
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0x21, crc, len(payload), min(size, 0xFFFFFFFF), len(name_b), 0
        )
        out += name_b + payload
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            45,
            45,
            0,
            method,
            0,
            0x21,
            crc,
            len(payload),
            0xFFFFFFFF if big else size,
            len(name_b),
            len(extra),
            0,
            0,
            0,
            0,
            offset,
        )
        central += name_b + extra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    Path(path).write_bytes(bytes(out + central + end))


CONFIG = {
    "sizes": [2, 2],
    "activation": "sigmoid",
    "output_activation": "sigmoid",
    "loss": "quadratic",
    "dtype": "float64",
    "epochs_trained": 0,
}


def model_members(sizes=(2, 2), config=None, **replace):
    """The members of a valid model file of ``sizes``, with some replaced: name -> member tuple."""
    config = config if config is not None else json.dumps({**CONFIG, "sizes": list(sizes)})
    members = {
        "format.npy": stored("format.npy", npy(np.array("gpubp-model-1"))),
        "config.npy": stored("config.npy", npy(np.array(config))),
    }
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for name, shape, value in ((f"w{l}", (n_out, n_in), 0.5), (f"b{l}", (n_out,), 0.0)):
            members[name + ".npy"] = (
                replace.pop(name) if name in replace else stored(name + ".npy", npy(np.full(shape, value)))
            )
    for name, member in replace.items():
        members[name + ".npy"] = member
    return list(members.values())


def idx_header(code, shape):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def gzip_stream(raw, zeros_mib=0):
    """A gzip file of ``raw`` then ``zeros_mib`` MiB of zeros (the trailer is right for ``raw`` alone)."""
    trailer = struct.pack("<2L", zlib.crc32(raw), len(raw))
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate(raw, zeros_mib) + trailer


def idx_folder(folder, train_images=None, train_labels=None, n=30):
    """An MNIST-layout folder of tiny legitimate files, some replaced by the callables given."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = (np.arange(n) % 3).astype(np.uint8)
        data.write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 2, 2), dtype=np.uint8))
        data.write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    for name, make in (("train-images-idx3-ubyte", train_images), ("train-labels-idx1-ubyte", train_labels)):
        if make is not None:
            (folder / name).unlink()
            make(folder / name)
    return folder


def fifo(path):
    os.mkfifo(path)


def dev_zero(path):
    os.symlink("/dev/zero", path)


# ----------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------

# id -> (how to build the file at a path, API call, CLI command (FILE is the file), expected)
# expected: ("refused", fragments of the message) or ("loads", what the call returns).
ROWS = "ROWS"  # a legitimate .npy of 3 rows of 2 features, for `gpubp predict`
MODEL = "MODEL"  # a legitimate 2,2 model


def _cases():
    predict_model = ["predict", "FILE", "--data", ROWS, "--device", "cpu"]
    train_data = ["train", "--data", "FILE", "--epochs", "1", "--device", "cpu"]
    predict_rows = ["predict", MODEL, "--data", "FILE", "--device", "cpu"]
    huge_w0 = npy(header=huge_header((100_000, 100_000)))
    small_w0 = npy(np.full((2, 2), 0.5))
    deep = "[" * 30_000 + "]" * 30_000
    return {
        # -- model files
        "model-declares-40-GB": (
            lambda p: write_zip(p, model_members((100_000, 100_000), **{"w0": stored("w0.npy", huge_w0)})),
            "load_model",
            predict_model,
            ("refused", ["w0.npy", "declares 100000x100000 float64", "holds 0 bytes"]),
        ),
        "model-zip-claims-80-GB": (
            lambda p: write_zip(
                p,
                model_members(
                    (100_000, 100_000), **{"w0": deflated("w0.npy", huge_w0, claims=len(huge_w0) + 8 * 10**10)}
                ),
            ),
            "load_model",
            predict_model,
            ("refused", ["w0.npy", "more than deflate can produce"]),
        ),
        "model-zip-bomb-declared": (
            lambda p: write_zip(
                p, model_members(**{"w0": deflated("w0.npy", small_w0, 1024, claims=len(small_w0) + GiB)})
            ),
            "load_model",
            predict_model,
            ("refused", ["w0.npy", "declares 2x2 float64 (32 bytes)", "holds 1073741856"]),
        ),
        "model-zip-bomb-undeclared": (  # inflates to 1 GiB past what the zip and the header say: read no further
            lambda p: write_zip(p, model_members(**{"w0": deflated("w0.npy", small_w0, 1024)})),
            "load_model",
            None,
            ("loads", {"sizes": [2, 2], "epochs_trained": 0}),
        ),
        "model-huge-npy-header": (
            lambda p: write_zip(
                p, model_members(**{"w0": stored("w0.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 4_000_000_000))})
            ),
            "load_model",
            predict_model,
            ("refused", ["w0.npy", ".npy header of 4000000000 bytes"]),
        ),
        "model-pickled-array": (
            lambda p: write_zip(
                p, model_members(**{"w0": stored("w0.npy", npy(np.array([[{}, {}], [{}, {}]], dtype=object)))})
            ),
            "load_model",
            predict_model,
            ("refused", ["w0", "arrays of object are not accepted"]),
        ),
        "model-config-list": (
            lambda p: write_zip(p, model_members(config="[1, 2]")),
            "load_model",
            predict_model,
            ("refused", ["config is a JSON list, expected an object"]),
        ),
        "model-config-deep": (
            lambda p: write_zip(p, model_members(config=deep)),
            "load_model",
            predict_model,
            ("refused", ["config is JSON nested too deep"]),
        ),
        "model-config-deep-value": (
            lambda p: write_zip(p, model_members(config='{"sizes": ' + deep + "}")),
            "load_model",
            predict_model,
            ("refused", ["config is JSON nested too deep"]),
        ),
        "model-config-wrong-types": (
            lambda p: write_zip(
                p,
                model_members(
                    config=json.dumps(
                        {
                            "sizes": [2, "2"],
                            "activation": "sigmoid",
                            "output_activation": None,
                            "loss": "quadratic",
                            "dtype": "float64",
                        }
                    )
                ),
            ),
            "load_model",
            predict_model,
            ("refused", ["'sizes' must be 2 to 1001 positive integers", '[2, "2"]']),
        ),
        "model-config-unknown-activation": (
            lambda p: write_zip(p, model_members(config=json.dumps({**CONFIG, "activation": "gelu"}))),
            "load_model",
            predict_model,
            ("refused", ["unknown activation 'gelu'"]),
        ),
        "model-config-epochs-1e30": (
            lambda p: write_zip(p, model_members(config=json.dumps({**CONFIG, "epochs_trained": 10**30}))),
            "load_model",
            predict_model,
            ("refused", ["epochs_trained must be a count up to 1000000000"]),
        ),
        "model-layer-999999999": (
            lambda p: write_zip(p, model_members(**{"w999999999": stored("w999999999.npy", npy(np.zeros(1)))})),
            "load_model",
            predict_model,
            ("refused", ["arrays of layer 999999999: more than 1000 layers"]),
        ),
        "model-config-4-MB": (
            lambda p: write_zip(p, model_members(config="x" * 1_000_000)),
            "load_model",
            predict_model,
            ("refused", ["config is scalar str", "at most 65536 characters"]),
        ),
        "model-fifo": (fifo, "load_model", predict_model, ("refused", ["is a FIFO (named pipe), not a regular file"])),
        "model-dev-zero": (
            dev_zero,
            "load_model",
            predict_model,
            ("refused", ["symbolic link to /dev/zero", "character device"]),
        ),
        "model-folder": (os.mkdir, "load_model", predict_model, ("refused", ["is a folder, not a file"])),
        # -- .npz data
        "npz-declares-8-TB": (
            lambda p: write_zip(
                p, [stored("X.npy", npy(header=huge_header((10**6, 10**6)))), stored("y.npy", npy(np.zeros(3, int)))]
            ),
            "load_data",
            train_data,
            ("refused", ["X.npy", "declares 1000000x1000000 float64", "holds 0 bytes"]),
        ),
        "npz-zip-claims-8-TB": (
            lambda p: write_zip(p, [deflated("X.npy", npy(header=huge_header((10**6, 10**6))), claims=8 * 10**12)]),
            "load_data",
            train_data,
            ("refused", ["X.npy", "more than deflate can produce"]),
        ),
        "npz-zip-bomb-declared": (
            lambda p: write_zip(p, [deflated("X.npy", npy(np.zeros((10, 2))), 1024, claims=GiB + 288)]),
            "load_data",
            train_data,
            ("refused", ["X.npy", "declares 10x2 float64 (160 bytes)"]),
        ),
        "npz-zip-bomb-undeclared": (
            lambda p: write_zip(
                p, [deflated("X.npy", npy(np.eye(20, 2)), 1024), stored("y.npy", npy(np.arange(20) % 2))]
            ),
            "load_data",
            None,
            ("loads", {"rows": [16, 2, 2], "n_classes": 2}),
        ),
        "npz-1-GiB-under-the-limit": (  # honest about its 1 GiB, more than the limit lets in
            lambda p: write_zip(
                p, [deflated("X.npy", npy(header=huge_header((2**26, 16), "|u1")), 1024, claims=GiB + 128)]
            ),
            "load_data",
            None,
            ("refused", ["X.npy", "not enough memory for its 1073741824 bytes"]),
        ),
        "npz-label-1e9": (
            lambda p: np.savez(p, X=np.zeros((20, 2)), y=np.r_[np.zeros(19, int), 10**9]),
            "load_data",
            train_data,
            ("refused", ["label 1000000000 is out of range", "at most 65536 classes"]),
        ),
        "npz-label-1e300": (
            lambda p: np.savez(p, X=np.zeros((20, 2)), y=np.r_[np.zeros(19), 1e300]),
            "load_data",
            train_data,
            ("refused", ["label 1e+300 is out of range"]),
        ),
        "npz-more-classes-than-rows": (
            lambda p: np.savez(p, X=np.zeros((20, 2)), y=np.r_[np.zeros(19, int), 60_000]),
            "load_data",
            train_data,
            ("refused", ["label 60000 implies 60001 classes, more than the 20 labelled rows"]),
        ),
        "npz-fifo": (fifo, "load_data", train_data, ("refused", ["is a FIFO (named pipe), not a regular file"])),
        "npz-dev-zero": (dev_zero, "load_data", train_data, ("refused", ["symbolic link to /dev/zero"])),
        # -- IDX folders (FILE is the folder; the hostile file is train-images or train-labels)
        "idx-declares-1-TB": (
            lambda p: idx_folder(p, train_images=lambda f: f.write_bytes(idx_header(8, (10**6, 10**3, 10**3)))),
            "load_data",
            train_data,
            ("refused", ["train-images-idx3-ubyte", "file is 16 bytes, expected 1000000000016"]),
        ),
        "idx-gzip-declares-47-MB": (
            lambda p: idx_folder(
                p, train_images=lambda f: f.write_bytes(gzip_stream(idx_header(8, (60000, 28, 28)) + bytes(100)))
            ),
            "load_data",
            train_data,
            ("refused", ["decompressed data is 116 bytes, expected 47040016", "truncated"]),
        ),
        "idx-gzip-bomb": (
            lambda p: idx_folder(p, train_images=lambda f: f.write_bytes(gzip_stream(idx_header(8, (30, 2, 2)), 1024))),
            "load_data",
            train_data,
            ("refused", ["decompressed data is more than 136 bytes, expected 136", "trailing data"]),
        ),
        "idx-label-1e9": (
            lambda p: idx_folder(
                p, train_labels=lambda f: data.write_idx(f, np.r_[np.zeros(29), 10**9].astype(np.int32))
            ),
            "load_data",
            train_data,
            ("refused", ["train-labels-idx1-ubyte", "label 1000000000 is out of range"]),
        ),
        "idx-fifo": (
            lambda p: idx_folder(p, train_images=fifo),
            "load_data",
            train_data,
            ("refused", ["train-images-idx3-ubyte: is a FIFO (named pipe)"]),
        ),
        "idx-dev-zero": (
            lambda p: idx_folder(p, train_images=dev_zero),
            "load_data",
            train_data,
            ("refused", ["train-images-idx3-ubyte: is a symbolic link to /dev/zero"]),
        ),
        # -- rows to predict on
        "npy-declares-8-TB": (
            lambda p: p.write_bytes(npy(header=huge_header((10**6, 10**6)))),
            "load_features",
            predict_rows,
            ("refused", ["declares 1000000x1000000 float64", "holds 0 bytes after its header"]),
        ),
        "npy-huge-header": (
            lambda p: p.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 4_000_000_000) + bytes(100)),
            "load_features",
            predict_rows,
            ("refused", [".npy header of 4000000000 bytes"]),
        ),
        "idx-255-dimensions": (
            lambda p: p.write_bytes(idx_header(8, (1,) * 255) + b"\x07"),
            "load_features",
            predict_rows,
            ("refused", ["IDX header says 255 dimensions (1 to 32)"]),
        ),
        "rows-fifo": (fifo, "load_features", predict_rows, ("refused", ["is a FIFO (named pipe)"])),
        "rows-dev-zero": (dev_zero, "load_features", predict_rows, ("refused", ["symbolic link to /dev/zero"])),
        "rows-folder": (os.mkdir, "load_features", predict_rows, ("refused", ["is a folder, not a file"])),
    }


CASES = _cases()
LEGIT = {  # the same calls on legitimate files load under the same limits
    "legit-model": ("load_model", {"sizes": [2, 2], "epochs_trained": 0}),
    "legit-npz": ("load_data", {"rows": [16, 2, 2], "n_classes": 2}),
    "legit-idx": ("load_data", {"rows": [25, 5, 30], "n_classes": 3}),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Build every file, run every case in tests/hostile_runner.py, return {case id: result}."""
    folder = tmp_path_factory.mktemp("hostile")
    rows = folder / "rows.npy"
    np.save(rows, np.full((3, 2), 0.5))
    model = folder / "model.npz"
    write_zip(model, model_members())
    np.savez(folder / "legit.npz", X=np.eye(20, 2), y=np.arange(20) % 2)
    idx_folder(folder / "legit-idx")
    legit = {"legit-model": model, "legit-npz": folder / "legit.npz", "legit-idx": folder / "legit-idx"}

    cases = []
    for case_id, (make, call, argv, _) in CASES.items():
        path = folder / (case_id + (".npz" if call in ("load_model", "load_data") and "idx" not in case_id else ""))
        make(path)
        cases.append({"id": case_id, "call": call, "args": [str(path)], "file": str(path)})
        if argv is not None:
            args = [{"FILE": str(path), ROWS: str(rows), MODEL: str(model)}.get(a, a) for a in argv]
            cases.append({"id": case_id + " (cli)", "call": "cli", "args": args, "file": str(path)})
    for case_id, (call, _) in LEGIT.items():
        cases.append({"id": case_id, "call": call, "args": [str(legit[case_id])], "file": str(legit[case_id])})
    spec = folder / "cases.json"
    spec.write_text(json.dumps({"cases": cases, "limit_mb": LIMIT_MB, "timeout": TIMEOUT}))
    out = folder / "results.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # the runner forks: no BLAS threads to lose
    subprocess.run([sys.executable, str(RUNNER), str(spec), str(out)], check=True, timeout=600, env=env)
    return json.loads(out.read_text())


def names_the_file(r, message):
    """The message names the file by its path; a data set's own checks (its classes) by its name."""
    return r["file"] in message or ("classes" in message and Path(r["file"]).name in message)


def _no_balloon(r):
    assert r["outcome"] != "killed", f"{r['id']}: {r['message']} (a hang, or the memory limit)"
    limit = LIMIT_MB if "under-the-limit" in r["id"] else GREW_MB
    assert r["grew_mb"] < limit, f"{r['id']}: resident memory grew {r['grew_mb']:.0f} MB"


@pytest.mark.parametrize("case_id", list(CASES))
def test_api(results, case_id):
    r = results[case_id]
    expected, what = CASES[case_id][3]
    _no_balloon(r)
    if expected == "loads":
        assert r["outcome"] == "returned", r
        assert r["value"] == what
        return
    assert r["outcome"] == "raised", r
    assert "ValueError" in r["mro"], r  # BadFile / DataError: ValueErrors, never MemoryError & co
    assert names_the_file(r, r["message"]), r["message"]
    for fragment in what:
        assert fragment in r["message"], r["message"]
    if "label" not in r["message"]:  # a refused file, not refused numbers
        assert "BadFile" in r["mro"], r


@pytest.mark.parametrize("case_id", [c for c, spec in CASES.items() if spec[2] is not None])
def test_cli(results, case_id):
    r = results[case_id + " (cli)"]
    expected, what = CASES[case_id][3]
    _no_balloon(r)
    assert r["outcome"] == "returned", r  # main() returned: nothing escaped it
    if expected == "loads":
        assert r["status"] == 0, r
        return
    lines = r["stderr"].strip().splitlines()
    assert r["status"] == 2 and len(lines) == 1, r["stderr"]
    assert lines[0].startswith("gpubp: error: ") and names_the_file(r, lines[0]), lines[0]
    for fragment in what:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case_id", list(LEGIT))
def test_legitimate_files_load_under_the_same_limits(results, case_id):
    r = results[case_id]
    _no_balloon(r)
    assert r["outcome"] == "returned" and r["value"] == LEGIT[case_id][1], r


def test_model_bomb_reads_the_declared_weights_only(tmp_path):
    """A deflate stream going on for 1 GiB past its member's declared end: the declared bytes are the weights."""
    path = tmp_path / "m.npz"
    write_zip(path, model_members(**{"w0": deflated("w0.npy", npy(np.array([[1.0, 2.0], [3.0, 4.0]])), 1024)}))
    net = gpubp.Network.load(path, device="cpu")
    np.testing.assert_array_equal(net.weights[0], [[1.0, 2.0], [3.0, 4.0]])


def test_command_line_in_its_own_process(tmp_path):
    """`python -m gpubp` itself: a FIFO as the model, under a memory limit: one line, exit 2."""
    import resource

    fifo(tmp_path / "model.npz")
    np.save(tmp_path / "rows.npy", np.zeros((1, 2)))

    def limit():  # generous enough for numba's start-up, far below a runaway read
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(
            resource.RLIMIT_AS, (4 * GiB if hard == resource.RLIM_INFINITY else min(4 * GiB, hard), hard)
        )

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpubp",
            "predict",
            tmp_path / "model.npz",
            "--data",
            tmp_path / "rows.npy",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"gpubp: error: {tmp_path / 'model.npz'}: is a FIFO (named pipe), not a regular file "
        "(gpubp reads only regular files)"
    ]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.array([[True, False], [False, True]]),
        np.zeros((0, 5)),
    ],
    ids=["float64", "fortran-order", "big-endian", "bool", "empty"],
)
@pytest.mark.parametrize("how", ["npy", "npz", "npz-compressed"])
def test_legitimate_arrays_read_as_numpy_reads_them(tmp_path, array, how):
    """The checked readers return what np.load returns, for every layout numpy writes."""
    from gpubp.untrusted import Npz, open_regular, read_npy

    path = tmp_path / ("a.npy" if how == "npy" else "a.npz")
    if how == "npy":
        np.save(path, array)
        with open_regular(path) as f:
            got = read_npy(f, str(path))
        expected = np.load(path)
    else:
        (np.savez if how == "npz" else np.savez_compressed)(path, a=array)
        with open_regular(path) as f:
            got = Npz(f, str(path)).read("a")
        with np.load(path) as z:
            expected = z["a"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
