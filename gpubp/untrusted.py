"""Reading files gpubp does not trust: regular files only, every declared size checked first.

Model and data files come from anywhere, so the readers here hold to three rules:

- Only a regular file is opened (symbolic links followed). A FIFO, a device, a folder or a socket
  is refused from ``os.stat`` before any ``open``; the open itself uses ``O_NONBLOCK``, and
  ``fstat`` of the opened descriptor confirms it is still a regular file.
- No size a file declares is believed before it is checked against the bytes really there. A
  stored (uncompressed) array must be in the file; a compressed one is inflated chunk by chunk and
  decompression stops at the declared size, so memory grows only with data that really arrives.
- Every refusal is a :class:`BadFile` (a ``ValueError``, or the subclass the caller names) whose
  message names the file and the problem; no ``MemoryError`` or standard-library exception
  escapes. Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
import struct
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

__all__ = [
    "BadFile",
    "open_regular",
    "file_size",
    "read_upto",
    "fill",
    "allocate",
    "NpyHeader",
    "read_npy_header",
    "refusal",
    "read_npy",
    "Npz",
]

CHUNK = 1 << 20
"""Bytes read or inflated per step: the most a read allocates ahead of data that really arrived."""

MAX_NPY_HEADER = 65536
"""Largest .npy header accepted (numpy writes ~128 bytes; its own reader stops at 10,000 characters)."""

MAX_NDIM = 32
"""Most dimensions an array may declare."""

MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_DIRECTORY = 4 << 20
"""Largest zip central directory read (zipfile keeps an object per entry: ~15x its bytes)."""

DEFLATE_MAX_RATIO = 1032
"""Deflate's largest expansion: one byte of compressed data never inflates to more than 1032."""

ARRAY_KINDS = "biuf"
"""dtype kinds of numeric arrays: bool, signed and unsigned integers, floats."""


class BadFile(ValueError):
    """A file gpubp was asked to read is refused: not a regular file, malformed, or declaring sizes
    its bytes do not hold. The message names the file and what is wrong."""


Error = Callable[[str], Exception]


# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------


SPECIAL_FILES = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
"""What gpubp calls a file of each type (``stat.S_IFMT``) it refuses to read."""


def _refuse_special(mode: int, path: str, error: Error) -> None:
    """``error`` saying what the file at ``path`` is, unless its ``st_mode`` is a regular file's."""
    if stat.S_ISREG(mode):
        return
    kind = SPECIAL_FILES.get(stat.S_IFMT(mode), "a special file")
    if kind == "a folder" and not os.path.islink(path):
        raise error(f"{path}: is a folder, not a file")
    via = f"a symbolic link to {os.path.realpath(path)}, " if os.path.islink(path) else ""
    raise error(f"{path}: is {via}{kind}, not a regular file (gpubp reads only regular files)")


def open_regular(
    path: str | os.PathLike[str], error: Error = BadFile, missing: Error = FileNotFoundError, noun: str = "file"
) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; refuse anything else without waiting.

    ``missing(message)`` is raised when there is no such file, ``error(message)`` for any other
    refusal (a folder, FIFO, device, socket, or a symbolic link to one; no permission).
    """
    shown = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise missing(f"{shown}: no such {noun}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise error(f"{shown}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    _refuse_special(st.st_mode, shown, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"{shown}: cannot read ({e.strerror or e})") from None
    try:
        _refuse_special(os.fstat(fd).st_mode, shown, error)  # replaced between the stat and the open?
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(f: BinaryIO) -> int:
    """Size in bytes of an open regular file."""
    return os.fstat(f.fileno()).st_size


# ----------------------------------------------------------------------------------------------
# Bounded reads
# ----------------------------------------------------------------------------------------------


def read_upto(f: BinaryIO, limit: int) -> bytearray:
    """Up to ``limit`` bytes from ``f``, read (or inflated) a chunk at a time until ``limit`` or EOF.

    Memory grows with the bytes that arrive, never with ``limit``: a file declaring a terabyte and
    holding a kilobyte costs a kilobyte.
    """
    buf = bytearray()
    while len(buf) < limit:
        chunk = f.read(min(CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def fill(f: BinaryIO, buf: bytearray) -> int:
    """Read from ``f`` into ``buf`` a chunk at a time until it is full or ``f`` ends; the bytes read."""
    view, pos = memoryview(buf), 0
    while pos < len(buf):
        n = f.readinto(view[pos : pos + CHUNK])
        if not n:
            break
        pos += n
    return pos


def _array_from(buf: bytearray | bytes, header: NpyHeader) -> np.ndarray:
    """The array ``header`` describes, on the bytes of ``buf`` (no copy)."""
    a = np.frombuffer(buf, dtype=header.dtype, count=math.prod(header.shape))
    if header.fortran:
        return a.reshape(header.shape[::-1]).T
    return a.reshape(header.shape)


# ----------------------------------------------------------------------------------------------
# .npy
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NpyHeader:
    """What a .npy header declares: ``nbytes`` of data follow its ``size`` bytes of header."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    size: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        dims = "x".join(map(str, self.shape)) if self.shape else "scalar"
        return f"{dims} {self.dtype.name}"


def read_npy_header(f: BinaryIO, where: str, error: Error = BadFile, kinds: str | None = ARRAY_KINDS) -> NpyHeader:
    """Read and check a .npy header from ``f`` (at its start); no data is read.

    The header must be at most ``MAX_NPY_HEADER`` bytes and declare at most ``MAX_NDIM``
    non-negative dimensions; unless ``kinds`` is None, a plain dtype of one of ``kinds``.
    """
    prefix = bytes(read_upto(f, 8))
    if len(prefix) < 8 or not prefix.startswith(b"\x93NUMPY"):
        raise error(f"{where}: not a .npy array (no \\x93NUMPY magic)")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0)):
        raise error(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
    length_format = "<H" if version == (1, 0) else "<I"
    raw_length = bytes(read_upto(f, struct.calcsize(length_format)))
    if len(raw_length) != struct.calcsize(length_format):
        raise error(f"{where}: truncated .npy header")
    (length,) = struct.unpack(length_format, raw_length)
    if length > MAX_NPY_HEADER:
        raise error(f"{where}: .npy header of {length} bytes (at most {MAX_NPY_HEADER})")
    text = bytes(read_upto(f, length))
    if len(text) != length:
        raise error(f"{where}: truncated .npy header")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(io.BytesIO(raw_length + text), max_header_size=MAX_NPY_HEADER)
    except Exception as e:  # numpy's parser on hostile text: whatever it raises is a refusal
        raise error(f"{where}: malformed .npy header ({_short(e)})") from None
    if len(shape) > MAX_NDIM or any(d < 0 for d in shape):
        raise error(f"{where}: .npy header declares shape {_short(shape)}")
    header = NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran), 8 + len(raw_length) + length)
    problem = refusal(header, kinds) if kinds is not None else None
    if problem:
        raise error(f"{where}: {problem}")
    return header


def refusal(header: NpyHeader, kinds: str) -> str | None:
    """Why an array of this header's dtype is not read (None if it may be): plain dtypes of
    ``kinds`` only, never objects (pickles) or records."""
    dtype = header.dtype
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        return f"arrays of {dtype} are not accepted (expected {_kinds(kinds)})"
    if dtype.itemsize == 0:
        return f"arrays of {dtype} hold nothing"
    return None


def _kinds(kinds: str) -> str:
    names = {"b": "booleans", "i": "integers", "u": "unsigned integers", "f": "floats", "U": "text"}
    return ", ".join(names[k] for k in kinds)


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def read_npy(f: BinaryIO, where: str, error: Error = BadFile, kinds: str = ARRAY_KINDS) -> np.ndarray:
    """Read the .npy file ``f`` (opened by :func:`open_regular`, at its start): refused unless its
    size is exactly its header plus the data the header declares, before any data is read."""
    header = read_npy_header(f, where, error, kinds)
    have = file_size(f) - header.size
    if have != header.nbytes:
        raise error(
            f"{where}: declares {header.describe()} ({header.nbytes} bytes of data) "
            f"but holds {have} bytes after its header"
        )
    buf = allocate(header.nbytes, where, error)
    if fill(f, buf) != header.nbytes:
        raise error(f"{where}: shorter than its size says (changed while reading?)")
    return _array_from(buf, header)


def allocate(nbytes: int, where: str, error: Error) -> bytearray:
    """A buffer of ``nbytes`` for data already known to be in a file; MemoryError becomes ``error``."""
    try:
        return bytearray(nbytes)
    except (MemoryError, OverflowError):
        raise error(f"{where}: not enough memory for its {nbytes} bytes of data") from None


# ----------------------------------------------------------------------------------------------
# .npz
# ----------------------------------------------------------------------------------------------


def _zip_directory(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """(entries, bytes) of a zip archive's central directory, from its end record; None if absent."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    entries, dir_size = struct.unpack("<4s4H2LH", tail[i : i + 22])[4:6]
    if entries == 0xFFFF or dir_size == 0xFFFFFFFF:  # zip64: the real counts are in the zip64 end record
        loc = tail[i - 20 : i] if i >= 20 else b""
        if loc[:4] == b"PK\x06\x07":
            offset = struct.unpack("<4sLQL", loc)[2]
            if offset + 56 <= size:
                f.seek(offset)
                record = f.read(56)
                if record[:4] == b"PK\x06\x06":
                    entries, dir_size = struct.unpack("<QQ", record[32:48])
    return entries, dir_size


class Npz:
    """An .npz archive opened for checking: every ``.npy`` member's header is read and checked
    against the zip's sizes on opening; no array data is read until :meth:`read` asks for it.

    ``f`` is the archive, opened by :func:`open_regular` (and closed by the caller). Every refusal
    is ``error(f"{where}: {problem}")``. ``headers`` maps array names (member names without
    ``.npy``) to their :class:`NpyHeader`; arrays of dtypes not in ``kinds`` are in ``refused``
    (with the reason :meth:`read` gives), members that are not .npy in ``others``; neither is read.
    """

    def __init__(self, f: BinaryIO, where: str, error: Error = BadFile, kinds: str = ARRAY_KINDS) -> None:
        self.where, self.error = where, error
        size = file_size(f)
        try:
            directory = _zip_directory(f, size)
            if directory is not None and (directory[0] > MAX_ZIP_MEMBERS or directory[1] > MAX_ZIP_DIRECTORY):
                raise self._fail(
                    f"zip directory of {directory[0]} entries in {directory[1]} bytes "
                    f"(at most {MAX_ZIP_MEMBERS} entries, {MAX_ZIP_DIRECTORY} bytes)"
                )
            f.seek(0)
            self.zip = zipfile.ZipFile(f)
            infos = self.zip.infolist()
        except BadFile:
            raise
        except Exception as e:  # BadZipFile, EOFError, struct.error, ...: a broken archive
            raise self._fail(f"not a readable .npz (zip) file ({_short(e)})") from None
        self.headers: dict[str, NpyHeader] = {}
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self.others: list[str] = []
        self.refused: dict[str, str] = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                self.others.append(name)
                continue
            key = name[: -len(".npy")]
            if key in self.headers or key in self.refused:
                raise self._fail(f"two members named {name!r}")
            self._check_sizes(info, size)
            header = self._header(info)
            problem = refusal(header, kinds)
            if problem:  # refused if read, not before: np.load is lazy too
                self.refused[key] = problem
                continue
            if header.size + header.nbytes != info.file_size:
                raise self._fail(
                    f"{name}: declares {header.describe()} ({header.nbytes} bytes) "
                    f"but its zip member holds {info.file_size - header.size} bytes of data"
                )
            self.headers[key] = header
            self._infos[key] = info

    def _fail(self, problem: str) -> Exception:
        return self.error(f"{self.where}: {problem}")

    def _check_sizes(self, info: zipfile.ZipInfo, archive_size: int) -> None:
        """The member's compressed bytes lie in the file, and its declared size is one they can hold."""
        name = info.filename
        if info.flag_bits & 0x1:
            raise self._fail(f"member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._fail(f"member {name!r} uses zip compression method {info.compress_type} (stored or deflated)")
        if info.header_offset + 30 + len(info.orig_filename) + info.compress_size > archive_size:
            raise self._fail(
                f"member {name!r} claims {info.compress_size} bytes at offset {info.header_offset}, "
                f"past the end of the {archive_size}-byte file (truncated?)"
            )
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 64:
            raise self._fail(
                f"member {name!r} claims {info.file_size} bytes from {info.compress_size} compressed, "
                "more than deflate can produce (corrupt or hostile)"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise self._fail(
                f"stored member {name!r} claims {info.file_size} bytes but holds {info.compress_size} (corrupt?)"
            )

    @property
    def names(self) -> set[str]:
        """Every .npy member's name (without .npy), readable or not."""
        return set(self.headers) | set(self.refused)

    def _header(self, info: zipfile.ZipInfo) -> NpyHeader:
        where = f"{self.where}: {info.filename}"
        try:
            with self.zip.open(info) as member:
                return read_npy_header(member, where, self.error, kinds=None)
        except BadFile:
            raise
        except Exception as e:
            raise self.error(f"{where}: unreadable ({_short(e)})") from None

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, inflated a chunk at a time and stopped at its declared size."""
        if name in self.refused:
            raise self._fail(f"{name}.npy: {self.refused[name]}")
        header, info = self.headers[name], self._infos[name]
        where = f"{self.where}: {info.filename}"
        try:
            with self.zip.open(info) as member:
                read_upto(member, header.size)
                if info.compress_type == zipfile.ZIP_STORED:  # the bytes are in the file: allocate once
                    buf = allocate(header.nbytes, where, self.error)
                    got = fill(member, buf)
                    if got != header.nbytes:
                        buf = buf[:got]
                else:  # grow with the data that really inflates, never past the declared size
                    buf = read_upto(member, header.nbytes)
                if len(buf) != header.nbytes:
                    raise self.error(f"{where}: holds {len(buf)} bytes of data, declares {header.nbytes} (truncated?)")
                member.read(1)  # reaching the end checks the member's CRC
        except BadFile:
            raise
        except MemoryError:
            raise self.error(f"{where}: not enough memory for its {header.nbytes} bytes of data") from None
        except Exception as e:  # bad CRC, corrupt deflate stream, truncated file
            raise self.error(f"{where}: corrupt or truncated ({_short(e)})") from None
        return _array_from(buf, header)
