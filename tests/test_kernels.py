"""The fast kernels give exactly the spikes and (to rounding) the gradients of the reference path.

Every comparison runs the same network twice, once with ``kernels.use_backend("reference")``
(pure PyTorch) and once with the default ``"auto"`` (compiled CPU kernels where they apply), in
float64: spikes must be equal, voltages and gradients equal to ~1e-12 relative. Parametrized
over the available devices: on CUDA the dispatcher keeps the reference path, which the tests
check too.
"""
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn import SpikingNetwork, kernels
from antlr_snn.neuron import LIFParameters

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
TOL = 1e-12
pytestmark = pytest.mark.skipif(not kernels.fast_available(), reason="numba not importable")


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def latency_like(T, batch, n, density=0.02, seed=1, device="cpu"):
    """Sparse binary input (the latency code's regime: far below SPARSE_MAX_DENSITY)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((T, *batch, n), density, dtype=F64), generator=g).to(device)


def build(sizes, method, device, seed=0, scale=5.0, **kw):
    torch.manual_seed(seed)
    net = SpikingNetwork(sizes, method=method, dtype=F64, device=device, **kw)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(scale).add_(0.3)  # fire a few times per neuron
            layer.bias.uniform_(-0.05, 0.05)
    return net


def probe(out, seed=5):
    """A loss with arbitrary dL/dS, dL/dt and dL/dV at the output (all channels exercised)."""
    g = torch.Generator().manual_seed(seed)
    rs = torch.randn(out.spikes.shape, generator=g, dtype=F64).to(out.spikes.device)
    rd = torch.randn(out.shift.shape, generator=g, dtype=F64).to(out.spikes.device)
    hid = sum((0.5 * lo.spikes).sum() + (0.3 * lo.shift).sum() for lo in out.hidden)
    return (rs * out.spikes).sum() + (rd * out.shift).sum() + 0.1 * (out.voltage ** 2).sum() + hid


def run(net, x, backend):
    net.zero_grad()
    xx = x.detach().clone().requires_grad_(x.requires_grad)
    with kernels.use_backend(backend):
        out = net(xx)
        probe(out).backward()
    grads = [t.grad.clone() for l in net.layers for t in (l.weight, l.bias)]
    if xx.grad is not None:
        grads.append(xx.grad.clone())
    return out, grads


def assert_same(net, x):
    kernels.calls.clear()
    ref_out, ref_g = run(net, x, "reference")
    assert sum(kernels.calls.values()) == 0  # the reference path never touches the kernels
    fast_out, fast_g = run(net, x, "auto")
    fast_used = sum(kernels.calls.values())
    for lr, lf in zip(ref_out.layers, fast_out.layers):
        assert torch.equal(lr.spikes, lf.spikes)
        assert rel(lf.voltage, lr.voltage) <= TOL
    assert len(ref_g) == len(fast_g)
    for a, b in zip(fast_g, ref_g):
        assert torch.isfinite(a).all()
        assert rel(a, b) <= TOL
    return ref_out, ref_g, fast_used


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "activation", "timing", "bptt"])
@pytest.mark.parametrize("single_spike", [False, True])
def test_network_fast_equals_reference(device, method, single_spike):
    net = build([30, 20, 12, 6], method, device, single_spike=single_spike)
    x = latency_like(40, (3,), 30, device=device)
    out, grads, fast_used = assert_same(net, x)
    assert out.layers[0].spikes.sum() > 10 and out.spikes.sum() > 0  # not vacuous
    assert all(g.abs().sum() > 0 for g in grads[0::2])
    if device == "cpu":
        assert kernels.calls["events"] > 0 and fast_used > 0
        assert kernels.calls["lif_forward"] == 3
        assert kernels.calls["adjoint" if method != "bptt" else "bptt_backward"] == 3
        assert kernels.calls["input_grads"] >= 2  # narrow layers feed the layer below
    else:
        assert fast_used == 0


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_lambdas_and_input_gradient(device):
    net = build([16, 14, 5], "antlr", device, lambda_act=0.3, lambda_tim=2.0)
    x = latency_like(30, (2,), 16, density=0.05, device=device).requires_grad_()
    assert_same(net, x)
    bp = build([16, 14, 5], "bptt", device)
    assert_same(bp, x)  # includes dL/d(input) of the first layer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_dense_input_uses_dense_projection(device, method):
    net = build([12, 10, 4], method, device, scale=2.0)
    x = latency_like(25, (2,), 12, density=0.4, device=device)
    kernels.calls.clear()
    assert_same(net, x)
    if device == "cpu":
        assert kernels.calls["lif_forward"] == 2 and kernels.calls["project"] <= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "timing", "bptt"])
@pytest.mark.parametrize("T,B", [(1, 1), (1, 3), (7, 1)])
def test_tiny_shapes(device, method, T, B):
    net = build([5, 4, 3], method, device, scale=20.0)
    x = torch.ones(T, B, 5, dtype=F64, device=device)
    x[:, :, ::2] = 0
    assert_same(net, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "activation", "bptt"])
def test_silent_layer(device, method):
    net = build([10, 8, 4], method, device, scale=0.01)
    with torch.no_grad():
        net.layers[0].weight.fill_(-1.0)  # nothing reaches threshold
    x = latency_like(20, (2,), 10, density=0.1, device=device)
    out, grads, _ = assert_same(net, x)
    assert out.layers[0].spikes.sum() == 0 and out.spikes.sum() == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "timing", "bptt"])
@pytest.mark.parametrize("single_spike", [False, True])
def test_replicas_fast_equals_reference(device, method, single_spike):
    R = 3
    net = build([14, 9, 4], method, device, replicas=R, single_spike=single_spike)
    with torch.no_grad():
        for layer in net.layers:  # replicas must differ
            layer.weight.add_(0.2 * torch.arange(R, device=device, dtype=F64).view(R, 1, 1))
    x = latency_like(30, (R, 2), 14, density=0.05, device=device)
    out, _, _ = assert_same(net, x)
    assert out.layers[0].spikes.sum() > 5
    assert not torch.equal(out.layers[0].spikes[:, 0], out.layers[0].spikes[:, 1])


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_functions_directly(device):
    """project / weight_grad / recurrences, arbitrary batch shapes and non-binary spikes."""
    g = torch.Generator().manual_seed(3)
    p = LIFParameters.create(alpha_v=0.95, alpha_i=0.9, surrogate_scale=0.7)
    s = latency_like(9, (2, 3), 11, density=0.1, device=device)
    s[0, 0, 0, :3] = torch.tensor([2.0, -0.5, 1.0], dtype=F64)  # values other than 1 are kept
    w = torch.randn(7, 11, generator=g, dtype=F64).to(device)
    ev = kernels.events(s, w, max_density=1.0)
    assert (ev is None) == (device != "cpu")
    x = kernels.project(s, w, events=ev)
    assert rel(x, kernels.reference_project(s, w)) <= TOL
    assert torch.equal(kernels.zeros_like(x), torch.zeros_like(x))
    a = torch.randn(9, 2, 3, 7, generator=g, dtype=F64).to(device)
    assert rel(kernels.weight_grad(a, s, events=ev), kernels.reference_weight_grad(a, s)) <= TOL
    bias = torch.randn(7, generator=g, dtype=F64).to(device)
    S, V = kernels.lif_recurrence(3 * x, bias, p, single_spike=False)
    S0, V0 = kernels.reference_lif_recurrence(3 * x, bias, p, False)
    assert torch.equal(S, S0) and rel(V, V0) <= TOL and S.sum() > 0
    U, A = kernels.adjoint_recurrence(a, S, p)
    U0, A0 = kernels.reference_adjoint_recurrence(a, S, p)
    assert rel(U, U0) <= TOL and rel(A, A0) <= TOL
    # replica weights [R, N, K] against inputs [T, R, B, K]
    wr = torch.randn(2, 7, 11, generator=g, dtype=F64).to(device)
    sr = s[:, :, :2]
    evr = kernels.events(sr, wr, max_density=1.0)
    assert rel(kernels.project(sr, wr, events=evr), kernels.reference_project(sr, wr)) <= TOL
    ar = a[:, :, :2]
    assert rel(kernels.weight_grad(ar, sr, events=evr), kernels.reference_weight_grad(ar, sr)) <= TOL


def test_float32_spikes_match_and_gradients_close():
    torch.manual_seed(0)
    net = SpikingNetwork([40, 30, 5], method="antlr", dtype=torch.float32)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(5).add_(0.2)
    x = latency_like(40, (4,), 40).float()
    outs = {}
    for backend in ("reference", "auto"):
        net.zero_grad()
        with kernels.use_backend(backend):
            out = net(x)
            (out.spikes.sum() + (out.shift * torch.linspace(-1, 1, 5)).sum()).backward()
        outs[backend] = (out.layers[0].spikes, out.spikes, net.layers[0].weight.grad.clone())
    r, f = outs["reference"], outs["auto"]
    assert torch.equal(r[0], f[0]) and torch.equal(r[1], f[1])
    assert rel(f[2], r[2]) <= 1e-5


def test_backend_switches():
    assert kernels.get_backend() in kernels.BACKENDS
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.set_backend("fast")
    with kernels.use_backend("reference"):
        assert kernels.get_backend() == "reference"
        assert kernels.events(torch.zeros(3, 2, 4), torch.zeros(5, 4)) is None
    env = dict(os.environ, ANTLR_SNN_KERNELS="reference")
    res = subprocess.run([sys.executable, "-c", "from antlr_snn import kernels; print(kernels.get_backend())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "reference", res.stderr


@pytest.mark.parametrize("device", DEVICES)
def test_binary_check(device):
    x = latency_like(6, (2,), 9, density=0.3, device=device)
    assert kernels.binary_check(x) is None
    y = x.clone()
    y[2, 1, 3] = 0.5
    assert kernels.binary_check(y) == "nonbinary"
    y[4, 0, 0] = float("nan")
    assert kernels.binary_check(y) == "nan"
    with kernels.use_backend("reference"):
        assert kernels.binary_check(x) is None and kernels.binary_check(y) == "nan"


def test_surrogate_bit_identical():
    from antlr_snn.neuron import surrogate
    for p in (LIFParameters.create(), LIFParameters.create(threshold=0.9, surrogate_scale=0.7,
                                                            surrogate_width=2.7)):
        for dtype in (torch.float32, F64):
            v = 2 * torch.randn(7, 3, 50, dtype=dtype, generator=torch.Generator().manual_seed(0))
            assert torch.equal(kernels._surrogate(v, p), surrogate(v, p))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_inference_without_grad(device, method):
    net = build([20, 15, 5], method, device)
    x = latency_like(30, (2,), 20, density=0.05, device=device)
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = net(x)
        fast = net(x)
    for lr, lf in zip(ref.layers, fast.layers):
        assert torch.equal(lr.spikes, lf.spikes) and rel(lf.voltage, lr.voltage) <= TOL
        assert not lf.spikes.requires_grad
    assert ref.layers[0].spikes.sum() > 0
