"""The losses of Table 1 and the spike regularisers of Sec. 4, as functions of ``(S, d)``.

Every loss takes a :class:`~antlr_snn.layers.SpikeOutput` (or anything with ``.spikes`` and
``.shift`` of shape ``[T, *batch, N]``) and returns a scalar averaged over the batch. Autograd
then delivers dL/dS to ``out.spikes`` and dL/dt to ``out.shift``: exactly the activation and
timing gradients that Table 1 lists.

Example:
    >>> import torch
    >>> from antlr_snn import SpikingNetwork, losses
    >>> net = SpikingNetwork([10, 20, 5])
    >>> out = net(torch.bernoulli(torch.full((40, 3, 10), 0.2)))
    >>> loss = losses.count_loss(out, torch.ones(3, 5)) + losses.latency_loss(out, torch.tensor([0, 1, 2]))
    >>> loss.backward()

A batch-averaged loss needs at least one sample (``ValueError`` on an empty batch; the mean
over no samples is undefined); ``spike_train_loss(..., reduction="none")`` returns ``[0]``.
"""
from __future__ import annotations

import math
import numbers

import torch
from antlr_snn.errors import UserError

__all__ = ["count_loss", "spike_train_loss", "latency_loss", "at_least_one_spike_loss",
           "no_spike_penalty", "first_spike_times", "exponential_kernel", "KAPPA_DERIVATIVES"]


def _batch_shape(out, mean: bool = True) -> tuple:
    """``[*batch]`` of ``out.spikes`` ``[T, *batch, N]``; checks the shape only (no data pass)."""
    shape = tuple(out.spikes.shape)
    if len(shape) < 2 or shape[0] < 1 or shape[-1] < 1:
        raise UserError(f"output spikes must be [T, *batch, N] with T >= 1 and N >= 1, "
                         f"got shape {shape}")
    if mean and math.prod(shape[1:-1]) == 0:
        raise UserError(f"the loss is a mean over the batch and the batch is empty "
                         f"(spikes of shape {shape})")
    return shape[1:-1]


def _check_number(name: str, value, positive: bool = False) -> None:
    """``value`` is a finite real number, > 0 if ``positive`` else >= 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or (value <= 0 if positive else value < 0)):
        raise UserError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")


def _check_labels(labels: torch.Tensor, batch: tuple, n: int) -> None:
    """Class labels ``[*batch]``, integers in ``[0, n - 1]`` (one pass for min/max)."""
    _check_target(labels, batch, "labels")
    if labels.is_floating_point() or labels.is_complex():
        raise UserError(f"labels must be integers in [0, {n - 1}], got dtype {labels.dtype}")
    if labels.numel():
        lo, hi = torch.aminmax(labels.to(torch.uint8) if labels.dtype == torch.bool else labels)
        if lo < 0 or hi >= n:
            raise UserError(f"labels must be integers in [0, {n - 1}], got values in "
                             f"[{int(lo)}, {int(hi)}]")


def _check_target(target: torch.Tensor, shape: tuple, name: str) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(shape):
        raise UserError(f"{name} must have shape {tuple(shape)}, got {tuple(target.shape)}")
    if target.is_floating_point() and not torch.isfinite(target).all():
        raise UserError(f"{name} contains NaN or Inf")


def count_loss(out, target_counts: torch.Tensor) -> torch.Tensor:
    """Count loss ``sum_o (sum_t S_o[t] - n_o)^2 / T`` (Table 1), averaged over the batch.

    dL/dS_o[t] = 2 (sum_t S_o - n_o) / T per sample; no timing gradient.
    """
    S = out.spikes
    _batch_shape(out)
    _check_target(target_counts, S.shape[1:], "target_counts")
    err = S.sum(0) - target_counts.to(S.dtype)
    return (err.pow(2).sum(-1) / S.shape[0]).mean()


KAPPA_DERIVATIVES = ("continuous", "backward", "central")


def exponential_kernel(num_steps: int, tau: float, dtype=torch.float32, device=None):
    """``kappa[k] = exp(-k / tau)`` for k >= 0 and its backward difference ``kappa*``."""
    if not (isinstance(tau, (int, float)) and tau > 0 and math.isfinite(tau)):
        raise UserError(f"tau must be a finite number > 0, got {tau!r}")
    k = torch.arange(num_steps, dtype=torch.float64)
    kappa = torch.exp(-k / tau)
    dkappa = kappa - torch.cat([kappa.new_zeros(1), kappa[:-1]])
    return kappa.to(dtype=dtype, device=device), dkappa.to(dtype=dtype, device=device)


def _causal_matrix(kern: torch.Tensor) -> torch.Tensor:
    """``M[tau, t] = kern[tau - t]`` for tau >= t, else 0."""
    T = kern.shape[0]
    idx = torch.arange(T, device=kern.device)
    diff = idx[:, None] - idx[None, :]
    return torch.where(diff >= 0, kern[diff.clamp_min(0)], kern.new_zeros(()))


def _timing_matrix(T: int, tau: float, kind: str, dtype, device) -> torch.Tensor:
    """``M`` with ``dL/dt[t] = -2 sum_s M[s, t] d[s]`` (discrete kinds) or, for ``"continuous"``,
    ``dL/dt[t] = -sum_s M[t, s] (S - S_tar)[s]`` with ``M = sign(t - s) exp(-|t - s| / tau)``."""
    idx = torch.arange(T, dtype=torch.float64)
    diff = idx[:, None] - idx[None, :]
    if kind == "continuous":
        M = torch.sign(diff) * torch.exp(-diff.abs() / tau)
    else:
        k = torch.arange(T, dtype=torch.float64)
        before = torch.where(k > 0, torch.exp(-(k - 1) / tau), torch.zeros(()))
        after = torch.exp(-(k + 1) / tau)
        kstar = torch.exp(-k / tau) - before if kind == "backward" else (after - before) / 2
        M = _causal_matrix(kstar)
    return M.to(dtype=dtype, device=device)


def spike_train_loss(out, target_spikes: torch.Tensor, tau: float = 5.0,
                     kappa_derivative: str = "continuous", reduction: str = "mean") -> torch.Tensor:
    """Van Rossum spike-train loss ``sum_o sum_t d_o[t]^2`` with an exponential kernel (Table 1).

    ``d_o = kappa * S_o - kappa * S_o^tar``, ``kappa[k] = exp(-k / tau)`` (tau in steps).
    Activation gradient: dL/dS_o[t] = 2 sum_tau kappa[tau - t] d_o[tau].
    Timing gradient at each output spike t_o, by ``kappa_derivative``:

    * ``"backward"``: Table 1 literally, ``-2 sum_tau kappa*[tau - t_o] d_o[tau]`` with
      ``kappa*[k] = kappa[k] - kappa[k-1]``; ``"central"``: ``(kappa[k+1] - kappa[k-1]) / 2``.
      Both put the kernel's jump at k = 0 into ``kappa*[0]``, which pulls every spike later,
      even a spike that is already late (at tau = 5 an isolated spike gets dL/dt = -1.1).
    * ``"continuous"`` (default): the exact derivative of the continuous-time van Rossum
      distance with the same kernel, ``-sum_b s_b sign(t_o - t_b) exp(-|t_o - t_b| / tau)`` over
      the other output spikes (``s_b = +1``) and the target spikes (``s_b = -1``). An isolated
      spike gets 0, a late spike is pulled earlier, an early one later.

    ``reduction="none"`` returns the loss per sample, ``[*batch]``.
    """
    S = out.spikes
    _batch_shape(out, mean=reduction != "none")
    _check_target(target_spikes, S.shape, "target_spikes")
    if kappa_derivative not in KAPPA_DERIVATIVES:
        raise UserError(f"kappa_derivative must be one of {', '.join(KAPPA_DERIVATIVES)}, "
                         f"got {kappa_derivative!r}")
    if reduction not in ("mean", "none"):
        raise UserError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    target = target_spikes.to(S.dtype)
    if ((target != 0) & (target != 1)).any():
        raise UserError("target_spikes must be binary (0 or 1)")
    T = S.shape[0]
    kappa, _ = exponential_kernel(T, tau, S.dtype, S.device)
    K = _causal_matrix(kappa)
    flat, tar = S.reshape(T, -1), target.reshape(T, -1)
    shift = out.shift.reshape(flat.shape)
    M = _timing_matrix(T, tau, kappa_derivative, S.dtype, S.device)
    if kappa_derivative == "continuous":
        d = K @ (flat - tar)
        # zero-valued term whose gradient in the shift is dL/dt at each output spike
        dldt = -(M @ (flat - tar)).detach()
        per = d.pow(2).sum(0) + (dldt * flat * shift).sum(0)
    else:
        # first-order effect of moving each spike by d: - (kappa* conv (S d)), zero in value
        d = K @ (flat - tar) - M @ (flat * shift)
        per = d.pow(2).sum(0)
    per = per.reshape(S.shape[1:]).sum(-1)
    return per.mean() if reduction == "mean" else per


def first_spike_times(out) -> tuple:
    """First-spike time of every neuron, ``[*batch, N]``, and a mask of neurons that fired.

    A fired neuron's time is ``(index of its first spike) + d`` there, so autograd carries
    dL/dt into ``out.shift``; a silent neuron gets ``T`` (the end) with no gradient.
    """
    S = out.spikes
    T = S.shape[0]
    fired = S.detach().amax(0) > 0
    first = S.detach().argmax(0)  # argmax returns the first maximal index
    shift_at_first = out.shift.gather(0, first.unsqueeze(0)).squeeze(0)
    times = torch.where(fired, first.to(S.dtype) + shift_at_first, torch.full_like(shift_at_first, T))
    return times, fired


def latency_loss(out, labels: torch.Tensor, beta: float = 1.0 / 6.0) -> torch.Tensor:
    """Cross-entropy of ``softmax(-beta t_first)`` (Table 1), averaged over the batch.

    dL/dt_o = -beta (p_o - y_o) at each output neuron's first spike; no activation gradient.
    """
    n = out.spikes.shape[-1]
    _check_labels(labels, _batch_shape(out), n)
    _check_number("beta", beta, positive=True)
    if torch.is_grad_enabled() and out.spikes.requires_grad and not out.shift.requires_grad:
        raise UserError("latency_loss has only a timing gradient (Table 1), and this output has "
                         "no timing channel (method 'bptt'); use count_loss or spike_train_loss")
    times, _ = first_spike_times(out)
    logits = -beta * times
    return torch.nn.functional.cross_entropy(logits.reshape(-1, n), labels.reshape(-1).long())


def at_least_one_spike_loss(out, labels: torch.Tensor, weight: float = 0.05) -> torch.Tensor:
    """``weight * {min(sum_t S_d[t], 1) - 1}^2`` for the desired neuron d (Sec. 4.2).

    When the desired neuron is silent, dL/dS_d[t] = -2 weight per sample at every step; the
    default 0.05 gives the authors' -0.1 / B.
    """
    S = out.spikes
    _check_labels(labels, _batch_shape(out), S.shape[-1])
    _check_number("weight", weight)
    counts = S.sum(0).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return weight * (counts.clamp(max=1.0) - 1).pow(2).mean()


def no_spike_penalty(layers, outs, strength: float = 100.0) -> torch.Tensor:
    """No-spike penalty of the timing method (Sec. 4; dead-neuron fix of [8]).

    Returns a scalar whose gradient on each layer's weight ``w_ji`` is
    ``-(strength / fan_in) * (fraction of the batch in which neuron j never fired)``,
    which pushes the incoming weights of silent neurons up. Its value is that gradient
    contracted with the weights, and is not meant to be read.

    Args:
        layers: a :class:`~antlr_snn.SpikingNetwork` or a sequence of ``LIFLayer``.
        outs: the network's output (its ``.layers`` are used) or one output per layer.
    """
    _check_number("strength", strength)
    layers = list(getattr(layers, "layers", layers))
    outs = list(getattr(outs, "layers", outs))
    if len(layers) != len(outs):
        raise UserError(f"got {len(layers)} layers but {len(outs)} layer outputs")
    total = 0.0
    for layer, o in zip(layers, outs):
        silent = (o.spikes.detach().amax(0) == 0).to(layer.weight.dtype)  # [*batch, N]
        if layer.replicas is None:
            frac = silent.reshape(-1, silent.shape[-1]).mean(0)          # [N]
        else:
            frac = silent.mean(1)                                        # [R, N]
        coef = -(strength / layer.in_features) * frac
        total = total + (coef.unsqueeze(-1) * layer.weight).sum()
    return total
