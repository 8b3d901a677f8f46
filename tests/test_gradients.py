"""Forward pass and the four gradient methods against the equations and autograd (float64).

Every comparison runs at constants unlike the defaults and unlike each other (alpha_v !=
alpha_i, beta_v != beta_bias != beta_i, threshold != 1, other surrogate constants): with the
symmetric defaults a swapped pair of terms would pass unseen. The library is run on the
reference backend and on every fast one.
"""
import numpy as np
import pytest
import torch

import reference as ref
from antlr_snn import LIFLayer, SpikeOutput, SpikingNetwork, kernels

#: constants unlike the defaults (and unlike each other)
ODD = dict(alpha_v=0.95, alpha_i=0.83, beta_v=0.11, beta_i=1.3, beta_bias=0.37, threshold=0.8,
           surrogate_scale=0.7, surrogate_width=2.3, vstar_min=0.03)
BACKENDS = ["reference"] + [b for b in ("numba",) if kernels.available(b)]


@pytest.fixture(autouse=True)
def float64_default():
    """These tests compare to 1e-9, so they run in float64; restore the default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with kernels.use_backend(request.param):
        yield request.param


def make_net(sizes, method, seed=0, scale=2.0, bias=0.05, offset=0.1, **kw):
    torch.manual_seed(seed)
    net = SpikingNetwork(sizes, method=method, dtype=torch.float64, **{**ODD, **kw})
    with torch.no_grad():
        for layer in net.layers:  # larger weights so that every layer fires several times
            layer.weight.mul_(scale).add_(offset)
            layer.bias.uniform_(-bias, bias)
    return net


def random_input(T, B, n, p=0.2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((T, B, n), p), generator=g)


def grads(net):
    return [t.grad.clone() for l in net.layers for t in (l.weight, l.bias)]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def probe_loss(out, seed=5):
    """A loss with arbitrary dL/dS, dL/dt and dL/dV at the output (where the channel lives)."""
    g = torch.Generator().manual_seed(seed)
    rs = torch.randn(out.spikes.shape, generator=g)
    rd = torch.randn(out.shift.shape, generator=g)
    loss = 0.1 * (out.voltage ** 2).sum()
    if out.spikes.requires_grad:
        loss = loss + (rs * out.spikes).sum()
    if out.shift.requires_grad:
        loss = loss + (rd * out.shift).sum()
    return loss, rs, rd


def test_forward_equals_direct_simulation_and_srm(backend):
    net = make_net([6, 5, 4], "antlr")
    x = random_input(40, 3, 6)
    out = net(x)
    p = net.layers[0].params
    for b in range(3):
        s_in = x[:, b].numpy()
        for layer, lo in zip(net.layers, out.layers):
            w, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            S, V, _ = ref.simulate_eq123(s_in, w, bias, p)
            np.testing.assert_array_equal(lo.spikes[:, b].detach().numpy(), S)
            np.testing.assert_allclose(lo.voltage[:, b].detach().numpy(), V, rtol=1e-12, atol=1e-12)
            V_srm = ref.srm_voltage(s_in, w, bias, S, p)
            np.testing.assert_allclose(V, V_srm, rtol=1e-10, atol=1e-12)
            s_in = S
    assert out.layers[0].spikes.sum() > 10 and out.spikes.sum() > 5  # the check is not vacuous


def test_single_spike_neurons_are_held_at_reset(backend):
    """After its one spike a neuron's V and I stay 0 (no meaningless supra-threshold V)."""
    net = make_net([6, 5, 4], "antlr", single_spike=True, scale=3.0, bias=0.0)
    x = random_input(50, 2, 6, p=0.4)
    out = net(x)
    S, V = out.layers[0].spikes, out.layers[0].voltage
    assert S.sum(0).max() == 1 and S.sum() >= 5
    fired_before = (S.cumsum(0) - S) > 0
    assert (V[fired_before] == 0).all() and fired_before.sum() > 20
    assert V.max() < 3.0  # only the spiking step itself exceeds the threshold
    for b in range(2):
        Sr, Vr, _ = ref.simulate_eq123(x[:, b].numpy(), net.layers[0].weight.detach().numpy(),
                                       net.layers[0].bias.detach().numpy(), net.layers[0].params,
                                       single_spike=True)
        np.testing.assert_array_equal(S[:, b].detach().numpy(), Sr)
        np.testing.assert_allclose(V[:, b].detach().numpy(), Vr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("single_spike", [False, True])
def test_activation_equals_autograd_without_reset(backend, single_spike):
    net = make_net([8, 7, 6, 5], "activation", single_spike=single_spike, scale=3.0, offset=0.4)
    x = random_input(30, 3, 8, p=0.3)
    out = net(x)
    loss, rs, rd = probe_loss(out)
    loss.backward()
    ours = grads(net)

    ws = [l.weight.detach().clone().requires_grad_() for l in net.layers]
    bs = [l.bias.detach().clone().requires_grad_() for l in net.layers]
    outs = ref.autograd_network(x, ws, bs, net.layers[0].params, detach_reset=True,
                                single_spike=single_spike)
    S, V = outs[-1]
    ((rs * S).sum() + 0.1 * (V ** 2).sum()).backward()
    theirs = [t.grad for pair in zip(ws, bs) for t in pair]
    for o, t in zip(ours, theirs):
        assert rel(o, t) <= 1e-9
    assert all(t.abs().sum() > 0 for t in theirs)


@pytest.mark.parametrize("single_spike", [False, True])
def test_bptt_equals_autograd_with_reset(backend, single_spike):
    net = make_net([8, 7, 5], "bptt", single_spike=single_spike)
    x = random_input(30, 3, 8, p=0.3)
    out = net(x)
    rs = torch.randn(out.spikes.shape, generator=torch.Generator().manual_seed(3))
    ((rs * out.spikes).sum() + 0.1 * (out.voltage ** 2).sum()).backward()
    ours = grads(net)
    ws = [l.weight.detach().clone().requires_grad_() for l in net.layers]
    bs = [l.bias.detach().clone().requires_grad_() for l in net.layers]
    S, V = ref.autograd_network(x, ws, bs, net.layers[0].params, detach_reset=False,
                                single_spike=single_spike)[-1]
    ((rs * S).sum() + 0.1 * (V ** 2).sum()).backward()
    theirs = [t.grad for pair in zip(ws, bs) for t in pair]
    for o, t in zip(ours, theirs):
        assert rel(o, t) <= 1e-9
    # the reset path matters: the activation method (reset detached) differs from BPTT here
    act = make_net([8, 7, 5], "activation", single_spike=single_spike)
    o2 = act(x)
    ((rs * o2.spikes).sum() + 0.1 * (o2.voltage ** 2).sum()).backward()
    assert rel(grads(act)[0], ours[0]) > 1e-3


@pytest.mark.parametrize("channel", ["spikes", "shift"])
def test_a_loss_on_one_output_channel_still_feeds_both_hidden_channels(backend, channel):
    """A loss that reads only S (a count loss under ANTLR) or only d: the hidden layer's
    timing channel (Eq. 7, 10) is fed by the output's whole dL/dV even when no dL/dt arrives
    at the output (it was dropped: the hidden gradient was 25% off)."""
    net = make_net([5, 6, 4], "antlr", seed=0, lambda_act=0.7, lambda_tim=1.3, scale=3.0,
                   offset=0.5)
    x = random_input(30, 2, 5, p=0.4, seed=4)
    out = net(x)
    g = torch.Generator().manual_seed(5)
    r = torch.randn(out.spikes.shape, generator=g)
    (r * getattr(out, channel)).sum().backward()
    zero = torch.zeros_like(r)
    gs, gt = (r, zero) if channel == "spikes" else (zero, r * out.spikes.detach())
    w_tot = [np.zeros(l.weight.shape) for l in net.layers]
    for b in range(2):
        wg, _, _ = ref.explicit_backward(
            x[:, b].numpy(), [l.weight.detach().numpy() for l in net.layers],
            [l.bias.detach().numpy() for l in net.layers],
            [lo.spikes[:, b].detach().numpy() for lo in out.layers],
            [lo.voltage[:, b].detach().numpy() for lo in out.layers],
            gs[:, b].numpy(), gt[:, b].numpy(), net.layers[0].params, [(0.7, 1.3)] * 2)
        w_tot = [a + w for a, w in zip(w_tot, wg)]
    for layer, t in zip(net.layers, w_tot):
        assert rel(layer.weight.grad, torch.from_numpy(t)) <= 1e-9


@pytest.mark.parametrize("lams", [(1.0, 0.0), (0.0, 1.0)])
def test_antlr_limits_equal_the_explicit_single_methods(backend, lams):
    """ANTLR at (1, 0) and (0, 1) against Eq. 6-10 evaluated independently with those lambdas
    (not the library's ``activation``/``timing``, which run the same code)."""
    _compare_with_explicit_sums(lams, False, 7, "backward")


def _compare_with_explicit_sums(lams, single_spike, seed, eps_derivative, hidden_probe=True):
    la, lt = lams
    net = make_net([5, 6, 4], "antlr", seed=seed, lambda_act=la, lambda_tim=lt,
                   single_spike=single_spike, scale=3.0, offset=0.5,
                   eps_derivative=eps_derivative)
    x = random_input(30, 2, 5, p=0.4, seed=seed + 10).requires_grad_()
    out = net(x)
    loss, rs, rd = probe_loss(out, seed=seed)
    loss = loss - 0.1 * (out.voltage ** 2).sum()  # only S and d channels here
    loss.backward()
    ours = grads(net)
    assert out.layers[0].spikes.sum(0).max() >= (1 if single_spike else 2)  # multi-spike
    p = net.layers[0].params
    w_tot = [np.zeros(l.weight.shape) for l in net.layers]
    b_tot = [np.zeros(l.bias.shape) for l in net.layers]
    gs_in = np.zeros(x.shape)
    for b in range(2):
        wg, bg, (gS0, gT0) = ref.explicit_backward(
            x[:, b].detach().numpy(), [l.weight.detach().numpy() for l in net.layers],
            [l.bias.detach().numpy() for l in net.layers],
            [lo.spikes[:, b].detach().numpy() for lo in out.layers],
            [lo.voltage[:, b].detach().numpy() for lo in out.layers],
            rs[:, b].numpy() * (la != 0), rd[:, b].numpy() * out.spikes[:, b].detach().numpy()
            * (lt != 0), p, [(la, lt)] * 2, single_spike=single_spike,
            eps_derivative=eps_derivative)
        for l in range(2):
            w_tot[l] += wg[l]
            b_tot[l] += bg[l]
        gs_in[:, b] = gS0
    theirs = [torch.from_numpy(a) for pair in zip(w_tot, b_tot) for a in pair]
    for o, t in zip(ours, theirs):
        assert rel(o, t) <= 1e-9
    assert rel(x.grad, torch.from_numpy(gs_in)) <= 1e-9  # the activation channel to the input
    assert theirs[0].abs().sum() > 0


@pytest.mark.parametrize("lams,single_spike,seed", [
    ((0.0, 1.0), False, 0), ((1.0, 1.0), False, 1), ((0.3, 2.0), False, 2), ((1.0, 0.0), False, 3),
    ((1.0, 1.0), True, 4), ((0.6, 1.4), True, 5)])
@pytest.mark.parametrize("eps_derivative", ["backward", "central"])
def test_gradients_equal_explicit_kernel_sums(backend, lams, single_spike, seed, eps_derivative):
    """Eq. 6-10 evaluated with explicit O(T^2) kernel sums on multi-spike networks, with both
    kernel derivatives of the timing channel (Eq. 7)."""
    _compare_with_explicit_sums(lams, single_spike, seed, eps_derivative)


def test_central_and_backward_kernel_derivatives_differ_a_little():
    """The two derivatives give timing gradients ~1% apart at these decays (not identical)."""
    res = {}
    for kind in ("backward", "central"):
        net = make_net([5, 6, 4], "timing", seed=2, eps_derivative=kind, scale=3.0, offset=0.5)
        out = net(random_input(40, 2, 5, p=0.4, seed=12))
        (torch.randn(out.shift.shape, generator=torch.Generator().manual_seed(1))
         * out.shift).sum().backward()
        res[kind] = net.layers[0].weight.grad.clone()
    diff = rel(res["central"], res["backward"])
    assert 1e-3 < diff < 0.3
    cos = torch.nn.functional.cosine_similarity(res["central"].flatten(),
                                                res["backward"].flatten(), dim=0)
    assert cos > 0.9


@pytest.mark.parametrize("method", ["antlr", "activation", "timing", "bptt"])
def test_batch_equals_one_sample_at_a_time(backend, method):
    net = make_net([6, 8, 3], method)
    x = random_input(30, 4, 6, p=0.3)
    out = net(x)
    probe_loss(out)[0].backward()
    batched = grads(net)
    _, rs, rd = probe_loss(out)
    per = None
    for b in range(4):
        net.zero_grad()
        o = net(x[:, b:b + 1])
        torch.testing.assert_close(o.spikes, out.spikes[:, b:b + 1])
        loss = 0.1 * (o.voltage ** 2).sum()
        if o.spikes.requires_grad:
            loss = loss + (rs[:, b:b + 1] * o.spikes).sum()
        if o.shift.requires_grad:
            loss = loss + (rd[:, b:b + 1] * o.shift).sum()
        loss.backward()
        g = grads(net)
        per = g if per is None else [a + c for a, c in zip(per, g)]
    for a, c in zip(batched, per):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    assert batched[0].abs().sum() > 0


def test_replicas_equal_separate_networks(backend):
    torch.manual_seed(0)
    R = 3
    layer = LIFLayer(6, 4, replicas=R, dtype=torch.float64, **ODD)
    with torch.no_grad():
        layer.weight.mul_(2).add_(0.1)
        layer.bias.uniform_(-0.1, 0.1)
    x = torch.bernoulli(torch.full((30, R, 2, 6), 0.3))
    out = layer(x)
    rs = torch.randn(out.spikes.shape)
    ((rs * out.spikes).sum() + (rs * out.shift).sum()).backward()
    assert out.spikes.sum() > 10
    for r in range(R):
        single = LIFLayer(6, 4, dtype=torch.float64, **ODD)
        with torch.no_grad():
            single.weight.copy_(layer.weight[r])
            single.bias.copy_(layer.bias[r])
        o = single(x[:, r])
        torch.testing.assert_close(o.spikes, out.spikes[:, r])
        ((rs[:, r] * o.spikes).sum() + (rs[:, r] * o.shift).sum()).backward()
        torch.testing.assert_close(single.weight.grad, layer.weight.grad[r])
        torch.testing.assert_close(single.bias.grad, layer.bias.grad[r])


def test_a_user_loss_on_the_timing_channel_alone_reaches_the_first_layer():
    """float32, a custom loss of (S, d) only: the timing gradient equals the float64 one."""
    import copy
    torch.manual_seed(4)
    net64 = SpikingNetwork([10, 12, 3], dtype=torch.float64, **ODD)
    with torch.no_grad():
        for l in net64.layers:
            l.weight.mul_(2).add_(0.1)
    x = torch.bernoulli(torch.full((30, 2, 10), 0.3), generator=torch.Generator().manual_seed(0))
    g = {}
    for net in (net64, copy.deepcopy(net64).to(torch.float32)):
        dtype = net.layers[0].weight.dtype
        out = net(x.to(dtype))
        assert out.spikes.dtype == dtype
        (torch.arange(30.0, dtype=dtype)[:, None, None] * out.shift * out.spikes).sum().backward()
        g[dtype] = net.layers[0].weight.grad.double()
    assert g[torch.float64].abs().sum() > 0
    assert rel(g[torch.float32], g[torch.float64]) < 1e-4


def test_spike_output_accepts_layer_stacking():
    a, b = LIFLayer(5, 6, **ODD), LIFLayer(6, 2, **ODD)
    net = SpikingNetwork([5, 6, 2], **ODD)
    net.layers[0].load_state_dict(a.state_dict())
    net.layers[1].load_state_dict(b.state_dict())
    x = random_input(20, 2, 5)
    torch.testing.assert_close(b(a(x)).spikes, net(x).spikes)
    assert isinstance(net(x), SpikeOutput) and len(net(x).hidden) == 1
