"""`antlr-snn sweep`'s rules, without training: pruning and fronts, the trial ledger over
one storage, the search space and its errors."""
from __future__ import annotations

import json

import optuna
import pytest

from antlr_snn.experiments import sweep_front, sweep_space, sweep_storage
from antlr_snn.experiments.train_settings import _validated


def test_pruning_rule_and_front():
    assert sweep_front.should_prune((0.5, 10.0), [(0.6, 5.0), (0.7, 8.0), (0.4, 1.0)], 0.5, 3)
    assert not sweep_front.should_prune((0.5, 10.0), [(0.6, 5.0), (0.7, 8.0)], 0.5, 3)  # too few
    # the low-spike end of the front is kept, though less accurate than every peer
    assert not sweep_front.should_prune((0.2, 1.0), [(0.6, 5.0), (0.7, 8.0), (0.9, 20)], 0.5, 3)
    assert not sweep_front.should_prune((0.6, 5.0), [(0.6, 5.0)] * 4, 0.5, 3)  # equal: kept
    assert sweep_front.should_prune((0.5, 10.0), [(0.6, 5.0), (0.4, 1.0), (0.3, 2.0)], 0.3, 3)
    curve = [{"epoch": 1, "val_accuracy": 0.5, "val_spikes_to_decision": 9.0},
             {"epoch": 2, "val_accuracy": 0.7, "val_spikes_to_decision": 12.0},
             {"epoch": 3, "val_accuracy": 0.7, "val_spikes_to_decision": 4.0}]
    assert sweep_front.best_so_far(curve, 1)[:2] == (0.5, 9.0)
    assert sweep_front.best_so_far(curve, 3)[:2] == (0.7, 12.0)  # the first best, as best.pt


def test_fronts_per_method_and_overall():
    def rec(method, trial, acc, spikes, state="COMPLETE"):
        return {"method": method, "trial": trial, "state": state, "val_accuracy": acc,
                "val_spikes_to_decision": spikes}
    records = [rec("antlr", 0, 0.9, 40.0), rec("antlr", 1, 0.8, 50.0),  # 1 dominated by 0
               rec("antlr", 2, 0.7, 12.0), rec("antlr", 3, 0.95, 5.0, "PRUNED"),
               rec("timing", 0, 0.85, 10.0), rec("timing", 1, 0.85, 10.0),  # equal: both
               rec("timing", 2, 0.6, 30.0)]
    got = [(r["method"], r["trial"], r["on_overall_front"]) for r in sweep_front.fronts(records)]
    # per method, by spikes; antlr 2 (0.7 @ 12) is dominated overall by timing (0.85 @ 10)
    assert got == [("antlr", 2, False), ("antlr", 0, True), ("timing", 0, True),
                   ("timing", 1, True)]
    assert sweep_front.front_text(sweep_front.fronts(records), "antlr") == "70.0%@12 90.0%@40"


def ledger(tmp_path):
    storage = sweep_storage.open_storage(f"sqlite:///{tmp_path}/l.db", 60, None)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    return study


def test_ledger_claim_reap_retry(tmp_path):
    study = ledger(tmp_path)
    a = sweep_storage.claim(study, 3, "host:/a")
    a.suggest_float("lr", 1e-4, 1e-2, log=True)
    study.tell(a, [0.5, 10.0])
    dead = sweep_storage.claim(study, 3, "host:/a")  # runs when its process is killed
    lr = dead.suggest_float("lr", 1e-4, 1e-2, log=True)
    other = sweep_storage.claim(study, 3, "host:/b")  # another live process's
    other.suggest_float("lr", 1e-4, 1e-2, log=True)
    assert sweep_storage.claim(study, 3, "host:/a") is None  # 3 counted: full
    assert sweep_storage.reap(study, "host:/a", grace=60) == 1
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "FAIL", "RUNNING", "WAITING"]
    # the queued copy holds the dead trial's place, the failed one gives it up
    assert [sweep_storage.counted(t) for t in study.get_trials()] == [True, False, True, True]
    again = sweep_storage.claim(study, 3, "host:/a")  # the queued copy, the same settings
    assert again.number == 3 and again.suggest_float("lr", 1e-4, 1e-2, log=True) == lr
    assert study.get_trials()[3].system_attrs["retry_of"] == 1
    assert sweep_storage.claim(study, 3, "host:/a") is None
    assert sweep_storage.reap(study, "host:/c", grace=60) == 0  # live trials stay


def test_ledger_surplus_when_two_ask_at_once(tmp_path, monkeypatch):
    study = ledger(tmp_path)
    first = sweep_storage.claim(study, 2, "host:/a")
    ask = study.ask

    def ask_after_another_process():  # the other process asks between our count and ask
        monkeypatch.setattr(study, "ask", ask)
        ask()
        return ask()
    monkeypatch.setattr(study, "ask", ask_after_another_process)
    assert sweep_storage.claim(study, 2, "host:/b") is None
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["RUNNING", "RUNNING", "FAIL"]
    assert trials[2].user_attrs["note"].startswith("surplus")
    assert sum(map(sweep_storage.counted, trials)) == 2 and first.number == 0


BASE = {"dataset": "mnist", "epochs": 3, "num_steps": 30, "arch": "fc"}


def test_search_space():
    space = sweep_space.resolve_space(BASE, ["hidden=16:64:log", "depth=2",
                                             "latency_beta=0.1,0.2", "spike_reg=0"], None)
    assert space["hidden"] == {"low": 16, "high": 64, "log": True}
    assert space["t_max"] == {"low": 8, "high": 30, "log": False}  # at most T
    assert space["lr_step"] == {"low": 1, "high": 3, "log": False}
    assert set(sweep_space.for_method(space, "activation", BASE)) >= {"target_correct", "spike_reg"}
    assert "lambda_act" not in sweep_space.for_method(space, "activation", BASE)
    assert "spike_reg" not in sweep_space.for_method(space, "timing", BASE)
    ev = {**BASE, "dataset": "nmnist-sim", "num_steps": 300}
    assert "t_max" not in sweep_space.for_method(sweep_space.default_space(ev), "antlr", ev)
    # the output V* floor (the event-data remedy) is searched on events, for the latency methods
    ev_space = sweep_space.default_space(ev)
    assert ev_space["output_vstar_min"] == {"low": 0.01, "high": 0.3, "log": True}
    assert sweep_space.default_space(BASE)["output_vstar_min"] == 0.01
    assert "output_vstar_min" in sweep_space.for_method(ev_space, "timing", ev)
    assert "output_vstar_min" not in sweep_space.for_method(ev_space, "activation", ev)
    picked = sweep_space.settings_at(space, lambda name, spec: name)
    assert picked["hidden"] == ["hidden_0", "hidden_1"] and picked["latency_beta"] == "latency_beta"
    for m in ("antlr", "activation", "timing", "bptt"):
        sweep_space.check_space(sweep_space.for_method(space, m, BASE), m, BASE, _validated)


def test_space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lr": "1e-3:1e-2:log", "hidden": {"choices": [16, 32]},
                                "threshold": 1.2, "latency_beta": {"low": 0.1, "high": 0.3}}))
    space = sweep_space.resolve_space(BASE, ["threshold=1.4"], str(path))  # the flag wins
    assert space["lr"] == {"low": 1e-3, "high": 1e-2, "log": True}
    assert space["hidden"] == {"choices": [16, 32]} and space["threshold"] == 1.4
    assert space["latency_beta"] == {"low": 0.1, "high": 0.3, "log": False}
    for content, match in (("[1]", "must hold a JSON object"), ("{", "is not a JSON file"),
                           ('{"lr": {"low": 1}}', "is not a finite number, a range")):
        path.write_text(content)
        with pytest.raises(ValueError, match=match):
            sweep_space.resolve_space(BASE, None, str(path))
    with pytest.raises(FileNotFoundError, match="--space: no file"):
        sweep_space.resolve_space(BASE, None, str(tmp_path / "none.json"))


@pytest.mark.parametrize("search, match", [
    ("foo=1", "unknown search setting 'foo'"),
    ("lr=1e-2:1e-4", "low 0.01 is above high 0.0001"),
    ("target_wrong=0:1:log", "a log range needs low > 0"),
    ("hidden=16.5:64", "low and high must be integers"),
    ("lr=1e-3:fast", "'fast' is not a number"),
    ("lr=1:2:3", "a range is LOW:HIGH or LOW:HIGH:log"),
    ("lr", "write NAME=SPEC"),
    ("lr=1e-3:20", "'lr' = 20.0 cannot train antlr: --lr must be in (0, 10]"),
    ("t_max=8:40", "'t_max' = 40 cannot train antlr: --num-steps must be >= 40"),
    ("lambda_act=0:1", "'lambda_act' = 0.0 cannot train antlr"),
])
def test_bad_search_space(search, match):
    with pytest.raises(ValueError) as info:
        space = sweep_space.resolve_space(BASE, [search], None)
        sweep_space.check_space(sweep_space.for_method(space, "antlr", BASE), "antlr", BASE,
                                _validated)
    assert match in str(info.value)
