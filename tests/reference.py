"""Independent reference implementations used by the tests.

They are written straight from the paper's equations, with plain loops and no code shared with
the library beyond the parameter tuple, so that agreement means something. A synapse is a
dense matrix here: a convolution or a pooling is compared through its unfolded matrix
(:func:`unfolded`).
"""
from __future__ import annotations

import numpy as np
import torch


def unfolded(synapse, in_shape):
    """The dense matrix ``[N_out, N_in]`` of a linear map on flattened inputs of ``in_shape``
    (per sample): column k is the map applied to the k-th unit vector (differentiable in the
    map's parameters)."""
    n_in = int(np.prod(in_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    cols = synapse(eye).reshape(n_in, -1)
    return cols.T.contiguous()


def simulate_eq123(s_in, w, bias, p, single_spike=False):
    """Eq. 1-3 for one sample with scalar Python loops (float64 numpy). s_in [T, N_in].

    Single spike: after its spike a neuron is held at reset (V = I = 0)."""
    T = s_in.shape[0]
    n = w.shape[0]
    V = np.zeros((T, n))
    I = np.zeros((T, n))
    S = np.zeros((T, n))
    for j in range(n):
        v = i = s_prev = 0.0
        fired = False
        for t in range(T):
            if single_spike and fired:
                V[t, j] = I[t, j] = S[t, j] = 0.0
                continue
            i = p.alpha_i * (1 - s_prev) * i + p.beta_i * sum(w[j, k] * s_in[t, k] for k in range(s_in.shape[1]))
            v = p.alpha_v * (1 - s_prev) * v + p.beta_v * i + p.beta_bias * bias[j]
            s = 1.0 if v >= p.threshold else 0.0
            fired = fired or s == 1.0
            V[t, j], I[t, j], S[t, j] = v, i, s
            s_prev = s
    return S, V, I


def eps_kernel(p, T):
    """eps[k] = beta_i beta_v sum_{m=0..k} alpha_i^m alpha_v^(k-m) (Sec. 2.1), for k < T + 1."""
    return np.array([p.beta_i * p.beta_v * sum(p.alpha_i ** m * p.alpha_v ** (k - m) for m in range(k + 1))
                     for k in range(T + 1)])


def last_spike_before(S_j, t):
    """Last step < t at which neuron j spiked, or -1."""
    idx = np.nonzero(S_j[:t])[0]
    return int(idx[-1]) if len(idx) else -1


def srm_voltage(s_in, w, bias, S, p):
    """Eq. 4 (with the bias term) given the layer's own spikes S: V[t] from kernel sums."""
    T = s_in.shape[0]
    eps = eps_kernel(p, T)
    V = np.zeros((T, w.shape[0]))
    for j in range(w.shape[0]):
        for t in range(T):
            last = last_spike_before(S[:, j], t)
            v = 0.0
            for tau in range(last + 1, t + 1):
                v += eps[t - tau] * float(w[j] @ s_in[tau])
                v += p.beta_bias * bias[j] * p.alpha_v ** (t - tau)
            V[t, j] = v
    return V


def surrogate(v, p):
    return p.surrogate_scale * np.exp(-p.surrogate_width * np.abs(v - p.threshold))


def vstar(S, V, p):
    prev = np.zeros_like(V)
    prev[1:] = (1 - S[:-1]) * V[:-1]
    return np.maximum(V - prev, p.vstar_min)


def explicit_backward(inputs, weights, biases, spikes, volts, gS_out, gT_out, p, lambdas,
                      single_spike=False, eps_derivative="backward"):
    """Eq. 6-10 with explicit O(T^2) kernel sums, one sample.

    Args:
        inputs: input spikes [T, N0]. weights/biases: per layer (dense matrices).
        spikes/volts: per layer [T, N].
        gS_out, gT_out: dL/dS and dL/dt of the output layer [T, N_L].
        lambdas: per layer (lambda_act, lambda_tim).
        eps_derivative: the kernel's time derivative in Eq. 7, ``"backward"``
            eps[k] - eps[k-1] or ``"central"`` (eps[k+1] - eps[k-1]) / 2.
    Returns: (weight grads, bias grads, (dL/dS, dL/dt) of the input) per layer.
    """
    T = inputs.shape[0]
    eps = eps_kernel(p, T)
    before = np.concatenate([[0.0], eps[:-1]])          # eps[k - 1]
    if eps_derivative == "central":
        eps_star = (eps[1:] - before[:-1]) / 2           # (eps[k+1] - eps[k-1]) / 2, k < T
    else:
        eps_star = (eps - before)[:-1]
    L = len(weights)
    gS, gT = gS_out.copy(), gT_out.copy()
    w_grads, b_grads = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        S, V, w = spikes[l], volts[l], weights[l]
        s_pre = inputs if l == 0 else spikes[l - 1]
        lam_act, lam_tim = lambdas[l]
        sig = surrogate(V, p)
        # Eq. 8: dL/dV of this layer
        g = lam_act * sig * gS + lam_tim * S * (-1.0 / vstar(S, V, p)) * gT
        if single_spike:  # held at reset after the spike: V does not depend on anything there
            fired_before = np.zeros_like(S)
            fired_before[1:] = np.minimum(np.cumsum(S, 0)[:-1], 1)
            g = g * (1 - fired_before)
        n_post, n_pre = w.shape
        gw = np.zeros_like(w)
        gb = np.zeros(n_post)
        gS_pre = np.zeros((T, n_pre))
        gT_pre = np.zeros((T, n_pre))
        for j in range(n_post):
            for ta in range(T):
                if g[ta, j] == 0.0:
                    continue
                last = last_spike_before(S[:, j], ta)
                for tau in range(last + 1, ta + 1):
                    k = ta - tau
                    gw[j] += g[ta, j] * eps[k] * s_pre[tau]              # dV/dw via Eq. 4
                    gb[j] += g[ta, j] * p.beta_bias * p.alpha_v ** k     # bias term of Eq. 4
                    gS_pre[tau] += g[ta, j] * w[j] * eps[k]              # Eq. 6
                    gT_pre[tau] += g[ta, j] * (-w[j]) * eps_star[k] * s_pre[tau]  # Eq. 7
        w_grads[l], b_grads[l] = gw, gb
        gS, gT = gS_pre, gT_pre
    return w_grads, b_grads, (gS, gT)


class RefSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, threshold, scale, width):
        ctx.save_for_backward(v)
        ctx.c = (threshold, scale, width)
        return (v >= threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        th, scale, width = ctx.c
        return grad * scale * torch.exp(-width * (v - th).abs()), None, None, None


def autograd_layer(current, bias, p, detach_reset, single_spike=False):
    """Autograd through Eq. 1-3 of one layer given its current ``x[t] = sum_i w S_i[t]``
    ``[T, *shape]``; ``detach_reset`` drops the reset path (the SRM-based activation method)."""
    i_t = torch.zeros_like(current[0])
    v_t = torch.zeros_like(i_t)
    s_t = torch.zeros_like(i_t)
    alive = torch.ones_like(i_t)
    S, V = [], []
    for t in range(current.shape[0]):
        keep = 1 - (s_t.detach() if detach_reset else s_t)
        i_t = p.alpha_i * keep * i_t + p.beta_i * current[t]
        v_t = p.alpha_v * keep * v_t + p.beta_v * i_t + p.beta_bias * bias
        if single_spike:  # held at reset after the spike (a constraint: not differentiated)
            i_t, v_t = i_t * alive, v_t * alive
        s_t = RefSpike.apply(v_t, p.threshold, p.surrogate_scale, p.surrogate_width)
        if single_spike:
            s_t = s_t * alive
            alive = alive * (1 - s_t.detach())
        S.append(s_t)
        V.append(v_t)
    return torch.stack(S), torch.stack(V)


def autograd_network(x, weights, biases, p, detach_reset, single_spike=False):
    """:func:`autograd_layer` for a stack of fully connected layers."""
    s_in = x
    outs = []
    for w, b in zip(weights, biases):
        S, V = autograd_layer(s_in @ w.T, b, p, detach_reset, single_spike)
        outs.append((S, V))
        s_in = S
    return outs
