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
per trial; fraction of trials at zero loss). See docs/experiments-spike-train.md. The task
and its training: :mod:`antlr_snn.experiments.spike_train_task`.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import time
from typing import Dict, List

import numpy as np
import torch

from antlr_snn.errors import UserError
from antlr_snn.experiments import common
# the task and its training (re-exported: the names landscape and the tests use)
from antlr_snn.experiments.spike_train_task import (  # noqa: F401
    DEFAULT_METHODS, KAPPA_DERIVATIVES, MethodResult, Problem, TaskConfig, build_network,
    clip_gradients, make_problem, make_trial, spike_train_loss_per_trial, train_method,
    trial_generator)
from antlr_snn.methods import METHODS


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
