"""What a user sees when a run starts, compiles, shows progress and is stopped with Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np

from antlr_snn.experiments import common
from antlr_snn.experiments import spike_train as st

from cli_harness import ENV, PAUSING_CLI, TINY, as_from_a_terminal  # noqa: E402




def test_ctrl_c_prints_the_folder_and_the_exact_resume_command(tmp_path):
    out = tmp_path / "my run"  # a name that needs quoting
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, "3", "train", *TINY, "--out",
                             str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=as_from_a_terminal)
    try:
        first = proc.stdout.readline()
        assert first == f"run folder: {out}\n"  # every run says where it writes, at once
        assert proc.stdout.readline().startswith("PAUSED")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    command = f"antlr-snn train --resume --out {shlex.quote(str(out))}"
    assert lines[0] == f"antlr-snn train: interrupted; the run is in {out}; continue it with: " \
                       f"{command}"
    # the printed command does continue the run (run as `python -m antlr_snn`)
    argv = shlex.split(lines[0].split("continue it with: ")[1])
    assert argv[:2] == ["antlr-snn", "train"]
    done = subprocess.run([sys.executable, "-m", "antlr_snn", *argv[1:]], env=ENV,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["trials"][0]["test_n"] == 16


def test_ctrl_c_in_spike_train_says_where_the_run_is(tmp_path):
    script = ("import sys, time\n"
              "from antlr_snn.experiments import spike_train as st\n"
              "train = st.train_method\n"
              "def slow(*a, **k):\n"
              "    res = train(*a, **k)\n"
              "    print('PAUSED', flush=True); time.sleep(3600)\n"
              "st.train_method = slow\n"
              "from antlr_snn.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "st"
    proc = subprocess.Popen([sys.executable, "-c", script, "spike-train", "--iterations", "2",
                             "--trials", "2", "--steps", "30", "--hidden", "10", "10",
                             "--outputs", "2", "--quiet", "--out", str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    try:
        assert proc.stdout.readline() == f"run folder: {out}\n"
        assert proc.stdout.readline().startswith("PAUSED")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip() == (f"antlr-snn spike-train: interrupted; the run is in {out} (this "
                           f"command cannot continue a run: start it again with --overwrite "
                           f"--out {out})")


def test_a_slow_kernel_warm_up_is_announced(capsys, monkeypatch):
    """Announced only when it takes long (a cold numba cache), and then while it happens."""
    assert common.warm_up_kernels(["antlr"], 12, announce=True, after=30.0)  # fast: silent
    assert capsys.readouterr().err == ""
    import antlr_snn.network as network
    forward, seen = network.SpikingNetwork.forward, []

    def slow_forward(self, x):  # as numba compiling: the notice is out before it ends
        import time
        time.sleep(0.3)
        seen.append(sys.stderr.getvalue() if hasattr(sys.stderr, "getvalue") else "")
        return forward(self, x)
    monkeypatch.setattr(network.SpikingNetwork, "forward", slow_forward)
    assert common.warm_up_kernels(["bptt", "antlr"], 12, replicas=2, after=0.1,
                                  command="antlr-snn spike-train")
    err = capsys.readouterr().err
    assert err == f"antlr-snn spike-train: {common.COMPILING}\n"
    assert common.COMPILING in seen[0]
    from antlr_snn import kernels
    with kernels.use_backend("reference"):  # nothing is compiled: nothing to warm up
        assert not common.warm_up_kernels(["antlr"], 12, after=0.0)


def test_a_cold_kernel_cache_is_announced(tmp_path):
    """A fresh numba cache: the first run compiles for 10-20 s and says so."""
    proc = subprocess.run([sys.executable, "-m", "antlr_snn", "spike-train", "--iterations", "2",
                           "--trials", "2", "--steps", "30", "--hidden", "10", "10",
                           "--outputs", "2", "--methods", "antlr", "--out", str(tmp_path / "st")],
                          env={**ENV, "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"antlr-snn spike-train: {common.COMPILING}\n")
    assert os.listdir(tmp_path / "numba")  # it did compile into that cache


def test_the_spike_train_bar_ends_with_the_final_loss(capsys):
    cfg = st.TaskConfig(outputs=2, num_steps=30, hidden=(10, 10))
    res = st.train_method(cfg, st.make_problem(cfg, [0, 1]), "antlr", 57, show_progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    shown = re.search(r"loss=([0-9.e+-]+)", bar)
    assert shown, bar
    assert shown.group(1) == f"{np.float64(res.final).mean():.3g}"  # not the step-50 value
    assert "57/57" in bar
