"""Event batches are time-major [T, B, N]: items [T, N] are stacked on dim 1, not dim 0."""
import pytest
import torch

from antlr_snn.data import event_loader, load_dataset, time_major
from antlr_snn.data.splits import Split
from antlr_snn.errors import UserError


def items(n=3, steps=5, features=4):
    gen = torch.Generator().manual_seed(1)
    return [(torch.bernoulli(torch.full((steps, features), 0.5), generator=gen).to(torch.uint8),
             b + 2) for b in range(n)]


def test_time_major_puts_time_first():
    batch = items(n=3, steps=5, features=4)
    x, y = time_major(batch)
    assert x.shape == (5, 3, 4) and x.dtype == torch.float32 and y.tolist() == [2, 3, 4]
    for b, (s, _) in enumerate(batch):
        for t in range(5):
            assert torch.equal(x[t, b], s[t].float())


@pytest.mark.parametrize("bad, message", [
    ([(torch.zeros(4), 0)], r"event item 0 has shape \(4,\); event items must be spikes \[T, N\]"),
    ([(torch.zeros(5, 4), 0), (torch.zeros(6, 4), 1)],
     r"event item 1 has shape \(6, 4\) but item 0 has \(5, 4\)"),
    ([(torch.zeros(2, 5, 4), 0)], r"event item 0 has shape \(2, 5, 4\)"),
    ([], "no items"),
])
def test_time_major_rejects_other_layouts(bad, message):
    with pytest.raises(UserError, match=message):
        time_major(bad)


def test_time_major_checks_num_steps():
    with pytest.raises(UserError, match="event item 0 has 5 time steps, expected num_steps=7"):
        time_major(items(steps=5), num_steps=7)
    assert time_major(items(steps=7), num_steps=7)[0].shape[0] == 7


def test_event_loader_batches_are_time_major():
    data = load_dataset("nmnist-sim", "val", num_steps=12)
    x, y = next(iter(event_loader(data, batch_size=3, num_steps=12)))
    assert x.shape == (12, 3, 2312) and y.tolist() == [data[i][1] for i in range(3)]
    assert torch.equal(x[:, 1], data[1][0].float())
    # the silent trap that this avoids: the default collate gives [B, T, N]
    default = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))[0]
    assert default.shape == (3, 12, 2312)


def test_event_loader_arguments():
    data = [(torch.zeros(3, 2), 0)] * 4
    with pytest.raises(UserError, match="sets collate_fn itself"):
        event_loader(data, 2, collate_fn=lambda b: b)
    with pytest.raises(UserError, match="batch_size must be an integer >= 1, got 0"):
        event_loader(data, 0)
    with pytest.raises(UserError, match="expected num_steps=4"):
        next(iter(event_loader(data, 2, num_steps=4)))


def test_trainer_split_uses_the_same_layout():
    batch = items(n=4, steps=6, features=3)
    split = Split(batch, num_steps=6)
    x, y = next(split.batches([torch.tensor([2, 0])]))
    assert x.shape == (6, 2, 3) and y.tolist() == [4, 2]
    assert torch.equal(x[:, 0], batch[2][0].float()) and torch.equal(x[:, 1], batch[0][0].float())
    assert split.num_classes == 10 and split.features == 3
