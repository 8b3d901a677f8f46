"""Checkpoint integrity: every checkpoint carries a SHA-256 of its content, checked on load.

A real checkpoint of a tiny run with bytes flipped is refused by `evaluate` and `--resume` with
one line; random bytes, a JSON file, a pickle and a folder given as a checkpoint each get a line
of our own (never torch's advice to change `weights_only`, never a raw `[Errno 21]`).
"""
from __future__ import annotations

import hashlib
import io
import pickle
import shutil

import numpy as np
import pytest
import torch

from antlr_snn.cli import main
from antlr_snn.experiments import common
from antlr_snn.files import TRAILER_LEN

TINY = ["--hidden", "20", "--num-steps", "30", "--max-train", "32", "--max-eval", "16",
        "--epochs", "2", "--checkpoint-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ref"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def one_line(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err[-2000:])
    assert "weights_only" not in err and "Errno" not in err
    return lines[0]


def flip(path, count, seed):
    """Flip ``count`` random bytes of the torch.save part of ``path`` (not the checksum line)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(data) - TRAILER_LEN, size=count, replace=False):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_every_checkpoint_carries_the_sha256_of_its_content(run_dir):
    for name in ("checkpoint.pt", "best.pt"):
        data = (run_dir / name).read_bytes()
        payload, trailer = data[:-TRAILER_LEN], data[-TRAILER_LEN:]
        # computed here independently of antlr_snn.files
        assert trailer == b"antlr-snn-sha256:" + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        # torch.load reads the file as it is (the checksum line follows the zip archive)
        plain = torch.load(run_dir / name, weights_only=True)
        assert torch.equal(plain["state_dict"]["layers.0.weight"],
                           common.load_checkpoint(run_dir / name)["state_dict"]["layers.0.weight"])


@pytest.mark.parametrize("count, seed", [(1, 0), (50, 1), (1, 2)])
def test_flipped_bytes_are_refused_by_evaluate(run_dir, tmp_path, capsys, count, seed):
    bad = tmp_path / "best.pt"
    shutil.copy(run_dir / "best.pt", bad)
    flip(bad, count, seed)
    line = one_line(capsys, "evaluate", "--checkpoint", bad, "--max-eval", "4")
    assert str(bad) in line and "is damaged" in line and "SHA-256" in line


def test_flipped_bytes_are_refused_by_resume(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    flip(run / "checkpoint.pt", 50, 3)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = one_line(capsys, "train", "--resume", "--out", run)
    assert str(run / "checkpoint.pt") in line and "is damaged" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing changed


def test_a_changed_checksum_line_is_refused(run_dir, tmp_path, capsys):
    bad = tmp_path / "best.pt"
    data = bytearray((run_dir / "best.pt").read_bytes())
    data[-5] = ord("0") if data[-5] != ord("0") else ord("1")  # a digit of the checksum
    bad.write_bytes(bytes(data))
    assert "is damaged" in one_line(capsys, "evaluate", "--checkpoint", bad)


@pytest.mark.parametrize("content, needle", [
    (lambda run: np.random.default_rng(0).bytes(5000), "is not an antlr-snn checkpoint"),
    (lambda run: b'{"sizes": [784, 20, 10], "method": "antlr"}\n', "is a JSON file"),
    (lambda run: pickle.dumps({"state_dict": 1}), "is a Python pickle"),
    (lambda run: b"", "is an empty file"),
    (lambda run: (run / "best.pt").read_bytes()[:-TRAILER_LEN], "has no antlr-snn checksum"),
    (lambda run: (run / "best.pt").read_bytes()[:3000], "has no antlr-snn checksum"),
])
def test_foreign_files_get_a_line_of_our_own(run_dir, tmp_path, capsys, content, needle):
    path = tmp_path / "x.pt"
    path.write_bytes(content(run_dir))
    line = one_line(capsys, "evaluate", "--checkpoint", path)
    assert str(path) in line and needle in line, line


def test_a_folder_as_a_checkpoint(run_dir, capsys):
    line = one_line(capsys, "evaluate", "--checkpoint", run_dir)
    assert f"{run_dir} is a folder, not a checkpoint file" in line and "best.pt" in line


class Foreign:
    """Not a tensor or a plain type: torch's safe loader refuses to build it."""


def test_other_objects_with_a_valid_checksum_are_not_loaded(tmp_path, capsys):
    buf = io.BytesIO()
    torch.save({"obj": Foreign()}, buf)
    payload = buf.getvalue()
    path = tmp_path / "odd.pt"
    path.write_bytes(payload + b"antlr-snn-sha256:" + hashlib.sha256(payload).hexdigest().encode()
                     + b"\n")
    line = one_line(capsys, "evaluate", "--checkpoint", path)
    assert str(path) in line and "holds objects other than tensors" in line
