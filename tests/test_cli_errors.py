"""User errors of the CLI: one line `antlr-snn CMD: error: ...`, exit status 2, no traceback.

Damaged checkpoints and run files, worker-process errors, too big networks, mismatched data
files and out-of-range flags. Everything runs in process on tiny runs (a few seconds in all).
"""
from __future__ import annotations

import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from antlr_snn.cli import main
from antlr_snn.errors import UserError
from antlr_snn.experiments import common

TINY = ["--hidden", "20", "--num-steps", "30", "--max-train", "32", "--max-eval", "16",
        "--epochs", "1", "--quiet"]


def fails(capsys, *args, needles=()):
    """Run the CLI in process: exit 2 with one `error:` line holding every needle."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err[-2000:])
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error: " in lines[0]
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny training run (config.json, metrics.jsonl, checkpoint.pt, best.pt)."""
    out = tmp_path_factory.mktemp("run") / "ref"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


# ----------------------------------------------------------------------------- 1. worker errors

class FailingEvents(torch.utils.data.Dataset):
    """An event data set whose samples after the first are unreadable (a damaged .bin)."""

    def __init__(self, n=32, steps=30):
        self.n, self.steps = n, steps

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i > 0:
            raise UserError(f"/data/Train/3/{i:05d}.bin: length 248 bytes is not a multiple of 5")
        return torch.zeros(self.steps, 2312, dtype=torch.uint8), 0


def test_worker_error_gives_the_original_message(monkeypatch, tmp_path, capsys):
    import antlr_snn.data
    monkeypatch.setattr(antlr_snn.data, "load_dataset", lambda *a, **k: FailingEvents())
    line = fails(capsys, "train", "--dataset", "nmnist-sim", *TINY, "--workers", "1",
                 "--out", tmp_path / "x", needles=["/data/Train/3/", "not a multiple of 5"])
    assert "DataLoader worker" not in line and "ValueError" not in line


def test_split_batches_unwraps_worker_errors():
    from antlr_snn.data.splits import Split
    split = Split(FailingEvents(), num_steps=30)
    with pytest.raises(ValueError) as exc:
        list(split.batches([torch.arange(4)], workers=1))
    assert str(exc.value) == "/data/Train/3/00001.bin: length 248 bytes is not a multiple of 5"


def test_one_line_keeps_plain_messages():
    assert common.one_line(ValueError("a\nb")) == "a"
    assert common.one_line(KeyError()) == "KeyError"


# ----------------------------------------------------------------------------- 2. --device cuda

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_device_cuda_without_cuda(run_dir, capsys):
    fails(capsys, "evaluate", "--checkpoint", run_dir / "best.pt", "--device", "cuda",
          needles=["--device cuda", "no CUDA device"])


# ----------------------------------------------------------------------------- 3. checkpoint keys

def _damaged(run_dir, tmp_path, change, name="best.pt"):
    ckpt = common.load_checkpoint(run_dir / name)
    change(ckpt)
    path = tmp_path / name
    common.save_checkpoint(path, ckpt)  # with a valid checksum: the keys are what is wrong
    return path


@pytest.mark.parametrize("change, needles", [
    (lambda c: c.pop("method"), ["lacks 'method'"]),
    (lambda c: c.pop("layers"), ["lacks 'layers'"]),
    (lambda c: c.update(decision="foo"), ["bad 'decision'", "'foo'"]),
    (lambda c: c.update(t_max="x"), ["bad 't_max'", "positive integer"]),
    (lambda c: c.update(num_steps=2.5), ["bad 'num_steps'"]),
    (lambda c: c.update(layers="abc"), ["bad 'layers'"]),
    (lambda c: c.update(format="antlr-snn/1"), ["another version of antlr-snn", "antlr-snn/1"]),
    (lambda c: c.update(method="hebb"), ["bad 'method'", "antlr"]),
    (lambda c: c["layers"][0]["neuron"].update(alpha_v=5.0), ["bad 'layers'", "alpha_v"]),
    (lambda c: c["layers"][0].update(type="LSTM"), ["bad 'layers'", "unknown type", "LSTM"]),
    (lambda c: c.update(dataset="cifar"), ["unknown data set 'cifar'"]),
    (lambda c: c["state_dict"]["layers.0.weight"].view(-1)[7].fill_(float("nan")),
     ["'layers.0.weight'", "NaN or infinite"]),
])
def test_evaluate_rejects_damaged_checkpoints(run_dir, tmp_path, capsys, change, needles):
    path = _damaged(run_dir, tmp_path, change)
    fails(capsys, "evaluate", "--checkpoint", path, "--max-eval", "4",
          needles=[str(path), *needles])


def test_resume_from_a_model_only_checkpoint(run_copy, capsys):
    shutil.copy(run_copy / "best.pt", run_copy / "checkpoint.pt")
    fails(capsys, "train", "--resume", "--out", run_copy,
          needles=[run_copy / "checkpoint.pt", "lacks 'optimizer'", "needed to resume"])


@pytest.mark.parametrize("change, needles", [
    (lambda c: c["state"].pop("global_step"), ["'state' entry 'global_step'"]),
    (lambda c: c["state"].update(epoch="1"), ["bad 'state' entry 'epoch'"]),
    (lambda c: c.update(scheduler=[1]), ["bad 'scheduler'"]),
    (lambda c: c.pop("rng"), ["lacks 'rng'"]),
    (lambda c: c["optimizer"]["param_groups"].append(dict(c["optimizer"]["param_groups"][0])),
     ["cannot be resumed"]),
])
def test_resume_rejects_damaged_checkpoints(run_copy, capsys, change, needles):
    _damaged(run_copy, run_copy, change, name="checkpoint.pt")
    fails(capsys, "train", "--resume", "--out", run_copy,
          needles=[run_copy / "checkpoint.pt", *needles])


# ----------------------------------------------------------------------------- 4. --num-steps 0

@pytest.mark.parametrize("flags", [["--num-steps", "0"], ["--num-steps", "-3"],
                                   ["--max-eval", "0"]])
def test_evaluate_rejects_non_positive_counts(run_dir, capsys, flags):
    fails(capsys, "evaluate", "--checkpoint", run_dir / "best.pt", *flags,
          needles=[f"{flags[0]} must be a positive integer, got {flags[1]}"])


# ----------------------------------------------------------------------------- 5. out of memory

def test_too_big_network_fails_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "big"
    fails(capsys, "train", "--epochs", "1", "--hidden", "2000000000", "--quiet", "--out", out,
          needles=["not enough memory", "784-2000000000-10"])
    assert not (out / "config.json").exists()
    # the folder is not taken: a fitting network can run there now
    assert main(["train", *TINY, "--out", str(out)]) == 0


def test_failed_allocation_names_the_network(tmp_path, capsys, monkeypatch):
    import antlr_snn.topology as topology

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 6272000000 bytes. "
                           "Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr(topology, "network_from_spec", no_memory)
    out = tmp_path / "x"
    fails(capsys, "train", *TINY, "--out", out,
          needles=["784-20-10 network", "tried to allocate 6272000000 bytes"])
    assert not (out / "config.json").exists()


def test_out_of_memory_elsewhere_is_one_line(tmp_path, capsys, monkeypatch):
    import antlr_snn.experiments.train as train

    def no_memory(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(train, "train_trial", no_memory)
    fails(capsys, "train", *TINY, "--out", tmp_path / "x", needles=["out of memory"])


def test_other_runtime_errors_keep_their_traceback(tmp_path, monkeypatch):
    import antlr_snn.experiments.train as train

    def bug(*args, **kwargs):
        raise RuntimeError("an internal bug")
    monkeypatch.setattr(train, "train_trial", bug)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["train", *TINY, "--out", str(tmp_path / "x")])


# ----------------------------------------------------------------------------- 6. damaged run files

@pytest.mark.parametrize("text, needles", [
    ("[1, 2]", ["not a run configuration", "list"]),
    ("{bad", ["is not valid JSON"]),
    ("\xff\xfe", ["is not valid JSON"]),
])
def test_resume_with_a_damaged_config(run_copy, capsys, text, needles):
    (run_copy / "config.json").write_text(text, encoding="latin-1")
    fails(capsys, "train", "--resume", "--out", run_copy,
          needles=[run_copy / "config.json", *needles])


@pytest.mark.parametrize("key, value, needles", [
    ("hidden", "abc", ['bad "hidden"', "'abc'"]),
    ("lr", "fast", ['bad "lr"']),
    ("single_spike", 1, ['bad "single_spike"']),
    ("lr_step", 0, ['bad "lr_step"']),
    ("hidden", [0], ["--hidden sizes must be positive"]),
    ("method", "hebb", ["unknown method 'hebb'"]),
])
def test_resume_with_bad_config_values(run_copy, capsys, key, value, needles):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg[key] = value
    (run_copy / "config.json").write_text(json.dumps(cfg))
    fails(capsys, "train", "--resume", "--out", run_copy,
          needles=[run_copy / "config.json", *needles])


def _unfinish(run_dir, metrics_text):
    """Make the run look stopped after epoch 1 of 2, with ``metrics_text`` as its log."""
    (run_dir / "metrics.jsonl").write_text(metrics_text)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["epochs"] = 2
    (run_dir / "config.json").write_text(json.dumps(cfg))
    ckpt = common.load_checkpoint(run_dir / "checkpoint.pt")
    ckpt["state"].update(finished=False, result=None,
                         metrics_bytes=len(metrics_text.encode()))
    common.save_checkpoint(run_dir / "checkpoint.pt", ckpt)


@pytest.mark.parametrize("bad_line, needles", [
    ("garbage", ["line 1: not a JSON object"]),
    ("[1, 2]", ["line 1: not a JSON object"]),
])
def test_resume_with_a_damaged_metrics_log(run_copy, capsys, bad_line, needles):
    good = (run_copy / "metrics.jsonl").read_text()
    _unfinish(run_copy, bad_line + "\n" + good)
    fails(capsys, "train", "--resume", "--out", run_copy,
          needles=[run_copy / "metrics.jsonl", *needles])


def test_metrics_record_without_plotted_keys(tmp_path):
    from antlr_snn.experiments.train import read_metrics
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "train_loss": null}\n')
    with pytest.raises(ValueError, match="metrics.jsonl: record 1 lacks 'train_accuracy'"):
        read_metrics(str(path))


# ----------------------------------------------------------------------------- 7. split sizes

def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_idx_train_and_test_images_of_different_sizes(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((60, 10, 10)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    out = tmp_path / "x"
    fails(capsys, "train", *TINY, "--dataset", "mnist", "--data-dir", folder, "--out", out,
          needles=["different input sizes", "train 100", "test 784", str(folder)])
    assert not (out / "config.json").exists()


# ----------------------------------------------------------------------------- 8. small flags

@pytest.mark.parametrize("command", ["spike-train", "landscape"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_seed_out_of_range(tmp_path, capsys, command, seed):
    out = tmp_path / "x"
    fails(capsys, command, "--seed", seed, "--out", out,
          needles=["--seed must be in [0, 2**32 - 1]", seed])
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "spike-train", "landscape"])
def test_empty_out_is_refused(capsys, command):
    fails(capsys, command, "--out", "", needles=["empty", "--out"])


def test_nmnist_sim_takes_no_data_dir(run_dir, tmp_path, capsys):
    fails(capsys, "train", *TINY, "--dataset", "nmnist-sim", "--data-dir", tmp_path,
          "--out", tmp_path / "x", needles=["nmnist-sim", "no data folder"])
    fails(capsys, "evaluate", "--checkpoint", run_dir / "best.pt", "--dataset", "nmnist-sim",
          "--data-dir", tmp_path, needles=["nmnist-sim", "no data folder"])
