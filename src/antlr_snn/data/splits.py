"""Train / validation / test splits as batches of spikes ``[T, B, F]`` with labels ``[B]``.

Static images are latency-coded per batch (:func:`antlr_snn.encode.latency`); event data sets
are read through a ``DataLoader``, optionally with worker processes, and batched time-major by
:func:`antlr_snn.data.layout.time_major`.

Example:
    >>> import torch
    >>> split = Split((torch.rand(10, 4), torch.arange(10)), num_steps=30, t_max=24)
    >>> x, y = next(split.batches([torch.tensor([0, 3])]))
    >>> tuple(x.shape), y.tolist()
    ((30, 2, 4), [0, 3])
"""
from __future__ import annotations

from typing import Optional

import torch

from antlr_snn import encode
from antlr_snn.data.layout import time_major
from antlr_snn.errors import UserError, one_line

__all__ = ["Split", "load_splits"]


class Split:
    """One split as batches of ``(spikes [T, B, F] float, labels [B])`` for given indices.

    ``data`` is ``(images [N, F], labels [N])`` (latency-coded with ``num_steps`` and ``t_max``)
    or a dataset of ``(spikes [T, F], label)``. ``limit`` keeps an evenly spaced subset of that
    many samples (some sets, as N-MNIST's folders, are ordered by class, so the first N would
    not do).
    """

    def __init__(self, data, num_steps: int, t_max: int = 24, limit: Optional[int] = None,
                 device: str = "cpu"):
        self.static = isinstance(data, tuple)
        self.num_steps, self.t_max, self.device = num_steps, t_max, device
        total = len(data[1]) if self.static else len(data)
        keep = None if limit is None or limit >= total else torch.arange(limit) * total // limit
        if self.static:
            images, labels = data if keep is None else (data[0][keep], data[1][keep])
            self.images, self.labels = images.to(device), labels.to(device)
            self.features = self.images.shape[1]
        else:
            self.data = data if keep is None else torch.utils.data.Subset(data, keep.tolist())
            self.features = int(self.data[0][0].shape[-1]) if len(self.data) else 0
        self.n = total if keep is None else limit
        self.num_classes = 10 if self.static else _num_classes(data)

    def __len__(self) -> int:
        return self.n

    def batches(self, index_batches, workers: int = 0):
        """Yield one batch per entry of ``index_batches`` (``None`` for an empty entry)."""
        if self.static:
            for idx in index_batches:
                if len(idx) == 0:
                    yield None
                    continue
                idx = idx.to(self.device)
                yield encode.latency(self.images[idx], self.num_steps, self.t_max), self.labels[idx]
            return
        nonempty = [b.tolist() for b in index_batches if len(b)]
        loader = iter(torch.utils.data.DataLoader(self.data, batch_sampler=nonempty,
                                                  num_workers=workers, collate_fn=time_major))
        for idx in index_batches:
            if len(idx) == 0:
                yield None
            else:
                x, y = _next_batch(loader)
                yield x.to(self.device), y.to(self.device)


def _num_classes(data) -> int:
    while isinstance(data, torch.utils.data.Subset):
        data = data.dataset
    return int(getattr(data, "num_classes", 10))


def _next_batch(loader):
    """``next(loader)``; an error from a worker process comes back as the worker's own message
    (torch re-raises it as the same type holding the worker's whole traceback)."""
    try:
        return next(loader)
    except Exception as exc:
        if "Original Traceback" not in str(exc):
            raise
        try:
            clean = type(exc)(one_line(exc))
        except Exception:  # an exception type that takes other arguments
            raise exc from None
        raise clean from None


def load_splits(cfg, device: str = "cpu", splits=("train", "val", "test")) -> dict:
    """The requested splits of ``cfg.dataset`` (fixed split seed 0) with the size limits
    applied; ``cfg`` has ``dataset``, ``data_dir``, ``num_steps``, ``t_max``, ``max_train`` and
    ``max_eval`` (a :class:`~antlr_snn.training.TrainConfig`)."""
    from antlr_snn.data import load_dataset
    out = {}
    for name in splits:
        data = load_dataset(cfg.dataset, name, data_dir=cfg.data_dir, num_steps=cfg.num_steps,
                            seed=0)
        limit = cfg.max_train if name == "train" else cfg.max_eval
        out[name] = Split(data, cfg.num_steps, cfg.t_max, limit, device)
        if out[name].n == 0:
            raise UserError(f"the {name} split of {cfg.dataset} is empty")
    if len({split.features for split in out.values()}) > 1:
        where = f" in {cfg.data_dir}" if cfg.data_dir else ""
        sizes = ", ".join(f"{name} {split.features}" for name, split in out.items())
        raise UserError(f"the splits of {cfg.dataset}{where} have different input sizes "
                        f"({sizes} features per sample); the train-* and t10k-* (or Train/ "
                        f"and Test/) files must hold samples of one size")
    return out
