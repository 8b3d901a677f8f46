"""Checkpoints written by :mod:`antlr_snn.training`: what each use needs, and the network in one.

A checkpoint is a dict saved with ``torch.save``: ``format`` (:data:`CHECKPOINT_FORMAT`), the
model (``layers``: the network's description with every layer's neuron constants, method and
lambdas; ``state_dict``, which holds them too), how its input was coded
and decided (``dataset``, ``num_steps``, ``t_max``, ``decision``) and, in ``checkpoint.pt`` but
not ``best.pt``, everything needed to resume (``optimizer``, ``scheduler``, ``state``, ``rng``).
:func:`check_checkpoint` turns a damaged or foreign file into one ``UserError`` that names the
file and the key at fault.
"""
from __future__ import annotations

import torch

from antlr_snn.checks import is_int, is_number, shown  # noqa: F401 (re-export)
from antlr_snn.errors import UserError, one_line
from antlr_snn.network import SpikingNetwork, describe_spec, network_from_spec
from antlr_snn.neuron import METHODS

CHECKPOINT_FORMAT = "antlr-snn/2"

DECISIONS = ("earliest_spike", "most_spikes")


# what each use of a checkpoint needs: key -> (test, what it must be)
_MODEL_KEYS = {
    "layers": (lambda v: isinstance(v, list) and len(v) >= 1
               and all(isinstance(x, dict) and isinstance(x.get("type"), str) for x in v),
               "a list of layer descriptions"),
    "state_dict": (lambda v: isinstance(v, dict) and all(
        isinstance(x, torch.Tensor) or (k.endswith("_extra_state") and isinstance(x, dict))
        for k, x in v.items()), "a dict of tensors and layer settings"),
}
_EVALUATE_KEYS = {
    "method": (lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    "decision": (lambda v: v in DECISIONS, f"one of {', '.join(DECISIONS)}"),
    "dataset": (lambda v: isinstance(v, str), "a data set name"),
    "num_steps": (lambda v: is_int(v, 1), "a positive integer"),
    "t_max": (lambda v: is_int(v, 1), "a positive integer"),
}
_STATE_KEYS = {
    "epoch": lambda v: is_int(v, 0), "step": lambda v: is_int(v, 0),
    "global_step": lambda v: is_int(v, 0), "best_epoch": lambda v: is_int(v, 0),
    "metrics_bytes": lambda v: is_int(v, 0), "best_val": is_number, "wall": is_number,
    "finished": lambda v: isinstance(v, bool),
    "result": lambda v: v is None or isinstance(v, dict),
    "sums": lambda v: isinstance(v, torch.Tensor) and v.shape == (5,),
    "gen_epoch_start": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8,
}
_RESUME_KEYS = {
    "optimizer": (lambda v: isinstance(v, dict) and {"state", "param_groups"} <= set(v),
                  "an optimizer state (a dict with state and param_groups)"),
    "scheduler": (lambda v: isinstance(v, dict), "a learning-rate scheduler state (a dict)"),
    "state": (lambda v: isinstance(v, dict), "the training progress (a dict)"),
    "rng": (lambda v: isinstance(v, dict) and {"python", "numpy", "torch"} <= set(v),
            "the random number generator states"),
}


def check_checkpoint(ckpt: dict, path: str, spec=None, use: str = "evaluate") -> None:
    """One-line ``UserError`` naming ``path`` and the problem for a checkpoint that cannot
    serve ``use``: ``"model"`` (rebuild the network), ``"evaluate"`` (also code the input and
    decide) or ``"resume"`` (also optimizer, scheduler, progress and RNG states); with
    ``spec`` (a network description), also for another network.

    >>> ckpt = {"format": CHECKPOINT_FORMAT, "state_dict": {}, "layers": [{"type": "Flatten"}],
    ...         "method": "antlr", "decision": "latest", "dataset": "mnist", "num_steps": 100, "t_max": 24}
    >>> check_checkpoint(ckpt, "best.pt", use="model")
    >>> check_checkpoint(ckpt, "best.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.UserError: checkpoint best.pt: bad 'decision' (must be one of ...; got 'latest')
    >>> check_checkpoint({**ckpt, "decision": "most_spikes"}, "best.pt", use="resume")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    antlr_snn.errors.UserError: checkpoint best.pt lacks 'optimizer', needed to resume (it holds only a model, ...)
    """
    if isinstance(ckpt, dict) and isinstance(ckpt.get("format"), str) \
            and ckpt["format"].startswith("antlr-snn/") and ckpt["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"{path} was written by another version of antlr-snn (format "
                        f"{ckpt['format']}, this one reads {CHECKPOINT_FORMAT}); retrain, or "
                        f"use the version that wrote it")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT \
            or "state_dict" not in ckpt:
        raise UserError(f"{path} is not an antlr-snn training checkpoint")
    if use not in ("model", "evaluate", "resume"):
        raise UserError(f"unknown checkpoint use {use!r}")
    needs = dict(_MODEL_KEYS)
    if use in ("evaluate", "resume"):
        needs.update(_EVALUATE_KEYS)
    if use == "resume":
        needs.update(_RESUME_KEYS)
    for key, (test, what) in needs.items():
        if key not in ckpt:
            hint = (", needed to resume (it holds only a model, as best.pt does)"
                    if key in _RESUME_KEYS else "")
            raise UserError(f"checkpoint {path} lacks {key!r}{hint}")
        if not test(ckpt[key]):
            raise UserError(f"checkpoint {path}: bad {key!r} (must be {what}; "
                             f"got {shown(ckpt[key])})")
    for name, t in ckpt["state_dict"].items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"checkpoint {path}: {name!r} holds NaN or infinite values "
                             f"(the run that wrote it diverged)")
    if use == "resume":
        for key, test in _STATE_KEYS.items():
            if key not in ckpt["state"]:
                raise UserError(f"checkpoint {path} lacks 'state' entry {key!r} (needed to "
                                 f"resume)")
            if not test(ckpt["state"][key]):
                raise UserError(f"checkpoint {path}: bad 'state' entry {key!r} "
                                 f"(got {shown(ckpt['state'][key])})")
    if spec is not None and ckpt["layers"] != spec:
        have, want = describe_spec(ckpt["layers"]), describe_spec(spec)
        if have == want:
            have, want = shown(ckpt["layers"]), shown(spec)
        raise UserError(f"checkpoint {path} holds a {have} network, but this run needs {want}")


def network_from_checkpoint(ckpt: dict, path: str = "checkpoint",
                            use: str = "evaluate") -> SpikingNetwork:
    """The network saved in ``ckpt`` (read from ``path``), after :func:`check_checkpoint`."""
    check_checkpoint(ckpt, path, use=use)
    try:
        net = network_from_spec(ckpt["layers"])
    except (TypeError, ValueError) as exc:  # unknown or out-of-range layer settings
        raise UserError(f"checkpoint {path}: bad 'layers' ({one_line(exc)})") from None
    try:
        net.load_state_dict(ckpt["state_dict"])
    except UserError as exc:  # layer settings in the state that differ from 'layers'
        raise UserError(f"checkpoint {path}: {one_line(exc)}") from None
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the network it describes "
                        f"({state_dict_problem(exc)})") from None
    return net


def state_dict_problem(exc: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (missing keys, shape mismatch)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
    return detail if len(detail) <= 200 else detail[:197] + "..."
