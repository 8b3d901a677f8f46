"""Helpers shared by the experiment subcommands: figures, devices, summaries.

The crash-safe file helpers live in :mod:`antlr_snn.files` and the error helpers in
:mod:`antlr_snn.errors` (the library uses them too); they are re-exported here for the
subcommands.

Example:
    >>> mean_std([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'n': 3}
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Sequence

import numpy as np

from antlr_snn.distributed import check_device  # noqa: F401 (re-export)
from antlr_snn.errors import UserError, allocation_failure, one_line  # noqa: F401 (re-export)
from antlr_snn.files import (JsonlLog, atomic_write_bytes, atomic_write_json,  # noqa: F401
                             atomic_write_text, atomic_writer, ensure_writable_dir, fsync_dir,
                             load_checkpoint, read_jsonl, rng_state, save_checkpoint,
                             set_rng_state, to_jsonable, write_csv)
from antlr_snn.training import progress  # noqa: F401 (re-export)

__all__ = ["save_figure", "mean_std"]


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


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}`` with the sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": len(arr)}
