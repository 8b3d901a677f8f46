"""Any linear synapse: a convolution or a pooling gives the numbers of the same network written
with the unfolded matrices, for every method and both channels (float64, 1e-9)."""
import numpy as np
import pytest
import torch
from torch import nn

import reference as ref
from antlr_snn import LIF, Flatten, LIFConv2d, LIFLayer, SpikingNetwork, kernels, losses
from antlr_snn.synapses import Conv

ODD = dict(alpha_v=0.95, alpha_i=0.83, beta_v=0.11, beta_i=1.3, beta_bias=0.37, threshold=0.8,
           surrogate_scale=0.7, surrogate_width=2.3, vstar_min=0.03)
BACKENDS = ["reference"] + [b for b in ("numba",) if kernels.available(b)]
F64 = torch.float64
IN = (2, 6, 6)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with kernels.use_backend(request.param):
        yield request.param


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def conv_net(method, seed=0, **kw):
    torch.manual_seed(seed)
    net = SpikingNetwork([LIFConv2d(2, 3, 3, stride=2, padding=1, method=method, dtype=F64,
                                    **ODD, **kw),
                          Flatten(), LIFLayer(27, 4, method=method, dtype=F64, **ODD, **kw)])
    with torch.no_grad():
        net.layers[0].weight.mul_(2.5).add_(0.25)
        net.layers[0].bias.uniform_(-0.05, 0.05)
        net.layers[2].weight.mul_(2.0).add_(0.2)
    return net


def unfolded_net(conv, **kw):
    """The same network as LIFLayers: the conv's matrix, its bias repeated per position.
    Returns the network and the functions that map conv parameters to its parameters."""
    c = conv.layers[0]
    syn = lambda w: (lambda s: torch.nn.functional.conv2d(s, w, None, c.stride, c.padding))  # noqa
    dense = SpikingNetwork([LIFLayer(72, 27, dtype=F64, **ODD, **kw),
                            LIFLayer(27, 4, dtype=F64, **ODD, **kw)])
    W = lambda w: ref.unfolded(syn(w), IN)                              # noqa: E731
    B = lambda b: b.repeat_interleave(9)                                # noqa: E731 (C, 3, 3)
    with torch.no_grad():
        dense.layers[0].weight.copy_(W(c.weight))
        dense.layers[0].bias.copy_(B(c.bias))
        dense.layers[1].weight.copy_(conv.layers[2].weight)
        dense.layers[1].bias.copy_(conv.layers[2].bias)
    return dense, W, B


def loss_of(out, kind, labels):
    if kind == "count":
        return losses.count_loss(out, torch.nn.functional.one_hot(labels, 4).to(F64) * 2)
    if kind == "latency":
        return losses.latency_loss(out, labels)
    g = torch.Generator().manual_seed(3)
    loss = 0.05 * (out.voltage ** 2).sum()
    for lo in out.layers:
        if lo.spikes.requires_grad:
            loss = loss + (torch.randn(lo.spikes.shape, generator=g, dtype=F64) * lo.spikes).sum()
        if lo.shift.requires_grad:
            loss = loss + (torch.randn(lo.shift.shape, generator=g, dtype=F64) * lo.shift).sum()
    return loss


@pytest.mark.parametrize("method, kind", [
    ("antlr", "latency"), ("antlr", "count"), ("antlr", "probe"), ("activation", "count"),
    ("activation", "probe"), ("timing", "latency"), ("timing", "probe"), ("bptt", "count"),
    ("bptt", "probe")])
@pytest.mark.parametrize("eps_derivative", ["backward", "central"])
def test_conv_equals_its_unfolded_matrix(backend, method, kind, eps_derivative):
    conv = conv_net(method, eps_derivative=eps_derivative)
    dense, W, B = unfolded_net(conv, method=method, eps_derivative=eps_derivative)
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((40, 3, *IN), 0.15, dtype=F64), generator=g)
    labels = torch.tensor([0, 2, 3])
    xc, xd = x.clone().requires_grad_(), x.flatten(2).clone().requires_grad_()
    oc, od = conv(xc), dense(xd)
    for a, b in zip(oc.layers, od.layers):  # the same spikes and voltages everywhere
        assert torch.equal(a.spikes.flatten(2), b.spikes)
        assert rel(a.voltage.flatten(2), b.voltage) <= 1e-12
    assert oc.layers[0].spikes.sum() > 20 and oc.spikes.sum() > 3
    loss_of(oc, kind, labels).backward()
    loss_of(od, kind, labels).backward()
    # chain rule through the unfolding: conv parameter gradients from the dense ones
    wc = conv.layers[0].weight.detach().clone().requires_grad_()
    bc = conv.layers[0].bias.detach().clone().requires_grad_()
    (W(wc) * dense.layers[0].weight.grad).sum().backward()
    (B(bc) * dense.layers[0].bias.grad).sum().backward()
    assert rel(conv.layers[0].weight.grad, wc.grad) <= 1e-9
    assert rel(conv.layers[0].bias.grad, bc.grad) <= 1e-9
    assert rel(conv.layers[2].weight.grad, dense.layers[1].weight.grad) <= 1e-9
    assert rel(xc.grad.flatten(2), xd.grad) <= 1e-9  # the activation channel to the input
    assert wc.grad.abs().sum() > 0


def test_activation_channel_through_a_conv_is_autograd_without_reset(backend):
    conv = conv_net("activation", seed=2)
    g = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((30, 2, *IN), 0.2, dtype=F64), generator=g)
    out = conv(x)
    rs = torch.randn(out.spikes.shape, generator=g, dtype=F64)
    rh = torch.randn(out.layers[0].spikes.shape, generator=g, dtype=F64)
    ((rs * out.spikes).sum() + (rh * out.layers[0].spikes).sum()).backward()
    c, fc = conv.layers[0], conv.layers[2]
    w = c.weight.detach().clone().requires_grad_()
    b = c.bias.detach().clone().requires_grad_()
    w2 = fc.weight.detach().clone().requires_grad_()
    p = c.params
    current = Conv(w, c.stride, c.padding)(x)
    S1, _ = ref.autograd_layer(current, b.view(-1, 1, 1), p, detach_reset=True)
    S2, _ = ref.autograd_layer(S1.flatten(2) @ w2.T, fc.bias.detach(), p, detach_reset=True)
    ((rs * S2).sum() + (rh * S1).sum()).backward()
    assert rel(c.weight.grad, w.grad) <= 1e-9 and rel(c.bias.grad, b.grad) <= 1e-9
    assert rel(fc.weight.grad, w2.grad) <= 1e-9
    assert w.grad.abs().sum() > 0


def test_timing_channel_through_a_conv_equals_explicit_kernel_sums(backend):
    """A tiny conv-conv network (the second strided and padded), timing method, a loss on the
    output's timing channel only: the first conv's weight gradient equals Eq. 7/10 with
    explicit O(T^2) sums."""
    torch.manual_seed(5)
    l1 = LIFConv2d(1, 2, 2, method="timing", dtype=F64, **ODD)
    l2 = LIFConv2d(2, 2, 2, stride=2, padding=1, method="timing", dtype=F64, **ODD)
    with torch.no_grad():
        l1.weight.mul_(4).add_(0.6)
        l2.weight.mul_(3).add_(0.8)
    net = SpikingNetwork([l1, l2])
    x = torch.bernoulli(torch.full((25, 1, 1, 4, 4), 0.3, dtype=F64),
                        generator=torch.Generator().manual_seed(6))
    out = net(x)
    assert out.layers[0].spikes.sum() > 5 and out.spikes.sum() > 3
    rd = torch.randn(out.shift.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    (rd * out.shift).sum().backward()
    W1 = ref.unfolded(lambda s: torch.nn.functional.conv2d(s, l1.weight.detach()), (1, 4, 4))
    W2 = ref.unfolded(lambda s: torch.nn.functional.conv2d(s, l2.weight.detach(), stride=2,
                                                           padding=1), (2, 3, 3))
    wg, bg, _ = ref.explicit_backward(
        x[:, 0].flatten(1).numpy(), [W1.numpy(), W2.numpy()],
        [l1.bias.detach().repeat_interleave(9).numpy(), l2.bias.detach().repeat_interleave(4).numpy()],
        [lo.spikes[:, 0].flatten(1).detach().numpy() for lo in out.layers],
        [lo.voltage[:, 0].flatten(1).detach().numpy() for lo in out.layers],
        np.zeros((25, 8)), (rd[:, 0] * out.spikes[:, 0]).flatten(1).detach().numpy(),
        l1.params, [(0.0, 1.0)] * 2)
    w = l1.weight.detach().clone().requires_grad_()
    unf = ref.unfolded(lambda s: torch.nn.functional.conv2d(s, w), (1, 4, 4))
    (unf * torch.from_numpy(wg[0])).sum().backward()
    assert w.grad.abs().sum() > 0
    assert rel(l1.weight.grad, w.grad) <= 1e-9


@pytest.mark.parametrize("kind", ["avgpool", "conv1d"])
def test_a_pooling_and_a_users_module_are_synapses(backend, kind):
    """LIF(nn.AvgPool2d) and LIF(nn.Conv1d(bias=False)) equal their unfolded matrices, with
    both channels reaching the layer below (a LIFLayer with near-identity weights)."""
    from antlr_snn import SpikeOutput
    torch.manual_seed(8)
    if kind == "avgpool":
        module, in_shape = nn.AvgPool2d(2), (2, 4, 4)
        layer = LIF(module, method="antlr", **{**ODD, "threshold": 0.1})
    else:
        module, in_shape = nn.Conv1d(2, 3, 3, bias=False, dtype=F64), (2, 7)
        with torch.no_grad():
            module.weight.mul_(4).add_(0.5)
        layer = LIF(module, bias_shape=(3, 1), method="antlr", **ODD)
        with torch.no_grad():
            layer.bias.uniform_(-0.1, 0.1)
    W = ref.unfolded(module, in_shape)
    dense = LIFLayer(W.shape[1], W.shape[0], dtype=F64, **layer.neuron_kwargs())
    with torch.no_grad():
        dense.weight.copy_(W)
        if layer.bias is not None:
            dense.bias.copy_(layer.bias.detach().expand(3, 5).flatten())
    n = int(np.prod(in_shape))
    below = LIFLayer(n, n, dtype=F64, **ODD)
    with torch.no_grad():
        below.weight.copy_(torch.eye(n) * 8.0 + 0.05)
    g = torch.Generator().manual_seed(9)
    x = torch.bernoulli(torch.full((30, 2, n), 0.4, dtype=F64), generator=g)
    rd, rs = None, None
    results = []
    for top in (layer, dense):
        below.zero_grad()
        xin = x.clone().requires_grad_()
        pre = below(xin)
        if top is layer:
            pre = SpikeOutput(*(t.unflatten(-1, in_shape) for t in pre[:3]))
        out = top(pre)
        S, d = out.spikes.flatten(2), out.shift.flatten(2)
        if rd is None:
            rd = torch.randn(S.shape, generator=g, dtype=F64)
            rs = torch.randn(S.shape, generator=g, dtype=F64)
        (rd * d + rs * S).sum().backward()
        results.append((S.detach(), xin.grad.clone(), below.weight.grad.clone()))
    (s1, gx1, gw1), (s2, gx2, gw2) = results
    assert torch.equal(s1, s2) and s1.sum() > 3
    assert rel(gx1, gx2) <= 1e-9 and gx2.abs().sum() > 0
    assert rel(gw1, gw2) <= 1e-9
