"""``antlr-snn sweep``: search the training settings for the accuracy-spike front.

One multi-objective Optuna study per method (maximise validation accuracy, minimise
validation spikes per sample to the decision) over the space of
:mod:`antlr_snn.experiments.sweep_space`; every trial trains through the trainer
(:func:`antlr_snn.training.train_trial`) in its own folder ``DIR/trials/<method>-<number>``
(``config.json``, which ``antlr-snn train --config`` reads, ``metrics.jsonl``,
``checkpoint.pt``, ``best.pt``, ``results.json``). Weak trials are pruned after each epoch
(:mod:`antlr_snn.experiments.sweep_front`). ``DIR`` gets ``sweep.json`` (the sweep's
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
import copy
import json
import os
import socket
import sys
import zlib
from dataclasses import asdict

from antlr_snn.errors import DataNotFound, UserError, allocation_failure, one_line
from antlr_snn.experiments import common, sweep_front, sweep_space
from antlr_snn.experiments.sweep_storage import (ATTR, FORMAT, Heartbeat, _agree, _optuna,
                                                 claim, counted, join, masked, open_storage,
                                                 reap, retry)
from antlr_snn.rundir import Interrupted, RunFolder, command_line
#: The fixed settings of every trial; all but data_dir define a study.
BASE = ("dataset", "data_dir", "epochs", "num_steps", "batch_size", "max_train", "max_eval",
        "seed", "arch", "channels", "grad_clip", "single_spike")
PRUNE = {"prune": True, "prune_warmup": 1, "prune_fraction": 0.5, "prune_min": 4}
SAMPLERS = ("tpe", "random", "nsga2")
MAX_FAILURES = 3  # consecutive failed trials (user errors) that stop a process


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
    from antlr_snn.experiments.train import _validated
    cfg = _validated({**given, "method": method})
    return {k: getattr(cfg, k) for k in BASE}


# ----------------------------------------------------------------------------- one trial

class Pruned(Exception):
    """The pruning rule stopped a trial after an epoch."""


def run_trial(sweep, method: str, trial) -> str:
    """Train one trial; returns its final state's name. ``sweep`` is the running
    :class:`Sweep`."""
    optuna = _optuna()
    from antlr_snn.experiments.train import _validated, summarize
    from antlr_snn.training import check_network_fits, train_trial
    study = sweep.studies[method]
    beat = Heartbeat(study._storage, trial._trial_id, sweep.heartbeat)
    tdir = os.path.join(sweep.out, "trials", f"{method}-{trial.number:04d}")
    trial.set_user_attr("dir", os.path.abspath(tdir))
    curve = []
    try:
        space = sweep.space[method]
        settings = sweep_space.settings_at(space, lambda n, s: sweep_space.suggest(trial, n, s))
        cfg = _validated({**sweep.base, **settings, "method": method, "trials": 1})
        trial.set_user_attr("config", asdict(cfg))
        common.ensure_writable_dir(tdir)
        common.atomic_write_json(os.path.join(tdir, "config.json"), asdict(cfg))
        splits = sweep.splits_for(cfg)
        check_network_fits(cfg, splits["train"].features, sweep.device, 1,
                           splits["train"].num_classes)

        def on_epoch(_, rec):
            curve.append({"epoch": rec["epoch"], "val_accuracy": rec["val_accuracy"],
                          "val_spikes_to_decision": rec["val_spikes_to_decision"],
                          "val_spikes_per_sample": rec["val_spikes_per_sample"]})
            trial.set_user_attr("curve", curve)
            sweep.show(f"{method} trial {trial.number} epoch {rec['epoch']}/{cfg.epochs}")
            e, p = rec["epoch"], sweep.prune
            if p["prune"] and p["prune_warmup"] <= e < cfg.epochs:
                peers = [sweep_front.best_so_far(t.user_attrs.get("curve") or [], e)
                         for t in study.get_trials(deepcopy=False,
                                                   states=(optuna.trial.TrialState.COMPLETE,))
                         if len(t.user_attrs.get("curve") or []) >= e]
                point = sweep_front.best_so_far(curve, e)
                if sweep_front.should_prune(point[:2], [q[:2] for q in peers if q],
                                            p["prune_fraction"], p["prune_min"]):
                    raise Pruned(f"pruned after epoch {e}")
        result = train_trial(cfg, 0, tdir, splits, sweep.rt, on_epoch=on_epoch)
        common.atomic_write_json(os.path.join(tdir, "results.json"),
                                 summarize(cfg, [result], 1, result["wall_time_s"]))
        best = sweep_front.best_so_far(curve, cfg.epochs)
        trial.set_user_attr("result", {k: v for k, v in result.items()
                                       if k.startswith("test_") or k == "best_epoch"})
        state, values = optuna.trial.TrialState.COMPLETE, [best[0], best[1]]
    except Pruned as exc:
        trial.set_user_attr("note", str(exc))
        state, values = optuna.trial.TrialState.PRUNED, None
    except KeyboardInterrupt:
        beat.close()
        _tell(study, trial, optuna.trial.TrialState.FAIL, None)
        retry(study, study._storage.get_trial(trial._trial_id))
        raise
    except BaseException as exc:
        beat.close()
        trial.set_user_attr("error", f"{type(exc).__name__}: {one_line(exc)[:300]}")
        _tell(study, trial, optuna.trial.TrialState.FAIL, None)
        raise
    beat.close()
    _tell(study, trial, state, values)
    return state.name


def _tell(study, trial, state, values) -> None:
    """``study.tell``; a trial that another process meanwhile declared dead (its heartbeat
    stalled) keeps that verdict: its queued copy runs it again."""
    try:
        study.tell(trial, values, state=state)
    except ValueError as exc:  # "Cannot tell a FAIL trial"
        print(f"antlr-snn sweep: trial {trial.number}: {one_line(exc)}", file=sys.stderr)


# ----------------------------------------------------------------------------- the sweep

class Sweep:
    """One process's part of a sweep: its folder, studies, data and progress display."""

    def __init__(self, out, spec, studies, storage_url, quiet, heartbeat, rt):
        self.out, self.spec, self.studies, self.rt = out, spec, studies, rt
        self.base, self.space, self.prune = spec["settings"], spec["space"], spec["prune"]
        self.budget, self.worker, self.heartbeat = spec["budget"], spec["worker"], heartbeat
        self.device, self.storage_url, self.quiet = rt.device, storage_url, quiet
        self._splits, self.bar, self.front = None, None, []

    def splits_for(self, cfg):
        """The data splits, loaded once; static images are latency-coded per batch, so a
        trial's ``t_max`` only changes the copies it gets."""
        from antlr_snn.training import load_splits
        if self._splits is None:
            self._splits = load_splits(cfg, self.device)
        return {k: (_with_t_max(s, cfg.t_max) if s.static else s) for k, s in self._splits.items()}

    def records(self) -> list:
        return [sweep_front.trial_record(m, t) for m, s in self.studies.items()
                for t in s.get_trials(deepcopy=False)]

    def done(self) -> int:
        return sum(1 for s in self.studies.values() for t in s.get_trials(deepcopy=False)
                   if counted(t) and t.state.name not in ("RUNNING", "WAITING"))

    def write(self) -> None:
        names = {m: s.study_name for m, s in self.studies.items()}
        self.front = sweep_front.write_outputs(self.out, self.records(), names, {
            "dataset": self.base["dataset"], "storage": masked(self.storage_url),
            "budget": self.budget})

    def show(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what, refresh=True)

    def say(self, line: str) -> None:
        if self.quiet:
            return
        try:
            from tqdm.auto import tqdm
            tqdm.write(line, file=sys.stdout)
        except ImportError:
            print(line, flush=True)

    def sampler(self, study):
        """A sampler seeded by (seed, trials so far, this process): a resumed or second
        process does not repeat the draws of the first."""
        optuna = _optuna()
        first = study.user_attrs.get(ATTR + "_creator") == self.worker
        key = f"{self.base['seed']}:{len(study.get_trials(deepcopy=False))}:" \
              f"{'' if first else self.worker}"
        seed = zlib.crc32(key.encode())
        kind = self.spec["sampler"]
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def run(self) -> None:
        """Trials round-robin over the methods until every study has its budget."""
        from antlr_snn.training import progress
        total = self.budget * len(self.studies)
        self.bar = progress(total=total, initial=min(total, self.done()), desc="sweep",
                            disable=self.quiet)
        shown, failures = self.done(), 0
        pending = list(self.studies)
        try:
            while pending:
                for method in list(pending):
                    study = self.studies[method]
                    study.sampler = self.sampler(study)
                    trial = claim(study, self.budget, self.worker)
                    if trial is None:
                        pending.remove(method)
                        continue
                    try:
                        state = run_trial(self, method, trial)
                        failures = 0
                    except Exception as exc:
                        if not _trial_error(exc) or failures + 1 >= MAX_FAILURES:
                            raise
                        failures += 1
                        state = f"FAIL ({one_line(exc)[:160]})"
                    self.write()
                    now = self.done()
                    self.bar.update(max(0, min(total, now) - shown))
                    shown = max(shown, min(total, now))
                    rec = next(r for r in self.records()
                               if r["method"] == method and r["trial"] == trial.number)
                    self.bar.set_postfix(front=" | ".join(
                        f"{m} {sweep_front.front_text(self.front, m, 3)}" for m in self.studies))
                    self.say(_trial_line(rec, state, self.front))
        finally:
            self.bar.close()


def _trial_error(exc: BaseException) -> bool:
    """A trial's own user error (a network too big, a diverged run) stops that trial only."""
    if isinstance(exc, UserError):
        return True
    return isinstance(exc, (MemoryError, RuntimeError)) and allocation_failure(exc) is not None


def _trial_line(rec: dict, state: str, front: list) -> str:
    head = f"{rec['method']} trial {rec['trial']}: {state.lower()}"
    if rec["val_accuracy"] is not None:
        head += (f", val {100 * rec['val_accuracy']:.1f}% at {rec['val_spikes_to_decision']:.1f}"
                 f" spikes to decision (epoch {rec['best_epoch']})")
    return f"{head}; front {sweep_front.front_text(front, rec['method'])}"


def _with_t_max(split, t_max: int):
    s = copy.copy(split)
    s.t_max = t_max
    return s


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
    from antlr_snn.experiments.train import _validated
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
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR, the folder of the sweep to continue")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("antlr-snn sweep runs in one process; start several sweep processes "
                        "on one --storage instead of torchrun")


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
