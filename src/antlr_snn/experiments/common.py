"""Helpers shared by the experiment subcommands: figures, summaries, run folders, kernels.

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

__all__ = ["save_figure", "mean_std", "run_folder", "start_writing", "warm_up_kernels"]


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


COMPILING = "compiling the CPU kernels (first run only, about 10-20 s)..."


def warm_up_kernels(methods, in_features: int, replicas=None, device: str = "cpu",
                    announce: bool = True, after: float = 2.0, command: str = "antlr-snn") -> bool:
    """One tiny training step per method, so that numba compiles the CPU kernels (or loads
    them from its cache) now and not silently inside the first real step.

    When that takes longer than ``after`` seconds (a cold cache: 10-20 s on 2 cores), it says
    so on stderr while it happens. Returns whether the compiled kernels apply at all (not on
    CUDA, nor with ``ANTLR_SNN_KERNELS=reference`` or without numba).
    """
    import sys
    import threading

    import torch

    from antlr_snn import kernels
    from antlr_snn.network import SpikingNetwork
    if not str(device).startswith("cpu") or kernels.backend_for(torch.zeros(1)).name != "numba":
        return False
    timer = threading.Timer(after, lambda: print(f"{command}: {COMPILING}", file=sys.stderr,
                                                 flush=True))
    timer.daemon = True
    if announce:
        timer.start()
    try:
        gen = torch.Generator().manual_seed(0)
        lead = () if replicas is None else (2,)
        for method in methods:
            net = SpikingNetwork([in_features, 4, 3], method=method,
                                 replicas=None if replicas is None else 2)
            x = (torch.rand(8, *lead, 2, in_features, generator=gen) < 0.05).float()
            out = net(x)
            (out.spikes.sum() + (out.spikes * out.shift).sum()).backward()
            with torch.no_grad():
                net(x)
    finally:
        timer.cancel()
    return True


def holds_run(outputs):
    """``holds_run(folder)``: the folder holds a file of ``outputs``."""
    return lambda folder: any(os.path.exists(os.path.join(folder, f)) for f in outputs)


def run_folder(args, prefix: str, outputs, command: str):
    """The :class:`~antlr_snn.rundir.RunFolder` of ``--out`` (automatic name without), to be
    opened and locked by ``with``; a folder holding a run is refused unless ``--overwrite``."""
    from antlr_snn.rundir import RunFolder
    return RunFolder(args.out, prefix, holds_run=holds_run(outputs), overwrite=args.overwrite,
                     command=command,
                     replace_hint="pass --overwrite to replace it or choose another --out")


def start_writing(folder, outputs) -> None:
    """Commit the run folder; with ``--overwrite`` the old run's files go first, so that the
    folder never mixes two runs."""
    for name in outputs:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder.path, name))
    folder.commit()
