"""Batches of event data, time-major: items ``(spikes [T, N], label)`` -> ``([T, B, N], [B])``.

The layers take spikes as ``[T, B, N]`` (time first). Every event data set here yields items
``[T, N]``; a ``DataLoader`` with its default collate stacks those into ``[B, T, N]``, which a
network would read as B time steps of T samples, without an error when N fits. Batch them with
:func:`event_loader`, or pass ``collate_fn=time_major`` to your own ``DataLoader``.

Example:
    >>> import torch
    >>> items = [(torch.zeros(30, 4, dtype=torch.uint8), 1), (torch.ones(30, 4), 3)]
    >>> x, y = time_major(items)
    >>> tuple(x.shape), x.dtype, y.tolist()
    ((30, 2, 4), torch.float32, [1, 3])
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from antlr_snn.checks import check_int
from antlr_snn.errors import UserError

__all__ = ["time_major", "event_loader"]


def time_major(items, num_steps: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(spikes [T, N], label)`` items into ``(spikes [T, B, N] float32, labels [B])``.

    Every item must be 2-D with one shape (and ``T == num_steps`` where given): anything else
    is a :class:`~antlr_snn.errors.UserError` naming the first item that differs.

    >>> time_major([(torch.zeros(5, 3), 0)], num_steps=4)
    Traceback (most recent call last):
    antlr_snn.errors.UserError: event item 0 has 5 time steps, expected num_steps=4 ...
    """
    items = list(items)
    if not items:
        raise UserError("cannot make a batch of no items")
    spikes = [torch.as_tensor(s) for s, _ in items]
    first = spikes[0].shape
    for i, s in enumerate(spikes):
        if s.dim() != 2:
            raise UserError(f"event item {i} has shape {tuple(s.shape)}; event items must be "
                            "spikes [T, N] (time steps, features)")
        if num_steps is not None and s.shape[0] != num_steps:
            raise UserError(f"event item {i} has {s.shape[0]} time steps, expected num_steps="
                            f"{num_steps} (shape {tuple(s.shape)}, items are [T, N])")
        if s.shape != first:
            raise UserError(f"event item {i} has shape {tuple(s.shape)} but item 0 has "
                            f"{tuple(first)}; a batch needs one [T, N]")
    x = torch.stack(spikes, dim=1).float()  # [T, B, N]
    return x, torch.tensor([int(y) for _, y in items], dtype=torch.long)


def event_loader(dataset, batch_size: int, shuffle: bool = False,
                 num_steps: Optional[int] = None, **kwargs) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``(spikes [T, N], label)`` items whose batches are ``[T, B, N]``.

    ``kwargs`` go to the ``DataLoader`` (``num_workers``, ``generator``, ``drop_last``, ...);
    ``num_steps`` checks every item's T.

    >>> from antlr_snn.data import load_dataset
    >>> data = load_dataset("nmnist-sim", "val", num_steps=20)
    >>> x, y = next(iter(event_loader(data, batch_size=4)))
    >>> tuple(x.shape), tuple(y.shape)
    ((20, 4, 2312), (4,))
    """
    batch_size = check_int("batch_size", batch_size)
    if num_steps is not None:
        num_steps = check_int("num_steps", num_steps)
    if "collate_fn" in kwargs:
        raise UserError("event_loader sets collate_fn itself (time_major); use a DataLoader "
                        "for another collate")
    collate = functools.partial(time_major, num_steps=num_steps)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       collate_fn=collate, **kwargs)
