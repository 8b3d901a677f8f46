"""Every equation of the neuron and of its gradients, as pure functions: the reference.

The discrete-time current-based LIF model (Eq. 1-3) acts on input *currents*
``x[t] = sum_i w_ij S_i[t]`` of any shape ``[T, *batch, *features]``, produced by any linear
synapse (a matrix, a convolution, a pooling). The backward functions turn the gradients that
reach a layer's outputs into dL/dV (Eq. 8) and run the two adjoint recursions that replace the
kernel sums of Eq. 6, 7, 9 and 10 in O(T). The fast backends (:mod:`antlr_snn.kernels`)
implement the same functions and are tested equal to these.

Example:
    >>> import torch
    >>> from antlr_snn.neuron import LIFParameters, kernel, lif_forward
    >>> p = LIFParameters.create()                    # the authors' constants
    >>> round(kernel(p, 200).max().item(), 6)         # one spike of weight w peaks at w
    1.0
    >>> x = torch.zeros(60, 1, 1); x[0] = 2.0          # one input of weight 2 at t = 0
    >>> S, V, _ = lif_forward(x, torch.zeros(1), p)
    >>> S[:, 0, 0].nonzero().flatten().tolist()       # V crosses the threshold 1 once
    [23]
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from antlr_snn.checks import is_real
from antlr_snn.errors import UserError

__all__ = ["LIFParameters", "MethodConfig", "METHODS", "EPS_DERIVATIVES", "method_config",
           "eps_raw", "default_beta_v", "kernel", "surrogate", "lif_forward", "vstar",
           "fired_before", "dl_dv", "adjoint", "lif_backward", "bptt_backward"]

METHODS = ("antlr", "activation", "timing", "bptt")
EPS_DERIVATIVES = ("backward", "central")


def eps_raw(alpha_v: float, alpha_i: float, length: int) -> torch.Tensor:
    """Unscaled SRM kernel ``eps_raw[k] = sum_{m=0..k} alpha_i^m alpha_v^(k-m)`` (Sec. 2.1), float64."""
    k = torch.arange(length, dtype=torch.float64)
    if math.isclose(alpha_v, alpha_i):
        return (k + 1) * torch.as_tensor(alpha_v, dtype=torch.float64) ** k
    av = torch.as_tensor(alpha_v, dtype=torch.float64)
    ai = torch.as_tensor(alpha_i, dtype=torch.float64)
    return (av ** (k + 1) - ai ** (k + 1)) / (av - ai)


def default_beta_v(alpha_v: float, alpha_i: float) -> float:
    """``1 / max_k eps_raw[k]``: one input spike of weight w then peaks at w (authors' default).

    With both decays equal to 1 the kernel grows without bound; 1 is used then.
    """
    if alpha_v >= 1.0 and alpha_i >= 1.0:
        return 1.0
    if alpha_v >= 1.0 or alpha_i >= 1.0:  # kernel rises to its limit 1 / (1 - other alpha)
        other = alpha_i if alpha_v >= 1.0 else alpha_v
        return 1.0 - other
    # the peak of (k+1) a^k lies near k = -1/ln(a); search a window that surely contains it
    horizon = int(min(1e6, 10 + 20.0 / max(1e-12, -math.log(max(alpha_v, alpha_i)))))
    return float(1.0 / eps_raw(alpha_v, alpha_i, horizon).max())


class LIFParameters(NamedTuple):
    """Constants of Eq. 1-3 and of the surrogate derivative; all plain floats.

    ``surrogate_scale * exp(-surrogate_width * |V - threshold|)`` is sigma(V) (Sec. 2.2.1).
    ``vstar_min`` clamps V* from below in the timing gradient dt/dV = -1/V* (Sec. 2.2.2).
    """

    alpha_v: float = 0.99
    alpha_i: float = 0.99
    beta_v: float = 1.0
    beta_i: float = 1.0
    beta_bias: float = 1.0
    threshold: float = 1.0
    surrogate_scale: float = 1.0
    surrogate_width: float = 3.0
    vstar_min: float = 1e-2

    @classmethod
    def create(cls, *, alpha_v=0.99, alpha_i=0.99, beta_v=None, beta_i=1.0, beta_bias=None,
               threshold=1.0, surrogate_scale=1.0, surrogate_width=3.0, vstar_min=1e-2):
        """Validated parameters; ``beta_v``/``beta_bias`` of ``None`` mean ``default_beta_v``."""
        for name, a in (("alpha_v", alpha_v), ("alpha_i", alpha_i)):
            if not (is_real(a) and 0.0 < a <= 1.0):
                raise UserError(f"{name} must lie in (0, 1], got {a!r}")
        beta_default = default_beta_v(float(alpha_v), float(alpha_i))
        beta_v = beta_default if beta_v is None else beta_v
        beta_bias = beta_default if beta_bias is None else beta_bias
        checks = (("beta_v", beta_v), ("beta_i", beta_i), ("beta_bias", beta_bias),
                  ("threshold", threshold), ("surrogate_width", surrogate_width),
                  ("vstar_min", vstar_min))
        for name, value in checks:
            if not (is_real(value) and value > 0):
                raise UserError(f"{name} must be a finite number > 0, got {value!r}")
        if not (is_real(surrogate_scale) and surrogate_scale >= 0):
            raise UserError(f"surrogate_scale must be a finite number >= 0, got {surrogate_scale!r}")
        return cls(float(alpha_v), float(alpha_i), float(beta_v), float(beta_i), float(beta_bias),
                   float(threshold), float(surrogate_scale), float(surrogate_width), float(vstar_min))


class MethodConfig(NamedTuple):
    """How a layer turns the gradients on its outputs into dL/dV (Eq. 8).

    ``method`` is one of :data:`METHODS`; ``"activation"`` and ``"timing"`` are ANTLR with
    ``(lambda_act, lambda_tim) = (1, 0)`` and ``(0, 1)`` (Sec. 3.2). ``eps_derivative`` is the
    time derivative of the SRM kernel in the timing channel (Eq. 7): ``"backward"``
    ``eps[k] - eps[k-1]`` or ``"central"`` ``(eps[k+1] - eps[k-1]) / 2`` (the authors' code).
    """

    method: str = "antlr"
    lambda_act: float = 1.0
    lambda_tim: float = 1.0
    single_spike: bool = False
    eps_derivative: str = "backward"

    @property
    def activation_channel(self) -> bool:
        """dL/dS reaches dL/dV (the spikes are differentiable)."""
        return self.method == "bptt" or self.lambda_act != 0.0

    @property
    def timing_channel(self) -> bool:
        """dL/dt reaches dL/dV (the shift is differentiable)."""
        return self.method != "bptt" and self.lambda_tim != 0.0


def method_config(method: str = "antlr", lambda_act: float = 1.0, lambda_tim: float = 1.0,
                  single_spike: bool = False, eps_derivative: str = "backward") -> MethodConfig:
    """Validated :class:`MethodConfig`; ``activation``/``timing`` fix the lambdas to (1,0)/(0,1)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, lam in (("lambda_act", lambda_act), ("lambda_tim", lambda_tim)):
        if not (is_real(lam) and lam >= 0):
            raise UserError(f"{name} must be a finite number >= 0, got {lam!r}")
    if not isinstance(single_spike, bool):
        raise UserError(f"single_spike must be a bool, got {single_spike!r}")
    if eps_derivative not in EPS_DERIVATIVES:
        raise UserError(f"eps_derivative must be one of {', '.join(EPS_DERIVATIVES)}, "
                        f"got {eps_derivative!r}")
    if method == "activation":
        lambda_act, lambda_tim = 1.0, 0.0
    elif method == "timing":
        lambda_act, lambda_tim = 0.0, 1.0
    return MethodConfig(method, float(lambda_act), float(lambda_tim), single_spike, eps_derivative)


def kernel(p: LIFParameters, length: int, dtype=torch.float64) -> torch.Tensor:
    """Scaled SRM kernel ``eps[k] = beta_i beta_v eps_raw[k]`` (Eq. 4)."""
    return (p.beta_i * p.beta_v * eps_raw(p.alpha_v, p.alpha_i, length)).to(dtype)


def surrogate(v: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """Surrogate derivative sigma(V) ~ dS/dV (Sec. 2.2.1)."""
    return p.surrogate_scale * torch.exp(-p.surrogate_width * (v - p.threshold).abs())


def lif_forward(x: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
                single_spike: bool = False, keep_current: bool = False):
    """Eq. 1-3 given the synaptic input ``x[t] = sum_i w_ij S_i[t]`` for all steps.

    Args:
        x: ``[T, *shape]`` input current before the ``beta_i`` scale.
        bias: V_bias, broadcastable to ``x.shape[1:]``.
        single_spike: each neuron fires at most once per sample (Fig. 7b, 8b). After its
            spike a neuron is held at reset: ``V = I = 0`` for the rest of the sample.
        keep_current: also return I (the BPTT backward needs it).

    Returns:
        ``(S, V, I)`` of the shape of ``x`` (``I`` is None unless ``keep_current``). No
        autograd graph is built.
    """
    with torch.no_grad():
        S = torch.empty_like(x)
        V = torch.empty_like(x)
        I = torch.empty_like(x) if keep_current else None
        i_t = torch.zeros_like(x[0])
        v_t = torch.zeros_like(x[0])
        keep = torch.ones_like(x[0])   # 1 - S[t-1]
        alive = torch.ones_like(x[0])  # 1 - (fired before t), single-spike only
        bias_term = (p.beta_bias * bias).to(x.dtype)
        for t in range(x.shape[0]):
            i_t = i_t * keep * p.alpha_i + p.beta_i * x[t]
            v_t = v_t * keep * p.alpha_v + p.beta_v * i_t + bias_term
            if single_spike:  # held at reset after the spike
                i_t = i_t * alive
                v_t = v_t * alive
            s = (v_t >= p.threshold).to(x.dtype)
            if single_spike:
                s = s * alive
                alive = alive * (1 - s)
            keep = 1 - s
            S[t], V[t] = s, v_t
            if I is not None:
                I[t] = i_t
    return S, V, I


def vstar(S: torch.Tensor, V: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """``V*[t] = V[t] - (1 - S[t-1]) V[t-1]``, clamped below at ``vstar_min`` (Sec. 2.2.2)."""
    prev = torch.zeros_like(V)
    prev[1:] = (1 - S[:-1]) * V[:-1]
    return (V - prev).clamp_min(p.vstar_min)


def fired_before(S: torch.Tensor) -> torch.Tensor:
    """1 where the neuron already fired at an earlier step (for the single-spike mask)."""
    before = torch.zeros_like(S)
    before[1:] = S.cumsum(0)[:-1].clamp_max(1)
    return before


def dl_dv(S, V, grad_s, grad_d, grad_v, p: LIFParameters, cfg: MethodConfig) -> torch.Tensor:
    """Eq. 8: ``lambda_act sigma(V) dL/dS + lambda_tim S (-1/V*) dL/dt`` (+ dL/dV from a loss
    on V). With ``single_spike`` every term is 0 after a neuron's spike (V is held there)."""
    g = torch.zeros_like(V)
    if cfg.lambda_act != 0.0 and grad_s is not None:
        g = g + cfg.lambda_act * surrogate(V, p) * grad_s
    if cfg.lambda_tim != 0.0 and grad_d is not None:
        g = g - cfg.lambda_tim * S * grad_d / vstar(S, V, p)
    if grad_v is not None:
        g = g + grad_v
    if cfg.single_spike:
        g = g * (1 - fired_before(S))
    return g


def adjoint(g: torch.Tensor, S: torch.Tensor, p: LIFParameters, want_diff: bool = False,
            central: bool = False):
    """The reverse recursions that replace the kernel sums of Eq. 6, 7, 9 and 10.

    ``U[t] = g[t] + alpha_v (1 - S[t]) U[t+1]`` (adjoint of V) and
    ``A[t] = beta_v U[t] + alpha_i (1 - S[t]) A[t+1]`` (adjoint of I), so that
    ``beta_i A[t] = sum_{t_a >= t, no spike in [t, t_a - 1]} eps[t_a - t] g[t_a]`` (Eq. 6).

    The timing channel (Eq. 7) reads the kernel's time derivative off the same traces:
    ``-beta_i A_diff[t]`` is the sum with ``eps*`` in place of ``eps``, where for
    ``"backward"`` ``eps*[k] = eps[k] - eps[k-1]`` and ``A_diff[t] = A[t] - (1 - S[t]) A[t+1]``;
    for ``central`` ``eps*[k] = (eps[k+1] - eps[k-1]) / 2`` and, since
    ``eps[k+1] = alpha_v eps[k] + beta_i beta_v alpha_i^(k+1)``, one more masked trace
    ``Q[t] = g[t] + alpha_i (1 - S[t]) Q[t+1]`` gives
    ``A_diff[t] = (alpha_v A[t] + beta_v alpha_i Q[t] - (1 - S[t]) A[t+1]) / 2``.

    Returns:
        ``(A, A_diff or None, U_sum)`` with ``U_sum = sum_t U[t]`` (for the bias).
    """
    with torch.no_grad():
        A = torch.empty_like(g)
        A_diff = torch.empty_like(g) if want_diff else None
        u = torch.zeros_like(g[0])
        a = torch.zeros_like(g[0])
        q = torch.zeros_like(g[0])
        u_sum = torch.zeros_like(g[0])
        keep = 1 - S
        for t in range(g.shape[0] - 1, -1, -1):
            a_next = a
            u = u * keep[t] * p.alpha_v + g[t]
            a = a * keep[t] * p.alpha_i + p.beta_v * u
            u_sum = u_sum + u
            A[t] = a
            if want_diff and central:
                q = q * keep[t] * p.alpha_i + g[t]
                A_diff[t] = (p.alpha_v * a + p.beta_v * p.alpha_i * q - keep[t] * a_next) / 2
            elif want_diff:
                A_diff[t] = a - keep[t] * a_next
    return A, A_diff, u_sum


def lif_backward(grad_s, grad_d, grad_v, S, V, p: LIFParameters, cfg: MethodConfig,
                 want_diff: bool):
    """A layer's backward: dL/dV by Eq. 8, then :func:`adjoint`; ``(A, A_diff, U_sum)``.

    The layer below receives ``beta_i A`` on the current (activation channel, Eq. 9) and
    ``-beta_i A_diff`` on the timing current (Eq. 10); the bias gets ``beta_bias U_sum``.
    """
    g = dl_dv(S, V, grad_s, grad_d, grad_v, p, cfg)
    return adjoint(g, S, p, want_diff, cfg.eps_derivative == "central")


def bptt_backward(grad_s, grad_v, S, V, I, p: LIFParameters, single_spike: bool = False):
    """Adjoint of Eq. 1-3 with the reset path attached (RNN-like BPTT, Fig. 2a).

    The exact gradient of :func:`lif_forward` with ``S = Theta(V)`` differentiated as
    sigma(V), the reset factor ``(1 - S[t-1])`` included (single-spike: the "held" mask is a
    constraint and is not differentiated). Returns ``(GI, GV_sum)``: the current gets
    ``beta_i GI``, the bias ``beta_bias GV_sum``.
    """
    with torch.no_grad():
        T = S.shape[0]
        sig = surrogate(V, p)
        alive = 1 - fired_before(S) if single_spike else None
        GI = torch.empty_like(S)
        gi_next = torch.zeros_like(S[0])
        gv_next = torch.zeros_like(S[0])
        gv_sum = torch.zeros_like(S[0])
        for t in range(T - 1, -1, -1):
            gs = grad_s[t] if grad_s is not None else torch.zeros_like(S[t])
            if t < T - 1:  # S[t] enters step t+1 through the reset factor (1 - S[t])
                gs = gs - p.alpha_i * I[t] * gi_next - p.alpha_v * V[t] * gv_next
            keep = 1 - S[t]
            sg = sig[t] if alive is None else sig[t] * alive[t]
            gv = gs * sg + p.alpha_v * keep * gv_next
            if grad_v is not None:
                gv = gv + grad_v[t]
            if alive is not None:
                gv = gv * alive[t]
            gi = p.beta_v * gv + p.alpha_i * keep * gi_next
            if alive is not None:
                gi = gi * alive[t]
            GI[t] = gi
            gv_sum = gv_sum + gv
            gi_next, gv_next = gi, gv
    return GI, gv_sum

