"""Kernels of the hot path: the input projection, the two time recursions and the weight gradient.

These pure-PyTorch versions are the reference and run on any device and dtype. Weights are
``[N, N_in]`` with inputs ``[T, *batch, N_in]``, or ``[R, N, N_in]`` for ``R`` independent replica
networks with inputs ``[T, R, B, N_in]``.
"""
from __future__ import annotations

import torch

from antlr_snn.neuron import adjoint_recurrence, lif_recurrence  # noqa: F401  (re-exported)


def project(s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x[t, ..., j] = sum_i w_ji s[t, ..., i]`` for every step at once."""
    return s @ weight.transpose(-1, -2)


def weight_grad(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum_{t, batch} a[t, ..., j] s[t, ..., i]``: shape of the weight."""
    if a.dim() == 4 and s.dim() == 4:  # replicas: [T, R, B, N]
        return torch.einsum("trbo,trbi->roi", a, s)
    return a.reshape(-1, a.shape[-1]).transpose(0, 1) @ s.reshape(-1, s.shape[-1])
