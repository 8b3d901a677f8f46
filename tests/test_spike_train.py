"""`antlr-snn spike-train` (Sec. 4.1, Fig. 6) and the Sec. 3.4 core check."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from antlr_snn import losses
from antlr_snn.experiments import spike_train as st
from antlr_snn.layers import SpikeOutput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_thread")



def _out(S, requires_grad=True):
    d = torch.zeros_like(S, requires_grad=requires_grad)
    return SpikeOutput(S, d, torch.zeros_like(S))


@pytest.mark.parametrize("kd", ["backward", "continuous"])
def test_per_trial_loss_is_the_library_loss(kd):
    g = torch.Generator().manual_seed(0)
    T, R, B, N = 40, 3, 2, 4
    S = torch.bernoulli(torch.full((T, R, B, N), 0.1), generator=g).requires_grad_()
    tgt = torch.bernoulli(torch.full((T, R, B, N), 0.1), generator=g)
    o1, o2 = _out(S), _out(S)
    mine = st.spike_train_loss_per_trial(o1, tgt, 5.0, kd)
    ref = losses.spike_train_loss(o2, tgt, 5.0, kappa_derivative=kd)
    assert mine.shape == (R,)
    torch.testing.assert_close(mine.sum(), ref * R)
    gs1, gd1 = torch.autograd.grad(mine.sum(), (S, o1.shift))
    gs2, gd2 = torch.autograd.grad(ref * R, (S, o2.shift))
    torch.testing.assert_close(gs1, gs2)
    torch.testing.assert_close(gd1, gd2)


def test_kappa_options_change_only_the_timing_gradient():
    g = torch.Generator().manual_seed(1)
    S = torch.bernoulli(torch.full((30, 2, 1, 3), 0.15), generator=g).requires_grad_()
    tgt = torch.bernoulli(torch.full((30, 2, 1, 3), 0.15), generator=g)
    vals, grads_s = [], []
    for kd in st.KAPPA_DERIVATIVES:
        o = _out(S)
        loss = st.spike_train_loss_per_trial(o, tgt, 5.0, kd)
        vals.append(loss.detach())
        grads_s.append(torch.autograd.grad(loss.sum(), S)[0])
    for v, gs in zip(vals[1:], grads_s[1:]):
        torch.testing.assert_close(v, vals[0])
        torch.testing.assert_close(gs, grads_s[0])


@pytest.mark.parametrize("t_out,t_tar", [(20, 30), (30, 20), (25, 26), (26, 25), (10, 50)])
def test_continuous_timing_gradient_is_the_van_rossum_derivative(t_out, t_tar):
    """One output and one target spike: dL/dt_o = sign(t_o - t_tar) exp(-|t_o - t_tar| / tau)."""
    T, tau = 60, 5.0
    S = torch.zeros(T, 1, 1, 1)
    S[t_out] = 1
    tgt = torch.zeros_like(S)
    tgt[t_tar] = 1
    o = _out(S)
    st.spike_train_loss_per_trial(o, tgt, tau, "continuous").sum().backward()
    delta = t_out - t_tar
    expected = math.copysign(1.0, delta) * math.exp(-abs(delta) / tau)
    assert o.shift.grad[t_out].item() == pytest.approx(expected, rel=1e-5)
    # Table 1's literal backward difference pulls even a late spike later (the wrong sign)
    o2 = _out(S)
    st.spike_train_loss_per_trial(o2, tgt, tau, "backward").sum().backward()
    if delta > 0:
        assert o2.shift.grad[t_out].item() < 0 < expected


def test_trial_patterns_follow_the_description():
    cfg = st.TaskConfig(outputs=5, target_spikes=3, num_steps=60)
    p = st.make_problem(cfg, range(4))
    assert p.inputs.shape == (60, 4, 1, 10) and p.targets.shape == (60, 4, 1, 5)
    assert (p.inputs.sum(0) == 3).all() and (p.targets.sum(0) == 3).all()
    steps = p.targets.nonzero()[:, 0]
    assert steps.min() >= 15 and steps.max() < 45
    w0 = p.init[0][0]
    assert w0.abs().max() <= 3.0 / math.sqrt(10) + 1e-6 and w0.abs().max() > 0.8
    assert not torch.equal(p.inputs[:, 0], p.inputs[:, 1])  # trials differ


def test_trial_results_do_not_depend_on_the_other_replicas():
    cfg = st.TaskConfig(outputs=2, num_steps=30, hidden=(20, 20))
    both = st.train_method(cfg, st.make_problem(cfg, [0, 1, 2]), "antlr", 12, show_progress=False)
    alone = st.train_method(cfg, st.make_problem(cfg, [2]), "antlr", 12, show_progress=False)
    np.testing.assert_allclose(both.curves[:, 2], alone.curves[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both.params[0][2], alone.params[0][0], rtol=1e-4, atol=1e-6)


def _train_to_zero_library_loss(trial, max_iterations):
    """Sec. 3.4 as the core library does it: losses.spike_train_loss, Adam 1e-2, no clipping."""
    cfg = st.TaskConfig(outputs=1, target_spikes=1)
    p = st.make_problem(cfg, [trial])
    net = st.build_network(cfg, "antlr", p.init)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for it in range(max_iterations):
        loss = losses.spike_train_loss(net(p.inputs), p.targets, tau=5.0)
        if loss.item() == 0.0:
            return it
        opt.zero_grad()
        loss.backward()
        opt.step()
    return None


def test_sec34_antlr_trains_10_50_50_1_to_zero_loss():
    """Core check of Sec. 3.4: ANTLR reaches exactly zero spike-train loss (library loss)."""
    it = _train_to_zero_library_loss(trial=1, max_iterations=1000)
    assert it is not None and it > 0


def _run_cli(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "antlr_snn", "spike-train", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "st"
    iters = 6
    r = _run_cli(["--iterations", str(iters), "--trials", "3", "--outputs", "2", "--steps", "30",
                  "--hidden", "20", "20", "--methods", "antlr,activation,timing", "--quiet",
                  "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("curve.csv", "curves.npz", "loss_curve.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "curve.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:4] == ["iteration", "antlr", "activation", "timing"]
    assert [int(r_[0]) for r_ in rows[1:]] == list(range(iters + 1))
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True and res["config"]["trials"] == 3
    curves = np.load(out / "curves.npz")
    for k, m in enumerate(("antlr", "activation", "timing")):
        s = res["methods"][m]
        assert len(s["final_loss_per_trial"]) == 3
        assert 0.0 <= s["zero_fraction"] <= 1.0 and s["mean_loss_over_run"] >= 0
        assert math.isfinite(s["final_loss"]["mean"]) and s["final_loss"]["mean"] >= 0
        assert float(rows[-1][1 + k]) == pytest.approx(s["final_loss"]["mean"], rel=1e-5)
        assert curves[m].shape == (iters + 1, 3)
        np.testing.assert_allclose(curves[m][-1], s["final_loss_per_trial"], rtol=1e-6)
    # every method starts from the same trials and initial weights
    assert float(rows[1][1]) == float(rows[1][2]) == float(rows[1][3])
    # the reported ordering lists the methods by their reported mean final loss
    names = res["ordering_by_final_loss"].replace("=", "<").replace(" ", "").split("<")
    assert sorted(names) == ["activation", "antlr", "timing"]
    finals = [res["methods"][m]["final_loss"]["mean"] for m in names]
    assert finals == sorted(finals)
    for sep, (a, b) in zip(res["ordering_by_final_loss"].split()[1::2], zip(finals, finals[1:])):
        assert (sep == "=") == (a == b)


@pytest.mark.parametrize("bad", [["--target-spikes", "40", "--steps", "30"],
                                 ["--iterations", "0"], ["--lr", "-1"],
                                 ["--method-lr", "nosuch=1e-3"]])
def test_cli_user_errors_are_one_line(bad, tmp_path, capsys):
    from antlr_snn import cli
    assert cli.main(["spike-train", *bad, "--quiet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("antlr-snn spike-train: error:")
