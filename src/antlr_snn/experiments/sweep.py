"""``antlr-snn sweep``: search the training settings for the accuracy-spike front.

One multi-objective Optuna study per method (maximise validation accuracy, minimise
validation spikes per sample to the decision) over the space of
:mod:`antlr_snn.experiments.sweep_space`; every trial trains through the trainer
(:func:`antlr_snn.training.train_trial`) in its own folder ``DIR/trials/<method>-<number>``
(``config.json``, which ``antlr-snn train --config`` reads, ``metrics.jsonl``,
``checkpoint.pt``, ``best.pt``, ``results.json``). Weak trials are pruned after each epoch
(:mod:`antlr_snn.experiments.sweep_front`; the loop over trials is
:mod:`antlr_snn.experiments.sweep_trials`). ``DIR`` gets ``sweep.json`` (the sweep's
definition), ``front.json``, ``front.png`` and ``trials.csv``, rewritten after every trial.

**Storage.** Trials live in an Optuna RDB storage: by default the SQLite file
``DIR/sweep.db``; ``--storage URL`` names another (a shared SQLite file, PostgreSQL, MySQL).
``--budget N`` is the number of trials per study, over every process working on it. Several
processes (each with its own ``--out``, which it locks) work on one sweep by naming one
``--storage``; a process that joins takes the sweep's settings from the study, and flags it
is given must agree. Each running trial records a heartbeat; a trial whose process died is
failed and queued again with the same settings (by ``--resume`` of its own ``--out`` at once,
by any other process once its heartbeat is ``2 x --heartbeat`` seconds old), so a killed sweep
loses at most its running trials and no trial is counted twice. See docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket

from antlr_snn.errors import DataNotFound, UserError
from antlr_snn.experiments import common, sweep_front, sweep_space
from antlr_snn.experiments.sweep_storage import (FORMAT, _agree, join, masked, open_storage,
                                                 reap, retry)
from antlr_snn.experiments.sweep_trials import Sweep
from antlr_snn.rundir import Interrupted, RunFolder, command_line

#: The fixed settings of every trial; all but data_dir define a study.
BASE = ("dataset", "data_dir", "epochs", "num_steps", "batch_size", "max_train", "max_eval",
        "seed", "arch", "channels", "grad_clip", "single_spike")
PRUNE = {"prune": True, "prune_warmup": 1, "prune_fraction": 0.5, "prune_min": 4}
SAMPLERS = ("tpe", "random", "nsga2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from antlr_snn.training import ARCHS, PRESETS
    p.description = ("Search the training settings of each method for the front of "
                     "validation accuracy against validation spikes to the decision "
                     "(multi-objective Optuna). See docs/training.md.")
    a = p.add_argument
    a("--method", nargs="+", default=None, choices=list(PRESETS), help="one study per method "
      "[antlr]")
    a("--budget", type=int, default=None, help="trials per method, over all processes of the "
      "sweep (>= 1) [20]")
    a("--report", action="store_true", help="run no trial: only write front.json, front.png "
      "and trials.csv from the trials in the storage")
    a("--out", default=None, help="output folder [runs/sweep-<date>-<time>]")
    a("--resume", action="store_true", help="continue the sweep in --out (its running trials, "
      "if killed, run again)")
    a("--storage", default=None, help="Optuna storage URL shared by several processes, e.g. "
      "sqlite:///runs/sweep/sweep.db or postgresql://user@host/db [sqlite:///OUT/sweep.db]")
    a("--study", default=None, help="study names are NAME-<method> [the data set's name]")
    a("--search", action="append", metavar="NAME=SPEC", help="search NAME over SPEC: LOW:HIGH, "
      "LOW:HIGH:log, A,B,C or a fixed VALUE (repeatable; names: "
      f"{', '.join(sweep_space.NAMES)})")
    a("--space", default=None, metavar="FILE", help="JSON object of NAME: spec over the "
      "default space")
    a("--sampler", choices=SAMPLERS, default=None, help="Optuna sampler [tpe]")
    a("--enqueue", nargs="+", default=None, metavar="FILE", help="settings files (a run's "
      "config.json, e.g. a front point of another sweep) whose searched values are tried "
      "first, in the study of their method; each counts in --budget, once")
    a("--no-prune", dest="prune", action="store_false", default=None, help="train every trial "
      "to the end")
    a("--prune-warmup", type=int, default=None, help="first epoch after which a trial may be "
      "pruned [1]")
    a("--prune-fraction", type=float, default=None, help="prune when at least this fraction "
      "of the completed trials dominated the trial at the same epoch [0.5]")
    a("--prune-min", type=int, default=None, help="completed trials needed before pruning [4]")
    g = p.add_argument_group("fixed settings of every trial (as for antlr-snn train)")
    b = g.add_argument
    b("--dataset", default=None, help="[mnist: the embedded digits]")
    b("--data-dir", default=None, help="data folder")
    b("--epochs", type=int, default=None, help="epochs per trial [20; 2 on embedded sets]")
    b("--num-steps", type=int, default=None, help="time steps T [100; 300 for event data]")
    b("--batch-size", type=int, default=None, help="[16]")
    b("--max-train", type=int, default=None, help="use N training samples")
    b("--max-eval", type=int, default=None, help="use N validation / test samples")
    b("--seed", type=int, default=None, help="training seed of every trial; also seeds the "
      "sampler [0]")
    b("--arch", choices=ARCHS, default=None, help="[fc]")
    b("--channels", type=int, nargs=2, default=None, help="conv channels [16 32]")
    b("--grad-clip", type=float, default=None, help="[1.0]")
    b("--single-spike", action="store_true", default=None, help="at most one spike per neuron")
    a("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats "
      "[60]")
    a("--checkpoint-every", type=int, default=100, help="checkpoint a trial every N steps [100]")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--quiet", action="store_true", help="no progress display")


# ----------------------------------------------------------------------------- definition

def _flags(args, names) -> dict:
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def base_settings(given: dict, method: str) -> dict:
    """The fixed settings with train's defaults, checked by train's own checks."""
    from antlr_snn.experiments.train_settings import _validated
    cfg = _validated({**given, "method": method})
    return {k: getattr(cfg, k) for k in BASE}


# ----------------------------------------------------------------------------- the command

def read_spec(out: str) -> dict:
    path = os.path.join(out, "sweep.json")
    if not os.path.exists(path):
        raise DataNotFound(f"--resume: no sweep to resume in {out} (no sweep.json)")
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.__class__.__name__}); the sweep "
                        f"cannot be resumed") from None
    keys = ("methods", "settings", "space", "prune", "storage", "study", "sampler", "budget",
            "worker")
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or not all(k in spec for k in keys):
        raise UserError(f"{path} is not the definition of an antlr-snn sweep")
    return spec


def resolve(args, out: str, saved) -> dict:
    """The sweep's definition: flags over the resumed sweep.json (which they must agree
    with, but for --budget) over the defaults; the studies, if they exist, are checked later."""
    given = {"methods": args.method, "study": args.study, "sampler": args.sampler}
    given = {k: v for k, v in given.items() if v is not None}
    base_given = _flags(args, BASE)
    prune_given = _flags(args, PRUNE)
    if saved is not None:
        path = os.path.join(out, "sweep.json")
        _agree(given, saved, path)
        _agree(base_given, saved["settings"], path)
        _agree(prune_given, saved["prune"], path)
        if (args.search or args.space) and saved["space"] != _spaces(
                saved["methods"], saved["settings"], args):
            raise UserError(f"--search / --space differ from the sweep in {path}; leave them "
                            f"out to resume it")
        return {**saved, "budget": saved["budget"] if args.budget is None else args.budget}
    methods = given.get("methods", ["antlr"])
    base = base_settings(base_given, methods[0])
    return {"format": FORMAT, "methods": list(dict.fromkeys(methods)), "settings": base,
            "space": {}, "prune": {**PRUNE, **prune_given},
            "study": given.get("study", base["dataset"].replace(":", "-")),
            "sampler": given.get("sampler", "tpe"),
            "budget": 20 if args.budget is None else args.budget,
            "worker": f"{socket.gethostname()}:{os.path.abspath(out)}",
            "_given": {"settings": base_given, "prune": prune_given,
                       "space": bool(args.search or args.space)}}


def _spaces(methods, base, args) -> dict:
    from antlr_snn.experiments.train_settings import _validated
    space = sweep_space.resolve_space(base, args.search, args.space)
    out = {}
    for m in methods:
        out[m] = sweep_space.for_method(space, m, base)
        sweep_space.check_space(out[m], m, base, _validated)
    return out


def _check_args(args) -> None:
    for flag, v, low in (("--budget", args.budget, 1), ("--heartbeat", args.heartbeat, 1),
                         ("--checkpoint-every", args.checkpoint_every, 0),
                         ("--prune-warmup", args.prune_warmup, 1),
                         ("--prune-min", args.prune_min, 1)):
        if v is not None and v < low:
            raise UserError(f"{flag} must be >= {low}, got {v}")
    f = args.prune_fraction
    if f is not None and not 0 < f <= 1:
        raise UserError(f"--prune-fraction must be in (0, 1], got {f}")
    if args.report and args.enqueue:
        raise UserError("--report runs no trial; leave out --enqueue")
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR, the folder of the sweep to continue")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("antlr-snn sweep runs in one process; start several sweep processes "
                        "on one --storage instead of torchrun")


def _enqueued(path: str, spec: dict) -> tuple:
    """``--enqueue FILE``: the method of the settings in ``path`` and the trial parameters
    that reproduce them in that method's space."""
    import dataclasses

    from antlr_snn.experiments.train_settings import _validated, read_settings
    cfg = _validated(read_settings(path, "--enqueue"))
    if cfg.method not in spec["methods"]:
        raise UserError(f"--enqueue: {path} trains {cfg.method}, which this sweep does not "
                        f"search (--method {' '.join(spec['methods'])})")
    return cfg.method, sweep_space.params_of(spec["space"][cfg.method],
                                             dataclasses.asdict(cfg), f"--enqueue: {path}")


def holds_sweep(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "sweep.json"))


def run(args) -> int:
    from antlr_snn.distributed import Runtime, setup_distributed
    _check_args(args)
    folder = RunFolder(args.out, "runs/sweep", holds_run=holds_sweep, resume=args.resume,
                       command="antlr-snn sweep",
                       replace_hint="pass --resume to continue it or choose another --out")
    db_made = None
    try:
        folder.open()
        out = folder.path
        folder.resume_command = command_line("antlr-snn", "sweep", "--resume", "--out", out)
        saved = read_spec(out) if args.resume else None
        spec = resolve(args, out, saved)
        if args.storage:
            if saved is not None and masked(args.storage) != saved["storage"]:
                raise UserError(f"--storage {masked(args.storage)} differs from the sweep's "
                                f"({saved['storage']}); leave it out")
            url = args.storage
        elif saved is not None:
            url = saved["storage"]
            if "***" in url:
                raise UserError(f"the sweep's storage {url} needs its password: give --storage")
        else:
            url = "sqlite:///" + os.path.abspath(os.path.join(out, "sweep.db"))
            db_made = None if os.path.exists(url[10:]) else url[10:]
        spec["storage"] = masked(url)
        _, _, device = setup_distributed(args.device)
        worker = spec["worker"]
        storage = open_storage(url, args.heartbeat,
                               lambda study, t: retry(study, t))
        studies = join(spec, lambda m, base: _spaces([m], base, args)[m], storage,
                       args.resume or args.report)
        queued = [_enqueued(path, spec) for path in args.enqueue or ()]
        for method, params in queued:  # all read and checked before any is queued
            studies[method].enqueue_trial(params, skip_if_exists=True)
        rt = Runtime(device=device, checkpoint_every=args.checkpoint_every, progress=False,
                     verbose=False, resume=False)
        sweep = Sweep(out, spec, studies, url, args.quiet, args.heartbeat, rt)
        if not args.report:
            from antlr_snn.training import TrainConfig
            first = TrainConfig(**{**spec["settings"], "method": spec["methods"][0]})
            sweep.splits_for(first)  # a missing data set stops the sweep before it writes
        common.atomic_write_json(os.path.join(out, "sweep.json"), spec)
        folder.commit(announce=not args.quiet)
        db_made = None
        lost = sum(reap(s, worker, 2 * args.heartbeat) for s in studies.values())
        if lost:
            sweep.say(f"{lost} trial(s) that died running are queued again")
        if not args.report:
            features = sweep._splits["train"].features
            common.warm_up_kernels(spec["methods"], features, device=device,
                                   announce=not args.quiet, command="antlr-snn sweep")
            sweep.write()
            sweep.run()
        sweep.write()
        for m in spec["methods"]:
            sweep.say(f"{m}: front {sweep_front.front_text(sweep.front, m, 8)}")
        sweep.say(f"front: {os.path.join(out, 'front.json')}, {os.path.join(out, 'front.png')}"
                  f", {os.path.join(out, 'trials.csv')}")
    except BaseException as exc:
        if db_made is not None:
            for suffix in ("", "-journal"):
                try:
                    os.unlink(db_made + suffix)
                except OSError:
                    pass
        folder.close()
        if isinstance(exc, KeyboardInterrupt) and folder.committed:
            raise Interrupted(folder.interrupted_message()) from None
        raise
    folder.close()
    return 0
