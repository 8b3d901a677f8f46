"""The layers compose with PyTorch: torch.compile, module hooks, torch.func, export, autocast;
their settings travel with their weights; nothing fails silently."""
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn import (Flatten, LIFConv2d, LIFLayer, SpikeOutput, SpikingNetwork, Unflatten,
                       kernels, losses)

ODD = dict(alpha_v=0.95, alpha_i=0.83, threshold=0.8)


def fc_net():
    torch.manual_seed(0)
    net = SpikingNetwork([20, 16, 4], **ODD)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(3).add_(0.2)
    return net


def conv_net():
    torch.manual_seed(0)
    return SpikingNetwork([Unflatten((2, 6, 6)), LIFConv2d(2, 3, 3, padding=1, **ODD), Flatten(),
                           LIFLayer(108, 4, **ODD)])


def spikes(shape, p=0.3, seed=1):
    return torch.bernoulli(torch.full(shape, p), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make, features", [(fc_net, 20), (conv_net, 72)])
def test_forward_has_no_graph_breaks(make, features):
    net = make()
    explained = torch._dynamo.explain(net)(spikes((15, 2, features)))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


COMPILE_SCRIPT = """
import torch, antlr_snn
from antlr_snn import losses
torch.manual_seed(0)
net = antlr_snn.SpikingNetwork([20, 16, 4], alpha_v=0.95, alpha_i=0.83, threshold=0.8)
with torch.no_grad():
    for layer in net.layers:
        layer.weight.mul_(3).add_(0.2)
x = torch.bernoulli(torch.full((15, 2, 20), 0.3), generator=torch.Generator().manual_seed(1))
labels = torch.tensor([1, 3])
def step(model):
    net.zero_grad()
    out = model(x)
    (losses.latency_loss(out, labels) + losses.at_least_one_spike_loss(out, labels)).backward()
    return out.spikes.detach().clone(), [p.grad.clone() for p in net.parameters()]
compiled = torch.compile(net)
s1, g1 = step(compiled)
s0, g0 = step(net)
assert torch.equal(s0, s1)
assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g0, g1))
print("ok", int(s1.sum()), float(g1[0].abs().sum()) > 0)
"""


def test_torch_compile_works_in_a_cold_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    res = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[0] == "ok" and res.stdout.split()[2] == "True"


def test_full_backward_hooks_are_called():
    net = fc_net()
    seen = []
    net.layers[1].register_full_backward_hook(
        lambda m, gin, gout: seen.append([None if g is None else tuple(g.shape) for g in gout]))
    out = net(spikes((15, 2, 20)))
    (out.spikes.sum() + (out.shift * 2.0).sum()).backward()
    assert seen == [[(15, 2, 4), (15, 2, 4), None, None, None]]


def test_torch_func_grad_equals_backward():
    net = fc_net()
    x, labels = spikes((15, 2, 20)), torch.tensor([1, 3])

    def loss_fn(params):
        out = torch.func.functional_call(net, params, (x,))
        return losses.latency_loss(out, labels) + losses.at_least_one_spike_loss(out, labels)

    params = {k: v.detach() for k, v in net.named_parameters()}
    g = torch.func.grad(loss_fn)(params)
    loss_fn(dict(net.named_parameters())).backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(g[k], p.grad)
    assert any(v.abs().sum() > 0 for v in g.values())


def test_export_sees_the_output_tensors():
    net = fc_net().eval()
    x = spikes((15, 2, 20))
    ep = torch.export.export(net, (x,))
    got = ep.module()(x)
    assert torch.equal(got.spikes, net(x).spikes)
    assert isinstance(net(x), SpikeOutput) and isinstance(net(x), tuple)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_autocast_changes_nothing(backend):
    if not kernels.available(backend):
        pytest.skip(f"{backend} unavailable")
    net = conv_net()
    x = spikes((15, 2, 72))
    with kernels.use_backend(backend):
        plain = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = net(x)
    for a, b in zip(plain.layers, auto.layers):
        assert a.spikes.dtype == torch.float32 and torch.equal(a.spikes, b.spikes)
        assert torch.equal(a.voltage, b.voltage)


def test_double_backward_raises_instead_of_a_silent_zero():
    net = fc_net()
    out = net(spikes((15, 2, 20)))
    labels = torch.tensor([1, 3])
    loss = losses.latency_loss(out, labels) + (out.spikes ** 2).sum()
    (g,) = torch.autograd.grad(loss, net.layers[0].weight, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.pow(2).sum().backward()  # a gradient penalty through the custom backward


def test_settings_travel_with_the_weights():
    a = LIFLayer(6, 4, alpha_v=0.9, threshold=0.7, method="antlr", lambda_act=0.5,
                 lambda_tim=2.0, single_spike=True)
    state = a.state_dict()
    assert state["_extra_state"]["neuron"]["threshold"] == 0.7
    same = LIFLayer(6, 4, alpha_v=0.9, threshold=0.7, method="antlr", lambda_act=0.5,
                    lambda_tim=2.0, single_spike=True)
    same.load_state_dict(state)
    torch.testing.assert_close(same.weight, a.weight)
    for other, name in ((LIFLayer(6, 4, threshold=0.7, method="antlr", lambda_act=0.5,
                                  lambda_tim=2.0, single_spike=True), "alpha_v"),
                        (LIFLayer(6, 4, alpha_v=0.9, threshold=0.7, lambda_act=0.5,
                                  lambda_tim=1.0, single_spike=True), "lambda_tim"),
                        (LIFLayer(6, 4, alpha_v=0.9, threshold=0.7, method="activation",
                                  single_spike=True), "method"),
                        (LIFLayer(6, 4, alpha_v=0.9, threshold=0.7, lambda_act=0.5,
                                  lambda_tim=2.0), "single_spike")):
        with pytest.raises(ValueError, match=f"other neuron settings: .*{name}="):
            other.load_state_dict(state)


def test_method_is_read_only_and_consistent_with_the_lambdas():
    layer = LIFLayer(4, 3, method="timing")
    assert (layer.lambda_act, layer.lambda_tim) == (0.0, 1.0)
    with pytest.raises(AttributeError):
        layer.method = "antlr"
    with pytest.raises(AttributeError):
        layer.lambda_act = 1.0
    assert layer.method == "timing"


def test_printed_layer_shows_changed_constants():
    text = repr(LIFLayer(4, 3, threshold=0.5, alpha_i=0.9, eps_derivative="central"))
    assert "threshold=0.5" in text and "alpha_i=0.9" in text and "central" in text
    assert "alpha_v" not in text  # defaults are left out


@pytest.mark.parametrize("method, loss_name", [
    ("activation", "latency_loss"), ("timing", "count_loss"),
    ("timing", "at_least_one_spike_loss"), ("bptt", "latency_loss")])
def test_a_loss_whose_channel_is_dropped_is_refused(method, loss_name):
    net = SpikingNetwork([6, 3], method=method)
    out = net(spikes((12, 2, 6)))
    labels = torch.tensor([0, 2])
    calls = {"latency_loss": lambda: losses.latency_loss(out, labels),
             "count_loss": lambda: losses.count_loss(out, torch.ones(2, 3)),
             "at_least_one_spike_loss": lambda: losses.at_least_one_spike_loss(out, labels)}
    with pytest.raises(ValueError, match=f"{loss_name} has only .*method '{method}'"):
        calls[loss_name]()
    # a sum where one channel survives stays allowed: the spike-train loss has both
    losses.spike_train_loss(out, torch.zeros_like(out.spikes)).backward()
    # and without gradients (evaluation) nothing is refused
    with torch.no_grad():
        calls[loss_name]()


def test_checks_can_be_switched_off():
    layer = LIFLayer(4, 3)
    bad = torch.full((5, 2, 4), 0.5)
    with pytest.raises(ValueError, match="binary"):
        layer(bad)
    kernels.set_checks(False)
    try:
        layer(bad)  # the caller vouches for the data (e.g. for CUDA-graph capture)
    finally:
        kernels.set_checks(True)
