"""An executor of NIR graphs written from NIR's node definitions, for the tests and the
agreement benchmark (benchmarks/nir_agreement.py).

It shares no code with ``antlr_snn.nir``: it reads the graph's nodes and steps the CubaLIF
equations ``tau_syn dI/dt = -I + w_in x``, ``tau_mem dV/dt = (v_leak - V) + r I`` by forward
Euler (as snnTorch and Norse do), in float64, with NIR's reset (V only, to ``v_reset``) or,
with ``reset_current=True``, Eq. 1-2's (I as well).
"""
from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F


def chain(graph) -> list:
    """Node names from the Input along the edges."""
    succ = dict(graph.edges)
    name = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    out = [name]
    while name in succ:
        name = succ[name]
        out.append(name)
    return out


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def _pair(v):
    a = np.asarray(v).reshape(-1).tolist()
    return tuple(int(x) for x in (a * 2 if len(a) == 1 else a))


def run(graph, x: torch.Tensor, dt: float, reset_current: bool = False,
        strict: bool = True, counts: dict = None) -> torch.Tensor:
    """Output spikes ``[T, B, *out]`` of ``graph`` for input spikes ``x [T, B, *in]``.

    ``strict``: spike where ``V > v_threshold`` (NIR); else ``V >= threshold`` (Eq. 3).
    ``counts``: a dict that receives the number of spikes of every CubaLIF node.
    """
    names = chain(graph)[1:-1]
    state = {}
    outs = []
    counts = {} if counts is None else counts
    for t in range(x.shape[0]):
        h = x[t].double()
        for name in names:
            n = graph.nodes[name]
            if isinstance(n, nir.Linear):
                h = h @ _t(n.weight).T
            elif isinstance(n, nir.Affine):
                h = h @ _t(n.weight).T + _t(n.bias)
            elif isinstance(n, nir.Conv2d):
                h = F.conv2d(h, _t(n.weight), _t(n.bias), _pair(n.stride), _pair(n.padding),
                             _pair(n.dilation), int(n.groups))
            elif isinstance(n, nir.AvgPool2d):
                h = F.avg_pool2d(h, _pair(n.kernel_size), _pair(n.stride), _pair(n.padding))
            elif isinstance(n, nir.SumPool2d):
                h = F.avg_pool2d(h, _pair(n.kernel_size), _pair(n.stride), _pair(n.padding),
                                 divisor_override=1)
            elif isinstance(n, nir.Flatten):
                h = h.flatten(1)
            elif isinstance(n, nir.CubaLIF):
                i, v = state.get(name, (torch.zeros_like(h), torch.zeros_like(h)))
                i = i + dt / _t(n.tau_syn) * (-i + _t(n.w_in) * h)
                v = v + dt / _t(n.tau_mem) * (_t(n.v_leak) - v + _t(n.r) * i)
                thr = _t(n.v_threshold)
                z = (v > thr) if strict else (v >= thr)
                v = torch.where(z, _t(n.v_reset).expand_as(v), v)
                if reset_current:
                    i = torch.where(z, torch.zeros_like(i), i)
                state[name] = (i, v)
                h = z.double()
                counts[name] = counts.get(name, 0) + int(z.sum())
            else:
                raise TypeError(f"no reference for {type(n).__name__}")
        outs.append(h)
    return torch.stack(outs)


# ----------------------------------------------------------------------------- real clients

def _per_sample(graph) -> bool:
    """The peers map NIR's Flatten (dims of one sample) to torch's Flatten (dims of a batch),
    so a graph with a Flatten runs in them one sample at a time."""
    return any(isinstance(n, nir.Flatten) for n in graph.nodes.values())


def _steps(graph, step, x):
    out = next(n for n in graph.nodes.values() if isinstance(n, nir.Output))
    shape = tuple(int(n) for n in np.asarray(out.output_type["output"]))
    with torch.no_grad():  # a batch of one may come back without its batch dim
        return torch.stack([step(x[t]).reshape(x.shape[1], *shape) for t in range(x.shape[0])])


def run_snntorch(graph, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Output spikes of ``graph`` in snnTorch (``import_from_nir``; it steps with dt=1e-4),
    its modules and states in ``dtype`` (its spikes are float32 whatever the dtype, so float64
    runs only a one-layer graph)."""
    import contextlib
    import io
    from snntorch.import_nir import import_from_nir
    if _per_sample(graph) and x.shape[1] > 1:
        return torch.cat([run_snntorch(graph, x[:, b:b + 1], dtype) for b in range(x.shape[1])],
                         1)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        module = import_from_nir(graph).to(dtype)
    for m in module.modules():  # init_hidden neurons keep their state inside
        if hasattr(m, "reset_mem"):
            m.reset_mem()

    def step(xt):
        out = module(xt.to(dtype))
        return out[0] if isinstance(out, tuple) else out
    return _steps(graph, step, x)


def run_norse(graph, x: torch.Tensor, dt: float) -> torch.Tensor:
    """Output spikes of ``graph`` in Norse (``norse.torch.from_nir`` with step ``dt``)."""
    import warnings
    from norse.torch.utils.import_nir import from_nir
    if _per_sample(graph) and x.shape[1] > 1:
        return torch.cat([run_norse(graph, x[:, b:b + 1], dt) for b in range(x.shape[1])], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = from_nir(graph, dt=dt)
    state = [None]

    def step(xt):
        out, state[0] = module(xt.float(), state[0])
        return out
    return _steps(graph, step, x)
