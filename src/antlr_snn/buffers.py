"""A small pool of large CPU buffers, so that a training step's cost stays linear in T.

Why: glibc serves every allocation above its mmap threshold (at most 32 MB) with fresh pages
from the kernel and returns them on free. A ``[T, B, N]`` float32 tensor of a 784-800-10
network at T = 1000, B = 16 is 51 MB, so without a pool each training step page-faults its six
such buffers in again (about 75,000 faults per step, measured), and the cost per time step
rises with T. The compiled kernels therefore take their large outputs from this pool: a
buffer is handed out again once nothing else holds its storage (the pool's own reference is
the only one left), so a steady training loop reuses the same memory every step.

Buffers smaller than :data:`MIN_BYTES` are left to the allocator (glibc reuses those well).
The free buffers kept are capped at :func:`set_limit` bytes (default 2 GiB, least recently
used dropped first); :func:`clear` releases them all. The pool needs torch's storage use
count (a private function that torch's own CUDA-graph code relies on); where it is missing,
:func:`empty` is plain ``torch.empty``.

Example:
    >>> import torch
    >>> from antlr_snn import buffers
    >>> a = buffers.empty((1024, 1024, 2))          # 8 MB float32: pooled
    >>> ptr = a.data_ptr(); del a
    >>> b = buffers.empty((2048, 1024))             # same size, storage free again: reused
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
import threading
from collections import OrderedDict

import torch
from antlr_snn.errors import UserError

__all__ = ["empty", "clear", "set_limit", "disabled", "stats", "MIN_BYTES"]

#: Buffers of at least this many bytes are pooled.
MIN_BYTES = 4 << 20
_PER_SIZE = 8                # at most this many buffers of one size are tracked

_use_count = getattr(torch._C, "_storage_Use_Count", None)
_lock = threading.Lock()
_pool: "OrderedDict[int, list]" = OrderedDict()   # nbytes -> storages, least recent first
_limit = 2 << 30
_enabled = True


def _held_free_bytes() -> int:
    return sum(n for n, lst in _pool.items() for st in lst if _use_count(st._cdata) == 1)


def _evict(need: int) -> None:
    """Drop free buffers, least recently used sizes first, until ``need`` more bytes fit."""
    for n in list(_pool):
        if _held_free_bytes() + need <= _limit:
            return
        lst = _pool[n]
        lst[:] = [st for st in lst if _use_count(st._cdata) != 1]
        if not lst:
            del _pool[n]


def empty(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, from the pool when it is large.

    The contents are undefined, as with ``torch.empty``: callers overwrite every entry.
    """
    shape = tuple(int(s) for s in shape)
    itemsize = getattr(dtype, "itemsize", None) or torch.empty(0, dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    if not _enabled or _use_count is None or nbytes < MIN_BYTES or nbytes > _limit:
        return torch.empty(shape, dtype=dtype)
    with _lock:
        lst = _pool.get(nbytes)
        if lst is not None:
            _pool.move_to_end(nbytes)
            for st in lst:
                if _use_count(st._cdata) == 1:  # only the pool holds it
                    return torch.empty(0, dtype=dtype).set_(st, 0, shape)
        out = torch.empty(shape, dtype=dtype)
        if lst is None or len(lst) < _PER_SIZE:
            _evict(nbytes)
            _pool.setdefault(nbytes, []).append(out.untyped_storage())
        return out


def clear() -> None:
    """Forget every pooled buffer (buffers still in use stay valid; their memory is freed
    when their last user lets go)."""
    with _lock:
        _pool.clear()


def set_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of free pooled memory (0 turns pooling off)."""
    global _limit
    if not isinstance(nbytes, int) or nbytes < 0:
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
        free = _held_free_bytes() if _use_count is not None else 0
    return {"buffers": count, "bytes": total, "free_bytes": free}
