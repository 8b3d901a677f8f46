"""Two runs, one folder: a run holds an exclusive lock on its folder; automatic names never
collide; a killed run's lock does not block --resume; spike-train and landscape refuse a
folder holding a run unless --overwrite; a failed start leaves no folder behind.

The concurrency tests use real processes (a run paused inside its first training step).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from antlr_snn import rundir
from antlr_snn.cli import main
from antlr_snn.errors import UserError

from cli_harness import ENV, PAUSING_CLI, TINY  # noqa: E402


def paused_run(out, step=3, *extra, cwd=None):
    """A `train` process paused after step ``step``, holding its folder's lock."""
    args = [*TINY, *extra] + ([] if out is None else ["--out", str(out)])
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, str(step), "train", *args],
                            env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("PAUSED"):
            return proc, lines
    pytest.fail(f"run ended (rc {proc.wait()}) without pausing: {proc.stderr.read()[-2000:]}")


def stop(proc, sig=signal.SIGKILL):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, err


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "antlr_snn", *map(str, args)], env=ENV,
                          cwd=cwd, capture_output=True, text=True, timeout=240)


def both(*commands):
    """Run the commands at the same time; their CompletedProcess-like results."""
    procs = [subprocess.Popen([sys.executable, "-m", "antlr_snn", *map(str, c)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def one_line(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    for n in needles:
        assert str(n) in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- the lock

def test_a_second_run_on_a_locked_folder_is_refused_and_a_killed_one_can_resume(tmp_path):
    out = tmp_path / "run"
    first, lines = paused_run(out)
    try:
        assert lines[0].strip() == f"run folder: {out}"  # printed at the start of the run
        metrics = (out / "metrics.jsonl").read_bytes() if (out / "metrics.jsonl").exists() else b""
        t0 = time.time()
        second, resumed = both(("train", *TINY, "--out", out), ("train", "--resume", "--out", out))
        line = one_line(second, out, "in use by another run", f"process {first.pid}")
        assert one_line(resumed, out, f"process {first.pid}") == line
        assert time.time() - t0 < 60  # refused at once, not after training
        assert not (out / "results.json").exists()
        assert ((out / "metrics.jsonl").read_bytes() if (out / "metrics.jsonl").exists()
                else b"") == metrics  # the refused runs wrote nothing
    finally:
        stop(first, signal.SIGKILL)
    assert (out / rundir.LOCK_NAME).exists()  # a killed run leaves the file, not the lock
    done = cli("train", "--resume", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["trials"][0]["test_n"] == 16
    assert not (out / rundir.LOCK_NAME).exists()  # a run that ends removes it


def test_automatic_names_never_collide(tmp_path):
    """Three processes make their folders at the same instant with the same clock time."""
    script = textwrap.dedent(f"""
        import sys, time
        from antlr_snn import rundir
        rundir.time.strftime = lambda fmt: "20260101-000000"  # every process: the same second
        while time.time() < {time.time() + 2.5}:
            pass
        with rundir.RunFolder(None, "runs/train") as run:
            run.commit(announce=False)
            print(run.path, flush=True)
            time.sleep(1)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    paths = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        paths.append(out.strip())
    assert sorted(paths) == ["runs/train-20260101-000000", "runs/train-20260101-000000-2",
                             "runs/train-20260101-000000-3"]
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(os.path.basename(p) for p in paths)


def test_a_run_without_out_gets_its_own_folder_and_prints_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    (tmp_path / "runs" / "train-20260101-000000").mkdir(parents=True)  # another run's, now
    assert main(["train", *TINY]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run folder: runs/train-20260101-000000-2"
    assert (tmp_path / "runs" / "train-20260101-000000-2" / "results.json").exists()
    assert os.listdir(tmp_path / "runs" / "train-20260101-000000") == []


def test_lock_refusal_names_the_holder():
    with rundir.RunFolder(None, os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                             f"lock-test-{os.getpid()}")) as run:
        with pytest.raises(UserError, match=f"in use by another run \\(process {os.getpid()}\\)"):
            rundir.RunFolder(run.path, "x").open()
        run.commit(announce=False)
    assert not os.path.exists(os.path.join(run.path, rundir.LOCK_NAME))
    os.rmdir(run.path)


# ----------------------------------------------------------------------------- spike-train, landscape

ST = ["spike-train", "--iterations", "2", "--trials", "2", "--steps", "30", "--hidden", "10",
      "10", "--outputs", "2", "--quiet"]


def test_spike_train_refuses_a_folder_holding_a_run_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "st"
    assert main([*ST, "--out", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main([*ST, "--seed", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} already holds a run" in err[0] and "--overwrite" in err[0]
    assert json.loads((out / "results.json").read_text()) == first  # untouched
    (out / "loss_curve.png").unlink()  # a file the new run would not rewrite is not mixed in
    (out / "curves.npz").write_bytes(b"old run")
    assert main([*ST, "--methods", "antlr", "--seed", "5", "--overwrite", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["seed"] == 5 and list(res["methods"]) == ["antlr"]
    assert (out / "curves.npz").read_bytes()[:2] == b"PK"


def test_landscape_refuses_a_folder_holding_a_run(tmp_path, capsys):
    out = tmp_path / "land"
    out.mkdir()
    (out / "results.json").write_text('{"experiment": "landscape"}\n')
    assert main(["landscape", "--grid", "5", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--overwrite" in err[0]
    assert (out / "results.json").read_text() == '{"experiment": "landscape"}\n'


def test_spike_train_on_a_locked_folder(tmp_path, capsys):
    with rundir.RunFolder(str(tmp_path / "st"), "x") as run:
        assert main([*ST, "--out", run.path]) == 2
    err = capsys.readouterr().err
    assert "in use by another run" in err and f"process {os.getpid()}" in err


# ----------------------------------------------------------------------------- failed starts

@pytest.mark.parametrize("flags, needle", [
    (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),          # missing data
    (["--hidden", "2000000000"], "not enough memory"),                     # does not fit
    (["--batch-size", "4096", "--num-steps", "20000"], "not enough memory"),
])
@pytest.mark.parametrize("named", [True, False])
def test_a_failed_start_leaves_no_folder(tmp_path, monkeypatch, capsys, flags, needle, named):
    monkeypatch.chdir(tmp_path)
    out = ["--out", "deep/er/run"] if named else []
    assert main(["train", "--epochs", "1", "--quiet", *flags, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert os.listdir(tmp_path) == []  # not even runs/ or deep/


def test_a_corrupt_data_file_leaves_no_folder(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x00\x00\x08\x03garbage")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(folder), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_failed_start_in_an_existing_folder_leaves_it_as_it_was(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's file")
    assert main(["train", *TINY, "--hidden", "2000000000", "--out", str(out)]) == 2
    assert sorted(os.listdir(out)) == ["notes.txt"]
