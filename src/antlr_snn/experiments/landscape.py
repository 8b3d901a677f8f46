"""``antlr-snn landscape``: true and estimated loss landscapes (Sec. 3.4, Fig. 5).

The plane, its grid and the reconstruction: :mod:`antlr_snn.experiments.landscape_plane`.

1. A 10-50-50-1 network learns, with ANTLR, to turn three random input spikes per input neuron
   into one target spike (the spike-train task of :mod:`antlr_snn.experiments.spike_train`),
   until the spike-train loss is exactly zero. The raw gradient of every training step is kept.
2. The first two principal components ``d0, d1`` of those gradient vectors span a plane through
   the optimum ``theta*``; every trainable parameter moves: ``theta* + a d0 + b d1``.
3. On a ``G x G`` grid of ``(a, b)`` the true loss is measured, and every method's gradient is
   computed and projected on ``d0, d1``: a 2-D gradient field (all grid points run at once as
   replica networks). pyGrad2Surf's ``g2s`` (the paper's reference [25], Harker and O'Leary's
   global least-squares reconstruction) turns each field into the surface it implies.
4. Score: the Pearson correlation between a method's surface and the true loss, over the whole
   grid and over the region where the spike count does not change (the part of the grid
   connected to the centre; Fig. 5's highlighted area): ``--region output`` (default) asks the
   output neuron's count to equal the optimum's, ``all`` asks it of every neuron. Both are
   reported.

Writes ``landscape.png`` (Fig. 5: true, activation, timing, ANTLR, and the region map),
``landscape.npz`` (all grids) and ``results.json`` into ``--out``.
See docs/experiments-spike-train.md.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import time
from typing import Dict

import numpy as np

from antlr_snn.experiments import common
from antlr_snn.experiments import spike_train as st
# the plane, the grid and the reconstruction (re-exported: the names the tests use)
from antlr_snn.experiments.landscape_plane import (  # noqa: F401
    auto_span, centre_component, evaluate_grid, flatten, grid_coords, pca_directions, pearson,
    reconstruct, region_fraction, regions, unflatten)
from antlr_snn.methods import METHODS
from antlr_snn.errors import UserError

DEFAULT_METHODS = ("activation", "timing", "antlr")


# ----------------------------------------------------------------------------- figure

def plot_landscape(path: str, a: np.ndarray, true: np.ndarray, surfaces: Dict[str, np.ndarray],
                   region: np.ndarray, changed: np.ndarray, scores: Dict[str, dict],
                   region_kind: str = "output") -> None:
    from matplotlib.figure import Figure
    import matplotlib.colors as mcolors
    panels = [("true loss", true, None)] + [(m, z, scores[m]) for m, z in surfaces.items()]
    n = len(panels) + 1
    fig = Figure(figsize=(3.9 * n, 3.6))
    fig.subplots_adjust(wspace=0.5)
    ext = [a[0], a[-1], a[0], a[-1]]
    letters = "abcdefgh"
    for k, (name, z, sc) in enumerate(panels):
        ax = fig.add_subplot(1, n, k + 1)
        # Fig. 5's highlight: the no-change region in colour on its own scale (so that the
        # subtle height differences from spike shifts show), the rest in grey on its own scale
        def norm_of(values):
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            return mcolors.Normalize(lo, hi if hi > lo else lo + 1e-12)
        if not region.all():
            ax.imshow(np.ma.masked_where(region, z), origin="lower", extent=ext,
                      cmap="Greys_r", norm=norm_of(z[~region]), interpolation="nearest",
                      aspect="auto")
        im = ax.imshow(np.ma.masked_where(~region, z), origin="lower", extent=ext,
                       cmap="viridis", norm=norm_of(z[region] if region.any() else z),
                       interpolation="nearest", aspect="auto")
        if region.any() and not region.all():
            ax.contour(a, a, region.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7)
        title = f"({letters[k]}) {name}"
        if sc is not None:
            r, rr = sc["pearson_grid"], sc["pearson_region"]
            title += f"\nr = {r:.2f}" if r is not None else "\nr = n/a"
            title += f", region r = {rr:.2f}" if rr is not None else ", region r = n/a"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Dim 0", fontsize=8)
        if k == 0:
            ax.set_ylabel("Dim 1", fontsize=8)
        ax.tick_params(labelsize=7)
    ax = fig.add_subplot(1, n, n)
    im = ax.imshow(changed, origin="lower", extent=ext, cmap="magma_r", interpolation="nearest",
                   aspect="auto")
    if region.any() and not region.all():
        ax.contour(a, a, region.astype(float), levels=[0.5], colors="red", linewidths=1.0)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    ax.set_title(f"({letters[len(panels)]}) neurons whose spike count changed\n"
                 f"red line: highlighted region ({region_kind})", fontsize=9)
    ax.set_xlabel("Dim 0", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.suptitle("Inside the red line (spike count as at the optimum, connected to it): colour, "
                 "colour bar = that region's range; outside: grey on its own scale. Surfaces "
                 "shifted to 0 at the optimum; each has its own scale.", fontsize=8, y=1.04)
    common.save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Estimated loss landscapes (Sec. 3.4, Fig. 5): train 10-50-50-1 with ANTLR to zero "
        "spike-train loss, perturb all parameters along the first two principal components of "
        "the training gradients, measure the true loss on a grid, and reconstruct the surface "
        "each method's gradient field implies (pyGrad2Surf g2s). Scores: Pearson correlation "
        "with the true surface over the grid and over the no-spike-count-change region. The "
        "default 15x15 grid runs in about a minute on 2 CPU cores; use --grid 51 for a "
        "paper-like picture. See docs/experiments-spike-train.md.")
    a = p.add_argument
    a("--grid", type=int, default=15, help="grid points per axis (odd, so the optimum is one)")
    a("--span", default="auto",
      help="half-width of the grid along each unit direction, or 'auto': the span at which "
           "the no-change region covers --region-fraction of the grid")
    a("--region", choices=("output", "all"), default="output",
      help="highlighted no-change region: the output neuron's spike count, or every neuron's, "
           "equals the optimum's (both are scored)")
    a("--region-fraction", type=float, default=0.5, help="target region share for --span auto")
    a("--methods", type=st._method_list, default=",".join(DEFAULT_METHODS),
      help=f"comma-separated methods from {', '.join(METHODS)}")
    a("--max-iterations", type=int, default=5000,
      help="training iterations allowed to reach zero loss")
    a("--attempts", type=int, default=5,
      help="patterns (trials seed,0..N-1) tried until one is trained to zero loss")
    st.add_task_arguments(p)
    a("--chunk", type=int, default=1024, help="grid points per replica batch")
    a("--out", default=None, help="output folder [runs/landscape-<date>-<time>]")
    a("--overwrite", action="store_true", help="replace the results of a run already in --out")
    a("--quiet", action="store_true", help="no progress bar")


def _parse_span(text) -> object:
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"--span must be a positive number or 'auto', got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"--span must be a positive number or 'auto', got {text!r}")
    return v


def train_to_zero(cfg: st.TaskConfig, max_iterations: int, attempts: int, show_progress: bool):
    """Train with ANTLR on patterns 0, 1, ... until one reaches zero loss."""
    tried = []
    for trial in range(attempts):
        problem = st.make_problem(cfg, [trial])
        res = st.train_method(cfg, problem, "antlr", max_iterations, show_progress=show_progress,
                              record_gradients=True, stop_at_zero=True)
        tried.append({"trial": trial, "final_loss": float(res.final[0]),
                      "iterations": int(res.iterations[-1])})
        if res.final[0] == 0.0:
            return problem, res, tried
    raise UserError(f"antlr did not reach zero loss within {max_iterations} iterations on "
                     f"{attempts} pattern(s); raise --max-iterations or --attempts")


def run(args) -> int:
    t0 = time.time()
    n = args.grid
    if not isinstance(n, int) or n < 5 or n % 2 == 0:
        raise UserError(f"--grid must be an odd integer >= 5, got {n}")
    span_arg = _parse_span(args.span)
    if not (0.0 < args.region_fraction < 1.0):
        raise UserError(f"--region-fraction must lie in (0, 1), got {args.region_fraction}")
    for name in ("max_iterations", "attempts", "chunk"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    cfg = st.TaskConfig(
        inputs=args.inputs, hidden=tuple(args.hidden), outputs=1, num_steps=args.steps,
        input_spikes=args.input_spikes, target_spikes=1, tau=args.tau,
        kappa_derivative=args.kappa_derivative, init_scale=args.init_scale, lr=args.lr,
        grad_clip=args.grad_clip, no_spike_penalty=0.0, seed=args.seed)
    cfg.validate()
    st.set_threads(args.threads)
    check_memory(cfg, args)  # before anything is made: a run that cannot fit is no run
    folder = common.run_folder(args, "runs/landscape", OUTPUTS, "antlr-snn landscape")
    with folder:
        common.start_writing(folder, OUTPUTS)
        common.warm_up_kernels(sorted({"antlr", *args.methods}), cfg.inputs, replicas=1,
                               announce=not args.quiet, command="antlr-snn landscape")
        return _run(args, cfg, folder.path, t0, n, span_arg)


OUTPUTS = ("landscape.png", "landscape.npz", "results.json")


def memory_needed(cfg: st.TaskConfig, args) -> int:
    """Peak bytes of a run: training one network while keeping every step's gradient (and
    their PCA), or the grid's replica batches of ``--chunk`` points."""
    from antlr_snn import memory
    layers = memory.dense_layers(cfg.sizes)
    params = sum(layer.params for layer in layers)
    # the kept gradients (float32), stacked, then centred and decomposed in float64
    pca = args.max_iterations * params * (4 + 4 + 8 + 8)
    train = memory.step_memory(cfg.num_steps, 1, layers, "antlr", replicas=1) + pca
    grid = max(memory.step_memory(cfg.num_steps, 1, layers, m, replicas=min(args.chunk,
                                                                             args.grid ** 2))
               for m in {"antlr", *args.methods})
    return max(train, grid)


def check_memory(cfg: st.TaskConfig, args) -> None:
    from antlr_snn import memory
    memory.check_fits(memory_needed(cfg, args), "cpu",
                      f"the {args.grid}x{args.grid} landscape of the "
                      f"{'-'.join(map(str, cfg.sizes))} network ({args.max_iterations} "
                      f"iterations, {min(args.chunk, args.grid ** 2)} grid points at once)",
                      "use a smaller --chunk, --max-iterations, --steps or --hidden")


def _run(args, cfg: st.TaskConfig, out: str, t0: float, n: int, span_arg) -> int:
    show = not args.quiet

    problem, res, tried = train_to_zero(cfg, args.max_iterations, args.attempts, show)
    t_train = time.time() - t0
    theta = flatten(res.params)
    shapes = [tuple(p.shape[1:]) for p in res.params]
    d, explained = pca_directions(res.gradients)
    centre = evaluate_grid(cfg, problem, theta, d, np.zeros((1, 2)), "antlr", shapes,
                           gradients=False)
    counts0 = centre["counts"][0]

    if span_arg == "auto":
        span = auto_span(cfg, problem, theta, d, shapes, n, counts0, args.region_fraction,
                         args.chunk, args.region)
    else:
        span = span_arg
    a, coords = grid_coords(span, n)

    fields, surfaces, scores = {}, {}, {}
    true = changed = region = None
    bar = common.progress(total=len(args.methods), desc="landscape", disable=not show)
    for method in args.methods:
        ev = evaluate_grid(cfg, problem, theta, d, coords, method, shapes, args.chunk)
        if true is None:  # the forward pass is the same for every method
            true = ev["loss"].reshape(n, n)
            reg = regions(ev["counts"], counts0, n, cfg.outputs)
            changed, region = reg["changed"], reg[args.region]
        gx = ev["grad"][:, 0].reshape(n, n)
        gy = ev["grad"][:, 1].reshape(n, n)
        fields[method] = (gx, gy)
        z = reconstruct(a, gx, gy)
        surfaces[method] = z
        scores[method] = {"pearson_grid": pearson(z, true),
                          "pearson_region": pearson(z, true, region),
                          "pearson_output_region": pearson(z, true, reg["output"]),
                          "pearson_all_neuron_region": pearson(z, true, reg["all"])}
        bar.update(1)
    bar.close()
    # check of the pipeline: the true loss's own finite-difference gradient, reconstructed
    gy_fd, gx_fd = np.gradient(true, a, a)
    z_fd = reconstruct(a, gx_fd, gy_fd)
    fd_check = {"pearson_grid": pearson(z_fd, true), "pearson_region": pearson(z_fd, true, region)}

    npz = {"a": a, "b": a, "true_loss": true, "changed_neurons": changed, "region": region,
           "region_output": reg["output"], "region_all": reg["all"], "directions": d.astype(np.float32),
           "theta_opt": theta.astype(np.float32), "finite_difference_surface": z_fd}
    for m in args.methods:
        npz[f"{m}_grad_dim0"], npz[f"{m}_grad_dim1"] = fields[m]
        npz[f"{m}_surface"] = surfaces[m]
    buf = io.BytesIO()
    np.savez_compressed(buf, **npz)
    common.atomic_write_bytes(os.path.join(out, "landscape.npz"), buf.getvalue())
    plot_landscape(os.path.join(out, "landscape.png"), a, true, surfaces, region, changed, scores,
                   args.region)

    ranking = sorted((m for m in args.methods if scores[m]["pearson_grid"] is not None),
                     key=lambda m: -scores[m]["pearson_grid"])
    args_dict = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    args_dict["out"] = out
    result = {
        "experiment": "landscape",
        "config": {**args_dict, "sizes": cfg.sizes, "target_window": list(cfg.target_window)},
        "training": {"attempts": tried, "trial": tried[-1]["trial"],
                     "iterations_to_zero": tried[-1]["iterations"],
                     "parameters": int(theta.size), "gradient_vectors": int(len(res.gradients)),
                     "pca_explained_variance_ratio": explained, "wall_s": round(t_train, 2)},
        "grid": {"points_per_axis": n, "span": span,
                 "span_chosen": "auto" if span_arg == "auto" else "flag",
                 "true_loss_at_centre": float(true[n // 2, n // 2]),
                 "true_loss_max": float(true.max()),
                 "region": args.region,
                 "region_fraction": float(region.mean()),
                 "output_region_fraction": float(reg["output"].mean()),
                 "all_neuron_region_fraction": float(reg["all"].mean()),
                 "spikes_at_optimum": int(counts0.sum())},
        "measure": ("Pearson correlation between the reconstructed surface and the true loss, "
                    "over all grid points (pearson_grid) and over the grid points connected to "
                    "the optimum where the output neuron's spike count (pearson_output_region) "
                    "or every neuron's count (pearson_all_neuron_region) equals the optimum's; "
                    "pearson_region is the one named by --region. None where undefined (fewer "
                    "than 3 points or a constant surface)"),
        "methods": scores,
        "ranking_by_pearson_grid": ranking,
        "finite_difference_check": fd_check,
        "wall_s": round(time.time() - t0, 2),
        "machine": st.machine_info(),
    }
    common.atomic_write_json(os.path.join(out, "results.json"), result)
    if show:
        print(f"landscape: trained to zero loss in {tried[-1]['iterations']} iterations "
              f"(pattern {tried[-1]['trial']}); grid {n}x{n}, span {span:g}, "
              f"{args.region} no-change region {100 * region.mean():.0f}% of the grid")
        for m in args.methods:
            s = scores[m]
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
            print(f"  {m:>10s}: r(grid) {fmt(s['pearson_grid'])}, "
                  f"r(region) {fmt(s['pearson_region'])}")
        print(f"  wall {time.time() - t0:.1f} s; results in {out}")
    return 0
