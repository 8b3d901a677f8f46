"""Export to and import from NIR, the Neuromorphic Intermediate Representation.

NIR (``pip install 'antlr-snn[nir]'``) is how trained networks reach neuromorphic chips and
the other simulators (snnTorch, Norse, SpikingJelly, Lava, Rockpool, Sinabs). Our neuron
(Eq. 1-3) is NIR's current-based ``CubaLIF``, defined in continuous time::

    tau_syn dI/dt = -I + w_in x,   tau_mem dV/dt = (v_leak - V) + r I,   z = [V > v_threshold]

snnTorch and Norse step it by forward Euler with a step ``dt``, the new current entering the
same step's voltage: ``I[t] = (1 - dt/tau_syn) I[t-1] + (dt/tau_syn) w_in x[t]`` and
``V[t] = (1 - dt/tau_mem) V[t-1] + (dt/tau_mem) (v_leak + r I[t])``. That is Eq. 1-2,
``I[t] = alpha_i I[t-1] + beta_i x[t]``, ``V[t] = alpha_v V[t-1] + beta_v I[t] + beta_bias
V_bias``, term by term, when

    ``tau_syn = dt / (1 - alpha_i)``, ``tau_mem = dt / (1 - alpha_v)``, ``r = tau_mem / dt``,
    ``w_in = beta_i beta_v tau_syn / dt``, ``v_leak = beta_bias V_bias tau_mem / dt``,
    ``v_threshold = threshold``, ``v_reset = 0``

(NIR's current is ``beta_v`` times ours; ``r = tau_mem / dt`` is the gain snnTorch's importer
requires). It is ``1 - dt/tau``, not ``exp(-dt/tau)``: the peers step by Euler, so the exp
mapping would run with decays ``1 + ln(alpha)``. A decay of 1 (no leak) has no finite time
constant and is refused. A spike is ``V >= threshold`` here (Eq. 3), ``V > v_threshold`` in
NIR (equality is a tie of measure zero). snnTorch 1.0.0's importer assumes ``dt = 1e-4`` (the
default here) and refuses ``v_leak`` != 0; Norse 1.1.0 takes ``dt`` but also feeds ``v_leak``
to the synaptic current; both read NIR's ``Flatten`` dims as a batch's (docs/nir.md).

The synapses: ``LIFLayer`` -> ``Linear``, ``LIFConv2d`` -> ``Conv2d`` (bias 0), ``LIF`` around
``nn.Linear`` -> ``Affine``, ``nn.Conv2d`` -> ``Conv2d``, ``nn.AvgPool2d`` -> ``AvgPool2d``
(``SumPool2d`` with ``divisor_override=1``), ``nn.Identity`` -> none; ``Flatten`` ->
``Flatten``; a leading ``Unflatten`` sets the graph's input shape.

**Reset.** NIR's CubaLIF resets V only; Eq. 1-2 reset I too (``1 - S[t-1]`` multiplies both).
A chip or simulator running an exported graph therefore fires differently after a neuron's
first spike (docs/nir.md measures the cost). ``reset="warn"`` (the default) exports and warns
(:class:`NIRResetWarning`), ``"v_only"`` accepts it silently, ``"error"`` refuses. The same
holds for :func:`load` of graphs that other libraries wrote; graphs that :func:`export` wrote
load back exactly. ``single_spike`` layers cannot be expressed and are refused.

Example:
    >>> import torch, antlr_snn
    >>> from antlr_snn import nir as antlr_nir
    >>> net = antlr_snn.SpikingNetwork([4, 3, 2], alpha_v=0.9, alpha_i=0.8)
    >>> graph = antlr_nir.export(net, dt=1e-3, reset="v_only")
    >>> sorted(graph.nodes)
    ['input', 'l0_cubalif', 'l0_linear', 'l1_cubalif', 'l1_linear', 'output']
    >>> round(float(graph.nodes["l0_cubalif"].tau_mem[0]), 6)    # dt / (1 - alpha_v)
    0.01
    >>> x = torch.bernoulli(torch.full((20, 5, 4), 0.5))
    >>> torch.equal(antlr_nir.load(graph)(x).spikes, net(x).spikes)
    True
"""
from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
import torch
from torch import nn

from antlr_snn._nir_load import (KEPT, chain, constants, dtype_of, layer_of, pair,
                                 saved_constants, synapse_module)
from antlr_snn.errors import DataNotFound, UserError, one_line
from antlr_snn.layers import LIFConv2d, LIFLayer, _Neurons
from antlr_snn.network import Flatten, SpikingNetwork, Unflatten

__all__ = ["export", "load", "write", "read", "NIRResetWarning", "RESETS", "DEFAULT_DT"]

RESETS = ("warn", "v_only", "error")
DEFAULT_DT = 1e-4  # the step snnTorch's importer assumes


class NIRResetWarning(UserWarning):
    """A graph runs with NIR's reset (V only) where Eq. 1-2 also reset I, or the reverse."""


def _nir():
    try:
        import nir
    except ImportError:
        raise UserError("NIR export and import need the nir package: "
                        "pip install 'antlr-snn[nir]'") from None
    return nir


def _check_reset(reset: str, what: str) -> None:
    if reset not in RESETS:
        raise UserError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")
    msg = (f"NIR's CubaLIF resets only V at a spike, antlr-snn's neurons (Eq. 1-2) reset I "
           f"too: {what} fires differently after a neuron's first spike (docs/nir.md "
           f"measures the cost)")
    if reset == "error":
        raise UserError(f"{msg}; refused (reset='error')")
    if reset == "warn":
        warnings.warn(f"{msg}; reset='v_only' accepts this silently", NIRResetWarning,
                      stacklevel=3)


def _check_dt(dt) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (
            math.isfinite(dt) and dt > 0):
        raise UserError(f"dt must be a finite number of seconds > 0, got {dt!r}")
    return float(dt)


# ----------------------------------------------------------------------------- export

def _synapse_node(nir, layer, shape_in: tuple, where: str):
    """The NIR node of ``layer``'s synapse (``None`` for ``nn.Identity``)."""
    arr = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731
    if isinstance(layer, LIFLayer):
        if layer.replicas is not None:
            raise UserError(f"{where}: a LIFLayer with replicas is {layer.replicas} networks; "
                            f"export one replica at a time")
        return "linear", nir.Linear(weight=arr(layer.weight))
    if isinstance(layer, LIFConv2d):
        w = arr(layer.weight)
        return "conv", nir.Conv2d(input_shape=shape_in[1:], weight=w, stride=layer.stride,
                                  padding=layer.padding, dilation=1, groups=1,
                                  bias=np.zeros(w.shape[0], w.dtype))
    m = layer.synapse
    if isinstance(m, nn.Identity):
        return None, None
    if isinstance(m, nn.Linear):
        w = arr(m.weight)
        b = arr(m.bias) if m.bias is not None else np.zeros(w.shape[0], w.dtype)
        return "affine", nir.Affine(weight=w, bias=b)
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
        w = arr(m.weight)
        b = arr(m.bias) if m.bias is not None else np.zeros(w.shape[0], w.dtype)
        return "conv", nir.Conv2d(input_shape=shape_in[1:], weight=w, stride=m.stride,
                                  padding=m.padding, dilation=m.dilation, groups=m.groups,
                                  bias=b)
    if isinstance(m, nn.AvgPool2d) and not m.ceil_mode and m.divisor_override in (None, 1) \
            and (m.count_include_pad or m.divisor_override == 1 or not any(pair(m.padding))):
        kind = nir.SumPool2d if m.divisor_override == 1 else nir.AvgPool2d
        k = pair(m.kernel_size)
        return "pool", kind(kernel_size=np.array(k), padding=np.array(pair(m.padding)),
                            stride=np.array(pair(m.stride) if m.stride else k))
    raise UserError(f"{where}: NIR export takes LIF synapses nn.Linear, nn.Conv2d, "
                    f"nn.AvgPool2d (ceil_mode off; divisor_override None or 1) and "
                    f"nn.Identity, got {m!r}")


def _check_neurons(layer, where: str) -> None:
    if layer.single_spike:
        raise UserError(f"{where} has single_spike=True: NIR cannot express neurons held at "
                        f"reset after their spike; export a network trained without it")
    for name in ("alpha_v", "alpha_i"):
        if getattr(layer.params, name) >= 1.0:
            raise UserError(f"{where}: {name}=1 (no leak) has no finite NIR time constant "
                            f"(tau = dt / (1 - {name}))")


def _neuron_node(nir, layer, shape: tuple, dt: float):
    """The CubaLIF node of ``layer``'s neurons, of outputs ``shape`` (module docstring)."""
    p = layer.params
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    tau_syn, tau_mem = dt / (1.0 - p.alpha_i), dt / (1.0 - p.alpha_v)
    bias = torch.zeros(()) if layer.bias is None else layer.bias.detach().cpu().double()
    bias = (bias.view(-1, 1, 1) if isinstance(layer, LIFConv2d) else bias).expand(shape)
    meta = {k: v for k, v in layer.neuron_kwargs().items() if k in KEPT}
    return nir.CubaLIF(
        tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem / dt),
        v_leak=(p.beta_bias * tau_mem / dt) * bias.numpy().copy(),
        v_threshold=full(p.threshold), v_reset=full(0.0),
        w_in=full(p.beta_i * p.beta_v * tau_syn / dt),
        metadata={"antlr_snn": {"layer": type(layer).__name__, **meta}})


def export(net: SpikingNetwork, dt: float = DEFAULT_DT, *, reset: str = "warn",
           input_shape=None):
    """The ``nir.NIRGraph`` of ``net`` for time steps of ``dt`` seconds (mapping: module
    docstring).

    Args:
        net: a :class:`~antlr_snn.network.SpikingNetwork` (or one spiking layer).
        dt: the duration of one time step in seconds.
        reset: ``"warn"``, ``"v_only"`` or ``"error"`` (module docstring, *Reset*).
        input_shape: the features of one input step, e.g. ``(2, 34, 34)``; needed only when
            the first layer does not fix it (a ``LIFConv2d`` or ``LIF``).
    """
    nir = _nir()
    dt = _check_dt(dt)
    layers = list(net.layers) if isinstance(net, SpikingNetwork) else [net]
    if not isinstance(net, (SpikingNetwork, _Neurons)):
        raise UserError(f"export takes a SpikingNetwork or a spiking layer, got "
                        f"{type(net).__name__}")
    _check_reset(reset, "the exported graph")
    first, meta = layers[0], {"source": "antlr-snn", "dt": dt, "reset": "v_and_i"}
    if input_shape is None:
        if isinstance(first, LIFLayer):
            input_shape = (first.in_features,)
        elif isinstance(first, Unflatten):
            input_shape = (math.prod(first.shape),)
        else:
            raise UserError(f"export needs input_shape (the features of one step) for a "
                            f"network that starts with {type(first).__name__}")
    shape = tuple(int(n) for n in input_shape)
    in_shape = tuple(first.shape) if isinstance(first, Unflatten) else shape
    nodes, order = {"input": nir.Input(input_type={"input": np.array(in_shape)})}, ["input"]
    ref = next(net.parameters(), torch.zeros(()))
    x = torch.zeros((1, 1, *shape), dtype=ref.dtype, device=ref.device)  # shapes, layer by layer
    with torch.no_grad():
        for i, layer in enumerate(layers):
            where = f"layer {i} ({type(layer).__name__})"
            if isinstance(layer, Unflatten):
                if i != 0:
                    raise UserError(f"{where}: NIR has no reshape node; only a first "
                                    f"Unflatten (which sets the input shape) exports")
                meta["flat_input"] = np.array(shape)
                x = layer(x)
                shape = tuple(x.shape[2:])
                continue
            if isinstance(layer, Flatten):
                new = {f"l{i}_flatten": nir.Flatten(input_type={"input": np.array(shape)},
                                                    start_dim=0, end_dim=-1)}
            elif isinstance(layer, _Neurons):
                kind, node = _synapse_node(nir, layer, shape, where)
                _check_neurons(layer, where)
                new = {f"l{i}_{kind}": node} if node is not None else {}
            else:
                raise UserError(f"{where}: NIR export takes LIFLayer, LIFConv2d, LIF, Flatten "
                                f"and a first Unflatten")
            y = layer(x)
            out = tuple((y.spikes if hasattr(y, "spikes") else y).shape[2:])
            if isinstance(layer, _Neurons):
                new[f"l{i}_cubalif"] = _neuron_node(nir, layer, out, dt)
            nodes.update(new)
            order += list(new)
            x, shape = y, out
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    order.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])),
                        metadata={"antlr_snn": meta})


def write(graph, path: str) -> None:
    """Write ``graph`` to the NIR (HDF5) file ``path`` atomically (never a torn file)."""
    from antlr_snn.files import atomic_write_bytes
    nir, buf = _nir(), io.BytesIO()
    nir.write(buf, graph)
    atomic_write_bytes(path, buf.getvalue())


def read(path: str):
    """The ``nir.NIRGraph`` in the file ``path``; a one-line error for a missing or
    damaged file."""
    nir = _nir()
    if not os.path.isfile(path):
        raise DataNotFound(f"no NIR file {path}")
    try:
        return nir.read(path)
    except Exception as exc:  # h5py and nir raise many kinds for a foreign file
        raise UserError(f"{path} is not a readable NIR graph ({one_line(exc)})") from None

# ----------------------------------------------------------------------------- load

def load(graph, dt: float = None, *, reset: str = "warn") -> SpikingNetwork:
    """The :class:`~antlr_snn.network.SpikingNetwork` of a NIR graph (or ``.nir`` file).

    Loads chains of ``Linear``/``Affine``/``Conv2d``/``AvgPool2d``/``SumPool2d`` synapses,
    ``CubaLIF`` neurons and ``Flatten``; anything our neuron cannot express (a per-neuron time
    constant, ``v_reset`` != 0, an ``LIF`` node without a synaptic current, recurrence) is a
    ``UserError`` naming the node. Graphs that :func:`export` wrote come back exactly (their
    ``dt`` and constants are in the metadata); for other graphs give ``dt`` (snnTorch writes
    for 1e-4) and see ``reset`` (module docstring).
    """
    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = read(os.fspath(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise UserError(f"load takes a nir.NIRGraph or a .nir file, got {type(graph).__name__}")
    meta = (graph.metadata or {}).get("antlr_snn") if isinstance(graph.metadata, dict) else None
    ours = isinstance(meta, dict) and meta.get("source") == "antlr-snn"
    if dt is None:
        if not ours:
            raise UserError("the NIR graph does not say its time step: give dt (in seconds; "
                            "snnTorch's graphs are made for dt=1e-4)")
        dt = float(meta["dt"])
    dt = _check_dt(dt)
    if not ours:
        _check_reset(reset, "the loaded network")
    names = chain(nir, graph)
    shape = tuple(int(n) for n in np.array(graph.nodes[names[0]].input_type["input"]))
    modules = [Unflatten(shape)] if ours and "flat_input" in meta else []
    pending = (None, None)
    for name in names[1:-1]:
        node = graph.nodes[name]
        if isinstance(node, nir.CubaLIF):
            m = synapse_module(nir, *pending)
            with torch.no_grad():
                shape = tuple(m(torch.zeros((1, *shape), dtype=dtype_of(m))).shape[1:])
            kw, bias = constants(name, node, shape, dt, saved_constants(node) if ours else None)
            modules.append(layer_of(m, kw, bias.to(dtype_of(m))))
            pending = (None, None)
        elif pending[1] is not None:
            raise UserError(f"NIR node {name!r} follows the synapse {pending[0]!r} without "
                            f"CubaLIF neurons between them; antlr-snn layers are a synapse "
                            f"then neurons")
        elif isinstance(node, nir.Flatten):
            if int(node.start_dim) != 0 or int(node.end_dim) not in (-1, len(shape) - 1):
                raise UserError(f"NIR node {name!r}: Flatten of dims {int(node.start_dim)}.."
                                f"{int(node.end_dim)}; only flattening all features loads")
            modules.append(Flatten())
            shape = (math.prod(shape),)
        elif isinstance(node, nir.LIF):
            raise UserError(f"NIR node {name!r} is an LIF neuron without a synaptic current; "
                            f"antlr-snn neurons always have one (Eq. 1, alpha_i > 0)")
        else:
            synapse_module(nir, name, node)  # a UserError for unknown nodes
            pending = (name, node)
    if pending[1] is not None:
        raise UserError(f"the NIR graph ends in the synapse {pending[0]!r}; antlr-snn "
                        f"networks end in spiking neurons")
    if not any(isinstance(m, _Neurons) for m in modules):
        raise UserError("the NIR graph has no CubaLIF neurons")
    return SpikingNetwork(modules)
