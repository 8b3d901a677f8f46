"""A full disk, on a real small file system: every write fails with one line naming the file and
"no space left" (exit status 2) and leaves the last good files intact.

Each test mounts its own small tmpfs (skipped where mounting is not allowed: it needs root or
CAP_SYS_ADMIN). Nothing is faked: the ENOSPC comes from the kernel, through torch's zip
writer, matplotlib, the JSON and CSV writers and the metrics log.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from antlr_snn import cli
from antlr_snn.cli import main
from antlr_snn.experiments import common


@pytest.fixture
def small_fs(tmp_path):
    """``make(kib)`` mounts a tmpfs of that size and returns its folder; ``resize(dir, kib)``."""
    mounts = []

    def mount(*args):
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small file system for the full-disk tests")
        proc = subprocess.run(["mount", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not allowed here ({proc.stderr.strip()}); the "
                        f"full-disk tests need root or CAP_SYS_ADMIN")

    def make(kib):
        folder = tmp_path / f"fs{len(mounts)}"
        folder.mkdir()
        mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder))
        mounts.append(folder)
        return folder

    def resize(folder, kib):
        mount("-o", f"remount,size={kib}k", str(folder))

    make.resize = resize
    yield make
    for folder in reversed(mounts):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder) -> int:
    """Fill the file system of ``folder`` completely with a filler file; its size."""
    chunk = b"\0" * 65536
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as fh:
        for block in (chunk, chunk[:4096], b"\0"):
            while True:
                try:
                    fh.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return os.path.getsize(os.path.join(folder, "filler"))


def no_space(exc_info, path):
    assert exc_info.value.errno == errno.ENOSPC
    assert exc_info.value.filename == str(path)  # the file being written, not a temporary
    line = cli.user_message(exc_info.value)
    assert "no space left" in line and str(path) in line and "\n" not in line


def leftovers(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


# ----------------------------------------------------------------------------- each writer

def _figure():
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 3))
    fig.add_subplot(111).plot(range(100), [i * i for i in range(100)])
    return fig


WRITERS = {
    "checkpoint.pt": (lambda p, k: common.save_checkpoint(p, {"w": torch.full((20000,), k)}),
                      lambda p: common.load_checkpoint(p)["w"][0].item()),
    "results.json": (lambda p, k: common.atomic_write_json(p, {"k": k, "pad": "x" * 20000}),
                     lambda p: json.loads(open(p).read())["k"]),
    "curve.csv": (lambda p, k: common.write_csv(p, [[k, i] for i in range(3000)], ["k", "i"]),
                  lambda p: int(open(p).read().splitlines()[1].split(",")[0])),
    "curves.png": (lambda p, k: common.save_figure(_figure(), p, dpi=40 + 40 * k),
                   lambda p: os.path.getsize(p)),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_failed_write_names_the_file_and_keeps_the_old_one(small_fs, name):
    folder = small_fs(2048)
    path = folder / name
    write, read = WRITERS[name]
    write(path, 1)
    before, old = path.read_bytes(), read(path)
    fill(folder)
    with pytest.raises(OSError) as exc_info:
        write(path, 2)
    no_space(exc_info, path)
    assert path.read_bytes() == before and read(path) == old
    assert leftovers(folder) == []


def test_torch_zip_writer_on_a_full_disk_is_an_oserror(small_fs):
    """The reason for serialising in memory: torch.save straight into a file on a full disk
    raises a RuntimeError ('unexpected pos') that hides the ENOSPC."""
    folder = small_fs(1024)
    fill(folder)
    with pytest.raises(RuntimeError, match="unexpected pos|PytorchStreamWriter"):
        torch.save({"w": torch.zeros(100000)}, folder / "direct.pt")
    os.unlink(folder / "direct.pt")
    with pytest.raises(OSError) as exc_info:
        common.save_checkpoint(folder / "ours.pt", {"w": torch.zeros(100000)})
    no_space(exc_info, folder / "ours.pt")


def test_metrics_log_never_keeps_a_partial_line(small_fs):
    folder = small_fs(1024)
    log = common.JsonlLog(folder / "metrics.jsonl")
    log.append({"epoch": 1, "pad": "x" * 3980})  # ends 4 bytes... into the first page
    size = log.size()
    assert 4000 < size < 4096  # the page has room for part of the next line only
    before = (folder / "metrics.jsonl").read_bytes()
    fill(folder)
    with pytest.raises(OSError) as exc_info:
        log.append({"epoch": 2, "pad": "y" * 500})  # a short write, then ENOSPC
    no_space(exc_info, folder / "metrics.jsonl")
    assert (folder / "metrics.jsonl").read_bytes() == before
    assert [r["epoch"] for r in common.read_jsonl(log.path)] == [1]


# ----------------------------------------------------------------------------- every command

TRAIN = ["train", "--hidden", "100", "--num-steps", "30", "--batch-size", "8", "--max-train",
         "160", "--max-eval", "20", "--epochs", "1", "--checkpoint-every", "5", "--quiet"]


def one_line(capsys, code):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err[-3000:])
    assert "no space left" in lines[0]
    return lines[0]


def test_train_out_of_space_keeps_the_last_checkpoint_and_resumes(small_fs, capsys):
    """A 1.6 MB file system holds one ~1 MB checkpoint but not a second one beside it."""
    folder = small_fs(1600)
    out = folder / "run"
    line = one_line(capsys, main([*TRAIN, "--out", str(out)]))
    assert str(out / "checkpoint.pt") in line
    ckpt = common.load_checkpoint(out / "checkpoint.pt")  # intact: its checksum holds
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"]) == (0, 5)
    assert json.loads((out / "config.json").read_text())["hidden"] == [100]
    assert leftovers(out) == []
    small_fs.resize(folder, 8192)  # space freed: the run goes on where it stopped
    assert main([*TRAIN, "--resume", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trials"][0]["test_n"] == 20
    assert common.load_checkpoint(out / "checkpoint.pt")["state"]["finished"] is True


def test_spike_train_on_a_full_disk(small_fs, capsys):
    folder = small_fs(512)
    fill(folder)
    out = folder / "st"
    line = one_line(capsys, main(["spike-train", "--iterations", "3", "--trials", "2",
                                  "--steps", "30", "--hidden", "10", "10", "--outputs", "2",
                                  "--quiet", "--out", str(out)]))
    assert str(out / "curve.csv") in line  # its first file
    assert leftovers(out) == []


def test_landscape_on_a_full_disk(small_fs, capsys):
    folder = small_fs(512)
    fill(folder)
    out = folder / "land"
    line = one_line(capsys, main(["landscape", "--grid", "5", "--quiet", "--out", str(out)]))
    assert str(out / "landscape.npz") in line
    assert leftovers(out) == []
