"""`torchrun -m antlr_snn train` with gloo on CPU: DDP equals one process; trials over ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn.experiments import common

# 41 samples, batch 8: the last global batch holds 1 sample, so rank 1 gets none there
ARGS = ["train", "--hidden", "60", "--lr", "3e-3", "--num-steps", "30", "--batch-size", "8",
        "--max-train", "41", "--max-eval", "50", "--epochs", "2", "--quiet"]


def launch(out, *extra, nproc=1, wait=True):
    if nproc == 1:
        cmd = [sys.executable, "-m", "antlr_snn"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "antlr_snn"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd + ARGS + ["--out", str(out), *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return finish(proc) if wait else proc


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]


def test_two_processes_give_the_weights_of_one(tmp_path):
    # the timing method: its no-spike penalty acts on the weights directly, inside the loss
    one, two = tmp_path / "one", tmp_path / "two"
    single = launch(one, "--method", "timing", wait=False)
    launch(two, "--method", "timing", nproc=2)
    finish(single)
    a = common.load_checkpoint(one / "checkpoint.pt")
    b = common.load_checkpoint(two / "checkpoint.pt")
    assert a["state"]["global_step"] == b["state"]["global_step"] == 12  # 6 global batches x 2
    for k, w in a["state_dict"].items():
        if k.endswith("_extra_state"):  # the layers' settings
            assert b["state_dict"][k] == w
        else:
            torch.testing.assert_close(b["state_dict"][k], w, rtol=0, atol=1e-5)
    rec_a = common.read_jsonl(one / "metrics.jsonl")
    rec_b = common.read_jsonl(two / "metrics.jsonl")
    assert len(rec_b) == 2  # rank 0 logs alone
    for x, y in zip(rec_a, rec_b):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
        assert y["train_spikes_per_sample"] == pytest.approx(x["train_spikes_per_sample"], abs=0.5)
        assert y["val_accuracy"] == pytest.approx(x["val_accuracy"], abs=0.05)
    res_a = json.loads((one / "results.json").read_text())
    res_b = json.loads((two / "results.json").read_text())
    assert res_a["world_size"] == 1 and res_b["world_size"] == 2
    assert res_b["trials"][0]["test_n"] == 50  # the ranks' evaluation shards add up
    assert res_b["test_accuracy"]["mean"] == pytest.approx(res_a["test_accuracy"]["mean"], abs=0.05)
    assert res_b["spikes_per_sample"]["mean"] == pytest.approx(res_a["spikes_per_sample"]["mean"],
                                                               rel=0.02)


def test_trials_are_spread_over_ranks_and_gathered(tmp_path):
    out = tmp_path / "trials"
    launch(out, "--trials", "2", "--epochs", "1", nproc=2)
    res = json.loads((out / "results.json").read_text())
    trials = res["trials"]
    assert [t["trial"] for t in trials] == [0, 1] and [t["seed"] for t in trials] == [0, 1]
    for t in trials:
        d = out / f"trial-{t['trial']}"
        assert len(common.read_jsonl(d / "metrics.jsonl")) == 1
        trial_res = json.loads((d / "results.json").read_text())  # the trial's own results
        assert trial_res["trials"] == [t] and trial_res["test_accuracy"]["mean"] == t["test_accuracy"]
        assert not (d / "result.json").exists()
    accs = [t["test_accuracy"] for t in trials]
    assert res["test_accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert res["test_accuracy"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    assert res["test_accuracy"]["n"] == 2
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))
    best_pt = out / f"trial-{best['trial']}" / "best.pt"
    assert (out / "best.pt").read_bytes() == best_pt.read_bytes()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
