"""Helpers shared by the experiment subcommands: crash-safe files, RNG state, plots, progress.

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
import sys
import tempfile
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "fsync_dir", "atomic_writer", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "write_csv", "save_figure", "JsonlLog", "read_jsonl", "ensure_writable_dir",
    "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "progress", "mean_std",
    "to_jsonable", "one_line", "check_device", "allocation_failure",
]


# ----------------------------------------------------------------------------- atomic files

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


def save_figure(fig, path: str, dpi: int = 120, close: bool = True) -> None:
    """Save a matplotlib figure atomically; the format comes from the file extension.

    Use ``matplotlib.figure.Figure()`` directly (no pyplot) to stay free of GUI back-ends.
    """
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    if close:
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt  # only to release figures pyplot may track
            plt.close(fig)


# ----------------------------------------------------------------------------- logs

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
    ValueError: .../m.jsonl, line 2: not a JSON object (Expecting value)
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
            raise ValueError(f"{path}, line {number}: not a JSON object ({reason})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {number}: not a JSON object "
                             f"(a {type(rec).__name__})")
        records.append(rec)
    return records


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there; one-line errors."""
    path = os.fspath(path)
    if not path.strip():
        raise ValueError("the output folder name is empty; give --out DIR")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise OSError(f"output folder {path!r} is not writable ({reason})") from None
    return path


# ----------------------------------------------------------------------------- errors

def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, for ``error: ...`` output.

    An error raised in a DataLoader worker reaches the main process as the same type holding
    "Caught X in DataLoader worker process N. Original Traceback ...": that gives back the
    original message (the traceback's last line, without its ``Type:`` prefix). Any other
    multi-line message is cut to its first line.

    >>> one_line(ValueError("Caught ValueError in DataLoader worker process 0.\\nOriginal "
    ...     "Traceback (most recent call last):\\n  File \\"x.py\\", line 1\\n"
    ...     "ValueError: a.bin: truncated\\n"))
    'a.bin: truncated'
    >>> one_line(OSError())
    'OSError'
    """
    msg = str(exc)
    if "Original Traceback" in msg:
        tail = [line.strip() for line in msg.split("Original Traceback", 1)[1].splitlines()]
        tail = [line for line in tail if line]
        if tail:
            msg = tail[-1]
            head, sep, rest = msg.partition(": ")
            if sep and rest and head.replace(".", "").replace("_", "").isalnum():
                msg = rest  # "pkg.mod.SomeError: message" -> "message"
    lines = [line for line in msg.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else exc.__class__.__name__


def allocation_failure(exc: BaseException) -> Optional[str]:
    """For an out-of-memory error (``MemoryError``, torch's "can't allocate memory" or
    "out of memory"), a short reason such as ``'tried to allocate 62 GiB'``; else ``None``.

    >>> allocation_failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
    ...                                 "to allocate 6272000000000 bytes. Error code 12"))
    'tried to allocate 6272000000000 bytes'
    >>> allocation_failure(RuntimeError("shape mismatch")) is None
    True
    """
    import re
    msg = str(exc)
    if not (isinstance(exc, MemoryError) or isinstance(exc, RuntimeError) and (
            "can't allocate memory" in msg or "out of memory" in msg.lower())):
        return None
    size = re.search(r"tried to allocate ([\d.]+ ?(?:[KMGTP]i?B|bytes))", msg, re.IGNORECASE)
    return f"tried to allocate {size.group(1)}" if size else "out of memory"


def check_device(device: str) -> None:
    """A one-line ``ValueError`` for ``--device cuda`` where torch has no usable CUDA device."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available "
                         f"(torch {torch.__version__}); use --device cpu")


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str, obj: dict) -> None:
    """``torch.save`` to ``path`` atomically: a crash leaves the previous checkpoint intact."""
    with atomic_writer(path, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain types only)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # truncated files, foreign pickles, non-tensor payloads
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not a readable checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not an antlr-snn checkpoint")
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


# ----------------------------------------------------------------------------- reporting

def progress(iterable=None, total: Optional[int] = None, desc: str = "", disable: bool = False,
             **kwargs):
    """A tqdm progress bar on stderr (``disable=True`` gives a silent pass-through)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=kwargs.pop("leave", True), **kwargs)


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}`` with the sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": len(arr)}
