"""Networks: ``Flatten``, ``Unflatten``, ``SpikingNetwork`` and network descriptions.

A network is a stack of modules; a :class:`SpikingNetwork` runs them in order and collects the
outputs of its spiking layers. ``spec()`` describes a network in JSON-able dicts (every layer's
sizes and neuron settings) and :func:`network_from_spec` builds it again: checkpoints and NIR
export rely on it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from antlr_snn.errors import UserError
from antlr_snn.layers import (LIFConv2d, LIFLayer, SpikeInput, SpikeOutput, _Neurons,
                              _positive_int)

__all__ = ["Flatten", "Unflatten", "SpikingNetwork", "network_from_spec", "describe_spec",
           "spec_in_features", "spec_out_features"]


class Flatten(nn.Module):
    """Flattens the features ``[T, B, *features] -> [T, B, F]`` of spikes, shift and voltage.

    Example:
        >>> import torch
        >>> from antlr_snn import Flatten, LIFConv2d, LIFLayer, SpikingNetwork
        >>> net = SpikingNetwork([LIFConv2d(2, 4, 3), Flatten(), LIFLayer(4 * 6 * 6, 10)])
        >>> tuple(net(torch.zeros(5, 1, 2, 8, 8)).spikes.shape)
        (5, 1, 10)
    """

    def spec(self) -> dict:
        return {"type": "Flatten"}

    def forward(self, x: SpikeInput) -> SpikeInput:
        if isinstance(x, torch.Tensor):
            if x.dim() < 2:
                raise UserError(f"Flatten needs [T, B, *features], got shape {tuple(x.shape)}")
            return x.flatten(2) if x.dim() > 2 else x.unsqueeze(-1)
        return SpikeOutput(x.spikes.flatten(2), x.shift.flatten(2), x.voltage.flatten(2),
                           method=x.method)


class Unflatten(nn.Module):
    """Reshapes flat input spikes ``[T, B, F] -> [T, B, *shape]`` (for example a latency-coded
    image ``[T, B, 784] -> [T, B, 1, 28, 28]`` before a :class:`LIFConv2d`).

    Example:
        >>> import torch
        >>> from antlr_snn import Unflatten
        >>> tuple(Unflatten((2, 34, 34))(torch.zeros(5, 3, 2312)).shape)
        (5, 3, 2, 34, 34)
    """

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(_positive_int("Unflatten shape entry", n) for n in shape)

    def spec(self) -> dict:
        return {"type": "Unflatten", "shape": list(self.shape)}

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, x: SpikeInput) -> SpikeInput:
        want = math.prod(self.shape)
        s = x.spikes if isinstance(x, SpikeOutput) else x
        if not isinstance(s, torch.Tensor) or s.dim() != 3 or s.shape[-1] != want:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise UserError(f"Unflatten{self.shape} needs [T, B, {want}] spikes, got {got}")
        if isinstance(x, torch.Tensor):
            return x.unflatten(-1, self.shape)
        return SpikeOutput(*(t.unflatten(-1, self.shape) for t in x[:3]), method=x.method)


class SpikingNetwork(nn.Module):
    """A stack of layers; layer l sees the spikes of layer l-1 at the same step.

    Args:
        layers: ``[N_in, N_1, ..., N_out]`` for a fully connected network of
            :class:`LIFLayer`, or a list of modules (``LIFLayer``, ``LIFConv2d``, ``LIF``,
            ``Flatten``, ...).
        **kwargs: with sizes, passed to every :class:`LIFLayer` (``method``, ...).

    Example:
        >>> import torch
        >>> from antlr_snn import SpikingNetwork, encode, losses
        >>> net = SpikingNetwork([784, 100, 10], method="antlr")
        >>> x = encode.latency(torch.rand(8, 784), num_steps=30)
        >>> out = net(x)
        >>> loss = losses.latency_loss(out, torch.randint(0, 10, (8,)))
        >>> loss.backward()
        >>> tuple(net.layers[0].weight.grad.shape)
        (100, 784)
    """

    def __init__(self, layers: Sequence, **kwargs):
        super().__init__()
        layers = list(layers)
        if layers and all(isinstance(n, int) and not isinstance(n, bool) for n in layers):
            if len(layers) < 2:
                raise UserError(f"sizes needs at least an input and an output size, got {layers}")
            self.sizes = layers
            modules = [LIFLayer(a, b, **kwargs) for a, b in zip(layers[:-1], layers[1:])]
        else:
            if kwargs:
                raise UserError(f"layer keywords ({', '.join(kwargs)}) go with a list of sizes; "
                                f"a list of modules is used as it is")
            if not layers or not all(isinstance(m, nn.Module) for m in layers):
                raise UserError("SpikingNetwork takes a list of layer sizes or of modules")
            modules, self.sizes = layers, None
        self.layers = nn.ModuleList(modules)
        if not self.spiking_layers:
            raise UserError("the network has no spiking layer")

    @property
    def spiking_layers(self) -> list:
        """The layers with neurons (what ``out.layers`` holds the outputs of)."""
        return [m for m in self.layers if isinstance(m, _Neurons)]

    @property
    def method(self) -> str:
        return self.spiking_layers[-1].method

    def spec(self) -> list:
        """JSON-able layer descriptions that :func:`network_from_spec` rebuilds."""
        return [m.spec() for m in self.layers]

    def num_parameters(self) -> int:
        """The number of trained values (weights and biases)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: SpikeInput) -> SpikeOutput:
        outs = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, _Neurons):
                outs.append(x)
        return SpikeOutput(x.spikes, x.shift, x.voltage, tuple(outs), x.method)


def network_from_spec(spec: Sequence[dict], device=None) -> SpikingNetwork:
    """The network that ``SpikingNetwork.spec()`` described (weights not included), with
    its parameters on ``device`` (``"meta"``: shapes only, no memory)."""
    if not isinstance(spec, (list, tuple)) or not spec:
        raise UserError("a network description is a non-empty list of layers")
    modules = []
    for i, layer in enumerate(spec):
        if not isinstance(layer, dict) or layer.get("type") not in _TYPES:
            raise UserError(f"layer {i} of the description has an unknown type "
                            f"({layer.get('type') if isinstance(layer, dict) else layer!r})")
        kw = {k: v for k, v in layer.items() if k not in ("type", "neuron")}
        if layer["type"] in ("LIFLayer", "LIFConv2d") and device is not None:
            kw["device"] = device
        try:
            modules.append(_TYPES[layer["type"]](**kw, **layer.get("neuron", {})))
        except TypeError as exc:
            raise UserError(f"layer {i} of the description: {exc}") from None
    return SpikingNetwork(modules)


def spec_in_features(spec: Sequence[dict]) -> Optional[int]:
    """The flat input size ``F`` of ``[T, B, F]`` spikes that a described network takes, or
    None when its first layer does not take flat spikes."""
    first = spec[0] if spec else {}
    if first.get("type") == "LIFLayer":
        return first.get("in_features")
    if first.get("type") == "Unflatten":
        return math.prod(first.get("shape", []))
    return None


def spec_out_features(spec: Sequence[dict]) -> Optional[int]:
    """The number of output neurons of a described network (its last fully connected layer),
    or None."""
    last = spec[-1] if spec else {}
    return last.get("out_features") if last.get("type") == "LIFLayer" else None


def describe_spec(spec: Sequence[dict]) -> str:
    """A short name of a network description, e.g. ``784-800-10`` or
    ``1x28x28-c16-c32-10``."""
    parts = []
    for layer in spec:
        t = layer.get("type")
        if t == "Unflatten":
            parts.append("x".join(map(str, layer["shape"])))
        elif t == "LIFConv2d":
            parts.append(f"c{layer['out_channels']}")
        elif t == "LIFLayer":
            if not parts:
                parts.append(str(layer["in_features"]))
            parts.append(str(layer["out_features"]))
    return "-".join(parts)


_TYPES = {"LIFLayer": LIFLayer, "LIFConv2d": LIFConv2d, "Flatten": Flatten,
          "Unflatten": Unflatten}
