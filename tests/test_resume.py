"""Crash safety: SIGKILL mid-epoch + --resume equals an uninterrupted run; atomic files."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn.experiments import common

# 160 samples / batch 8 = 20 steps per epoch, 2 epochs; checkpoints every 5 steps (+ epochs)
ARGS = ["train", "--hidden", "100", "--lr", "3e-3", "--num-steps", "30", "--batch-size", "8",
        "--max-train", "160", "--max-eval", "60", "--epochs", "2", "--checkpoint-every", "5",
        "--quiet"]
from cli_harness import ENV, PAUSING_CLI, sigkill_when_paused  # noqa: E402


def start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "antlr_snn", *ARGS, "--out", str(out), *extra],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]


def run_to_end(out, *extra):
    finish(start(out, *extra))




def run_and_kill(out, step, *extra):
    """Start a run that pauses after global step ``step`` (counted in this process, which
    starts at the resumed step), then SIGKILL it there."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, str(step), *ARGS, "--out",
                             str(out), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sigkill_when_paused(proc, f"the run to pause at step {step}")


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if "wall_time" not in k}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def assert_same_tensors(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tensors(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}/{i}")
    else:
        assert a == b, path


def test_sigkill_and_resume_equal_an_uninterrupted_run(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = start(ref)  # the uninterrupted run, alongside the interrupted one

    run_and_kill(run, 7)  # epoch 1, after the step-5 checkpoint
    ckpt = common.load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"]) == (0, 5)
    assert (run / "metrics.jsonl").read_bytes() == b""

    # resumed at the step-5 checkpoint: 28 more steps end at global step 33 (epoch 2, step 13
    # of 20), after the step-30 checkpoint
    run_and_kill(run, 28, "--resume")
    ckpt = common.load_checkpoint(run / "checkpoint.pt")
    state = ckpt["state"]
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 10, 30)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]
    # a torn line (as a crash inside a write would leave) must be cut on resume
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"trial": 0, "epoch": 2, "tr')

    run_to_end(run, "--resume")
    finish(reference)
    for name in ("checkpoint.pt", "best.pt"):
        a, b = common.load_checkpoint(ref / name), common.load_checkpoint(run / name)
        assert_same_tensors(a["state_dict"], b["state_dict"], name)
    a = common.load_checkpoint(ref / "checkpoint.pt")
    b = common.load_checkpoint(run / "checkpoint.pt")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert a["scheduler"] == b["scheduler"]
    res_a = json.loads((ref / "results.json").read_text())
    res_b = json.loads((run / "results.json").read_text())
    assert strip_timing(res_a) == strip_timing(res_b)
    assert res_a["trials"][0]["test_accuracy"] > 0.25  # it did learn something
    rec_a = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip_timing(rec_a) == strip_timing(rec_b) and len(rec_b) == 2
    assert res_b["trials"][0]["wall_time_s"] > 0

    # resuming a finished run changes no file (results.json is rewritten with the same numbers)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "results.json"}
    run_to_end(run, "--resume")
    assert before == {p.name: p.read_bytes() for p in run.iterdir() if p.name != "results.json"}
    assert strip_timing(json.loads((run / "results.json").read_text())) == strip_timing(res_b)


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    common.save_checkpoint(path, {"step": torch.tensor(1)})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        common.save_checkpoint(path, {"step": torch.tensor(2)})
    monkeypatch.undo()
    assert common.load_checkpoint(path)["step"].item() == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind

    json_path = tmp_path / "r.json"
    common.atomic_write_json(json_path, {"a": 1})
    with pytest.raises(TypeError):
        common.atomic_write_json(json_path, {"a": object()})
    assert json.loads(json_path.read_text()) == {"a": 1}


def test_jsonl_log_truncates_to_a_checkpointed_size(tmp_path):
    log = common.JsonlLog(tmp_path / "m.jsonl")
    log.append({"epoch": 1})
    size = log.size()
    log.append({"epoch": 2})
    with open(log.path, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    assert [r["epoch"] for r in common.read_jsonl(log.path)] == [1, 2]  # torn line ignored
    log.truncate(size)
    assert (tmp_path / "m.jsonl").read_text() == '{"epoch": 1}\n'


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np
    state = common.rng_state()
    common.save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    draws = (random.random(), np.random.rand(), torch.rand(3))
    common.set_rng_state(common.load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])
