"""The way back for :func:`antlr_snn.nir.load`: NIR nodes to antlr-snn layers.

The mapping of the constants is the one the module docstring of :mod:`antlr_snn.nir` states;
this file applies it in reverse and refuses, naming the node, what the neuron cannot express.

Example:
    >>> import nir, numpy as np
    >>> chain(nir, nir.NIRGraph.from_list(nir.Linear(weight=np.ones((2, 3)))))
    ['input', 'linear', 'output']
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from antlr_snn.errors import UserError
from antlr_snn.layers import LIF, LIFConv2d, LIFLayer

#: The neuron keywords kept in a CubaLIF node's metadata by export, for an exact way back.
KEPT = ("alpha_v", "alpha_i", "beta_v", "beta_i", "beta_bias", "threshold", "surrogate_scale",
        "surrogate_width", "vstar_min", "method", "lambda_act", "lambda_tim", "eps_derivative")


def pair(v) -> tuple:
    """``(a, b)`` of an int, a pair or a NIR array of one or two entries."""
    a = np.array(v).reshape(-1)
    return (int(a[0]), int(a[-1]))


def chain(nir, graph) -> list:
    """The node names from the Input to the Output of a chain graph."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise UserError(f"the NIR graph has {len(inputs)} Input nodes; only graphs with one "
                        f"input load")
    succ, pred = {}, {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    for k in graph.nodes:
        if len(succ.get(k, ())) > 1 or len(pred.get(k, ())) > 1:
            raise UserError(f"NIR node {k!r} has several inputs or outputs; only chains "
                            f"(feed-forward, no branches or recurrence) load")
    path = inputs
    while succ.get(path[-1]):
        if succ[path[-1]][0] in path:
            raise UserError(f"NIR node {path[-1]!r} feeds back to {succ[path[-1]][0]!r}; "
                            f"recurrent graphs do not load")
        path.append(succ[path[-1]][0])
    if not isinstance(graph.nodes[path[-1]], nir.Output) or len(path) != len(graph.nodes):
        rest = sorted(set(graph.nodes) - set(path)) or [path[-1]]
        raise UserError(f"the NIR graph is not one chain from its Input to an Output "
                        f"(node {rest[0]!r} is off it)")
    return path


def synapse_module(nir, name, node) -> nn.Module:
    """The torch module of a NIR synapse node (``nn.Identity`` for none)."""
    if node is None:
        return nn.Identity()
    if isinstance(node, (nir.Linear, nir.Affine)):
        w = torch.from_numpy(np.array(node.weight))
        if w.dim() != 2:
            raise UserError(f"NIR node {name!r}: weight of shape {tuple(w.shape)}; only 2-d "
                            f"weights load")
        b = getattr(node, "bias", None)
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
    elif isinstance(node, nir.Conv2d):
        w = torch.from_numpy(np.array(node.weight))
        pad = node.padding if isinstance(node.padding, str) else pair(node.padding)
        groups, b = int(node.groups), node.bias
        m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                      pair(node.stride), pad, pair(node.dilation), groups,
                      bias=b is not None, dtype=w.dtype)
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        return nn.AvgPool2d(*map(pair, (node.kernel_size, node.stride, node.padding)),
                            divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    else:
        raise UserError(f"NIR node {name!r} is a {type(node).__name__}, which antlr-snn does "
                        f"not load (it takes Linear, Affine, Conv2d, AvgPool2d, SumPool2d, "
                        f"Flatten and CubaLIF)")
    m.weight.data = w
    if b is not None:
        m.bias.data = torch.from_numpy(np.array(b)).to(w.dtype)
    return m


def constants(name, node, shape, dt: float, saved) -> tuple:
    """The neuron keywords and V_bias ``[*shape]`` of a CubaLIF node (module docstring)."""
    def one(field, uniform=True):
        try:
            a = np.broadcast_to(np.asarray(getattr(node, field), np.float64), shape)
        except ValueError:
            raise UserError(f"NIR node {name!r}: {field} of shape "
                            f"{np.shape(getattr(node, field))} does not fit the {shape} "
                            f"outputs of the synapse before it") from None
        if uniform and not np.allclose(a, a.flat[0], rtol=1e-6, atol=0):
            raise UserError(f"NIR node {name!r}: {field} differs between neurons ({a.min():g} "
                            f"to {a.max():g}); an antlr-snn layer has one value")
        return a if not uniform else float(a.flat[0])

    v_leak = one("v_leak", uniform=False)
    tau_syn, tau_mem, r, w_in, thr, v_reset = map(one, ("tau_syn", "tau_mem", "r", "w_in",
                                                       "v_threshold", "v_reset"))
    if v_reset != 0.0:
        raise UserError(f"NIR node {name!r}: v_reset={v_reset:g}; antlr-snn neurons reset to 0")
    for field, tau in (("tau_syn", tau_syn), ("tau_mem", tau_mem)):
        if not tau > dt:
            raise UserError(f"NIR node {name!r}: {field}={tau:g} is not longer than the step "
                            f"dt={dt:g}, so the decay 1 - dt/{field} is not in (0, 1)")
    kw = {"alpha_i": 1 - dt / tau_syn, "alpha_v": 1 - dt / tau_mem, "beta_i": dt * w_in / tau_syn,
          "beta_v": dt * r / tau_mem, "beta_bias": 1.0, "threshold": thr}
    if saved is not None:  # written by export: its exact constants, if the node still agrees
        a_i, a_v = saved["alpha_i"], saved["alpha_v"]
        want = (dt / (1 - a_i), dt / (1 - a_v), 1 / (1 - a_v),
                saved["beta_i"] * saved["beta_v"] / (1 - a_i), saved["threshold"])
        if np.allclose(want, (tau_syn, tau_mem, r, w_in, thr), rtol=1e-9, atol=0):
            kw = saved
    for k in ("beta_i", "beta_v", "threshold"):
        if not (math.isfinite(kw[k]) and kw[k] > 0):
            raise UserError(f"NIR node {name!r}: gives {k}={kw[k]:g}; it must be > 0")
    return kw, torch.from_numpy(v_leak * (1 - kw["alpha_v"]) / kw["beta_bias"])


def saved_constants(node):
    meta = getattr(node, "metadata", None)
    saved = meta.get("antlr_snn") if isinstance(meta, dict) else None
    if not isinstance(saved, dict) or not set(KEPT) <= set(saved):
        return None
    return {k: (str(saved[k]) if k in ("method", "eps_derivative") else float(saved[k]))
            for k in KEPT}


def layer_of(m: nn.Module, kw: dict, bias: torch.Tensor):
    """The spiking layer of synapse ``m``, neurons ``kw`` and V_bias ``bias`` (the outputs'
    shape): LIFLayer or LIFConv2d where they express it, else LIF around ``m``."""
    no_bias = getattr(m, "bias", None) is None or not torch.any(m.bias)
    channel = bias.flatten(1)[:, 0] if bias.dim() == 3 else None
    if isinstance(m, nn.Linear) and no_bias:
        layer = LIFLayer(m.in_features, m.out_features, dtype=m.weight.dtype, **kw)
    elif (isinstance(m, nn.Conv2d) and no_bias and m.groups == 1 and m.dilation == (1, 1)
          and not isinstance(m.padding, str)
          and torch.equal(bias, channel.view(-1, 1, 1).expand(bias.shape))):
        layer = LIFConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                          padding=m.padding, dtype=m.weight.dtype, **kw)
        bias = channel
    else:
        layer = LIF(m, bias_shape=tuple(bias.shape) if torch.any(bias) else None, **kw)
        if layer.bias is None:
            return layer
    with torch.no_grad():
        if not isinstance(layer, LIF):
            layer.weight.copy_(m.weight)
        layer.bias.copy_(bias)
    return layer


def dtype_of(m: nn.Module) -> torch.dtype:
    return next(iter(m.parameters()), torch.zeros(())).dtype
