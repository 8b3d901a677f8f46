"""Reader for the IDX files of MNIST and Fashion-MNIST, gzipped or raw.

Format: a 4-byte big-endian magic number ``0x000008ND`` (``08`` = unsigned
byte, ``ND`` = number of dimensions), then ND big-endian uint32 sizes, then the
data bytes in C order. MNIST uses ``0x00000803`` for images [N, 28, 28] and
``0x00000801`` for labels [N].
"""
from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np
from antlr_snn.errors import DataNotFound, UserError

# Magic number -> number of dimensions (unsigned-byte IDX, as in MNIST).
MAGIC_NDIM = {0x00000801: 1, 0x00000803: 3}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if not (path.endswith(".gz") or raw.startswith(_GZIP_MAGIC)):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise UserError(f"{path}: corrupt gzip data ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw, or gzipped by name ``*.gz`` or content).

    Returns a writable uint8 array of the shape stored in the header.
    Raises FileNotFoundError if the file is missing and ValueError, naming the
    file, for a bad magic number, a truncated file, a size mismatch (trailing
    bytes) or corrupt gzip data.

    >>> import gzip, os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with gzip.open(p, "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(p)
    array([7, 2, 1], dtype=uint8)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataNotFound(f"IDX file not found: {path}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in MAGIC_NDIM:
        raise UserError(
            f"{path}: bad IDX magic number 0x{magic:08x} "
            "(expected 0x00000803 for images or 0x00000801 for labels)"
        )
    ndim = MAGIC_NDIM[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # a Python int: np.prod overflows int64 on huge headers
    found = len(raw) - header
    if found < expected:
        raise UserError(
            f"{path}: truncated IDX data: header says {shape} = {expected} bytes, found {found}"
        )
    if found > expected:
        raise UserError(
            f"{path}: size mismatch: {found - expected} trailing bytes after the "
            f"{expected} data bytes of shape {shape}"
        )
    # bytearray makes the array writable, so torch.from_numpy does not warn.
    return np.frombuffer(bytearray(memoryview(raw)[header:]), dtype=np.uint8).reshape(shape)
