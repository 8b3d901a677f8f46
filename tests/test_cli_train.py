"""End-to-end tests of `antlr-snn train` and `antlr-snn evaluate` through `python -m antlr_snn`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from antlr_snn.experiments import common

TINY = ["--hidden", "100", "--num-steps", "30", "--batch-size", "16", "--max-train", "480",
        "--lr", "3e-3", "--max-eval", "100", "--epochs", "2", "--quiet"]


def cli(*args, env=None, timeout=240):
    full_env = {"OMP_NUM_THREADS": "2", **os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "antlr_snn", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "antlr"
    proc = cli("train", "--method", "antlr", *TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_writes_every_result_file(trained):
    out, proc = trained
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "curves.png",
                 "results.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "result.json").exists()  # one results file, not two side by side
    assert proc.stdout.splitlines()[0] == f"run folder: {out}"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [30, 60]  # 480 samples / 16 per batch per epoch
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "antlr" and res["decision"] == "earliest_spike"
    assert res["config"]["hidden"] == [100] and res["config"]["num_steps"] == 30
    trial = res["trials"][0]
    assert trial["test_n"] == 100
    assert res["test_accuracy"]["mean"] == trial["test_accuracy"]
    assert res["test_accuracy"]["std"] == 0.0 and res["test_accuracy"]["n"] == 1
    # 480 digits, 2 epochs: far above chance (0.1) already
    assert trial["test_accuracy"] > 0.5, trial
    assert trial["val_accuracy"] == max(r["val_accuracy"] for r in records)
    assert 0 < trial["test_spikes_to_decision"] <= trial["test_spikes_per_sample"]
    assert trial["test_spikes_per_sample"] == pytest.approx(
        trial["test_hidden_spikes_per_sample"] + trial["test_output_spikes_per_sample"])
    assert res["wall_time_s"] > 0
    assert "test accuracy" in proc.stdout


def test_best_checkpoint_rebuilds_the_network(trained):
    out, _ = trained
    ckpt = common.load_checkpoint(out / "best.pt")
    assert [(l["type"], l["in_features"], l["out_features"]) for l in ckpt["layers"]] == [
        ("LIFLayer", 784, 100), ("LIFLayer", 100, 10)]
    assert ckpt["method"] == "antlr" and ckpt["dataset"] == "mnist" and ckpt["num_steps"] == 30
    for layer in ckpt["layers"]:  # every layer's neuron and method travel with the weights
        assert layer["neuron"]["alpha_v"] == 0.99 and layer["neuron"]["threshold"] == 1.0
        assert layer["neuron"]["method"] == "antlr" and layer["neuron"]["lambda_tim"] == 1.0
    assert ckpt["state_dict"]["layers.1._extra_state"]["neuron"] == ckpt["layers"][1]["neuron"]
    assert ckpt["state_dict"]["layers.0.weight"].shape == (100, 784)


def test_evaluate_reproduces_the_test_score(trained):
    out, _ = trained
    proc = cli("evaluate", "--checkpoint", out / "best.pt", "--max-eval", 100)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    trial = json.loads((out / "results.json").read_text())["trials"][0]
    assert res["n"] == 100
    assert res["accuracy"] == trial["test_accuracy"]
    assert res["spikes_per_sample"] == pytest.approx(trial["test_spikes_per_sample"], rel=1e-12)
    assert res["spikes_to_decision"] == pytest.approx(trial["test_spikes_to_decision"], rel=1e-12)


def test_activation_preset_counts_spikes(tmp_path):
    from antlr_snn.cli import main  # in process: the subprocess path is covered above
    assert main(["train", "--method", "activation", *TINY, "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    trial = res["trials"][0]
    assert res["decision"] == "most_spikes"
    assert trial["test_accuracy"] == trial["test_accuracy_most_spikes"]
    # a most-spikes decision needs the whole window: every spike counts
    assert trial["test_spikes_to_decision"] == trial["test_spikes_per_sample"]
    assert trial["test_accuracy"] > 0.35, trial


@pytest.mark.parametrize("flags, needles", [
    (["--method", "hebb"], ["unknown method 'hebb'", "antlr"]),
    (["--dataset", "cifar"], ["unknown data set 'cifar'"]),
    (["--lr", "-1"], ["--lr"]),
    (["--epochs", "0"], ["--epochs must be a positive integer"]),
    (["--hidden", "0"], ["--hidden"]),
    (["--num-steps", "10"], ["--num-steps must be >= 24"]),
    (["--grad-clip", "nan"], ["--grad-clip"]),
    (["--checkpoint-every", "-1"], ["--checkpoint-every must be >= 0"]),
    (["--dataset", "nmnist"], ["Train/"]),
    (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent/f"],
     ["Fashion-MNIST", "train-images-idx3-ubyte"]),
    (["--data-dir", "/nonexistent/mnist"], ["/nonexistent/mnist"]),
])
def test_bad_arguments_give_one_line(tmp_path, capsys, flags, needles):
    in_process(capsys, "train", *flags, "--out", tmp_path / "x", needles=needles)
    assert not (tmp_path / "x" / "config.json").exists()  # a failed start leaves no run behind


def test_bad_argument_through_the_command_line(tmp_path):
    one_line_error(cli("train", "--method", "hebb", "--out", tmp_path / "x"), "unknown method")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    in_process(capsys, "train", *TINY, "--out", blocker / "sub",
               needles=["not writable", str(blocker)])


def in_process(capsys, *args, needles=()):
    """Run the CLI in this process (fast); it must fail with one line holding ``needles``."""
    from antlr_snn.cli import main
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err
    return err[0]


def test_checkpoint_errors(trained, tmp_path, capsys):
    out, _ = trained
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    in_process(capsys, "evaluate", "--checkpoint", bad, needles=["not an antlr-snn checkpoint"])
    in_process(capsys, "evaluate", "--checkpoint", tmp_path / "none.pt", needles=["not found"])
    in_process(capsys, "evaluate", "--checkpoint", out / "best.pt", "--dataset", "nmnist-sim",
               "--max-eval", "2", needles=["784 inputs", "2312"])
    # a checkpoint whose weights do not fit the sizes it claims
    ckpt = common.load_checkpoint(out / "best.pt")
    ckpt["layers"][0]["out_features"] = ckpt["layers"][1]["in_features"] = 50
    common.save_checkpoint(tmp_path / "other.pt", ckpt)
    in_process(capsys, "evaluate", "--checkpoint", tmp_path / "other.pt", needles=["do not fit"])
    # a checkpoint whose layer settings disagree with the settings saved with its weights
    ckpt = common.load_checkpoint(out / "best.pt")
    ckpt["layers"][1]["neuron"]["threshold"] = 0.5
    common.save_checkpoint(tmp_path / "settings.pt", ckpt)
    in_process(capsys, "evaluate", "--checkpoint", tmp_path / "settings.pt",
               needles=["other neuron settings", "threshold=1.0 (this layer: 0.5)"])
    # resuming with another network size, or a run without a checkpoint to resume
    in_process(capsys, "train", *TINY, "--hidden", "50", "--resume", "--out", out,
               needles=["--hidden [50] differs"])
    in_process(capsys, "train", "--resume", "--out", tmp_path / "empty",
               needles=["no run to resume"])
    in_process(capsys, "train", "--resume", needles=["--resume needs --out"])
    in_process(capsys, "train", *TINY, "--out", out, needles=["already holds a run"])


def test_resume_refuses_a_checkpoint_of_another_size(trained, tmp_path, capsys):
    out, _ = trained
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((out / "config.json").read_text())
    cfg["hidden"] = [60]
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    in_process(capsys, "train", "--resume", "--out", other, needles=["784-100-10", "784-60-10"])


def test_help_states_the_embedded_defaults(capsys):
    from antlr_snn.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the default is 2 epochs" in text and "embedded" in text


def write_idx(path, array):
    import gzip
    import struct

    import numpy as np
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_evaluate_reads_only_the_idx_test_files(trained, tmp_path, capsys):
    """An IDX folder with only t10k-* files is enough for evaluate (no train-* read)."""
    from antlr_snn.data import load_dataset
    out, _ = trained
    x, y = load_dataset("mnist", "test")
    folder = tmp_path / "idx"
    folder.mkdir()
    keep = torch.arange(100) * len(y) // 100  # the digits --max-eval 100 picks
    write_idx(folder / "t10k-images-idx3-ubyte.gz", (x[keep] * 255).round().reshape(-1, 28, 28))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y[keep])
    proc = cli("evaluate", "--checkpoint", out / "best.pt", "--dataset", "mnist",
               "--data-dir", folder)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    trial = json.loads((out / "results.json").read_text())["trials"][0]
    assert res["n"] == 100 and res["dataset"] == "mnist"
    # the same 100 digits as the embedded test split (8-bit rounding aside)
    assert res["accuracy"] == pytest.approx(trial["test_accuracy"], abs=0.03)
    in_process(capsys, "evaluate", "--checkpoint", out / "best.pt", "--dataset", "mnist",
               "--data-dir", tmp_path / "nothing", needles=["t10k-images-idx3-ubyte"])


@pytest.mark.parametrize("dataset, steps", [("mnist", "30"), ("nmnist-sim", "40")])
def test_conv_network_trains_and_evaluates(tmp_path, dataset, steps):
    """--arch conv: LIF convolutions on 1x28x28 images and 2x34x34 events, then evaluate."""
    out = tmp_path / "conv"
    proc = cli("train", "--arch", "conv", "--channels", "4", "8", "--dataset", dataset,
               "--num-steps", steps, "--max-train", "64", "--max-eval", "32", "--epochs", "1",
               "--quiet", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = common.load_checkpoint(out / "best.pt")
    types = [l["type"] for l in ckpt["layers"]]
    assert types == ["Unflatten", "LIFConv2d", "LIFConv2d", "Flatten", "LIFLayer"]
    shape = (1, 28, 28) if dataset == "mnist" else (2, 34, 34)
    assert ckpt["layers"][0]["shape"] == list(shape)
    assert ckpt["state_dict"]["layers.1.weight"].shape == (4, shape[0], 5, 5)
    res = json.loads((out / "results.json").read_text())
    assert res["trials"][0]["test_n"] == 32
    ev = cli("evaluate", "--checkpoint", out / "best.pt", "--max-eval", "32")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["accuracy"] == res["trials"][0]["test_accuracy"]
