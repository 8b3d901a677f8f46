"""Neuron dynamics: the discrete-time current-based LIF model (Eq. 1-3) as pure functions.

Everything here works on whole tensors ``[T, *batch, N]`` and is shared by every gradient
method. The only sequential part is the recursion over time; the input projection for all
steps is done beforehand in one product (see :mod:`antlr_snn.methods`).

Example:
    >>> import torch
    >>> from antlr_snn.neuron import LIFParameters, kernel, lif_recurrence
    >>> p = LIFParameters.create()                    # the authors' constants
    >>> round(kernel(p, 200).max().item(), 6)         # one spike of weight w peaks at w
    1.0
    >>> x = torch.zeros(60, 1, 1); x[0] = 2.0          # one input of weight 2 at t = 0
    >>> S, V = lif_recurrence(x, torch.zeros(1), p)
    >>> S[:, 0, 0].nonzero().flatten().tolist()       # V crosses the threshold 1 once
    [23]
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from antlr_snn.errors import UserError


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
            if not (isinstance(a, (int, float)) and 0.0 < a <= 1.0):
                raise UserError(f"{name} must lie in (0, 1], got {a!r}")
        beta_default = default_beta_v(float(alpha_v), float(alpha_i))
        beta_v = beta_default if beta_v is None else beta_v
        beta_bias = beta_default if beta_bias is None else beta_bias
        checks = (("beta_v", beta_v), ("beta_i", beta_i), ("beta_bias", beta_bias),
                  ("threshold", threshold), ("surrogate_width", surrogate_width),
                  ("vstar_min", vstar_min))
        for name, value in checks:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(surrogate_scale, (int, float)) and math.isfinite(surrogate_scale)
                and surrogate_scale >= 0):
            raise UserError(f"surrogate_scale must be a finite number >= 0, got {surrogate_scale!r}")
        return cls(float(alpha_v), float(alpha_i), float(beta_v), float(beta_i), float(beta_bias),
                   float(threshold), float(surrogate_scale), float(surrogate_width), float(vstar_min))


def kernel(p: LIFParameters, length: int, dtype=torch.float64) -> torch.Tensor:
    """Scaled SRM kernel ``eps[k] = beta_i beta_v eps_raw[k]`` (Eq. 4)."""
    return (p.beta_i * p.beta_v * eps_raw(p.alpha_v, p.alpha_i, length)).to(dtype)


def surrogate(v: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """Surrogate derivative sigma(V) ~ dS/dV (Sec. 2.2.1)."""
    return p.surrogate_scale * torch.exp(-p.surrogate_width * (v - p.threshold).abs())


def lif_recurrence(x: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
                   single_spike: bool = False):
    """Run Eq. 1-3 given the synaptic input ``x[t] = sum_i w_ij S_i[t]`` for all steps.

    Args:
        x: ``[T, *batch, N]`` input before the ``beta_i`` scale.
        bias: ``[N]`` (or broadcastable) V_bias.
        single_spike: each neuron fires at most once per sample (Fig. 7b, 8b).

    Returns:
        ``(S, V)``, both ``[T, *batch, N]``. No autograd graph is built.
    """
    with torch.no_grad():
        S = torch.empty_like(x)
        V = torch.empty_like(x)
        i_t = torch.zeros_like(x[0])
        v_t = torch.zeros_like(x[0])
        keep = torch.ones_like(x[0])  # 1 - S[t-1]
        fired = torch.zeros_like(x[0]) if single_spike else None
        bias_term = p.beta_bias * bias
        bx = p.beta_i * x
        for t in range(x.shape[0]):
            i_t.mul_(keep).mul_(p.alpha_i).add_(bx[t])
            v_t.mul_(keep).mul_(p.alpha_v).add_(i_t, alpha=p.beta_v).add_(bias_term)
            V[t] = v_t
            s = S[t]
            torch.ge(v_t, p.threshold, out=s)
            if fired is not None:
                s.mul_(1 - fired)
                fired.add_(s)
            torch.sub(1, s, out=keep)
    return S, V


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


def adjoint_recurrence(g: torch.Tensor, S: torch.Tensor, p: LIFParameters):
    """The two reverse recursions that replace the kernel sums of Eq. 6, 7, 9 and 10.

    ``U[t] = g[t] + alpha_v (1 - S[t]) U[t+1]`` (adjoint of V) and
    ``A[t] = beta_v U[t] + alpha_i (1 - S[t]) A[t+1]`` (adjoint of I).

    ``beta_i A[t]`` equals ``sum_{t_a >= t, no spike in [t, t_a - 1]} eps[t_a - t] g[t_a]``.
    """
    with torch.no_grad():
        U = torch.empty_like(g)
        A = torch.empty_like(g)
        u = torch.zeros_like(g[0])
        a = torch.zeros_like(g[0])
        keep = 1 - S
        for t in range(g.shape[0] - 1, -1, -1):
            u.mul_(keep[t]).mul_(p.alpha_v).add_(g[t])
            a.mul_(keep[t]).mul_(p.alpha_i).add_(u, alpha=p.beta_v)
            U[t] = u
            A[t] = a
    return U, A
