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


def _explicit_spike_train(S, target, tau, kind):
    """Table 1 with explicit O(T^2) kernel sums, for one loss option: (L, dL/dS, dL/dt)."""
    T, B, N = S.shape
    kappa = lambda k: math.exp(-k / tau) if k >= 0 else 0.0  # noqa: E731
    if kind == "central":
        kstar = lambda k: (kappa(k + 1) - kappa(k - 1)) / 2  # noqa: E731 (tap at k = -1: 1/2)
    else:
        kstar = lambda k: kappa(k) - kappa(k - 1)  # noqa: E731
    L, gS, gT = 0.0, np.zeros((T, B, N)), np.zeros((T, B, N))
    for b in range(B):
        for o in range(N):
            x = S[:, b, o] - target[:, b, o]
            d = np.array([sum(kappa(t - u) * x[u] for u in range(T)) for t in range(T)])
            L += (d ** 2).sum() / B
            for t in range(T):
                gS[t, b, o] = 2 * sum(kappa(u - t) * d[u] for u in range(T)) / B
                gT[t, b, o] = -2 * sum(kstar(u - t) * d[u] for u in range(T)) / B
    return L, gS, gT


@pytest.mark.parametrize("tau, kind", [(2.0, "backward"), (5.0, "backward"), (3.7, "central"),
                                       (1.3, "central")])
def test_spike_train_loss_gradients_match_table1(tau, kind):
    out = leaf_output(T=15, B=2, N=3, seed=1)
    g = torch.Generator().manual_seed(9)
    target = torch.bernoulli(torch.full((15, 2, 3), 0.2, dtype=torch.float64), generator=g)
    loss = losses.spike_train_loss(out, target, tau=tau, kappa_derivative=kind)
    loss.backward()
    S = out.spikes.detach().numpy()
    L, gS, gT = _explicit_spike_train(S, target.numpy(), tau, kind)
    assert loss.item() == pytest.approx(L, rel=1e-12)
    np.testing.assert_allclose(out.spikes.grad.numpy(), gS, rtol=1e-10, atol=1e-12)
    spikes = S == 1  # dL/dt at each output spike
    np.testing.assert_allclose(out.shift.grad.numpy()[spikes], gT[spikes], rtol=1e-10,
                               atol=1e-12)


def _loss_with_spike_at(S, target, b, o, t_from, t_to, tau):
    S = S.clone()
    S[t_from, b, o] = 0
    S[t_to, b, o] = 1
    out = SpikeOutput(S, torch.zeros_like(S), torch.zeros_like(S))
    return losses.spike_train_loss(out, target, tau=tau).item()


def _random_trains(T=60, B=3, N=2, seed=4):
    g = torch.Generator().manual_seed(seed)
    S = torch.bernoulli(torch.full((T, B, N), 0.08, dtype=torch.float64), generator=g)
    target = torch.bernoulli(torch.full((T, B, N), 0.06, dtype=torch.float64), generator=g)
    return S, target


@pytest.mark.parametrize("tau", [3.7, 0.8])
def test_central_timing_gradient_is_the_central_difference_of_the_loss(tau):
    """Default: dL/dt = (L(t + 1) - L(t - 1)) / 2 exactly, for every spike away from the ends
    (with kappa*[-1] = 1/2 restored; without it a late spike would be pulled later)."""
    S, target = _random_trains(T=200, B=2)
    out = leaf_like(S)
    losses.spike_train_loss(out, target, tau=tau).backward()
    T, checked = S.shape[0], 0
    for t, b, o in S.nonzero().tolist():
        # "away from the ends": the kernel's tail past T must be below rounding (a^(2 (T-t)))
        if not (2 <= t < T - 20 * tau) or S[t - 1, b, o] or S[t + 1, b, o]:
            continue  # the neighbouring steps must be free to move the spike there
        fd = (_loss_with_spike_at(S, target, b, o, t, t + 1, tau)
              - _loss_with_spike_at(S, target, b, o, t, t - 1, tau)) / 2
        assert out.shift.grad[t, b, o].item() == pytest.approx(fd, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked >= 10


def test_backward_timing_gradient_is_the_forward_difference_less_its_curvature():
    """``"backward"``: L(t + 1) - L(t) = dL/dt + sum_k kappa*[k]^2 (the loss is quadratic)."""
    tau = 2.9
    S, target = _random_trains(seed=7)
    out = leaf_like(S)
    losses.spike_train_loss(out, target, tau=tau, kappa_derivative="backward").backward()
    T, B = S.shape[0], S.shape[1]
    k = np.arange(T + 1)
    kappa = np.exp(-k / tau)
    kstar = kappa - np.concatenate([[0.0], kappa[:-1]])
    checked = 0
    for t, b, o in S.nonzero().tolist():
        if t + 1 >= T or S[t + 1, b, o]:
            continue
        fd = (_loss_with_spike_at(S, target, b, o, t, t + 1, tau)
              - _loss_with_spike_at(S, target, b, o, t, t, tau))
        curvature = (kstar[: T - t] ** 2).sum() / B  # moved trace: -kstar[tau - t], tau in [t, T)
        assert out.shift.grad[t, b, o].item() + curvature == pytest.approx(fd, rel=1e-9)
        checked += 1
    assert checked >= 10


def test_continuous_timing_gradient_is_the_van_rossum_derivative():
    """``"continuous"``: the derivative of D = (tau/2) sum_ab s_a s_b exp(-|t_a - t_b| / tau)
    at continuous spike times, by a central difference in t with a small step."""
    tau = 4.3
    S, target = _random_trains(seed=2)
    out = leaf_like(S)
    losses.spike_train_loss(out, target, tau=tau, kappa_derivative="continuous").backward()
    B = S.shape[1]

    def distance(times, signs):
        ta, tb = np.meshgrid(times, times)
        return tau / 2 * (np.outer(signs, signs) * np.exp(-np.abs(ta - tb) / tau)).sum()

    checked = 0
    for b in range(S.shape[1]):
        for o in range(S.shape[2]):
            own = S[:, b, o].nonzero().flatten().double().numpy()
            tar = target[:, b, o].nonzero().flatten().double().numpy()
            times = np.concatenate([own, tar])
            signs = np.concatenate([np.ones(len(own)), -np.ones(len(tar))])
            for i, t in enumerate(own):
                if np.any((times == t) & (np.arange(len(times)) != i)):
                    continue  # a target at the same step: |t_a - t_b| has a kink there
                h = 1e-6
                up, down = times.copy(), times.copy()
                up[i] += h
                down[i] -= h
                fd = (distance(up, signs) - distance(down, signs)) / (2 * h) / B
                assert out.shift.grad[int(t), b, o].item() == pytest.approx(fd, rel=1e-6,
                                                                            abs=1e-9)
                checked += 1
    assert checked >= 10


def test_options_share_value_and_activation_gradient_and_scale_as_documented():
    """Away from the target the continuous slope is exp(-1/tau) times the central one."""
    T, tau = 200, 5.0
    S = torch.zeros(T, 1, 1, dtype=torch.float64)
    tgt = torch.zeros_like(S)
    S[40, 0, 0] = 1
    tgt[20, 0, 0] = 1
    grads, values = {}, {}
    for kind in losses.KAPPA_DERIVATIVES:
        out = leaf_like(S)
        loss = losses.spike_train_loss(out, tgt, tau=tau, kappa_derivative=kind)
        loss.backward()
        values[kind], grads[kind] = loss.item(), (out.spikes.grad, out.shift.grad[40, 0, 0].item())
    assert values["central"] == values["backward"] == values["continuous"]
    torch.testing.assert_close(grads["central"][0], grads["continuous"][0], rtol=0, atol=0)
    assert grads["central"][1] > 0  # a late spike is pulled earlier
    assert grads["continuous"][1] == pytest.approx(math.exp(-1 / tau) * grads["central"][1],
                                                   rel=1e-9)
    assert grads["backward"][1] < 0  # the literal backward difference pulls it later


def test_isolated_spike_gets_no_central_timing_gradient():
    S = torch.zeros(200, 1, 1, dtype=torch.float64)
    S[15, 0, 0] = 1
    out = leaf_like(S)
    losses.spike_train_loss(out, torch.zeros_like(S), tau=5.0).backward()
    assert out.shift.grad[15, 0, 0].item() == pytest.approx(0.0, abs=1e-12)
    out = leaf_like(S)
    losses.spike_train_loss(out, torch.zeros_like(S), tau=5.0,
                            kappa_derivative="backward").backward()
    assert out.shift.grad[15, 0, 0].item() == pytest.approx(-2 / (1 + math.exp(-1 / 5.0)))


@pytest.mark.parametrize("tau", [0.4, 5.0])
def test_exponential_filter_is_exact_over_long_windows(tau):
    """O(T) filter (chunks of 600 tau steps) equals the explicit recursion, both directions."""
    T = 3000
    x = torch.randn(T, 2, dtype=torch.float64)
    a = math.exp(-1 / tau)
    ref = torch.zeros_like(x)
    acc = torch.zeros(2, dtype=torch.float64)
    for t in range(T):
        acc = a * acc + x[t]
        ref[t] = acc
    torch.testing.assert_close(losses.exponential_filter(x, tau), ref, rtol=1e-10, atol=1e-12)
    back = losses.exponential_filter(x.flip(0), tau).flip(0)
    torch.testing.assert_close(losses.exponential_filter(x, tau, reverse=True), back)


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
    with pytest.raises(ValueError, match="latency_loss has only a timing gradient.*'bptt'"):
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
