"""Exported graphs in a real client (snnTorch 1.0.0's ``import_from_nir``) and the
``antlr-snn export`` command.

snnTorch refuses a CubaLIF with ``v_leak`` != 0 (our V_bias), so its networks here have
V_bias 0; the bias itself is checked against NIR's equations in tests/test_nir.py.
"""
from __future__ import annotations

import json

import pytest
import torch

import nir_reference as ref
from antlr_snn import LIFLayer, SpikingNetwork, decode, encode, losses
from antlr_snn import nir as antlr_nir
from antlr_snn.checkpoints import network_from_checkpoint
from antlr_snn.cli import main
from antlr_snn.files import save_checkpoint
from antlr_snn.training import TrainConfig, model_metadata
from test_nir import foreign_graph, spikes_in

pytestmark = pytest.mark.usefixtures("one_thread")


# measured for the `trained` network below (200 test digits, T = 40), this machine
ACC_OURS, ACC_SNNTORCH, SAME_CLASS, SPIKE_RATIO = 0.765, 0.755, 0.800, 6.6


def first_steps(S):
    return torch.where(S.amax(0) > 0, S.argmax(0), torch.full_like(S[0], S.shape[0]).long())


def test_snntorch_fires_first_spikes_exactly_as_we_do():
    """Before a neuron's first spike the reset cannot matter: one layer's first spike steps
    agree exactly (float64); afterwards snnTorch keeps I and fires more."""
    torch.manual_seed(5)
    layer = LIFLayer(30, 12, dtype=torch.float64, alpha_v=0.93, alpha_i=0.85, beta_i=1.4,
                     beta_v=0.3, threshold=0.6)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    x = spikes_in((8, 30), T=60, p=0.2, dtype=torch.float64)
    with torch.no_grad():
        ours = layer(x).spikes
    theirs = ref.run_snntorch(antlr_nir.export(layer, reset="v_only"), x, torch.float64)
    assert (ours.sum(0) > 0).float().mean() > 0.5 and ours.sum(0).max() >= 2
    assert torch.equal(first_steps(theirs), first_steps(ours))
    assert theirs.sum() > ours.sum()


def test_snntorch_is_the_nir_reference():
    """A two-layer graph in snnTorch (float32: its spikes always are) runs as NIR's equations
    with V-only reset (float64) do, but for rare rounding at the threshold."""
    torch.manual_seed(6)
    net = SpikingNetwork([20, 15, 6], alpha_v=0.9, alpha_i=0.8, threshold=0.7)
    with torch.no_grad():
        for layer in net.spiking_layers:
            layer.weight.mul_(4.0)
    graph = antlr_nir.export(net, reset="v_only")
    x = spikes_in((6, 20), T=50, p=0.2)
    theirs, nir_eqs = ref.run_snntorch(graph, x), ref.run(graph, x, antlr_nir.DEFAULT_DT)
    with torch.no_grad():
        ours = net(x).spikes
    assert theirs.sum() > 2 * ours.sum() > 0
    assert (theirs == nir_eqs.float()).double().mean() > 0.999


def test_snntorch_refuses_our_v_bias():
    """The limitation docs/nir.md states: snnTorch 1.0.0 asserts v_leak == 0."""
    net = SpikingNetwork([4, 3])
    with torch.no_grad():
        net.layers[0].bias.fill_(0.1)
    with pytest.raises(AssertionError, match="v_leak"):
        ref.run_snntorch(antlr_nir.export(net, reset="v_only"), torch.zeros(2, 1, 4))


def test_foreign_graph_first_spikes_as_in_snntorch():
    """snnTorch's own gains (r = tau_mem / dt, w_in = tau_syn / dt) and its Affine bias. (Before
    the first spike V is symmetric in the two decays; tests/test_nir.py checks them apart.)"""
    graph = foreign_graph(sizes=(8, 6), alphas=((0.8, 0.9),), thresholds=(10.0,))
    net = antlr_nir.load(graph, dt=1e-4, reset="v_only").double()
    x = spikes_in((6, 8), T=60, p=0.1, dtype=torch.float64)
    with torch.no_grad():
        ours = net(x).spikes
    assert (ours.sum(0) > 0).double().mean() > 0.5 and ours.sum(0).max() >= 2
    assert torch.equal(first_steps(ref.run_snntorch(graph, x, torch.float64)), first_steps(ours))


@pytest.fixture(scope="module")
def trained():
    """784-40-10 trained for 60 steps on embedded MNIST digits, V_bias fixed at 0."""
    from antlr_snn.data import load_dataset
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    xs, ys = map(torch.as_tensor, load_dataset("mnist", "train", seed=0))
    xt, yt = map(torch.as_tensor, load_dataset("mnist", "test", seed=0))
    net = SpikingNetwork([784, 40, 10], alpha_v=0.95, alpha_i=0.9, threshold=0.8)
    for layer in net.spiking_layers:
        layer.bias.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    for step in range(60):
        idx = torch.arange(step * 32, step * 32 + 32)
        out = net(encode.latency(xs[idx], 40, 24))
        loss = losses.latency_loss(out, ys[idx]) + losses.at_least_one_spike_loss(out, ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return net, encode.latency(xt[:200], 40, 24), yt[:200]


def test_trained_network_in_snntorch(trained):
    """The figures measured for this network (docs/nir.md has the larger run), with margins."""
    net, x, y = trained
    with torch.no_grad():
        ours = net(x).spikes
    theirs = ref.run_snntorch(antlr_nir.export(net, reset="v_only"), x)
    acc = lambda S: (decode.earliest_spike(S) == y).double().mean().item()  # noqa: E731
    same = (decode.earliest_spike(theirs) == decode.earliest_spike(ours)).double().mean().item()
    print(f"ours {acc(ours):.3f}, snnTorch {acc(theirs):.3f}, same class {same:.3f}, "
          f"output spikes {ours.sum().item() / 200:.2f} vs {theirs.sum().item() / 200:.2f}")
    assert acc(ours) == pytest.approx(ACC_OURS, abs=0.04)
    assert acc(theirs) == pytest.approx(ACC_SNNTORCH, abs=0.04)
    assert same == pytest.approx(SAME_CLASS, abs=0.04)
    assert theirs.sum() / ours.sum() == pytest.approx(SPIKE_RATIO, rel=0.15)


# ----------------------------------------------------------------------------- the command

@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(7)
    net = SpikingNetwork([784, 16, 10], alpha_v=0.9, alpha_i=0.95, threshold=0.5)
    with torch.no_grad():
        net.layers[0].bias.uniform_(-0.2, 0.2)
    path = tmp_path / "best.pt"
    save_checkpoint(str(path), {**model_metadata(net, TrainConfig()),
                                "state_dict": net.state_dict()})
    return path


def test_export_command_writes_a_graph_that_loads_back(checkpoint, tmp_path, capsys):
    out = tmp_path / "net.nir"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--dt", "1e-3"]) == 0
    cap = capsys.readouterr()
    assert "warning: NIR's CubaLIF resets only V" in cap.err and "--reset v_only" in cap.err
    assert len(cap.err.strip().splitlines()) == 1
    report = json.loads(cap.out)
    assert report["network"] == "784-16-10" and report["dt"] == 1e-3
    net = network_from_checkpoint(torch.load(checkpoint, weights_only=True), use="model")
    back = antlr_nir.load(str(out))
    x = encode.latency(torch.rand(4, 784), 60)
    assert torch.equal(back(x).spikes, net(x).spikes)
    assert back.layers[0].params == net.layers[0].params
    assert float(antlr_nir.read(str(out)).metadata["antlr_snn"]["dt"]) == 1e-3
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--reset", "v_only"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flags, needles", [
    (["--reset", "error"], ["refused"]),
    (["--dt", "0"], ["--dt must be"]),
    (["--dt", "nan"], ["--dt must be"]),
    (["--out", "{tmp}/missing/net.nir"], ["does not exist"]),
    (["--out", "{tmp}"], ["is a folder"]),
    (["--checkpoint", "{tmp}/none.pt"], ["none.pt not found"]),
    (["--checkpoint", "{tmp}/junk.pt"], ["junk.pt is not an antlr-snn checkpoint"]),
])
def test_export_command_errors_are_one_line(checkpoint, tmp_path, capsys, flags, needles):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    args = {"--checkpoint": str(checkpoint), "--out": str(tmp_path / "net.nir")}
    for k, v in zip(flags[::2], flags[1::2]):
        args[k] = v.replace("{tmp}", str(tmp_path))
    code = main(["export", *[a for kv in args.items() for a in kv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("antlr-snn export: error: ")
    for needle in needles:
        assert needle in err[0], err[0]
    assert not (tmp_path / "net.nir").exists()
