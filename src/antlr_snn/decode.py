"""Decisions from output spikes (Sec. 4.2) and spike accounting (Fig. 7, 8).

A sample with no output spike gets the prediction ``-1``, which never equals a label.
Spikes are ``[T, *batch, N]`` with ``T, N >= 1``, binary (bool and integer spikes are accepted);
an empty batch gives empty predictions.

Example:
    >>> import torch
    >>> from antlr_snn import decode
    >>> S = torch.zeros(5, 2, 3); S[3, 0, 1] = 1; S[1, 0, 2] = 1; S[4, 0, 2] = 1
    >>> decode.earliest_spike(S).tolist(), decode.most_spikes(S).tolist()
    ([2, -1], [2, -1])
"""
from __future__ import annotations

import torch

from antlr_snn import kernels
from antlr_snn.kernels import ops
from antlr_snn.errors import UserError

__all__ = ["earliest_spike", "most_spikes", "decision_step", "spike_counts", "synaptic_operations",
           "accuracy"]


def _spikes(out) -> torch.Tensor:
    """The output spikes, checked (shape, then one pass for NaN / non-binary values)."""
    S = out.spikes if hasattr(out, "spikes") else out
    if not isinstance(S, torch.Tensor):
        raise TypeError(f"spikes must be a torch.Tensor or a SpikeOutput, got {type(S).__name__}")
    if S.dim() < 2 or S.shape[0] < 1 or S.shape[-1] < 1:
        raise UserError(f"spikes must be [T, *batch, N] with T >= 1 and N >= 1, "
                         f"got shape {tuple(S.shape)}")
    S = S.detach()
    if S.dtype == torch.bool:
        S = S.to(torch.uint8)  # argmax/amax do not take bool
    if kernels.checks_enabled():
        ops.require_binary(S, "spikes")
    return S


def _first_times(S: torch.Tensor) -> torch.Tensor:
    """First spike step per neuron, ``T`` where silent."""
    T = S.shape[0]
    fired = S.amax(0) > 0
    return torch.where(fired, S.argmax(0), torch.full_like(S[0], T, dtype=torch.long))


def earliest_spike(out) -> torch.Tensor:
    """Class of the earliest first spike; ties go to the lowest index; silent -> -1."""
    S = _spikes(out)
    first = _first_times(S)
    pred = first.argmin(-1)  # argmin returns the lowest index among ties
    return torch.where(first.min(-1).values < S.shape[0], pred, torch.full_like(pred, -1))


def most_spikes(out) -> torch.Tensor:
    """Class with most spikes; ties go to the earliest first spike, then the lowest index."""
    S = _spikes(out)
    T = S.shape[0]
    counts = S.sum(0).long()
    # one integer key: more spikes first, then earlier first spike
    key = counts * (T + 1) + (T - _first_times(S))
    pred = key.argmax(-1)
    return torch.where(counts.amax(-1) > 0, pred, torch.full_like(pred, -1))


def decision_step(out) -> torch.Tensor:
    """Step of the first output spike per sample (the earliest-spike decision), ``T - 1`` if none."""
    S = _spikes(out)
    first = _first_times(S).amin(-1)
    return first.clamp_max(S.shape[0] - 1)


def _layer_spikes(out) -> list:
    """Spikes of every layer of ``out`` (a network's or a layer's output, or a spike tensor)."""
    if isinstance(out, torch.Tensor):
        return [out.detach()]
    layers = getattr(out, "layers", ()) or (out,)
    if not all(isinstance(getattr(l, "spikes", None), torch.Tensor) for l in layers):
        raise TypeError(f"expected a SpikeOutput or a spike tensor, got {type(out).__name__}")
    return [l.spikes.detach() for l in layers]


DECISIONS = ("earliest_spike", "most_spikes")


def _per_sample(s: torch.Tensor, batch_dims: int, mask=None) -> torch.Tensor:
    """Spikes of one layer ``[T, *batch, *features]`` summed to ``[*batch]`` (``mask``
    ``[T, *batch]`` weighs the steps)."""
    if mask is not None:
        s = s * mask.reshape(*mask.shape, *([1] * (s.dim() - mask.dim())))
    return s.sum(dim=(0, *range(1 + batch_dims, s.dim())))


def spike_counts(out, decision: str = "earliest_spike") -> dict:
    """Hidden + output spikes per sample: ``total`` and ``to_decision``, also ``hidden`` and
    ``output``. ``out`` is a network's output (all its layers count, convolutional ones too)
    or one layer's output or spikes.

    ``to_decision`` is what the ``decision`` costs: for ``"earliest_spike"`` the spikes up to
    and including the first output spike (every step if the output stays silent); for
    ``"most_spikes"`` the whole window is needed, so it equals ``total``.
    """
    if decision not in DECISIONS:
        raise UserError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    spikes = _layer_spikes(out)
    nb = spikes[-1].dim() - 2
    per_layer = [_per_sample(s, nb) for s in spikes]
    if decision == "most_spikes":
        upto_layer = per_layer
    else:
        step = decision_step(spikes[-1])
        T = spikes[-1].shape[0]
        upto = (torch.arange(T, device=step.device).reshape(T, *([1] * step.dim())) <= step).to(
            spikes[-1].dtype)
        upto_layer = [_per_sample(s, nb, upto) for s in spikes]
    return {
        "total": sum(per_layer),
        "to_decision": sum(upto_layer),
        "hidden": sum(per_layer[:-1]) if len(per_layer) > 1 else torch.zeros_like(per_layer[0]),
        "output": per_layer[-1],
    }


def synaptic_operations(inputs: torch.Tensor, out) -> torch.Tensor:
    """SynOps per sample of a fully connected network: every spike entering a layer costs one
    operation per target neuron.

    ``inputs`` is the network's input ``[T, *batch, N_in]``; ``out`` its output (with ``.layers``),
    or one layer's output or spikes. The output layer's own spikes drive nothing and are not
    counted.
    """
    spikes = _layer_spikes(out)
    if any(s.dim() != spikes[-1].dim() for s in spikes) or inputs.dim() != spikes[-1].dim():
        raise UserError("synaptic_operations counts fully connected layers ([T, B, N] spikes "
                        "everywhere); this network has layers of other shapes")
    sources = [inputs.detach()] + spikes[:-1]
    return sum(s.sum(dim=(0, -1)) * l.shape[-1] for s, l in zip(sources, spikes))


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correct predictions (a prediction of -1 is always wrong)."""
    if pred.shape != labels.shape:
        raise UserError(f"pred and labels must have the same shape, got {tuple(pred.shape)} "
                        f"and {tuple(labels.shape)}")
    if pred.numel() == 0:
        raise UserError("accuracy of an empty batch is undefined (no predictions)")
    return (pred == labels).float().mean().item()
