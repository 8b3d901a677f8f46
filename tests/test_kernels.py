"""Every fast backend gives exactly the spikes and (to rounding) the gradients of the reference.

Each comparison runs the same network twice, once with ``kernels.use_backend("reference")``
(the pure-PyTorch equations of :mod:`antlr_snn.neuron`) and once with a fast backend, in
float64: spikes must be equal, voltages and gradients equal to ~1e-12 relative. The constants
are not the defaults (alpha_v != alpha_i, beta_v != beta_bias, threshold != 1, other surrogate
constants), so that swapped terms cannot hide.
"""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from antlr_snn import LIF, Flatten, LIFConv2d, LIFLayer, SpikingNetwork, kernels
from antlr_snn.errors import UserError
from antlr_snn.neuron import LIFParameters, method_config

F64 = torch.float64
TOL = 1e-12
FAST = [name for name in ("numba",) if kernels.available(name)]
pytestmark = pytest.mark.skipif(not FAST, reason="no fast backend importable")
#: constants unlike the defaults (and unlike each other)
ODD = dict(alpha_v=0.95, alpha_i=0.83, beta_v=0.11, beta_bias=0.37, threshold=0.8,
           surrogate_scale=0.7, surrogate_width=2.3, vstar_min=0.03)


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def sparse_input(T, batch, shape, density=0.02, seed=1):
    """Sparse binary input (the latency code's regime: far below SPARSE_MAX_DENSITY)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((T, *batch, *shape), density, dtype=F64), generator=g)


def build(sizes, method, seed=0, scale=5.0, **kw):
    torch.manual_seed(seed)
    net = SpikingNetwork(sizes, method=method, dtype=F64, **{**ODD, **kw})
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(scale).add_(0.3)  # fire a few times per neuron
            layer.bias.uniform_(-0.05, 0.05)
    return net


def probe(out, seed=5):
    """A loss with arbitrary dL/dS, dL/dt and dL/dV at the output (all channels exercised)."""
    g = torch.Generator().manual_seed(seed)
    rs = torch.randn(out.spikes.shape, generator=g, dtype=F64)
    rd = torch.randn(out.shift.shape, generator=g, dtype=F64)
    loss = 0.1 * (out.voltage ** 2).sum()
    if out.spikes.requires_grad:
        loss = loss + (rs * out.spikes).sum()
    if out.shift.requires_grad:
        loss = loss + (rd * out.shift).sum()
    for lo in out.hidden:
        if lo.spikes.requires_grad:
            loss = loss + (0.5 * lo.spikes).sum()
        if lo.shift.requires_grad:
            loss = loss + (0.3 * lo.shift).sum()
    return loss


def run(net, x, backend):
    net.zero_grad()
    xx = x.detach().clone().requires_grad_(x.requires_grad)
    with kernels.use_backend(backend):
        out = net(xx)
        probe(out).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    if xx.grad is not None:
        grads.append(xx.grad.clone())
    return out, grads


class Spy:
    """Counts the calls of a backend's methods (monkeypatched, for one test)."""

    def __init__(self, monkeypatch, backend):
        self.calls = {}
        obj = kernels.get(backend)
        for name in ("lif_forward", "lif_backward", "bptt_backward", "dense_forward",
                     "dense_backward"):
            if hasattr(obj, name):
                monkeypatch.setattr(obj, name, self._wrap(name, getattr(obj, name)))

    def _wrap(self, name, fn):
        def spy(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return spy


def assert_same(net, x, backend, monkeypatch=None):
    ref_out, ref_g = run(net, x, "reference")
    spy = Spy(monkeypatch, backend) if monkeypatch is not None else None
    fast_out, fast_g = run(net, x, backend)
    for lr, lf in zip(ref_out.layers, fast_out.layers):
        assert torch.equal(lr.spikes, lf.spikes)
        assert rel(lf.voltage, lr.voltage) <= TOL
    assert len(ref_g) == len(fast_g)
    for a, b in zip(fast_g, ref_g):
        assert torch.isfinite(a).all()
        assert rel(a, b) <= TOL
    return ref_out, ref_g, (spy.calls if spy else None)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "activation", "timing", "bptt"])
@pytest.mark.parametrize("single_spike", [False, True])
@pytest.mark.parametrize("eps_derivative", ["backward", "central"])
def test_network_fast_equals_reference(backend, method, single_spike, eps_derivative,
                                       monkeypatch):
    net = build([40, 30, 30, 6], method, single_spike=single_spike, lambda_act=0.7,
                lambda_tim=1.9, eps_derivative=eps_derivative)
    x = sparse_input(50, (3,), (40,)).requires_grad_()
    out, grads, calls = assert_same(net, x, backend, monkeypatch)
    assert out.layers[0].spikes.sum() > 0 and out.spikes.sum() > 0
    assert all(g.abs().sum() > 0 for g in grads[:-1])
    assert calls["dense_forward"] == 3  # every layer ran fused on the fast backend
    assert calls["lif_backward" if method != "bptt" else "bptt_backward"] == 3


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "timing", "bptt"])
def test_conv_network_fast_equals_reference(backend, method, monkeypatch):
    torch.manual_seed(3)
    net = SpikingNetwork([LIFConv2d(2, 4, 3, stride=2, padding=1, method=method, **ODD,
                                    dtype=F64),
                          LIF(torch.nn.AvgPool2d(2), method=method, **ODD),
                          Flatten(), LIFLayer(16, 5, method=method, dtype=F64, **ODD)])
    with torch.no_grad():
        net.layers[0].weight.mul_(4).add_(0.2)
        net.layers[3].weight.mul_(6).add_(0.4)
    x = sparse_input(40, (2,), (2, 8, 8), density=0.1).requires_grad_()
    out, _, calls = assert_same(net, x, backend, monkeypatch)
    assert out.layers[0].spikes.sum() > 0 and out.layers[1].spikes.sum() > 0
    assert calls["lif_forward"] == 2 and calls["dense_forward"] == 1


@pytest.mark.parametrize("backend", FAST)
def test_fused_dense_path_equals_the_generic_synapse_path(backend, monkeypatch):
    """A fully connected layer fused (gather rows per spike) and as ``synapse -> neuron``."""
    net = build([30, 20, 5], "antlr", lambda_act=0.4, lambda_tim=2.2)
    x = sparse_input(40, (2,), (30,)).requires_grad_()
    with kernels.use_backend(backend):
        fused_out, fused_g = run(net, x, backend)
    monkeypatch.setattr(type(kernels.get(backend)), "fuses_dense", False)
    generic_out, generic_g = run(net, x, backend)
    for a, b in zip(fused_out.layers, generic_out.layers):
        assert torch.equal(a.spikes, b.spikes)
    for a, b in zip(fused_g, generic_g):
        assert rel(a, b) <= TOL


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("density", [0.0, 0.3])
def test_silent_and_dense_inputs(backend, density):
    """No input spike at all, and input denser than the sparse path takes (BLAS products)."""
    net = build([25, 12, 4], "antlr")
    x = sparse_input(20, (2,), (25,), density=density).requires_grad_()
    assert_same(net, x, backend)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "bptt"])
@pytest.mark.parametrize("T, B", [(1, 1), (2, 3), (7, 1)])
def test_tiny_shapes(backend, method, T, B):
    net = build([6, 5, 3], method)
    assert_same(net, sparse_input(T, (B,), (6,), density=0.5).requires_grad_(), backend)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "timing", "bptt"])
def test_replicas_fast_equals_reference(backend, method):
    torch.manual_seed(0)
    net = SpikingNetwork([10, 12, 4], method=method, replicas=3, dtype=F64, **ODD)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(5).add_(0.3)
    x = sparse_input(30, (3, 2), (10,), density=0.1)
    assert_same(net, x, backend)


@pytest.mark.parametrize("backend", FAST)
def test_parallel_kernels_equal_the_serial_ones(backend, monkeypatch):
    """Large work runs on several threads: the same numbers as one thread."""
    import antlr_snn.kernels.numba_cpu as nc
    net = build([64, 48, 8], "antlr", scale=3.0)
    x = sparse_input(60, (8,), (64,), density=0.05).requires_grad_()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(nc, "PARALLEL_MIN_WORK", 1)
        par_out, par_g = run(net, x, backend)
        monkeypatch.setattr(nc, "PARALLEL_MIN_WORK", 1 << 60)
        ser_out, ser_g = run(net, x, backend)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(par_out.layers, ser_out.layers):
        assert torch.equal(a.spikes, b.spikes) and torch.equal(a.voltage, b.voltage)
    for a, b in zip(par_g, ser_g):
        assert rel(a, b) <= TOL


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_interface_functions_directly(backend, method):
    """forward / backward / bptt_backward of the interface equal the reference's."""
    be, ref = kernels.get(backend), kernels.get("reference")
    p = LIFParameters.create(**ODD)
    cfg = method_config(method, 0.6, 1.7, eps_derivative="central")
    g = torch.Generator().manual_seed(2)
    x = 1.5 * torch.rand(30, 3, 2, 5, dtype=F64, generator=g)
    bias = torch.rand(2, 5, dtype=F64, generator=g) * 0.1
    fa, fb = be.lif_forward(x, bias, p, False, True), ref.lif_forward(x, bias, p, False, True)
    assert torch.equal(fa[0], fb[0]) and rel(fa[1], fb[1]) <= TOL and rel(fa[2], fb[2]) <= TOL
    S, V, I = fb
    gs, gd, gv = (torch.randn(S.shape, dtype=F64, generator=g) for _ in range(3))
    if method == "bptt":
        a, b = be.bptt_backward(gs, gv, S, V, I, p, False), ref.bptt_backward(gs, gv, S, V, I, p, False)
    else:
        a, b = (be.lif_backward(gs, gd, gv, S, V, p, cfg, True),
                ref.lif_backward(gs, gd, gv, S, V, p, cfg, True))
    for u, v in zip(a, b):
        assert u.shape == v.shape and rel(u, v) <= TOL


def test_float32_spikes_match_and_gradients_close():
    net = SpikingNetwork([30, 20, 5], method="antlr", **ODD)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(5).add_(0.3)
    x = sparse_input(40, (2,), (30,)).float()
    outs = {}
    for backend in ["reference", *FAST]:
        net.zero_grad()
        with kernels.use_backend(backend):
            out = net(x)
            (out.spikes.sum() + (out.layers[0].spikes * 0.1).sum()
             + (torch.arange(40.0)[:, None, None] * out.shift).sum()).backward()
        outs[backend] = (out.layers[0].spikes, out.spikes, net.layers[0].weight.grad.clone())
    r = outs["reference"]
    for f in (outs[b] for b in FAST):
        assert torch.equal(r[0], f[0]) and torch.equal(r[1], f[1])
        assert rel(f[2], r[2]) <= 1e-5


def test_backend_choice_and_switches():
    assert kernels.get_backend() in kernels.BACKENDS
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.set_backend("fast")
    assert kernels.backend_for(torch.zeros(3)).name == "numba"
    assert kernels.backend_for(torch.zeros(3, dtype=torch.float16)).name == "reference"
    with kernels.use_backend("reference"):
        assert kernels.backend_for(torch.zeros(3)).name == "reference"
    with kernels.use_backend("numba"), pytest.raises(ValueError, match="cannot run on cpu int64"):
        kernels.backend_for(torch.zeros(3, dtype=torch.int64))
    env = dict(os.environ, ANTLR_SNN_KERNELS="reference")
    res = subprocess.run([sys.executable, "-c", "from antlr_snn import kernels; import torch; "
                          "print(kernels.get_backend(), kernels.backend_for(torch.zeros(1)).name)"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["reference", "reference"], res.stderr


def test_a_broken_numba_warns_once_and_falls_back(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("numba is broken here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(kernels, "_loaded", {"reference": kernels._reference})
    monkeypatch.setattr(kernels, "_failed", {})
    monkeypatch.delitem(sys.modules, "antlr_snn.kernels.numba_cpu", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_numba)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = kernels.backend_for(torch.zeros(3)).name
        second = kernels.backend_for(torch.zeros(3)).name
    assert first == second == "reference"
    msgs = [str(w.message) for w in caught if "numba backend is unavailable" in str(w.message)]
    assert len(msgs) == 1 and "numba is broken here" in msgs[0] and "4x slower" in msgs[0]


def test_binary_check():
    x = sparse_input(6, (2,), (9,), density=0.3)
    assert kernels.binary_check(x) is None
    y = x.clone()
    y[2, 1, 3] = 0.5
    assert kernels.binary_check(y) == "nonbinary"
    y[4, 0, 0] = float("nan")
    assert kernels.binary_check(y) == "nan"
    with kernels.use_backend("reference"):
        assert kernels.binary_check(x) is None and kernels.binary_check(y) == "nan"
    assert kernels.binary_check(x.to(torch.uint8)) is None
    # a forced backend that cannot take a tensor: the check gives way, a kernel call refuses
    bad = y.to(torch.float16)
    with kernels.use_backend("numba"):
        assert kernels.binary_check(bad) == "nan"
        assert kernels.binary_check(x.to(torch.int8)) is None
        with pytest.raises(UserError, match="'numba' cannot run on cpu float16"):
            kernels.backend_for(bad)


def test_surrogate_bit_identical():
    from antlr_snn.kernels.numba_cpu import surrogate as fast_surrogate
    from antlr_snn.neuron import surrogate
    for p in (LIFParameters.create(), LIFParameters.create(**ODD)):
        for dtype in (torch.float32, F64):
            v = 2 * torch.randn(7, 3, 50, dtype=dtype, generator=torch.Generator().manual_seed(0))
            assert torch.equal(fast_surrogate(v, p), surrogate(v, p))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_inference_without_grad(backend, method):
    net = build([20, 15, 5], method)
    x = sparse_input(30, (2,), (20,), density=0.05)
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = net(x)
        with kernels.use_backend(backend):
            fast = net(x)
    for lr, lf in zip(ref.layers, fast.layers):
        assert torch.equal(lr.spikes, lf.spikes) and rel(lf.voltage, lr.voltage) <= TOL
        assert not lf.spikes.requires_grad
    assert ref.layers[0].spikes.sum() > 0


def test_numba_caches_into_the_user_cache_folder(tmp_path):
    """Compiled kernels go to $XDG_CACHE_HOME/antlr-snn/numba, not into the package."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-c", "import torch, antlr_snn, numba; "
                          "antlr_snn.SpikingNetwork([5, 3])(torch.zeros(4, 1, 5)); "
                          "print(numba.config.CACHE_DIR)"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = tmp_path / "antlr-snn" / "numba"
    assert res.stdout.strip() == str(folder)
    assert list(folder.rglob("*.nbi")), "no cache index written"
