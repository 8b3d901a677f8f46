"""Crash-safe files: atomic writes, append-only logs, checkpoints and RNG states.

Every result file goes through an atomic write: the bytes go to a temporary file in the same
folder, which is flushed and fsync'ed, then renamed over the target, and the folder is fsync'ed.
A reader (or a run killed at any instant, or a full disk) therefore sees either the old complete
file or the new complete file, never a torn one. Append-only logs (:class:`JsonlLog`) write each
line with a single ``write`` followed by ``fsync``, and can be truncated back to a known size.

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
           "ensure_writable_dir", "save_checkpoint", "load_checkpoint", "rng_state",
           "set_rng_state"]


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


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb"):
    """Context manager yielding a file that replaces ``path`` atomically on a clean exit.

    On an exception (a full disk, a failed serialisation) the temporary file is removed and
    ``path`` keeps its previous content.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
        data = (json.dumps(to_jsonable(record), allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # one write in practice; loop only on a short write
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
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


def save_checkpoint(path: str, obj: dict) -> None:
    """``torch.save`` to ``path`` atomically: a crash leaves the previous checkpoint intact."""
    with atomic_writer(path, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain types only)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataNotFound(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # truncated files, foreign pickles, non-tensor payloads
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} is not a readable checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not an antlr-snn checkpoint")
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
