"""The random spike-train task of ``antlr-snn spike-train`` (Sec. 4.1, Fig. 6): its settings,
its trials (input/target patterns and initialisations drawn from ``(seed, trial)`` only), the
per-trial spike-train loss (Table 1) and the training of one method on all trials at once as
replica networks. The command, its outputs and figure: :mod:`antlr_snn.experiments.spike_train`.

Example:
    >>> cfg = TaskConfig(num_steps=30, hidden=(8,), outputs=2, seed=3)
    >>> problem = make_problem(cfg, [0, 1])
    >>> problem.inputs.shape, problem.replicas
    (torch.Size([30, 2, 1, 10]), 2)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from antlr_snn import SpikingNetwork, losses
from antlr_snn.errors import UserError
from antlr_snn.experiments import common
from antlr_snn.methods import METHODS
from antlr_snn.training import adam

DEFAULT_METHODS = ("antlr", "activation", "timing")
KAPPA_DERIVATIVES = losses.KAPPA_DERIVATIVES

# ----------------------------------------------------------------------------- configuration

@dataclass
class TaskConfig:
    """The random spike-train task. Defaults: Sec. 3.4/4.1 where the paper says, else our choice."""

    inputs: int = 10
    hidden: Sequence[int] = (50, 50)
    outputs: int = 5
    num_steps: int = 60          # T (not in the paper)
    input_spikes: int = 3        # per input neuron (paper)
    target_spikes: int = 1       # per output neuron (paper: 1 or 3)
    tau: float = 5.0             # spike-train loss kernel, in steps (not in the paper)
    kappa_derivative: str = "central"
    init_scale: float = 3.0      # nn.Linear init times this (not in the paper)
    lr: float = 1e-2             # Adam (not in the paper)
    method_lr: Dict[str, float] = field(default_factory=dict)
    grad_clip: float = 0.0       # elementwise; authors' MNIST code: 1 (slows this task); 0 = off
    no_spike_penalty: float = 100.0  # timing method only (Sec. 4, authors' strength); 0 = off
    seed: int = 0

    @property
    def sizes(self) -> List[int]:
        return [self.inputs, *self.hidden, self.outputs]

    @property
    def target_window(self) -> tuple:
        """Target spikes lie at distinct steps in ``[T/4, 3T/4)``."""
        return self.num_steps // 4, (3 * self.num_steps) // 4

    def lr_for(self, method: str) -> float:
        return float(self.method_lr.get(method, self.lr))

    def validate(self) -> None:
        ints = (("inputs", self.inputs), ("outputs", self.outputs), ("num_steps", self.num_steps),
                ("input_spikes", self.input_spikes), ("target_spikes", self.target_spikes))
        for name, v in ints:
            if not isinstance(v, int) or v < 1:
                raise UserError(f"{name} must be a positive integer, got {v!r}")
        if any((not isinstance(h, int)) or h < 1 for h in self.hidden):
            raise UserError(f"hidden sizes must be positive integers, got {list(self.hidden)}")
        if self.input_spikes > self.num_steps:
            raise UserError(f"--input-spikes {self.input_spikes} exceeds the {self.num_steps} "
                             "time steps (spikes of one neuron lie at distinct steps)")
        lo, hi = self.target_window
        if self.target_spikes > hi - lo:
            raise UserError(f"--target-spikes {self.target_spikes} does not fit in the target "
                             f"window [{lo}, {hi}) of T={self.num_steps} steps")
        for name, v in (("tau", self.tau), ("init_scale", self.init_scale), ("lr", self.lr)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"{name} must be a finite number > 0, got {v!r}")
        for m, v in self.method_lr.items():
            if m not in METHODS:
                raise UserError(f"--method-lr names unknown method {m!r}; "
                                 f"choose from {', '.join(METHODS)}")
            if not (math.isfinite(v) and v > 0):
                raise UserError(f"learning rate for {m} must be a finite number > 0, got {v!r}")
        for name, v in (("grad_clip", self.grad_clip), ("no_spike_penalty", self.no_spike_penalty)):
            if not (math.isfinite(v) and v >= 0):
                raise UserError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) \
                or not 0 <= self.seed < 2 ** 32:  # as `train`: trials are (seed, k) here
            raise UserError(f"--seed must be in [0, 2**32 - 1], got {self.seed!r}")
        if self.kappa_derivative not in KAPPA_DERIVATIVES:
            raise UserError(f"kappa_derivative must be one of {KAPPA_DERIVATIVES}, "
                             f"got {self.kappa_derivative!r}")


# ----------------------------------------------------------------------------- the trials

@dataclass
class Problem:
    """``R`` trials stacked as replicas: inputs ``[T, R, 1, N_in]``, targets ``[T, R, 1, N_out]``,
    and the initial ``(weight [R, out, in], bias [R, out])`` of every layer."""

    inputs: torch.Tensor
    targets: torch.Tensor
    init: List[tuple]
    trials: List[int]

    @property
    def replicas(self) -> int:
        return self.inputs.shape[1]


def trial_generator(seed: int, trial: int) -> torch.Generator:
    """A generator that depends only on ``(seed, trial)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(trial)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def make_trial(cfg: TaskConfig, trial: int):
    """One trial: input spikes ``[T, N_in]``, target spikes ``[T, N_out]`` and initial weights.

    Each input neuron fires ``input_spikes`` times at distinct uniformly random steps of
    ``[0, T)``; each output neuron's ``target_spikes`` lie at distinct random steps of
    ``[T/4, 3T/4)``. Weights: ``nn.Linear``'s uniform(+-1/sqrt(fan_in)) times ``init_scale``;
    biases 0 (the authors' code).
    """
    g = trial_generator(cfg.seed, trial)
    T = cfg.num_steps
    x = torch.zeros(T, cfg.inputs)
    for i in range(cfg.inputs):
        x[torch.randperm(T, generator=g)[:cfg.input_spikes], i] = 1.0
    lo, hi = cfg.target_window
    y = torch.zeros(T, cfg.outputs)
    for o in range(cfg.outputs):
        y[lo + torch.randperm(hi - lo, generator=g)[:cfg.target_spikes], o] = 1.0
    init = []
    sizes = cfg.sizes
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = cfg.init_scale / math.sqrt(n_in)
        w = (torch.rand(n_out, n_in, generator=g, dtype=torch.float64) * 2 - 1) * bound
        init.append((w.float(), torch.zeros(n_out)))
    return x, y, init


def make_problem(cfg: TaskConfig, trials: Sequence[int]) -> Problem:
    """Stack the given trials as replicas (the result of trial k never depends on the others)."""
    cfg.validate()
    parts = [make_trial(cfg, t) for t in trials]
    inputs = torch.stack([p[0] for p in parts], 1).unsqueeze(2)
    targets = torch.stack([p[1] for p in parts], 1).unsqueeze(2)
    init = [(torch.stack([p[2][k][0] for p in parts]), torch.stack([p[2][k][1] for p in parts]))
            for k in range(len(cfg.sizes) - 1)]
    return Problem(inputs, targets, init, list(trials))


def build_network(cfg: TaskConfig, method: str, init: List[tuple]) -> SpikingNetwork:
    """A replica network holding the given initial parameters."""
    replicas = init[0][0].shape[0]
    net = SpikingNetwork(cfg.sizes, method=method, replicas=replicas)
    with torch.no_grad():
        for layer, (w, b) in zip(net.layers, init):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return net


# ----------------------------------------------------------------------------- the loss

def spike_train_loss_per_trial(out, target: torch.Tensor, tau: float,
                               kappa_derivative: str = "central") -> torch.Tensor:
    """:func:`antlr_snn.losses.spike_train_loss` per replica, ``[R]`` (mean over the batch).

    Its sum over replicas is ``R * losses.spike_train_loss``, so every replica's gradient is
    that of its own loss. ``kappa_derivative`` only chooses the timing gradient (see there).
    """
    per = losses.spike_train_loss(out, target, tau, kappa_derivative, reduction="none")
    return per.mean(-1) if per.dim() > 1 else per.mean().reshape(1)


def clip_gradients(params, clip: float) -> None:
    """NaN gradients to 0, then clip elementwise to +-clip (the authors' code; 0 = off)."""
    for p in params:
        if p.grad is not None:
            p.grad.nan_to_num_(0.0, 0.0, 0.0)
            if clip > 0:
                p.grad.clamp_(-clip, clip)


# ----------------------------------------------------------------------------- training

@dataclass
class MethodResult:
    method: str
    curves: np.ndarray              # [rows, R]: loss after iteration[row] updates
    iterations: np.ndarray          # [rows]
    final: np.ndarray               # [R]: loss after the last update
    first_zero: np.ndarray          # [R]: first iteration count with zero loss, -1 if never
    final_output_spikes: np.ndarray  # [R]: output spikes after training
    wall_s: float
    gradients: Optional[np.ndarray] = None  # [iters, P] (replica 0) when requested
    params: Optional[list] = None           # final parameters when requested


def train_method(cfg: TaskConfig, problem: Problem, method: str, iterations: int,
                 log_every: int = 1, show_progress: bool = True,
                 record_gradients: bool = False, stop_at_zero: bool = False) -> MethodResult:
    """Train every trial of ``problem`` with ``method`` for ``iterations`` Adam steps.

    Row ``i`` of the curve is the loss after ``iteration[i]`` updates; the last row is always
    the final loss. ``stop_at_zero`` stops once every replica has zero loss (for the landscape).
    ``record_gradients`` keeps the flattened raw gradient of replica 0 at every step.
    """
    net = build_network(cfg, method, problem.init)
    params = [p for layer in net.layers for p in (layer.weight, layer.bias)]
    opt = adam(params, lr=cfg.lr_for(method))
    x, tgt = problem.inputs, problem.targets
    R = problem.replicas
    rows, iters_logged, grads = [], [], []
    first_zero = np.full(R, -1, dtype=np.int64)
    penalty = cfg.no_spike_penalty if method == "timing" else 0.0
    t0 = time.time()
    bar = common.progress(total=iterations, desc=f"{method:>10s}", disable=not show_progress,
                          leave=True)
    last = None
    try:
        for it in range(iterations + 1):
            out = net(x)
            per = spike_train_loss_per_trial(out, tgt, cfg.tau, cfg.kappa_derivative)
            vals = per.detach().cpu().numpy().astype(np.float64)
            newly = (first_zero < 0) & (vals == 0.0)
            first_zero[newly] = it
            done = it == iterations or (stop_at_zero and bool((vals == 0.0).all()))
            if it % log_every == 0 or done:
                rows.append(vals.astype(np.float32))
                iters_logged.append(it)
            if done:
                last = (vals, out.spikes.detach().sum(dim=(0, 2, 3)).cpu().numpy())
                bar.set_postfix(loss=f"{vals.mean():.3g}", zero=f"{(vals == 0).mean():.2f}")
                break
            loss = per.sum()
            if penalty > 0:
                loss = loss + losses.no_spike_penalty(net, out, penalty)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            clip_gradients(params, 0.0)  # NaN -> 0 before recording
            if record_gradients:
                grads.append(torch.cat([p.grad[0].reshape(-1) for p in params]).numpy().copy())
            clip_gradients(params, cfg.grad_clip)
            opt.step()
            bar.update(1)
            if it % 50 == 0:
                bar.set_postfix(loss=f"{vals.mean():.3g}", zero=f"{(vals == 0).mean():.2f}")
    finally:
        bar.close()
    vals, spikes = last
    return MethodResult(
        method=method, curves=np.stack(rows), iterations=np.asarray(iters_logged),
        final=vals, first_zero=first_zero, final_output_spikes=spikes,
        wall_s=time.time() - t0,
        gradients=np.stack(grads) if record_gradients and grads else None,
        params=[p.detach().clone() for p in params])
