"""Each loss yields the activation and timing gradients of Table 1 (and Sec. 4.2 / 4 terms)."""
import math

import numpy as np
import pytest
import torch

from antlr_snn import SpikeOutput, SpikingNetwork, losses


def leaf_output(T=12, B=3, N=4, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.bernoulli(torch.full((T, B, N), p, dtype=torch.float64), generator=g).requires_grad_()
    d = torch.zeros(T, B, N, dtype=torch.float64, requires_grad=True)
    V = torch.zeros(T, B, N, dtype=torch.float64)
    return SpikeOutput(S, d, V)


def test_count_loss_value_and_gradient():
    out = leaf_output()
    n = torch.tensor([[1.0, 0, 2, 0]] * 3, dtype=torch.float64)
    loss = losses.count_loss(out, n)
    T, B = 12, 3
    err = out.spikes.detach().sum(0) - n
    assert loss.item() == pytest.approx((err ** 2).sum().item() / T / B)
    loss.backward()
    expected = (2 * err / T / B).unsqueeze(0).expand(T, -1, -1)
    torch.testing.assert_close(out.spikes.grad, expected)
    assert out.shift.grad is None or out.shift.grad.abs().sum() == 0  # no timing gradient


@pytest.mark.parametrize("tau", [2.0, 5.0])
def test_spike_train_loss_gradients_match_table1(tau):
    out = leaf_output(T=15, B=2, N=3, seed=1)
    g = torch.Generator().manual_seed(9)
    target = torch.bernoulli(torch.full((15, 2, 3), 0.2, dtype=torch.float64), generator=g)
    loss = losses.spike_train_loss(out, target, tau=tau, kappa_derivative="backward")
    loss.backward()
    T, B = 15, 2
    S = out.spikes.detach().numpy()
    kappa = np.exp(-np.arange(T) / tau)
    kstar = kappa - np.concatenate([[0.0], kappa[:-1]])
    filt = lambda s: np.array([[sum(kappa[t - u] * s[u] for u in range(t + 1)) for t in range(T)]])[0]
    L = 0.0
    for b in range(B):
        for o in range(3):
            d = filt(S[:, b, o]) - filt(target[:, b, o].numpy())
            L += (d ** 2).sum() / B
            for t in range(T):
                gS = 2 * sum(kappa[tau_ - t] * d[tau_] for tau_ in range(t, T)) / B
                assert out.spikes.grad[t, b, o].item() == pytest.approx(gS, rel=1e-10, abs=1e-12)
                gT = -2 * sum(kstar[tau_ - t] * d[tau_] for tau_ in range(t, T)) / B
                if S[t, b, o] == 1:  # dL/dt at each output spike
                    assert out.shift.grad[t, b, o].item() == pytest.approx(gT, rel=1e-10, abs=1e-12)
    assert loss.item() == pytest.approx(L, rel=1e-12)


def test_spike_train_loss_continuous_timing_gradient():
    """Default dL/dt: exact derivative of the continuous van Rossum distance."""
    T, tau = 40, 5.0
    S = torch.zeros(T, 3, 2, dtype=torch.float64)
    tgt = torch.zeros_like(S)
    S[10, 0, 0] = 1; tgt[20, 0, 0] = 1      # 10 steps early
    S[30, 1, 0] = 1; tgt[20, 1, 0] = 1      # 10 steps late
    S[15, 2, 1] = 1                          # isolated spike, no target
    S[5, 0, 1] = S[8, 0, 1] = 1; tgt[6, 0, 1] = 1  # two spikes around one target
    S.requires_grad_()
    d = torch.zeros_like(S, requires_grad=True)
    out = SpikeOutput(S, d, torch.zeros_like(S))
    loss = losses.spike_train_loss(out, tgt, tau=tau)
    loss.backward()
    B = 3
    e = lambda dt: math.exp(-abs(dt) / tau)
    assert d.grad[10, 0, 0].item() == pytest.approx(-e(10) / B)   # move later
    assert d.grad[30, 1, 0].item() == pytest.approx(+e(10) / B)   # move earlier
    assert d.grad[15, 2, 1].item() == pytest.approx(0.0, abs=1e-15)
    # spike at 5: pushed away from the spike at 8 (earlier) and pulled to the target at 6 (later)
    assert d.grad[5, 0, 1].item() == pytest.approx((-(-1) * e(3) - (-1) * (-1) * e(1)) / B)
    assert d.grad[8, 0, 1].item() == pytest.approx((-(+1) * e(3) - (-1) * (+1) * e(2)) / B)
    # the value and dL/dS do not depend on the choice of derivative
    out2 = leaf_like(S.detach())
    loss2 = losses.spike_train_loss(out2, tgt, tau=tau, kappa_derivative="central")
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(out2.spikes.grad, S.grad)
    per = losses.spike_train_loss(leaf_like(S.detach()), tgt, tau=tau, reduction="none")
    assert per.shape == (3,) and per.mean().item() == pytest.approx(loss.item())


def leaf_like(S):
    S = S.clone().requires_grad_()
    return SpikeOutput(S, torch.zeros_like(S, requires_grad=True), torch.zeros_like(S))


def test_latency_loss_gradients_match_table1():
    T, B, N = 10, 3, 4
    S = torch.zeros(T, B, N, dtype=torch.float64)
    S[2, 0, 0] = S[5, 0, 0] = S[4, 0, 1] = 1      # sample 0: neuron 0 first at 2, neuron 1 at 4
    S[7, 1, 3] = 1                                 # sample 1: only neuron 3 fires
    S[1, 2, 2] = S[1, 2, 1] = 1                    # sample 2: a tie at step 1
    S.requires_grad_()
    d = torch.zeros_like(S, requires_grad=True)
    out = SpikeOutput(S, d, torch.zeros_like(S))
    labels = torch.tensor([1, 3, 2])
    beta = 0.25
    loss = losses.latency_loss(out, labels, beta=beta)
    loss.backward()
    first = torch.tensor([[2, 4, T, T], [T, T, T, 7], [T, 1, 1, T]], dtype=torch.float64)
    p = torch.softmax(-beta * first, dim=1)
    y = torch.nn.functional.one_hot(labels, N).double()
    assert loss.item() == pytest.approx((-(y * p.log()).sum(1)).mean().item(), rel=1e-12)
    expected = torch.zeros_like(S)
    fired = first < T
    for b in range(B):
        for o in range(N):
            if fired[b, o]:
                expected[int(first[b, o]), b, o] = -beta * (p[b, o] - y[b, o]) / B
    torch.testing.assert_close(d.grad, expected)  # only at first spikes; silent neurons none
    assert S.grad is None or S.grad.abs().sum() == 0  # no activation gradient


def test_at_least_one_spike_term():
    T, B, N = 6, 3, 3
    S = torch.zeros(T, B, N, dtype=torch.float64)
    S[2, 0, 1] = 1  # sample 0: desired neuron 1 fired
    S[3, 1, 0] = 1  # sample 1: desired neuron 2 silent
    S[1, 2, 0] = S[4, 2, 0] = 1  # sample 2: desired neuron 0 fired twice
    S.requires_grad_()
    out = SpikeOutput(S, torch.zeros_like(S), torch.zeros_like(S))
    loss = losses.at_least_one_spike_loss(out, torch.tensor([1, 2, 0]), weight=0.05)
    assert loss.item() == pytest.approx(0.05 / 3)
    loss.backward()
    expected = torch.zeros_like(S)
    expected[:, 1, 2] = -0.1 / B  # the authors' gradient, -lambda_ns / B with lambda_ns = 0.1
    torch.testing.assert_close(S.grad, expected)


def test_no_spike_penalty_gradient():
    torch.manual_seed(0)
    net = SpikingNetwork([6, 5, 3], dtype=torch.float64)
    with torch.no_grad():
        net.layers[0].weight.mul_(6)
    x = torch.bernoulli(torch.full((30, 4, 6), 0.3, dtype=torch.float64))
    out = net(x)
    pen = losses.no_spike_penalty(net, out, strength=100.0)
    pen.backward()
    for layer, lo in zip(net.layers, out.layers):
        silent = (lo.spikes.detach().sum(0) == 0).double().mean(0)  # fraction of the batch
        expected = (-(100.0 / layer.in_features) * silent).unsqueeze(1).expand_as(layer.weight)
        torch.testing.assert_close(layer.weight.grad, expected)
        assert layer.bias.grad is None or layer.bias.grad.abs().sum() == 0
    assert net.layers[1].weight.grad.abs().sum() > 0  # some neuron was silent somewhere


def test_latency_loss_refuses_an_output_without_timing_channel():
    net = SpikingNetwork([4, 3], method="bptt")
    out = net(torch.bernoulli(torch.full((10, 2, 4), 0.5)))
    with pytest.raises(ValueError, match="no timing channel"):
        losses.latency_loss(out, torch.tensor([0, 1]))
    with torch.no_grad():  # evaluation needs no gradient and is fine
        losses.latency_loss(net(torch.zeros(10, 2, 4)), torch.tensor([0, 1]))


def test_losses_reject_bad_targets():
    out = leaf_output()
    with pytest.raises(ValueError, match="target_counts must have shape"):
        losses.count_loss(out, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="labels must be integers"):
        losses.latency_loss(out, torch.tensor([0, 1, 9]))
    with pytest.raises(ValueError, match="binary"):
        losses.spike_train_loss(out, torch.full(out.spikes.shape, 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        losses.count_loss(out, torch.full((3, 4), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="tau"):
        losses.spike_train_loss(out, torch.zeros(out.spikes.shape, dtype=torch.float64), tau=0.0)
    with pytest.raises(ValueError, match="kappa_derivative"):
        losses.spike_train_loss(out, torch.zeros(out.spikes.shape, dtype=torch.float64),
                                kappa_derivative="forward")


def test_sec34_antlr_trains_to_zero_spike_train_loss():
    """Sec. 3.4 setup: 10-50-50-1, three random input spikes per input, one target spike."""
    torch.manual_seed(0)
    T = 60
    net = SpikingNetwork([10, 50, 50, 1], method="antlr")
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(3.0)
    x = torch.zeros(T, 1, 10)
    for i in range(10):
        x[torch.randperm(T)[:3], 0, i] = 1
    target = torch.zeros(T, 1, 1)
    target[torch.randint(T // 4, 3 * T // 4, (1,)), 0, 0] = 1
    assert (x.sum(0) == 3).all() and target.sum() == 1
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(2000):
        loss = losses.spike_train_loss(net(x), target, tau=5.0)
        first = loss.item() if first is None else first
        if loss.item() == 0.0:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.0
    assert loss.item() == 0.0
    out = net(x)
    assert torch.equal(out.spikes, target)  # the output spike sits exactly on the target
