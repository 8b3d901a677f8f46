"""Property-based numerical safety: no NaN or Inf anywhere, for every method and setting."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antlr_snn import SpikingNetwork, losses

METHOD = st.sampled_from(["antlr", "activation", "timing", "bptt"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=METHOD,
    single_spike=st.booleans(),
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    T=st.integers(1, 25),
    B=st.integers(1, 3),
    density=st.floats(0.0, 1.0),
    alpha_v=st.floats(0.05, 1.0),
    alpha_i=st.floats(0.05, 1.0),
    threshold=st.floats(0.05, 5.0),
    vstar_min=st.floats(1e-4, 1.0),
    lambda_act=st.floats(0.0, 3.0),
    lambda_tim=st.floats(0.0, 3.0),
    weight_scale=st.floats(0.0, 50.0),
    bias=st.floats(-2.0, 2.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_no_nan_or_inf(method, single_spike, sizes, T, B, density, alpha_v, alpha_i, threshold,
                       vstar_min, lambda_act, lambda_tim, weight_scale, bias, dtype, seed):
    torch.manual_seed(seed)
    net = SpikingNetwork(sizes, method=method, single_spike=single_spike, alpha_v=alpha_v,
                         alpha_i=alpha_i, threshold=threshold, vstar_min=vstar_min,
                         lambda_act=lambda_act, lambda_tim=lambda_tim, dtype=dtype)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(weight_scale)
            layer.bias.fill_(bias)
    x = torch.bernoulli(torch.full((T, B, sizes[0]), density, dtype=dtype))
    out = net(x)
    n_out = sizes[-1]
    labels = torch.randint(0, n_out, (B,))
    target = torch.bernoulli(torch.full(out.spikes.shape, 0.2, dtype=dtype))
    cfg = net.layers[-1].cfg
    terms = [losses.no_spike_penalty(net, out), 1e-3 * out.voltage.sum()]
    # each loss only where the output layer keeps its channel (else it must refuse, loudly)
    for needs, loss_fn in ((cfg.activation_channel,
                            lambda: losses.count_loss(out, torch.ones(B, n_out, dtype=dtype))),
                           (cfg.activation_channel,
                            lambda: losses.at_least_one_spike_loss(out, labels)),
                           (cfg.timing_channel, lambda: losses.latency_loss(out, labels)),
                           (cfg.activation_channel or cfg.timing_channel,
                            lambda: losses.spike_train_loss(out, target, tau=3.0))):
        if needs:
            terms.append(loss_fn())
        else:
            with pytest.raises(ValueError, match="gradient would be zero"):
                loss_fn()
    loss = sum(terms)
    assert torch.isfinite(loss)
    loss.backward()
    for lo in out.layers:
        s = lo.spikes.detach()
        assert torch.isfinite(s).all() and ((s == 0) | (s == 1)).all()
        if single_spike:
            assert s.sum(0).max() <= 1
    for name, prm in net.named_parameters():
        assert prm.grad is None or torch.isfinite(prm.grad).all(), name
