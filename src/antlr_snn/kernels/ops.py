"""The glue: each backend call as a ``torch.library`` custom operator.

``torch.compile`` (dynamo) does not trace into a custom operator: it sees one opaque node
with a shape function (the ``register_fake`` below), so compiled networks have no graph
breaks and numba or triton code is never traced. The operators carry the neuron constants as
a list of floats (:func:`consts`) and the backend by name; the autograd Functions of
:mod:`antlr_snn.methods` call them.

Example:
    >>> import torch
    >>> from antlr_snn.kernels import ops
    >>> from antlr_snn.neuron import LIFParameters
    >>> S, V, I = ops.lif_forward(torch.full((4, 1, 1), 20.0), torch.zeros(1),
    ...                           ops.consts(LIFParameters.create()), False, False, "reference")
    >>> S.flatten().tolist(), tuple(I.shape)    # 20 / 36.97 < 1: the second input fires it
    ([0.0, 1.0, 0.0, 1.0], (0,))
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from antlr_snn import kernels
from antlr_snn.neuron import LIFParameters, MethodConfig

__all__ = ["consts", "unpack", "lif_forward", "lif_backward", "bptt_backward", "dense_forward",
           "dense_backward", "check_spikes", "require_binary"]

_NP = len(LIFParameters._fields)


def consts(p: LIFParameters, lambda_act: float = 0.0, lambda_tim: float = 0.0) -> list:
    """The constants of ``p`` and the two lambdas as one list of floats."""
    return [*map(float, p), float(lambda_act), float(lambda_tim)]


def unpack(c) -> tuple:
    """``(LIFParameters, lambda_act, lambda_tim)`` from :func:`consts`."""
    return LIFParameters(*c[:_NP]), c[_NP], c[_NP + 1]


def _none() -> Tensor:
    return torch.empty(0)


# ----------------------------------------------------------------------------- the neuron
@torch.library.custom_op("antlr_snn::lif_forward", mutates_args=())
def lif_forward(x: Tensor, bias: Tensor, c: list[float], single_spike: bool,
                keep_current: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 1-3 on the current ``x [T, *shape]``: ``(S, V, I)``, ``I`` empty unless kept."""
    p, _, _ = unpack(c)
    S, V, I = kernels.get(backend).lif_forward(x, bias, p, single_spike, keep_current)
    return S, V, (I if I is not None else x.new_empty(0))


@lif_forward.register_fake
def _(x, bias, c, single_spike, keep_current, backend):
    return torch.empty_like(x), torch.empty_like(x), (torch.empty_like(x) if keep_current
                                                       else x.new_empty(0))


@torch.library.custom_op("antlr_snn::lif_backward", mutates_args=())
def lif_backward(grad_s: Optional[Tensor], grad_d: Optional[Tensor], grad_v: Optional[Tensor],
                 S: Tensor, V: Tensor, c: list[float], single_spike: bool, want_diff: bool,
                 central: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 8 and the adjoint recursions: ``(A, A_diff, U_sum)``, ``A_diff`` empty unless
    wanted."""
    p, lam_act, lam_tim = unpack(c)
    cfg = MethodConfig("antlr", lam_act, lam_tim, single_spike,
                       "central" if central else "backward")
    A, A_diff, usum = kernels.get(backend).lif_backward(grad_s, grad_d, grad_v, S, V, p, cfg,
                                                        want_diff)
    return A, (A_diff if A_diff is not None else S.new_empty(0)), usum


@lif_backward.register_fake
def _(grad_s, grad_d, grad_v, S, V, c, single_spike, want_diff, central, backend):
    return (torch.empty_like(S), torch.empty_like(S) if want_diff else S.new_empty(0),
            S.new_empty(S.shape[1:]))


@torch.library.custom_op("antlr_snn::bptt_backward", mutates_args=())
def bptt_backward(grad_s: Optional[Tensor], grad_v: Optional[Tensor], S: Tensor, V: Tensor,
                  I: Tensor, c: list[float], single_spike: bool,
                  backend: str) -> tuple[Tensor, Tensor]:
    """BPTT adjoint with the reset path: ``(GI, GV_sum)``."""
    p, _, _ = unpack(c)
    return kernels.get(backend).bptt_backward(grad_s, grad_v, S, V, I, p, single_spike)


@bptt_backward.register_fake
def _(grad_s, grad_v, S, V, I, c, single_spike, backend):
    return torch.empty_like(S), S.new_empty(S.shape[1:])


# ----------------------------------------------------------------------------- dense (numba)
@torch.library.custom_op("antlr_snn::dense_forward", mutates_args=())
def dense_forward(s_in: Tensor, weight: Tensor, bias: Tensor, c: list[float],
                  single_spike: bool, keep_current: bool
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A fully connected layer in one piece (numba): ``(S, V, I, rowptr, idx, val)``, the
    last three the CSR of ``s_in`` (``rowptr[-1] == -1``: dense)."""
    p, _, _ = unpack(c)
    S, V, I, ev = kernels.get("numba").dense_forward(s_in, weight, bias, p, single_spike,
                                                     keep_current)
    return S, V, (I if I is not None else S.new_empty(0)), ev.rowptr, ev.idx, ev.val


@dense_forward.register_fake
def _(s_in, weight, bias, c, single_spike, keep_current):
    from antlr_snn.kernels.numba_cpu import SPARSE_MAX_DENSITY
    shape = (*s_in.shape[:-1], weight.shape[-2])
    rows = math.prod(s_in.shape[:-1])
    cap = int(SPARSE_MAX_DENSITY * s_in.numel())
    S = s_in.new_empty(shape)
    return (S, torch.empty_like(S), torch.empty_like(S) if keep_current else S.new_empty(0),
            s_in.new_empty(rows + 1, dtype=torch.int64), s_in.new_empty(cap, dtype=torch.int32),
            s_in.new_empty(cap))


@torch.library.custom_op("antlr_snn::dense_backward", mutates_args=())
def dense_backward(A: Tensor, A_diff: Optional[Tensor], s_in: Tensor, weight: Tensor,
                   rowptr: Tensor, idx: Tensor, val: Tensor, c: list[float], want_s: bool,
                   want_d: bool, want_w: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of a fully connected layer (numba): activation channel, timing channel and
    weight (each empty unless wanted)."""
    from antlr_snn.kernels.numba_cpu import Events
    p, _, _ = unpack(c)
    gs, gd, gw = kernels.get("numba").dense_backward(A, A_diff, s_in, weight,
                                                     Events(rowptr, idx, val), p, want_s,
                                                     want_d, want_w)
    empty = A.new_empty(0)
    return (gs if gs is not None else empty, gd if gd is not None else empty.clone(),
            gw if gw is not None else empty.clone())


@dense_backward.register_fake
def _(A, A_diff, s_in, weight, rowptr, idx, val, c, want_s, want_d, want_w):
    empty = A.new_empty(0)
    return (torch.empty_like(s_in) if want_s else empty,
            torch.empty_like(s_in) if want_d else empty.clone(),
            torch.empty_like(weight) if want_w else empty.clone())


# ----------------------------------------------------------------------------- checks
def require_binary(x: Tensor, what: str = "input spikes") -> None:
    """``UserError`` unless every entry of ``x`` is 0 or 1 (one pass over the data)."""
    from antlr_snn.errors import UserError
    problem = kernels.binary_check(x)
    if problem == "nan":
        raise UserError(f"{what} contain NaN")
    if problem == "nonbinary":
        raise UserError(f"{what} must be binary (0 or 1); found other values")


@torch.library.custom_op("antlr_snn::check_spikes", mutates_args=())
def check_spikes(x: Tensor) -> Tensor:
    """:func:`require_binary` as an operator that a compiled graph keeps; returns an empty
    tensor."""
    require_binary(x)
    return x.new_empty(0)


@check_spikes.register_fake
def _(x):
    return x.new_empty(0)
