"""Crash-safe files: atomic writes, append-only logs, checkpoints and RNG states.

Every result file goes through an atomic write: the bytes go to a temporary file in the same
folder, which is flushed and fsync'ed, then renamed over the target, and the folder is fsync'ed.
A reader (or a run killed at any instant, or a full disk) therefore sees either the old complete
file or the new complete file, never a torn one. Append-only logs (:class:`JsonlLog`) write each
line with a single ``write`` followed by ``fsync``, and can be truncated back to a known size.
A failed write (a full disk, an I/O error) raises an ``OSError`` whose ``filename`` is the file
that was being written, and leaves that file as it was.

Checkpoints carry a SHA-256 of their content (:func:`save_checkpoint`): the ``torch.save``
bytes followed by one trailer line ``antlr-snn-sha256:<64 hex digits>``. ``torch.load`` reads
such a file as it is (it ignores what follows the zip archive); :func:`load_checkpoint`
verifies the checksum first and refuses a damaged file with one line.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> atomic_write_json(os.path.join(d, "r.json"), {"accuracy": 0.5, "bad": float("nan")})
    >>> open(os.path.join(d, "r.json")).read()
    '{\\n  "accuracy": 0.5,\\n  "bad": null\\n}\\n'
    >>> log = JsonlLog(os.path.join(d, "m.jsonl"))
    >>> log.append({"epoch": 1}); log.append({"epoch": 2})
    >>> [r["epoch"] for r in read_jsonl(log.path)]
    [1, 2]
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import tempfile
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from antlr_snn.errors import DataNotFound, UserError

__all__ = ["fsync_dir", "atomic_writer", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "write_csv", "to_jsonable", "JsonlLog", "read_jsonl",
           "ensure_writable_dir", "save_checkpoint", "load_checkpoint", "checkpoint_bytes",
           "verified_payload", "rng_state", "set_rng_state"]


def fsync_dir(path: str) -> None:
    """fsync the folder ``path`` so that a rename inside it survives a power cut."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` with ``filename`` set to ``path`` (a failed ``write`` or ``fsync`` names no file)."""
    if exc.filename is None and exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), path)
    return exc


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb"):
    """Context manager yielding a file that replaces ``path`` atomically on a clean exit.

    On an exception (a full disk, a failed serialisation) the temporary file is removed and
    ``path`` keeps its previous content; an ``OSError`` of the write names ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj):
    """Plain JSON types: tensors and numpy scalars to numbers/lists, NaN and Inf to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def atomic_write_json(path: str, obj, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON (via :func:`to_jsonable`) to ``path`` atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    atomic_write_text(path, text + "\n")


def write_csv(path: str, rows: Iterable[Sequence], header: Optional[Sequence[str]] = None) -> None:
    """Write rows (sequences, or dicts when ``header`` names their keys) to a CSV atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        if isinstance(row, dict):
            row = [row.get(k) for k in header]
        writer.writerow(to_jsonable(list(row)))
    atomic_write_text(path, buf.getvalue())


class JsonlLog:
    """Append-only JSON-lines file; each record is one ``write`` + ``fsync``, never torn.

    :meth:`size` gives the byte length to remember in a checkpoint; :meth:`truncate` cuts the
    file back to it (dropping lines written after that checkpoint and any partial last line).
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def append(self, record: dict) -> None:
        """Append one line; on a failed write (a full disk) the file is cut back to what it
        held before, so no partial line is left, and the ``OSError`` names the file."""
        data = (json.dumps(to_jsonable(record), allow_nan=False) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _naming(exc, self.path) from None
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # one write in practice; loop only on a short write
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)  # shrinking needs no space
                raise _naming(exc, self.path) from None
        finally:
            os.close(fd)

    def size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (creating it if missing), then fsync."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size > size:
                os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl(path: str) -> list:
    """Records (JSON objects) of a JSON-lines file; a partial (unterminated) last line is ignored.

    A line that is not a JSON object gives a one-line ``ValueError`` naming the file and line.

    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
    >>> _ = open(p, "w").write('{"epoch": 1}\\ngarbage\\n')
    >>> read_jsonl(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.UserError: .../m.jsonl, line 2: not a JSON object (Expecting value)
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            reason = getattr(exc, "msg", None) or exc.__class__.__name__
            raise UserError(f"{path}, line {number}: not a JSON object ({reason})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}, line {number}: not a JSON object "
                             f"(a {type(rec).__name__})")
        records.append(rec)
    return records


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there; one-line errors."""
    path = os.fspath(path)
    if not path.strip():
        raise UserError("the output folder name is empty; give --out DIR")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise UserError(f"output folder {path!r} is not writable ({reason})") from None
    return path


_TRAILER = b"antlr-snn-sha256:"
TRAILER_LEN = len(_TRAILER) + 64 + 1  # the tag, 64 hex digits, a newline


def checkpoint_bytes(obj: dict) -> bytes:
    """The bytes :func:`save_checkpoint` writes: ``torch.save(obj)`` and its checksum line.

    >>> data = checkpoint_bytes({"step": 3})
    >>> data[-82:-65]
    b'antlr-snn-sha256:'
    >>> torch.load(io.BytesIO(verified_payload(data, "x.pt")), weights_only=True)
    {'step': 3}
    """
    buf = io.BytesIO()  # in memory first: torch's zip writer hides ENOSPC in a RuntimeError
    torch.save(obj, buf)
    payload = buf.getvalue()
    return payload + _TRAILER + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n"


def save_checkpoint(path: str, obj: dict) -> None:
    """``torch.save`` to ``path`` atomically, with a SHA-256 of the content (module
    docstring): a crash or a full disk leaves the previous checkpoint intact."""
    atomic_write_bytes(path, checkpoint_bytes(obj))


def _not_ours(data: bytes, path: str) -> UserError:
    """The error for a file that does not end with our checksum line, saying what it seems."""
    if not data:
        return UserError(f"{path} is an empty file, not an antlr-snn checkpoint")
    if data[:4] == b"PK\x03\x04":
        return UserError(f"{path} has no antlr-snn checksum: it was cut short, or written by "
                         f"other software (antlr-snn checkpoints end with a SHA-256 line)")
    if data[:64].lstrip()[:1] in (b"{", b"["):
        return UserError(f"{path} is a JSON file, not an antlr-snn checkpoint")
    if data[:1] == b"\x80":
        return UserError(f"{path} is a Python pickle, not an antlr-snn checkpoint")
    return UserError(f"{path} is not an antlr-snn checkpoint")


def verified_payload(data: bytes, path: str) -> bytes:
    """The ``torch.save`` bytes of a checkpoint file's content ``data``, after checking its
    SHA-256 line; a one-line :class:`UserError` naming ``path`` for anything else.

    >>> verified_payload(b'{"a": 1}', "run/best.pt")
    Traceback (most recent call last):
    antlr_snn.errors.UserError: run/best.pt is a JSON file, not an antlr-snn checkpoint
    """
    tail = data[-TRAILER_LEN:]
    if len(data) < TRAILER_LEN or not tail.startswith(_TRAILER) or not tail.endswith(b"\n"):
        raise _not_ours(data, path)
    payload, digest = data[:-TRAILER_LEN], tail[len(_TRAILER):-1]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != digest:
        raise UserError(f"{path} is damaged: its content does not match the SHA-256 checksum it "
                        f"was written with; use another checkpoint or rerun")
    return payload


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain types only),
    after verifying its checksum; one-line errors of our own for damaged or foreign files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a checkpoint file (give the best.pt or "
                         f"checkpoint.pt inside it)")
    if not os.path.exists(path):
        raise DataNotFound(f"checkpoint {path} not found")
    with open(path, "rb") as fh:  # a permission error stays an OSError (one line in the CLI)
        data = fh.read()
    payload = verified_payload(data, path)
    try:
        obj = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # an intact file of ours whose objects torch will not load safely
        raise UserError(f"{path} holds objects other than tensors and plain types "
                         f"({type(exc).__name__}); antlr-snn does not load such files") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not an antlr-snn checkpoint (it holds a "
                         f"{type(obj).__name__}, not a dict)")
    return obj


def rng_state() -> dict:
    """Every global RNG state (python, numpy, torch CPU and CUDA) as checkpoint-safe types."""
    version, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": version, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
