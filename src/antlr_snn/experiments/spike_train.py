"""``antlr-snn spike-train``: random spike-train matching (Sec. 4.1, Fig. 6).

A 10-50-50-5 network (``--outputs 1`` gives the 10-50-50-1 network of Sec. 3.4) sees three
random input spikes per input neuron and must reproduce ``--target-spikes`` random target spikes
per output neuron, trained on the van Rossum spike-train loss of Table 1. Every trial has its
own input/target pattern and its own initialisation, drawn from ``(seed, trial index)`` only, and
every method trains on the same trials, so the comparison is paired. All trials of a method train
at once as independent replica networks (``LIFLayer(replicas=R)``): each replica's gradient is
exactly the gradient of its own loss, and Adam and the elementwise clip act per element, so a
trial's result does not depend on how many trials run beside it.

Writes into ``--out DIR``: ``curve.csv`` (mean training loss per method and the fraction of trials
at zero loss, row ``i`` = loss after ``i`` updates), ``curves.npz`` (every trial's curve),
``loss_curve.png`` (log scale, Fig. 6) and ``results.json`` (final loss per method: mean, std and
per trial; fraction of trials at zero loss). See docs/experiments-spike-train.md.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from antlr_snn import SpikingNetwork, losses
from antlr_snn.experiments import common
from antlr_snn.methods import METHODS
from antlr_snn.training import adam
from antlr_snn.errors import UserError

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


# ----------------------------------------------------------------------------- reporting

def summarize(res: MethodResult, lr: float) -> dict:
    final = res.final
    reached = res.first_zero[res.first_zero >= 0]
    return {
        "lr": lr,
        "final_loss": common.mean_std(final),
        "final_loss_median": float(np.median(final)),
        "zero_fraction": float((final == 0).mean()),
        "ever_zero_fraction": float((res.first_zero >= 0).mean()),
        "median_iterations_to_first_zero": float(np.median(reached)) if len(reached) else None,
        "initial_loss": common.mean_std(res.curves[0]),
        # area under the mean curve divided by its length: low = fast convergence
        "mean_loss_over_run": float(res.curves.astype(np.float64).mean()),
        "final_output_spikes_mean": float(res.final_output_spikes.mean()),
        "final_loss_per_trial": final.tolist(),
        "first_zero_iteration_per_trial": res.first_zero.tolist(),
        "wall_s": round(res.wall_s, 2),
    }


def ordering(summary: Dict[str, dict], key=lambda s: s["final_loss"]["mean"]) -> str:
    """Methods sorted by ``key`` (mean final loss), e.g. ``"antlr < activation < timing"``."""
    items = sorted(summary.items(), key=lambda kv: key(kv[1]))
    parts = [items[0][0]]
    for (_, prev), (name, cur) in zip(items, items[1:]):
        parts.append(("= " if key(cur) == key(prev) else "< ") + name)
    return " ".join(parts)


def machine_info() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def write_outputs(out: str, cfg: TaskConfig, args_dict: dict, results: List[MethodResult],
                  wall: float, complete: bool) -> dict:
    methods = [r.method for r in results]
    iters = results[0].iterations
    means = {r.method: r.curves.astype(np.float64).mean(1) for r in results}
    zeros = {r.method: (r.curves == 0).mean(1) for r in results}
    header = ["iteration"] + methods + [f"{m}_zero_fraction" for m in methods]
    rows = ([int(it)] + [float(means[m][i]) for m in methods] + [float(zeros[m][i]) for m in methods]
            for i, it in enumerate(iters))
    common.write_csv(os.path.join(out, "curve.csv"), rows, header)
    npz = {"iteration": iters, "trials": np.asarray(results[0].curves.shape[1])}
    for r in results:
        npz[r.method] = r.curves
    buf = io.BytesIO()
    np.savez_compressed(buf, **npz)
    common.atomic_write_bytes(os.path.join(out, "curves.npz"), buf.getvalue())
    summary = {r.method: summarize(r, cfg.lr_for(r.method)) for r in results}
    result = {
        "experiment": "spike-train",
        "complete": complete,
        "config": {**args_dict, "sizes": cfg.sizes, "target_window": list(cfg.target_window),
                   "lr_per_method": {m: cfg.lr_for(m) for m in methods}},
        "methods": summary,
        "ordering_by_final_loss": ordering(summary),
        "ordering_by_mean_loss_over_run": ordering(summary, lambda s: s["mean_loss_over_run"]),
        "wall_s": round(wall, 2),
        "machine": machine_info(),
    }
    common.atomic_write_json(os.path.join(out, "results.json"), result)
    plot_curves(os.path.join(out, "loss_curve.png"), iters, means, cfg,
                results[0].curves.shape[1])
    return result


def plot_curves(path: str, iters, means: Dict[str, np.ndarray], cfg: TaskConfig, trials: int):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(111)
    for m, y in means.items():
        y = np.where(y > 0, y, np.nan)  # zero loss cannot be drawn on a log axis
        ax.plot(iters, y, label=m, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training loss (mean of {trials} trials)")
    ax.set_title(f"random spike-train matching: {'-'.join(map(str, cfg.sizes))}, "
                 f"{cfg.target_spikes} target spike{'s' if cfg.target_spikes > 1 else ''}",
                 fontsize=9)
    ax.legend(title="method (gaps: mean loss 0)", fontsize=8, title_fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    common.save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI

def _method_list(text: str) -> List[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one method")
    for m in names:
        if m not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a method is listed twice")
    return names


def _method_lr(text: str) -> tuple:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected METHOD=LR, got {text!r}")
    m, v = text.split("=", 1)
    try:
        return m.strip(), float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None


def add_task_arguments(p: argparse.ArgumentParser, outputs_default: int = 5) -> None:
    """Flags of the task shared with ``antlr-snn landscape``."""
    a = p.add_argument
    a("--steps", type=int, default=60, help="time steps T per trial (not in the paper)")
    a("--input-spikes", type=int, default=3, help="random spikes per input neuron (paper: 3)")
    a("--inputs", type=int, default=10, help="input neurons (paper: 10)")
    a("--hidden", type=int, nargs="+", default=[50, 50], help="hidden layer sizes (paper: 50 50)")
    a("--tau", type=float, default=5.0,
      help="time constant of the spike-train loss kernel exp(-k/tau), in steps (not in the paper)")
    a("--kappa-derivative", choices=KAPPA_DERIVATIVES, default="central",
      help="how the loss gives dL/dt at output spikes: central (default) = Table 1 with the "
           "central difference, the central slope of the loss itself; backward = the literal "
           "backward difference; continuous = the derivative of the continuous-time van Rossum "
           "distance, exp(-1/tau) times smaller (see antlr_snn.losses.spike_train_loss). Loss "
           "value and dL/dS are the same")
    a("--init-scale", type=float, default=3.0,
      help="initial weights = nn.Linear init (uniform +-1/sqrt(fan_in)) times this (not in the paper)")
    a("--lr", type=float, default=1e-2, help="Adam learning rate (not in the paper)")
    a("--grad-clip", type=float, default=0.0,
      help="elementwise gradient clip before Adam, 0 = off (the authors' MNIST code clips at 1; "
           "on this task that slows every method, the activation method most)")
    a("--seed", type=int, default=0, help="seed; trial k uses (seed, k)")
    a("--threads", type=int, default=1,
      help="torch CPU threads; the tensors are tiny, so more threads mostly add overhead "
           "(run several commands side by side instead)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Random spike-train matching (Sec. 4.1, Fig. 6): a 10-50-50-5 network learns to emit "
        "random target spike trains from three random input spikes per input neuron, trained on "
        "the spike-train loss. Trials are independent networks trained together as replicas; all "
        "methods see the same trials. Paper scale: --iterations 50000 --trials 100 (and "
        "--target-spikes 3 for Fig. 6b). The defaults (16 trials, 1000 iterations) finish in "
        "about half a minute on 2 CPU cores (paper scale: hours). Choices the paper leaves open (T, tau, lr, init "
        "scale) are flags; see docs/experiments-spike-train.md.")
    a = p.add_argument
    a("--outputs", type=int, default=5, help="output neurons (paper: 5 in Sec. 4.1, 1 in Sec. 3.4)")
    a("--target-spikes", type=int, default=1, help="target spikes per output neuron (paper: 1 or 3)")
    a("--iterations", type=int, default=1000, help="training iterations (paper: 50000)")
    a("--trials", type=int, default=16, help="independent trials (paper: 100)")
    a("--methods", type=_method_list, default=",".join(DEFAULT_METHODS),
      help=f"comma-separated methods from {', '.join(METHODS)}")
    add_task_arguments(p)
    a("--method-lr", type=_method_lr, nargs="+", default=[], metavar="METHOD=LR",
      help="per-method learning rates overriding --lr, e.g. timing=3e-3")
    a("--no-spike-penalty", type=float, default=100.0,
      help="no-spike penalty strength for the timing method (Sec. 4; authors' code: 100), 0 = off")
    a("--log-every", type=int, default=1, help="keep the loss every N iterations in the curve")
    a("--out", default=None, help="output folder [runs/spike-train-<date>-<time>]")
    a("--overwrite", action="store_true", help="replace the results of a run already in --out")
    a("--quiet", action="store_true", help="no progress bar")


def config_from_args(args) -> TaskConfig:
    return TaskConfig(
        inputs=args.inputs, hidden=tuple(args.hidden), outputs=args.outputs,
        num_steps=args.steps, input_spikes=args.input_spikes,
        target_spikes=getattr(args, "target_spikes", 1), tau=args.tau,
        kappa_derivative=args.kappa_derivative, init_scale=args.init_scale, lr=args.lr,
        method_lr=dict(getattr(args, "method_lr", []) or []), grad_clip=args.grad_clip,
        no_spike_penalty=getattr(args, "no_spike_penalty", 100.0), seed=args.seed)


def set_threads(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise UserError(f"--threads must be a positive integer, got {n!r}")
    torch.set_num_threads(n)


OUTPUTS = ("curve.csv", "curves.npz", "loss_curve.png", "results.json")


def memory_needed(cfg: TaskConfig, methods, trials: int, iterations: int,
                  log_every: int) -> int:
    """Peak bytes of a run: the largest training step over ``methods`` with ``trials``
    replicas (:func:`antlr_snn.memory.step_memory`), the trials' patterns and initial weights
    (made one by one, then stacked: twice) and every method's loss curves."""
    from antlr_snn import memory
    layers = memory.dense_layers(cfg.sizes)
    step = max(memory.step_memory(cfg.num_steps, 1, layers, m, replicas=trials) for m in methods)
    per_trial = cfg.num_steps * (cfg.inputs + cfg.outputs) + sum(la.params for la in layers)
    curves = (iterations // log_every + 2) * trials * len(methods)
    return step + 4 * (2 * trials * per_trial + curves)


def check_memory(cfg: TaskConfig, args) -> None:
    from antlr_snn import memory
    need = memory_needed(cfg, args.methods, args.trials, args.iterations, args.log_every)
    memory.check_fits(need, "cpu", f"{args.trials} trials of the {'-'.join(map(str, cfg.sizes))}"
                      f" network x {cfg.num_steps} steps", "use fewer --trials, or a smaller "
                      "--steps or --hidden")


def run(args) -> int:
    cfg = config_from_args(args)
    cfg.validate()
    set_threads(args.threads)
    if args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.log_every < 1:
        raise UserError(f"--log-every must be >= 1, got {args.log_every}")
    check_memory(cfg, args)  # before anything is made: a run that cannot fit is no run
    folder = common.run_folder(args, "runs/spike-train", OUTPUTS, "antlr-snn spike-train")
    with folder:
        out = folder.path
        args_dict = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        args_dict["method_lr"] = dict(args_dict.get("method_lr") or [])
        args_dict["out"] = out
        problem = make_problem(cfg, range(args.trials))
        common.start_writing(folder, OUTPUTS)
        common.warm_up_kernels(args.methods, cfg.inputs, replicas=args.trials,
                               announce=not args.quiet, command="antlr-snn spike-train")
        t0 = time.time()
        results = []
        for i, method in enumerate(args.methods):
            res = train_method(cfg, problem, method, args.iterations, args.log_every,
                               show_progress=not args.quiet)
            res.params = None
            results.append(res)
            summary = write_outputs(out, cfg, args_dict, results, time.time() - t0,
                                    complete=i == len(args.methods) - 1)
    if not args.quiet:
        print(f"spike-train: {args.trials} trials x {args.iterations} iterations, "
              f"{'-'.join(map(str, cfg.sizes))}, {cfg.target_spikes} target spike(s); "
              f"wall {time.time() - t0:.1f} s")
        for m, s in summary["methods"].items():
            fl = s["final_loss"]
            print(f"  {m:>10s}: final loss {fl['mean']:.4g} +- {fl['std']:.3g}, "
                  f"zero in {100 * s['zero_fraction']:.0f}% of trials")
        print(f"  ordering: {summary['ordering_by_final_loss']}; results in {out}")
    return 0
