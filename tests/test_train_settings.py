"""`antlr-snn train`'s neuron and loss settings, and `--config FILE` (a settings file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn import SpikingNetwork, losses
from antlr_snn.cli import build_parser
from antlr_snn.errors import DataNotFound, UserError
from antlr_snn.experiments import common
from antlr_snn.experiments.train import resolve_config
from antlr_snn.training import TrainConfig, architecture, regularisers, task_loss

TINY = ["--hidden", "40", "--num-steps", "30", "--batch-size", "16", "--max-train", "96",
        "--max-eval", "32", "--epochs", "2", "--quiet"]
# every new setting away from its default (antlr's)
SETTINGS = ["--threshold", "0.7", "--surrogate-width", "2.5", "--lambda-act", "0.5",
            "--lambda-tim", "1.5", "--t-max", "20", "--latency-beta", "0.3",
            "--at-least-one-weight", "0.1", "--spike-reg", "0.01", "--spike-budget", "5",
            "--lr", "4e-3", "--lr-step", "1", "--lr-gamma", "0.5"]


def cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "antlr_snn", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def resolved(*argv):
    return resolve_config(build_parser(only="train").parse_args(["train", *map(str, argv)]), None)


def test_defaults_are_todays_run():
    cfg = resolved()
    net = architecture(cfg, 784)
    default = SpikingNetwork([784, 800, 10]).spec()
    assert [l["neuron"] for l in net] == [l["neuron"] for l in default]
    assert (cfg.latency_beta, cfg.at_least_one_weight, cfg.no_spike_strength, cfg.spike_reg,
            cfg.target_count, cfg.target_wrong, cfg.t_max) == (1 / 6, 0.05, 100.0, 0.0, 1.0, 0.0, 24)
    assert resolved("--dataset", "nmnist-sim", "--method", "activation").target_count == 10.0


def test_losses_use_the_settings():
    torch.manual_seed(0)
    net = SpikingNetwork([12, 9, 4], method="antlr", threshold=0.2)
    x, y = (torch.rand(30, 6, 12) < 0.3).float(), torch.tensor([0, 1, 2, 3, 0, 1])
    out = net(x)
    fired = out.spikes.detach().amax(0)  # latency terms that depend on beta and the weight:
    assert (fired.sum(-1) > 0).all() and (fired.gather(1, y[:, None]) == 0).any()
    cfg = resolved("--latency-beta", "0.3", "--at-least-one-weight", "0.2")
    want = losses.latency_loss(out, y, beta=0.3) + losses.at_least_one_spike_loss(out, y, 0.2)
    assert task_loss(out, y, cfg).item() == pytest.approx(want.item(), rel=1e-6)
    assert task_loss(out, y, resolved()).item() != pytest.approx(want.item(), rel=1e-3)
    # the count loss with targets 3 (label) and 0.5 (others), from Table 1 by hand
    cfg = resolved("--method", "activation", "--target-correct", "3", "--target-wrong", "0.5")
    act = SpikingNetwork([12, 9, 4], method="activation", threshold=0.4)
    out = act(x)
    counts = out.spikes.sum(0)
    target = torch.full_like(counts, 0.5)
    target[torch.arange(6), y] = 3.0
    want = ((counts - target) ** 2).sum(-1).mean() / 30
    assert task_loss(out, y, cfg).item() == pytest.approx(want.item(), rel=1e-6)
    timing = SpikingNetwork([12, 9, 4], method="timing", threshold=0.4)
    out = timing(x)
    cfg = resolved("--method", "timing", "--no-spike-strength", "7")
    torch.testing.assert_close(regularisers(timing, out, cfg),
                               losses.no_spike_penalty(timing, out, strength=7.0))


def test_settings_reach_the_run(tmp_path):
    out = tmp_path / "a"
    proc = cli("train", *TINY, *SETTINGS, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["threshold"], cfg["lambda_act"], cfg["lambda_tim"], cfg["t_max"],
            cfg["latency_beta"], cfg["spike_reg"], cfg["spike_budget"], cfg["lr_gamma"]) == (
        0.7, 0.5, 1.5, 20, 0.3, 0.01, 5.0, 0.5)
    best = common.load_checkpoint(out / "best.pt")
    assert best["t_max"] == 20
    for layer in best["layers"]:
        n = layer["neuron"]
        assert (n["threshold"], n["surrogate_width"], n["lambda_act"], n["lambda_tim"]) == (
            0.7, 2.5, 0.5, 1.5)
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([4e-3, 2e-3])  # StepLR(1, 0.5)
    # the same settings from the file give the same run, bit for bit
    again = tmp_path / "b"
    proc = cli("train", "--config", out / "config.json", "--out", again, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (again / "config.json").read_text() == (out / "config.json").read_text()

    def records(d):
        return [{k: v for k, v in json.loads(line).items() if k != "wall_time_s"}
                for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert records(again) == records(out)
    a, b = (common.load_checkpoint(d / "best.pt")["state_dict"] for d in (out, again))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"method": "activation", "lr": 0.003, "hidden": [64],
                                "target_correct": 2.0, "epochs": 7}))
    cfg = resolved("--config", path, "--lr", "0.001", "--trials", "16")
    assert (cfg.method, cfg.lr, cfg.hidden, cfg.target_correct, cfg.epochs, cfg.trials) == (
        "activation", 0.001, [64], 2.0, 7, 16)
    saved = {k: v for k, v in vars(TrainConfig()).items() if k not in ("threshold", "spike_reg")}
    args = build_parser(only="train").parse_args(["train", "--resume", "--out", "x"])
    old = resolve_config(args, saved)  # a run saved before these settings existed
    assert (old.threshold, old.spike_reg) == (1.0, 0.0)


@pytest.mark.parametrize("content, match", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not a run configuration"),
    ('{"front": [{"trial": 0}]}', "is a sweep's front"),
    ('{"lr": 0.001, "thresold": 0.5}', "unknown setting(s) thresold"),
    ('{"hidden": "800"}', 'bad "hidden"'),
    ('{"lr": 50}', "bad run settings (--lr must be in (0, 10]"),
    ('{"method": "timing", "lambda_act": 2}', "--lambda-act acts on --method antlr only"),
])
def test_bad_settings_files(tmp_path, content, match):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        resolved("--config", path)
    assert match in str(info.value) and "\n" not in str(info.value)
    if "lambda" not in match:
        assert str(path) in str(info.value)


def test_missing_file_and_resume(tmp_path):
    with pytest.raises(DataNotFound, match="no settings file"):
        resolved("--config", tmp_path / "none.json")
    with pytest.raises(UserError, match="give one of them"):
        resolved("--config", tmp_path / "none.json", "--resume", "--out", tmp_path)


@pytest.mark.parametrize("argv, match", [
    (["--method", "timing", "--spike-reg", "0.1"], "--spike-reg acts on --method antlr"),
    (["--method", "activation", "--latency-beta", "0.3"], "--latency-beta acts on"),
    (["--method", "antlr", "--target-correct", "2"], "--target-correct acts on"),
    (["--spike-budget", "3"], "--spike-budget needs --spike-reg > 0"),
    (["--lambda-tim", "0"], "--lambda-tim must be > 0 for antlr"),
    (["--lambda-act", "0"], "--lambda-act 0 drops the activation channel"),
    (["--lambda-act", "0", "--at-least-one-weight", "0"], None),
    (["--lr-gamma", "0"], "--lr-gamma must be in (0, 1]"),
    (["--lr-step", "0"], "--lr-step must be a positive integer"),
    (["--threshold", "-1"], "--threshold must be a finite number > 0"),
    (["--method", "activation", "--target-correct", "0"], "--target-correct must be"),
    (["--t-max", "40", "--num-steps", "30"], "--num-steps must be >= 40"),
])
def test_bad_settings(argv, match):
    if match is None:
        assert resolved(*argv).lambda_act == 0.0
        return
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace("]", r"\]")):
        resolved(*argv)


def test_one_line_on_the_command_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"lr": "fast"}')
    proc = cli("train", "--config", path, "--out", tmp_path / "r")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert 'bad "lr"' in proc.stderr and not (tmp_path / "r").exists()
