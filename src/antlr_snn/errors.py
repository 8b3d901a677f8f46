"""Errors: :class:`UserError` for what the user got wrong, and one-line messages.

The library raises :class:`UserError` (a ``ValueError``) for bad input that the user can fix:
wrong shapes, non-binary spikes, out-of-range hyper-parameters, missing or damaged files. The
command line shows those as one line and exits with status 2; any other exception is a bug in
antlr-snn and keeps its traceback (exit status 1).

Example:
    >>> from antlr_snn.errors import UserError
    >>> try:
    ...     raise UserError("alpha_v must lie in (0, 1], got 2")
    ... except ValueError as exc:       # a UserError is a ValueError
    ...     print(one_line(exc))
    alpha_v must lie in (0, 1], got 2
"""
from __future__ import annotations

from typing import Optional

__all__ = ["UserError", "DataNotFound", "one_line", "allocation_failure"]


class UserError(ValueError):
    """Bad input the user can fix; its message names the problem (one line)."""


class DataNotFound(UserError, FileNotFoundError):
    """A data set, checkpoint or run file is missing; the message says where to put it."""


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
