"""The spike-budget regulariser (losses.spike_budget_loss): value, gradient, channel, trainer."""
from __future__ import annotations

import pytest
import torch

from antlr_snn import SpikingNetwork, decode, losses
from antlr_snn.layers import SpikeOutput
from antlr_snn.training import TrainConfig, regularisers, task_loss

W, BUDGET = 0.37, 2.5  # not the defaults (1, 0)


def synthetic(T=6, B=3, sizes=(5, 4), binary=False, seed=0):
    """A two-layer network output with free-standing spikes (leaves that require grad)."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for n in sizes:
        s = torch.rand(T, B, n, generator=g, dtype=torch.float64)
        scale = torch.arange(1, B + 1, dtype=torch.float64).reshape(1, B, 1) / B
        s = (s < 0.3).double() if binary else s * 0.4 * scale  # samples of unlike counts
        s.requires_grad_(True)
        d = torch.zeros_like(s, requires_grad=True)
        layers.append(SpikeOutput(s, d, torch.zeros_like(s), method="antlr"))
    last = layers[-1]
    return SpikeOutput(last.spikes, last.shift, last.voltage, tuple(layers), "antlr")


def first_output_step(S):
    """Earliest output spike step per sample, T - 1 if silent (explicit loops)."""
    T, B, N = S.shape
    steps = []
    for b in range(B):
        hit = [t for t in range(T) if any(S[t, b, j] > 0 for j in range(N))]
        steps.append(hit[0] if hit else T - 1)
    return steps


def reference(out, weight, budget, decision):
    """The loss and dL/dS of every layer from the definition, sample by sample."""
    T, B = out.spikes.shape[:2]
    upto = first_output_step(out.spikes.detach()) if decision == "earliest_spike" else [T - 1] * B
    counts = [sum(float(l.spikes.detach()[:upto[b] + 1, b].sum()) for l in out.layers)
              for b in range(B)]
    value = weight * sum(max(0.0, c - budget) for c in counts) / B
    grads = []
    for l in out.layers:
        g = torch.zeros_like(l.spikes)
        for b in range(B):
            if counts[b] > budget:
                g[:upto[b] + 1, b] = weight / B
        grads.append(g)
    return value, grads


def test_value_and_gradient_against_finite_differences():
    out, budget = synthetic(), 5.5
    loss = losses.spike_budget_loss(out, W, budget)
    grads = torch.autograd.grad(loss, [l.spikes for l in out.layers])
    value, ref = reference(out, W, budget, None)
    assert loss.item() == pytest.approx(value, rel=1e-12)
    # some samples are over the budget and some under, or the test would not see the hinge
    counts = sum(l.spikes.detach().sum(dim=(0, 2)) for l in out.layers)
    assert (counts > budget).any() and (counts < budget).any(), counts
    h = 1e-6
    for k, layer in enumerate(out.layers):
        assert torch.allclose(grads[k], ref[k], rtol=0, atol=1e-15)
        fd = torch.zeros_like(layer.spikes)
        flat = layer.spikes.detach().view(-1)
        for i in range(flat.numel()):
            vals = []
            for step in (h, -h):
                flat[i] += step
                vals.append(losses.spike_budget_loss(out, W, budget).item())
                flat[i] -= step
            fd.view(-1)[i] = (vals[0] - vals[1]) / (2 * h)
        assert torch.allclose(fd, grads[k], rtol=0, atol=1e-8), k


def with_a_silent_sample() -> SpikeOutput:
    out = synthetic(binary=True, T=8, seed=3)
    out.layers[-1].spikes.detach()[:, 1] = 0  # sample 1's output is silent: every step counts
    return out


def test_counts_up_to_the_decision():
    out = with_a_silent_sample()
    loss = losses.spike_budget_loss(out, W, 1.0, decision="earliest_spike")
    grads = torch.autograd.grad(loss, [l.spikes for l in out.layers])
    value, ref = reference(out, W, 1.0, "earliest_spike")
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert any(g.sum() > 0 for g in ref) and first_output_step(out.spikes)[1] == 7
    for g, r in zip(grads, ref):
        assert torch.equal(g, r)
    # the whole window differs from the decision's part here (late spikes exist)
    total = losses.spike_budget_loss(out, W, 1.0, decision="most_spikes")
    assert total.item() == pytest.approx(reference(out, W, 1.0, None)[0]) and total > loss


def test_only_the_activation_channel_of_a_real_network():
    torch.manual_seed(0)
    x = (torch.rand(40, 6, 12) < 0.3).double()
    kw = dict(method="antlr", lambda_tim=1.7, threshold=0.6, surrogate_width=2.0)
    nets = [SpikingNetwork([12, 9, 4], lambda_act=lam, **kw).double() for lam in (0.6, 1.5)]
    nets[1].load_state_dict({k: v for k, v in nets[0].state_dict().items()
                             if not k.endswith("_extra_state")}, strict=False)
    out = nets[0](x)
    assert all(l.spikes.detach().sum() > 0 for l in out.layers), "a silent layer tests nothing"
    loss = losses.spike_budget_loss(out, W, BUDGET, decision="earliest_spike")
    params = list(nets[0].parameters())
    direct = torch.autograd.grad(loss, params, retain_graph=True)
    _, ref = reference(out, W, BUDGET, "earliest_spike")
    seeded = torch.autograd.grad([l.spikes for l in out.layers], params, ref, retain_graph=True)
    for a, b in zip(direct, seeded):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    assert any(g.abs().sum() > 0 for g in direct)
    # the term itself has no timing gradient: the output's dL/dt is zero (a hidden layer's
    # dL/dt is not: under ANTLR the output layer passes Eq. 10 down)
    shift = torch.autograd.grad(loss, out.layers[-1].shift, allow_unused=True)[0]
    assert shift is None or not shift.any()
    # at the output layer dL/dV = lambda_act sigma(V) dL/dS: its weight gradient scales
    out2 = nets[1](x)
    assert torch.equal(out2.spikes, out.spikes)
    loss2 = losses.spike_budget_loss(out2, W, BUDGET, decision="earliest_spike")
    g2 = torch.autograd.grad(loss2, nets[1].layers[-1].weight)[0]
    g1 = direct[[p is nets[0].layers[-1].weight for p in params].index(True)]
    assert g1.abs().sum() > 0
    assert torch.allclose(g2, g1 * (1.5 / 0.6), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method, kw", [("timing", {}), ("antlr", {"lambda_act": 0.0})])
def test_refused_where_the_activation_channel_is_dropped(method, kw):
    net = SpikingNetwork([12, 9, 4], method=method, **kw)
    out = net((torch.rand(20, 3, 12) < 0.3).float())
    with pytest.raises(ValueError, match="spike_budget_loss has only an activation gradient"):
        losses.spike_budget_loss(out)
    with torch.no_grad():  # only its value: nothing to refuse
        assert losses.spike_budget_loss(net((torch.rand(20, 3, 12) < 0.3).float())) >= 0


@pytest.mark.parametrize("bad, match", [({"weight": -1.0}, "weight must be"),
                                        ({"budget": float("nan")}, "budget must be"),
                                        ({"decision": "latest"}, "decision must be")])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        losses.spike_budget_loss(synthetic(), **bad)


def test_the_trainer_adds_it_on_the_spikes_to_the_decision():
    torch.manual_seed(1)
    budget = 5.5
    cfg = TrainConfig(method="antlr", hidden=[9], num_steps=40, spike_reg=W, spike_budget=budget)
    net = SpikingNetwork([12, 9, 10], method="antlr", threshold=0.3)
    x, y = (torch.rand(40, 5, 12) < 0.3).float(), torch.arange(5)
    counts = decode.spike_counts(net(x), "earliest_spike")  # a case that tells them apart:
    assert (counts["to_decision"] < budget).any() and (counts["to_decision"] > budget).any()
    assert (counts["total"] > budget).all()

    def grads(with_reg):
        net.zero_grad()
        out = net(x)
        total = task_loss(out, y, cfg)
        if with_reg:
            total = total + regularisers(net, out, cfg)
        else:
            total = total + losses.spike_budget_loss(out, W, budget, "earliest_spike")
        total.backward()
        return [p.grad.clone() for p in net.parameters()]
    for a, b in zip(grads(True), grads(False)):
        assert torch.equal(a, b)
    off = TrainConfig(method="antlr", hidden=[9], num_steps=40)
    assert regularisers(net, net(x), off) == 0.0
