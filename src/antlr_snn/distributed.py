"""Ranks and collectives for training under ``torch.distributed`` (launched by ``torchrun``).

One trial trains with DistributedDataParallel (gloo on CPU, NCCL on GPU); logs, checkpoints
and plots come from rank 0, and :func:`from_lead` shares rank 0's answers (and errors) with
every rank. Without a process group every helper here is a no-op.

Example:
    >>> rt = Runtime()                      # one process
    >>> from_lead(lambda: 42, rt), all_sum(torch.ones(2), rt).tolist()
    (42, [1.0, 1.0])
"""
from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

from antlr_snn.errors import UserError

__all__ = ["Runtime", "setup_distributed", "check_device", "broadcast", "from_lead", "all_sum"]


@dataclass
class Runtime:
    """How to run: ranks, device, files; none of it changes the numbers."""

    rank: int = 0
    world: int = 1
    ddp: bool = False
    device: str = "cpu"
    checkpoint_every: int = 0
    progress: bool = True
    verbose: bool = True
    resume: bool = False
    workers: int = 0

    @property
    def shared(self) -> bool:
        """True when several ranks train one model (DDP with more than one process)."""
        return self.ddp and self.world > 1


def check_device(device: str) -> None:
    """A one-line error for ``--device cuda`` where torch has no usable CUDA device."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available "
                        f"(torch {torch.__version__}); use --device cpu")


def setup_distributed(device: str):
    """``(rank, world, device)``; joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    check_device(device)
    if world <= 1:
        return 0, 1, "cuda" if use_cuda else "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(hours=12))
    return dist.get_rank(), dist.get_world_size(), f"cuda:{local}" if use_cuda else "cpu"


def broadcast(obj, rt: Runtime):
    """``obj`` of rank 0 on every rank (a no-op without DDP)."""
    if not rt.shared:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_lead(fn, rt: Runtime):
    """Run ``fn`` on rank 0 only and share its result, or its error, with every rank."""
    if not rt.shared:
        return fn()
    res = None
    if rt.rank == 0:
        try:
            res = ("ok", fn())
        except Exception as exc:  # re-raised below on every rank, rank 0 included
            try:
                pickle.loads(pickle.dumps(exc))
                res = ("err", exc)
            except Exception:  # an exception that does not survive pickling
                res = ("err", RuntimeError(f"{type(exc).__name__}: {exc}"))
    res = broadcast(res, rt)
    if res[0] == "err":
        raise res[1]
    return res[1]


def all_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself without DDP); returned on the CPU."""
    if rt.shared:
        buf = t.to(rt.device)
        dist.all_reduce(buf)
        t = buf.cpu()
    return t
