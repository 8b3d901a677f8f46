"""N-MNIST from its original ``.bin`` files, binned into binary spike frames.

Each event is 40 bits (5 bytes): byte0 = x (0..33), byte1 = y (0..33),
byte2 bit 7 = polarity, and a 23-bit timestamp in microseconds
``t = ((b2 & 127) << 16) | (b3 << 8) | b4``. An event with ``y == 240`` is a
timestamp-overflow marker (Orchard et al.'s ``Read_Ndataset.m``): it is dropped and every
later event's timestamp grows by 2**13. The bytes are decoded by tonic's own reader
(``tonic.io.read_mnist_file``, which handles those markers); this module adds the checks that
tonic leaves out (length, empty file, coordinates), each a one-line error naming the file.

Frames are time-major [T, 2 * 34 * 34] with feature index ``p * 34 * 34 + y * 34 + x``;
batch them into [T, B, N] with :func:`antlr_snn.data.event_loader`.
"""
from __future__ import annotations

import glob
import io
import os
import stat

import numpy as np
import torch
from torch.utils.data import Dataset

from antlr_snn.checks import check_int, check_number
from ._tonic import require_tonic
from antlr_snn.errors import DataNotFound, UserError

SIZE = 34
NUM_FEATURES = 2 * SIZE * SIZE
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.uint8)])
SPLIT_FOLDERS = {"train": "Train", "test": "Test"}


def decode_events(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode N-MNIST 40-bit events into a structured array with fields x, y, t, p.

    The decoding is tonic's (``tonic.io.read_mnist_file``). Raises ValueError naming
    ``name`` if the length is not a multiple of 5 or a coordinate is outside 0..33.

    >>> ev = decode_events(bytes([3, 5, 0x81, 0x02, 0x03]))  # t = 1 << 16 | 2 << 8 | 3
    >>> ev["x"].tolist(), ev["y"].tolist(), ev["t"].tolist(), ev["p"].tolist()
    ([3], [5], [66051], [1])
    """
    if len(raw) % 5:
        raise UserError(f"{name}: length {len(raw)} bytes is not a multiple of 5 (40-bit events)")
    tonic = require_tonic("N-MNIST")
    events = tonic.io.read_mnist_file(io.BytesIO(raw), EVENT_DTYPE, is_stream=True)
    bad = (events["x"] >= SIZE) | (events["y"] >= SIZE)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{name}: event {i} has x={events['x'][i]}, y={events['y'][i]} outside "
                        "the 34x34 sensor")
    return events


def read_nmnist_bin(path: str | os.PathLike) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file; see :func:`decode_events`.

    An empty file is an error (ValueError): every N-MNIST recording has events,
    so 0 bytes means a corrupt or cut-off file, not a sample without events.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "00001.bin")
    >>> with open(p, "wb") as fh:
    ...     _ = fh.write(bytes([1, 2, 0x00, 0x03, 0xE8]))
    >>> read_nmnist_bin(p)["t"].tolist()
    [1000]
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw:
        raise UserError(f"{path}: {_EMPTY}")
    return decode_events(raw, path)


def events_to_frames(events: np.ndarray, num_steps: int = 300,
                     window_ms: float = 300.0) -> torch.Tensor:
    """Bin events of the window [0, window_ms) into ``num_steps`` binary frames.

    Returns uint8 [num_steps, 2312]; events of one pixel and polarity in one bin
    give a single 1, events at or after the window's end are dropped.

    >>> ev = decode_events(bytes([3, 5, 0x80, 0x03, 0xE8,  3, 5, 0x80, 0x03, 0xE9]))
    >>> f = events_to_frames(ev, num_steps=300)  # both events at t=1000, 1001 us -> bin 1
    >>> f.shape, int(f.sum()), int(f[1, 34 * 34 + 5 * 34 + 3])
    (torch.Size([300, 2312]), 1, 1)
    """
    num_steps = check_int("num_steps", num_steps)
    window_us = check_number("window_ms", window_ms, minimum=0, strict=True) * 1000.0
    t = events["t"]
    keep = t < window_us
    # float64 is exact here: t * num_steps < 2**53 for 23-bit timestamps.
    bins = np.floor(t[keep] * num_steps / window_us).astype(np.int64)
    p, y, x = (events[f][keep].astype(np.int64) for f in ("p", "y", "x"))
    feat = (p * SIZE + y) * SIZE + x
    frames = np.zeros((num_steps, NUM_FEATURES), dtype=np.uint8)
    frames[bins, feat] = 1  # repeated indices just set 1 again
    return torch.from_numpy(frames)


def _layout_help(root: str) -> str:
    return (
        f"put the original N-MNIST files as {root}/Train/0..9/*.bin and {root}/Test/0..9/*.bin "
        "(the unpacked Train.zip and Test.zip)"
    )


_EMPTY = "empty file (0 bytes): corrupt, as every N-MNIST recording has events"


def _bin_problem(path: str) -> str | None:
    """Why ``path`` cannot be an N-MNIST recording, from its ``os.stat`` alone; None if it may be."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot stat it ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file" + (" (a directory)" if stat.S_ISDIR(info.st_mode) else "")
    if info.st_size == 0:
        return _EMPTY
    if info.st_size % 5:
        return f"length {info.st_size} bytes is not a multiple of 5 (40-bit events): truncated"
    return None


def list_nmnist_files(root: str | os.PathLike, split: str) -> tuple[list[str], list[int]]:
    """Sorted ``.bin`` paths and their labels for split "train" (Train/) or "test" (Test/).

    Every file is checked with one ``os.stat`` (no reads, cheap for the 70,000
    files): a ``*.bin`` that is not a regular file, is empty or whose length is
    not a multiple of 5 bytes raises ValueError naming the first such file and
    how many there are. Bad event contents are only found when a file is read.

    >>> list_nmnist_files("/nonexistent", "test")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.DataNotFound: N-MNIST folder /nonexistent/Test/0 not found: put the original ...
    """
    if split not in SPLIT_FOLDERS:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    root = os.fspath(root)
    files, labels = [], []
    for digit in range(10):
        folder = os.path.join(root, SPLIT_FOLDERS[split], str(digit))
        if not os.path.isdir(folder):
            raise DataNotFound(f"N-MNIST folder {folder} not found: {_layout_help(root)}")
        found = sorted(glob.glob(os.path.join(folder, "*.bin")))
        files += found
        labels += [digit] * len(found)
    where = os.path.join(root, SPLIT_FOLDERS[split])
    if not files:
        raise DataNotFound(f"no .bin files under {where}: {_layout_help(root)}")
    bad = [(path, why) for path in files if (why := _bin_problem(path)) is not None]
    if bad:
        path, why = bad[0]
        raise UserError(
            f"{len(bad)} of {len(files)} N-MNIST .bin files under {where} are corrupt; "
            f"first: {path}: {why}. Replace them with fresh copies from the original zip"
        )
    return files, labels


class NMNIST(Dataset):
    """Lazy N-MNIST: files are listed at init and read and binned on access.

    Items are ``(spikes, label)``: spikes uint8 [num_steps, 2312] (0/1), time first, and label
    an int. A DataLoader with its default collate would stack them into [B, T, N], which a
    network reads as B time steps: batch with :func:`antlr_snn.data.event_loader` (or
    ``collate_fn=antlr_snn.data.time_major``) for the [T, B, N] the layers take.

    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for d in range(10):
    ...     os.makedirs(os.path.join(root, "Test", str(d)))
    >>> with open(os.path.join(root, "Test", "7", "00001.bin"), "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 0x80, 0, 5]))
    >>> ds = NMNIST(root, "test", num_steps=10)
    >>> spikes, label = ds[0]
    >>> len(ds), tuple(spikes.shape), label, int(spikes[0, 34 * 34])
    (1, (10, 2312), 7, 1)
    """

    def __init__(self, root: str | os.PathLike, split: str, num_steps: int = 300,
                 window_ms: float = 300.0):
        self.root = os.fspath(root)
        self.split = split
        self.num_steps = check_int("num_steps", num_steps)
        self.window_ms = check_number("window_ms", window_ms, minimum=0, strict=True)
        self.files, self.labels = list_nmnist_files(self.root, split)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        events = read_nmnist_bin(self.files[index])
        return events_to_frames(events, self.num_steps, self.window_ms), self.labels[index]
