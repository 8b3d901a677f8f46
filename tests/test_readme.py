"""The README's library example runs as written."""
import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(one_thread):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python example"
    ns, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), ns)
    assert out.getvalue().strip()                     # it prints its figures
    assert torch.isfinite(ns["loss"]) and ns["out"].spikes.shape == (100, 16, 10)
    assert ns["pred"].shape == (16,) and set(ns["pred"].tolist()) <= set(range(-1, 10))
    total, to_decision = ns["counts"]["total"], ns["counts"]["to_decision"]
    assert (to_decision <= total).all() and (total > 0).all()
    # every parameter got a gradient from the one training step
    assert all(p.grad is not None for p in ns["net"].parameters())


def test_readme_conv_example_builds_a_network_that_runs(one_thread):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    ns = {}
    exec(compile(blocks[1], "README.md", "exec"), ns)
    out = ns["net"](torch.bernoulli(torch.full((20, 3, 2312), 0.05)))
    assert out.spikes.shape == (20, 3, 10) and len(out.layers) == 3
    out.spikes.sum().backward()  # the activation channel reaches the convolution
    assert ns["net"].layers[1].weight.grad is not None
