"""The markdown report of a benchmark run (``docs/benchmarks.md``): one part per section that
ran, each table from the measured numbers only."""
from __future__ import annotations

import math
from pathlib import Path

from benchmarks.systems import LABELS

PEERS = ("snntorch", "spikingjelly", "norse")


def fmt(v, digits=1):
    if isinstance(v, int):
        return f"{v:,}"
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def label(part: dict, key: str, suffix: str = "") -> str:
    given = part.get("info", {}).get(key, {}).get("label")
    return given or (LABELS.get(key, key) + suffix)


def table(part: dict, keys, peers, suffix="") -> tuple:
    """The main kind of table: train and inference ms, x the fastest peer, memory, rates."""
    t, inf, mem = part["train"], part.get("infer", {}), part.get("memory", {})
    peers = [p for p in peers if p in t]
    fastest = min(peers, key=lambda p: t[p])
    fast_i = min(inf[p] for p in peers) if inf else None
    rows = ["| system | train step, ms | × fastest peer | inference, ms | × fastest peer "
            "| peak MB (step) | peak MB (inference) | hidden spikes / neuron / sample |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in keys:
        if n not in t:
            continue
        m = mem.get(n, {})
        i = inf.get(n)
        rates = part.get("info", {}).get(n, {}).get("rates", [math.nan])
        rows.append(f"| {label(part, n, suffix if n not in peers else '')} | {fmt(1e3 * t[n])} "
                    f"| {t[n] / t[fastest]:.2f} | {fmt(None if i is None else 1e3 * i)} | "
                    f"{fmt(None if i is None else i / fast_i, 2)} | {fmt(m.get('step'))} "
                    f"| {fmt(m.get('infer'))} | {rates[0]:.2f} |")
    return "\n".join(rows), fastest


def shape(cfg: dict) -> str:
    """``784-800-10, T = 100, batch 16`` of a config."""
    if cfg.get("conv"):
        c, k, st = cfg["conv"]
        net = f"2x34x34-c{c}({k}x{k}/{st})-10"
    else:
        net = "-".join(map(str, [cfg["n_in"], *cfg["hidden"], 10]))
    return f"{net}, T = {cfg['T']}, batch {cfg['batch']}"


def machine_line(m: dict) -> str:
    v = m["versions"]
    return (f"Machine: {m['cpu']}, {m['cores']} cores, torch {v['torch']} ({m['torch_threads']} "
            f"threads), Python {m['python']}, numba {v['numba']}, triton {v['triton']}; snnTorch "
            f"{v['snntorch']}, SpikingJelly {v['spikingjelly']}, Norse {v['norse']}. GPU: "
            f"{m['gpu']}. Date: {m['date']}.")


def part_main(res) -> list:
    r = res["main"]
    ours = ["antlr", "activation", "timing", "bptt", "antlr_ref"]
    tab, fastest = table(r, ours + list(PEERS), PEERS)
    t = r["train"]
    fast_i = min(r["infer"][p] for p in PEERS)
    same, rel = r["exact"]
    lines = [f"## Latency-coded MNIST, {shape(r['cfg'])}, float32 (CPU)", "",
             f"Input: the same {r['cfg']['batch']} real digits for every system, latency-coded "
             f"({r['input_spikes']:.0f} input spikes per sample). Median of alternating "
             f"steps; load average (1 min) {r['load0'][0]:.1f} before, {r['load'][0]:.1f} "
             f"after.", "", tab, "",
             f"Fastest peer: {label(r, fastest)}. ANTLR training step = "
             f"**{t['antlr'] / t[fastest]:.2f}x** its time, inference = "
             f"**{r['infer']['antlr'] / fast_i:.2f}x** the fastest peer's inference.", "",
             f"Fast vs reference backend on this batch (float32): spikes identical: {same}; "
             f"relative difference of the first layer's weight gradient: {rel:.1e}.", ""]
    if res.get("threads_also"):
        ta = res["threads_also"]
        tab2, fp = table({**ta, "info": r["info"]}, ours + list(PEERS), PEERS)
        lines += [f"### The same systems with {ta['threads']} torch thread(s)", "", tab2, "",
                  f"Fastest peer here: {label(r, fp)} (memory not re-measured).", ""]
    phases, comp = r["breakdown"]
    lines += ["### Where the ANTLR step's time goes", "",
              "Median ms per phase and per backend call (both layers; calls overlap phases):",
              "", "| phase | ms |", "|---|---:|"]
    lines += [f"| {k} | {1e3 * v:.2f} |" for k, v in phases.items()]
    lines += ["", "| backend call | ms |", "|---|---:|"]
    lines += [f"| {k} | {1e3 * v:.2f} |" for k, v in sorted(comp.items(), key=lambda kv: -kv[1])]
    return lines + [""]


def part_conv(res) -> list:
    r = res["conv"]
    tab, fastest = table(r, ["antlr", "bptt", "spikingjelly"], ["spikingjelly"],
                         " (LIFConv2d)")
    t, cfg = r["train"], r["cfg"]
    c, k, st = cfg["conv"]
    side = (34 - k) // st + 1
    return ["## A conv LIF layer at the N-MNIST shape (CPU)", "",
            f"Simulated N-MNIST, 2x34x34 input ({r['input_spikes']:.0f} input spikes per "
            f"sample), T = {cfg['T']}, batch {cfg['batch']}: a {k}x{k} convolution with {c} "
            f"output channels and stride {st} ({c}x{side}x{side} LIF neurons), then a fully "
            f"connected LIF layer {c * side * side} -> 10; float32. "
            "Ours: `LIFConv2d -> Flatten -> LIFLayer`; SpikingJelly: `layer.Conv2d "
            "-> LIFNode -> Flatten -> layer.Linear -> LIFNode`, multi-step. The conv layer is "
            "calibrated to ~0.3 spikes per neuron per sample, the output to ~0.5.", "", tab, "",
            f"ANTLR on the conv layer: **{t['antlr'] / t['spikingjelly']:.2f}x** SpikingJelly's "
            f"step time; BPTT {t['bptt'] / t['spikingjelly']:.2f}x.", ""]


def part_scaling(res) -> list:
    sc = res["scaling"]
    names = ["antlr", "bptt", *PEERS]
    cfgs = list(sc)
    info = sc[cfgs[0]]["info"]

    def grid(value):
        rows = ["| system | " + " | ".join(cfgs) + " |", "|---|" + "---:|" * len(cfgs)]
        for n in names:
            rows.append(f"| {label({'info': info}, n)} | "
                        + " | ".join(fmt(value(sc[c], n)) for c in cfgs) + " |")
        return "\n".join(rows)

    nm = sc.get("nmnist")
    lines = ["## Scaling (CPU)", "",
             f"{res.get('scaling_threads', '?')} torch thread(s). `mnist`: the main "
             "configuration again; `mnist_T300`/`mnist_T1000`: T = 300/1000; `mnist_H3200`: "
             "784-3200-10; `nmnist`: 2x34x34-800-10, T = 300, simulated N-MNIST"
             + (f" ({nm['input_spikes']:.0f} input spikes per sample)" if nm else "")
             + ". Weights recalibrated per configuration.", "",
             "Training step, ms (median):", "", grid(lambda p, n: 1e3 * p["train"][n]), "",
             "Inference, ms:", "", grid(lambda p, n: 1e3 * p["infer"][n]), "",
             "Peak working memory of a training step, MB:", "",
             grid(lambda p, n: p["memory"][n]["step"]), "",
             "Minor page faults per training step (median; fresh 4 KB pages the step touched):",
             "", grid(lambda p, n: round(p["faults"][n])), "",
             "glibc gives every allocation above its mmap threshold (at most 32 MB) fresh pages "
             "and unmaps them on free; antlr-snn's numba kernels take their large buffers from "
             "`antlr_snn.buffers`, which hands a buffer out again once nothing holds it.", ""]
    if all(c in sc for c in ("mnist", "mnist_T300", "mnist_T1000")):
        lines += ["Training step time per time step, ms (a constant row is linear in T):", "",
                  "| system | T = 100 | T = 300 | T = 1000 |", "|---|---:|---:|---:|"]
        for n in names:
            per = [1e3 * sc[c]["train"][n] / sc[c]["cfg"]["T"]
                   for c in ("mnist", "mnist_T300", "mnist_T1000")]
            lines.append(f"| {label({'info': info}, n)} | "
                         + " | ".join(f"{v:.3f}" for v in per) + " |")
        lines.append("")
    if nm:
        fp = min(PEERS, key=lambda p: nm["train"][p])
        lines += [f"N-MNIST shape: ANTLR {1e3 * nm['train']['antlr']:.1f} ms = "
                  f"{nm['train']['antlr'] / nm['train'][fp]:.2f}x the fastest peer "
                  f"({label(nm, fp)}).", ""]
    return lines


def part_compare(res) -> list:
    r = res["compare"]
    t, ti = r["train"], r["infer"]

    def iqr(v):
        q = sorted(v)
        return f"{1e3 * q[len(q) // 4]:.1f}-{1e3 * q[(3 * len(q)) // 4]:.1f}"

    lines = ["## The fully connected step against an older checkout", "",
             f"This checkout and `{r['src']}`, each in a worker process, {shape(r['cfg'])}, "
             f"{r['reps']} interleaved rounds (the order "
             "rotating every round); the older code runs with the same weights (the scales "
             "calibrated on this checkout).", "",
             "| step | this checkout, ms | before, ms | ratio | IQR now, ms | IQR before, ms |"
             " spikes/neuron now | before |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for what, d, raw in (("ANTLR train", t, r["raw"]), ("BPTT train", t, r["raw"]),
                         ("ANTLR inference", ti, r["raw_infer"])):
        m = what.split()[0].lower()
        now, before = d[f"{m} current"], d[f"{m} before"]
        rn, rb = r["info"][f"{m} current"]["rates"], r["info"][f"{m} before"]["rates"]
        lines.append(f"| {what} | {1e3 * now:.2f} | {1e3 * before:.2f} | {now / before:.3f} "
                     f"| {iqr(raw[f'{m} current'])} | {iqr(raw[f'{m} before'])} "
                     f"| {rn[0]:.3f} | {rb[0]:.3f} |")
    return lines + [""]


def part_cuda(res) -> list:
    lines = ["## CUDA", "",
             "Ours on the triton backend (the default for CUDA tensors) and on the reference "
             "backend; snnTorch; Norse with each cell step compiled by `torch.compile`; "
             "SpikingJelly's native CUDA and triton LIF implementations, each in a worker "
             "process of its own (`SJ_LIF_CUDA_IMPLEMENTATION`). Each step is synchronised "
             "(`torch.cuda.synchronize`) before the clock stops.", ""]
    names = ["antlr_triton", "antlr_ref", "snntorch", "norse_compiled", "spikingjelly_cuda",
             "spikingjelly_triton"]
    for cname, r in res["cuda"].items():
        t = r["train"]
        peers = [n for n in names[2:] if n in t] or [n for n in names if n in t]
        tab, fastest = table(r, names, peers)
        lines += [f"### {shape(r['cfg'])}", "", tab, ""]
        if "antlr_triton" in t and "antlr_ref" in t:
            same, rel = r["exact"]
            lines += [f"ANTLR (triton) = **{t['antlr_triton'] / t[fastest]:.2f}x** the fastest "
                      f"peer ({label(r, fastest)}); the reference backend takes "
                      f"**{t['antlr_ref'] / t['antlr_triton']:.2f}x** the triton step. Triton "
                      f"vs reference on this batch: spikes identical: {same}; weight gradient "
                      f"relative difference {rel:.1e}.", ""]
        missing = [n for n in names if n not in t]
        if missing:
            lines += [f"Not run here: {', '.join(missing)} (see the run's log).", ""]
    return lines


def part_compile(res) -> list:
    c = res["compile"]
    cold, cached = c.get("cold"), c.get("cached")
    if not (cold and cached):
        return ["## Compile cost of the numba kernels", "", "(the probe failed)", ""]
    return ["## Compile cost of the numba kernels", "",
            f"Fresh numba cache: importing the kernels {cold['import']:.2f} s, first ANTLR "
            f"training step {cold['first_step']:.1f} s, first BPTT step "
            f"{cold['first_bptt_step']:.1f} s. With the cache filled (any later process): "
            f"first ANTLR step {cached['first_step']:.2f} s, first BPTT step "
            f"{cached['first_bptt_step']:.2f} s.", ""]


FAST_PATH = """## How the fast paths work

The choice of backend is made in one place, `antlr_snn.kernels.backend_for`: numba for CPU
float32/float64 tensors, triton for CUDA tensors, the pure-PyTorch reference
(`antlr_snn.neuron`, every equation's one home) otherwise or when asked
(`ANTLR_SNN_KERNELS=reference`, row "reference backend").

- numba (CPU): a fully connected layer runs in one piece. Its input spikes are scanned once
  into a CSR list (used below 10% density); each step's input current is the sum of the weight
  rows of its spikes, gathered inside the compiled recurrence (Eq. 1-3); the backward is one
  compiled reverse sweep (sigma(V) from torch's own exp, Eq. 8, both adjoint traces), the
  weight gradient `A^T S_in` a scatter over the spiking inputs only, and narrow layers get the
  gradients for the layer below in one pass. Rows run on torch's thread count; the kernels'
  large buffers come from the `antlr_snn.buffers` pool. Other synapses (a convolution, a
  pooling) run through torch and autograd, the neuron in the compiled loops.
- triton (CUDA): the synapse is torch's (cuBLAS/cuDNN, and autograd for Eq. 9 and 10); the
  neuron is one fused kernel per layer and direction over the batch x neuron lanes that walks
  t in registers (the forward; sigma(V), V*, Eq. 8, the U, A (and Q) traces, A_diff and the
  sum of U in one reverse sweep; BPTT with the reset path). No host synchronisation in a step
  with `antlr_snn.set_checks(False)`, so a step can be captured in a CUDA graph.

`tests/test_kernels.py` (numba, float64, 1e-12) and `tests/test_triton.py` (triton, in
Triton's CPU interpreter without a GPU; float32, 1e-5) check that each gives exactly the
reference's spikes and its gradients: all four methods, single-spike, replicas, the central
kernel derivative, dense, conv and pooling synapses.
"""

NOTES = """## Notes

- Every system computes in float32. The peers run their input projection for all steps as one
  product (their fastest form); SpikingJelly's CPU path is its torch implementation (a Python
  loop with a hand-written backward).
- SpikingJelly 2.x has no CuPy backend; its CUDA implementations are "cuda" (native kernels)
  and "triton", chosen per process by `SJ_LIF_CUDA_IMPLEMENTATION`.
- Memory excludes weights, optimiser state and the input batch; on the CPU it is measured with
  the buffer pool off, so it counts every buffer a step needs.
"""

METHOD = """## How it is measured

`benchmarks/step_vs_peers.py` drives one module per system family (`benchmarks/ours.py`,
`peer_snntorch.py`, `peer_spikingjelly.py`, `peer_norse.py`; shared parts in `common.py`).
One training step is zero_grad, forward, loss, backward and torch's fused Adam (lr 1e-3, the
project trainer's optimiser). ANTLR and timing use the latency loss (ANTLR plus the
at-least-one-spike term, timing plus the no-spike penalty) as in the paper; activation, BPTT
and the peers use the count loss with targets 1/0. The peers are written the fast way: the
synapse of all steps in one call, then the neuron loop, layer by layer; decays 0.99 per
step, threshold 1, zero reset, zero biases. Weights are scaled per layer (bisection from the
same initial weights) to the same firing. Systems that need an environment of their own (an
older checkout, a SpikingJelly CUDA backend) run in worker processes and are interleaved
with the others round by round. Peak memory: the high-water mark of tensor memory allocated
during a step above what was live before it (CPU: the profiler's allocation stream with
`antlr_snn.buffers` disabled; CUDA: the caching allocator's peak).
"""


def write(res: dict, path=None) -> str:
    lines = ["# Benchmarks: one training step against the peers", "",
             machine_line(res["machine"]), ""]
    for name in res.get("sections", []):
        fn = globals().get(f"part_{name}")
        if fn is not None and name in res:
            lines += fn(res)
    text = "\n".join(lines + [FAST_PATH, NOTES, METHOD])
    if path:
        from antlr_snn.files import atomic_write_text
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(path), text)
    return text
