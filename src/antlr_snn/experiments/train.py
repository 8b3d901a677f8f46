"""``antlr-snn train``: latency-coded image classification (Sec. 4.2, 4.3; Fig. 7, 8).

Writes into ``--out DIR``: ``config.json``, ``metrics.jsonl`` (one line per epoch),
``checkpoint.pt`` (for ``--resume``), ``best.pt`` (best-validation model), ``curves.png`` and
``results.json``. With ``--trials N > 1`` each trial has its own ``DIR/trial-K/`` and ``DIR``
gets ``results.json`` (mean and std over trials), ``best.pt`` (the best-validation trial's
model) and ``curves.png``. Under ``torchrun`` one trial trains with DistributedDataParallel;
several trials are spread over the ranks instead. See docs/training.md.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict

import torch.distributed as dist

from antlr_snn.checkpoints import is_int, is_number
from antlr_snn.experiments import common
from antlr_snn.experiments.train_settings import (  # noqa: F401 (re-exports)
    APPLIES, EMBEDDED_EPOCHS, HYPER, SAVED_TYPES, _check, _validated,
    check_neurons_and_losses, check_saved_config, flag, read_settings, resolve_config)
from antlr_snn.distributed import Runtime, from_lead, setup_distributed
from antlr_snn.errors import DataNotFound, UserError
from antlr_snn.rundir import Interrupted, RunFolder, command_line
from antlr_snn.training import (ARCHS, PRESETS, TrainConfig, check_network_fits, load_splits,
                                train_trial)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from antlr_snn.data import DATASETS
    p.description = (
        "Latency-coded image classification (Fig. 7, 8). Paper defaults: 784-800-10 network, "
        "T=100 (300 for nmnist), batch 16, Adam lr 1e-3 with StepLR(10, 0.1), 20 epochs, "
        "gradients clipped to +-1. On the embedded 4,000-digit MNIST (the default, no --data-dir)"
        f" and on nmnist-sim the default is {EMBEDDED_EPOCHS} epochs so that a bare "
        "`antlr-snn train` finishes in minutes on 2 CPU cores. Presets: activation/bptt = count "
        "loss (targets 1/0, 10/0 on event data) + most-spikes decision; timing = latency loss + "
        "no-spike penalty + earliest spike; antlr = latency loss + at-least-one-spike term + "
        "earliest spike. With --resume, flags left out are taken from the run in --out.")
    a = p.add_argument
    a("--method", default=None, help=f"learning method: {', '.join(PRESETS)} [antlr]")
    a("--dataset", default=None, help=f"data set: {', '.join(DATASETS)} [mnist: embedded digits]")
    a("--data-dir", default=None, help="data folder (IDX files; nmnist: Train/ and Test/; "
      "tonic:NAME: the folder holding NAME/)")
    a("--epochs", type=int, default=None, help=f"epochs [20; {EMBEDDED_EPOCHS} on embedded sets]")
    a("--trials", type=int, default=None, help="independent seeds seed..seed+N-1 [1]")
    a("--single-spike", action="store_true", default=None, help="at most one spike per neuron")
    a("--arch", choices=ARCHS, default=None, help="network: fc = fully connected "
      "(input-hidden-10); conv = two strided LIF convolutions (5x5/2, 3x3/2), then fully "
      "connected through --hidden (none by default) to 10 [fc]")
    a("--hidden", type=int, nargs="*", default=None, help="hidden layer sizes [800; none for "
      "--arch conv]")
    a("--channels", type=int, nargs=2, default=None, help="output channels of the two conv "
      "layers of --arch conv [16 32]")
    a("--output-vstar-min", type=float, default=None, help="floor of V* in the output layer's "
      "timing gradient dt/dV = -1/V* (Eq. 8) [1e-2, the authors'; 0.1 with --lr 3e-4 for antlr "
      "on event data, see docs/reproduction.md Fig. 8]")
    a("--num-steps", type=int, default=None, help="time steps T [100; 300 for nmnist]")
    a("--batch-size", type=int, default=None, help="global mini-batch size [16]")
    a("--lr", type=float, default=None, help="Adam learning rate [1e-3]")
    a("--lr-step", type=int, default=None, help="StepLR: multiply the learning rate by "
      "--lr-gamma every N epochs [10]")
    a("--lr-gamma", type=float, default=None, help="StepLR factor, in (0, 1] [0.1]")
    a("--config", default=None, metavar="FILE", help="take the settings from FILE, a JSON "
      "object of run settings (a run's config.json, or the config_file of a point of a "
      "sweep's front.json); flags given override it")
    g = p.add_argument_group("neurons and losses (defaults: the paper's and the authors' "
                             "values; see docs/training.md)")
    a = g.add_argument
    a("--threshold", type=float, default=None, help="firing threshold of every neuron [1]")
    a("--surrogate-width", type=float, default=None, help="sigma(V) = exp(-width |V - "
      "threshold|) [3]")
    a("--lambda-act", type=float, default=None, help="antlr: weight of the activation "
      "channel in Eq. 8 [1]")
    a("--lambda-tim", type=float, default=None, help="antlr: weight of the timing channel [1]")
    a("--t-max", type=int, default=None, help="latency code: a pixel x spikes at step "
      "floor(t_max (1 - x)); static images only [24]")
    a("--latency-beta", type=float, default=None, help="antlr, timing: the latency loss's "
      "softmax(-beta t) [1/6]")
    a("--at-least-one-weight", type=float, default=None, help="antlr: weight of the "
      "at-least-one-spike term [0.05]")
    a("--target-correct", type=float, default=None, help="activation, bptt: count target of "
      "the label's neuron [1; 10 on event data]")
    a("--target-wrong", type=float, default=None, help="activation, bptt: count target of the "
      "other neurons [0]")
    a("--no-spike-strength", type=float, default=None, help="timing: strength of the "
      "no-spike penalty [100]")
    a("--spike-reg", type=float, default=None, help="weight of the spike-budget regulariser: "
      "weight * mean over samples of max(0, spikes to the decision - budget); any method with "
      "an activation channel (not timing) [0: off]")
    a("--spike-budget", type=float, default=None, help="spikes per sample the regulariser "
      "lets pass [0]")
    a = p.add_argument
    a("--seed", type=int, default=None, help="seed of the first trial [0]")
    a("--grad-clip", type=float, default=None, help="elementwise gradient clip, 0 = off [1.0]")
    a("--max-train", type=int, default=None, help="use N training samples (evenly spaced)")
    a("--max-eval", type=int, default=None, help="use N val/test samples (evenly spaced)")
    a("--out", default=None, help="output folder [runs/train-<date>-<time>]")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--checkpoint-every", type=int, default=100, help="also checkpoint every N steps; 0: only at "
      "epoch ends [100]")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto", help="[auto: cuda if available]")
    a("--workers", type=int, default=0, help="data-loader worker processes for event data sets [0]")
    a("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def holds_run(folder: str) -> bool:
    """A training run lives in ``folder`` (its config.json is written when it starts)."""
    return os.path.exists(os.path.join(folder, "config.json"))


def run_folder(args) -> RunFolder:
    """The run folder of ``args`` (not yet opened): ``--out`` or ``runs/train-<date>-<time>``."""
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR, the folder of the run to continue")
    return RunFolder(args.out, "runs/train", holds_run=holds_run, resume=args.resume,
                     command="antlr-snn train",
                     replace_hint="pass --resume to continue it or choose another --out")


def prepare_out(folder: RunFolder, args, world: int = 1) -> tuple:
    """Open (lock) the run folder; returns (folder path, saved config or None)."""
    folder.open()
    out = folder.path
    folder.resume_command = command_line("antlr-snn", "train", "--resume", "--out", out)
    if world > 1:
        folder.resume_command = ("the same torchrun command with " +
                                 command_line("-m", "antlr_snn", "train", "--resume", "--out", out))
    cfg_path = os.path.join(out, "config.json")
    if not args.resume:
        return out, None
    if not os.path.exists(cfg_path):
        raise DataNotFound(f"--resume: no run to resume in {out} (no config.json)")
    import json
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = getattr(exc, "msg", None) or exc.__class__.__name__
        raise UserError(f"{cfg_path} is not valid JSON ({reason}); the run cannot be "
                         f"resumed") from None
    return out, check_saved_config(saved, cfg_path)


def run(args) -> int:
    rank, world, device = setup_distributed(args.device)
    rt = Runtime(rank=rank, world=world, device=device, checkpoint_every=args.checkpoint_every,
                 progress=not args.quiet and rank == 0, verbose=not args.quiet and rank == 0,
                 resume=args.resume, workers=args.workers)
    folder = None
    try:
        resolve_config(args, None)  # check the flags early, on every rank
        folder = run_folder(args)  # opened, and locked, by rank 0 only
        everyone = Runtime(rank=rank, world=world, ddp=world > 1, device=device)
        out, saved = from_lead(lambda: prepare_out(folder, args, world), everyone)
        cfg = resolve_config(args, saved, os.path.join(out, "config.json"))
        rt.ddp = world > 1 and cfg.trials == 1
        splits = load_splits(cfg, device)  # before config.json: a missing data set is no run
        check_network_fits(cfg, splits["train"].features, device,  # nor is one too big
                           world if rt.ddp else 1, splits["train"].num_classes)
        if rank == 0:
            if saved is None:
                common.atomic_write_json(os.path.join(out, "config.json"), asdict(cfg))
            folder.commit()
        common.warm_up_kernels([cfg.method], splits["train"].features, device=device,
                               announce=rt.progress, command="antlr-snn train")
        train_all(cfg, out, splits, rt)
    except BaseException as exc:
        if folder is not None:
            folder.close()
            if isinstance(exc, KeyboardInterrupt) and folder.committed:
                raise Interrupted(folder.interrupted_message()) from None
        raise
    else:
        if folder is not None:
            folder.close()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def train_all(cfg: TrainConfig, out: str, splits: dict, rt: Runtime) -> None:
    """Every trial of ``cfg`` (spread over the ranks), then ``results.json`` in ``out``."""
    rank, world = rt.rank, rt.world
    t0 = time.time()
    results = []
    for trial in range(cfg.trials):
        if not rt.ddp and trial % world != rank:
            continue  # trials are spread over the ranks
        tdir = out if cfg.trials == 1 else os.path.join(out, f"trial-{trial}")
        if not rt.ddp or rank == 0:
            common.ensure_writable_dir(tdir)
        title = f"{cfg.method} on {cfg.dataset}, seed {cfg.seed + trial}"
        result = train_trial(
            cfg, trial, tdir, splits, rt,
            on_epoch=lambda d, rec, title=title: plot_curves(
                read_metrics(os.path.join(d, "metrics.jsonl")),
                os.path.join(d, "curves.png"), title))
        results.append(result)
        if cfg.trials > 1 and (not rt.ddp or rank == 0):  # each trial's own results.json
            common.atomic_write_json(os.path.join(tdir, "results.json"),
                                     summarize(cfg, [result], 1, result["wall_time_s"]))
    if world > 1 and not rt.ddp:
        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = sorted((r for part in gathered for r in part), key=lambda r: r["trial"])
    if cfg.trials > 1:
        best = max(results, key=lambda r: (r["val_accuracy"], -r["trial"]))
        if best["trial"] % world == rank:  # the rank that holds the best trial's files
            with open(os.path.join(out, f"trial-{best['trial']}", "best.pt"), "rb") as fh:
                common.atomic_write_bytes(os.path.join(out, "best.pt"), fh.read())
    if rank == 0:
        write_results(out, cfg, results, world, time.time() - t0)


PLOTTED = ("epoch", "train_loss", "train_accuracy", "val_accuracy", "val_spikes_per_sample",
           "val_spikes_to_decision")


def read_metrics(path: str) -> list:
    """The records of a metrics.jsonl; one-line ``ValueError`` naming ``path`` for a record that
    lacks a plotted number (``null``, a NaN, is allowed) or has a bad trial number."""
    records = common.read_jsonl(path)
    for i, rec in enumerate(records, 1):
        for key in PLOTTED:
            if key not in rec:
                raise UserError(f"{path}: record {i} lacks {key!r}")
            if not (rec[key] is None or is_number(rec[key])):
                raise UserError(f"{path}: record {i} has a non-numeric {key!r}")
        if not is_int(rec.get("trial", 0)):
            raise UserError(f"{path}: record {i} has a bad 'trial' ({rec['trial']!r:.40})")
    return records


def plot_curves(records: list, path: str, title: str = "") -> None:
    """Learning curves (loss, accuracy, spikes per sample vs epoch) as one PNG, atomically."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 3.2))
    axes = fig.subplots(1, 3)
    records = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in records]
    for key in sorted({r.get("trial", 0) for r in records}):
        rs = [r for r in records if r.get("trial", 0) == key]
        ep = [r["epoch"] for r in rs]
        tag = f"trial {key} " if len({r.get("trial", 0) for r in records}) > 1 else ""
        axes[0].plot(ep, [r["train_loss"] for r in rs], "o-", label=f"{tag}train")
        axes[1].plot(ep, [r["train_accuracy"] for r in rs], "o-", label=f"{tag}train")
        axes[1].plot(ep, [r["val_accuracy"] for r in rs], "s--", label=f"{tag}validation")
        axes[2].plot(ep, [r["val_spikes_per_sample"] for r in rs], "o-", label=f"{tag}total")
        axes[2].plot(ep, [r["val_spikes_to_decision"] for r in rs], "s--",
                     label=f"{tag}to decision")
    for ax, name in zip(axes, ("training loss", "accuracy", "validation spikes / sample")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    common.save_figure(fig, path)


def summarize(cfg: TrainConfig, results: list, world: int, wall: float) -> dict:
    """What results.json holds: the test scores per trial and their mean +- std."""
    summary = {k: common.mean_std([r[f"test_{k}"] for r in results])
               for k in ("accuracy", "spikes_per_sample", "spikes_to_decision",
                         "accuracy_earliest_spike", "accuracy_most_spikes")}
    return {"method": cfg.method, "dataset": cfg.dataset,
            "decision": PRESETS[cfg.method]["decision"],
            "test_accuracy": summary["accuracy"],
            "spikes_per_sample": summary["spikes_per_sample"],
            "spikes_to_decision": summary["spikes_to_decision"],
            "test_accuracy_earliest_spike": summary["accuracy_earliest_spike"],
            "test_accuracy_most_spikes": summary["accuracy_most_spikes"],
            "trials": results, "config": asdict(cfg), "world_size": world,
            "wall_time_s": sum(r["wall_time_s"] for r in results), "session_wall_time_s": wall}


def write_results(out: str, cfg: TrainConfig, results: list, world: int, wall: float) -> None:
    res = summarize(cfg, results, world, wall)
    common.atomic_write_json(os.path.join(out, "results.json"), res)
    if cfg.trials > 1:
        recs = []
        for r in results:
            recs += read_metrics(os.path.join(out, f"trial-{r['trial']}", "metrics.jsonl"))
        if recs:
            plot_curves(recs, os.path.join(out, "curves.png"), f"{cfg.method} on {cfg.dataset}")
    acc, sp = res["test_accuracy"], res["spikes_per_sample"]
    print(f"test accuracy {acc['mean']:.4f} +- {acc['std']:.4f} ({len(results)} trial(s)), "
          f"spikes/sample {sp['mean']:.1f} (to decision "
          f"{res['spikes_to_decision']['mean']:.1f});"
          f" results in {os.path.join(out, 'results.json')}", flush=True)
