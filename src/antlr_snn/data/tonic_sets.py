"""Event data sets read by tonic from files already on disk: ``load_dataset("tonic:NAME", ...)``.

tonic's own dataset classes read the files, with their download turned off: a data set whose
files are absent raises :class:`~antlr_snn.errors.DataNotFound`, one line saying which files to
put where. tonic's ``ToFrame(sensor_size, n_time_bins=num_steps)`` bins each recording; the
counts are clamped to 1 (several events of one pixel and polarity in one bin are one spike) and
flattened, feature index ``p * H * W + y * W + x``. Items are ``(spikes, label)``: spikes uint8
``[num_steps, P * H * W]``, time first (batch them with :func:`antlr_snn.data.event_loader`
into ``[T, B, N]``), label an int.

tonic's binning spans each recording's own duration: T bins of ``(t_last - t_first) // T``
microseconds from the first event; events after the last bin's end (at least the last event
when the duration divides by T) are dropped, and a recording shorter than T microseconds gives
empty frames. Events are sorted by time first where a file holds them out of order.

``data_dir`` is the folder that tonic would download into (``save_to``): the files sit in
``data_dir/NAME/`` (or directly in ``data_dir``):

============  =======  ==============================================================
NAME          classes  files (relative to ``data_dir/NAME``)
============  =======  ==============================================================
NMNIST        10       ``Train/0..9/*.bin``, ``Test/0..9/*.bin`` (same checks as "nmnist")
DVSGesture    11       ``ibmGestureTrain/userNN_LIGHTING/LABEL.npy``, ``ibmGestureTest/...``
SHD           20       ``shd_train.h5``, ``shd_test.h5``
SSC           35       ``ssc_train.h5``, ``ssc_valid.h5``, ``ssc_test.h5``
============  =======  ==============================================================

Splits: "test" is the test files; SSC has its own validation file; for the others "val" is the
last ``n // 6`` training samples of each class, in the order of the file paths (DVS Gesture:
so mostly the last users) or of the HDF5 file, and "train" the rest.
"""
from __future__ import annotations

import functools
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from antlr_snn.checks import check_int
from ._tonic import require_tonic
from .holdout import class_tail
from .nmnist import _bin_problem, list_nmnist_files
from antlr_snn.errors import DataNotFound, UserError, one_line

# name: (classes, {split: file or folder}, glob of the samples in a folder, what to put there)
SETS = {
    "NMNIST": (10, {"train": "Train", "test": "Test"}, "[0-9]/*.bin",
               "the original N-MNIST files as {d}/Train/0..9/*.bin and {d}/Test/0..9/*.bin "
               "(the unpacked Train.zip and Test.zip)"),
    "DVSGesture": (11, {"train": "ibmGestureTrain", "test": "ibmGestureTest"}, "*_*/*.npy",
                   "tonic's DVS Gesture files as {d}/ibmGestureTrain/userNN_LIGHTING/LABEL.npy "
                   "and {d}/ibmGestureTest/userNN_LIGHTING/LABEL.npy (the unpacked "
                   "ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz)"),
    "SHD": (20, {"train": "shd_train.h5", "test": "shd_test.h5"}, None,
            "{d}/shd_train.h5 and {d}/shd_test.h5 (unpacked from shd_train.h5.zip or .h5.gz "
            "and shd_test.h5.zip or .h5.gz)"),
    "SSC": (35, {"train": "ssc_train.h5", "val": "ssc_valid.h5", "test": "ssc_test.h5"}, None,
            "{d}/ssc_train.h5, {d}/ssc_valid.h5 and {d}/ssc_test.h5 (unpacked from "
            "ssc_*.h5.zip or .h5.gz)"),
}
TONIC_DATASETS = tuple(f"tonic:{name}" for name in SETS)
_CTOR = {"SSC": lambda split: {"split": {"val": "valid"}.get(split, split)}}


def _layout_help(name: str, data_dir: str) -> str:
    where = os.path.join(data_dir, name)
    return (f"put {SETS[name][3].format(d=where)}, or the same directly in {data_dir}; "
            "nothing is downloaded")


@functools.lru_cache(maxsize=None)
def _offline(name: str):
    """tonic's class ``name`` reading from a folder we name, its download replaced by an error."""
    base = getattr(require_tonic(f"tonic:{name}").datasets, name)

    class Offline(base):
        def __init__(self, root, present, missing, **kwargs):
            self._root, self._present, self._missing = root, present, missing
            super().__init__(root, **kwargs)

        # tonic puts the files in save_to/ClassName; ours are in _root as found
        location_on_system = property(lambda self: self._root, lambda self, value: None)

        def _check_exists(self):  # tonic's also wants the downloaded archive
            return self._present()

        def download(self):
            raise DataNotFound(self._missing)

    Offline.__name__ = Offline.__qualname__ = base.__name__
    return Offline


class TonicEvents(Dataset):
    """Split "train", "val" (SSC only) or "test" of tonic data set ``name`` from ``data_dir``.

    Files are listed at init (by tonic) and each recording is read and binned on access; a
    file that tonic cannot read, or an event outside the sensor, is a one-line
    :class:`~antlr_snn.errors.UserError` naming the file.

    >>> import os, tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "DVSGesture", "ibmGestureTest", "user24_led"))
    >>> ev = np.array([[3, 5, 1, 0], [3, 5, 1, 40], [7, 2, 0, 1000]])  # x, y, p, t in ms
    >>> np.save(os.path.join(root, "DVSGesture", "ibmGestureTest", "user24_led", "4.npy"), ev)
    >>> spikes, label = TonicEvents("DVSGesture", root, "test", num_steps=10)[0]
    >>> tuple(spikes.shape), label, int(spikes.sum()), int(spikes[0, 128 * 128 + 5 * 128 + 3])
    ((10, 32768), 4, 1, 1)
    """

    def __init__(self, name: str, data_dir: str | os.PathLike, split: str, num_steps: int):
        if name not in SETS:
            raise UserError(f"tonic data set {name!r} is not supported; choose one of "
                            f"{', '.join(SETS)}")
        require_tonic(f"tonic:{name}")
        self.name, self.split = name, split
        self.num_classes, files, self.pattern, _ = SETS[name]  # pattern None: one HDF5 file
        if split not in files:
            raise UserError(f"tonic:{name} has the splits {', '.join(files)}, not {split!r}")
        self.data_dir = os.fspath(data_dir)
        nested = os.path.join(self.data_dir, name)  # tonic's save_to/NAME
        direct = not os.path.isdir(nested) and any(
            os.path.exists(os.path.join(self.data_dir, f)) for f in files.values())
        self.root = self.data_dir if direct else nested
        self.where = os.path.join(self.root, files[split])
        self.num_steps = check_int("num_steps", num_steps)
        self._to_frame = None
        self._attach()
        if self.pattern:  # tonic lists in os.walk order: ours is sorted by path
            self.files = sorted(self._pos)
            self.labels = [int(self._tonic.targets[self._pos[f]]) for f in self.files]
        else:
            self.files, self.labels = None, self._h5_labels()
        bad = [y for y in self.labels if not 0 <= y < self.num_classes]
        if bad:
            raise UserError(f"tonic:{name}: {len(bad)} samples in {self.where} have labels "
                            f"outside 0..{self.num_classes - 1}, for example {bad[0]}")

    def _attach(self):
        self._tonic = self._open()
        if self.pattern:
            self._pos = {os.fspath(p): i for i, p in enumerate(self._tonic.data)}

    def _present(self) -> bool:
        if self.pattern is None:
            return os.path.isfile(self.where)
        return bool(glob.glob(os.path.join(glob.escape(self.where), self.pattern)))

    def _open(self):
        missing = (f"tonic:{self.name}: no samples in {self.where}: "
                   f"{_layout_help(self.name, self.data_dir)}")
        if self.name == "NMNIST" and self._present():
            list_nmnist_files(self.root, self.split)  # the "nmnist" checks of every file
        kwargs = _CTOR.get(self.name, lambda s: {"train": s == "train"})(self.split)
        cls = _offline(self.name)
        try:
            return cls(self.root, self._present, missing, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # tonic's listing choked on a file or folder there
            raise UserError(f"tonic:{self.name}: cannot read {self.where}: {one_line(exc)}") \
                from None

    def _h5_labels(self) -> list:
        import h5py  # a dependency of tonic
        try:
            with h5py.File(self.where, "r") as fh:
                return [int(t) for t in fh["labels"][()]]
        except Exception as exc:
            raise UserError(f"tonic:{self.name}: cannot read the labels of {self.where}: "
                            f"{one_line(exc)}") from None

    def __getstate__(self):  # tonic's instance is of a local class: rebuilt in a worker
        return {**self.__dict__, "_tonic": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # negative indices too; IndexError past the end
        if self._tonic is None:
            self._attach()
        if self.pattern:
            source = self.files[index]
            if self.name == "NMNIST" and (why := _bin_problem(source)) is not None:
                raise UserError(f"{source}: {why}")
            at = self._pos[source]
        else:
            source, at = f"{self.where} sample {index}", index
        try:
            events, _ = self._tonic[at]
        except Exception as exc:
            raise UserError(f"tonic:{self.name}: cannot read {source}: {one_line(exc)}") from None
        return self._frames(events, source), self.labels[index]

    def _frames(self, events: np.ndarray, source: str) -> torch.Tensor:
        width, height, polarities = self._tonic.sensor_size
        names = events.dtype.names
        for field, size in (("x", width), ("y", height), ("p", polarities)):
            if field not in names or (field == "p" and polarities == 1):
                continue  # tonic gives single-polarity sets one constant polarity
            bad = (events[field] < 0) | (events[field] >= size)
            if bad.any():
                i = int(np.argmax(bad))
                raise UserError(f"{source}: event {i} has {field}={events[field][i]} outside "
                                f"the {width}x{height}x{polarities} sensor")
        if len(events) > 1 and (np.diff(events["t"]) < 0).any():
            events = events[np.argsort(events["t"], kind="stable")]
        if self._to_frame is None:
            self._to_frame = require_tonic("tonic").transforms.ToFrame(
                sensor_size=self._tonic.sensor_size, n_time_bins=self.num_steps)
        counts = np.asarray(self._to_frame(events))
        spikes = np.minimum(counts, 1).astype(np.uint8).reshape(self.num_steps, -1)
        return torch.from_numpy(spikes)


def tonic_split(name: str, data_dir, split: str, num_steps: int):
    """Split "train", "val" or "test" of ``tonic:name`` (see the module docstring).

    >>> tonic_split("SHD", "/nonexistent", "test", 100)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.DataNotFound: tonic:SHD: no samples in /nonexistent/SHD/shd_test.h5: put ...
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if name not in SETS:
        raise UserError(f"tonic data set {name!r} is not supported; choose one of "
                        f"{', '.join(SETS)}")
    if data_dir is None:
        raise DataNotFound(f"tonic:{name} needs a data folder (--data-dir DIR): "
                           f"{_layout_help(name, 'DIR')}")
    if split == "test" or "val" in SETS[name][1]:
        return TonicEvents(name, data_dir, split, num_steps)
    data = TonicEvents(name, data_dir, "train", num_steps)
    return Subset(data, class_tail(data.labels, split))
