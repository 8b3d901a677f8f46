"""The gradient methods: activation (Eq. 6, 9), timing (Eq. 7, 10), ANTLR (Eq. 8) and BPTT.

Two channels travel between layers through ordinary autograd, as dual numbers: a layer
returns its spikes ``S`` and a zero-valued "time shift" ``d`` of the same shape (the spike at
step t really happens at t + d). The gradient autograd delivers to ``S`` is dL/dS (the
activation channel); the gradient it delivers to ``d`` is dL/dt (the timing channel). Losses
are differentiable functions of ``(S, d)``, so users can write their own.

:class:`LIFFunction` computes both channels for the layer below with the O(T) reverse
recursions of :func:`antlr_snn.neuron.adjoint_recurrence`. ``"bptt"`` needs no custom backward:
:func:`bptt_forward` is plain autograd through Eq. 1-3 with the reset path attached (Fig. 2a).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from antlr_snn import kernels
from antlr_snn.neuron import LIFParameters, fired_before, surrogate, vstar
from antlr_snn.errors import UserError

METHODS = ("antlr", "activation", "timing", "bptt")


class MethodConfig(NamedTuple):
    """Which channels a layer turns into dL/dV (Eq. 8)."""

    lambda_act: float
    lambda_tim: float
    single_spike: bool


def method_config(method: str, lambda_act: float = 1.0, lambda_tim: float = 1.0,
                  single_spike: bool = False) -> MethodConfig:
    """Validate ``method`` and the lambdas; ``activation``/``timing`` are ANTLR with (1,0)/(0,1)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, lam in (("lambda_act", lambda_act), ("lambda_tim", lambda_tim)):
        if not isinstance(lam, (int, float)) or not (lam >= 0) or lam == float("inf"):
            raise UserError(f"{name} must be a finite number >= 0, got {lam!r}")
    if method == "activation":
        lambda_act, lambda_tim = 1.0, 0.0
    elif method == "timing":
        lambda_act, lambda_tim = 0.0, 1.0
    return MethodConfig(float(lambda_act), float(lambda_tim), bool(single_spike))


def _bias_shape(weight: torch.Tensor) -> tuple:
    """Broadcast shape of the bias: ``[N]``, or ``[R, 1, N]`` for ``R`` replica networks."""
    return (weight.shape[0],) if weight.dim() == 2 else (weight.shape[0], 1, weight.shape[1])


def _bias_view(bias: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return bias.reshape(_bias_shape(weight))


def _scale_(t: torch.Tensor, c: float) -> torch.Tensor:
    """``t * c`` in place; skipped for ``c == 1`` (x * 1 == x exactly)."""
    return t if c == 1.0 else t.mul_(c)


class LIFFunction(torch.autograd.Function):
    """One LIF layer with the combined activation/timing backward pass.

    Inputs: spikes ``s_in`` and shift ``d_in`` (``[T, *batch, N_in]``; ``d_in`` may be None),
    ``weight [N, N_in]``, ``bias [N]``. Outputs: ``S``, ``d`` (zeros) and ``V``.
    """

    @staticmethod
    def forward(ctx, s_in, d_in, weight, bias, p: LIFParameters, cfg: MethodConfig):
        ev = kernels.events(s_in, weight)  # sparse spikes: gather rows (None: dense product)
        S, V = kernels.lif_layer(s_in, weight, _bias_view(bias, weight), p, cfg.single_spike, ev)
        ctx.save_for_backward(s_in, weight, S, V)
        ctx.p, ctx.cfg, ctx.events = p, cfg, ev
        ctx.set_materialize_grads(False)  # unused outputs (often V) arrive as None, not zeros
        ctx.has_d_in = d_in is not None
        return S, kernels.zeros_like(S), V

    @staticmethod
    def backward(ctx, grad_s, grad_d, grad_v):
        s_in, weight, S, V = ctx.saved_tensors
        p, cfg = ctx.p, ctx.cfg
        need_s, need_d, need_w, need_b = ctx.needs_input_grad[:4]
        want_d = need_d and ctx.has_d_in
        # compiled CPU path: Eq. 8 and both recursions in one sweep (None: reference below)
        fused = kernels.lif_backward(grad_s, grad_d, grad_v, S, V, p, cfg.lambda_act,
                                     cfg.lambda_tim, cfg.single_spike, want_ad=want_d)
        if fused is not None:
            A, A_diff, U_sum = fused
        else:
            g = dl_dv(S, V, grad_s, grad_d, p, cfg)
            if grad_v is not None:
                g = g + grad_v
            U, A = kernels.adjoint_recurrence(g, S, p)
            U_sum = U
            if want_d:
                nxt = torch.zeros_like(A)
                nxt[:-1] = (1 - S[:-1]) * A[1:]
                A_diff = A - nxt
        grad_s_in = grad_d_in = grad_w = grad_b = None
        if need_w:
            grad_w = _scale_(kernels.weight_grad(A, s_in, events=ctx.events), p.beta_i)
        if need_b:
            grad_b = p.beta_bias * U_sum.sum_to_size(_bias_shape(weight)).reshape(weight.shape[:-1])
        narrow = kernels.input_grads(A, A_diff if want_d else None, weight, s_in, p, need_s,
                                     want_d, ctx.events)
        if narrow is not None:  # compiled, one pass (narrow layers on CPU)
            grad_s_in, grad_d_in = narrow
        if need_s and narrow is None:
            # activation channel: dL/dS_i[t] = beta_i sum_j w_ij A_j[t]  (Eq. 6 as a recursion)
            grad_s_in = _scale_(A @ weight, p.beta_i)
        if want_d and narrow is None:
            # timing channel: dL/dt_i[t] = -beta_i sum_j w_ij (A_j[t] - (1 - S_j[t]) A_j[t+1])
            grad_d_in = (A_diff @ weight).mul_(-p.beta_i).mul_(s_in)
        return grad_s_in, grad_d_in, grad_w, grad_b, None, None


def dl_dv(S, V, grad_s, grad_d, p: LIFParameters, cfg: MethodConfig) -> torch.Tensor:
    """Eq. 8: ``lambda_act sigma(V) dL/dS + lambda_tim S (-1/V*) dL/dt``."""
    g = torch.zeros_like(V)
    if cfg.lambda_act != 0.0 and grad_s is not None:
        sig = surrogate(V, p)
        if cfg.single_spike:  # S[t] = Theta(V[t]) (1 - fired before t)
            sig = sig * (1 - fired_before(S))
        g = g + cfg.lambda_act * sig * grad_s
    if cfg.lambda_tim != 0.0 and grad_d is not None:
        g = g - cfg.lambda_tim * S * grad_d / vstar(S, V, p)
    return g


class SurrogateSpike(torch.autograd.Function):
    """Heaviside step whose backward pass uses sigma(V) (for ``"bptt"``)."""

    @staticmethod
    def forward(ctx, v, p: LIFParameters):
        ctx.save_for_backward(v)
        ctx.p = p
        return (v >= p.threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * surrogate(v, ctx.p), None


class BPTTFunction(torch.autograd.Function):
    """Eq. 1-3 with the reset path attached (Fig. 2a), forward and backward compiled
    (:func:`kernels.bptt_forward`, :func:`kernels.bptt_backward`); the same numbers as
    autograd through the reference loop of :func:`bptt_forward`."""

    @staticmethod
    def forward(ctx, s_in, weight, bias, p: LIFParameters, single_spike: bool, fast: tuple):
        S, V, I, ev = fast
        ctx.save_for_backward(s_in, weight, S, V, I)
        ctx.p, ctx.single, ctx.events = p, single_spike, ev
        ctx.set_materialize_grads(False)
        return S, V

    @staticmethod
    def backward(ctx, grad_s, grad_v):
        s_in, weight, S, V, I = ctx.saved_tensors
        p = ctx.p
        GI, gvsum = kernels.bptt_backward(grad_s, grad_v, S, V, I, p, ctx.single)
        need_s, need_w, need_b = ctx.needs_input_grad[:3]
        gs_in = gw = gb = None
        if need_w:
            gw = _scale_(kernels.weight_grad(GI, s_in, events=ctx.events), p.beta_i)
        if need_b:
            gb = p.beta_bias * gvsum.sum_to_size(_bias_shape(weight)).reshape(weight.shape[:-1])
        if need_s:
            narrow = kernels.input_grads(GI, None, weight, s_in, p, True, False)
            gs_in = narrow[0] if narrow is not None else _scale_(GI @ weight, p.beta_i)
        return gs_in, gw, gb, None, None, None


def bptt_forward(s_in, weight, bias, p: LIFParameters, single_spike: bool = False):
    """RNN-like activation method (Fig. 2a): autograd through Eq. 1-3, reset path attached.

    The single-spike mask (neurons that already fired) is a constraint, not a dynamics path,
    so it is detached. On CPU the loop and its backward run compiled (:class:`BPTTFunction`,
    same numbers); the loop below is the reference and the path for other devices.
    """
    infer = not (torch.is_grad_enabled() and any(t.requires_grad for t in (s_in, weight, bias)))
    fast = kernels.bptt_forward(s_in, weight, bias, p, single_spike, keep_current=not infer)
    if fast is not None:  # inference: no current kept, no graph
        return fast[:2] if infer else BPTTFunction.apply(s_in, weight, bias, p, bool(single_spike),
                                                         fast)
    x = p.beta_i * kernels.project(s_in, weight)
    bias_term = p.beta_bias * _bias_view(bias, weight)
    i_t = torch.zeros_like(x[0])
    v_t = torch.zeros_like(x[0])
    s_t = torch.zeros_like(x[0])
    fired = torch.zeros_like(x[0])
    spikes, volts = [], []
    for t in range(x.shape[0]):
        i_t = p.alpha_i * (1 - s_t) * i_t + x[t]
        v_t = p.alpha_v * (1 - s_t) * v_t + p.beta_v * i_t + bias_term
        s_t = SurrogateSpike.apply(v_t, p)
        if single_spike:
            s_t = s_t * (1 - fired)
            fired = fired + s_t.detach()
        spikes.append(s_t)
        volts.append(v_t)
    return torch.stack(spikes), torch.stack(volts)
