"""A small pool of large CPU buffers, so that a training step's cost stays linear in T.

Why: glibc serves every allocation above its mmap threshold (at most 32 MB) with fresh pages
from the kernel and returns them on free. A ``[T, B, N]`` float32 tensor of a 784-800-10
network at T = 1000, B = 16 is 51 MB, so without a pool each training step page-faults its
large buffers in again (about 75,000 faults per step, measured), and the cost per time step
rises with T. The compiled kernels therefore take their large outputs from this pool.

How a buffer is known to be free, with public APIs only: each pooled buffer is a numpy array;
the tensors handed out are ``torch.from_numpy`` views of it, and every such tensor (and every
view of it) keeps one Python reference to the array. When ``sys.getrefcount`` shows that only
the pool holds the array, no tensor uses its memory and it is handed out again. (Tuning
glibc's ``M_MMAP_THRESHOLD`` instead would change the allocator of the whole process.)

Buffers smaller than :data:`MIN_BYTES` are left to the allocator (glibc reuses those well).
The free buffers kept are capped at :func:`set_limit` bytes (default 2 GiB, least recently
used dropped first); :func:`clear` releases them all.

Example:
    >>> import torch
    >>> from antlr_snn import buffers
    >>> a = buffers.empty((1024, 1024, 2))          # 8 MB float32: pooled
    >>> ptr = a.data_ptr(); del a
    >>> b = buffers.empty((2048, 1024))             # same size, memory free again: reused
    >>> b.data_ptr() == ptr, b.shape
    (True, torch.Size([2048, 1024]))
    >>> c = buffers.empty((2048, 1024))             # b still alive: a new buffer
    >>> c.data_ptr() == b.data_ptr()
    False
    >>> with buffers.disabled():
    ...     buffers.empty((2048, 1024)).data_ptr() == b.data_ptr()
    False
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections import OrderedDict

import numpy as np
import torch

from antlr_snn.errors import UserError

__all__ = ["empty", "clear", "set_limit", "disabled", "stats", "MIN_BYTES"]

#: Buffers of at least this many bytes are pooled.
MIN_BYTES = 4 << 20
_PER_SIZE = 8                # at most this many buffers of one size are tracked

_lock = threading.Lock()
_pool: "OrderedDict[int, list]" = OrderedDict()   # nbytes -> numpy uint8 arrays, LRU first
_limit = 2 << 30
_enabled = True
# numpy dtypes of the torch dtypes that may be pooled (torch.from_numpy must take them)
_NP = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
       torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8,
       torch.uint8: np.uint8, torch.bool: np.bool_}


def _free(arr: np.ndarray) -> bool:
    """Only the pool refers to ``arr``: its list entry, the caller's loop name, this
    function's argument and getrefcount's own argument make 4; a tensor using it adds one."""
    return sys.getrefcount(arr) <= 4


def _held_free_bytes() -> int:
    return sum(n for n, lst in _pool.items() for arr in lst if _free(arr))


def _evict(need: int) -> None:
    """Drop free buffers, least recently used sizes first, until ``need`` more bytes fit."""
    for n in list(_pool):
        if _held_free_bytes() + need <= _limit:
            return
        lst = _pool[n]
        lst[:] = [arr for arr in lst if not _free(arr)]
        if not lst:
            del _pool[n]


def empty(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, from the pool when it is large.

    The contents are undefined, as with ``torch.empty``: callers overwrite every entry.
    """
    shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if not _enabled or dtype not in _NP or nbytes < MIN_BYTES or nbytes > _limit:
        return torch.empty(shape, dtype=dtype)
    with _lock:
        lst = _pool.get(nbytes)
        if lst is not None:
            _pool.move_to_end(nbytes)
            for arr in lst:
                if _free(arr):
                    return torch.from_numpy(arr.view(_NP[dtype]).reshape(shape))
        if lst is not None and len(lst) >= _PER_SIZE:
            return torch.empty(shape, dtype=dtype)
        _evict(nbytes)
        arr = np.empty(nbytes, dtype=np.uint8)
        _pool.setdefault(nbytes, []).append(arr)
        return torch.from_numpy(arr.view(_NP[dtype]).reshape(shape))


def clear() -> None:
    """Forget every pooled buffer (buffers still in use stay valid; their memory is freed
    when their last user lets go)."""
    with _lock:
        _pool.clear()


def set_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of free pooled memory (0 turns pooling off)."""
    global _limit
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise UserError(f"the pool limit must be an int >= 0 (bytes), got {nbytes!r}")
    with _lock:
        _limit = nbytes
        _evict(0)


@contextlib.contextmanager
def disabled():
    """Within the block :func:`empty` allocates fresh memory (for memory measurements)."""
    global _enabled
    old, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = old


def stats() -> dict:
    """``{"buffers", "bytes", "free_bytes"}`` of the pool now."""
    with _lock:
        total = sum(n * len(lst) for n, lst in _pool.items())
        count = sum(len(lst) for lst in _pool.values())
        free = _held_free_bytes()
    return {"buffers": count, "bytes": total, "free_bytes": free}
