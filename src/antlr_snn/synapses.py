"""Synapses: linear maps from a layer's input spikes to its neurons' input currents.

A synapse acts on spikes ``[T, *batch, *features]`` (or, for a fully connected one, any
leading dims) and returns currents ``x[t] = sum_i w_ij S_i[t]`` for every step at once; the
neuron (:mod:`antlr_snn.methods`) takes it from there. Because the map is linear, the gradient
of each channel to the layer below is the map's transpose applied to that channel's gradient
(Eq. 9 and 10 for any synapse): autograd does it for the activation channel, and
:meth:`Synapse.transpose` does it for the timing channel, whose current is zero in value and
never computed.

Example:
    >>> import torch
    >>> from antlr_snn.synapses import Conv, Dense
    >>> w = torch.randn(3, 4)
    >>> g = torch.randn(5, 2, 3)
    >>> torch.allclose(Dense(w).transpose(g, (5, 2, 4)), g @ w)
    True
    >>> conv = Conv(torch.randn(6, 2, 3, 3), padding=1)
    >>> tuple(conv(torch.zeros(5, 2, 2, 8, 8)).shape)
    (5, 2, 6, 8, 8)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Synapse", "Dense", "Conv", "Module"]


class Synapse:
    """A linear map ``S [T, B, *in] -> x [T, B, *out]`` and its transpose."""

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transpose(self, g: torch.Tensor, s_shape) -> torch.Tensor:
        """The transpose of the map applied to ``g`` (a gradient of the current); the result
        has the input's shape ``s_shape``."""
        raise NotImplementedError


class Dense(Synapse):
    """``x = S W^T`` with ``weight [N, K]``, or ``[R, N, K]`` for ``R`` replica networks on
    ``S [T, R, B, K]``."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def __call__(self, s):
        if self.weight.dim() == 3:  # replicas: no copy of W per step (matmul would expand it)
            return torch.einsum("trbk,rnk->trbn", s, self.weight)
        return torch.matmul(s, self.weight.transpose(-1, -2))

    def transpose(self, g, s_shape):
        if self.weight.dim() == 3:
            return torch.einsum("trbn,rnk->trbk", g, self.weight)
        return torch.matmul(g, self.weight)


_CONV = {1: (F.conv1d, torch.nn.grad.conv1d_input), 2: (F.conv2d, torch.nn.grad.conv2d_input),
         3: (F.conv3d, torch.nn.grad.conv3d_input)}


class Conv(Synapse):
    """A convolution without bias over ``S [T, B, C_in, *spatial]`` (1-3 spatial dims), its
    transpose the matching transposed convolution."""

    def __init__(self, weight: torch.Tensor, stride=1, padding=0, dilation=1, groups: int = 1):
        self.weight, self.stride, self.padding = weight, stride, padding
        self.dilation, self.groups = dilation, groups
        self.conv, self.conv_input = _CONV[weight.dim() - 2]

    def __call__(self, s):
        x = self.conv(s.flatten(0, 1), self.weight, None, self.stride, self.padding,
                      self.dilation, self.groups)
        return x.unflatten(0, s.shape[:2])

    def transpose(self, g, s_shape):
        s_shape = tuple(s_shape)
        out = self.conv_input((s_shape[0] * s_shape[1], *s_shape[2:]), self.weight,
                              g.flatten(0, 1), self.stride, self.padding, self.dilation,
                              self.groups)
        return out.unflatten(0, s_shape[:2])


class Module(Synapse):
    """Any linear torch module (``nn.Conv1d(..., bias=False)``, ``nn.AvgPool2d``, a user's
    own) applied per step to ``[T * B, *features]``. Its transpose is taken with
    ``torch.func.vjp`` (one extra evaluation of the module, in the backward pass only)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, s):
        return self.module(s.flatten(0, 1)).unflatten(0, s.shape[:2])

    def transpose(self, g, s_shape):
        zeros = g.new_zeros(tuple(s_shape))
        _, vjp = torch.func.vjp(self, zeros)
        return vjp(g)[0]
