"""One process's part of ``antlr-snn sweep``: its trials, one by one, and its outputs.

:class:`Sweep` claims trials from each method's study (:func:`sweep_storage.claim`), trains
each through the trainer (:func:`run_trial`, in ``DIR/trials/<method>-<number>``), prunes weak
ones after each epoch (:func:`sweep_front.should_prune`), and rewrites ``front.json``,
``front.png`` and ``trials.csv`` after every trial. The command is
:mod:`antlr_snn.experiments.sweep`.
"""
from __future__ import annotations

import copy
import os
import sys
import zlib
from dataclasses import asdict

from antlr_snn.errors import UserError, allocation_failure, one_line
from antlr_snn.experiments import common, sweep_front, sweep_space
from antlr_snn.experiments.sweep_storage import (ATTR, Heartbeat, _optuna, claim, counted,
                                                 masked, retry)

MAX_FAILURES = 3  # consecutive failed trials (user errors) that stop a process

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
    """One process's part of a sweep: its folder, studies, data and progress display.

    ``spec`` is the sweep's definition (``sweep.json``), ``studies`` maps method -> Optuna
    study; :meth:`run` claims and trains trials until every study has ``spec["budget"]``.

    Example (no trial yet):
        >>> import optuna
        >>> from antlr_snn.distributed import Runtime
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> spec = {"settings": {"dataset": "mnist", "seed": 0}, "space": {"antlr": {}},
        ...         "prune": {"prune": False}, "budget": 4, "worker": "host:/runs/s",
        ...         "sampler": "random"}
        >>> sweep = Sweep("/runs/s", spec, {"antlr": study}, "sqlite://", True, 60,
        ...               Runtime(device="cpu"))
        >>> sweep.done(), sweep.records(), type(sweep.sampler(study)).__name__
        (0, [], 'RandomSampler')
    """

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
