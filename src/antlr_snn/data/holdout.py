"""The validation split carved from training files: the last sixth of every class."""
from __future__ import annotations

from typing import Sequence

from antlr_snn.errors import UserError

VAL_FRACTION = 6  # val takes len // 6 of each class (10,000 of N-MNIST's 60,000)


def class_tail(labels: Sequence[int], split: str) -> list[int]:
    """Indices of split "train" or "val" of a training set with these ``labels``.

    "val" takes the last ``n // 6`` indices of each class (in index order), "train" the rest;
    the result is class by class, ascending. Balanced although files come ordered by class, and
    deterministic given the order of the samples.

    >>> class_tail([0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0], "val")   # 8 zeros -> 1, 3 ones -> 0
    [10]
    >>> class_tail([0, 1, 0, 1], "train")
    [0, 2, 1, 3]
    """
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    keep = []
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        n_train = len(idx) - len(idx) // VAL_FRACTION
        keep += idx[:n_train] if split == "train" else idx[n_train:]
    return keep
