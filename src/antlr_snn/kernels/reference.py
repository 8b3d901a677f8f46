"""The ``"reference"`` backend: the pure-PyTorch functions of :mod:`antlr_snn.neuron`.

It runs on any device and dtype and defines the numbers that the fast backends are tested
against. Its time loops are Python loops of a few tensor operations per step.

Example:
    >>> import torch
    >>> from antlr_snn.kernels.reference import ReferenceBackend
    >>> from antlr_snn.neuron import LIFParameters
    >>> S, V, _ = ReferenceBackend().lif_forward(torch.full((5, 1, 2), 3.0), torch.zeros(2),
    ...                                         LIFParameters.create(), False, False)
    >>> S[:, 0, 0].tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0]
"""
from __future__ import annotations

from typing import Optional

import torch

from antlr_snn import neuron


class ReferenceBackend:
    """Pure PyTorch, any device and floating dtype."""

    name = "reference"
    fuses_dense = False

    def supports(self, t: torch.Tensor) -> bool:
        return True

    def lif_forward(self, x, bias, p, single_spike, keep_current):
        return neuron.lif_forward(x, bias, p, single_spike, keep_current)

    def lif_backward(self, grad_s, grad_d, grad_v, S, V, p, cfg, want_diff):
        return neuron.lif_backward(grad_s, grad_d, grad_v, S, V, p, cfg, want_diff)

    def bptt_backward(self, grad_s, grad_v, S, V, I, p, single_spike):
        return neuron.bptt_backward(grad_s, grad_v, S, V, I, p, single_spike)

    def binary_check(self, x: torch.Tensor) -> Optional[str]:
        if torch.isnan(x).any():
            return "nan"
        if ((x != 0) & (x != 1)).any():
            return "nonbinary"
        return None
