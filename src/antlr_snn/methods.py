"""The gradient methods as autograd Functions: activation (Eq. 6, 9), timing (Eq. 7, 10),
ANTLR (Eq. 8) and BPTT (Fig. 2a).

Two channels travel between layers through ordinary autograd, as dual numbers: a layer
returns its spikes ``S`` and a zero-valued "time shift" ``d`` of the same shape (the spike at
step t really happens at t + d). The gradient autograd delivers to ``S`` is dL/dS (the
activation channel); the gradient it delivers to ``d`` is dL/dt (the timing channel). A
channel that a layer's method drops is returned detached, so a loss that needs it can say
so (:func:`antlr_snn.losses`).

A layer is a linear synapse followed by the neuron. :class:`LIFFunction` is the neuron on
currents: it takes the current ``x = synapse(S_in)`` and a zero-valued timing current
``x_d = synapse(S_in d_in)`` (:class:`TimingCurrent`, never computed: its value is 0) and
returns ``beta_i A`` to ``x`` and ``-beta_i A_diff`` to ``x_d``; autograd through the synapse
then gives Eq. 9 and 10 for a matrix, a convolution or a pooling alike. :class:`DenseLIFFunction`
is a fully connected layer in one piece for backends that fuse it (numba: sparse input
spikes gathered, not multiplied). Their backward passes are once differentiable.

Example:
    >>> import torch
    >>> from antlr_snn import methods
    >>> from antlr_snn.neuron import LIFParameters, method_config
    >>> x = (3.0 * torch.rand(30, 2, 4)).requires_grad_()
    >>> S, d, V = methods.lif(x, None, torch.zeros(4), LIFParameters.create(), method_config())
    >>> (S.sum() + (torch.arange(30.0)[:, None, None] * S * d).sum()).backward()
    >>> tuple(x.grad.shape)
    (30, 2, 4)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from antlr_snn import kernels
from antlr_snn.kernels import ops
from antlr_snn.neuron import METHODS, LIFParameters, MethodConfig, method_config  # noqa: F401

__all__ = ["LIFFunction", "DenseLIFFunction", "TimingCurrent", "lif", "dense_lif",
           "timing_current", "METHODS", "MethodConfig", "method_config"]


def _zeros_like(S: torch.Tensor) -> torch.Tensor:
    """A zero tensor of ``S``'s shape without memory of its own (the shift ``d``)."""
    return S.new_zeros(()).expand(S.shape)


def _neuron_backward(ctx, grad_s, grad_d, grad_v, S, V, I):
    """``(A, A_diff or None, U_sum)`` of the method in ``ctx.cfg`` (BPTT: ``(GI, None, sum
    dL/dV)``). The saved tensors come as arguments: kept on ``ctx`` they would make a
    reference cycle (output -> node -> ctx -> output) that holds their memory until the
    garbage collector runs."""
    cfg, c, be = ctx.cfg, ctx.consts, ctx.backend
    if cfg.method == "bptt":
        GI, gvsum = ops.bptt_backward(grad_s, grad_v, S, V, I, c, cfg.single_spike, be)
        return GI, None, gvsum
    # Eq. 10: the input's timing channel takes this layer's whole dL/dV, even when no dL/dt
    # arrives here (a loss on S only) or lambda_tim = 0 here
    want_diff = ctx.want_diff
    A, A_diff, usum = ops.lif_backward(grad_s if cfg.lambda_act != 0.0 else None,
                                       grad_d if cfg.lambda_tim != 0.0 else None, grad_v, S, V,
                                       c, cfg.single_spike, want_diff,
                                       cfg.eps_derivative == "central", be)
    return A, (A_diff if want_diff else None), usum


def _channels(S, d, cfg: MethodConfig) -> tuple:
    """Outputs of a dropped channel are returned detached (losses check this)."""
    return (S if cfg.activation_channel else S.detach(),
            d if cfg.timing_channel else d.detach())


def _bias_grad(usum: torch.Tensor, bias: torch.Tensor, beta_bias: float) -> torch.Tensor:
    g = usum.sum_to_size(bias.shape) if usum.dim() >= bias.dim() else usum
    return g * beta_bias if beta_bias != 1.0 else g


class LIFFunction(torch.autograd.Function):
    """The neuron on currents (Eq. 1-3 forward; Eq. 8-10 or BPTT backward).

    Inputs: the current ``x [T, *shape]`` (before ``beta_i``), the timing current ``x_d`` (or
    None), ``bias`` broadcastable to ``x.shape[1:]``, ``p``, ``cfg`` and the backend name.
    Outputs: ``S``, ``d`` (zeros) and ``V``.
    """

    @staticmethod
    def forward(x, x_d, bias, p: LIFParameters, cfg: MethodConfig, backend: str,
                keep_current: bool):
        S, V, I = ops.lif_forward(x, bias, ops.consts(p), cfg.single_spike, keep_current,
                                  backend)
        return S, _zeros_like(S), V, I

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, x_d, bias, p, cfg, backend, _ = inputs
        S, d, V, I = output
        ctx.save_for_backward(S, V, I, bias)
        ctx.p, ctx.cfg, ctx.backend = p, cfg, backend
        ctx.consts = ops.consts(p, cfg.lambda_act, cfg.lambda_tim)
        ctx.want_diff = x_d is not None
        ctx.set_materialize_grads(False)  # unused outputs (often V) arrive as None, not zeros
        ctx.mark_non_differentiable(I)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_d, grad_v, grad_i):
        S, V, I, bias = ctx.saved_tensors
        A, A_diff, usum = _neuron_backward(ctx, grad_s, grad_d, grad_v, S, V, I)
        p = ctx.p
        need_x, need_xd, need_b = ctx.needs_input_grad[:3]
        gx = (A * p.beta_i if p.beta_i != 1.0 else A) if need_x else None
        gxd = A_diff * -p.beta_i if need_xd and A_diff is not None else None
        gb = _bias_grad(usum, bias, p.beta_bias) if need_b else None
        return gx, gxd, gb, None, None, None, None


class DenseLIFFunction(torch.autograd.Function):
    """A fully connected layer in one piece (for backends with ``fuses_dense``).

    Inputs: spikes ``s_in [T, *batch, K]`` and shift ``d_in`` (or None), ``weight [N, K]``
    (or ``[R, N, K]`` for ``R`` replica networks on ``[T, R, B, K]``), ``bias [N]`` (``[R,
    N]``). Outputs: ``S``, ``d`` and ``V`` as :class:`LIFFunction`.
    """

    @staticmethod
    def forward(s_in, d_in, weight, bias, p: LIFParameters, cfg: MethodConfig, backend: str,
                keep_current: bool):
        S, V, I, rowptr, idx, val = ops.dense_forward(s_in, weight, bias, ops.consts(p),
                                                      cfg.single_spike, keep_current)
        return S, _zeros_like(S), V, I, rowptr, idx, val

    @staticmethod
    def setup_context(ctx, inputs, output):
        s_in, d_in, weight, bias, p, cfg, backend, _ = inputs
        S, d, V, I, rowptr, idx, val = output
        ctx.save_for_backward(s_in, weight, bias, S, V, I, rowptr, idx, val)
        ctx.p, ctx.cfg, ctx.backend = p, cfg, backend
        ctx.consts = ops.consts(p, cfg.lambda_act, cfg.lambda_tim)
        ctx.want_diff = d_in is not None
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(I, rowptr, idx, val)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_d, grad_v, *unused):
        s_in, weight, bias, S, V, I, rowptr, idx, val = ctx.saved_tensors
        A, A_diff, usum = _neuron_backward(ctx, grad_s, grad_d, grad_v, S, V, I)
        need_s, need_d, need_w, need_b = ctx.needs_input_grad[:4]
        want_d = need_d and A_diff is not None
        gs = gd = gw = gb = None
        if need_s or want_d or need_w:
            gs, gd, gw = ops.dense_backward(A, A_diff if want_d else None, s_in, weight, rowptr,
                                            idx, val, ctx.consts, need_s, want_d, need_w)
            gs, gd, gw = (gs if need_s else None), (gd if want_d else None), (gw if need_w else None)
        if need_b:
            view = bias.reshape(bias.shape[0], 1, bias.shape[1]) if bias.dim() == 2 else bias
            gb = _bias_grad(usum, view, ctx.p.beta_bias).reshape(bias.shape)
        return gs, gd, gw, gb, None, None, None, None


class TimingCurrent(torch.autograd.Function):
    """The timing current ``x_d = synapse(S_in d_in)`` of a linear synapse, with ``d_in = 0``.

    Its value is 0 and is never computed; its backward is the synapse's transpose applied to
    the gradient, masked by the input spikes: ``dL/dd_in = S_in * synapse^T(g)`` (Eq. 10).
    ``synapse`` is a :class:`antlr_snn.synapses.Synapse`.
    """

    @staticmethod
    def forward(d_in, s_in, synapse, out_shape):
        return d_in.new_zeros(()).expand(out_shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        d_in, s_in, synapse, _ = inputs
        ctx.save_for_backward(s_in)
        ctx.synapse = synapse

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (s_in,) = ctx.saved_tensors
        g = g.to(s_in.dtype)  # under autocast the neuron's gradient comes in its lower dtype
        return ctx.synapse.transpose(g, s_in.shape) * s_in, None, None, None


def timing_current(d_in: Optional[torch.Tensor], s_in: torch.Tensor, synapse, out_shape):
    """:class:`TimingCurrent`, or None when there is no timing channel to feed."""
    if d_in is None or not (torch.is_grad_enabled() and d_in.requires_grad):
        return None
    return TimingCurrent.apply(d_in, s_in, synapse, tuple(out_shape))


def _keep_current(cfg: MethodConfig, *tensors) -> bool:
    """BPTT keeps the current I for its backward, only when a gradient will be taken."""
    return cfg.method == "bptt" and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def lif(x, x_d, bias, p: LIFParameters, cfg: MethodConfig, backend: Optional[str] = None):
    """The neuron on the current ``x`` (and timing current ``x_d``): ``(S, d, V)``."""
    backend = backend or kernels.backend_for(x).name
    if cfg.method == "bptt":
        x_d = None
    S, d, V, _ = LIFFunction.apply(x, x_d, bias, p, cfg, backend,
                                   _keep_current(cfg, x, bias))
    return (*_channels(S, d, cfg), V)


def dense_lif(s_in, d_in, weight, bias, p: LIFParameters, cfg: MethodConfig,
              backend: Optional[str] = None):
    """A fully connected layer in one piece: ``(S, d, V)``; the backend must fuse dense
    layers (``kernels.get(name).fuses_dense``)."""
    backend = backend or kernels.backend_for(s_in, weight).name
    if cfg.method == "bptt" or d_in is None or not d_in.requires_grad:
        d_in = None
    S, d, V, *_ = DenseLIFFunction.apply(s_in, d_in, weight, bias, p, cfg, backend,
                                         _keep_current(cfg, s_in, weight, bias))
    return (*_channels(S, d, cfg), V)
