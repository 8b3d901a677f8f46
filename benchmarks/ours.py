"""This project's systems: the four methods on a fully connected network or a conv LIF layer,
on a chosen kernel backend; where an ANTLR step spends its time; the numba compile cost.

:class:`Ours` uses only the API that older checkouts share (``SpikingNetwork(sizes, ...)``,
the losses, ``kernels.use_backend``, ``training.adam``), so that ``--compare-with`` can run it
on an older checkout's code in a worker process.

    python -m benchmarks.ours --probe-compile   # (internal) first steps in a fresh process
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import DECAY, N_OUT, ROOT, System, config, conv_shape, make_batch


class Ours(System):
    """``method`` on a fully connected ``[n_in, *hidden, 10]`` network, or (``cfg["conv"]``)
    on ``LIFConv2d -> Flatten -> LIFLayer``; ``backend`` as ``kernels.use_backend`` takes it."""

    def __init__(self, cfg, device="cpu", method="antlr", backend="auto"):
        super().__init__(cfg, device)
        from antlr_snn import SpikingNetwork
        self.method, self.backend = method, backend
        torch.manual_seed(0)
        kw = dict(method=method, alpha_v=DECAY, alpha_i=DECAY)
        if cfg.get("conv"):
            from antlr_snn import Flatten, LIFConv2d, LIFLayer
            c, k, s = cfg["conv"]
            layers = [LIFConv2d(2, c, k, stride=s, device=self.device, **kw), Flatten(),
                      LIFLayer(int(np.prod(conv_shape(cfg))), N_OUT, device=self.device, **kw)]
            self.net = SpikingNetwork(layers)
        else:
            self.net = SpikingNetwork([cfg["n_in"], *cfg["hidden"], N_OUT], device=self.device,
                                      **kw)
        self.make_opt()

    def parameters(self):
        return self.net.parameters()

    def weights(self):
        return [m.weight for m in self.net.layers if hasattr(m, "weight")]

    def _backend(self):
        from antlr_snn import kernels
        return (contextlib.nullcontext() if self.backend == "auto"
                else kernels.use_backend(self.backend))

    def forward(self):
        with self._backend():
            out = self.net(self.x)
        return [lo.spikes for lo in out.layers]

    def loss_of(self, out):
        from antlr_snn import losses
        if self.method == "antlr":  # the paper's choice for ANTLR (Sec. 4.2)
            return (losses.latency_loss(out, self.labels)
                    + losses.at_least_one_spike_loss(out, self.labels))
        if self.method == "timing":  # latency loss plus the no-spike penalty (Sec. 4)
            return losses.latency_loss(out, self.labels) + losses.no_spike_penalty(self.net, out)
        target = torch.nn.functional.one_hot(self.labels, N_OUT).to(out.spikes.dtype)
        return losses.count_loss(out, target)  # activation and BPTT: count loss 1/0

    def step(self):
        with self._backend():
            self.opt.zero_grad()
            self.loss_of(self.net(self.x)).backward()
            self.opt.step()

    def infer(self):
        with torch.no_grad(), self._backend():
            return self.net(self.x).spikes


def exactness(cfg: dict, scales, device="cpu", fast="auto") -> tuple:
    """Backend ``fast`` against the reference on the benchmark batch: spikes identical? the
    relative difference of the first layer's weight gradient."""
    res = {}
    for backend in (fast, "reference"):
        s = Ours(cfg, device, "antlr", backend)
        s.set_scales(scales)
        s.opt.zero_grad()
        with s._backend():
            out = s.net(s.x)
            s.loss_of(out).backward()
        res[backend] = ([lo.spikes.detach() for lo in out.layers], s.weights()[0].grad.clone())
    (a, ga), (r, gr) = res[fast], res["reference"]
    same = all(torch.equal(u, v) for u, v in zip(a, r))
    return same, ((ga - gr).norm() / gr.norm().clamp_min(1e-30)).item()


def breakdown(system: Ours, steps: int = 15) -> tuple:
    """Median ms of each phase of an ANTLR step and of the backend's calls (CPU)."""
    import collections

    from antlr_snn import kernels, losses
    from antlr_snn.kernels import ops
    acc = collections.defaultdict(float)
    undo = []

    def wrap(obj, name, label):
        f = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t0
        setattr(obj, name, timed)
        undo.append((obj, name, f))

    be = kernels.backend_for(system.x)
    wrap(ops, "require_binary", "input validation (binary check)")
    for name, label in (("dense_forward", "projection + Eq. 1-3 (dense_forward)"),
                        ("dense_backward", "weight and input gradients (dense_backward)"),
                        ("lif_forward", "Eq. 1-3 on a current (lif_forward)"),
                        ("lif_backward", "Eq. 8 + adjoint traces (lif_backward)")):
        if hasattr(be, name):
            wrap(be, name, label)
    phases, per_step = collections.defaultdict(list), []
    try:
        for i in range(steps + 2):
            acc.clear()
            t0 = time.perf_counter()
            system.opt.zero_grad()
            out = system.net(system.x)
            t1 = time.perf_counter()
            loss = (losses.latency_loss(out, system.labels)
                    + losses.at_least_one_spike_loss(out, system.labels))
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            system.opt.step()
            t4 = time.perf_counter()
            if i >= 2:
                for k, v in (("forward", t1 - t0), ("loss", t2 - t1), ("backward", t3 - t2),
                             ("Adam", t4 - t3), ("total", t4 - t0)):
                    phases[k].append(v)
                per_step.append(dict(acc))
    finally:
        for obj, name, f in reversed(undo):
            if obj is be:
                delattr(obj, name)  # the class's method again
            else:
                setattr(obj, name, f)
    comp = {k: float(np.median([d.get(k, 0.0) for d in per_step])) for k in per_step[0]}
    return {k: float(np.median(v)) for k, v in phases.items()}, comp


def probe_compile() -> None:
    """In a fresh process: import time of the numba kernels, first and later steps."""
    cfg = config("mnist")
    make_batch(cfg)
    t0 = time.perf_counter()
    import antlr_snn.kernels.numba_cpu  # noqa: F401
    t_import = time.perf_counter() - t0
    s = Ours(cfg, method="antlr")
    s.set_scales([6.0, 8.0])
    t0 = time.perf_counter()
    s.step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.infer()
    s.step()
    second = time.perf_counter() - t0
    b = Ours(cfg, method="bptt")
    t0 = time.perf_counter()
    b.step()
    print(json.dumps({"import": t_import, "first_step": first, "later_step_and_infer": second,
                      "first_bptt_step": time.perf_counter() - t0}))


def compile_cost() -> dict:
    """:func:`probe_compile` with an empty numba cache, then again with it filled."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for label in ("cold", "cached"):
            env = dict(os.environ, NUMBA_CACHE_DIR=d,
                       PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
            res = subprocess.run([sys.executable, "-m", "benchmarks.ours", "--probe-compile"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
            try:
                out[label] = json.loads(res.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                out[label] = None
                print(res.stderr[-2000:], file=sys.stderr)
    return out


if __name__ == "__main__" and "--probe-compile" in sys.argv:
    probe_compile()
