"""The triton backend gives exactly the spikes and (to rounding) the gradients of the reference.

Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by the
root ``conftest.py`` before the kernels are defined) on CPU tensors; with CUDA the same tests
run on the GPU, plus a CUDA-graph capture of a whole training step. Each comparison runs the
same network with ``kernels.use_backend("reference")`` and ``"triton"``: spikes must be
equal, gradients within 1e-5 relative in float32 (1e-12 in float64). The constants are not
the defaults (alpha_v != alpha_i, beta_v != beta_bias, ...), so swapped terms cannot hide.
Shapes are small: the interpreter runs every operation of a kernel as a numpy call.
"""
import os
import subprocess
import sys

import pytest
import torch

import antlr_snn
from antlr_snn import LIF, Flatten, LIFConv2d, LIFLayer, SpikingNetwork, kernels, losses
from antlr_snn.neuron import LIFParameters, method_config

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
F32, F64 = torch.float32, torch.float64
TOL = {F32: 1e-5, F64: 1e-12}


def _usable() -> bool:
    if not kernels.available("triton"):
        return False
    return kernels.get("triton").supports(torch.zeros(1, device=DEV))


pytestmark = pytest.mark.skipif(not _usable(), reason="triton missing, or no CUDA and "
                                                      "TRITON_INTERPRET unset")
#: constants unlike the defaults (and unlike each other)
ODD = dict(alpha_v=0.95, alpha_i=0.83, beta_v=0.11, beta_bias=0.37, threshold=0.8,
           surrogate_scale=0.7, surrogate_width=2.3, vstar_min=0.03)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def spikes(T, batch, shape, density, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((T, *batch, *shape), density, dtype=dtype),
                           generator=g).to(DEV)


def scaled(net, w_scale, w_shift):
    with torch.no_grad():
        for layer in net.spiking_layers:
            if getattr(layer, "weight", None) is not None:
                layer.weight.mul_(w_scale).add_(w_shift)  # fire a few times per neuron
            if getattr(layer, "bias", None) is not None:
                layer.bias.uniform_(-0.05, 0.05)
    return net


def probe(out, seed=5):
    """A loss with arbitrary dL/dS, dL/dt and dL/dV at the output and on the hidden layers."""
    g = torch.Generator().manual_seed(seed)
    rs, rd = (torch.randn(out.spikes.shape, generator=g).to(out.spikes) for _ in range(2))
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
    xx = x.detach().clone().requires_grad_()
    with kernels.use_backend(backend):
        out = net(xx)
        probe(out).backward()
    return out, [p.grad.clone() for p in net.parameters()] + [xx.grad.clone()]


def assert_same(net, x, dtype):
    ref_out, ref_g = run(net, x, "reference")
    tri_out, tri_g = run(net, x, "triton")
    for lr, lt in zip(ref_out.layers, tri_out.layers):
        assert torch.equal(lr.spikes, lt.spikes)
        assert rel(lt.voltage, lr.voltage) <= TOL[dtype]
    for a, b in zip(tri_g, ref_g):
        assert torch.isfinite(a).all() and rel(a, b) <= TOL[dtype]
    return ref_out, ref_g


@pytest.mark.parametrize("method, single_spike, eps_derivative, dtype", [
    ("antlr", False, "central", F32), ("antlr", True, "backward", F32),
    ("antlr", False, "backward", F64), ("antlr", True, "central", F64),
    ("activation", False, "backward", F32), ("timing", True, "central", F32),
    ("bptt", False, "backward", F32), ("bptt", True, "backward", F64)])
def test_dense_network_equals_reference(method, single_spike, eps_derivative, dtype):
    torch.manual_seed(0)
    net = scaled(SpikingNetwork([16, 12, 5], method=method, single_spike=single_spike,
                                lambda_act=0.7, lambda_tim=1.9, eps_derivative=eps_derivative,
                                dtype=dtype, device=DEV, **ODD), 5.0, 0.3)
    out, grads = assert_same(net, spikes(24, (2,), (16,), 0.08, dtype), dtype)
    assert out.layers[0].spikes.sum() > 0 and out.spikes.sum() > 0
    assert all(g.abs().sum() > 0 for g in grads[:-1])


@pytest.mark.parametrize("method, dtype", [("antlr", F32), ("timing", F64), ("bptt", F32)])
def test_conv_network_equals_reference(method, dtype):
    """A convolution and a pooling synapse (cuDNN / torch) before the triton neuron."""
    torch.manual_seed(3)
    net = SpikingNetwork([LIFConv2d(2, 3, 3, stride=2, padding=1, method=method, dtype=dtype,
                                    device=DEV, **ODD),
                          LIF(torch.nn.AvgPool2d(2), method=method, **{**ODD, "threshold": 0.1}),
                          Flatten(), LIFLayer(12, 4, method=method, dtype=dtype, device=DEV,
                                              **ODD)])
    with torch.no_grad():
        net.layers[0].weight.mul_(4).add_(0.2)
        net.layers[3].weight.mul_(6).add_(0.4)
    out, _ = assert_same(net, spikes(20, (2,), (2, 8, 8), 0.1, dtype), dtype)
    assert out.layers[0].spikes.sum() > 0 and out.layers[1].spikes.sum() > 0


@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_replicas_equal_reference(method):
    torch.manual_seed(0)
    net = SpikingNetwork([10, 8, 4], method=method, replicas=3, device=DEV, **ODD)
    scaled(net, 5.0, 0.3)
    assert_same(net, spikes(20, (3, 2), (10,), 0.1, F32), F32)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("method, single_spike, eps_derivative", [
    ("antlr", False, "central"), ("antlr", True, "backward"), ("antlr", True, "central"),
    ("bptt", False, "backward"), ("bptt", True, "backward")])
def test_interface_functions_directly(method, single_spike, eps_derivative, dtype):
    """forward / backward / bptt_backward of the interface equal the reference's, with a
    broadcast bias, dL/dV, and the central kernel derivative's Q trace."""
    be, ref = kernels.get("triton"), kernels.get("reference")
    p = LIFParameters.create(**ODD)
    cfg = method_config(method, 0.6, 1.7, single_spike, eps_derivative)
    g = torch.Generator().manual_seed(2)
    x = 1.5 * torch.rand(30, 3, 2, 5, dtype=dtype, generator=g)
    x[:, 0, 1] *= 8  # some lanes fire at consecutive steps (V* after a reset)
    x, bias = x.to(DEV), (torch.rand(2, 5, dtype=dtype, generator=g) * 0.1).to(DEV)
    fa = be.lif_forward(x, bias, p, single_spike, True)
    fb = ref.lif_forward(x, bias, p, single_spike, True)
    assert torch.equal(fa[0], fb[0]) and fa[0].sum() > 10
    assert single_spike or (fa[0][1:] * fa[0][:-1]).sum() > 0
    assert rel(fa[1], fb[1]) <= TOL[dtype] and rel(fa[2], fb[2]) <= TOL[dtype]
    S, V, I = fb
    gs, gd, gv = (torch.randn(S.shape, dtype=dtype, generator=g).to(DEV) for _ in range(3))
    if method == "bptt":
        a, b = be.bptt_backward(gs, gv, S, V, I, p, single_spike), \
            ref.bptt_backward(gs, gv, S, V, I, p, single_spike)
    else:
        a, b = be.lif_backward(gs, gd, gv, S, V, p, cfg, True), \
            ref.lif_backward(gs, gd, gv, S, V, p, cfg, True)
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype and rel(u, v) <= TOL[dtype]


def test_missing_gradients_and_channels():
    """Gradients that do not arrive (None), a dropped channel (lambda 0) and no A_diff."""
    be, ref = kernels.get("triton"), kernels.get("reference")
    p = LIFParameters.create(**ODD)
    g = torch.Generator().manual_seed(4)
    x = (1.2 * torch.rand(25, 4, 6, generator=g)).to(DEV)
    S, V, _ = ref.lif_forward(x, torch.zeros(6, device=DEV), p, False, False)
    gs, gd = (torch.randn(S.shape, generator=g).to(DEV) for _ in range(2))
    for args, cfg, want in (((None, gd, None), method_config("antlr", 0.5, 1.3), True),
                            ((gs, None, None), method_config("antlr", 0.5, 1.3), False),
                            ((gs, gd, None), method_config("timing"), True),
                            ((gs, gd, None), method_config("activation"), False)):
        a = be.lif_backward(*args, S, V, p, cfg, want)
        b = ref.lif_backward(*args, S, V, p, cfg, want)
        assert (a[1] is None) == (b[1] is None) == (not want)
        for u, v in zip(a, b):
            if v is not None:
                assert rel(u, v) <= 1e-5
    GI, gvs = be.bptt_backward(None, gs, S, V, torch.zeros_like(S), p, False)
    GI_r, gvs_r = ref.bptt_backward(None, gs, S, V, torch.zeros_like(S), p, False)
    assert rel(GI, GI_r) <= 1e-5 and rel(gvs, gvs_r) <= 1e-5


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_inputs_run_with_float32_state(half):
    """bfloat16/float16 currents: the float32 recurrence on their exact values, results
    stored in the input dtype."""
    be, ref = kernels.get("triton"), kernels.get("reference")
    p = LIFParameters.create(**ODD)
    g = torch.Generator().manual_seed(6)
    x = (1.5 * torch.rand(40, 3, 7, generator=g)).to(DEV, half)
    bias = (0.1 * torch.rand(7, generator=g)).to(DEV)
    S, V, _ = be.lif_forward(x, bias, p, False, False)
    S32, V32, _ = ref.lif_forward(x.float(), bias, p, False, False)
    assert S.dtype == V.dtype == half
    assert torch.equal(S.float(), S32) and S32.sum() > 10
    assert rel(V.float(), V32) <= 1e-2
    gs, gd = (torch.randn(S.shape, generator=g).to(DEV, half) for _ in range(2))
    cfg = method_config("antlr", 0.6, 1.7, eps_derivative="central")
    A, Ad, us = be.lif_backward(gs, gd, None, S, V, p, cfg, True)
    A32, Ad32, us32 = ref.lif_backward(gs.float(), gd.float(), None, S.float(), V.float(), p,
                                       cfg, True)
    assert A.dtype == Ad.dtype == us.dtype == half
    for u, v in ((A, A32), (Ad, Ad32), (us, us32)):
        assert rel(u.float(), v) <= 1e-2


def test_training_under_autocast():
    """bfloat16 autocast: the layers run in their weights' dtype on every backend (autocast
    does not change them), so triton and the reference agree as without autocast."""
    grads = {}
    for backend in ("triton", "reference"):
        torch.manual_seed(0)
        net = scaled(SpikingNetwork([16, 12, 5], device=DEV, threshold=0.3), 4.0, 0.2)
        labels = torch.tensor([1, 2], device=DEV)
        with kernels.use_backend(backend), torch.autocast(DEV, dtype=torch.bfloat16):
            out = net(spikes(20, (2,), (16,), 0.1, F32))
            loss = (losses.latency_loss(out, labels)
                    + losses.at_least_one_spike_loss(out, labels))
        loss.backward()
        assert out.spikes.dtype == F32 and out.layers[0].spikes.sum() > 0
        grads[backend] = [p.grad for p in net.parameters()]
        assert all(g.dtype == F32 and torch.isfinite(g).all() for g in grads[backend])
    for a, b in zip(grads["triton"], grads["reference"]):  # both float32
        assert rel(a, b) <= 1e-5


def test_empty_batch_and_one_step():
    be, ref = kernels.get("triton"), kernels.get("reference")
    p = LIFParameters.create(**ODD)
    S, V, I = be.lif_forward(torch.ones(5, 0, 3, device=DEV), torch.zeros(3, device=DEV), p,
                             False, True)
    assert S.shape == V.shape == I.shape == (5, 0, 3)
    A, Ad, us = be.lif_backward(S, S, None, S, V, p, method_config(), True)
    assert A.shape == (5, 0, 3) and us.shape == (0, 3)
    x = torch.full((1, 2, 3), 9.0, device=DEV)
    assert torch.equal(be.lif_forward(x, torch.zeros(3, device=DEV), p, False, False)[0],
                       ref.lif_forward(x, torch.zeros(3, device=DEV), p, False, False)[0])


def test_backend_choice_and_errors():
    be = kernels.get("triton")
    assert be.name == "triton" and not be.fuses_dense
    assert not be.supports(torch.zeros(3, dtype=torch.int64, device=DEV))
    with kernels.use_backend("triton"):
        assert kernels.backend_for(torch.zeros(3, device=DEV)).name == "triton"
        with pytest.raises(antlr_snn.errors.UserError, match="cannot run on .* int64"):
            kernels.backend_for(torch.zeros(3, dtype=torch.int64, device=DEV))
    auto = kernels.backend_for(torch.zeros(3, device=DEV)).name
    assert auto == ("triton" if CUDA else "numba")  # auto: triton for CUDA tensors only
    x = spikes(6, (2,), (9,), 0.3, F32)
    with kernels.use_backend("triton"):
        assert kernels.binary_check(x) is None
        y = x.clone()
        y[2, 1, 3] = 0.5
        assert kernels.binary_check(y) == "nonbinary"
        y[4, 0, 0] = float("nan")
        assert kernels.binary_check(y) == "nan"
        with pytest.raises(antlr_snn.errors.UserError, match="must be binary"):
            LIFLayer(9, 2, device=DEV)(y.nan_to_num())


COMPILE = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from antlr_snn.kernels import triton_gpu as tg
assert not tg.INTERPRETED


def ptx(fn, sig, **consts):
    sig = {**sig, **{k: "constexpr" for k in consts}}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=tg.LAUNCH_OPTIONS).asm["ptx"]


for dt in ("fp32", "fp64", "bf16"):
    P, C = "*" + dt, "*fp64" if dt == "fp64" else "*fp32"
    ct = tl.float64 if dt == "fp64" else tl.float32
    lanes = dict(T="i32", L="i32")
    fwd = ptx(tg._forward_kernel, dict(x_ptr=P, bterm_ptr=C, c_ptr=C, s_ptr=P, v_ptr=P,
              i_ptr=P, **lanes), SINGLE=True, KEEP_I=True, CT=ct, BLOCK=128)
    assert "fma" not in fwd, "the forward must not contract mul + add (spikes change)"
    bwd = ptx(tg._backward_kernel, dict(gs_ptr=P, gd_ptr=P, gv_ptr=P, s_ptr=P, v_ptr=P,
              c_ptr=C, a_ptr=P, ad_ptr=P, usum_ptr=P, **lanes), USE_ACT=True, USE_TIM=True,
              USE_GV=True, SINGLE=True, WANT_AD=True, CENTRAL=True, CT=ct,
              F64=dt == "fp64", BLOCK=128)
    if dt != "fp64":
        assert "div.rn.f32" in bwd and "div.full" not in bwd and "div.approx" not in bwd
    ptx(tg._bptt_kernel, dict(gs_ptr=P, gv_ptr=P, s_ptr=P, v_ptr=P, i_ptr=P, c_ptr=C, gi_ptr=P,
        gvsum_ptr=P, **lanes), USE_GS=True, USE_GV=True, SINGLE=True, CT=ct, BLOCK=128)
    ptx(tg._binary_kernel, dict(x_ptr=P, flag_ptr="*i32", N="i64"), BLOCK=1024)
print("compiled")
"""


def test_kernels_compile_for_a_gpu():
    """The interpreter is more forgiving than the compiler: compile every kernel for sm_90
    (frontend, MLIR, ptxas; no GPU needed) and check the PTX: no contracted multiply-add in
    the forward, round-to-nearest division."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and "compiled" in res.stdout, res.stderr[-3000:]


def test_a_missing_triton_warns_once_and_cuda_takes_the_reference(monkeypatch):
    import builtins
    import warnings
    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("No module named 'triton'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(kernels, "_loaded", {"reference": kernels._reference})
    monkeypatch.setattr(kernels, "_failed", {})
    monkeypatch.delitem(sys.modules, "antlr_snn.kernels.triton_gpu", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_triton)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = torch.empty(3, device="meta")  # not a CPU tensor: auto asks for triton
        assert kernels.backend_for(meta).name == kernels.backend_for(meta).name == "reference"
    msgs = [str(w.message) for w in caught if "triton backend is unavailable" in str(w.message)]
    assert len(msgs) == 1 and "antlr-snn[gpu]" in msgs[0]


# ----------------------------------------------------------------------------- CUDA only
def _train_step(net, opt, x, labels):
    opt.zero_grad(set_to_none=False)
    out = net(x)
    loss = losses.latency_loss(out, labels) + losses.at_least_one_spike_loss(out, labels)
    loss.backward()
    opt.step()
    return loss


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_training_step_has_no_host_sync_with_checks_off():
    torch.manual_seed(0)
    net = scaled(SpikingNetwork([20, 16, 5], method="antlr", device=DEV), 5.0, 0.3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True)
    x, labels = spikes(30, (4,), (20,), 0.1, F32), torch.tensor([0, 1, 2, 3], device=DEV)
    antlr_snn.set_checks(False)
    try:
        _train_step(net, opt, x, labels)  # compiles the kernels, caches the constants
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            _train_step(net, opt, x, labels)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        antlr_snn.set_checks(True)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_training_step_captured_in_a_cuda_graph():
    """A whole step (forward, loss, backward, Adam) replayed from a CUDA graph equals the
    same step run eagerly from the same state."""
    torch.manual_seed(0)
    net = scaled(SpikingNetwork([20, 16, 5], method="antlr", device=DEV, **ODD), 5.0, 0.3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True)
    x, labels = spikes(30, (4,), (20,), 0.1, F32), torch.tensor([0, 1, 2, 3], device=DEV)
    antlr_snn.set_checks(False)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                _train_step(net, opt, x, labels)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _train_step(net, opt, x, labels)
        tensors = [*net.parameters()] + [v for s in opt.state.values() for v in s.values()
                                         if isinstance(v, torch.Tensor)]
        before = [t.detach().clone() for t in tensors]
        graph.replay()
        torch.cuda.synchronize()
        replayed = [t.detach().clone() for t in tensors]
        with torch.no_grad():
            for t, b in zip(tensors, before):
                t.copy_(b)
        _train_step(net, opt, x, labels)
        torch.cuda.synchronize()
    finally:
        antlr_snn.set_checks(True)
    assert any(not torch.equal(r, b) for r, b in zip(replayed, before))
    for r, t in zip(replayed, tensors):
        assert torch.allclose(r, t, rtol=1e-6, atol=1e-7)
