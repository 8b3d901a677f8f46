"""``--output-vstar-min``: the output layer's V* floor (Eq. 8) against the explicit kernel sums.

The flag must change the output layer's timing gradient dt/dV = -1/max(V*, floor) and leave the
hidden layers at their own floor (docs/reproduction.md, Fig. 8)."""
import numpy as np
import pytest
import torch

import reference as ref
from antlr_snn import training
from antlr_snn.errors import UserError
from antlr_snn.experiments import train as train_cli


def _net(floor, seed=3):
    cfg = training.TrainConfig(method="antlr", hidden=[6], output_vstar_min=floor)
    torch.manual_seed(seed)
    net = training.build_network(cfg, 5).double()
    with torch.no_grad():
        for layer in net.layers:  # strong weights: several spikes per neuron, some grazing
            layer.weight.mul_(3.0).add_(0.5)
            layer.bias.uniform_(-0.05, 0.05)
    return net


def _explicit(net, x, out, rs, rd):
    """Eq. 6-10 by explicit sums, layer by layer, each layer with its own parameters."""
    layers = list(net.layers)
    w, b = [np.zeros(tuple(l.weight.shape)) for l in layers], [np.zeros(l.bias.shape[0]) for l in layers]
    for n in range(x.shape[1]):
        gS, gT = rs[:, n].numpy(), (rd[:, n] * out.spikes[:, n].detach()).numpy()
        for i in (1, 0):
            pre = x[:, n] if i == 0 else out.layers[0].spikes[:, n]
            lo = out.layers[i]
            wg, bg, (gS, gT) = ref.explicit_backward(
                pre.detach().numpy(), [layers[i].weight.detach().numpy()],
                [layers[i].bias.detach().numpy()], [lo.spikes[:, n].detach().numpy()],
                [lo.voltage[:, n].detach().numpy()], gS, gT, layers[i].params, [(1.0, 1.0)])
            w[i] += wg[0]
            b[i] += bg[0]
    return [torch.from_numpy(a) for pair in zip(w, b) for a in pair]


@pytest.mark.parametrize("floor", [None, 0.3])
def test_output_floor_in_the_gradient(floor):
    net = _net(floor)
    assert net.layers[0].params.vstar_min == pytest.approx(1e-2)  # hidden: the default
    assert net.layers[1].params.vstar_min == pytest.approx(1e-2 if floor is None else floor)
    x = torch.bernoulli(torch.full((30, 2, 5), 0.4), generator=torch.Generator().manual_seed(4))
    out = net(x.double())
    g = torch.Generator().manual_seed(5)
    rs = torch.randn(out.spikes.shape, generator=g, dtype=torch.float64)
    rd = torch.randn(out.shift.shape, generator=g, dtype=torch.float64)
    ((rs * out.spikes).sum() + (rd * out.shift).sum()).backward()
    ours = [t.grad for l in net.layers for t in (l.weight, l.bias)]
    theirs = _explicit(net, x.double(), out, rs, rd)
    for o, t in zip(ours, theirs):
        assert ((o - t).norm() / t.norm()).item() <= 1e-9
    # the floor matters here: some output spikes have V* between 1e-2 and 0.3
    vs = ref.vstar(out.spikes[:, 0].detach().numpy(), out.voltage[:, 0].detach().numpy(),
                   net.layers[1].params)[out.spikes[:, 0].detach().numpy() > 0]
    raw = ref.vstar(out.spikes[:, 0].detach().numpy(), out.voltage[:, 0].detach().numpy(),
                    type("P", (), {"vstar_min": -np.inf})())[out.spikes[:, 0].detach().numpy() > 0]
    assert ((raw > 1e-2) & (raw < 0.3)).any()
    if floor is not None:
        assert (vs >= 0.3).all()


def test_floor_changes_the_output_gradient_only_through_output_spikes():
    a, b = _net(None), _net(0.3)
    x = torch.bernoulli(torch.full((30, 2, 5), 0.4), generator=torch.Generator().manual_seed(4))
    grads = []
    for net in (a, b):
        out = net(x.double())
        assert out.spikes.sum() > 0
        out.shift.sum().backward()  # dL/dt = 1 at every output spike
        grads.append(net.layers[1].weight.grad.clone())
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() > 0.05


def test_conv_network_floor_is_on_the_last_layer():
    cfg = training.TrainConfig(arch="conv", dataset="nmnist-sim", hidden=[], output_vstar_min=0.2,
                               channels=[2, 3])
    spec = training.architecture(cfg, 2312)
    floors = [s["neuron"]["vstar_min"] for s in spec if "neuron" in s]
    assert floors == [pytest.approx(1e-2)] * 2 + [pytest.approx(0.2)]


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_floor_is_a_user_error(bad):
    with pytest.raises(UserError, match="--output-vstar-min"):
        train_cli._validated({"output_vstar_min": bad})
    with pytest.raises(UserError, match="output_vstar_min"):
        train_cli.check_saved_config({"output_vstar_min": bad}, "run/config.json")
