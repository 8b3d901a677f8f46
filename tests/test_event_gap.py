"""benchmarks/event_gap.py: the probe's split of dL/dW into the two terms of Eq. 8 adds up to
autograd's gradient, and its clip figures are those of that gradient (tiny network)."""
import argparse

import torch

from antlr_snn import training
from benchmarks import event_gap


def test_probe_terms_add_up_to_autograd(one_thread):
    cfg = training.TrainConfig(method="antlr", dataset="mnist", hidden=[7], num_steps=40,
                               grad_clip=0.05)
    args = argparse.Namespace(beta=0.3, alo_weight=0.2, count_target=None, vstar_min=None,
                              vstar_min_out=0.05, lambda_act=None, lambda_tim=None)
    torch.manual_seed(0)
    net = event_gap.build(cfg, 12, args)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(4.0).add_(0.3)
    x = torch.bernoulli(torch.full((40, 3, 12), 0.3), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 4, 9])
    rec = event_gap.probe(net, x, y, cfg, args)
    out = net(x)
    total = sum(event_gap.loss_terms(out, y, net, cfg, args).values())
    total.backward()
    assert net.layers[-1].params.vstar_min == 0.05 and net.layers[0].params.vstar_min == 0.01
    for lay, layer in zip(rec["layers"], net.layers):
        g = layer.weight.grad
        assert lay["check_rel_err"] < 1e-5
        assert abs(lay["W_norm"] - float(g.norm())) <= 1e-4 * float(g.norm())
        assert lay["W_clip_frac"] == float((g.abs() > 0.05).float().mean())
    assert rec["layers"][-1]["spikes_per_sample"] > 0
    assert set(rec["loss"]) == {"latency", "at_least_one"}
