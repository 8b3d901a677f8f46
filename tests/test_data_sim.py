"""nmnist-sim: the simulated saccading event camera."""
import re

import numpy as np
import pytest
import torch

from antlr_snn.data import load_dataset
from antlr_snn.data.nmnist import events_to_frames
from antlr_snn.data.nmnist_sim import (VERTICES, SimulatedNMNIST, place_digit, render_frames,
                                       saccade_offsets, simulate_events)

N = 1156  # 34 * 34 pixels per polarity


@pytest.fixture(scope="module")
def ds():
    return SimulatedNMNIST("test", seed=0)


@pytest.fixture(scope="module")
def batch(ds):
    return torch.stack([ds[i][0] for i in range(20)]).long()  # [20, 300, 2312]


def test_shape_dtype_binary(ds, batch):
    spikes, label = ds[0]
    assert len(ds) == 500 and isinstance(label, int) and 0 <= label <= 9
    assert spikes.shape == (300, 2312) and spikes.dtype == torch.uint8
    assert set(torch.unique(batch).tolist()) == {0, 1}
    assert torch.equal(spikes, events_to_frames(ds.events(0)))
    assert ds[-1][1] == ds.labels[499]
    with pytest.raises(IndexError):
        ds[500]


def test_both_polarities_roughly_balanced(batch):
    on, off = batch[:, :, N:].sum((1, 2)).float(), batch[:, :, :N].sum((1, 2)).float()
    assert (on > 500).all() and (off > 500).all()
    assert ((on / off - 1).abs() < 0.1).all()  # the path returns to its start


def test_activity_in_every_saccade_and_during_motion(batch):
    per_ms = batch.sum((0, 2)).float()  # [300]
    saccades = per_ms.view(3, 100)
    assert (saccades.sum(1) > 0.2 * per_ms.sum()).all()
    # Raised-cosine speed: about 71 % of the displacement in the middle half of each saccade.
    middle = saccades[:, 25:75].sum() / per_ms.sum()
    assert 0.62 < float(middle) < 0.85
    # Nearly still in the first and last ms of each saccade (about 2 % of the peak rate).
    edges = saccades[:, [0, 99]].mean()
    assert float(edges) < 0.05 * float(saccades[:, 45:55].mean())


def test_polarity_follows_brightness_change():
    rng = np.random.default_rng(3)
    image = np.zeros((28, 28))
    image[8:20, 10:16] = 1.0  # bright bar
    ev = simulate_events(image, rng, threshold=0.25)
    first = ev[ev["t"] < 100_000]  # saccade 1 moves by (+2, +4)
    net = np.zeros((34, 34))
    np.add.at(net, (first["y"], first["x"]), np.where(first["p"] == 1, 1, -1))
    frames = render_frames(place_digit(image), saccade_offsets(np.array([0.0, 100.0])))
    change = np.log(frames[1] + 0.1) - np.log(frames[0] + 0.1)
    brighter, darker = change > 0.5, change < -0.5
    assert brighter.sum() > 10 and darker.sum() > 10
    assert (net[brighter] > 0).all() and (net[darker] < 0).all()
    assert (net[change == 0] == 0).all()  # no change, no events (no noise model)


def test_saccade_path():
    off = saccade_offsets(np.array([0.0, 100.0, 200.0, 300.0]))
    np.testing.assert_allclose(off, np.vstack([VERTICES, VERTICES[:1]]))
    assert np.abs(VERTICES).max() <= 3  # digit stays inside the 34x34 field


def test_render_exact():
    canvas = np.zeros((34, 34))
    canvas[10, 10] = 1.0
    frames = render_frames(canvas, np.array([[0.0, 0.0], [2.0, -1.0], [0.5, 0.0]]))
    assert np.array_equal(frames[0], canvas)
    assert frames[1, 9, 12] == 1.0 and frames[1].sum() == 1.0
    assert frames[2, 10, 10] == 0.5 and frames[2, 10, 11] == 0.5


def test_deterministic_given_seed(batch):
    again = SimulatedNMNIST("test", seed=0)
    assert torch.equal(again[0][0].long(), batch[0]) and torch.equal(again[19][0].long(), batch[19])
    other = SimulatedNMNIST("test", seed=1)
    assert not torch.equal(other[0][0].long(), batch[0])


def test_num_steps_and_dispatch():
    ds = load_dataset("nmnist-sim", "val", num_steps=30)
    spikes, _ = ds[0]
    assert len(ds) == 500 and spikes.shape == (30, 2312)
    assert torch.equal(spikes, events_to_frames(ds.events(0), num_steps=30))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, "num_steps must be an integer >= 1, got 0"),
    ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
    ({"window_ms": 0}, "window_ms must be a finite number > 0, got 0"),
    ({"window_ms": float("nan")}, "window_ms must be a finite number > 0, got nan"),
    ({"threshold": 0}, "threshold must be a finite number > 0, got 0"),
    ({"threshold": -0.25}, "threshold must be a finite number > 0, got -0.25"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
])
def test_parameters_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SimulatedNMNIST("val", **kwargs)
    if set(kwargs) <= {"num_steps", "seed"}:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_dataset("nmnist-sim", "val", **kwargs)
    if "threshold" in kwargs:
        with pytest.raises(ValueError, match=re.escape(message)):
            simulate_events(np.ones((28, 28)), np.random.default_rng(0), **kwargs)
