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

import torch

from antlr_snn import decode, kernels
from antlr_snn.checks import check_number
from antlr_snn.errors import UserError

__all__ = ["count_loss", "spike_train_loss", "latency_loss", "at_least_one_spike_loss",
           "no_spike_penalty", "spike_budget_loss", "first_spike_times", "exponential_kernel", "exponential_filter",
           "KAPPA_DERIVATIVES"]


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
    check_number(name, value, minimum=0, strict=positive)


def _require_channel(out, loss: str, channel: str) -> None:
    """``UserError`` when ``loss``, whose only gradient is ``channel`` (Table 1), would get a
    silent zero gradient because the output layer drops that channel (see
    :mod:`antlr_snn.methods`: a dropped channel's output is non-differentiable)."""
    S, d, V = out.spikes, out.shift, getattr(out, "voltage", None)
    training = S.requires_grad or d.requires_grad or (V is not None and V.requires_grad)
    if not (torch.is_grad_enabled() and training):
        return  # nothing is being trained through this output
    live = S.requires_grad if channel == "activation" else d.requires_grad
    if live:
        return
    method = getattr(out, "method", None)
    lam = "lambda_act" if channel == "activation" else "lambda_tim"
    other = ("latency_loss or spike_train_loss" if channel == "activation"
             else "count_loss or spike_train_loss")
    raise UserError(f"{loss} has only {'an' if channel == 'activation' else 'a'} {channel} "
                    f"gradient (Table 1), and the output layer (method {method!r}) drops the "
                    f"{channel} channel ({lam} = 0): its gradient would be zero; use {other}, "
                    f"or a method with {lam} > 0")


def _check_labels(labels: torch.Tensor, batch: tuple, n: int) -> None:
    """Class labels ``[*batch]``, integers in ``[0, n - 1]`` (one pass for min/max; skipped
    with :func:`antlr_snn.kernels.set_checks` off)."""
    _check_target(labels, batch, "labels")
    if labels.is_floating_point() or labels.is_complex():
        raise UserError(f"labels must be integers in [0, {n - 1}], got dtype {labels.dtype}")
    if labels.numel() and kernels.checks_enabled():
        lo, hi = torch.aminmax(labels.to(torch.uint8) if labels.dtype == torch.bool else labels)
        if lo < 0 or hi >= n:
            raise UserError(f"labels must be integers in [0, {n - 1}], got values in "
                             f"[{int(lo)}, {int(hi)}]")


def _check_target(target: torch.Tensor, shape: tuple, name: str) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(shape):
        raise UserError(f"{name} must have shape {tuple(shape)}, got {tuple(target.shape)}")
    if target.is_floating_point() and kernels.checks_enabled() \
            and not torch.isfinite(target).all():
        raise UserError(f"{name} contains NaN or Inf")


def count_loss(out, target_counts: torch.Tensor) -> torch.Tensor:
    """Count loss ``sum_o (sum_t S_o[t] - n_o)^2 / T`` (Table 1), averaged over the batch.

    dL/dS_o[t] = 2 (sum_t S_o - n_o) / T per sample; no timing gradient.
    """
    S = out.spikes
    _batch_shape(out)
    _check_target(target_counts, S.shape[1:], "target_counts")
    _require_channel(out, "count_loss", "activation")
    err = S.sum(0) - target_counts.to(S.dtype)
    return (err.pow(2).sum(-1) / S.shape[0]).mean()


KAPPA_DERIVATIVES = ("central", "backward", "continuous")


def exponential_kernel(num_steps: int, tau: float, dtype=torch.float32, device=None):
    """``kappa[k] = exp(-k / tau)`` for k >= 0 and its backward difference ``kappa*``."""
    _check_tau(tau)
    k = torch.arange(num_steps, dtype=torch.float64)
    kappa = torch.exp(-k / tau)
    dkappa = kappa - torch.cat([kappa.new_zeros(1), kappa[:-1]])
    return kappa.to(dtype=dtype, device=device), dkappa.to(dtype=dtype, device=device)


def _check_tau(tau) -> None:
    check_number("tau", tau, minimum=0, strict=True)


def exponential_filter(x: torch.Tensor, tau: float, reverse: bool = False,
                       dtype: torch.dtype = None) -> torch.Tensor:
    """``y[t] = x[t] + exp(-1/tau) y[t-1]`` over dim 0 (``reverse``: ``y[t+1]``), in O(T).

    Vectorised over time (no loop over steps): in chunks of up to ``600 tau`` steps,
    ``y = a^t (a y_prev + cumsum(a^-t x))`` in float64 (``a^-t`` stays below e^600); the
    result has ``dtype`` (default: that of ``x``). Differentiable by autograd.
    """
    if reverse:
        return exponential_filter(x.flip(0), tau, dtype=dtype).flip(0)
    a = math.exp(-1.0 / tau)
    chunk = max(1, int(600 * tau))
    x64 = x.double()
    shape = (-1,) + (1,) * (x.dim() - 1)
    parts, carry = [], None
    for start in range(0, x.shape[0], chunk):
        xc = x64[start:start + chunk]
        pw = (a ** torch.arange(xc.shape[0], dtype=torch.float64, device=x.device)).reshape(shape)
        acc = torch.cumsum(xc / pw, 0)
        if carry is not None:
            acc = acc + a * carry
        yc = pw * acc
        carry = yc[-1]
        parts.append(yc)
    return torch.cat(parts).to(dtype or x.dtype)


def _shifted(x: torch.Tensor, by: int) -> torch.Tensor:
    """``x[t - by]`` along dim 0, zero-filled (``by = 1``: previous step; ``-1``: next)."""
    out = torch.zeros_like(x)
    if by > 0:
        out[by:] = x[:-by]
    else:
        out[:by] = x[-by:]
    return out


def spike_train_loss(out, target_spikes: torch.Tensor, tau: float = 5.0,
                     kappa_derivative: str = "central", reduction: str = "mean") -> torch.Tensor:
    """Van Rossum spike-train loss ``sum_o sum_t d_o[t]^2`` with an exponential kernel (Table 1).

    ``d_o = kappa * S_o - kappa * S_o^tar``, ``kappa[k] = exp(-k / tau)`` (k >= 0, tau in steps),
    computed in O(T) (:func:`exponential_filter`).
    Activation gradient: dL/dS_o[t] = 2 sum_tau kappa[tau - t] d_o[tau] (autograd).
    Timing gradient at each output spike t_o: ``-2 sum_tau kappa*[tau - t_o] d_o[tau]`` with
    ``kappa*`` by ``kappa_derivative``:

    * ``"central"`` (default, the authors' convention): ``kappa*[k] = (kappa[k+1] -
      kappa[k-1]) / 2`` with ``kappa[k] = 0`` for k < 0, so ``kappa*[-1] = 1/2``. It equals the
      central difference of the returned loss, ``(L(t_o + 1) - L(t_o - 1)) / 2``, exactly, for
      every spike at least 2 steps from the ends of the window (the second-order terms of the
      quadratic loss cancel). An isolated spike gets 0, a late spike is pulled earlier.
    * ``"backward"``: Table 1 with ``kappa*[k] = kappa[k] - kappa[k-1]``: the forward
      difference ``L(t_o + 1) - L(t_o)`` less its second-order term ``sum_k kappa*[k]^2``. Its
      ``kappa*[0] = 1`` pulls every spike later, even a late one (an isolated spike gets
      ``-2 / (1 + exp(-1/tau))``, -1.1 at tau = 5).
    * ``"continuous"``: the exact derivative of the continuous-time van Rossum distance
      ``(tau/2) sum_ab s_a s_b exp(-|t_a - t_b| / tau)`` (output spikes ``s = +1``, target
      spikes ``-1``), ``-sum_b s_b sign(t_o - t_b) exp(-|t_o - t_b| / tau)``: a different
      quantity than the returned loss; away from the target it is ``exp(-1/tau)`` (0.82 at
      tau = 5) times the central slope of the returned loss, so it weighs the timing channel
      down against the activation channel.

    ``reduction="none"`` returns the loss per sample, ``[*batch]``.
    """
    S = out.spikes
    _batch_shape(out, mean=reduction != "none")
    _check_target(target_spikes, S.shape, "target_spikes")
    _check_tau(tau)
    if kappa_derivative not in KAPPA_DERIVATIVES:
        raise UserError(f"kappa_derivative must be one of {', '.join(KAPPA_DERIVATIVES)}, "
                        f"got {kappa_derivative!r}")
    if reduction not in ("mean", "none"):
        raise UserError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    target = target_spikes.to(S.dtype)
    if kernels.checks_enabled() and ((target != 0) & (target != 1)).any():
        raise UserError("target_spikes must be binary (0 or 1)")
    if torch.is_grad_enabled() and out.voltage.requires_grad \
            and not (S.requires_grad or out.shift.requires_grad):
        raise UserError(f"spike_train_loss: the output layer (method {out.method!r}) drops both "
                        f"channels (lambda_act = lambda_tim = 0): its gradient would be zero")
    a = math.exp(-1.0 / tau)
    x = S - target
    d = exponential_filter(x, tau, dtype=torch.float64)  # float64: no cancellation below
    with torch.no_grad():
        dd, xd = d.detach(), x.detach().double()
        if kappa_derivative == "continuous":
            r_x = exponential_filter(xd, tau, reverse=True)
            dldt = -(dd - xd) + (r_x - xd)
        else:
            r_next = _shifted(exponential_filter(dd, tau, reverse=True), -1)
            if kappa_derivative == "central":
                dldt = -(_shifted(dd, 1) + a * dd + (a * a - 1) * r_next)
            else:
                dldt = -2 * (dd + (a - 1) * r_next)
        dldt = dldt.to(S.dtype)
    # a zero-valued term whose gradient in the shift is dL/dt at each output spike
    per = d.pow(2).sum(0).to(S.dtype) + (dldt * S * out.shift).sum(0)
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
    _require_channel(out, "latency_loss", "timing")
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
    _require_channel(out, "at_least_one_spike_loss", "activation")
    counts = S.sum(0).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return weight * (counts.clamp(max=1.0) - 1).pow(2).mean()


def no_spike_penalty(layers, outs, strength: float = 100.0) -> torch.Tensor:
    """No-spike penalty of the timing method (Sec. 4; dead-neuron fix of [8]).

    Returns a scalar whose gradient on each layer's weight ``w_ji`` is
    ``-(strength / fan_in) * (fraction of the batch in which neuron j never fired)``,
    which pushes the incoming weights of silent neurons up. In a convolution the neurons of
    one output channel share their weights; the fraction is then over the batch and the
    positions. Its value is that gradient contracted with the weights, and is not meant to be
    read. Layers without weights (a pooling synapse) are skipped.

    Args:
        layers: a :class:`~antlr_snn.SpikingNetwork` or a sequence of its spiking layers.
        outs: the network's output (its ``.layers`` are used) or one output per layer.
    """
    _check_number("strength", strength)
    layers = list(getattr(layers, "spiking_layers", layers))
    outs = list(getattr(outs, "layers", outs))
    if len(layers) != len(outs):
        raise UserError(f"got {len(layers)} layers but {len(outs)} layer outputs")
    total = 0.0
    for layer, o in zip(layers, outs):
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        silent = (o.spikes.detach().amax(0) == 0).to(weight.dtype)  # [*batch, *features]
        if getattr(layer, "replicas", None) is not None:
            frac = silent.mean(1)                                   # [R, B, N] -> [R, N]
        elif weight.dim() == 2:
            frac = silent.reshape(-1, silent.shape[-1]).mean(0)     # [N]
        else:                                                       # conv: per out channel
            frac = silent.transpose(0, 1).reshape(weight.shape[0], -1).mean(1)
        coef = -(strength / layer.fan_in) * frac
        total = total + (coef.reshape(*coef.shape, *([1] * (weight.dim() - coef.dim())))
                         * weight).sum()
    return total


def spike_budget_loss(out, weight: float = 1.0, budget: float = 0.0,
                      decision: str = None) -> torch.Tensor:
    """Spike-budget regulariser ``weight * mean_b max(0, n_b - budget)`` (ours, not the paper's).

    ``n_b`` is the number of hidden and output spikes of sample ``b``: every spiking layer of a
    network's output ``out`` (``out.layers``; a single layer's output counts alone), summed
    over neurons and steps. With ``decision="earliest_spike"`` only the steps up to and
    including the first output spike count (:func:`antlr_snn.decode.decision_step`: all steps
    when the output stays silent), which is what that decision costs
    (:func:`antlr_snn.decode.spike_counts`'s ``to_decision``); ``None`` or ``"most_spikes"``
    count the whole window. ``budget = 0`` makes it ``weight`` times the mean spike count.

    Its only gradient is in the activation channel: ``dL/dS_l[t] = weight / B`` for every
    layer ``l`` and every counted step ``t`` of a sample over its budget (0 at or below it,
    and 0 on ``shift``: moving a spike changes no count). Every counted layer must therefore
    keep that channel (``lambda_act > 0``, or ``bptt``); a layer that drops it (``timing``)
    is refused, as ``count_loss`` is. The paper restricts spikes only through the coding (one
    input spike per pixel), the loss targets and the earliest-spike decision; this term is
    our addition, so that a method can trade accuracy for spikes directly.
    """
    _check_number("weight", weight)
    _check_number("budget", budget)
    if decision not in (None, *decode.DECISIONS):
        raise UserError(f"decision must be None or one of {', '.join(decode.DECISIONS)}, "
                        f"got {decision!r}")
    layers = tuple(getattr(out, "layers", ()) or (out,))
    batch = _batch_shape(layers[-1])
    for k, layer in enumerate(layers):
        if tuple(layer.spikes.shape[1:1 + len(batch)]) != tuple(batch):
            raise UserError(f"layer {k} has spikes of shape {tuple(layer.spikes.shape)}, not "
                            f"[T, {', '.join(map(str, batch))}, ...] as the output layer")
        _require_layer_channel(layer, k, len(layers))
    mask = None
    if decision == "earliest_spike":
        T = layers[-1].spikes.shape[0]
        step = decode.decision_step(layers[-1])
        mask = torch.arange(T, device=step.device).reshape(T, *([1] * step.dim())) <= step
    count = 0
    for layer in layers:
        S = layer.spikes
        if mask is not None:
            S = S * mask.reshape(*mask.shape, *([1] * (S.dim() - mask.dim()))).to(S.dtype)
        count = count + S.sum(dim=(0, *range(1 + len(batch), S.dim())))
    return weight * torch.relu(count - budget).mean()


def _require_layer_channel(layer, k: int, n: int) -> None:
    """:func:`_require_channel` for one layer of a network's output."""
    if n == 1:
        return _require_channel(layer, "spike_budget_loss", "activation")
    S, d = layer.spikes, layer.shift
    V = getattr(layer, "voltage", None)
    training = S.requires_grad or d.requires_grad or (V is not None and V.requires_grad)
    if torch.is_grad_enabled() and training and not S.requires_grad:
        raise UserError(f"spike_budget_loss has only an activation gradient, and spiking layer "
                        f"{k} (method {getattr(layer, 'method', None)!r}) drops the activation "
                        f"channel (lambda_act = 0): its spikes would get no gradient; use a "
                        f"method with lambda_act > 0")
